// Package netmap keeps the one in-memory network map built from the control server's full and
// delta map responses.
package netmap

import (
	"maps"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/skeinvpn/skein/daemon/wire"
)

// NetworkMap is the merged view of every map response received in one map session.
type NetworkMap struct {
	Self          *wire.Node
	Peers         map[wire.NodeID]*wire.Node
	DERPMap       *wire.DERPMap
	DNSConfig     *wire.DNSConfig
	Domain        string
	PacketFilters map[string][]wire.FilterRule
	UserProfiles  map[wire.UserID]wire.UserProfile
	// ControlTime is the server's clock at the last response, for expiry decisions.
	ControlTime time.Time
	// ReceivedAt is our clock when ControlTime arrived.
	ReceivedAt time.Time
}

// New returns an empty map.
func New() *NetworkMap {
	return &NetworkMap{
		Peers:         map[wire.NodeID]*wire.Node{},
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
		nm.Self = normalize(r.Node)
		changed = true
	}
	if r.DERPMap != nil {
		nm.applyDERPMap(r.DERPMap)
		changed = true
	}
	if r.DNSConfig != nil {
		nm.DNSConfig = r.DNSConfig
		changed = true
	}
	if r.Domain != "" {
		nm.Domain = r.Domain
	}
	for _, u := range r.UserProfiles {
		nm.UserProfiles[u.ID] = u
		changed = true
	}
	if r.PacketFilter != nil {
		nm.PacketFilters["base"] = r.PacketFilter
		changed = true
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
		changed = true
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
		clear(nm.Peers)
		for _, p := range r.Peers {
			if p != nil {
				nm.Peers[p.ID] = normalize(p)
			}
		}
		changed = true
	} else {
		for _, p := range r.PeersChanged {
			if p != nil {
				nm.Peers[p.ID] = normalize(p)
				changed = true
			}
		}
		for _, id := range r.PeersRemoved {
			if _, ok := nm.Peers[id]; ok {
				delete(nm.Peers, id)
				changed = true
			}
		}
	}
	for _, pc := range r.PeersChangedPatch {
		if pc != nil && nm.patch(pc) {
			changed = true
		}
	}
	for id, seen := range r.PeerSeenChange {
		if p, ok := nm.Peers[id]; ok {
			p2 := *p
			if seen {
				t := now
				p2.LastSeen = &t
			} else {
				p2.LastSeen = nil
			}
			nm.Peers[id] = &p2
			changed = true
		}
	}
	for id, online := range r.OnlineChange {
		if p, ok := nm.Peers[id]; ok {
			p2 := *p
			o := online
			p2.Online = &o
			nm.Peers[id] = &p2
			changed = true
		}
	}
	return changed
}

// patch copies the node before changing it so that snapshots handed out earlier stay valid.
func (nm *NetworkMap) patch(pc *wire.PeerChange) bool {
	old, ok := nm.Peers[pc.NodeID]
	if !ok {
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
		p.CapMap = pc.CapMap
	}
	if pc.Endpoints != nil {
		p.Endpoints = pc.Endpoints
	}
	if pc.Key != nil {
		p.Key = *pc.Key
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
	nm.Peers[pc.NodeID] = &p
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

// normalize fills what newer capability versions leave implicit.
func normalize(n *wire.Node) *wire.Node {
	c := *n
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

// Clone returns a copy that shares the (immutable) nodes but none of the maps, so the copy
// stays as it is while this map takes further responses.
func (nm *NetworkMap) Clone() *NetworkMap {
	c := *nm
	c.Peers = maps.Clone(nm.Peers)
	c.PacketFilters = maps.Clone(nm.PacketFilters)
	c.UserProfiles = maps.Clone(nm.UserProfiles)
	return &c
}

// SortedPeers returns the peers ordered by name, then ID, for stable output.
func (nm *NetworkMap) SortedPeers() []*wire.Node {
	out := make([]*wire.Node, 0, len(nm.Peers))
	for _, p := range nm.Peers {
		out = append(out, p)
	}
	slices.SortFunc(out, func(a, b *wire.Node) int {
		if c := strings.Compare(a.Name, b.Name); c != 0 {
			return c
		}
		return int(a.ID - b.ID)
	})
	return out
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
