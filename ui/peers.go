package ui

import (
	"cmp"
	"context"
	"fmt"
	"strings"
	"time"

	"fyne.io/fyne/v2"
	"fyne.io/fyne/v2/container"
	"fyne.io/fyne/v2/lang"
	"fyne.io/fyne/v2/theme"
	"fyne.io/fyne/v2/widget"

	"github.com/skeinvpn/skein/ipc"
)

// peerPage is the Peers tab: a searchable list on the left, the selected peer on the right.
type peerPage struct {
	a       *App
	content fyne.CanvasObject
	search  *widget.Entry
	list    *widget.List
	empty   *widget.Label
	shown   []ipc.Peer // the filtered, sorted peers the list shows
	selKey  string     // NodeKey of the selected peer ("" = none)
	detail  *peerDetail
	rows    []*peerRow // every row the list made, to find the one under a drop
}

func newPeerPage(a *App) *peerPage {
	p := &peerPage{a: a}
	p.search = widget.NewEntry()
	p.search.SetPlaceHolder(lang.L("Search name, IP, OS, online, direct, relay…"))
	p.search.OnChanged = func(string) { p.update(a) }
	p.list = widget.NewList(
		func() int { return len(p.shown) },
		func() fyne.CanvasObject {
			r := newPeerRow()
			p.rows = append(p.rows, r)
			return r
		},
		func(i widget.ListItemID, o fyne.CanvasObject) {
			if i < len(p.shown) {
				o.(*peerRow).set(&p.shown[i], p.a.v.exitNodeID(), p.a.now())
			}
		},
	)
	p.list.OnSelected = func(i widget.ListItemID) {
		if i < len(p.shown) {
			p.selKey = p.shown[i].NodeKey
			p.detail.show(&p.shown[i])
		}
	}
	p.empty = widget.NewLabel("")
	p.empty.Alignment = fyne.TextAlignCenter
	p.empty.Wrapping = fyne.TextWrapWord
	p.detail = newPeerDetail(a)
	left := container.NewBorder(p.search, nil, nil, nil, container.NewStack(p.list, container.NewVBox(p.empty)))
	split := container.NewHSplit(left, p.detail.content)
	split.SetOffset(0.5)
	p.content = split
	return p
}

func (p *peerPage) update(a *App) {
	v := &a.v
	p.shown = p.shown[:0]
	if v.reachable {
		for _, peer := range sortedPeers(v.st.Peers) {
			if matches(&v.st, &peer, p.search.Text) {
				p.shown = append(p.shown, peer)
			}
		}
	}
	switch {
	case len(p.shown) > 0:
		p.empty.Hide()
	case !v.reachable:
		p.empty.SetText(lang.L("Not connected to skeind."))
		p.empty.Show()
	case len(v.st.Peers) > 0:
		p.empty.SetText(lang.L("No peer matches “{{.Query}}”.", map[string]any{"Query": p.search.Text}))
		p.empty.Show()
	case v.st.State != ipc.StateRunning:
		p.empty.SetText(lang.L("Connect to see your tailnet's devices."))
		p.empty.Show()
	default:
		p.empty.SetText(lang.L("No other devices in your tailnet yet."))
		p.empty.Show()
	}
	p.list.Refresh()
	// Keep the selection on the same peer across updates; drop it when the peer is gone.
	sel := -1
	for i := range p.shown {
		if p.shown[i].NodeKey == p.selKey {
			sel = i
		}
	}
	if sel >= 0 {
		p.list.Select(sel) // the row may have moved
		p.detail.show(&p.shown[sel])
	} else {
		p.selKey = ""
		p.list.UnselectAll()
		p.detail.show(nil)
	}
}

// selectByID selects the peer with that StableID (a notification's action), clearing a search
// that hides it.
func (p *peerPage) selectByID(id string) {
	for _, peer := range p.a.v.st.Peers {
		if peer.StableID == id {
			p.selKey = peer.NodeKey
			if !matches(&p.a.v.st, &peer, p.search.Text) {
				p.search.SetText("") // OnChanged updates the list
			}
			p.update(p.a)
			return
		}
	}
}

// peerRow is one line of the list: name and OS, then address, online state, path, latency.
type peerRow struct {
	widget.BaseWidget
	name, info *widget.Label
	content    fyne.CanvasObject
	key        string // NodeKey of the peer shown
}

func newPeerRow() *peerRow {
	r := &peerRow{name: widget.NewLabel(""), info: widget.NewLabel("")}
	r.name.TextStyle = fyne.TextStyle{Bold: true}
	r.name.Truncation = fyne.TextTruncateEllipsis
	r.info.Truncation = fyne.TextTruncateEllipsis
	r.info.SizeName = theme.SizeNameCaptionText
	r.content = container.NewVBox(r.name, r.info)
	r.ExtendBaseWidget(r)
	return r
}

func (r *peerRow) CreateRenderer() fyne.WidgetRenderer { return widget.NewSimpleRenderer(r.content) }

func (r *peerRow) set(p *ipc.Peer, exitID string, now time.Time) {
	r.key = p.NodeKey
	name := p.ShortName()
	if p.OS != "" {
		name += " · " + p.OS
	}
	if m := exitNodeMark(p, exitID); m != "" {
		name += " · " + m
	}
	r.name.SetText(name)
	r.info.SetText(peerInfoLine(p, now))
	if p.Online {
		r.info.Importance = widget.MediumImportance
	} else {
		r.info.Importance = widget.LowImportance
	}
	r.info.Refresh()
}

// peerAt is the peer whose row is at pos (window coordinates), or nil: files dropped there go
// to that peer. Only rows on screen count: the list recycles rows, and a row that is not in the
// window's visible tree (scrolled away, or another tab open) has no position.
func (p *peerPage) peerAt(pos fyne.Position) *ipc.Peer {
	if !p.a.tabs.peersSelected() {
		return nil
	}
	drv := p.a.fa.Driver()
	if !inside(pos, drv.AbsolutePositionForObject(p.list), p.list.Size()) {
		return nil
	}
	for _, r := range p.rows {
		at := drv.AbsolutePositionForObject(r)
		if at.IsZero() || !r.Visible() || !inside(pos, at, r.Size()) {
			continue
		}
		for i := range p.shown {
			if p.shown[i].NodeKey == r.key {
				return &p.shown[i]
			}
		}
	}
	return nil
}

func inside(pos, at fyne.Position, size fyne.Size) bool {
	return pos.X >= at.X && pos.Y >= at.Y && pos.X < at.X+size.Width && pos.Y < at.Y+size.Height
}

// peerInfoLine is the list's second line: "100.64.0.2 · online · direct 1.2.3.4:41641 · 1.2 ms",
// then the subnet routes the peer serves.
func peerInfoLine(p *ipc.Peer, now time.Time) string {
	parts := []string{}
	if ip := p.FirstIP(); ip != "" {
		parts = append(parts, ip)
	}
	parts = append(parts, onlineText(p))
	if path := pathText(p); p.Path().Kind != ipc.PathOffline {
		parts = append(parts, path)
	}
	if l := latencyText(p); l != "" {
		parts = append(parts, l)
	}
	if ls := lastSeenText(p, now); ls != "" {
		parts = append(parts, ls)
	}
	if len(p.PrimaryRoutes) > 0 {
		parts = append(parts, lang.L("routes {{.Routes}}", map[string]any{"Routes": routesText(p.PrimaryRoutes, 2)}))
	}
	return strings.Join(parts, " · ")
}

// peerDetail is the right pane: everything about one peer, copy buttons and ping.
type peerDetail struct {
	a        *App
	content  fyne.CanvasObject
	none     *widget.Label
	body     *fyne.Container
	title    *widget.Label
	form     *widget.Form
	dnsName  *widget.Label
	addrs    *widget.Label
	osLabel  *widget.Label
	owner    *widget.Label
	state    *widget.Label
	path     *widget.Label
	latency  *widget.Label
	lastSeen *widget.Label
	traffic  *widget.Label
	exitNode *widget.Label
	routes   *widget.Label
	expiry   *widget.Label
	watch    *widget.Check
	useExit  *widget.Button
	copyIP   *widget.Button
	copyDNS  *widget.Button
	copySSH  *widget.Button
	ping     *widget.Button
	pings    *widget.Label
	why      *relayWhy
	peer     ipc.Peer
	has      bool
	pingRun  int // increases with every ping run, so that an old run stops writing
}

func newPeerDetail(a *App) *peerDetail {
	d := &peerDetail{a: a, none: widget.NewLabel(lang.L("Select a device to see its details."))}
	d.none.Alignment = fyne.TextAlignCenter
	lbl := func() *widget.Label {
		l := widget.NewLabel("")
		l.Selectable = true
		l.Wrapping = fyne.TextWrapWord
		return l
	}
	d.title = widget.NewLabel("")
	d.title.TextStyle = fyne.TextStyle{Bold: true}
	d.title.SizeName = theme.SizeNameSubHeadingText
	d.dnsName, d.addrs, d.osLabel, d.owner = lbl(), lbl(), lbl(), lbl()
	d.state, d.path, d.latency, d.lastSeen, d.traffic = lbl(), lbl(), lbl(), lbl(), lbl()
	d.exitNode, d.routes, d.expiry = lbl(), lbl(), lbl()
	d.form = widget.NewForm(
		widget.NewFormItem(lang.L("DNS name"), d.dnsName),
		widget.NewFormItem(lang.L("Addresses"), d.addrs),
		widget.NewFormItem(lang.L("OS"), d.osLabel),
		widget.NewFormItem(lang.L("Owner"), d.owner),
		widget.NewFormItem(lang.L("State"), d.state),
		widget.NewFormItem(lang.L("Path"), d.path),
		widget.NewFormItem(lang.L("Latency"), d.latency),
		widget.NewFormItem(lang.L("Last seen"), d.lastSeen),
		widget.NewFormItem(lang.L("Traffic"), d.traffic),
		widget.NewFormItem(lang.L("Key expiry"), d.expiry),
		widget.NewFormItem(lang.L("Exit node"), d.exitNode),
		widget.NewFormItem(lang.L("Subnet routes"), d.routes),
	)
	d.copyIP = widget.NewButtonWithIcon(lang.L("Copy IP"), theme.ContentCopyIcon(), func() { d.a.copyText((&d.peer).FirstIP()) })
	d.copyDNS = widget.NewButtonWithIcon(lang.L("Copy DNS name"), theme.ContentCopyIcon(), func() {
		d.a.copyText(strings.TrimSuffix(d.peer.DNSName, "."))
	})
	d.copySSH = newCopySSHButton(a, func() *ipc.Peer { return &d.peer })
	d.ping = widget.NewButtonWithIcon(lang.L("Ping"), theme.MediaPlayIcon(), d.startPing)
	d.watch = widget.NewCheck(lang.L(peerWatch), func(on bool) {
		if d.has && on != d.a.watched[d.peer.StableID] {
			d.a.setWatched(d.peer.StableID, on)
		}
	})
	d.useExit = widget.NewButtonWithIcon(lang.L(peerUseExit), theme.MailForwardIcon(), func() {
		id := cmp.Or(d.peer.StableID, (&d.peer).FirstIP())
		if sel := d.a.v.exitNodeID(); sel != "" && sel == d.peer.StableID {
			id = ""
		}
		d.a.setExitNode(id, false)
	})
	d.pings = widget.NewLabel("")
	d.pings.TextStyle = fyne.TextStyle{}
	d.pings.Selectable = true
	d.why = newRelayWhy(a)
	d.body = container.NewVBox(d.title, d.form, d.why.content, container.NewHBox(d.copyIP, d.copyDNS, d.copySSH, d.ping), container.NewHBox(d.useExit), d.watch, d.pings)
	d.body.Hide()
	d.content = container.NewVScroll(container.NewStack(container.NewCenter(d.none), d.body))
	return d
}

// show displays p (nil: none selected).
func (d *peerDetail) show(p *ipc.Peer) {
	if p == nil {
		if d.has {
			d.pingRun++
			d.pings.SetText("")
		}
		d.has = false
		d.body.Hide()
		d.none.Show()
		return
	}
	if !d.has || d.peer.NodeKey != p.NodeKey {
		d.pingRun++ // a different peer: stop showing the old one's pongs
		d.pings.SetText("")
		d.ping.Enable()
	}
	d.peer, d.has = *p, true
	st := &d.a.v.st
	d.title.SetText(p.ShortName())
	d.dnsName.SetText(orDash(strings.TrimSuffix(p.DNSName, ".")))
	d.addrs.SetText(orDash(strings.Join(addrStrings(p.Addresses), "\n")))
	d.osLabel.SetText(orDash(p.OS))
	d.owner.SetText(orDash(owner(st, p)))
	state := onlineText(p)
	if p.Path().Active() {
		state = lang.L("{{.State}}, active", map[string]any{"State": state})
	}
	d.state.SetText(state)
	d.path.SetText(detailPathText(p, d.a.now()))
	d.latency.SetText(orDash(latencyText(p)))
	d.lastSeen.SetText(orDash(lastSeenText(p, d.a.now())))
	d.traffic.SetText(lang.L("sent {{.Sent}}, received {{.Received}}", map[string]any{"Sent": bytesText(p.TxBytes), "Received": bytesText(p.RxBytes)}))
	d.expiry.SetText(peerExpiryText(p, d.a.now()))
	if p.Expired {
		d.expiry.Importance = widget.DangerImportance
	} else {
		d.expiry.Importance = widget.MediumImportance
	}
	d.expiry.Refresh()
	if on := d.a.watched[p.StableID]; d.watch.Checked != on {
		d.watch.SetChecked(on)
	}
	if p.StableID == "" {
		d.watch.Disable()
	} else {
		d.watch.Enable()
	}
	d.showExitNode(p)
	d.why.show(p)
	showCopySSH(d.copySSH, p)
	d.none.Hide()
	d.body.Show()
}

// Labels of the detail pane's exit-node button and watch switch (English keys of lang.L).
const (
	peerUseExit     = "Use as exit node"
	peerStopUseExit = "Stop using as exit node"
	peerWatch       = "Notify me when it comes online or goes offline"
)

// peerExpiryText is the detail pane's key expiry: "expired", "2027-01-02 10:00 (in 25 days)"
// or "does not expire".
func peerExpiryText(p *ipc.Peer, now time.Time) string {
	switch {
	case p.Expired:
		return lang.L("expired: this device must log in again before it can be reached")
	case p.KeyExpiry == nil || p.KeyExpiry.IsZero():
		return lang.L("does not expire")
	}
	return dateTimeText(*p.KeyExpiry, now) + " (" + untilText(*p.KeyExpiry, now) + ")"
}

// showExitNode fills the exit-node and route rows and the exit-node button.
func (d *peerDetail) showExitNode(p *ipc.Peer) {
	v := &d.a.v
	inUse := v.exitNodeID() != "" && v.exitNodeID() == p.StableID
	switch {
	case inUse && p.Online:
		d.exitNode.SetText(lang.L("in use: this device's internet traffic goes through it"))
	case inUse:
		d.exitNode.SetText(lang.L("chosen, but offline: internet traffic is blocked"))
	case p.ExitNodeOption:
		d.exitNode.SetText(lang.L("offered"))
	default:
		d.exitNode.SetText("—")
	}
	routes := "—"
	if len(p.PrimaryRoutes) > 0 {
		routes = strings.Join(prefixStrings(p.PrimaryRoutes), "\n")
		if !v.prefs.AcceptRoutes && v.havePrefs {
			routes += "\n" + lang.L("(not used: “{{.Switch}}” is off in Settings)", map[string]any{"Switch": lang.L(settingsAcceptRoutes)})
		}
	}
	d.routes.SetText(routes)
	editable := v.reachable && v.havePrefs && !v.prefs.AdvertiseExitNode
	switch {
	case inUse:
		d.useExit.SetText(lang.L(peerStopUseExit))
		d.useExit.Show()
	case p.ExitNodeOption:
		d.useExit.SetText(lang.L(peerUseExit))
		d.useExit.Show()
	default:
		d.useExit.Hide()
	}
	if editable {
		d.useExit.Enable()
	} else {
		d.useExit.Disable()
	}
}

// pingCount is how many pings one press sends at most; it stops at the first direct pong.
const pingCount = 10

func (d *peerDetail) startPing() {
	if !d.has {
		return
	}
	d.pingRun++
	run := d.pingRun
	target := (&d.peer).FirstIP()
	if target == "" {
		target = (&d.peer).ShortName()
	}
	d.pings.SetText("")
	d.ping.Disable()
	lines := []string{}
	go func() {
		defer d.a.do(func() {
			if run == d.pingRun {
				d.ping.Enable()
			}
		})
		for i := 0; i < pingCount; i++ {
			ctx, cancel := context.WithTimeout(d.a.ctx, 10*time.Second)
			res, err := d.a.client.Ping(ctx, target)
			cancel()
			if d.a.ctx.Err() != nil {
				return
			}
			line := pingLine(res, err)
			lines = append(lines, line)
			text := strings.Join(lines, "\n")
			stop := err != nil || res.Endpoint != ""
			d.a.do(func() {
				if run == d.pingRun {
					d.pings.SetText(text)
				}
			})
			if stop {
				return
			}
			select {
			case <-d.a.ctx.Done():
				return
			case <-time.After(time.Second):
			}
		}
	}()
}

// pingLine is one result as `skein ping` prints it.
func pingLine(res ipc.PingResult, err error) string {
	if err != nil {
		return lang.L("error: {{.Err}}", map[string]any{"Err": asError(err).Message})
	}
	if res.Err != "" {
		return res.Err
	}
	via := res.Endpoint
	if via == "" {
		code := res.DERPRegionCode
		if code == "" {
			code = fmt.Sprint(res.DERPRegionID)
		}
		via = "DERP(" + code + ")"
	}
	return lang.L("pong from {{.Name}} ({{.IP}}) via {{.Via}} in {{.Latency}}",
		map[string]any{"Name": res.NodeName, "IP": res.NodeIP.String(), "Via": via, "Latency": formatMs(res.LatencySeconds * 1000)})
}

func bytesText(n uint64) string {
	switch {
	case n < 1<<10:
		return fmt.Sprintf("%d B", n)
	case n < 1<<20:
		return fmt.Sprintf("%.1f KiB", float64(n)/(1<<10))
	case n < 1<<30:
		return fmt.Sprintf("%.1f MiB", float64(n)/(1<<20))
	}
	return fmt.Sprintf("%.1f GiB", float64(n)/(1<<30))
}

func orDash(s string) string {
	if s == "" {
		return "—"
	}
	return s
}
