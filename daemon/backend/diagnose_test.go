package backend

import (
	"context"
	"net/netip"
	"testing"
	"time"

	"github.com/skeinvpn/skein/daemon/key"
	"github.com/skeinvpn/skein/daemon/transport"
	"github.com/skeinvpn/skein/ipc"
)

// Why reports the path, the round of pings and the causes; an offline peer is named so
// without pinging; a logged-out helper or an unknown peer is an error.
func TestWhy(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	if _, err := e.b.Why(ctx, "alpha"); err == nil {
		t.Error("why while logged out")
	}
	e.up(peerNode(10, "alpha", 1))
	r, err := e.b.Why(ctx, "alpha")
	if err != nil {
		t.Fatal(err)
	}
	if r.Peer != "alpha" || r.Path != "relay" || r.Relay != "lab" || len(r.Pings) != 2 || r.Pings[1].To != "DERP(lab)" {
		t.Errorf("why: %+v", r)
	}
	if len(r.Causes) == 0 || r.Causes[0].Code != ipc.CauseNoPong || r.Causes[0].Fix == "" {
		t.Errorf("causes: %+v", r.Causes)
	}
	if _, err := e.b.Why(ctx, "nobody"); err == nil {
		t.Error("why for an unknown peer")
	}
}

// Status carries, for an active relayed peer, its cause codes and the most likely cause in
// full; a direct or idle peer has none.
func TestStatusRelayCauses(t *testing.T) {
	e := newEnv(t)
	alpha := peerNode(10, "alpha", 1)
	e.up(alpha)
	dp := e.dp()
	dp.mu.Lock()
	dp.paths = map[key.NodePublic]transport.PathInfo{alpha.Key: {DERPRegion: 1, LastSend: time.Now(), Active: true}}
	dp.mu.Unlock()
	p := findPeer(e.b.Status(), "alpha")
	if p == nil || len(p.RelayCauses) != 1 || p.RelayCauses[0] != ipc.CauseNoPong || p.RelayCause == nil || p.RelayCause.Fix == "" {
		t.Fatalf("relayed active peer: %+v", p)
	}
	dp.mu.Lock()
	dp.paths[alpha.Key] = transport.PathInfo{Direct: netip.MustParseAddrPort("198.51.100.9:41641"), LastSend: time.Now(), Active: true}
	dp.mu.Unlock()
	if p := findPeer(e.b.Status(), "alpha"); p == nil || len(p.RelayCauses) != 0 || p.RelayCause != nil {
		t.Fatalf("direct peer with causes: %+v", p)
	}
}

func findPeer(st ipc.Status, host string) *ipc.Peer {
	for i := range st.Peers {
		if st.Peers[i].HostName == host || st.Peers[i].ShortName() == host {
			return &st.Peers[i]
		}
	}
	return nil
}
