// Package netcheck measures the network as seen from one UDP socket: whether UDP works at all,
// the public address (IPv4 and IPv6) STUN servers see, whether the NAT maps differently per
// destination (hard NAT), and the latency to each DERP region, from which it picks the home
// region. It sends through a function it is given (the WireGuard socket, so the mapping it
// learns is the one peers will see) and is fed the STUN replies the socket receives.
//
// One full run happens at a time: a caller that asks while a run is in flight gets that run's
// report. Quick runs (one region, for roaming) run beside it with their own transactions.
package netcheck

import (
	"context"
	"errors"
	"net"
	"net/netip"
	"slices"
	"sync"
	"time"

	"github.com/skeinvpn/skein/daemon/stun"
	"github.com/skeinvpn/skein/daemon/wire"
)

// Report is what one run learnt about the network.
type Report struct {
	At time.Time
	// UDP: some STUN server answered over UDP.
	UDP bool
	// IPv4 and IPv6: some server answered over that family. OSHasIPv6: the socket could send
	// IPv6 at all (the host has a v6 socket and a v6 route).
	IPv4, IPv6, OSHasIPv6 bool
	// GlobalV4 and GlobalV6 are our public address:port as the servers saw it.
	GlobalV4, GlobalV6 netip.AddrPort
	// MappingVaries says whether servers at different IPv4 addresses saw different ports or
	// addresses (endpoint-dependent mapping, "hard NAT"); nil when fewer than two answered.
	MappingVaries *bool
	// RegionLatency is the best round trip per region over either family; RegionV4Latency
	// and RegionV6Latency per family.
	RegionLatency, RegionV4Latency, RegionV6Latency map[int]time.Duration
	// PreferredDERP is the region chosen as home (0 when none can be).
	PreferredDERP int
	// UPnP, PMP and PCP say whether the router offers each way of mapping a port; nil when
	// not checked (no port mapper).
	UPnP, PMP, PCP *bool
	// Quick marks a report of a quick run (one region: public address only).
	Quick bool
}

// Clone returns a deep copy.
func (r Report) Clone() Report {
	r.RegionLatency = cloneLat(r.RegionLatency)
	r.RegionV4Latency = cloneLat(r.RegionV4Latency)
	r.RegionV6Latency = cloneLat(r.RegionV6Latency)
	for _, b := range []**bool{&r.MappingVaries, &r.UPnP, &r.PMP, &r.PCP} {
		if *b != nil {
			v := **b
			*b = &v
		}
	}
	return r
}

func cloneLat(m map[int]time.Duration) map[int]time.Duration {
	if m == nil {
		return nil
	}
	out := make(map[int]time.Duration, len(m))
	for k, v := range m {
		out[k] = v
	}
	return out
}

// Timing of a run.
const (
	// stunTimeout is how long a run waits for regions that have not answered.
	stunTimeout = 3 * time.Second
	// retryAfter is when a region that has not answered is asked again (another node of it
	// when it has several).
	retryAfter = 100 * time.Millisecond
	// maxProbes bounds the STUN requests of one run, whatever the DERP map holds.
	maxProbes = 64
	// quickTimeout bounds a quick run.
	quickTimeout = 700 * time.Millisecond
	// homeKeepMargin is how much better another region must be before the home moves.
	homeKeepMargin = 10 * time.Millisecond
)

// ErrClosed is returned by sends after the socket went away.
var ErrClosed = net.ErrClosed

// Options configure a Checker.
type Options struct {
	// Send sends one datagram from the measured socket. An error means it did not leave.
	Send func(b []byte, dst netip.AddrPort) error
	// LookupIP resolves a DERP node's host name ("ip4" or "ip6"); nil uses the system resolver.
	LookupIP func(ctx context.Context, network, host string) ([]netip.Addr, error)
	// PortMapProbe, when set, asks the router which port mapping protocols it offers; a full
	// run calls it beside the STUN requests. checked false (port mapping turned off) leaves the
	// report's UPnP, PMP and PCP unknown.
	PortMapProbe func(ctx context.Context) (upnp, pmp, pcp, checked bool)
	Logf         func(format string, args ...any)
}

// Checker runs reports. Create with New.
type Checker struct {
	opts Options

	mu      sync.Mutex
	pending map[stun.TxID]*probe
	last    Report
	running *flight
}

// flight is one full run; callers that arrive while it runs wait on done.
type flight struct {
	done chan struct{}
	rep  Report
}

// probe is one STUN request in flight.
type probe struct {
	run    *runState
	region int
	server netip.AddrPort
	at     time.Time
}

// answer is one STUN reply.
type answer struct {
	region  int
	server  netip.AddrPort
	latency time.Duration
	mapped  netip.AddrPort
}

// runState collects the answers of one run.
type runState struct {
	answers []answer
	changed chan struct{} // poked (never blocking) on each answer
}

// New returns a Checker.
func New(opts Options) *Checker {
	if opts.Logf == nil {
		opts.Logf = func(string, ...any) {}
	}
	if opts.LookupIP == nil {
		opts.LookupIP = net.DefaultResolver.LookupNetIP
	}
	return &Checker{opts: opts, pending: map[stun.TxID]*probe{}}
}

// Last returns the newest full report (zero At when none yet).
func (c *Checker) Last() Report {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.last.Clone()
}

// Running reports whether a full run is in flight.
func (c *Checker) Running() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.running != nil
}

// Receive takes a STUN packet that arrived on the socket. It reports whether the packet was
// the answer to one of our requests (from the server it was sent to).
func (c *Checker) Receive(b []byte, src netip.AddrPort, now time.Time) bool {
	tx, mapped, err := stun.ParseResponse(b)
	if err != nil {
		return false
	}
	src = netip.AddrPortFrom(src.Addr().Unmap(), src.Port())
	c.mu.Lock()
	defer c.mu.Unlock()
	p, ok := c.pending[tx]
	if !ok || p.server != src {
		return false
	}
	delete(c.pending, tx)
	p.run.answers = append(p.run.answers, answer{region: p.region, server: p.server, latency: now.Sub(p.at), mapped: mapped})
	select {
	case p.run.changed <- struct{}{}:
	default:
	}
	return true
}

// Run returns a full report: it starts a run, or joins the one in flight. prevHome is the
// current home region, kept unless another is clearly better.
func (c *Checker) Run(ctx context.Context, dm *wire.DERPMap, prevHome int) Report {
	c.mu.Lock()
	if f := c.running; f != nil {
		c.mu.Unlock()
		select {
		case <-f.done:
			return f.rep.Clone()
		case <-ctx.Done():
			return c.Last()
		}
	}
	f := &flight{done: make(chan struct{})}
	c.running = f
	c.mu.Unlock()

	// The run itself is not cut short by one caller's context: others may be waiting on it,
	// and it is bounded by stunTimeout anyway.
	runCtx := context.WithoutCancel(ctx)
	type pmAnswer struct{ upnp, pmp, pcp, ok bool }
	pm := make(chan pmAnswer, 1)
	if c.opts.PortMapProbe != nil {
		go func() {
			pctx, cancel := context.WithTimeout(runCtx, stunTimeout)
			defer cancel()
			u, p, q, ok := c.opts.PortMapProbe(pctx)
			pm <- pmAnswer{u, p, q, ok}
		}()
	} else {
		pm <- pmAnswer{}
	}
	rep := c.measure(runCtx, dm, nil, stunTimeout)
	rep.PreferredDERP = PickHome(rep.RegionLatency, prevHome, dm)
	if a := <-pm; a.ok {
		rep.UPnP, rep.PMP, rep.PCP = &a.upnp, &a.pmp, &a.pcp
	}

	c.mu.Lock()
	c.last = rep
	c.running = nil
	f.rep = rep
	c.mu.Unlock()
	close(f.done)
	return rep.Clone()
}

// Quick asks only the given regions (the home, typically) for our public address, for the
// moment the network changed. It returns the last full report with the public addresses and
// those regions' latencies replaced by what the quick run saw; the last full report itself is
// left alone.
func (c *Checker) Quick(ctx context.Context, dm *wire.DERPMap, regions ...int) Report {
	rep := c.measure(ctx, dm, regions, quickTimeout)
	out := c.Last()
	out.Quick = true
	out.At = rep.At
	if rep.UDP {
		out.UDP = true
		if rep.GlobalV4.IsValid() {
			out.GlobalV4, out.IPv4 = rep.GlobalV4, true
		}
		if rep.GlobalV6.IsValid() {
			out.GlobalV6, out.IPv6 = rep.GlobalV6, true
		}
		for _, m := range []struct{ dst, src *map[int]time.Duration }{
			{&out.RegionLatency, &rep.RegionLatency},
			{&out.RegionV4Latency, &rep.RegionV4Latency},
			{&out.RegionV6Latency, &rep.RegionV6Latency},
		} {
			if *m.dst == nil {
				*m.dst = map[int]time.Duration{}
			}
			for id, l := range *m.src {
				(*m.dst)[id] = l
			}
		}
	}
	return out
}

// server is one STUN server address of a region, in one family.
type server struct {
	region int
	addrs  []netip.AddrPort // one per node, tried in turn
}

// Servers lists the STUN servers of each measurable region, IPv4 and IPv6 apart. Regions
// control says not to measure are left out; so are nodes with STUN switched off.
func (c *Checker) servers(ctx context.Context, dm *wire.DERPMap, only []int) (v4, v6 []server) {
	if dm == nil {
		return nil, nil
	}
	ids := make([]int, 0, len(dm.Regions))
	for id, r := range dm.Regions {
		if r == nil || r.NoMeasureNoHome || (only != nil && !slices.Contains(only, id)) {
			continue
		}
		ids = append(ids, id)
	}
	slices.Sort(ids)
	for _, id := range ids {
		s4, s6 := server{region: id}, server{region: id}
		for _, nd := range dm.Regions[id].Nodes {
			if nd == nil || nd.STUNPort < 0 {
				continue
			}
			port := uint16(3478)
			if nd.STUNPort > 0 && nd.STUNPort < 65536 {
				port = uint16(nd.STUNPort)
			}
			if a, ok := c.nodeAddr(ctx, nd, false); ok {
				s4.addrs = append(s4.addrs, netip.AddrPortFrom(a, port))
			}
			if a, ok := c.nodeAddr(ctx, nd, true); ok {
				s6.addrs = append(s6.addrs, netip.AddrPortFrom(a, port))
			}
		}
		if len(s4.addrs) > 0 {
			v4 = append(v4, s4)
		}
		if len(s6.addrs) > 0 {
			v6 = append(v6, s6)
		}
	}
	return v4, v6
}

// nodeAddr is a node's address in one family: its IPv4/IPv6 field ("none" switches the family
// off, as in the official map), else its host name when that is a literal or resolves.
func (c *Checker) nodeAddr(ctx context.Context, nd *wire.DERPNode, v6 bool) (netip.Addr, bool) {
	field := nd.IPv4
	if v6 {
		field = nd.IPv6
	}
	if field == "none" {
		return netip.Addr{}, false
	}
	if ip, err := netip.ParseAddr(field); err == nil {
		ip = ip.Unmap()
		return ip, ip.Is6() == v6 && usableServer(ip)
	}
	if ip, err := netip.ParseAddr(nd.HostName); err == nil {
		ip = ip.Unmap()
		return ip, ip.Is6() == v6 && usableServer(ip)
	}
	if nd.HostName == "" {
		return netip.Addr{}, false
	}
	network := "ip4"
	if v6 {
		network = "ip6"
	}
	lctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	ips, err := c.opts.LookupIP(lctx, network, nd.HostName)
	if err != nil {
		return netip.Addr{}, false
	}
	for _, ip := range ips {
		ip = ip.Unmap()
		if ip.Is6() == v6 && usableServer(ip) {
			return ip, true
		}
	}
	return netip.Addr{}, false
}

// usableServer keeps out addresses no STUN server can have (a DERP map is control's word, but
// a bad one must not make us send to the unspecified or a multicast address).
func usableServer(ip netip.Addr) bool {
	return ip.IsValid() && !ip.IsUnspecified() && !ip.IsMulticast()
}

// measure sends STUN requests to every server (each region in each family, retried on another
// node of the region after retryAfter) and waits up to timeout for all regions to answer.
func (c *Checker) measure(ctx context.Context, dm *wire.DERPMap, only []int, timeout time.Duration) Report {
	v4, v6 := c.servers(ctx, dm, only)
	rs := &runState{changed: make(chan struct{}, 1)}
	var mine []stun.TxID
	defer func() {
		c.mu.Lock()
		for _, tx := range mine {
			delete(c.pending, tx)
		}
		c.mu.Unlock()
	}()
	osV6 := len(v6) > 0
	// Only regions a request reached can answer: those are the ones worth waiting for.
	reached := map[famKey]bool{}
	sent, delivered := 0, 0
	send := func(region int, srv netip.AddrPort) {
		tx := stun.NewTxID()
		c.mu.Lock()
		c.pending[tx] = &probe{run: rs, region: region, server: srv, at: time.Now()}
		c.mu.Unlock()
		mine = append(mine, tx)
		sent++
		err := c.opts.Send(stun.Request(tx), srv)
		switch {
		case err == nil:
			delivered++
			reached[famKey{region, srv.Addr().Is6()}] = true
		case srv.Addr().Is6() && !errors.Is(err, ErrClosed):
			osV6 = false // no v6 socket, no v6 route: the host cannot do IPv6 from here
		}
	}
	deadline := time.Now().Add(timeout)
	for try := 0; try < 3 && sent < maxProbes; try++ {
		answered := rs.regionsAnswered(c)
		for _, fam := range [][]server{v4, v6} {
			for _, s := range fam {
				if answered[famKey{s.region, s.addrs[0].Addr().Is6()}] || sent >= maxProbes {
					continue
				}
				send(s.region, s.addrs[try%len(s.addrs)])
			}
		}
		if delivered == 0 {
			// Nothing left this host (a local firewall refuses UDP, no socket): no answer
			// can come, and waiting would only delay the report that says so.
			break
		}
		if c.waitAnswers(ctx, rs, len(reached), time.Now().Add(retryAfter)) {
			break
		}
	}
	if delivered > 0 {
		c.waitAnswers(ctx, rs, len(reached), deadline)
	}
	c.mu.Lock()
	answers := slices.Clone(rs.answers)
	c.mu.Unlock()
	rep := summarize(answers)
	rep.OSHasIPv6 = osV6 || rep.IPv6
	return rep
}

type famKey struct {
	region int
	v6     bool
}

func (rs *runState) regionsAnswered(c *Checker) map[famKey]bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	got := map[famKey]bool{}
	for _, a := range rs.answers {
		got[famKey{a.region, a.server.Addr().Is6()}] = true
	}
	return got
}

// waitAnswers waits until want region/family pairs answered or the deadline passed; it
// reports whether all answered.
func (c *Checker) waitAnswers(ctx context.Context, rs *runState, want int, deadline time.Time) bool {
	t := time.NewTimer(time.Until(deadline))
	defer t.Stop()
	for {
		if len(rs.regionsAnswered(c)) >= want {
			return true
		}
		select {
		case <-rs.changed:
		case <-t.C:
			return false
		case <-ctx.Done():
			return false
		}
	}
}

// summarize turns answers into a report (without the home choice).
func summarize(answers []answer) Report {
	rep := Report{
		At:              time.Now(),
		RegionLatency:   map[int]time.Duration{},
		RegionV4Latency: map[int]time.Duration{},
		RegionV6Latency: map[int]time.Duration{},
	}
	// The mapping each server IP saw; the first answer per server IP counts.
	byServerIP := map[netip.Addr]netip.AddrPort{}
	var firstV4 netip.AddrPort
	for _, a := range answers {
		rep.UDP = true
		lat := rep.RegionV4Latency
		if a.server.Addr().Is6() {
			lat = rep.RegionV6Latency
			rep.IPv6 = true
			if !rep.GlobalV6.IsValid() && a.mapped.Addr().Is6() {
				rep.GlobalV6 = a.mapped
			}
		} else {
			rep.IPv4 = true
			if a.mapped.Addr().Is4() {
				if !firstV4.IsValid() {
					firstV4 = a.mapped
				}
				if _, ok := byServerIP[a.server.Addr()]; !ok {
					byServerIP[a.server.Addr()] = a.mapped
				}
			}
		}
		if l, ok := lat[a.region]; !ok || a.latency < l {
			lat[a.region] = a.latency
		}
		if l, ok := rep.RegionLatency[a.region]; !ok || a.latency < l {
			rep.RegionLatency[a.region] = a.latency
		}
	}
	rep.GlobalV4 = firstV4
	if len(byServerIP) >= 2 {
		varies := false
		for _, m := range byServerIP {
			varies = varies || m != firstV4
		}
		rep.MappingVaries = &varies
	}
	return rep
}

// PickHome chooses the home region: the lowest latency among regions that can be a home,
// keeping the previous home unless the new one is clearly better (10 ms and a third faster).
// With no measurement it keeps the previous home or takes the lowest eligible region ID.
func PickHome(lat map[int]time.Duration, prev int, dm *wire.DERPMap) int {
	best, bestLat := 0, time.Duration(0)
	ids := make([]int, 0, len(lat))
	for id := range lat {
		if dm == nil || HomeEligible(dm.Regions[id]) {
			ids = append(ids, id)
		}
	}
	slices.Sort(ids)
	for _, id := range ids {
		if best == 0 || lat[id] < bestLat {
			best, bestLat = id, lat[id]
		}
	}
	if prev != 0 && dm != nil && HomeEligible(dm.Regions[prev]) {
		if prevLat, ok := lat[prev]; ok && best != prev {
			if prevLat-bestLat < homeKeepMargin || bestLat > prevLat*2/3 {
				return prev
			}
		}
		if best == 0 {
			return prev
		}
	}
	if best == 0 {
		best = FirstEligible(dm)
	}
	return best
}

// FirstEligible is the lowest region ID that can be a home (0 when none).
func FirstEligible(dm *wire.DERPMap) int {
	best := 0
	if dm == nil {
		return 0
	}
	for id, r := range dm.Regions {
		if HomeEligible(r) && (best == 0 || id < best) {
			best = id
		}
	}
	return best
}

// HomeEligible reports whether a region can be a home: it has a relay (not only STUN servers)
// and control does not ask nodes to keep away from it.
func HomeEligible(r *wire.DERPRegion) bool {
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
