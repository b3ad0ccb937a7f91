package ui

import (
	"context"
	"net/netip"
	"strconv"
	"strings"
	"time"

	"fyne.io/fyne/v2"
	"fyne.io/fyne/v2/container"
	"fyne.io/fyne/v2/lang"
	"fyne.io/fyne/v2/theme"
	"fyne.io/fyne/v2/widget"

	"github.com/skeinvpn/skein/ipc"
)

// settingsPage shows the prefs skeind has (hostname to change; operator and login server to
// read; routing and DNS switches with what the helper made of them) and the app's own settings
// (start at login).
type settingsPage struct {
	content     fyne.CanvasObject
	hostname    *widget.Entry
	save        *widget.Button
	operator    *widget.Label
	operatorFix *widget.Label
	server      *widget.Label
	autostart   *widget.Check
	incoming    *widget.Check
	offerExit   *widget.Check
	offerNote   *widget.Label
	accept      *widget.Check
	acceptNote  *widget.Label
	advertised  *cidrList
	routesNote  *widget.Label
	dns         *dnsSection
	net         *networkSection
	ssh         *sshSection
	sharing     *sharingSection
	recv        *receiveSection
	saved       string // the hostname as skeind last reported it
	edited      bool
	autostartOn bool // whether the autostart entry exists, read once and then kept
	loading     bool // set while update changes widgets, so their callbacks do nothing
}

func newSettingsPage(a *App) *settingsPage {
	s := &settingsPage{
		hostname:    widget.NewEntry(),
		operator:    widget.NewLabel(""),
		operatorFix: widget.NewLabel(""),
		server:      widget.NewLabel(""),
	}
	s.hostname.SetPlaceHolder(lang.L("(this computer's host name)"))
	s.hostname.OnChanged = func(text string) {
		if !s.loading {
			s.edited = text != s.saved
			s.update(a)
		}
	}
	s.save = widget.NewButton(lang.L("Save"), func() {
		name := strings.TrimSpace(s.hostname.Text)
		a.call(15*time.Second, func(ctx context.Context) error {
			p, err := a.client.SetPrefs(ctx, ipc.PrefsPatch{Hostname: &name})
			if err == nil {
				a.do(func() { a.v.prefs, a.v.havePrefs = p, true; s.edited = false })
			}
			return err
		}, nil)
	})
	s.operator.Selectable = true
	s.operatorFix.Wrapping = fyne.TextWrapWord
	s.operatorFix.Importance = widget.LowImportance
	s.server.Selectable = true
	s.autostart = widget.NewCheck(lang.L("Start Skein in the tray when I log in"), func(on bool) {
		if !s.loading {
			a.setStartAtLogin(on)
		}
	})
	caption := func() *widget.Label {
		l := widget.NewLabel("")
		l.Wrapping = fyne.TextWrapWord
		l.SizeName = theme.SizeNameCaptionText
		return l
	}
	s.incoming = widget.NewCheck(lang.L(settingsIncoming), func(on bool) {
		if !s.loading {
			shields := !on
			a.patchPrefs(ipc.PrefsPatch{ShieldsUp: &shields}, patchOpts{})
		}
	})
	s.offerExit = widget.NewCheck(lang.L(settingsOfferExit), func(on bool) {
		if !s.loading {
			a.patchPrefs(ipc.PrefsPatch{AdvertiseExitNode: &on}, patchOpts{})
		}
	})
	s.offerNote = caption()
	s.accept = widget.NewCheck(lang.L(settingsAcceptRoutes), func(on bool) {
		if !s.loading {
			a.patchPrefs(ipc.PrefsPatch{AcceptRoutes: &on}, patchOpts{})
		}
	})
	s.acceptNote = caption()
	s.advertised = newCIDRList(a, lang.L("192.168.1.0/24 (a network this computer reaches)"),
		func(p *ipc.Prefs) []netip.Prefix { return p.AdvertiseRoutes },
		func(list []string) ipc.PrefsPatch { return ipc.PrefsPatch{AdvertiseRoutes: &list} })
	s.routesNote = caption()
	s.dns = newDNSSection(a)
	s.net = newNetworkSection(a)
	s.ssh = newSSHSection(a)
	s.sharing = newSharingSection(a)
	s.recv = newReceiveSection(a)
	a.recv = s.recv
	s.routesNote.SetText(lang.L("Peers reach these networks through this device once they use subnet routes. " +
		"The control server may have to approve routes and exit nodes (Headscale: headscale nodes approve-routes)."))
	incomingNote := caption()
	incomingNote.SetText(lang.L("Off (shields up): other devices cannot open connections to this one, Taildrop included; replies to this device's own connections still pass."))
	form := widget.NewForm(
		widget.NewFormItem(lang.L("Device name"), container.NewBorder(nil, nil, nil, s.save, s.hostname)),
		widget.NewFormItem(lang.L("Login server"), s.server),
		widget.NewFormItem(lang.L("Operator"), container.NewVBox(s.operator, s.operatorFix)),
		widget.NewFormItem(lang.L("Incoming"), container.NewVBox(s.incoming, incomingNote)),
		widget.NewFormItem(lang.L("Exit node"), container.NewVBox(s.offerExit, s.offerNote)),
		widget.NewFormItem(lang.L("Subnet routes"), container.NewVBox(s.accept, s.acceptNote)),
		widget.NewFormItem(lang.L("Advertised routes"), container.NewVBox(s.advertised.content, s.routesNote)),
		widget.NewFormItem(lang.L("DNS"), s.dns.content),
		widget.NewFormItem(lang.L("Network"), s.net.content),
		widget.NewFormItem(lang.L("SSH"), s.ssh.content),
		widget.NewFormItem(lang.L("Sharing"), s.sharing.content),
		widget.NewFormItem(lang.L("Received files"), s.recv.content),
		widget.NewFormItem(lang.L("Desktop"), s.autostart),
	)
	s.content = container.NewVScroll(container.NewPadded(form))
	s.autostartOn = a.startAtLoginEnabled()
	return s
}

func (s *settingsPage) update(a *App) {
	s.loading = true
	defer func() { s.loading = false }()
	v := &a.v
	s.saved = v.prefs.Hostname
	if !s.edited && s.hostname.Text != s.saved {
		s.hostname.SetText(s.saved)
	}
	editable := v.reachable && v.havePrefs
	if editable {
		s.hostname.Enable()
	} else {
		s.hostname.Disable()
	}
	if editable && s.edited {
		s.save.Enable()
	} else {
		s.save.Disable()
	}
	server := v.prefs.LoginServer
	if server == "" {
		server = v.st.LoginServer
	}
	s.server.SetText(orDash(server))
	if v.prefs.Operator != "" {
		s.operator.SetText(v.prefs.Operator)
	} else {
		s.operator.SetText(lang.L("none (only root can change Skein's state)"))
	}
	if u := currentUser(); u != "" && v.havePrefs && v.prefs.Operator != u && u != "root" {
		s.operatorFix.SetText(lang.L("To connect and disconnect without sudo, run once:") + " sudo skein set --operator=" + u)
		s.operatorFix.Show()
	} else {
		s.operatorFix.Hide()
	}
	if s.autostart.Checked != s.autostartOn {
		s.autostart.SetChecked(s.autostartOn)
	}

	if s.incoming.Checked == v.prefs.ShieldsUp {
		s.incoming.SetChecked(!v.prefs.ShieldsUp)
	}
	if editable {
		s.incoming.Enable()
	} else {
		s.incoming.Disable()
	}
	if s.offerExit.Checked != v.prefs.AdvertiseExitNode {
		s.offerExit.SetChecked(v.prefs.AdvertiseExitNode)
	}
	// The helper refuses to offer an exit node while using one: say so instead.
	usingExit := v.exitInUse()
	if editable && (!usingExit || v.prefs.AdvertiseExitNode) {
		s.offerExit.Enable()
	} else {
		s.offerExit.Disable()
	}
	s.offerNote.SetText(offerExitNote(v))
	if s.accept.Checked != v.prefs.AcceptRoutes {
		s.accept.SetChecked(v.prefs.AcceptRoutes)
	}
	if editable {
		s.accept.Enable()
	} else {
		s.accept.Disable()
	}
	s.acceptNote.SetText(acceptRoutesNote(v))
	s.advertised.update(a)
	s.dns.update(a)
	s.net.update(a)
	s.ssh.update(a)
	s.sharing.update(a)
	s.recv.update(a)
}

// Labels of the Settings tab's checks (English keys of lang.L).
const (
	settingsOfferExit    = "Offer this device as exit node"
	settingsAcceptRoutes = "Use subnet routes from peers"
	settingsIncoming     = "Allow incoming connections"
)

// offerExitNote explains the exit-node offer and its state.
func offerExitNote(v *view) string {
	switch {
	case v.exitInUse() && !v.prefs.AdvertiseExitNode:
		return lang.L("This device uses an exit node; choose None on the Exit node tab to offer this device as one.")
	case v.prefs.AdvertiseExitNode && v.st.Routing != nil && v.st.Routing.Forwarding:
		return lang.L("Peers may send their internet traffic through this device. IP forwarding is on.")
	case v.prefs.AdvertiseExitNode:
		return lang.L("Peers may send their internet traffic through this device.")
	}
	return lang.L("Lets peers send their internet traffic through this device.")
}

// acceptRoutesNote lists the peers' routes in use, or explains the switch.
func acceptRoutesNote(v *view) string {
	if v.prefs.AcceptRoutes && v.st.Routing != nil && len(v.st.Routing.AcceptedRoutes) > 0 {
		return lang.L("In use:") + " " + routesText(v.st.Routing.AcceptedRoutes, 6)
	}
	n := 0
	for i := range v.st.Peers {
		n += len(v.st.Peers[i].PrimaryRoutes)
	}
	switch {
	case n == 0:
		return lang.L("Reach the networks that peers offer (no peer offers one now).")
	case v.prefs.AcceptRoutes:
		return lang.L("Reach the networks that peers offer.")
	}
	return lang.L("Reach the networks that peers offer ({{.N}} offered now; see the Peers tab).", map[string]any{"N": strconv.Itoa(n)})
}
