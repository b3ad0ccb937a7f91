package dataplane

import (
	"encoding/json"
	"slices"
	"testing"
	"time"

	"github.com/skeinvpn/skein/daemon/wire"
)

// TestJailedSources (issue 14, S20): a peer control sends with "IsJailed": true (as JSON, the
// way it comes) gives the packet filter its allowed IPs, and no other peer's; a later full node
// without the flag unjails it.
func TestJailedSources(t *testing.T) {
	nm := testNetmap(t)
	var router *wire.Node
	for _, p := range nm.SortedPeers() {
		if p.StableID == "router" {
			router = p
		}
	}
	b, err := json.Marshal(router)
	if err != nil {
		t.Fatal(err)
	}
	var m map[string]any
	json.Unmarshal(b, &m)
	m["IsJailed"] = true
	b, _ = json.Marshal(m)
	var jailed wire.Node
	if err := json.Unmarshal(b, &jailed); err != nil || !jailed.IsJailed {
		t.Fatalf("IsJailed not decoded: %v %+v", err, jailed)
	}
	apply := func(n *wire.Node) netPlan {
		t.Helper()
		if !nm.Apply(&wire.MapResponse{PeersChanged: []*wire.Node{n}}, time.Now()) {
			t.Fatal("the netmap did not change")
		}
		return computePlan(nm, Prefs{AcceptRoutes: true}, time.Now())
	}
	np := apply(&jailed)
	got := jailedSources(nm, np)
	want := allowedOf(np, "router", nm)
	if len(want) == 0 || !slices.Equal(got, want) {
		t.Fatalf("jailed sources %v, want the router's allowed IPs %v", got, want)
	}
	free := jailed
	free.IsJailed = false
	if got := jailedSources(nm, apply(&free)); len(got) != 0 {
		t.Errorf("after unjailing: jailed sources %v", got)
	}
}
