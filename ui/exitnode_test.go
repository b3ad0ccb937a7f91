package ui

import (
	"context"
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"fyne.io/fyne/v2"
	"fyne.io/fyne/v2/test"
	"fyne.io/fyne/v2/widget"

	"github.com/skeinvpn/skein/ipc"
)

// withExitNodes is running() with stable IDs, three peers offering an exit node (beta with a
// location, gamma also serving two subnet routes, delta offline) and a fourth, epsilon, that
// offers nothing.
func withExitNodes() ipc.Status {
	st := running()
	for i := range st.Peers {
		p := &st.Peers[i]
		p.StableID = "n-" + p.HostName
		p.ExitNodeOption = true
	}
	st.Peers[0].Location = "Frankfurt, Germany"
	st.Peers[1].PrimaryRoutes = []netip.Prefix{netip.MustParsePrefix("10.10.0.0/24"), netip.MustParsePrefix("10.20.0.0/24")}
	st.Peers = append(st.Peers, ipc.Peer{ID: 5, StableID: "n-epsilon", NodeKey: "nodekey:05", HostName: "epsilon",
		DNSName: "epsilon.lab.ts.net.", OS: "linux", UserID: 1, Addresses: []netip.Addr{addr("100.64.0.5")}, Online: true})
	return st
}

// exitMenu is the tray's Exit node submenu as menuLines renders it.
func (h *harness) exitMenu() string {
	for _, it := range h.a.TrayMenu().Items {
		if it.Label == TrayExitNode && it.ChildMenu != nil {
			return menuLines(it.ChildMenu)
		}
	}
	return "(no Exit node submenu)"
}

// waitExitMenu waits for the Exit node submenu to read want.
func (h *harness) waitExitMenu(what, want string) {
	h.t.Helper()
	h.eventually(what, func() string {
		if got := h.exitMenu(); got != want {
			return "submenu:\n" + got + "want:\n" + want
		}
		return ""
	})
}

func TestExitNodeTrayMenu(t *testing.T) {
	h := newHarness(t, withExitNodes(), ipc.Prefs{WantRunning: true})
	h.waitExitMenu("initial", `Use exit node (disabled)
---
None ✓
beta — Frankfurt, Germany
delta (offline) (disabled)
gamma
---
Allow LAN access
Exit node settings…
`)
	h.ui(func() {
		if h.a.TrayTitle() != "Skein" || h.a.TrayTooltip() != "Skein: Connected to control.example.test" {
			t.Errorf("title %q, tooltip %q", h.a.TrayTitle(), h.a.TrayTooltip())
		}
	})

	// Clicking a node sends the patch; the check follows the helper's answer.
	h.click("beta — Frankfurt, Germany")
	h.eventually("patch", func() string {
		if id := h.be.Prefs().ExitNodeID; id != "n-beta" {
			return "backend exit node " + id
		}
		return ""
	})
	h.waitExitMenu("beta chosen", `Use exit node: beta ✓
---
None
beta — Frankfurt, Germany ✓
delta (offline) (disabled)
gamma
---
Allow LAN access
Exit node settings…
`)
	h.eventually("title", func() string {
		if got := h.a.TrayTitle(); got != "Skein · exit node beta" {
			return "title " + got
		}
		if got := h.a.TrayTooltip(); got != "Skein: Connected to control.example.test · internet via exit node beta (Frankfurt, Germany)" {
			return "tooltip " + got
		}
		return h.expect("This device: skein-a (100.64.0.1) · https://control.example.test · via exit node beta")
	})

	h.click(TrayAllowLAN)
	h.eventually("LAN access", func() string {
		if !h.be.Prefs().ExitNodeAllowLANAccess {
			return "backend LAN access off"
		}
		if !strings.Contains(h.exitMenu(), "Allow LAN access ✓\n") {
			return "submenu:\n" + h.exitMenu()
		}
		return ""
	})

	// Live, with no call from the app: beta goes offline (it stays checked and clickable, the
	// title and icon warn), a new exit node joins.
	st := withExitNodes()
	st.Peers[0].Online = false
	st.Peers = append(st.Peers, ipc.Peer{ID: 6, StableID: "n-zeta", NodeKey: "nodekey:06", HostName: "zeta",
		Addresses: []netip.Addr{addr("100.64.0.6")}, Online: true, ExitNodeOption: true, Location: "Oslo, Norway"})
	h.be.SetStatus(st)
	h.waitExitMenu("beta offline", `Use exit node: beta ✓
---
None
beta — Frankfurt, Germany (offline) ✓
delta (offline) (disabled)
gamma
zeta — Oslo, Norway
---
Allow LAN access ✓
Exit node settings…
`)
	h.eventually("offline title", func() string {
		if got := h.a.TrayTitle(); got != "Skein · exit node beta offline" {
			return "title " + got
		}
		if got := h.a.TrayIcon().Name(); got != "tray-error-light.png" {
			return "icon " + got
		}
		return ""
	})

	// Prefs changed elsewhere (the CLI): the check moves.
	gamma := "gamma"
	if _, err := h.be.SetPrefs(context.Background(), ipc.PrefsPatch{ExitNode: &gamma}); err != nil {
		t.Fatal(err)
	}
	h.eventually("gamma chosen elsewhere", func() string {
		if m := h.exitMenu(); !strings.Contains(m, "\ngamma ✓\n") || strings.Contains(m, "(offline) ✓") {
			return "submenu:\n" + m
		}
		if got := h.a.TrayIcon().Name(); got != "tray-connected-light.png" {
			return "icon " + got
		}
		return ""
	})

	h.click(TrayExitNone)
	h.eventually("none", func() string {
		if id := h.be.Prefs().ExitNodeID; id != "" {
			return "backend exit node " + id
		}
		if m := h.exitMenu(); !strings.HasPrefix(m, "Use exit node: gamma\n---\nNone ✓\n") {
			return "submenu:\n" + m
		}
		if h.a.TrayTitle() != "Skein" {
			return "title " + h.a.TrayTitle()
		}
		return ""
	})

	// "Exit node settings…" opens the window on the Exit node tab.
	h.click(TrayExitSettings)
	h.ui(func() {
		if h.a.tabs.t.Selected() != h.a.tabs.exit {
			t.Errorf("selected tab %q", h.a.tabs.t.Selected().Text)
		}
	})
}

func TestExitNodeTrayErrorNotifies(t *testing.T) {
	h := newHarness(t, withExitNodes(), ipc.Prefs{})
	h.be.OnSetPrefs(func(ctx context.Context, p ipc.PrefsPatch) (ipc.Prefs, error) {
		return ipc.Prefs{}, &ipc.Error{Code: ipc.ErrNeedsOperator, Message: "permission denied: uid 1000 is neither root nor skeind's operator", Fix: "sudo skein set --operator=$USER"}
	})
	h.waitExitMenu("menu", `Use exit node (disabled)
---
None ✓
beta — Frankfurt, Germany
delta (offline) (disabled)
gamma
---
Allow LAN access
Exit node settings…
`)
	want := fyne.NewNotification("Permission denied: your user may not change Skein's settings",
		"permission denied: uid 1000 is neither root nor skeind's operator\nFix: sudo skein set --operator="+currentUser())
	test.AssertNotificationSent(t, want, func() {
		h.click("gamma")
		h.eventually("banner", func() string {
			return h.expect("Permission denied: your user may not change Skein's settings", "sudo skein set --operator="+currentUser())
		})
	})
	// The check stays where the helper has it.
	h.ui(func() {
		if m := h.exitMenu(); !strings.HasPrefix(m, "Use exit node (disabled)\n---\nNone ✓\n") {
			t.Errorf("submenu after the failure:\n%s", m)
		}
	})
}

func TestExitNodePage(t *testing.T) {
	h := newHarness(t, withExitNodes(), ipc.Prefs{})
	h.ui(func() { h.a.tabs.selectExitNode() })
	h.eventually("page", func() string {
		if s := h.expect("No exit node: internet traffic leaves from this device directly. Choose a peer to send it through that peer instead."); s != "" {
			return s
		}
		p := h.a.exit.picker
		want := []string{"None", "beta — Frankfurt, Germany", "delta (offline)", "gamma"}
		if !slices.Equal(p.Options, want) || p.Selected != "None" || p.Disabled() {
			return "picker " + strings.Join(p.Options, " | ") + " selected " + p.Selected
		}
		return ""
	})

	// Picking gamma sends the patch; the page says where traffic goes and that gamma is online.
	h.ui(func() { h.a.exit.picker.SetSelected("gamma") })
	h.eventually("gamma", func() string {
		if id := h.be.Prefs().ExitNodeID; id != "n-gamma" {
			return "backend exit node " + id
		}
		return h.expect("Internet traffic goes through exit node gamma.", "online · relay (lab)")
	})

	// gamma goes offline: the page warns.
	st := withExitNodes()
	st.Peers[1].Online, st.Peers[1].Relay, st.Peers[1].LastSeen = false, "", ago5()
	h.be.SetStatus(st)
	h.eventually("offline", func() string {
		return h.expect("Exit node gamma is offline: internet traffic is blocked (never sent around the tunnel) until it is back or you choose another exit node.",
			"offline · last seen 5 min ago")
	})

	// The switches send their prefs.
	h.ui(func() { test.Tap(h.a.exit.lan) })
	h.ui(func() { test.Tap(h.a.exit.bypassVPN) })
	h.eventually("switches", func() string {
		p := h.be.Prefs()
		if !p.ExitNodeAllowLANAccess || !p.BypassVPNRoutes {
			return "backend prefs not switched"
		}
		if !h.a.exit.lan.Checked || !h.a.exit.bypassVPN.Checked {
			return fmt.Sprintf("checks not on: lan %v bypass %v, view prefs %+v", h.a.exit.lan.Checked, h.a.exit.bypassVPN.Checked, h.a.v.prefs)
		}
		return ""
	})

	// Clearing through the picker.
	h.ui(func() { h.a.exit.picker.SetSelected("None") })
	h.eventually("cleared", func() string {
		if id := h.be.Prefs().ExitNodeID; id != "" {
			return "backend exit node " + id
		}
		return ""
	})

	// What the helper keeps local is listed.
	st.Routing = &ipc.RoutingStatus{LANRoutes: []netip.Prefix{netip.MustParsePrefix("192.168.1.0/24")}}
	h.be.SetStatus(st)
	h.eventually("kept local", func() string { return h.expect("Local networks: 192.168.1.0/24") })
}

func TestExitNodeExceptionsKeepBadInput(t *testing.T) {
	h := newHarness(t, withExitNodes(), ipc.Prefs{})
	h.ui(func() { h.a.tabs.selectExitNode() })
	ex := h.a.exceptionsForTest()
	h.eventually("editable", func() string {
		if ex.entry.Disabled() {
			return "entry disabled"
		}
		return h.expect("None")
	})
	add := func(text string) {
		h.ui(func() {
			ex.entry.SetText(text)
			test.Tap(ex.add)
		})
	}

	add("192.168.50.0/24")
	h.eventually("added", func() string {
		if got := h.be.Prefs().ExitNodeBypass; len(got) != 1 || got[0].String() != "192.168.50.0/24" {
			return "backend exceptions " + routesText(got, 0)
		}
		if ex.entry.Text != "" {
			return "entry not cleared: " + ex.entry.Text
		}
		return h.expect("192.168.50.0/24")
	})

	// A value the helper rejects: its message under the entry, the text kept, nothing saved,
	// and no banner.
	add("10.1.2.3/16")
	h.eventually("rejected", func() string {
		if s := h.expect("exit-node bypass: 10.1.2.3/16 has host bits set; did you mean 10.1.0.0/16?"); s != "" {
			return s
		}
		if ex.entry.Text != "10.1.2.3/16" {
			return "entry holds " + ex.entry.Text
		}
		return ""
	})
	if got := h.be.Prefs().ExitNodeBypass; len(got) != 1 {
		t.Errorf("backend exceptions after a rejected add: %v", got)
	}
	h.ui(func() {
		if h.a.banner.content.Visible() {
			t.Error("the error banner shows an inline error too")
		}
	})

	// Corrected: saved, the error goes away.
	add("10.1.0.0/16, 172.16.5.0/24")
	h.eventually("corrected", func() string {
		if got := routesText(h.be.Prefs().ExitNodeBypass, 0); got != "10.1.0.0/16, 172.16.5.0/24, 192.168.50.0/24" {
			return "backend exceptions " + got
		}
		if ex.errText.Visible() {
			return "error still shown: " + ex.errText.Text
		}
		return h.expect("10.1.0.0/16", "172.16.5.0/24", "192.168.50.0/24")
	})

	// Removing one row.
	h.ui(func() { test.Tap(ex.removeButton("172.16.5.0/24")) })
	h.eventually("removed", func() string {
		if got := routesText(h.be.Prefs().ExitNodeBypass, 0); got != "10.1.0.0/16, 192.168.50.0/24" {
			return "backend exceptions " + got
		}
		if h.look().has("172.16.5.0/24") {
			return "removed row still shown"
		}
		return ""
	})
}

func TestSettingsRouting(t *testing.T) {
	h := newHarness(t, withExitNodes(), ipc.Prefs{})
	h.ui(func() { h.a.tabs.selectSettings() })
	h.eventually("settings", func() string {
		if h.a.settings.offerExit.Disabled() || h.a.settings.accept.Disabled() {
			return "routing switches disabled"
		}
		return h.expect("Reach the networks that peers offer (2 offered now; see the Peers tab).")
	})
	h.ui(func() { test.Tap(h.a.settings.accept) })
	h.ui(func() { test.Tap(h.a.settings.offerExit) })
	h.ui(func() {
		h.a.settings.advertised.entry.SetText("192.168.1.0/24")
		test.Tap(h.a.settings.advertised.add)
	})
	h.eventually("saved", func() string {
		p := h.be.Prefs()
		if !p.AcceptRoutes || !p.AdvertiseExitNode {
			return "backend switches off"
		}
		if got := routesText(p.AdvertiseRoutes, 0); got != "192.168.1.0/24" {
			return "backend routes " + got
		}
		if t := h.a.settings.advertised.entry.Text; t != "" {
			return "entry not cleared: " + t
		}
		return h.expect("192.168.1.0/24", "Peers may send their internet traffic through this device.")
	})

	// Offering an exit node: the exit-node choices are closed, in the tray and the tab.
	h.eventually("offering", func() string {
		m := h.exitMenu()
		if !strings.Contains(m, "gamma (disabled)") || !strings.Contains(m, TrayOfferingExitNode+" (disabled)") {
			return "submenu:\n" + m
		}
		if !h.a.exit.picker.Disabled() {
			return "picker enabled"
		}
		return ""
	})

	// A rejected route shows under its own list.
	h.ui(func() {
		h.a.settings.advertised.entry.SetText("100.64.0.0/24")
		test.Tap(h.a.settings.advertised.add)
	})
	h.eventually("route rejected", func() string {
		return h.expect("advertised routes: 100.64.0.0/24 overlaps the tailnet's own addresses (100.64.0.0/10, fd7a:115c:a1e0::/48)", "100.64.0.0/24")
	})
}

func TestPeerListMarksExitNodesAndRoutes(t *testing.T) {
	h := newHarness(t, withExitNodes(), ipc.Prefs{})
	want := "beta · linux · exit node / 100.64.0.2 · online · direct 198.51.100.7:41641 · 1.2 ms\n" +
		"epsilon · linux / 100.64.0.5 · online · idle\n" +
		"gamma · windows · exit node / 100.64.0.3 · online · relay (lab) · routes 10.10.0.0/24, 10.20.0.0/24\n" +
		"delta · macOS · exit node / 100.64.0.4 · offline · last seen 5 min ago\n"
	h.eventually("rows", func() string {
		if got := rowsString(h.rows()); got != want {
			return "rows:\n" + got + "want:\n" + want
		}
		return ""
	})

	// The detail pane's button chooses the node; the row then says it is in use.
	h.ui(func() { h.a.peers.list.Select(0) }) // beta
	h.eventually("detail", func() string { return h.expect("offered", "[Use as exit node]") })
	h.tap("Use as exit node")
	h.eventually("in use", func() string {
		if id := h.be.Prefs().ExitNodeID; id != "n-beta" {
			return "backend exit node " + id
		}
		if r := h.rows(); len(r) == 0 || r[0][0] != "beta · linux · exit node in use" {
			return "rows:\n" + rowsString(r)
		}
		return h.expect("in use: this device's internet traffic goes through it", "[Stop using as exit node]")
	})

	// Search finds exit nodes and routes.
	h.ui(func() { h.a.peers.search.SetText("exit node offline") })
	h.eventually("search", func() string {
		if got := rowsString(h.rows()); got != "delta · macOS · exit node / 100.64.0.4 · offline · last seen 5 min ago\n" {
			return "rows:\n" + got
		}
		return ""
	})
	h.ui(func() { h.a.peers.search.SetText("10.20.0.0") })
	h.eventually("route search", func() string {
		if r := h.rows(); len(r) != 1 || !strings.HasPrefix(r[0][0], "gamma") {
			return "rows:\n" + rowsString(r)
		}
		return ""
	})
}

// exceptionsForTest is the Exit node tab's exceptions list.
func (a *App) exceptionsForTest() *cidrList { return a.exit.exceptions }

// removeButton is the remove button of the row showing p.
func (c *cidrList) removeButton(p string) *widget.Button {
	for i, q := range c.shown {
		if q.String() == p {
			row := c.rows.Objects[i].(*fyne.Container)
			for _, o := range row.Objects {
				if b, ok := o.(*widget.Button); ok {
					return b
				}
			}
		}
	}
	panic("no row " + p)
}

// TestTrayTextWaitsForTheTray: the tooltip goes out at once, the title only once the tray item
// is on the bus (its Id is taken from the title when it is first exported).
func TestTrayTextWaitsForTheTray(t *testing.T) {
	var titles, tips []string
	oldTitle, oldTip := setTrayTitle, setTrayTooltip
	setTrayTitle = func(s string) { titles = append(titles, s) }
	setTrayTooltip = func(s string) { tips = append(tips, s) }
	t.Cleanup(func() { setTrayTitle, setTrayTooltip = oldTitle, oldTip })

	a := &App{hasTray: true}
	a.v = view{reachable: true, havePrefs: true, st: withExitNodes(), prefs: ipc.Prefs{ExitNodeID: "n-beta"}}
	a.updateTrayText()
	if len(titles) != 0 || !slices.Equal(tips, []string{"Skein: Connected to control.example.test · internet via exit node beta (Frankfurt, Germany)"}) {
		t.Fatalf("before the tray is up: titles %q, tooltips %q", titles, tips)
	}
	a.trayTextLive = true
	a.v.prefs.ExitNodeID = "n-gamma"
	a.updateTrayText()
	a.updateTrayText() // unchanged: nothing sent
	if !slices.Equal(titles, []string{"Skein · exit node gamma"}) || len(tips) != 2 {
		t.Fatalf("titles %q, tooltips %q", titles, tips)
	}
}

// Two switches flipped at once both end up on: the app sends the second change after the
// first is answered. (Sent together, skeind may apply them in the other order; the answer to
// the later one, the only one the app takes, then lacks the earlier change. CI caught it.)
func TestPrefsPatchesInOrder(t *testing.T) {
	h := newHarness(t, withExitNodes(), ipc.Prefs{})
	var mu sync.Mutex
	var cur ipc.Prefs
	h.be.OnSetPrefs(func(ctx context.Context, p ipc.PrefsPatch) (ipc.Prefs, error) {
		first := p.ExitNodeAllowLANAccess != nil
		if first {
			time.Sleep(100 * time.Millisecond) // the first change is applied late...
		}
		mu.Lock()
		next, err := cur.ApplyPatch(p, func(string) (string, error) { return "", nil })
		cur = next
		mu.Unlock()
		if err != nil {
			return next, err
		}
		h.be.Emit(ipc.Event{Kind: ipc.EventPrefs, Prefs: &next})
		if !first {
			time.Sleep(300 * time.Millisecond) // ...and the second one's answer comes last
		}
		return next, nil
	})
	h.ui(func() { h.a.tabs.selectExitNode() })
	h.eventually("page", func() string {
		return h.expect("No exit node: internet traffic leaves from this device directly. Choose a peer to send it through that peer instead.")
	})
	h.ui(func() { test.Tap(h.a.exit.lan) })
	h.ui(func() { test.Tap(h.a.exit.bypassVPN) })
	time.Sleep(time.Second)
	h.eventually("switches", func() string {
		if !h.a.exit.lan.Checked || !h.a.exit.bypassVPN.Checked {
			return fmt.Sprintf("lan %v, bypass %v", h.a.exit.lan.Checked, h.a.exit.bypassVPN.Checked)
		}
		return ""
	})
}
