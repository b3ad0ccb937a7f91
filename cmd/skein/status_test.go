package main

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/skeinvpn/skein/ipc"
)

// TestStatusPathColumn: the last column of `skein status` for every kind of path, worded as the
// official CLI words it. Each line is what skein printed before the path rule moved into ipc;
// the one it got wrong (an offline peer we had traffic with) is marked.
func TestStatusPathColumn(t *testing.T) {
	const addr = "198.51.100.7:41641"
	at := time.Now().Add(-3 * time.Minute)
	cases := []struct {
		p    ipc.Peer
		want string
	}{
		{ipc.Peer{Online: true, Active: true, CurAddr: addr, TxBytes: 1, RxBytes: 2}, "active; direct " + addr + ", tx 1 rx 2"},
		{ipc.Peer{Online: true, Active: true, Relay: "lab", TxBytes: 1}, `active; relay "lab", tx 1 rx 0`},
		{ipc.Peer{Online: true, Active: true}, "active; "},
		{ipc.Peer{Active: true, CurAddr: addr}, "active; direct " + addr + "; offline"},
		{ipc.Peer{Active: true, Relay: "lab"}, `active; relay "lab"; offline`},
		{ipc.Peer{Online: true, Active: true, ExitNode: true, ExitNodeOption: true, CurAddr: addr}, "active; exit node; direct " + addr},
		{ipc.Peer{Online: true, Active: true, ExitNodeOption: true, Relay: "lab"}, `active; offers exit node; relay "lab"`},
		// Idle with its home relay known (the case): no path is named.
		{ipc.Peer{Online: true, Relay: "lab"}, "-"},
		// Idle, its direct path not lapsed yet: still idle.
		{ipc.Peer{Online: true, CurAddr: addr, TxBytes: 5, RxBytes: 6, LastWrite: &at, LastAddr: addr}, "idle, tx 5 rx 6"},
		{ipc.Peer{Online: true, Relay: "lab", TxBytes: 5, RxBytes: 6, LastWrite: &at, LastRelay: "lab"}, "idle, tx 5 rx 6"},
		{ipc.Peer{}, "offline"},
		{ipc.Peer{Relay: "lab"}, "offline"},
		// Was "offline, tx 5 rx 6"; the official CLI says idle first, then offline.
		{ipc.Peer{TxBytes: 5, RxBytes: 6, LastWrite: &at, LastRelay: "lab"}, "idle; offline, tx 5 rx 6"},
		{ipc.Peer{Online: true, ExitNode: true, ExitNodeOption: true}, "idle; exit node"},
		{ipc.Peer{Online: true, ExitNodeOption: true, Relay: "lab"}, "idle; offers exit node"},
		{ipc.Peer{ExitNodeOption: true}, "idle; offers exit node; offline"},
		{ipc.Peer{Online: true, Expired: true, Active: true, CurAddr: addr, TxBytes: 1}, "expired"},
		{ipc.Peer{Expired: true}, "expired"},
	}
	st := runningStatus()
	st.Peers = nil
	var want strings.Builder
	for i, c := range cases {
		p := c.p
		p.ID = int64(100 + i)
		p.HostName = fmt.Sprintf("p%02d", i)
		p.OS, p.UserID = "linux", 7
		p.Addresses = addrs(fmt.Sprintf("100.64.1.%d", i+1))
		st.Peers = append(st.Peers, p)
		fmt.Fprintf(&want, "%-15s %-20s %-12s %-7s %s\n", p.Addresses[0], p.HostName, "alice@", "linux", c.want)
	}
	fmt.Fprintf(&want, "# Login server: %s\n", st.LoginServer)
	e := newEnv(t, st)
	code, out, errs := e.run("status", "--self=false")
	if code != 0 || errs != "" {
		t.Fatalf("code %d, stderr %q", code, errs)
	}
	if out != want.String() {
		t.Errorf("got:\n%s\nwant:\n%s", out, want.String())
	}
}

// Peers that advertise SSH host keys (and this machine after 'skein set --ssh') say
// "offers SSH" after whatever else their column says.
func TestStatusOffersSSH(t *testing.T) {
	const addr = "198.51.100.7:41641"
	keys := []string{"ssh-ed25519 AAAA"}
	st := runningStatus()
	for _, c := range []struct {
		p    ipc.Peer
		self bool
		want string
	}{
		{ipc.Peer{Online: true, SSHHostKeys: keys}, false, "offers SSH"},
		{ipc.Peer{Online: true, Active: true, CurAddr: addr, TxBytes: 1, RxBytes: 2, SSHHostKeys: keys}, false, "active; direct " + addr + "; offers SSH, tx 1 rx 2"},
		{ipc.Peer{SSHHostKeys: keys}, false, "offline; offers SSH"},
		{ipc.Peer{Online: true}, false, "-"},
		{ipc.Peer{SSHHostKeys: keys}, true, "offers SSH"},
		{ipc.Peer{}, true, "-"},
	} {
		if got := peerState(st, &c.p, c.self); got != c.want {
			t.Errorf("%+v (self %v): %q, want %q", c.p, c.self, got, c.want)
		}
	}
}
