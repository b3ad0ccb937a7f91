package dataplane

import (
	"encoding/json"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/skeinvpn/skein/daemon/netmap"
	"github.com/skeinvpn/skein/daemon/wire"
	"github.com/skeinvpn/skein/internal/tsaddr"
)

// FuzzPlan applies map responses from a hostile control server (JSON, one per line) and checks
// the netmap → plan step (issue 14, S22): whatever the server sends, nothing outside the tailnet
// is routed into the tunnel unless the user accepted subnet routes or chose an exit node, a
// default route appears only for a chosen exit node, and only that peer may carry it.
func FuzzPlan(f *testing.F) {
	f.Add(byte(0), []byte(`{"Node":{"ID":1,"Addresses":["100.64.0.1/32"]},"Peers":[{"ID":2,"StableID":"x","Key":"nodekey:0000000000000000000000000000000000000000000000000000000000000002","HomeDERP":1,"Addresses":["100.64.0.2/32"],"AllowedIPs":["100.64.0.2/32","0.0.0.0/0","10.0.0.0/8","::/0"]}]}`))
	f.Add(byte(3), []byte(`{"Peers":[{"ID":3,"StableID":"x","HomeDERP":1,"Addresses":["8.8.8.8/32","fd7a:115c:a1e0::3/128"],"AllowedIPs":["8.8.8.8/32","192.168.0.0/16"]}]}
{"PeersChangedPatch":[{"NodeID":3,"KeyExpiry":"2000-01-01T00:00:00Z"}]}`))
	f.Fuzz(func(t *testing.T, flags byte, data []byte) {
		nm := netmap.New()
		now := time.Unix(1700000000, 0)
		for _, line := range strings.Split(string(data), "\n") {
			var r wire.MapResponse
			if json.Unmarshal([]byte(line), &r) == nil {
				nm.Apply(&r, now)
			}
		}
		prefs := Prefs{AcceptRoutes: flags&1 != 0, AdvertiseExitNode: flags&4 != 0}
		if flags&2 != 0 {
			prefs.ExitNodeID = "x"
		}
		np := computePlan(nm.Clone(), prefs, now)
		for _, r := range np.routes {
			switch {
			case !r.IsValid():
				t.Fatalf("invalid route %v", r)
			case r.Bits() == 0:
				if prefs.ExitNodeID == "" {
					t.Fatalf("default route %v without an exit node", r)
				}
			case tsaddr.OverlapsTailnet(r) && tsaddr.CGNATRange.Contains(r.Addr()) || tsaddr.ULARange.Contains(r.Addr()):
			case !prefs.AcceptRoutes:
				t.Fatalf("route %v outside the tailnet without accepted routes", r)
			}
		}
		for _, p := range np.peers {
			if p.cfg.NodeKey.IsZero() || p.cfg.NodeKey.LowOrder() {
				t.Fatalf("peer with an unusable key %v in the plan", p.cfg.NodeKey)
			}
			for _, a := range p.allowed {
				if a.Bits() == 0 && (np.exitPeer == nil || p.cfg.NodeKey != np.exitPeer.Key) {
					t.Fatalf("peer %v may carry %v but is not the exit node", p.cfg.NodeKey, a)
				}
			}
		}
		for _, l := range np.local {
			if !tsaddr.IsTailnetAddr(l.Addr()) || l.Addr() == netip.IPv4Unspecified() {
				t.Fatalf("local address %v", l)
			}
		}
	})
}
