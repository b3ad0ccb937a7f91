package ui

import (
	"net/netip"
	"strings"
	"time"

	"fyne.io/fyne/v2"
	"fyne.io/fyne/v2/container"
	"fyne.io/fyne/v2/lang"
	"fyne.io/fyne/v2/theme"
	"fyne.io/fyne/v2/widget"

	"github.com/skeinvpn/skein/ipc"
)

// exitPage is the Exit node tab: which peer carries this device's internet traffic, and what
// stays on the local network meanwhile.
type exitPage struct {
	content    fyne.CanvasObject
	summary    *widget.Label
	useExit    *widget.Check
	picker     *widget.Select
	nodeState  *widget.Label
	lan        *widget.Check
	exceptions *cidrList
	bypassVPN  *widget.Check
	keptLocal  *widget.Label
	choices    []exitNodeChoice // what the picker's options stand for, in order
	loading    bool             // set while update changes widgets, so their callbacks do nothing
}

// Texts of the Exit node tab that tests and people look for.
const (
	exitLANCheck    = "Allow LAN access"
	exitBypassCheck = "Bypass routes of other VPN interfaces"
)

func newExitPage(a *App) *exitPage {
	p := &exitPage{summary: widget.NewLabel(""), nodeState: widget.NewLabel(""), keptLocal: widget.NewLabel("")}
	title := widget.NewLabel(lang.L("Exit node"))
	title.TextStyle = fyne.TextStyle{Bold: true}
	title.SizeName = theme.SizeNameSubHeadingText
	p.summary.Wrapping = fyne.TextWrapWord
	p.nodeState.Wrapping = fyne.TextWrapWord
	p.keptLocal.Wrapping = fyne.TextWrapWord
	p.keptLocal.Selectable = true
	p.picker = widget.NewSelect(nil, func(label string) {
		if p.loading {
			return
		}
		for _, c := range p.choices {
			if c.label == label {
				a.setExitNode(c.id, false)
			}
		}
	})
	p.picker.PlaceHolder = lang.L("(choose an exit node)")
	p.useExit = widget.NewCheck(lang.L(TrayUseExitNode), func(bool) {
		if p.loading {
			return
		}
		if patch := a.v.useExitPatch(); patch != nil {
			a.patchPrefs(*patch, patchOpts{})
		} else {
			a.refresh()
		}
	})
	p.lan = widget.NewCheck(lang.L(exitLANCheck), func(on bool) {
		if !p.loading {
			a.patchPrefs(ipc.PrefsPatch{ExitNodeAllowLANAccess: &on}, patchOpts{})
		}
	})
	p.bypassVPN = widget.NewCheck(lang.L(exitBypassCheck), func(on bool) {
		if !p.loading {
			a.patchPrefs(ipc.PrefsPatch{BypassVPNRoutes: &on}, patchOpts{})
		}
	})
	p.exceptions = newCIDRList(a, lang.L("192.168.50.0/24 or 10.0.0.0/8, …"),
		func(pr *ipc.Prefs) []netip.Prefix { return pr.ExitNodeBypass },
		func(list []string) ipc.PrefsPatch { return ipc.PrefsPatch{ExitNodeBypass: &list} })
	caption := func(s string) *widget.Label {
		l := widget.NewLabel(s)
		l.Wrapping = fyne.TextWrapWord
		l.SizeName = theme.SizeNameCaptionText
		return l
	}
	form := widget.NewForm(
		widget.NewFormItem(lang.L("Use"), container.NewVBox(p.useExit, p.picker, p.nodeState)),
		widget.NewFormItem(lang.L("Local network"), container.NewVBox(p.lan,
			caption(lang.L("Printers, file servers and other devices on the networks this computer is attached to stay reachable directly.")))),
		widget.NewFormItem(lang.L("Exceptions"), container.NewVBox(
			caption(lang.L("Destinations that stay on this computer's own network while an exit node is on, e.g. a company range reached through the local router.")),
			p.exceptions.content)),
		widget.NewFormItem(lang.L("Other VPNs"), container.NewVBox(p.bypassVPN,
			caption(lang.L("Routes that another VPN on this computer installs keep going through that VPN, and follow it as it changes them.")))),
		widget.NewFormItem(lang.L("Kept local now"), p.keptLocal),
	)
	p.content = container.NewVScroll(container.NewPadded(container.NewVBox(title, p.summary, form)))
	return p
}

func (p *exitPage) update(a *App) {
	p.loading = true
	defer func() { p.loading = false }()
	v := &a.v
	text, warn := v.exitNodeSummary()
	p.summary.SetText(text)
	if warn {
		p.summary.Importance = widget.DangerImportance
	} else {
		p.summary.Importance = widget.MediumImportance
	}
	p.summary.Refresh()

	p.choices = v.exitNodeChoices()
	labels := make([]string, len(p.choices))
	sel := ""
	for i, c := range p.choices {
		labels[i] = c.label
		if c.selected {
			sel = c.label
		}
	}
	if strings.Join(labels, "\n") != strings.Join(p.picker.Options, "\n") {
		p.picker.SetOptions(labels)
	}
	if p.picker.Selected != sel {
		p.picker.SetSelected(sel)
	}
	editable := v.reachable && v.havePrefs
	if editable && !v.prefs.AdvertiseExitNode {
		p.picker.Enable()
	} else {
		p.picker.Disable()
	}
	label, on, patch := v.useExitToggle()
	if p.useExit.Text != label {
		p.useExit.Text = label
		p.useExit.Refresh()
	}
	if p.useExit.Checked != on {
		p.useExit.SetChecked(on)
	}
	if editable && !v.prefs.AdvertiseExitNode && patch != nil {
		p.useExit.Enable()
	} else {
		p.useExit.Disable()
	}
	p.nodeState.SetText(exitNodeStateText(v, a.now()))

	if p.lan.Checked != v.prefs.ExitNodeAllowLANAccess {
		p.lan.SetChecked(v.prefs.ExitNodeAllowLANAccess)
	}
	if p.bypassVPN.Checked != v.prefs.BypassVPNRoutes {
		p.bypassVPN.SetChecked(v.prefs.BypassVPNRoutes)
	}
	for _, c := range []*widget.Check{p.lan, p.bypassVPN} {
		if editable {
			c.Enable()
		} else {
			c.Disable()
		}
	}
	p.exceptions.update(a)
	p.keptLocal.SetText(keptLocalText(v))
}

// exitNodeStateText is the line under the picker: the chosen node's reachability and path.
func exitNodeStateText(v *view, now time.Time) string {
	n, ok := v.exitNode()
	if !ok || !v.reachable {
		return ""
	}
	if n.peer == nil {
		switch {
		case n.online:
			return lang.L("online")
		case n.id == "":
			return lang.L("no peer to use")
		}
		return lang.L("not in this device's view of the tailnet")
	}
	if !n.online {
		s := lang.L("offline")
		if !n.peer.ExitNodeOption {
			s = lang.L("no longer offers to be an exit node")
		}
		if ls := lastSeenText(n.peer, now); ls != "" {
			s += " · " + ls
		}
		return s
	}
	parts := []string{lang.L("online")}
	if n.peer.Path().Kind != ipc.PathOffline {
		parts = append(parts, pathText(n.peer))
	}
	if l := latencyText(n.peer); l != "" {
		parts = append(parts, l)
	}
	return strings.Join(parts, " · ")
}

// keptLocalText lists what the helper keeps off the exit node right now.
func keptLocalText(v *view) string {
	r := v.st.Routing
	if r == nil || !v.reachable || (len(r.LANRoutes) == 0 && len(r.Bypass) == 0) {
		return "—"
	}
	var lines []string
	if len(r.LANRoutes) > 0 {
		lines = append(lines, lang.L("Local networks:")+" "+routesText(r.LANRoutes, 0))
	}
	if len(r.Bypass) > 0 {
		lines = append(lines, lang.L("Exceptions and other VPNs:")+" "+routesText(r.Bypass, 0))
	}
	return strings.Join(lines, "\n")
}
