package netmap

import (
	"net/netip"
	"testing"
	"time"

	"github.com/skeinvpn/skein/daemon/wire"
)

func on(b bool) *bool { return &b }

func TestFullThenDeltas(t *testing.T) {
	nm := New()
	now := time.Now()
	ct := now.Add(-time.Hour)
	full := &wire.MapResponse{
		Node:        &wire.Node{ID: 1, Name: "self.ts.test.", Addresses: []netip.Prefix{netip.MustParsePrefix("100.64.0.1/32")}},
		Peers:       []*wire.Node{{ID: 2, Name: "b.ts.test.", DERP: "127.3.3.40:999"}, {ID: 3, Name: "a.ts.test.", Online: on(true)}},
		ControlTime: &ct,
		PacketFilters: map[string][]wire.FilterRule{
			"base": {{SrcIPs: []string{"*"}}},
		},
	}
	if !nm.Apply(full, now) {
		t.Fatal("full response reported no change")
	}
	if nm.Len() != 2 || nm.Peer(2).HomeDERP != 999 {
		t.Fatalf("peers after full: %+v", nm.SortedPeers())
	}
	if nm.Self.AllowedIPs == nil {
		t.Error("nil AllowedIPs not defaulted to Addresses")
	}
	if got := nm.SortedPeers(); got[0].ID != 3 {
		t.Errorf("sorted order: first %d, want 3", got[0].ID)
	}
	snapshot := nm.Peer(3)

	if nm.Apply(&wire.MapResponse{KeepAlive: true}, now) {
		t.Error("keep-alive reported a change")
	}
	nm.Apply(&wire.MapResponse{PeersChangedPatch: []*wire.PeerChange{{NodeID: 3, Online: on(false)}, {NodeID: 99, Online: on(true)}}}, now)
	if *nm.Peer(3).Online {
		t.Error("patch did not mark peer offline")
	}
	if !*snapshot.Online {
		t.Error("patch mutated an earlier snapshot")
	}
	if nm.Peer(99) != nil {
		t.Error("patch for an unknown node created it")
	}
	nm.Apply(&wire.MapResponse{PeersChanged: []*wire.Node{{ID: 4, Name: "c.ts.test."}}, PeersRemoved: []wire.NodeID{2}}, now)
	if nm.Peer(2) != nil || nm.Peer(4) == nil {
		t.Fatalf("changed/removed not applied: %+v", nm.SortedPeers())
	}
	// An empty Peers list is "no change", not "no peers".
	nm.Apply(&wire.MapResponse{Node: nm.Self, Peers: []*wire.Node{}}, now)
	if nm.Len() != 2 {
		t.Fatalf("empty Peers dropped peers: %d left", nm.Len())
	}
	nm.Apply(&wire.MapResponse{PacketFilters: map[string][]wire.FilterRule{"*": nil, "extra": {{SrcIPs: []string{"100.64.0.2"}}}}}, now)
	if _, ok := nm.PacketFilters["base"]; ok || len(nm.PacketFilters["extra"]) != 1 {
		t.Errorf("filters after clear-all: %+v", nm.PacketFilters)
	}
}

func TestExpiryUsesServerClock(t *testing.T) {
	nm := New()
	now := time.Now()
	server := now.Add(48 * time.Hour) // our clock is two days behind
	nm.Apply(&wire.MapResponse{ControlTime: &server}, now)
	n := &wire.Node{KeyExpiry: now.Add(24 * time.Hour)}
	if !nm.Expired(n, now) {
		t.Error("key expired by server time not reported expired")
	}
	if nm.Expired(&wire.Node{}, now) {
		t.Error("zero KeyExpiry means never")
	}
}

// The SSH policy is replaced by a response that carries one and kept by one that does not; a
// new map (a new map session) starts without one.
func TestSSHPolicy(t *testing.T) {
	nm := New()
	now := time.Now()
	self := &wire.Node{ID: 1, Name: "self.ts.test."}
	if nm.Apply(&wire.MapResponse{Node: self}, now); nm.SSHPolicy != nil {
		t.Fatal("policy before control sent one")
	}
	pol := &wire.SSHPolicy{Rules: []*wire.SSHRule{{Principals: []*wire.SSHPrincipal{{Any: true}}, Action: &wire.SSHAction{Accept: true}}}}
	if !nm.Apply(&wire.MapResponse{SSHPolicy: pol}, now) || nm.SSHPolicy != pol {
		t.Fatal("policy not taken")
	}
	snap := nm.Clone()
	if nm.Apply(&wire.MapResponse{PeersChanged: []*wire.Node{{ID: 2, Name: "p.ts.test."}}}, now); nm.SSHPolicy != pol {
		t.Fatal("a delta without a policy changed it")
	}
	empty := &wire.SSHPolicy{}
	nm.Apply(&wire.MapResponse{SSHPolicy: empty}, now)
	if nm.SSHPolicy != empty || snap.SSHPolicy != pol {
		t.Fatal("an empty policy did not replace the old one, or the snapshot changed")
	}
	if New().SSHPolicy != nil {
		t.Fatal("a new map session starts with a policy")
	}
}
