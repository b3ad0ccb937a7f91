package netmap

import (
	"fmt"
	"math/rand/v2"
	"net/netip"
	"slices"
	"testing"
	"time"

	"github.com/skeinvpn/skein/daemon/key"
	"github.com/skeinvpn/skein/daemon/wire"
)

func testPeer(id int, name string) *wire.Node {
	return &wire.Node{ID: wire.NodeID(id), Name: name + ".ts.test.", Key: key.NewNode().Public(),
		Addresses: []netip.Prefix{netip.PrefixFrom(netip.AddrFrom4([4]byte{100, 64, byte(id >> 8), byte(id)}), 32)}}
}

// model is the obvious map the table must agree with.
type model map[wire.NodeID]*wire.Node

func (m model) check(t *testing.T, nm *NetworkMap, when string) {
	t.Helper()
	if nm.Len() != len(m) {
		t.Fatalf("%s: %d peers, model %d", when, nm.Len(), len(m))
	}
	want := make([]*wire.Node, 0, len(m))
	for _, p := range m {
		want = append(want, p)
	}
	slices.SortFunc(want, compareNodes)
	got := nm.SortedPeers()
	for i := range want {
		if got[i].ID != want[i].ID || got[i].Name != want[i].Name {
			t.Fatalf("%s: sorted order differs at %d: %d %q, want %d %q", when, i, got[i].ID, got[i].Name, want[i].ID, want[i].Name)
		}
	}
	for id, p := range m {
		byID := nm.Peer(id)
		if byID == nil || !same(byID, p) {
			t.Fatalf("%s: peer %d: %+v, want %+v", when, id, byID, p)
		}
		if nm.PeerByKey(p.Key) != byID || nm.PeerByAddr(p.Addresses[0].Addr()) != byID || nm.PeerByName(p.Name) != byID {
			t.Fatalf("%s: peer %d not found by every index", when, id)
		}
	}
}

// Random deltas on a table agree with a plain map (names are unique, as control makes them); snapshots taken on the way never change,
// and PeerDiff between consecutive snapshots is exactly what changed.
func TestTableAgainstModel(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	nm := New()
	m := model{}
	var full []*wire.Node
	for i := range 500 {
		p := testPeer(i, fmt.Sprintf("p%03d-%d", r.IntN(800), i))
		full = append(full, p)
		m[p.ID] = p
	}
	nm.Apply(&wire.MapResponse{Peers: full}, time.Now())
	m.check(t, nm, "full")
	type snap struct {
		nm *NetworkMap
		m  model
	}
	var snaps []snap
	next := 1000
	for step := range 2000 {
		before := nm.Clone()
		prevModel := model{}
		for k, v := range m {
			prevModel[k] = v
		}
		var mr wire.MapResponse
		switch r.IntN(4) {
		case 0: // new peer
			p := testPeer(next, fmt.Sprintf("p%03d-%d", r.IntN(800), next))
			next++
			mr.PeersChanged = []*wire.Node{p}
			m[p.ID] = p
		case 1: // removal
			for id := range m {
				mr.PeersRemoved = []wire.NodeID{id}
				delete(m, id)
				break
			}
		case 2: // patch
			for id, p := range m {
				online := r.IntN(2) == 0
				mr.PeersChangedPatch = []*wire.PeerChange{{NodeID: id, Online: &online}}
				p2 := *p
				p2.Online = &online
				m[id] = &p2
				break
			}
		case 3: // rename (a changed node moves in the order)
			for id, p := range m {
				p2 := *p
				p2.Name = fmt.Sprintf("q%03d-%d.ts.test.", r.IntN(800), id)
				mr.PeersChanged = []*wire.Node{&p2}
				m[id] = &p2
				break
			}
		}
		nm.Apply(&mr, time.Now())
		m.check(t, nm, fmt.Sprintf("step %d", step))
		changed, removed := nm.PeerDiff(before)
		for _, p := range changed {
			if m[p.ID] == nil || !same(m[p.ID], p) || (prevModel[p.ID] != nil && prevModel[p.ID] == m[p.ID]) {
				t.Fatalf("step %d: diff says %d changed", step, p.ID)
			}
		}
		for _, p := range removed {
			if _, ok := m[p.ID]; ok || prevModel[p.ID] == nil {
				t.Fatalf("step %d: diff says %d removed", step, p.ID)
			}
		}
		if n := diffCount(prevModel, m); n != len(changed)+len(removed) {
			t.Fatalf("step %d: diff found %d changes, model %d", step, len(changed)+len(removed), n)
		}
		if step%100 == 0 {
			snaps = append(snaps, snap{nm.Clone(), func() model {
				c := model{}
				for k, v := range m {
					c[k] = v
				}
				return c
			}()})
		}
	}
	for i, s := range snaps {
		s.m.check(t, s.nm, fmt.Sprintf("snapshot %d at the end", i))
	}
}

// same compares what the model sets (the map stores normalized copies).
func same(a, b *wire.Node) bool {
	return a.ID == b.ID && a.Name == b.Name && a.Key == b.Key && (a.Online == nil) == (b.Online == nil) && (a.Online == nil || *a.Online == *b.Online)
}

func diffCount(a, b model) int {
	n := 0
	for id, p := range b {
		if a[id] != p {
			n++
		}
	}
	for id := range a {
		if _, ok := b[id]; !ok {
			n++
		}
	}
	return n
}

// A single-peer delta on a 10,000-peer map, a snapshot and the diff: what the session and the
// data plane pay per delta.
func BenchmarkDelta10k(b *testing.B) {
	nm := New()
	var full []*wire.Node
	for i := range 10000 {
		full = append(full, testPeer(i, fmt.Sprintf("peer%05d", i)))
	}
	nm.Apply(&wire.MapResponse{Peers: full}, time.Now())
	prev := nm.Clone()
	b.ReportAllocs()
	i := 0
	for b.Loop() {
		online := i%2 == 0
		nm.Apply(&wire.MapResponse{PeersChangedPatch: []*wire.PeerChange{{NodeID: wire.NodeID(i % 10000), Online: &online}}}, time.Now())
		snap := nm.Clone()
		if c, _ := snap.PeerDiff(prev); len(c) != 1 {
			b.Fatalf("diff %d", len(c))
		}
		prev = snap
		i++
	}
}

func BenchmarkFull10k(b *testing.B) {
	var full []*wire.Node
	for i := range 10000 {
		full = append(full, testPeer(i, fmt.Sprintf("peer%05d", i)))
	}
	b.ReportAllocs()
	for b.Loop() {
		nm := New()
		nm.Apply(&wire.MapResponse{Peers: full}, time.Now())
	}
}
