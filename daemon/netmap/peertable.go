package netmap

import (
	"hash/maphash"
	"net/netip"
	"slices"
	"strings"

	"github.com/skeinvpn/skein/daemon/key"
	"github.com/skeinvpn/skein/daemon/wire"
)

// shardCount splits each index so that a change copies only a small part of it: with 10,000
// peers a shard holds about 160 entries.
const shardCount = 64

var shardSeed = maphash.MakeSeed()

// cowMap is a map split into shards that are never changed once a snapshot may see them: an
// edit copies the shards it touches (once per edit), so a snapshot of the whole map is a copy
// of 64 pointers, and two snapshots differ exactly in the shards that are not the same.
type cowMap[K comparable, V any] struct {
	shards [shardCount]map[K]V
}

func shardOf[K comparable](k K) int {
	return int(maphash.Comparable(shardSeed, k) % shardCount)
}

func (m *cowMap[K, V]) get(k K) (V, bool) {
	v, ok := m.shards[shardOf(k)][k]
	return v, ok
}

// edit records which shards one edit has copied already.
type edit struct {
	copied [4][shardCount]bool
}

func cowSet[K comparable, V any](m *cowMap[K, V], e *[shardCount]bool, k K, v V) {
	i := shardOf(k)
	cowShard(m, e, i)[k] = v
}

func cowDelete[K comparable, V any](m *cowMap[K, V], e *[shardCount]bool, k K) {
	i := shardOf(k)
	if _, ok := m.shards[i][k]; ok {
		delete(cowShard(m, e, i), k)
	}
}

// cowShard returns shard i, copied first if this edit has not copied it yet.
func cowShard[K comparable, V any](m *cowMap[K, V], e *[shardCount]bool, i int) map[K]V {
	if !e[i] {
		c := make(map[K]V, len(m.shards[i])+1)
		for k, v := range m.shards[i] {
			c[k] = v
		}
		m.shards[i] = c
		e[i] = true
	}
	return m.shards[i]
}

// peerTable is the peers of a map with their indexes, all copy-on-write, and the display
// order (by name, then ID) as a slice of keys that is replaced, never changed, when a peer
// comes, goes or is renamed; a patch (online, endpoints, ...) leaves it alone.
type peerTable struct {
	byID   cowMap[wire.NodeID, *wire.Node]
	byKey  cowMap[key.NodePublic, wire.NodeID]
	byAddr cowMap[netip.Addr, wire.NodeID]
	byName cowMap[string, wire.NodeID] // FQDN, lower case, no trailing dot
	order  []sortKey
}

type sortKey struct {
	name string
	id   wire.NodeID
}

func keyOf(n *wire.Node) sortKey { return sortKey{n.Name, n.ID} }

func compareKeys(a, b sortKey) int {
	if c := strings.Compare(a.name, b.name); c != 0 {
		return c
	}
	return int(a.id - b.id)
}

func compareNodes(a, b *wire.Node) int { return compareKeys(keyOf(a), keyOf(b)) }

func lowerFQDN(n *wire.Node) string { return strings.ToLower(strings.TrimSuffix(n.Name, ".")) }

// tableEdit batches changes to a peerTable: each index shard and the order are copied at most
// once per edit.
type tableEdit struct {
	t        *peerTable
	e        edit
	orderNew bool
}

func (t *peerTable) edit() *tableEdit { return &tableEdit{t: t} }

func (te *tableEdit) orderForWrite() []sortKey {
	if !te.orderNew {
		te.t.order = slices.Clone(te.t.order)
		te.orderNew = true
	}
	return te.t.order
}

// put adds or replaces a peer, touching only the indexes whose keys change.
func (te *tableEdit) put(n *wire.Node) {
	t := te.t
	old, had := t.byID.get(n.ID)
	cowSet(&t.byID, &te.e.copied[0], n.ID, n)
	if had && old.Key == n.Key && slices.Equal(old.Addresses, n.Addresses) && old.Name == n.Name {
		return // a patch: the order and the other indexes stay
	}
	if had {
		te.unindex(old)
		if old.Name != n.Name {
			o := te.orderForWrite()
			if i, found := slices.BinarySearchFunc(o, keyOf(old), compareKeys); found {
				te.t.order = slices.Delete(o, i, i+1)
			}
		}
	}
	te.index(n)
	if !had || old.Name != n.Name {
		o := te.orderForWrite()
		i, _ := slices.BinarySearchFunc(o, keyOf(n), compareKeys)
		te.t.order = slices.Insert(o, i, keyOf(n))
	}
}

// remove deletes a peer; it reports whether there was one.
func (te *tableEdit) remove(id wire.NodeID) bool {
	t := te.t
	old, ok := t.byID.get(id)
	if !ok {
		return false
	}
	te.unindex(old)
	cowDelete(&t.byID, &te.e.copied[0], id)
	o := te.orderForWrite()
	if i, found := slices.BinarySearchFunc(o, keyOf(old), compareKeys); found {
		t.order = slices.Delete(o, i, i+1)
	}
	return true
}

// index adds n's secondary index entries.
func (te *tableEdit) index(n *wire.Node) {
	t := te.t
	if !n.Key.IsZero() {
		cowSet(&t.byKey, &te.e.copied[1], n.Key, n.ID)
	}
	for _, a := range n.Addresses {
		if a.IsSingleIP() {
			cowSet(&t.byAddr, &te.e.copied[2], a.Addr(), n.ID)
		}
	}
	if name := lowerFQDN(n); name != "" {
		cowSet(&t.byName, &te.e.copied[3], name, n.ID)
	}
}

// unindex removes the secondary index entries that still point at n's ID.
func (te *tableEdit) unindex(n *wire.Node) {
	t := te.t
	if id, ok := t.byKey.get(n.Key); ok && id == n.ID {
		cowDelete(&t.byKey, &te.e.copied[1], n.Key)
	}
	for _, a := range n.Addresses {
		if id, ok := t.byAddr.get(a.Addr()); ok && id == n.ID {
			cowDelete(&t.byAddr, &te.e.copied[2], a.Addr())
		}
	}
	name := lowerFQDN(n)
	if id, ok := t.byName.get(name); ok && id == n.ID {
		cowDelete(&t.byName, &te.e.copied[3], name)
	}
}

// replaceAll makes the table hold exactly peers (a full peer list; a repeated ID keeps the
// last one).
func (t *peerTable) replaceAll(peers []*wire.Node) {
	*t = peerTable{}
	te := t.edit()
	for _, p := range peers {
		if old, ok := t.byID.get(p.ID); ok {
			te.unindex(old)
		}
		cowSet(&t.byID, &te.e.copied[0], p.ID, p)
		te.index(p)
	}
	t.order = make([]sortKey, 0, len(peers))
	for i := range t.byID.shards {
		for _, p := range t.byID.shards[i] {
			t.order = append(t.order, keyOf(p))
		}
	}
	slices.SortFunc(t.order, compareKeys)
}
