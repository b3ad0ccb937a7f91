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
