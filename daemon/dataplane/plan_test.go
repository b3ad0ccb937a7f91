package dataplane

import (
	"net/netip"
	"slices"
	"testing"
	"time"

	"github.com/skeinvpn/skein/daemon/key"
	"github.com/skeinvpn/skein/daemon/netmap"
	"github.com/skeinvpn/skein/daemon/wire"
)

func pfx(s ...string) []netip.Prefix {
	var out []netip.Prefix
	for _, x := range s {
		out = append(out, netip.MustParsePrefix(x))
	}
	return out
}

func testNetmap(t *testing.T) *netmap.NetworkMap {
	t.Helper()
	nm := netmap.New()
	node := func(id int, stable string, addrs []netip.Prefix, allowed []netip.Prefix) *wire.Node {
		return &wire.Node{ID: wire.NodeID(id), StableID: stable, Name: stable + ".ts.test.", Key: key.NewNode().Public(),
			DiscoKey: key.NewDisco().Public(), Addresses: addrs, AllowedIPs: allowed, HomeDERP: 1}
	}
	self := node(1, "self", pfx("100.64.0.1/32", "fd7a:115c:a1e0::1/128"), nil)
	exit := node(2, "exit", pfx("100.64.0.2/32", "fd7a:115c:a1e0::2/128"), pfx("0.0.0.0/0", "100.64.0.2/32", "::/0", "fd7a:115c:a1e0::2/128"))
	router := node(3, "router", pfx("100.64.0.3/32"), pfx("100.64.0.3/32", "192.168.7.0/24"))
	nm.Apply(&wire.MapResponse{Node: self, Peers: []*wire.Node{exit, router}}, time.Now())
	return nm
}

func allowedOf(np netPlan, stable string, nm *netmap.NetworkMap) []netip.Prefix {
	for _, p := range nm.SortedPeers() {
		if p.StableID != stable {
			continue
		}
		for _, pp := range np.peers {
			if pp.cfg.NodeKey == p.Key {
				return pp.allowed
			}
		}
	}
	return nil
}

func TestComputePlan(t *testing.T) {
	nm := testNetmap(t)
	now := time.Now()

	// Defaults: only peer addresses; no /0, no subnet routes.
	np := computePlan(nm, Prefs{SNAT: true}, now)
	if got := allowedOf(np, "exit", nm); !slices.Equal(got, pfx("100.64.0.2/32", "fd7a:115c:a1e0::2/128")) {
		t.Errorf("exit peer allowed without selection: %v", got)
	}
	if got := allowedOf(np, "router", nm); !slices.Equal(got, pfx("100.64.0.3/32")) {
		t.Errorf("router allowed without accept-routes: %v", got)
	}
	if np.exit || slices.Contains(np.routes, exitV4) || len(np.accepted) != 0 {
		t.Errorf("routes without prefs: %v", np.routes)
	}
	if !slices.Contains(np.routes, tsULA) || !slices.Equal(np.localNets, pfx("100.64.0.1/32", "fd7a:115c:a1e0::1/128")) {
		t.Errorf("routes %v localNets %v", np.routes, np.localNets)
	}

	// Exit node selected: /0 only for it, default routes in table 52.
	np = computePlan(nm, Prefs{ExitNodeID: "exit"}, now)
	if got := allowedOf(np, "exit", nm); !slices.Contains(got, exitV4) || !slices.Contains(got, exitV6) {
		t.Errorf("exit peer lacks /0: %v", got)
	}
	if !slices.Contains(np.routes, exitV4) || !slices.Contains(np.routes, exitV6) || np.exitPeer == nil {
		t.Errorf("exit routes: %v", np.routes)
	}

	// Selected exit node missing: routes stay (fail closed), no peer gets /0.
	np = computePlan(nm, Prefs{ExitNodeID: "gone"}, now)
	if !slices.Contains(np.routes, exitV4) || np.exitPeer != nil || slices.Contains(allowedOf(np, "exit", nm), exitV4) {
		t.Errorf("missing exit node: routes %v", np.routes)
	}

	// Accept routes.
	np = computePlan(nm, Prefs{AcceptRoutes: true}, now)
	if got := allowedOf(np, "router", nm); !slices.Contains(got, netip.MustParsePrefix("192.168.7.0/24")) {
		t.Errorf("accepted route not allowed: %v", got)
	}
	if !slices.Equal(np.accepted, pfx("192.168.7.0/24")) {
		t.Errorf("accepted %v", np.accepted)
	}

	// Offering: forwarding targets and filter destinations.
	np = computePlan(nm, Prefs{AdvertiseExitNode: true, AdvertiseRoutes: pfx("10.9.0.0/16")}, now)
	if !slices.Equal(np.forwardTo, pfx("10.9.0.0/16", "0.0.0.0/0", "::/0")) {
		t.Errorf("forwardTo %v", np.forwardTo)
	}
	if !slices.Contains(np.localNets, exitV4) || !slices.Contains(np.localNets, netip.MustParsePrefix("10.9.0.0/16")) {
		t.Errorf("localNets %v", np.localNets)
	}
}
