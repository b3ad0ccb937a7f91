package gui_test

import (
	"fmt"
	"net/netip"
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
			ID: int64(i + 2), NodeKey: fmt.Sprintf("nodekey:%04d", i), HostName: fmt.Sprintf("peer-%03d", i),
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
		for _, want := range []string{"Connected", "Disconnect", "This device: desk (100.64.0.1)", "peer-001 — active, relay (lab)", "peer-002 — active, direct 198.51.100.3:41641 (1.5 ms)", "peer-000 — offline"} {
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
		if m.find("peer-001 — active, direct 198.51.100.77:41641 (2.0 ms)") == nil {
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
	if !strings.Contains(m.String(), "peer-001 — active, direct 198.51.100.77:41641") {
		t.Errorf("after reconnect:\n%s", m)
	}

	// The tray host restarts (a panel crash, a session restart): the app registers again with
	// the new StatusNotifierWatcher and its menu is whole.
	d.watcher.conn.Close()
	d.watcher = startWatcher(t, d.busAddr)
	it = d.watcher.item(t, d.watcher.waitItem(t, 10*time.Second))
	waitMenu(t, it, 10*time.Second, func(m *menuNode) error {
		return hasItem(m, "peer-001 — active, direct 198.51.100.77:41641 (2.0 ms)", true)
	})
}
