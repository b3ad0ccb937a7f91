package ui

import (
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/skeinvpn/skein/ipc"
)

// pathPeer is a peer of the path tests: online, with a home relay, and no traffic yet.
func pathPeer(name, ip string) ipc.Peer {
	return ipc.Peer{ID: 9, StableID: "n" + name, NodeKey: "nodekey:" + name, HostName: name, DNSName: name + ".lab.ts.net.",
		OS: "linux", UserID: 1, Addresses: []netip.Addr{addr(ip)}, Online: true, Relay: "lab", ExitNodeOption: true}
}

// TestPathWordsEveryFrontEnd: the tray item, the list row, the detail pane, the exit-node page
// and the search word each peer's path alike, under ipc's rule. An idle peer is never "relay"
// because of its home relay, nor "direct" because a direct path has not lapsed yet.
func TestPathWordsEveryFrontEnd(t *testing.T) {
	const addr7 = "198.51.100.7:41641"
	at := now.Add(-3 * time.Minute)
	clock := at.Local().Format("15:04")
	type words struct {
		tray, row, detail, exit string
		search                  []string // words that find the peer; "!word" must not
	}
	for _, c := range []struct {
		name string
		edit func(p *ipc.Peer)
		want words
	}{
		{"idle, never any traffic", func(p *ipc.Peer) {}, words{
			tray: "alpha — idle", row: "100.64.0.9 · online · idle", detail: "idle", exit: "online · idle",
			search: []string{"idle", "!relay", "!direct"}}},
		{"active, direct", func(p *ipc.Peer) {
			p.Active, p.CurAddr, p.Relay, p.LatencyMs, p.LastWrite, p.LastAddr = true, addr7, "", 1.234, &at, addr7
		}, words{
			tray: "alpha — direct " + addr7 + " (1.2 ms)", row: "100.64.0.9 · online · direct " + addr7 + " · 1.2 ms",
			detail: "direct " + addr7, exit: "online · direct " + addr7 + " · 1.2 ms",
			search: []string{"direct", "!relay", "!idle"}}},
		{"active, relayed", func(p *ipc.Peer) { p.Active, p.LastWrite, p.LastRelay = true, &at, "lab" }, words{
			tray: "alpha — relay (lab)", row: "100.64.0.9 · online · relay (lab)", detail: "relay (lab)", exit: "online · relay (lab)",
			search: []string{"relay", "!direct", "!idle"}}},
		{"active, relayed, no region known", func(p *ipc.Peer) { p.Active, p.Relay = true, "" }, words{
			tray: "alpha — relay", row: "100.64.0.9 · online · relay", detail: "relay", exit: "online · relay",
			search: []string{"relay"}}},
		{"idle, direct path not lapsed yet", func(p *ipc.Peer) {
			p.CurAddr, p.Relay, p.LatencyMs, p.LastWrite, p.LastAddr, p.TxBytes = addr7, "", 1.234, &at, addr7, 10
		}, words{
			tray: "alpha — idle", row: "100.64.0.9 · online · idle", detail: "idle (last: direct " + addr7 + " at " + clock + ")",
			exit: "online · idle", search: []string{"idle", "!direct", "!relay"}}},
		{"idle after relayed traffic", func(p *ipc.Peer) { p.LastWrite, p.LastRelay, p.TxBytes = &at, "lab", 10 }, words{
			tray: "alpha — idle", row: "100.64.0.9 · online · idle", detail: "idle (last: relay (lab) at " + clock + ")",
			exit: "online · idle", search: []string{"idle", "!relay"}}},
		{"offline after direct traffic", func(p *ipc.Peer) {
			p.Online, p.LastSeen, p.LastWrite, p.LastAddr = false, ago5(), &at, addr7
		}, words{
			tray: "alpha — offline", row: "100.64.0.9 · offline · last seen 5 min ago",
			detail: "offline (last: direct " + addr7 + " at " + clock + ")", exit: "offline · last seen 5 min ago",
			search: []string{"offline", "!direct", "!idle"}}},
		{"key expired", func(p *ipc.Peer) { p.Expired, p.Active, p.CurAddr = true, true, addr7 }, words{
			tray: "alpha — key expired", row: "100.64.0.9 · online · key expired", detail: "key expired", exit: "online · key expired",
			search: []string{"expired", "!direct"}}},
	} {
		p := pathPeer("alpha", "100.64.0.9")
		c.edit(&p)
		check := func(what, got, want string) {
			if got != want {
				t.Errorf("%s: %s = %q, want %q", c.name, what, got, want)
			}
		}
		check("tray", trayPeerLabel(&p), c.want.tray)
		check("row", peerInfoLine(&p, now), c.want.row)
		check("detail", detailPathText(&p, now), c.want.detail)
		v := view{reachable: true, st: ipc.Status{State: ipc.StateRunning, Peers: []ipc.Peer{p},
			ExitNode: &ipc.ExitNodeStatus{ID: p.StableID, Name: "alpha", Online: p.Online}}}
		check("exit page", exitNodeStateText(&v, now), c.want.exit)
		for _, w := range c.want.search {
			want := !strings.HasPrefix(w, "!")
			if got := matches(&v.st, &p, strings.TrimPrefix(w, "!")); got != want {
				t.Errorf("%s: search %q finds it: %v", c.name, strings.TrimPrefix(w, "!"), got)
			}
		}
	}
}

func TestClockText(t *testing.T) {
	at := time.Date(2026, 5, 1, 9, 7, 0, 0, time.Local)
	if got := clockText(at, at.Add(time.Hour)); got != "09:07" {
		t.Errorf("same day: %q", got)
	}
	if got := clockText(at, at.Add(48*time.Hour)); got != "1 May 09:07" {
		t.Errorf("two days later: %q", got)
	}
}

// TestPathLiveInWindowAndTray: the case end to end in the app: a peer with a home relay
// and no traffic is idle in the tray, the list and the detail pane; traffic makes it direct; when
// traffic stops it is idle again and the detail pane keeps the path it took.
func TestPathLiveInWindowAndTray(t *testing.T) {
	st := running()
	st.Peers = []ipc.Peer{pathPeer("alpha", "100.64.0.9")}
	h := newHarness(t, st, ipc.Prefs{})
	peers := func(want string) func() string {
		return func() string {
			if got := menuLines(h.a.TrayMenu()); !strings.Contains(got, "Peers ▸\n    "+want+"\n") {
				return "menu:\n" + got
			}
			return ""
		}
	}
	h.eventually("idle in the tray", peers("alpha — idle"))
	h.ui(func() { h.a.peers.list.Select(0) })
	h.eventually("idle in the window", func() string {
		return h.expect("alpha · linux · exit node", "100.64.0.9 · online · idle", "online", "idle")
	})

	const addr7 = "198.51.100.7:41641"
	at := now.Add(-10 * time.Second)
	p := &st.Peers[0]
	p.Active, p.CurAddr, p.Relay, p.LatencyMs, p.LastWrite, p.LastAddr = true, addr7, "", 0.8, &at, addr7
	h.be.SetStatus(st)
	h.eventually("direct in the tray", peers("alpha — direct "+addr7+" (0.8 ms)"))
	h.eventually("direct in the window", func() string {
		return h.expect("100.64.0.9 · online · direct "+addr7+" · 0.8 ms", "online, active", "direct "+addr7, "0.8 ms")
	})

	// The session ends; the direct path is not lapsed yet, which changes nothing.
	p.Active = false
	h.be.SetStatus(st)
	h.eventually("idle again in the tray", peers("alpha — idle"))
	h.eventually("idle again in the window", func() string {
		return h.expect("100.64.0.9 · online · idle", "idle (last: direct "+addr7+" at "+at.Local().Format("15:04")+")")
	})
	h.ui(func() {
		if s := h.look(); s.has("online, active") || s.has("0.8 ms") {
			t.Errorf("an idle peer shows activity or latency: %s", s)
		}
	})
}
