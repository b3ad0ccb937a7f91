package ui

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"fyne.io/fyne/v2/test"

	"github.com/skeinvpn/skein/ipc"
	"github.com/skeinvpn/skein/ipc/ipctest"
)

// submenu renders the tray's submenu labelled label.
func (h *harness) submenu(label string) string {
	for _, it := range h.a.TrayMenu().Items {
		if it.Label == label && it.ChildMenu != nil {
			return menuLines(it.ChildMenu)
		}
	}
	return "(no " + label + " submenu)"
}

func withProfiles() ipc.Status {
	st := running()
	st.Profiles = []ipc.Profile{
		{ID: "a1b2", Name: "alice", LoginServer: "https://control.example.test", LoginName: "alice", Tailnet: "lab.ts.net", LoggedIn: true, Current: true},
		{ID: "c3d4", Name: "work", LoginServer: "https://corp.example.test", LoginName: "alice@corp", Tailnet: "corp.ts.net", LoggedIn: true},
		{ID: "e5f6", Name: "old.example.test", LoginServer: "https://old.example.test"},
	}
	st.Profile = &st.Profiles[0]
	return st
}

// The tray's Account submenu lists the profiles, the current one checked; one click switches;
// the Account page shows them with Switch buttons.
func TestAccountsTrayAndPage(t *testing.T) {
	h := newHarness(t, withProfiles(), ipc.Prefs{WantRunning: true})
	want := `alice — lab.ts.net ✓
work — corp.ts.net
old.example.test (logged out)
---
Add account…
Manage accounts…
`
	h.eventually("account submenu", func() string {
		if got := h.submenu("Account"); got != want {
			return "submenu:\n" + got + "want:\n" + want
		}
		return ""
	})
	h.be.OnSwitch(func(ctx context.Context, id string) error {
		st := h.be.Status()
		st.Peers = st.Peers[:1]
		h.be.SetStatus(st)
		return nil
	})
	h.click("work — corp.ts.net")
	h.eventually("switched", func() string {
		if got := strings.Join(h.be.Switches(), ","); got != "c3d4" {
			return "switches " + got
		}
		if m := h.submenu("Account"); !strings.Contains(m, "work — corp.ts.net ✓\n") {
			return "submenu:\n" + m
		}
		return ""
	})
	// Clicking the current one does nothing.
	h.click("work — corp.ts.net")

	h.ui(func() { h.a.tabs.selectAccount() })
	h.eventually("page", func() string {
		return h.expect("Accounts", "alice", "lab.ts.net · https://control.example.test", "work", "in use", "[Switch]",
			"https://old.example.test · logged out", "[Add account…]")
	})
	h.tap("Add account…")
	h.eventually("add form", func() string { return h.expect("Add another account", "[Log in]", "[Cancel]") })
	h.ui(func() {
		h.a.account.server.SetText("https://corp.example.test")
		h.a.account.nickname.SetText("second")
	})
	h.tap("Log in")
	h.eventually("login as a new profile", func() string {
		reqs := h.be.UpRequests()
		if len(reqs) != 1 || !reqs[0].NewProfile || reqs[0].Nickname != "second" || reqs[0].LoginServer != "https://corp.example.test" {
			return fmt.Sprintf("up requests %+v", reqs)
		}
		return ""
	})
	if got := len(h.be.Switches()); got != 1 {
		t.Errorf("%d switches after clicking the current profile", got)
	}
}

func expiringStatus(in time.Duration) ipc.Status {
	st := running()
	exp := now.Add(in)
	st.Self.KeyExpiry = &exp
	st.Health = []ipc.Issue{{Code: ipc.IssueKeyExpiring, Message: "this device's key expires soon", Fix: "skein up --force-reauth",
		Data: map[string]string{"expiry": exp.UTC().Format(time.RFC3339)}}}
	return st
}

// A key that expires soon: a banner with the fix and Re-authenticate, a warning tray icon, one
// notification per threshold (7 days, then 1 day), whose action runs the login flow.
func TestKeyExpiryBannerAndNotification(t *testing.T) {
	oldWindow := alertWindow
	t.Cleanup(func() { alertWindow = oldWindow }) // after the app stops: cleanups run last first
	alertWindow = 200 * time.Millisecond
	h := newHarness(t, expiringStatus(3*24*time.Hour), ipc.Prefs{WantRunning: true})
	h.eventually("banner", func() string {
		if s := h.expect("This device's key expires in 3 days", "skein up --force-reauth", "[Re-authenticate]"); s != "" {
			return s
		}
		if got := h.a.TrayIcon().Name(); got != "tray-warning-light.png" {
			return "icon " + got
		}
		return ""
	})
	h.eventually("notified", func() string {
		if al := h.sentAlerts(); len(al) != 1 || al[0].summary != "This device's key expires in 3 days" || al[0].label != "Re-authenticate" {
			return fmt.Sprintf("alerts %+v", al)
		}
		return ""
	})
	// The same threshold again (a new status, a restart of the watch): no second notification.
	h.be.SetStatus(expiringStatus(3*24*time.Hour - time.Minute))
	time.Sleep(100 * time.Millisecond)
	// Within a day: the second one.
	h.be.SetStatus(expiringStatus(5 * time.Hour))
	h.eventually("second notice", func() string {
		if al := h.sentAlerts(); len(al) != 2 || al[1].summary != "This device's key expires in 5 hours" {
			return fmt.Sprintf("alerts %+v", al)
		}
		return ""
	})
	// Its action runs the login flow (Up with ForceReauth), showing the Account page.
	h.be.OnUp(func(ctx context.Context, req ipc.UpRequest) (ipc.UpResponse, error) {
		return ipc.UpResponse{State: ipc.StateRunning}, nil
	})
	h.sentAlerts()[1].action() // as the notification server's click: from another goroutine
	h.eventually("reauth", func() string {
		reqs := h.be.UpRequests()
		if len(reqs) != 1 || !reqs[0].ForceReauth || reqs[0].NewProfile {
			return fmt.Sprintf("up requests %+v", reqs)
		}
		if h.a.tabs.t.Selected() != h.a.tabs.account {
			return "account tab not shown"
		}
		return ""
	})
	// The peers pane shows keys too.
	if got := peerExpiryText(&ipc.Peer{Expired: true}, now); !strings.HasPrefix(got, "expired") {
		t.Errorf("expired peer: %q", got)
	}
	exp := now.Add(49 * time.Hour)
	if got := peerExpiryText(&ipc.Peer{KeyExpiry: &exp}, now); !strings.HasSuffix(got, "(in 2 days)") {
		t.Errorf("peer key in 2 days: %q", got)
	}
}

// Every other health issue is a banner too, worded in the app's language where it knows the
// code, with its fix; the exit-node ones offer to choose another.
func TestHealthBanners(t *testing.T) {
	st := running()
	st.Health = []ipc.Issue{
		{Code: "dns", Message: "NetworkManager rewrote /etc/resolv.conf"},
		{Code: ipc.IssueExitNodeOffline, Message: "exit node x is offline", Fix: "skein set --exit-node=", Data: map[string]string{"name": "x"}},
	}
	h := newHarness(t, st, ipc.Prefs{WantRunning: true, ExitNodeID: "nope"})
	h.eventually("banners", func() string {
		return h.expect("DNS", "NetworkManager rewrote /etc/resolv.conf", "Exit node x is offline", "[Choose an exit node]", "[Stop using an exit node]")
	})
	h.tap("Stop using an exit node")
	h.eventually("cleared", func() string {
		if id := h.be.Prefs().ExitNodeID; id != "" {
			return "exit node " + id
		}
		return ""
	})
}

// A watched device coming and going: one notification, then the changes within the window
// summarized once; unwatched devices say nothing; the action shows the device.
func TestWatchedDeviceNotifications(t *testing.T) {
	oldWindow := alertWindow
	t.Cleanup(func() { alertWindow = oldWindow }) // after the app stops: cleanups run last first
	alertWindow = 300 * time.Millisecond
	st := running()
	for i := range st.Peers {
		st.Peers[i].StableID = "n-" + st.Peers[i].HostName
	}
	h := newHarness(t, st, ipc.Prefs{WantRunning: true})
	h.eventually("peers", func() string { return h.expect("beta · linux") })
	// Watch beta from its pane.
	h.ui(func() { h.a.peers.selectByID("n-beta") })
	h.ui(func() { test.Tap(h.a.peers.detail.watch) })
	h.ui(func() {
		if !h.a.watched["n-beta"] || !strings.Contains(h.a.fa.Preferences().String(prefWatchedPeers), "n-beta") {
			t.Fatalf("beta not watched: %v", h.a.watched)
		}
	})
	flip := func(online bool, also bool) {
		s := st
		s.Peers = append([]ipc.Peer(nil), st.Peers...)
		s.Peers[0].Online = online
		if also {
			s.Peers[1].Online = !s.Peers[1].Online // gamma, not watched
		}
		h.be.SetStatus(s)
		time.Sleep(20 * time.Millisecond)
	}
	flip(false, true)
	h.eventually("first", func() string {
		if al := h.sentAlerts(); len(al) != 1 || al[0].summary != "beta went offline" {
			return fmt.Sprintf("alerts %+v", al)
		}
		return ""
	})
	for _, on := range []bool{true, false, true} {
		flip(on, false)
	}
	h.eventually("summary", func() string {
		al := h.sentAlerts()
		if len(al) != 2 || al[1].summary != "beta is online" || !strings.HasPrefix(al[1].body, "3 changes in the last minute") {
			return fmt.Sprintf("alerts %+v", al)
		}
		return ""
	})
	time.Sleep(2 * alertWindow)
	if n := len(h.sentAlerts()); n != 2 {
		t.Errorf("%d notifications for one watched device flapping 4 times, want 2", n)
	}
	// The action opens the Peers tab with beta selected.
	h.ui(func() { h.a.tabs.selectSettings() })
	h.sentAlerts()[0].action()
	h.ui(func() {
		if !h.a.tabs.peersSelected() || !h.a.peers.detail.has || h.a.peers.detail.peer.StableID != "n-beta" {
			t.Errorf("the action did not show beta")
		}
	})
	// Switched off on the Notifications page: nothing more.
	h.ui(func() { h.a.tabs.selectNotify() })
	h.ui(func() { test.Tap(h.a.notifyPg.watched) })
	flip(false, false)
	time.Sleep(3 * alertWindow)
	if n := len(h.sentAlerts()); n != 2 {
		t.Errorf("notified with the setting off: %d", n)
	}
}

// The connection: lost for longer than connLostAfter is told once, and its return; a blip
// shorter than that, a Disconnect of the user's, or a relay change with the setting off are not.
func TestConnectionAndRelayNotifications(t *testing.T) {
	oldLost := connLostAfter
	t.Cleanup(func() { connLostAfter = oldLost }) // after the app stops: cleanups run last first
	connLostAfter = 200 * time.Millisecond
	st := running()
	for i := range st.Peers {
		st.Peers[i].StableID = "n-" + st.Peers[i].HostName
	}
	h := newHarness(t, st, ipc.Prefs{WantRunning: true})
	h.eventually("connected", func() string { return h.expect("Connected") })
	set := func(connected bool) {
		s := st
		s.ControlConnected = connected
		h.be.SetStatus(s)
	}
	set(false)
	time.Sleep(50 * time.Millisecond)
	set(true) // a blip
	time.Sleep(2 * connLostAfter)
	if al := h.sentAlerts(); len(al) != 0 {
		t.Fatalf("a blip was told: %+v", al)
	}
	set(false)
	h.eventually("lost", func() string {
		if al := h.sentAlerts(); len(al) != 1 || al[0].summary != "Skein lost its connection" ||
			!strings.HasPrefix(al[0].body, "The control server cannot be reached") {
			return fmt.Sprintf("alerts %+v", al)
		}
		return ""
	})
	set(true)
	h.eventually("restored", func() string {
		if al := h.sentAlerts(); len(al) != 2 || al[1].summary != "Skein is connected again" {
			return fmt.Sprintf("alerts %+v", al)
		}
		return ""
	})
	// The user's own Disconnect is not a lost connection.
	h.tap("Disconnect")
	time.Sleep(2 * connLostAfter)
	if n := len(h.sentAlerts()); n != 2 {
		t.Errorf("Disconnect was told as a lost connection")
	}
	h.be.SetStatus(st)
	h.eventually("back", func() string { return h.expect("Connected") })

	// beta's path goes from direct to relay: off by default, told once switched on.
	relayed := st
	relayed.Peers = append([]ipc.Peer(nil), st.Peers...)
	relayed.Peers[0].CurAddr, relayed.Peers[0].Relay = "", "lab"
	h.be.SetStatus(relayed)
	time.Sleep(100 * time.Millisecond)
	h.be.SetStatus(st)
	time.Sleep(100 * time.Millisecond)
	if n := len(h.sentAlerts()); n != 2 {
		t.Fatalf("relay told with the setting off")
	}
	h.ui(func() { h.a.tabs.selectNotify() })
	h.ui(func() { test.Tap(h.a.notifyPg.relay) })
	h.be.SetStatus(relayed)
	h.eventually("relay", func() string {
		al := h.sentAlerts()
		if len(al) != 3 || al[2].summary != "beta: path changed to relay" {
			return fmt.Sprintf("alerts %+v", al)
		}
		return ""
	})
	h.ui(func() {
		if !h.a.fa.Preferences().Bool(prefNotifyRelay) {
			t.Error("relay setting not saved")
		}
	})
}

// The throttle on its own: first at once, the rest held and summarized at the window's end,
// subjects apart.
func TestThrottle(t *testing.T) {
	clock := time.Unix(1000, 0)
	var sent []alert
	var timers []func()
	th := throttle{
		now:   func() time.Time { return clock },
		after: func(d time.Duration, f func()) { timers = append(timers, f) },
		send:  func(al alert) { sent = append(sent, al) },
	}
	th.add(alert{subject: "a", body: "1"})
	th.add(alert{subject: "b", body: "x"})
	th.add(alert{subject: "a", body: "2"})
	th.add(alert{subject: "a", body: "3"})
	if len(sent) != 2 || len(timers) != 1 {
		t.Fatalf("sent %d, timers %d", len(sent), len(timers))
	}
	clock = clock.Add(alertWindow)
	timers[0]()
	if len(sent) != 3 || sent[2].body != "2 changes in the last minute. Now: 3" {
		t.Fatalf("summary %+v", sent)
	}
	// A new window started with the summary: a change right after is held again.
	th.add(alert{subject: "a", body: "4"})
	if len(sent) != 3 {
		t.Fatal("sent within the new window")
	}
	clock = clock.Add(alertWindow)
	timers[1]()
	if len(sent) != 4 || sent[3].body != "4" {
		t.Fatalf("single held alert %+v", sent)
	}
	// Quiet for a window: the next goes out at once.
	clock = clock.Add(2 * alertWindow)
	th.add(alert{subject: "a", body: "5"})
	if len(sent) != 5 {
		t.Fatal("not sent after a quiet window")
	}
}

// The one-click exit node in the tray and on the page: it names the node it turns on, off
// remembers it, on brings it back; Recommended follows the helper's choice.
func TestUseExitNodeToggle(t *testing.T) {
	st := withExitNodes()
	st.SuggestedExitNode = &ipc.ExitNodeSuggestion{ID: "n-gamma", Name: "gamma"}
	h := newHarness(t, st, ipc.Prefs{WantRunning: true})
	h.waitExitMenu("suggestion only", `Use exit node: gamma (recommended)
---
None ✓
Recommended: gamma (automatic)
beta — Frankfurt, Germany
delta (offline) (disabled)
gamma
---
Allow LAN access
Exit node settings…
`)
	h.click("beta — Frankfurt, Germany")
	h.eventually("beta", func() string {
		if h.be.Prefs().ExitNodeID != "n-beta" {
			return "not beta"
		}
		return ""
	})
	h.eventually("toggle on", func() string {
		if m := h.exitMenu(); !strings.HasPrefix(m, "Use exit node: beta ✓\n") {
			return m
		}
		return ""
	})
	h.click("Use exit node: beta")
	h.eventually("off", func() string {
		p := h.be.Prefs()
		if p.ExitNodeID != "" || p.LastExitNodeID != "n-beta" {
			return fmt.Sprintf("prefs %+v", p)
		}
		if m := h.exitMenu(); !strings.HasPrefix(m, "Use exit node: beta\n---\nNone ✓\n") {
			return m
		}
		return ""
	})
	// On again from the Exit node page's switch.
	h.ui(func() { h.a.tabs.selectExitNode() })
	h.ui(func() { test.Tap(h.a.exit.useExit) })
	h.eventually("on from the page", func() string {
		if h.be.Prefs().ExitNodeID != "n-beta" {
			return "not beta again"
		}
		return ""
	})
	h.click("Recommended: gamma (automatic)")
	h.eventually("auto", func() string {
		if p := h.be.Prefs(); p.AutoExitNode != "any" {
			return fmt.Sprintf("prefs %+v", p)
		}
		if m := h.exitMenu(); !strings.Contains(m, "Recommended: gamma (automatic) ✓\n") {
			return m
		}
		return ""
	})
}

// A tray host that appears after the app: the note goes, and closing the window hides it
// instead of quitting.
func TestTrayHostLater(t *testing.T) {
	h := &harness{t: t, be: ipctest.NewBackend(running(), ipc.Prefs{})}
	h.sock, _ = ipctest.Serve(t, h.be, ipc.ServerOptions{})
	h.options = func(o *Options) { o.NoTrayHost = true }
	h.start()
	h.eventually("note", func() string { return h.expect(noTrayText) })
	h.ui(func() { h.a.setTrayHost(true) })
	h.eventually("note gone", func() string {
		if h.look().has(noTrayText) {
			return "note still shown"
		}
		return ""
	})
	h.ui(func() { h.a.closeRequested() })
	if h.a.ctx.Err() != nil {
		t.Fatal("closing the window quit the app although a tray host is there")
	}
	h.ui(func() { h.a.setTrayHost(false); h.a.ShowWindow() })
	h.eventually("note again", func() string { return h.expect(noTrayText) })
}
