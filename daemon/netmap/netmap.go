// Package netmap keeps the network map built from the control server's full and delta map
// responses. A map hands out snapshots in O(1) (Clone) that never change afterwards: the peers
// live in copy-on-write shards with their indexes (by key, address and name) and a sorted
// list, so a delta copies only what it touches, and PeerDiff tells two snapshots apart by
// looking only at the shards that differ.
package netmap

import (
	"iter"
	"maps"
	"net/netip"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/skeinvpn/skein/daemon/key"
	"github.com/skeinvpn/skein/daemon/wire"
	"github.com/skeinvpn/skein/internal/safetext"
)

// NetworkMap is the merged view of every map response received in one map session. Only its
// owner calls Apply; Clone gives snapshots that others may read from any goroutine. The
// maps below are replaced, never changed in place, once a snapshot may share them.
type NetworkMap struct {
	Self          *wire.Node
	peers         peerTable
	DERPMap       *wire.DERPMap
	DNSConfig     *wire.DNSConfig
	Domain        string
	PacketFilters map[string][]wire.FilterRule
	UserProfiles  map[wire.UserID]wire.UserProfile
	// SSHPolicy is the tailnet's SSH policy for this node: nil until control sends one in this
	// map session (which denies every SSH connection). Never changed in place.
	SSHPolicy *wire.SSHPolicy
	// ControlTime is the server's clock at the last response, for expiry decisions.
	ControlTime time.Time
	// ReceivedAt is our clock when ControlTime arrived.
	ReceivedAt time.Time
	// Health are control's messages about this node (cleaned, at most 32); replaced by each
	// response that has them.
	Health []string
	// LimitsHit says which of this package's limits the server's responses passed (limits.go).
	LimitsHit []string
}

// New returns an empty map.
func New() *NetworkMap {
	return &NetworkMap{
		PacketFilters: map[string][]wire.FilterRule{},
		UserProfiles:  map[wire.UserID]wire.UserProfile{},
	}
}

// Apply merges one response into the map and reports whether anything a user could see changed.
// Keep-alives change nothing. The caller owns synchronisation.
func (nm *NetworkMap) Apply(r *wire.MapResponse, now time.Time) (changed bool) {
	if r == nil {
		return false
	}
	if r.ControlTime != nil && !r.ControlTime.IsZero() {
		nm.ControlTime = *r.ControlTime
		nm.ReceivedAt = now
	}
	if r.KeepAlive {
		return false
	}
	if r.Node != nil {
		nm.Self = nm.normalize(r.Node)
		changed = true
	}
	if r.DERPMap != nil {
		nm.applyDERPMap(nm.cleanDERPMap(r.DERPMap))
		changed = true
	}
	if r.DNSConfig != nil {
		nm.DNSConfig = cleanDNSConfig(r.DNSConfig)
		changed = true
	}
	if r.Domain != "" {
		nm.Domain = safetext.Clean(r.Domain, 255)
	}
	if r.Health != nil {
		nm.Health = cleanHealth(r.Health)
		changed = true
	}
	if r.SSHPolicy != nil {
		nm.SSHPolicy = r.SSHPolicy
		changed = true
	}
	if len(r.UserProfiles) > 0 {
		nm.UserProfiles = maps.Clone(nm.UserProfiles)
		for _, u := range r.UserProfiles {
			if _, known := nm.UserProfiles[u.ID]; !known && len(nm.UserProfiles) >= maxUserProfiles {
				nm.limitHit("more than %d user profiles; the rest are ignored", maxUserProfiles)
				continue
			}
			nm.UserProfiles[u.ID] = cleanUserProfile(u)
		}
		changed = true
	}
	if r.PacketFilter != nil || r.PacketFilters != nil {
		nm.PacketFilters = maps.Clone(nm.PacketFilters)
		changed = true
	}
	if r.PacketFilter != nil {
		nm.PacketFilters["base"] = r.PacketFilter
	}
	if r.PacketFilters != nil {
		if v, ok := r.PacketFilters["*"]; ok && v == nil {
			clear(nm.PacketFilters)
		}
		for name, rules := range r.PacketFilters {
			if name == "*" {
				continue
			}
			if rules == nil {
				delete(nm.PacketFilters, name)
			} else {
				nm.PacketFilters[name] = rules
			}
		}
	}
	if r.PacketFilter != nil || r.PacketFilters != nil {
		changed := map[string]bool{}
		if r.PacketFilter != nil {
			changed["base"] = true
		}
		for name := range r.PacketFilters {
			changed[name] = true
		}
		nm.boundFilters(changed)
	}
	if nm.applyPeers(r, now) {
		changed = true
	}
	return changed
}

// A non-empty Peers list replaces everything; an empty one means "no change" (the protocol
// cannot tell an empty full list from an absent one).
func (nm *NetworkMap) applyPeers(r *wire.MapResponse, now time.Time) bool {
	changed := false
	if len(r.Peers) > 0 {
		norm := make([]*wire.Node, 0, min(len(r.Peers), maxPeers))
		for _, p := range r.Peers {
			if p == nil {
				continue
			}
			if len(norm) == maxPeers {
				nm.limitHit("more than %d peers; the rest are ignored", maxPeers)
				break
			}
			norm = append(norm, nm.normalize(p))
		}
		nm.peers.replaceAll(norm)
		changed = true
	}
	te := nm.peers.edit()
	if len(r.Peers) == 0 {
		for _, p := range r.PeersChanged {
			if p == nil {
				continue
			}
			if nm.Peer(p.ID) == nil && nm.Len() >= maxPeers {
				nm.limitHit("more than %d peers; the rest are ignored", maxPeers)
				continue
			}
			te.put(nm.normalize(p))
			changed = true
		}
		for _, id := range r.PeersRemoved {
			if te.remove(id) {
				changed = true
			}
		}
	}
	for _, pc := range r.PeersChangedPatch {
		if pc != nil && nm.patch(te, pc) {
			changed = true
		}
	}
	for id, seen := range r.PeerSeenChange {
		if p := nm.Peer(id); p != nil {
			p2 := *p
			if seen {
				t := now
				p2.LastSeen = &t
			} else {
				p2.LastSeen = nil
			}
			te.put(&p2)
			changed = true
		}
	}
	for id, online := range r.OnlineChange {
		if p := nm.Peer(id); p != nil {
			p2 := *p
			o := online
			p2.Online = &o
			te.put(&p2)
			changed = true
		}
	}
	return changed
}

// patch makes a changed copy of the node: snapshots handed out earlier keep the old one.
func (nm *NetworkMap) patch(te *tableEdit, pc *wire.PeerChange) bool {
	old := nm.Peer(pc.NodeID)
	if old == nil {
		return false
	}
	p := *old
	if pc.DERPRegion != 0 {
		p.HomeDERP = pc.DERPRegion
	}
	if pc.Cap != 0 {
		p.Cap = pc.Cap
	}
	if pc.CapMap != nil {
		p.CapMap = cleanCapMap(pc.CapMap)
	}
	if pc.Endpoints != nil {
		p.Endpoints = validEndpoints(first(pc.Endpoints, maxEndpoints))
	}
	if pc.Key != nil {
		p.Key = *pc.Key
		if !p.Key.IsZero() && p.Key.LowOrder() {
			nm.limitHit("node %d: its node key is a point of small order; ignored", p.ID)
			p.Key = key.NodePublic{}
		}
	}
	if pc.DiscoKey != nil {
		p.DiscoKey = *pc.DiscoKey
	}
	if pc.Online != nil {
		o := *pc.Online
		p.Online = &o
	}
	if pc.LastSeen != nil {
		t := *pc.LastSeen
		p.LastSeen = &t
	}
	if pc.KeyExpiry != nil {
		p.KeyExpiry = *pc.KeyExpiry
	}
	te.put(&p)
	return true
}

// applyDERPMap builds a new map rather than changing the old one in place: the old one may
// have been handed to the data plane, which reads it from other goroutines.
func (nm *NetworkMap) applyDERPMap(d *wire.DERPMap) {
	next := &wire.DERPMap{OmitDefaultRegions: d.OmitDefaultRegions}
	if nm.DERPMap != nil {
		next.Regions = nm.DERPMap.Regions
	}
	// Regions == nil keeps the old regions; nil region entries are dropped.
	if d.Regions != nil {
		regions := make(map[int]*wire.DERPRegion, len(d.Regions))
		for id, r := range d.Regions {
			if r != nil {
				regions[id] = r
			}
		}
		next.Regions = regions
	}
	nm.DERPMap = next
}

// normalize fills what newer capability versions leave implicit, and bounds and cleans what
// control sent (limits.go).
func (nm *NetworkMap) normalize(n *wire.Node) *wire.Node {
	c := *n
	nm.cleanNode(&c)
	if c.AllowedIPs == nil {
		c.AllowedIPs = c.Addresses
	}
	if c.HomeDERP == 0 && c.DERP != "" {
		// Legacy form "127.3.3.40:<region>".
		if i := strings.LastIndexByte(c.DERP, ':'); i >= 0 {
			if region, err := strconv.Atoi(c.DERP[i+1:]); err == nil && region > 0 {
				c.HomeDERP = region
			}
		}
	}
	return &c
}

// Clone returns a snapshot: it shares everything with nm, and stays as it is while nm takes
// further responses (nm copies what it changes). O(1).
func (nm *NetworkMap) Clone() *NetworkMap {
	c := *nm
	return &c
}

// Peer returns the peer with the given ID, or nil.
func (nm *NetworkMap) Peer(id wire.NodeID) *wire.Node {
	p, _ := nm.peers.byID.get(id)
	return p
}

// PeerByKey returns the peer with the given node key, or nil.
func (nm *NetworkMap) PeerByKey(k key.NodePublic) *wire.Node {
	if id, ok := nm.peers.byKey.get(k); ok {
		if p := nm.Peer(id); p != nil && p.Key == k {
			return p
		}
	}
	return nil
}

// PeerByAddr returns the peer with the given tailnet address, or nil.
func (nm *NetworkMap) PeerByAddr(a netip.Addr) *wire.Node {
	if id, ok := nm.peers.byAddr.get(a.Unmap()); ok {
		if p := nm.Peer(id); p != nil && slices.ContainsFunc(p.Addresses, func(q netip.Prefix) bool { return q.Addr() == a.Unmap() }) {
			return p
		}
	}
	return nil
}

// PeerByName returns the peer with the given MagicDNS name (any case, trailing dot optional).
// Control gives every node a unique name; with duplicates it returns one of them, or none.
func (nm *NetworkMap) PeerByName(fqdn string) *wire.Node {
	name := strings.ToLower(strings.TrimSuffix(fqdn, "."))
	if id, ok := nm.peers.byName.get(name); ok {
		if p := nm.Peer(id); p != nil && lowerFQDN(p) == name {
			return p
		}
	}
	return nil
}

// Len is the number of peers.
func (nm *NetworkMap) Len() int { return len(nm.peers.order) }

// SortedPeers returns the peers ordered by name, then ID (a new slice each call).
func (nm *NetworkMap) SortedPeers() []*wire.Node {
	out := make([]*wire.Node, 0, len(nm.peers.order))
	for p := range nm.Peers() {
		out = append(out, p)
	}
	return out
}

// Peers yields the peers ordered by name, then ID, without building a slice.
func (nm *NetworkMap) Peers() iter.Seq[*wire.Node] {
	return func(yield func(*wire.Node) bool) {
		for _, k := range nm.peers.order {
			if p := nm.Peer(k.id); p != nil && !yield(p) {
				return
			}
		}
	}
}

// PeerDiff lists what changed from prev to nm: peers added or changed (a new value), and
// peers removed (their last value). It looks only at the index shards the two maps do not
// share, so a single-peer delta costs a shard's worth of comparisons, not the whole map.
func (nm *NetworkMap) PeerDiff(prev *NetworkMap) (changed, removed []*wire.Node) {
	for i := range shardCount {
		var was map[wire.NodeID]*wire.Node
		if prev != nil {
			was = prev.peers.byID.shards[i]
		}
		now := nm.peers.byID.shards[i]
		if sameMap(was, now) {
			continue
		}
		for id, p := range now {
			if was[id] != p {
				changed = append(changed, p)
			}
		}
		for id, p := range was {
			if _, ok := now[id]; !ok {
				removed = append(removed, p)
			}
		}
	}
	return changed, removed
}

// sameMap reports whether two maps are the same map (not merely equal).
func sameMap[K comparable, V any](a, b map[K]V) bool {
	if a == nil || b == nil {
		return a == nil && b == nil
	}
	return reflect.ValueOf(a).UnsafePointer() == reflect.ValueOf(b).UnsafePointer()
}

// ServerNow estimates the control server's current time, correcting our clock's skew.
func (nm *NetworkMap) ServerNow(now time.Time) time.Time {
	if nm.ControlTime.IsZero() {
		return now
	}
	return nm.ControlTime.Add(now.Sub(nm.ReceivedAt))
}

// Expired reports whether a node's key has expired, by the server's clock.
func (nm *NetworkMap) Expired(n *wire.Node, now time.Time) bool {
	if n.Expired {
		return true
	}
	return !n.KeyExpiry.IsZero() && !n.KeyExpiry.After(nm.ServerNow(now))
}
