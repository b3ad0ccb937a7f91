package backend

import (
	"net/netip"
	"testing"
	"time"

	"github.com/skeinvpn/skein/daemon/transport"
	"github.com/skeinvpn/skein/ipc"
)

// TestStatusPathFacts: the status carries the transport's word on activity as it is (no window
// of the backend's own), the path in use, and the path of the latest traffic with its time.
func TestStatusPathFacts(t *testing.T) {
	e := newEnv(t)
	direct, relayed, idle, quiet := peerNode(2, "direct", 1), peerNode(3, "relayed", 1), peerNode(4, "idle", 1), peerNode(5, "quiet", 1)
	e.up(direct, relayed, idle, quiet)
	sent := time.Now().Add(-time.Minute) // recent enough for the old 2-minute window
	addr := netip.MustParseAddrPort("198.51.100.7:41641")
	dp := e.dp()
	dp.mu.Lock()
	dp.paths[direct.Key] = transport.PathInfo{Active: true, Direct: addr, Latency: 1500 * time.Microsecond, LastSend: sent, LastRecv: sent,
		LastDirect: addr, TxBytes: 10, RxBytes: 20}
	dp.paths[relayed.Key] = transport.PathInfo{Active: true, DERPRegion: 1, LastSend: sent, LastDERPRegion: 1}
	dp.paths[idle.Key] = transport.PathInfo{Active: false, DERPRegion: 1, LastSend: sent, LastRecv: time.Now(), LastDirect: addr}
	dp.paths[quiet.Key] = transport.PathInfo{DERPRegion: 1}
	dp.mu.Unlock()

	peers := map[string]ipc.Peer{}
	for _, p := range e.b.Status().Peers {
		peers[p.HostName] = p
	}
	check := func(name string, got ipc.Path, want ipc.PathKind) {
		t.Helper()
		if got.Kind != want {
			t.Errorf("%s: path %+v, want %s", name, got, want)
		}
	}
	p := peers["direct"]
	check("direct", p.Path(), ipc.PathDirect)
	if p.CurAddr != addr.String() || p.LatencyMs != 1.5 || p.TxBytes != 10 || p.RxBytes != 20 || p.LastWrite == nil || !p.LastWrite.Equal(sent) {
		t.Errorf("direct: %+v", p)
	}
	p = peers["relayed"]
	check("relayed", p.Path(), ipc.PathRelay)
	if p.Relay != "lab" || p.LastRelay != "lab" || p.LastAddr != "" {
		t.Errorf("relayed: relay %q, last %q/%q", p.Relay, p.LastAddr, p.LastRelay)
	}
	// Sent a minute ago and received just now, yet idle: the transport's 45 s since the last send.
	p = peers["idle"]
	check("idle", p.Path(), ipc.PathIdle)
	if p.Active || p.Relay != "lab" || p.LastAddr != addr.String() {
		t.Errorf("idle: active %v, relay %q, last %q", p.Active, p.Relay, p.LastAddr)
	}
	if last := p.Path().Last; last == nil || last.Kind != ipc.PathDirect || last.Addr != addr.String() || !last.At.Equal(sent) {
		t.Errorf("idle: last path %+v", last)
	}
	p = peers["quiet"]
	check("quiet", p.Path(), ipc.PathIdle)
	if p.LastWrite != nil || p.LastAddr != "" || p.LastRelay != "" || p.Path().Last != nil {
		t.Errorf("never sent to, yet: %+v", p)
	}
}
