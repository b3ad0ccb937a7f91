package gui_test

import (
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/skeinvpn/skein/ipc"
	"github.com/skeinvpn/skein/ipc/ipctest"
)

// bigTailnet is a Running status with n peers, half direct and half relayed, some offline.
func bigTailnet(n int) ipc.Status {
	st := ipc.Status{
		State: ipc.StateRunning, LoginServer: "https://control.example.test", ControlConnected: true,
		Self: &ipc.Peer{ID: 1, NodeKey: "nodekey:self", HostName: "desk", DNSName: "desk.lab.ts.net.", OS: "linux",
			Addresses: []netip.Addr{netip.MustParseAddr("100.64.0.1")}, Online: true, Relay: "lab"},
		Users: []ipc.User{{ID: 1, LoginName: "alice"}},
	}
	for i := range n {
		p := ipc.Peer{
			ID: int64(i + 2), StableID: fmt.Sprintf("stable-%04d", i), NodeKey: fmt.Sprintf("nodekey:%04d", i), HostName: fmt.Sprintf("peer-%03d", i),
			DNSName: fmt.Sprintf("peer-%03d.lab.ts.net.", i), OS: []string{"linux", "windows", "macOS", "android"}[i%4], UserID: 1,
			Addresses: []netip.Addr{netip.AddrFrom4([4]byte{100, 64, byte(1 + i/250), byte(2 + i%250)})},
			Online:    i%5 != 0,
		}
		switch {
		case !p.Online:
			t := time.Now().Add(-time.Duration(i) * time.Hour)
			p.LastSeen = &t
		case i%2 == 0:
			p.Active, p.CurAddr, p.LatencyMs = true, fmt.Sprintf("198.51.100.%d:41641", i%250+1), 1.5
		default:
			p.Active, p.Relay = true, "lab"
		}
		st.Peers = append(st.Peers, p)
	}
	return st
}

// TestTrayLiveWithFakeHelper runs the real app against ipctest's helper (no lab, no root
// needed beyond Xvfb and a bus): the tray menu follows the watch stream when a peer's path
// changes, and the app comes back after the helper restarts.
func TestTrayLiveWithFakeHelper(t *testing.T) {
	be := ipctest.NewBackend(bigTailnet(3), ipc.Prefs{})
	sock, srv := ipctest.Serve(t, be, ipc.ServerOptions{})
	d := newDesktop(t)
	d.startGUI(t, guiBin, "--socket", sock)
	it := d.watcher.item(t, d.watcher.waitItem(t, 20*time.Second))
	waitMenu(t, it, 10*time.Second, func(m *menuNode) error {
		for _, want := range []string{"Connected", "Disconnect", "This device: desk (100.64.0.1)", "peer-001 — relay (lab)", "peer-002 — direct 198.51.100.3:41641 (1.5 ms)", "peer-000 — offline"} {
			if m.find(want) == nil {
				return fmt.Errorf("no %q", want)
			}
		}
		return nil
	})

	// peer-001 gets a direct path: the menu changes without any call from the app.
	st := bigTailnet(3)
	st.Peers[1].Relay, st.Peers[1].CurAddr, st.Peers[1].LatencyMs = "", "198.51.100.77:41641", 2
	be.SetStatus(st)
	waitMenu(t, it, 10*time.Second, func(m *menuNode) error {
		if m.find("peer-001 — direct 198.51.100.77:41641 (2.0 ms)") == nil {
			return fmt.Errorf("peer-001 not direct yet")
		}
		return nil
	})

	// The helper goes away: the menu says so, the toggle is disabled, Peers keeps one item.
	srv.Close()
	waitMenu(t, it, 10*time.Second, func(m *menuNode) error {
		if err := hasItem(m, "Helper not running", false); err != nil {
			return err
		}
		if err := hasItem(m, "Connect", false); err != nil {
			return err
		}
		return hasItem(m, "No peers", false)
	})
	// It comes back on the same socket: the app reconnects by itself.
	ipctest.ServeAt(t, sock, be, ipc.ServerOptions{})
	m := waitMenu(t, it, 15*time.Second, func(m *menuNode) error { return hasItem(m, "Disconnect", true) })
	if !strings.Contains(m.String(), "peer-001 — direct 198.51.100.77:41641") {
		t.Errorf("after reconnect:\n%s", m)
	}

	// The tray host restarts (a panel crash, a session restart): the app registers again with
	// the new StatusNotifierWatcher and its menu is whole.
	d.watcher.conn.Close()
	d.watcher = startWatcher(t, d.busAddr)
	it = d.watcher.item(t, d.watcher.waitItem(t, 10*time.Second))
	waitMenu(t, it, 10*time.Second, func(m *menuNode) error {
		return hasItem(m, "peer-001 — direct 198.51.100.77:41641 (2.0 ms)", true)
	})
}

// exitTailnet is bigTailnet(4) where peer-000 (offline), peer-001 (in Frankfurt) and peer-002
// offer an exit node.
func exitTailnet() ipc.Status {
	st := bigTailnet(4)
	for i := range 3 {
		st.Peers[i].ExitNodeOption = true
	}
	st.Peers[1].Location = "Frankfurt, Germany"
	return st
}

// submenu renders the submenu labelled label, or says it is missing.
func submenu(m *menuNode, label string) string {
	n := m.find(label)
	if n == nil || n.Label != label {
		return "(no " + label + " submenu)"
	}
	return n.String()
}

// waitTitle polls the tray item's Title property until it is want.
func waitTitle(t *testing.T, it *trayItem, want string) {
	t.Helper()
	var got any
	for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(100 * time.Millisecond) {
		v, err := it.prop("Title")
		if err != nil {
			got = err
			continue
		}
		if got = v.Value(); got == want {
			return
		}
	}
	t.Fatalf("tray Title is %v, want %q", got, want)
}

// TestTrayExitNodeWithFakeHelper drives the tray's Exit node submenu over dbusmenu against
// ipctest's helper: the host's AboutToShow and GetLayout read it, an exit node is clicked with
// the "clicked" event, the helper gets the patch, and the checkmark, the title and the items
// follow the helper's events.
func TestTrayExitNodeWithFakeHelper(t *testing.T) {
	be := ipctest.NewBackend(exitTailnet(), ipc.Prefs{WantRunning: true})
	sock, _ := ipctest.Serve(t, be, ipc.ServerOptions{})
	d := newDesktop(t)
	d.startGUI(t, guiBin, "--socket", sock)
	it := d.watcher.item(t, d.watcher.waitItem(t, 20*time.Second))

	want := `Use exit node (disabled)
---
None ✓
peer-000 (offline) (disabled)
peer-001 — Frankfurt, Germany
peer-002
---
Allow LAN access
Exit node settings…
`
	waitMenu(t, it, 10*time.Second, func(m *menuNode) error {
		if got := submenu(m, "Exit node"); got != want {
			return fmt.Errorf("Exit node submenu:\n%swant:\n%s", got, want)
		}
		return nil
	})
	waitTitle(t, it, "Skein")

	clickUntil(t, it, "peer-001 — Frankfurt, Germany", func() error {
		if id := be.Prefs().ExitNodeID; id != "stable-0001" {
			return fmt.Errorf("helper's exit node is %q, want stable-0001", id)
		}
		return nil
	})
	want = `Use exit node: peer-001 ✓
---
None
peer-000 (offline) (disabled)
peer-001 — Frankfurt, Germany ✓
peer-002
---
Allow LAN access
Exit node settings…
`
	waitMenu(t, it, 10*time.Second, func(m *menuNode) error {
		if got := submenu(m, "Exit node"); got != want {
			return fmt.Errorf("Exit node submenu:\n%swant:\n%s", got, want)
		}
		return nil
	})
	waitTitle(t, it, "Skein · exit node peer-001")

	clickUntil(t, it, "Allow LAN access", func() error {
		if !be.Prefs().ExitNodeAllowLANAccess {
			return fmt.Errorf("LAN access still off in the helper")
		}
		return nil
	})
	waitMenu(t, it, 10*time.Second, func(m *menuNode) error {
		if n := m.find("Allow LAN access"); n == nil || !n.Checked {
			return fmt.Errorf("Allow LAN access not checked")
		}
		return nil
	})

	// Live: the exit node goes offline with no call from the app; the item says so and stays
	// checked, and the title warns.
	st := exitTailnet()
	st.Peers[1].Online, st.Peers[1].Relay, st.Peers[1].Active = false, "", false
	be.SetStatus(st)
	waitMenu(t, it, 10*time.Second, func(m *menuNode) error {
		n := m.find("peer-001 — Frankfurt, Germany (offline)")
		if n == nil || !n.Checked || !n.Enabled {
			return fmt.Errorf("no checked, enabled offline peer-001 item in\n%s", submenu(m, "Exit node"))
		}
		return nil
	})
	waitTitle(t, it, "Skein · exit node peer-001 offline")

	// Back to None from the tray.
	clickUntil(t, it, "None", func() error {
		if id := be.Prefs().ExitNodeID; id != "" {
			return fmt.Errorf("helper's exit node is %q, want none", id)
		}
		return nil
	})
	waitMenu(t, it, 10*time.Second, func(m *menuNode) error {
		if n := m.find("None"); n == nil || !n.Checked {
			return fmt.Errorf("None not checked in\n%s", submenu(m, "Exit node"))
		}
		return nil
	})
	waitTitle(t, it, "Skein")

	// "Exit node settings…" opens the window's Exit node tab: a screenshot of it is an artifact
	// of this test, and goes where SKEIN_GUI_EXIT_SCREENSHOT says.
	st = exitTailnet()
	be.SetStatus(st)
	bypass := []string{"192.168.50.0/24", "10.20.0.0/16"}
	exit := "peer-002"
	if _, err := be.SetPrefs(t.Context(), ipc.PrefsPatch{ExitNode: &exit, ExitNodeBypass: &bypass}); err != nil {
		t.Fatal(err)
	}
	clickUntil(t, it, "Exit node settings…", func() error { return nil })
	time.Sleep(time.Second) // let the window paint the tab
	shot := d.screenshot(t)
	path := filepath.Join(t.ArtifactDir(), "exit-node.png")
	writePNG(t, path, shot)
	t.Logf("screenshot: %s (%v)", path, shot.Bounds().Size())
	if dst := os.Getenv("SKEIN_GUI_EXIT_SCREENSHOT"); dst != "" {
		writePNG(t, dst, shot)
	}
}
