package transport

import (
	"fmt"
	"net/netip"
	"testing"

	"github.com/skeinvpn/skein/daemon/key"
)

func peerConfigs(n int) []PeerConfig {
	cfgs := make([]PeerConfig, n)
	for i := range cfgs {
		cfgs[i] = PeerConfig{
			NodeKey:   key.NewNode().Public(),
			DiscoKey:  key.NewDisco().Public(),
			Endpoints: []netip.AddrPort{netip.AddrPortFrom(netip.AddrFrom4([4]byte{198, 51, byte(i >> 8), byte(i)}), 41641)},
			HomeDERP:  1,
			Name:      fmt.Sprintf("peer-%d", i),
		}
	}
	return cfgs
}

// SetPeers keeps, adds, changes and removes peers, with every index following.
func TestSetPeersIndexes(t *testing.T) {
	c := New(Options{DiscoKey: key.NewDisco()})
	defer c.Shutdown()
	cfgs := peerConfigs(5)
	c.SetPeers(cfgs)
	a := c.peerByKey(cfgs[0].NodeKey)
	c.setAddrOwner(cfgs[0].Endpoints[0], a)
	// Peer 1 goes, peer 0 gets a new disco key (restarted: its verified address is void),
	// a new peer comes.
	next := append([]PeerConfig{cfgs[0]}, cfgs[2:]...)
	next[0].DiscoKey = key.NewDisco().Public()
	next = append(next, peerConfigs(1)...)
	c.SetPeers(next)
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.peers.len() != 5 || c.peers.byKey[cfgs[1].NodeKey] != nil || c.peers.byDisco[cfgs[1].DiscoKey] != nil {
		t.Fatalf("peer 1 not removed: %d peers", c.peers.len())
	}
	if c.peers.byKey[cfgs[0].NodeKey] != a || c.peers.byDisco[next[0].DiscoKey] != a || c.peers.byDisco[cfgs[0].DiscoKey] != nil {
		t.Fatal("peer 0's disco key not moved")
	}
	if c.peers.byAddr[cfgs[0].Endpoints[0]] != nil || len(c.peers.addrsOf[a]) != 0 {
		t.Fatal("a restarted peer kept its verified address")
	}
	if c.peers.byKey[next[len(next)-1].NodeKey] == nil {
		t.Fatal("new peer missing")
	}
}

// BenchmarkSetPeers10k: one netmap of 10,000 peers in which one peer changed, the common case
// of a big tailnet's deltas (it scanned every peer's addresses for every peer before).
func BenchmarkSetPeers10k(b *testing.B) {
	c := New(Options{DiscoKey: key.NewDisco()})
	defer c.Shutdown()
	cfgs := peerConfigs(10000)
	c.SetPeers(cfgs)
	b.ReportAllocs()
	for i := 0; b.Loop(); i++ {
		cfgs[i%len(cfgs)].Endpoints = []netip.AddrPort{netip.AddrPortFrom(netip.AddrFrom4([4]byte{203, 0, 113, byte(i)}), 41641)}
		c.SetPeers(cfgs)
	}
}

// UpsertPeer and RemovePeer change one peer and leave the others, and a later SetPeers still
// treats the set as a whole.
func TestUpsertAndRemovePeer(t *testing.T) {
	c := New(Options{DiscoKey: key.NewDisco()})
	defer c.Shutdown()
	cfgs := peerConfigs(3)
	c.SetPeers(cfgs)
	keep := c.peerByKey(cfgs[1].NodeKey)
	extra := peerConfigs(1)[0]
	c.UpsertPeer(extra)
	changed := cfgs[0]
	changed.DiscoKey = key.NewDisco().Public()
	c.UpsertPeer(changed)
	c.RemovePeer(cfgs[2].NodeKey)
	c.RemovePeer(key.NewNode().Public()) // unknown: nothing happens
	c.mu.Lock()
	if c.peers.len() != 3 || c.peers.byKey[extra.NodeKey] == nil || c.peers.byKey[cfgs[2].NodeKey] != nil {
		t.Errorf("after upsert/remove: %d peers", c.peers.len())
	}
	if c.peers.byKey[cfgs[1].NodeKey] != keep {
		t.Error("an untouched peer was replaced")
	}
	if c.peers.byDisco[changed.DiscoKey] == nil || c.peers.byDisco[cfgs[0].DiscoKey] != nil || c.peers.byDisco[cfgs[2].DiscoKey] != nil {
		t.Error("disco index not updated")
	}
	c.mu.Unlock()
	c.SetPeers(cfgs[:1])
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.peers.len() != 1 || c.peers.byKey[extra.NodeKey] != nil {
		t.Errorf("SetPeers after upserts left %d peers", c.peers.len())
	}
}
