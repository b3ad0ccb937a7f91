package ui

import (
	"cmp"
	"context"
	"net/netip"
	"slices"
	"strconv"
	"strings"
	"time"

	"fyne.io/fyne/v2"
	"fyne.io/fyne/v2/lang"

	"github.com/skeinvpn/skein/ipc"
)

// Exit nodes: what the tray's "Exit node" submenu, the window's Exit node tab, the peer list
// and the tray's title say about them, and the prefs patches that change them. The chosen node
// is read from the prefs (the user's wish, which the helper confirms with a prefs event); the
// status says whether it is reachable.

// Labels of the fixed items of the tray's exit-node submenu (English keys of lang.L).
const (
	TrayExitNode         = "Exit node"
	TrayExitNone         = "None"
	TrayAllowLAN         = "Allow LAN access"
	TrayExitSettings     = "Exit node settings…"
	TrayNoExitNodes      = "No peer offers an exit node"
	TrayOfferingExitNode = "This device is an exit node"
	// TrayUseExitNode is the one-click toggle; it names the node it turns on.
	TrayUseExitNode = "Use exit node"
)

// exitNodeID is the StableID of the chosen exit node, "" for none (and while the automatic
// one has no pick).
func (v *view) exitNodeID() string {
	if v.havePrefs {
		return v.prefs.ExitNodeID
	}
	if v.st.ExitNode != nil {
		return v.st.ExitNode.ID
	}
	for i := range v.st.Peers {
		if v.st.Peers[i].ExitNode {
			return v.st.Peers[i].StableID
		}
	}
	return ""
}

// exitNodeInfo is the chosen exit node as far as the app knows it.
type exitNodeInfo struct {
	id       string
	name     string // short name; the status's name or the ID when the peer is not in the netmap
	location string
	online   bool
	peer     *ipc.Peer // nil when the peer is not in the netmap
}

// autoExit reports whether the exit node follows the helper's recommendation (auto:any).
func (v *view) autoExit() bool {
	if v.havePrefs {
		return v.prefs.AutoExitNode != ""
	}
	return v.st.ExitNode != nil && v.st.ExitNode.Auto
}

// exitInUse reports whether an exit node is chosen (by hand or automatically).
func (v *view) exitInUse() bool { return v.exitNodeID() != "" || v.autoExit() }

// exitNode returns the chosen exit node, ok false when none is chosen. While the automatic
// exit node has no pick, it is named "automatic" and offline.
func (v *view) exitNode() (n exitNodeInfo, ok bool) {
	id := v.exitNodeID()
	if id == "" {
		if v.autoExit() {
			return exitNodeInfo{name: lang.L("automatic")}, true
		}
		return n, false
	}
	n.id, n.name = id, id
	for i := range v.st.Peers {
		if p := &v.st.Peers[i]; p.StableID == id {
			n.peer = p
			n.name, n.location = shortName(p), p.Location
			n.online = p.Online && p.ExitNodeOption && !p.Expired
		}
	}
	if e := v.st.ExitNode; e != nil && e.ID == id {
		// The helper's word on reachability wins over the peer's online flag.
		n.online = e.Online
		if n.peer == nil && e.Name != "" {
			n.name = e.Name
		}
	}
	return n, true
}

// displayName is "beta (Frankfurt, Germany)" or "beta".
func (n exitNodeInfo) displayName() string {
	if n.location != "" {
		return n.name + " (" + n.location + ")"
	}
	return n.name
}

// exitNodeChoice is one entry of the exit-node pickers.
type exitNodeChoice struct {
	id       string // what the patch names: the StableID; "" for None
	label    string
	selected bool
	// usable is false for an offline node or one no longer offered: picking it would cut this
	// device off the internet.
	usable bool
}

// exitNodeChoices lists "None" and then every peer offering an exit node, by name; the chosen
// node stays in the list (marked) when it went offline, stopped offering or left the netmap.
func (v *view) exitNodeChoices() []exitNodeChoice {
	sel := v.exitNodeID()
	auto := v.autoExit()
	out := []exitNodeChoice{{label: lang.L(TrayExitNone), selected: sel == "" && !auto, usable: true}}
	if s := v.st.SuggestedExitNode; (s != nil || auto) && v.reachable {
		label := lang.L("Recommended (automatic)")
		if s != nil {
			label = lang.L("Recommended: {{.Name}} (automatic)", map[string]any{"Name": s.Name})
		}
		out = append(out, exitNodeChoice{id: ipc.AutoExitNodeAny, label: label, selected: auto, usable: true})
		// With the automatic choice on, the node it picked is marked below but not selected.
		if auto {
			sel = ""
		}
	}
	var peers []*ipc.Peer
	found := false
	if v.reachable {
		for i := range v.st.Peers {
			p := &v.st.Peers[i]
			if p.ExitNodeOption || (sel != "" && p.StableID == sel) {
				peers = append(peers, p)
				found = found || p.StableID == sel
			}
		}
	}
	slices.SortStableFunc(peers, func(a, b *ipc.Peer) int {
		return cmp.Or(cmp.Compare(strings.ToLower(shortName(a)), strings.ToLower(shortName(b))), cmp.Compare(a.FirstIP(), b.FirstIP()))
	})
	seen := map[string]bool{lang.L(TrayExitNone): true}
	for _, p := range peers {
		label := exitNodeLabel(p)
		if seen[label] { // two peers with one short name: tell them apart by address
			label += " [" + p.FirstIP() + "]"
		}
		seen[label] = true
		// The helper also takes an address, should a peer come without a StableID.
		out = append(out, exitNodeChoice{id: cmp.Or(p.StableID, p.FirstIP()), label: label, selected: sel != "" && p.StableID == sel,
			usable: p.Online && p.ExitNodeOption && !p.Expired})
	}
	if sel != "" && !found && v.reachable {
		n, _ := v.exitNode()
		out = append(out, exitNodeChoice{id: sel, label: lang.L("{{.Name}} (not in the tailnet)", map[string]any{"Name": n.name}), selected: true})
	}
	return out
}

// exitNodeLabel is "beta — Frankfurt, Germany", with "(offline)" when the peer is offline.
func exitNodeLabel(p *ipc.Peer) string {
	s := shortName(p)
	if p.Location != "" {
		s += " — " + p.Location
	}
	switch {
	case p.Expired:
		s += " " + lang.L("(key expired)")
	case !p.Online:
		s += " " + lang.L("(offline)")
	case !p.ExitNodeOption:
		s += " " + lang.L("(no longer offered)")
	}
	return s
}

// exitNodeSummary says where internet traffic goes, for the Exit node tab; warn is true when
// the chosen node is unreachable while connected (traffic is then dropped).
func (v *view) exitNodeSummary() (text string, warn bool) {
	if !v.reachable {
		return lang.L("Not connected to skeind."), false
	}
	if v.prefs.AdvertiseExitNode {
		return lang.L("This device offers itself as an exit node, so it cannot use one. Turn that off in Settings to choose an exit node."), false
	}
	n, ok := v.exitNode()
	if !ok {
		return lang.L("No exit node: internet traffic leaves from this device directly. Choose a peer to send it through that peer instead."), false
	}
	data := map[string]any{"Name": n.displayName()}
	if v.st.State != ipc.StateRunning {
		return lang.L("Exit node {{.Name}} is chosen; internet traffic goes through it while Skein is connected.", data), false
	}
	switch {
	case v.autoExit() && n.id == "":
		return lang.L("The automatic exit node has no peer to use: internet traffic is blocked (never sent around the tunnel) until one is back."), true
	case !n.online:
		return lang.L("Exit node {{.Name}} is offline: internet traffic is blocked (never sent around the tunnel) until it is back or you choose another exit node.", data), true
	case v.autoExit():
		return lang.L("Internet traffic goes through {{.Name}}, the recommended exit node; Skein moves to another one if it goes away.", data), false
	}
	return lang.L("Internet traffic goes through exit node {{.Name}}.", data), false
}

// trayTitle is the tray item's title: "Skein", or which exit node carries the traffic.
func (v *view) trayTitle() string {
	if !v.reachable || v.st.State != ipc.StateRunning {
		return "Skein"
	}
	n, ok := v.exitNode()
	switch {
	case !ok:
		return "Skein"
	case !n.online:
		return lang.L("Skein · exit node {{.Name}} offline", map[string]any{"Name": n.name})
	}
	return lang.L("Skein · exit node {{.Name}}", map[string]any{"Name": n.name})
}

// trayTooltip is the tray item's tooltip: the state and, while connected, the exit node.
func (v *view) trayTooltip() string {
	s := lang.L("Skein: {{.State}}", map[string]any{"State": v.connectionText()})
	if !v.reachable || v.st.State != ipc.StateRunning {
		return s
	}
	if n, ok := v.exitNode(); ok {
		if n.online {
			return s + " · " + lang.L("internet via exit node {{.Name}}", map[string]any{"Name": n.displayName()})
		}
		return s + " · " + lang.L("exit node {{.Name}} offline, internet blocked", map[string]any{"Name": n.displayName()})
	}
	return s
}

// useExitToggle is the one-click exit node: its label, whether it is on, and the patch a click
// sends (nil when there is nothing to turn on).
func (v *view) useExitToggle() (label string, on bool, patch *ipc.PrefsPatch) {
	if on = v.exitInUse(); on {
		n, _ := v.exitNode()
		off := false
		return lang.L("Use exit node: {{.Name}}", map[string]any{"Name": n.name}), true, &ipc.PrefsPatch{UseExitNode: &off}
	}
	yes := true
	switch last := v.prefs.LastExitNodeID; {
	case last == ipc.AutoExitNodeAny:
		return lang.L("Use exit node: recommended"), false, &ipc.PrefsPatch{UseExitNode: &yes}
	case last != "":
		name := last
		for i := range v.st.Peers {
			if v.st.Peers[i].StableID == last {
				name = shortName(&v.st.Peers[i])
			}
		}
		return lang.L("Use exit node: {{.Name}}", map[string]any{"Name": name}), false, &ipc.PrefsPatch{UseExitNode: &yes}
	case v.st.SuggestedExitNode != nil:
		id := v.st.SuggestedExitNode.ID
		return lang.L("Use exit node: {{.Name}} (recommended)", map[string]any{"Name": v.st.SuggestedExitNode.Name}), false, &ipc.PrefsPatch{ExitNode: &id}
	}
	return lang.L(TrayUseExitNode), false, nil
}

// exitNodeMenu is the tray's "Exit node" submenu.
func (a *App) exitNodeMenu() *fyne.MenuItem {
	v := &a.v
	editable := v.reachable && v.havePrefs
	offering := v.prefs.AdvertiseExitNode
	label, on, patch := v.useExitToggle()
	toggle := fyne.NewMenuItem(label, func() {
		if p := a.v.useExitPatch(); p != nil {
			a.patchPrefs(*p, patchOpts{tray: true})
		}
	})
	toggle.Checked = on
	toggle.Disabled = !editable || offering || patch == nil
	items := []*fyne.MenuItem{toggle, fyne.NewMenuItemSeparator()}
	choices := v.exitNodeChoices()
	for _, c := range choices {
		id := c.id
		it := fyne.NewMenuItem(c.label, func() { a.setExitNode(id, true) })
		it.Checked = c.selected
		it.Disabled = !editable || (id != "" && (offering || (!c.usable && !c.selected)))
		items = append(items, it)
	}
	if len(choices) == 1 {
		none := fyne.NewMenuItem(lang.L(TrayNoExitNodes), nil)
		none.Disabled = true
		items = append(items, none)
	}
	if offering {
		info := fyne.NewMenuItem(lang.L(TrayOfferingExitNode), nil)
		info.Disabled = true
		items = append(items, info)
	}
	lan := fyne.NewMenuItem(lang.L(TrayAllowLAN), func() {
		on := !a.v.prefs.ExitNodeAllowLANAccess
		a.patchPrefs(ipc.PrefsPatch{ExitNodeAllowLANAccess: &on}, patchOpts{tray: true})
	})
	lan.Checked = v.prefs.ExitNodeAllowLANAccess
	lan.Disabled = !editable
	items = append(items, fyne.NewMenuItemSeparator(), lan, fyne.NewMenuItem(lang.L(TrayExitSettings), func() {
		a.ShowWindow()
		a.tabs.selectExitNode()
	}))
	m := fyne.NewMenuItem(lang.L(TrayExitNode), nil)
	m.ChildMenu = fyne.NewMenu(lang.L(TrayExitNode), items...)
	return m
}

// useExitPatch is the toggle's patch for the current view (nil: nothing to do).
func (v *view) useExitPatch() *ipc.PrefsPatch {
	_, _, p := v.useExitToggle()
	return p
}

// setExitNode chooses the exit node by StableID ("" = none, "auto:any" = the recommended one,
// following it).
func (a *App) setExitNode(id string, fromTray bool) {
	if a.v.havePrefs {
		switch {
		case id == ipc.AutoExitNodeAny && a.v.autoExit():
			return
		case id != ipc.AutoExitNodeAny && id == a.v.exitNodeID() && !a.v.autoExit():
			return
		}
	}
	a.patchPrefs(ipc.PrefsPatch{ExitNode: &id}, patchOpts{tray: fromTray})
}

// patchOpts say how a prefs change reports its result.
type patchOpts struct {
	// tray: the change came from the tray menu, where the window may be hidden, so a failure
	// is also sent as a desktop notification.
	tray bool
	// inline, when set, gets the outcome (nil on success) for a field that shows its own
	// error; a bad value then stays out of the window's error banner.
	inline func(e *ipc.Error)
}

// patchPrefs sends patch to the helper; its answer replaces the app's prefs at once (the
// prefs event that follows says the same). It runs on the UI goroutine.
func (a *App) patchPrefs(patch ipc.PrefsPatch, o patchOpts) {
	a.prefsPatches++
	seq, events := a.prefsPatches, a.prefsEvents
	// Patches go one after another, in the order the user made them: sent at once, skeind
	// could apply them in either order, and the latest one's answer (the only one taken)
	// would then miss the other's change, with no prefs event left to bring it.
	prev, done := a.lastPatch, make(chan struct{})
	a.lastPatch = done
	go func() {
		defer close(done)
		if prev != nil {
			select {
			case <-prev:
			case <-a.ctx.Done():
				return
			}
		}
		ctx, cancel := context.WithTimeout(a.ctx, 15*time.Second)
		defer cancel()
		p, err := a.client.SetPrefs(ctx, patch)
		if a.ctx.Err() != nil {
			return
		}
		a.do(func() {
			var e *ipc.Error
			if err != nil {
				if ctx.Err() == context.DeadlineExceeded {
					err = &ipc.Error{Code: ipc.ErrInternal, Message: lang.L("skeind did not answer in time")}
				}
				e = asError(err)
			}
			switch {
			case e == nil:
				// Only the latest patch's answer counts, and only while no prefs event came
				// since it was made: the watch stream's events are in order and may be newer
				// (another front end's change), and they bring the prefs anyway.
				if seq == a.prefsPatches && events == a.prefsEvents {
					a.v.prefs, a.v.havePrefs = p, true
				}
				if a.errAction {
					a.v.err, a.errAction = nil, false
				}
			case o.inline != nil && e.Code == ipc.ErrBadRequest:
				// the field shows it
			default:
				a.v.err, a.errAction = e, true
			}
			if e != nil && o.tray {
				a.fallbackNotify(errorTitle(e), errorNotice(e))
			}
			if o.inline != nil {
				o.inline(e)
			}
			a.refresh()
		})
	}()
}

// errorNotice is a notification's body: the message and the fix command, if any.
func errorNotice(e *ipc.Error) string {
	if fix := fixCommand(e); fix != "" {
		return e.Message + "\n" + lang.L("Fix:") + " " + fix
	}
	return e.Message
}

// prefixStrings renders prefixes for a prefs patch or a label.
func prefixStrings(ps []netip.Prefix) []string {
	out := make([]string, len(ps))
	for i, p := range ps {
		out[i] = p.String()
	}
	return out
}

// routesText is "10.1.0.0/24, 10.2.0.0/24" or, past limit, the first ones and "+N".
func routesText(ps []netip.Prefix, limit int) string {
	s := prefixStrings(ps)
	if limit > 0 && len(s) > limit {
		return strings.Join(s[:limit], ", ") + " +" + strconv.Itoa(len(s)-limit)
	}
	return strings.Join(s, ", ")
}

// exitNodeMark is how the peer list marks a peer: "exit node in use", "exit node" or "".
func exitNodeMark(p *ipc.Peer, selID string) string {
	switch {
	case selID != "" && p.StableID == selID:
		return lang.L("exit node in use")
	case p.ExitNodeOption:
		return lang.L("exit node")
	}
	return ""
}
