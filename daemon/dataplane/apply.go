package dataplane

import (
	"bytes"
	"encoding/hex"
	"errors"
	"fmt"
	"maps"
	"net/netip"
	"reflect"
	"slices"
	"time"

	"github.com/skeinvpn/skein/daemon/filter"
	"github.com/skeinvpn/skein/daemon/key"
	"github.com/skeinvpn/skein/daemon/netmap"
	"github.com/skeinvpn/skein/daemon/transport"
	"github.com/skeinvpn/skein/daemon/wire"
)

// SetNetmap applies a netmap with the user's routing prefs: transport peers, WireGuard peers
// (only what changed, so live sessions are kept), the packet filter, DNS, forwarding and
// routes. A map that differs from the last one only in some peers (the common case: a peer
// came online, moved, joined or left) is applied as a delta: only those peers are touched,
// without re-reading the host's routing tables or recompiling DNS, so the cost does not grow
// with the size of the tailnet. Anything else (the first map, new prefs, filter, DNS or DERP
// settings, this node itself) is applied in full.
func (d *Dataplane) SetNetmap(nm *netmap.NetworkMap, prefs Prefs) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.closed || nm.Self == nil {
		return nil
	}
	if d.deltaOK(nm, prefs) {
		return d.applyDeltaLocked(nm)
	}
	return d.applyFullLocked(nm, prefs)
}

// deltaOK: only peers changed since the last apply.
func (d *Dataplane) deltaOK(nm *netmap.NetworkMap, prefs Prefs) bool {
	old := d.nm
	return old != nil && d.havePlan && old.Self == nm.Self && old.DERPMap == nm.DERPMap &&
		old.DNSConfig == nm.DNSConfig && old.Domain == nm.Domain &&
		sameMap(old.PacketFilters, nm.PacketFilters) && reflect.DeepEqual(prefs, d.prefs)
}

func sameMap[K comparable, V any](a, b map[K]V) bool {
	return reflect.ValueOf(a).UnsafePointer() == reflect.ValueOf(b).UnsafePointer()
}

// applyFullLocked applies everything from scratch (what is already installed and right stays).
func (d *Dataplane) applyFullLocked(nm *netmap.NetworkMap, prefs Prefs) error {
	now := time.Now()
	np := computePlan(nm, prefs, now)
	d.pm.setDisabled(!prefs.PortMapping)

	ruleSet := filterRules(nm)
	if prefs.ShieldsUp {
		// No new inbound connections at all; replies to ours still pass (the filter's flow
		// and TCP rules), as with the official client's shields up.
		ruleSet = nil
	}
	if prefs.ShieldsUp != d.shieldsUp {
		d.shieldsUp = prefs.ShieldsUp
		d.applyPeerAPIPortsLocked()
	}
	rules, warns := filter.Compile(ruleSet, np.localNets)
	for _, w := range warns {
		if !d.filterWarned[w] {
			d.filterWarned[w] = true
			d.logf("filter: %s", w)
		}
	}
	d.filter.SetSelfAddrs(np.local)
	jailed := jailedSources(nm, np)
	d.filter.SetRules(rules.Jail(jailed))
	d.jailed = len(jailed) > 0

	cfgs := make([]transport.PeerConfig, 0, len(np.peers))
	plans := make(map[wire.NodeID]*peerPlan, len(np.peers))
	refs := make(map[netip.Prefix]int, len(np.peers))
	want := make(map[key.NodePublic]string, len(np.peers))
	for i := range np.peers {
		pp := &np.peers[i]
		cfgs = append(cfgs, pp.cfg)
		plans[pp.id] = pp
		want[pp.cfg.NodeKey] = pp.block
		for _, r := range pp.routes {
			refs[r]++
		}
	}
	d.conn.SetDERPMap(nm.DERPMap)
	d.conn.SetPeers(cfgs)

	var uapi bytes.Buffer
	l := d.lazy
	l.mu.Lock()
	for k, block := range want {
		l.setWantedLocked(k, block, &uapi)
	}
	for k := range l.want {
		if _, ok := want[k]; !ok {
			l.setWantedLocked(k, "", &uapi)
		}
	}
	var errs []error
	if err := d.ipcSet(&uapi); err != nil {
		errs = append(errs, err)
	}
	l.nm.Store(nm)
	l.setWide(wideOf(plans))
	l.mu.Unlock()
	d.publishWG()

	d.applyDNSLocked(nm, prefs)
	d.nm, d.peerPlans, d.routeRefs = nm, plans, refs
	d.plan, d.prefs, d.havePlan = np, prefs.clone(), true
	d.routesDirty = false
	d.scheduleExpiryLocked(nm, now)
	if err := d.applyHostLocked(); err != nil {
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}

// applyDeltaLocked applies the peers that differ from the last apply's map.
func (d *Dataplane) applyDeltaLocked(nm *netmap.NetworkMap) error {
	now := time.Now()
	changed, removed := nm.PeerDiff(d.nm)
	prefs := d.prefs
	// Jailing lives in the packet filter's rules, which a delta does not recompile.
	if d.jailed || slices.ContainsFunc(changed, func(n *wire.Node) bool { return n.IsJailed }) {
		return d.applyFullLocked(nm, prefs)
	}
	var uapi bytes.Buffer
	var addRoutes, delRoutes []netip.Prefix
	exitChanged, subnetChanged := false, false
	var expiryTouched []wire.NodeID

	l := d.lazy
	l.mu.Lock()
	defer l.mu.Unlock()
	wideChanged := false
	drop := func(pp *peerPlan) {
		delete(d.peerPlans, pp.id)
		d.conn.RemovePeer(pp.cfg.NodeKey)
		l.setWantedLocked(pp.cfg.NodeKey, "", &uapi)
		wideChanged = wideChanged || len(pp.wide) > 0
		for _, r := range pp.routes {
			if d.routeRefs[r]--; d.routeRefs[r] <= 0 {
				delete(d.routeRefs, r)
				delRoutes = append(delRoutes, r)
			}
		}
		exitChanged = exitChanged || pp.exit
		subnetChanged = subnetChanged || len(pp.accepted) > 0
		expiryTouched = append(expiryTouched, pp.id)
	}
	// put configures pp; isNew says it was not in the plan before (its routes are counted
	// then, and only then: an updated peer with the same routes keeps its count).
	put := func(pp *peerPlan, isNew bool) {
		d.peerPlans[pp.id] = pp
		d.conn.UpsertPeer(pp.cfg)
		l.setWantedLocked(pp.cfg.NodeKey, pp.block, &uapi)
		wideChanged = wideChanged || len(pp.wide) > 0
		if isNew {
			for _, r := range pp.routes {
				if d.routeRefs[r]++; d.routeRefs[r] == 1 {
					addRoutes = append(addRoutes, r)
				}
			}
		}
		exitChanged = exitChanged || pp.exit
		subnetChanged = subnetChanged || len(pp.accepted) > 0
		expiryTouched = append(expiryTouched, pp.id)
	}
	for _, p := range removed {
		if pp := d.peerPlans[p.ID]; pp != nil {
			drop(pp)
		}
	}
	for _, p := range changed {
		old := d.peerPlans[p.ID]
		pp, ok := planPeer(nm, p, prefs, now)
		if old != nil && (!ok || old.cfg.NodeKey != pp.cfg.NodeKey || !slices.Equal(old.routes, pp.routes)) {
			drop(old)
			old = nil
		}
		if ok && (old == nil || !reflect.DeepEqual(*old, pp)) {
			put(&pp, old == nil)
		}
	}
	// A route one peer dropped and another added within this delta stays.
	addRoutes, delRoutes = cancelOut(addRoutes, delRoutes)

	var errs []error
	if err := d.ipcSet(&uapi); err != nil {
		errs = append(errs, err)
	}
	l.nm.Store(nm)
	if wideChanged {
		l.setWide(wideOf(d.peerPlans))
	}
	d.publishWG()
	if len(addRoutes)+len(delRoutes) > 0 {
		if err := d.rt.UpdateRoutes(addRoutes, delRoutes); err != nil {
			errs = append(errs, err)
		}
	}
	d.names.set(nm)
	d.nm = nm
	// The full route list is needed only when the host's facts change (applyHostLocked):
	// building it per delta would cost a sort of every peer's route.
	if len(addRoutes)+len(delRoutes) > 0 {
		d.routesDirty = true
	}
	if subnetChanged {
		d.plan.accepted = d.acceptedLocked()
	}
	if exitChanged {
		d.plan.exitPeer = nil
		for _, pp := range d.peerPlans {
			if pp.exit {
				d.plan.exitPeer = nm.Peer(pp.id)
			}
		}
	}
	d.updateExpiryLocked(nm, now, expiryTouched)
	d.publishRoutingLocked()
	return errors.Join(errs...)
}

// cancelOut removes prefixes that are in both lists.
func cancelOut(add, del []netip.Prefix) ([]netip.Prefix, []netip.Prefix) {
	if len(add) == 0 || len(del) == 0 {
		return add, del
	}
	in := map[netip.Prefix]bool{}
	for _, p := range del {
		in[p] = true
	}
	var a2 []netip.Prefix
	for _, p := range add {
		if in[p] {
			delete(in, p)
			continue
		}
		a2 = append(a2, p)
	}
	var d2 []netip.Prefix
	for _, p := range del {
		if in[p] {
			d2 = append(d2, p)
		}
	}
	return a2, d2
}

// routesLocked are the table-52 routes of the current peers and the plan's own.
func (d *Dataplane) routesLocked() []netip.Prefix {
	routes := slices.Collect(maps.Keys(d.routeRefs))
	slices.SortFunc(routes, func(a, b netip.Prefix) int { return a.Addr().Compare(b.Addr()) })
	return append(routes, globalRoutes(d.prefs)...)
}

func (d *Dataplane) acceptedLocked() []netip.Prefix {
	var out []netip.Prefix
	for _, pp := range d.peerPlans {
		out = append(out, pp.accepted...)
	}
	slices.SortFunc(out, func(a, b netip.Prefix) int { return a.Addr().Compare(b.Addr()) })
	return out
}

// scheduleExpiryLocked arranges a full apply when the first usable peer's key expires: a
// peer drops out of WireGuard then, though no map says so. It looks at every peer.
func (d *Dataplane) scheduleExpiryLocked(nm *netmap.NetworkMap, now time.Time) {
	d.expiryAt, d.expiryID = time.Time{}, 0
	for _, pp := range d.peerPlans {
		d.noteExpiryLocked(nm, now, pp.id)
	}
	d.armExpiryLocked()
}

// updateExpiryLocked does the same after a delta that touched the given peers: it looks at
// every peer only when the one that expires first was among them.
func (d *Dataplane) updateExpiryLocked(nm *netmap.NetworkMap, now time.Time, touched []wire.NodeID) {
	if d.expiryID != 0 && slices.Contains(touched, d.expiryID) {
		d.scheduleExpiryLocked(nm, now)
		return
	}
	before := d.expiryAt
	for _, id := range touched {
		if d.peerPlans[id] != nil {
			d.noteExpiryLocked(nm, now, id)
		}
	}
	if !d.expiryAt.Equal(before) {
		d.armExpiryLocked()
	}
}

// noteExpiryLocked keeps the earliest key expiry (on our clock) among the peers it is shown.
func (d *Dataplane) noteExpiryLocked(nm *netmap.NetworkMap, now time.Time, id wire.NodeID) {
	p := nm.Peer(id)
	if p == nil || p.KeyExpiry.IsZero() {
		return
	}
	at := p.KeyExpiry.Add(now.Sub(nm.ServerNow(now)))
	if d.expiryAt.IsZero() || at.Before(d.expiryAt) {
		d.expiryAt, d.expiryID = at, id
	}
}

func (d *Dataplane) armExpiryLocked() {
	if d.expiry != nil {
		d.expiry.Stop()
		d.expiry = nil
	}
	if d.expiryAt.IsZero() {
		return
	}
	d.expiry = time.AfterFunc(time.Until(d.expiryAt)+time.Second, func() {
		d.mu.Lock()
		defer d.mu.Unlock()
		if d.closed || d.nm == nil {
			return
		}
		d.logf("dataplane: a peer's key expired; applying the map again")
		if err := d.applyFullLocked(d.nm, d.prefs); err != nil {
			d.logf("dataplane: %v", err)
		}
	})
}

func removeBlock(b *bytes.Buffer, k key.NodePublic) {
	r := k.Raw()
	fmt.Fprintf(b, "public_key=%s\nremove=true\n", hex.EncodeToString(r[:]))
}

func (d *Dataplane) ipcSet(b *bytes.Buffer) error {
	if b.Len() == 0 {
		return nil
	}
	if err := d.dev.IpcSet(b.String()); err != nil {
		return fmt.Errorf("configuring WireGuard peers: %w", err)
	}
	return nil
}

// publishWG publishes how many peers WireGuard has (the caller holds lazy.mu, or d.mu).
func (d *Dataplane) publishWG() {
	n := 0
	d.lazy.configured.Range(func(any, any) bool { n++; return true })
	d.pubMu.Lock()
	d.pub.wgPeers = n
	d.pubMu.Unlock()
}

// wideOf are the peers' AllowedIPs wider than an address, for the packet path's lookup.
func wideOf(plans map[wire.NodeID]*peerPlan) map[key.NodePublic][]netip.Prefix {
	out := map[key.NodePublic][]netip.Prefix{}
	for _, pp := range plans {
		if len(pp.wide) > 0 {
			out[pp.cfg.NodeKey] = pp.wide
		}
	}
	return out
}
