package transport

import (
	"context"
	mrand "math/rand/v2"
	"net"
	"net/netip"
	"slices"
	"sort"
	"sync"
	"time"

	"github.com/skeinvpn/skein/daemon/stun"
	"github.com/skeinvpn/skein/daemon/wire"

	"github.com/skeinvpn/skein/internal/tsaddr"
)

var netipAddrPortZero netip.AddrPort

// Report is what a netcheck learnt about our network.
type Report struct {
	At            time.Time
	UDP           bool
	GlobalV4      netip.AddrPort
	GlobalV6      netip.AddrPort
	MappingVaries *bool // nil when fewer than two STUN servers answered
	RegionLatency map[int]time.Duration
	PreferredDERP int
}

const (
	stunTimeout      = 3 * time.Second
	reSTUNMin        = 20 * time.Second
	reSTUNJitter     = 6 * time.Second
	homeKeepMargin   = 10 * time.Millisecond
	maxSTUNPerReport = 32
)

type stunProbe struct {
	region int
	server netip.AddrPort
	at     time.Time
}

type stunResult struct {
	region  int
	server  netip.AddrPort
	latency time.Duration
	mapped  netip.AddrPort
}

// netchecker runs STUN from the WireGuard socket to learn our public address and DERP
// latencies, picks the home region and maintains our endpoint list.
type netchecker struct {
	c *Conn

	mu      sync.Mutex
	pending map[stun.TxID]stunProbe
	results []stunResult
	last    Report
	wake    chan struct{}
	running bool
}

func newNetchecker(c *Conn) *netchecker {
	return &netchecker{c: c, pending: map[stun.TxID]stunProbe{}, wake: make(chan struct{}, 1)}
}

// kick asks for a report soon (new DERP map, new peers).
func (n *netchecker) kick() {
	select {
	case n.wake <- struct{}{}:
	default:
	}
}

func (n *netchecker) run(ctx context.Context) {
	n.mu.Lock()
	if n.running {
		n.mu.Unlock()
		return
	}
	n.running = true
	n.mu.Unlock()
	defer func() {
		n.mu.Lock()
		n.running = false
		n.mu.Unlock()
	}()
	for {
		n.c.mu.Lock()
		dm := n.c.derpMap
		n.c.mu.Unlock()
		if dm != nil {
			n.report(ctx)
		}
		d := reSTUNMin + time.Duration(mrand.Int64N(int64(reSTUNJitter)))
		t := time.NewTimer(d)
		select {
		case <-ctx.Done():
			t.Stop()
			return
		case <-n.wake:
			t.Stop()
		case <-t.C:
		}
	}
}

// Netcheck runs a report now and returns it.
func (c *Conn) Netcheck(ctx context.Context) Report {
	return c.nc.report(ctx)
}

// LastReport returns the last netcheck report.
func (c *Conn) LastReport() Report {
	c.nc.mu.Lock()
	defer c.nc.mu.Unlock()
	return c.nc.last
}

func stunServers(dm *wire.DERPMap) map[int][]netip.AddrPort {
	out := map[int][]netip.AddrPort{}
	if dm == nil {
		return out
	}
	for id, r := range dm.Regions {
		if r == nil {
			continue
		}
		for _, nd := range r.Nodes {
			if nd == nil || nd.STUNPort < 0 {
				continue
			}
			port := nd.STUNPort
			if port == 0 {
				port = 3478
			}
			ip, err := netip.ParseAddr(nd.IPv4)
			if err != nil {
				ip, err = netip.ParseAddr(nd.HostName)
			}
			if err != nil {
				ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
				ips, rerr := net.DefaultResolver.LookupNetIP(ctx, "ip4", nd.HostName)
				cancel()
				if rerr != nil || len(ips) == 0 {
					continue
				}
				ip = ips[0]
			}
			if ip.Is4() {
				out[id] = append(out[id], netip.AddrPortFrom(ip, uint16(port)))
			}
		}
	}
	return out
}

func (n *netchecker) report(ctx context.Context) Report {
	c := n.c
	c.mu.Lock()
	dm := c.derpMap
	open := c.bindOpen
	c.mu.Unlock()
	servers := stunServers(dm)
	n.mu.Lock()
	n.results = nil
	clear(n.pending)
	n.mu.Unlock()
	if open {
		sent, delivered := 0, 0
		for try := 0; try < 3 && sent < maxSTUNPerReport; try++ {
			for region, addrs := range servers {
				srv := addrs[try%len(addrs)]
				tx := stun.NewTxID()
				n.mu.Lock()
				n.pending[tx] = stunProbe{region: region, server: srv, at: time.Now()}
				n.mu.Unlock()
				if c.sendUDPOne(stun.Request(tx), srv) == nil {
					delivered++
				}
				sent++
			}
			if n.waitAll(ctx, len(servers), 100*time.Millisecond) {
				break
			}
		}
		// When no probe left this host (a local firewall refuses UDP), no answer can come:
		// waiting out the timeout would only delay the report that says so.
		if delivered > 0 {
			n.waitAll(ctx, len(servers), stunTimeout)
		}
	}
	rep := n.finish(dm)
	c.applyReport(rep)
	return rep
}

// waitAll waits up to d for an answer from every region; it reports whether all answered.
func (n *netchecker) waitAll(ctx context.Context, regions int, d time.Duration) bool {
	deadline := time.Now().Add(d)
	for {
		n.mu.Lock()
		got := map[int]bool{}
		for _, r := range n.results {
			got[r.region] = true
		}
		n.mu.Unlock()
		if len(got) >= regions {
			return true
		}
		if time.Now().After(deadline) || ctx.Err() != nil {
			return false
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// handleSTUN is called from the receive path for STUN-looking packets.
func (n *netchecker) handleSTUN(b []byte, src netip.AddrPort, now time.Time) {
	tx, mapped, err := stun.ParseResponse(b)
	if err != nil {
		return
	}
	n.mu.Lock()
	defer n.mu.Unlock()
	p, ok := n.pending[tx]
	if !ok || p.server != src {
		return
	}
	delete(n.pending, tx)
	n.results = append(n.results, stunResult{region: p.region, server: p.server, latency: now.Sub(p.at), mapped: mapped})
}

func (n *netchecker) finish(dm *wire.DERPMap) Report {
	n.mu.Lock()
	defer n.mu.Unlock()
	rep := Report{At: time.Now(), RegionLatency: map[int]time.Duration{}}
	mappedBy := map[netip.AddrPort]netip.AddrPort{} // server → mapped
	for _, r := range n.results {
		rep.UDP = true
		if l, ok := rep.RegionLatency[r.region]; !ok || r.latency < l {
			rep.RegionLatency[r.region] = r.latency
		}
		if r.mapped.Addr().Is4() {
			rep.GlobalV4 = r.mapped
			mappedBy[r.server] = r.mapped
		} else if r.mapped.Addr().Is6() {
			rep.GlobalV6 = r.mapped
		}
	}
	if len(mappedBy) >= 2 {
		varies := false
		var first netip.AddrPort
		for _, m := range mappedBy {
			if !first.IsValid() {
				first = m
			} else if m != first {
				varies = true
			}
		}
		rep.MappingVaries = &varies
	}
	rep.PreferredDERP = pickHome(rep.RegionLatency, n.last, dm)
	n.last = rep
	clear(n.pending)
	return rep
}

// pickHome chooses the lowest-latency region, keeping the old home unless the new one is
// clearly better; with no measurements it keeps the old home or takes the lowest region ID.
func pickHome(lat map[int]time.Duration, prev Report, dm *wire.DERPMap) int {
	best, bestLat := 0, time.Duration(0)
	ids := make([]int, 0, len(lat))
	for id := range lat {
		if dm == nil || homeEligible(dm.Regions[id]) {
			ids = append(ids, id)
		}
	}
	sort.Ints(ids)
	for _, id := range ids {
		if best == 0 || lat[id] < bestLat {
			best, bestLat = id, lat[id]
		}
	}
	old := prev.PreferredDERP
	if old != 0 && dm != nil && dm.Regions[old] != nil {
		if oldLat, ok := lat[old]; ok && best != old {
			if oldLat-bestLat < homeKeepMargin || bestLat > oldLat*2/3 {
				return old
			}
		}
		if best == 0 {
			return old
		}
	}
	if best == 0 && dm != nil {
		for id, r := range dm.Regions {
			if homeEligible(r) && (best == 0 || id < best) {
				best = id
			}
		}
	}
	return best
}

// homeEligible reports whether a region can be a home: it has a relay (not only STUN servers)
// and control does not ask nodes to keep away from it.
func homeEligible(r *wire.DERPRegion) bool {
	if r == nil || r.Avoid || r.NoMeasureNoHome {
		return false
	}
	for _, nd := range r.Nodes {
		if nd != nil && !nd.STUNOnly {
			return true
		}
	}
	return false
}

// applyReport sets the home region and recomputes our endpoints, telling control on change.
func (c *Conn) applyReport(rep Report) {
	changed := false
	if rep.PreferredDERP != 0 && c.derp.setHome(rep.PreferredDERP) {
		changed = true
	}
	eps := c.localEndpoints(rep)
	c.mu.Lock()
	// What control sees of the report besides home and endpoints (latencies aside, which
	// move with every run).
	if !rep.At.IsZero() {
		ni := netInfoFacts{udp: rep.UDP, v6: rep.GlobalV6.IsValid(), varies: rep.MappingVaries != nil}
		if rep.MappingVaries != nil {
			ni.variesBy = *rep.MappingVaries
		}
		if ni != c.reportedNI {
			c.reportedNI = ni
			changed = true
		}
	}
	var active []*peerEndpoint
	if !slices.Equal(eps, c.myEPs) {
		hadEPs := len(c.myEPs) > 0
		c.myEPs = eps
		changed = true
		if hadEPs {
			for _, pe := range c.peers {
				active = append(active, pe)
			}
		}
	}
	c.mu.Unlock()
	// Our address changed (a new NAT mapping, another network): peers in a conversation with
	// us only learn it from our pings and a CallMeMaybe, so send them now rather than at the
	// next heartbeat.
	now := time.Now()
	for _, pe := range active {
		pe.ownEndpointsChanged(now)
	}
	if changed && c.opts.OnEndpointsChanged != nil {
		c.opts.OnEndpointsChanged()
	}
}

// netInfoFacts are the NetInfo fields whose change is worth telling control.
type netInfoFacts struct {
	udp, v6, varies, variesBy bool
}

// localEndpoints lists our candidate addresses: the STUN-mapped ones, then every address of an
// up interface (not loopback, not link-local, not the tailnet's own) with our port.
func (c *Conn) localEndpoints(rep Report) []Endpoint {
	port := c.LocalPort()
	var eps []Endpoint
	seen := map[netip.AddrPort]bool{}
	add := func(a netip.AddrPort, typ int) {
		if a.IsValid() && !seen[a] {
			seen[a] = true
			eps = append(eps, Endpoint{Addr: a, Type: typ})
		}
	}
	add(rep.GlobalV4, 2)
	add(rep.GlobalV6, 2)
	if port == 0 {
		return eps
	}
	ifs, err := net.Interfaces()
	if err != nil {
		return eps
	}
	for _, ifc := range ifs {
		if ifc.Flags&net.FlagUp == 0 || ifc.Flags&net.FlagLoopback != 0 {
			continue
		}
		addrs, err := ifc.Addrs()
		if err != nil {
			continue
		}
		for _, a := range addrs {
			ipn, ok := a.(*net.IPNet)
			if !ok {
				continue
			}
			ip, ok := netip.AddrFromSlice(ipn.IP)
			if !ok {
				continue
			}
			ip = ip.Unmap()
			if ip.IsLoopback() || ip.IsLinkLocalUnicast() || ip.IsMulticast() || tsaddr.IsTailnetAddr(ip) {
				continue
			}
			if ip.Is6() && c.pconn6 == nil {
				continue
			}
			add(netip.AddrPortFrom(ip, port), 1)
		}
	}
	return eps
}
