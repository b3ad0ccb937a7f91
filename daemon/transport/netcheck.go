package transport

import (
	"context"
	mrand "math/rand/v2"
	"net"
	"net/netip"
	"slices"
	"strconv"
	"sync/atomic"
	"time"

	"github.com/skeinvpn/skein/daemon/wire"
	"github.com/skeinvpn/skein/internal/tsaddr"
)

// Periodic re-STUN, as official nodes do it: often enough that NAT mappings of the STUN
// exchange stay fresh and a changed public address is noticed even without traffic.
const (
	reSTUNMin    = 20 * time.Second
	reSTUNJitter = 6 * time.Second
)

// netipAddrPort keeps the long type name out of signatures that repeat it.
type netipAddrPort = netip.AddrPort

// stunLoop runs a full netcheck at start, when kicked (a new DERP map, the first peers) and
// every 20-26 s.
type stunLoop struct {
	c       *Conn
	wake    chan struct{}
	started atomic.Bool
}

func newSTUNLoop(c *Conn) *stunLoop {
	return &stunLoop{c: c, wake: make(chan struct{}, 1)}
}

// kick asks for a report soon.
func (s *stunLoop) kick() {
	select {
	case s.wake <- struct{}{}:
	default:
	}
}

// run lives as long as the Conn: every Open calls it, the first one loops until Shutdown.
func (s *stunLoop) run(ctx context.Context) {
	if !s.started.CompareAndSwap(false, true) {
		return
	}
	c := s.c
	for {
		c.mu.Lock()
		dm := c.derpMap
		c.mu.Unlock()
		if dm != nil {
			c.Netcheck(ctx)
		}
		d := reSTUNMin + time.Duration(mrand.Int64N(int64(reSTUNJitter)))
		t := time.NewTimer(d)
		select {
		case <-ctx.Done():
			t.Stop()
			return
		case <-s.wake:
			t.Stop()
		case <-t.C:
		}
	}
}

// Netcheck runs a full report now (or joins the one running) and applies it.
func (c *Conn) Netcheck(ctx context.Context) Report {
	c.mu.Lock()
	dm := c.derpMap
	c.mu.Unlock()
	rep := c.nc.Run(ctx, dm, c.derp.homeRegion())
	c.applyReport(rep)
	return rep
}

// LastReport returns the last full netcheck report.
func (c *Conn) LastReport() Report { return c.nc.Last() }

// NetcheckRunning reports whether a full netcheck is in flight.
func (c *Conn) NetcheckRunning() bool { return c.nc.Running() }

// quickSTUN asks the home region (only) for our public address and applies it: the fast path
// when the network just changed.
func (c *Conn) quickSTUN(ctx context.Context) {
	c.mu.Lock()
	dm := c.derpMap
	c.mu.Unlock()
	home := c.derp.homeRegion()
	if dm == nil || home == 0 {
		return
	}
	rep := c.nc.Quick(ctx, dm, home)
	c.applyReport(rep)
}

// applyReport sets the home region and recomputes our endpoints, telling control on change
// and the peers we talk to (CallMeMaybe) when our endpoints moved.
func (c *Conn) applyReport(rep Report) {
	c.mu.Lock()
	c.applied = rep
	c.mu.Unlock()
	changed := false
	if rep.PreferredDERP != 0 && c.derp.setHome(rep.PreferredDERP) {
		changed = true
	}
	eps := c.localEndpoints(rep)
	c.mu.Lock()
	// What control sees of the report besides home and endpoints (latencies aside, which
	// move with every run).
	if !rep.At.IsZero() && !rep.Quick {
		ni := netInfoFacts{udp: rep.UDP, v6: rep.IPv6, osV6: rep.OSHasIPv6, varies: rep.MappingVaries != nil}
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
		c.epGen++
		changed = true
		if hadEPs {
			active = c.peers.all()
		}
	}
	c.mu.Unlock()
	if len(active) > 0 {
		c.logf("transport: our endpoints changed: %v", eps)
	}
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

// PortMapChanged is how the port mapper says its mapping appeared, moved or went: our
// endpoints are computed again (and told to control and active peers when they changed).
func (c *Conn) PortMapChanged() {
	c.mu.Lock()
	rep := c.applied
	c.mu.Unlock()
	rep.PreferredDERP = 0 // only the endpoints move
	rep.Quick = true      // and not the NetInfo facts
	c.applyReport(rep)
}

// netInfoFacts are the NetInfo fields whose change is worth telling control.
type netInfoFacts struct {
	udp, v6, osV6, varies, variesBy bool
}

// NetInfo describes our network for control: home region, UDP, IPv6, NAT mapping and the
// region latencies of the last full netcheck.
func (c *Conn) NetInfo() *wire.NetInfo {
	rep := c.nc.Last()
	ni := &wire.NetInfo{PreferredDERP: c.derp.homeRegion()}
	for _, e := range c.Endpoints() {
		ni.HavePortMap = ni.HavePortMap || e.Type == EndpointPortmapped
	}
	if rep.At.IsZero() {
		return ni
	}
	udp, v6, osV6 := rep.UDP, rep.IPv6, rep.OSHasIPv6
	ni.WorkingUDP = &udp
	ni.WorkingIPv6 = &v6
	ni.OSHasIPv6 = &osV6
	ni.MappingVariesByDestIP = rep.MappingVaries
	ni.DERPLatency = map[string]float64{}
	for id, l := range rep.RegionV4Latency {
		ni.DERPLatency[strconv.Itoa(id)+"-v4"] = l.Seconds()
	}
	for id, l := range rep.RegionV6Latency {
		ni.DERPLatency[strconv.Itoa(id)+"-v6"] = l.Seconds()
	}
	return ni
}

// localEndpoints lists our candidate addresses: the router's port mapping first, then the
// STUN-mapped ones (and, behind a NAT, the STUN address with our local port, for a manual port
// forward), then every address of an up interface (not loopback, not link-local, not the
// tailnet's own) with our port.
func (c *Conn) localEndpoints(rep Report) []Endpoint {
	port := c.LocalPort()
	var eps []Endpoint
	seen := map[netip.AddrPort]bool{}
	add := func(a netip.AddrPort, typ EndpointType) {
		if a.IsValid() && !seen[a] {
			seen[a] = true
			eps = append(eps, Endpoint{Addr: a, Type: typ})
		}
	}
	if pm := c.opts.PortMapper; pm != nil {
		if ext, ok := pm.Mapping(); ok && publicAddr(ext.Addr()) {
			add(ext, EndpointPortmapped)
		}
	}
	add(rep.GlobalV4, EndpointSTUN)
	add(rep.GlobalV6, EndpointSTUN)
	if port == 0 {
		return eps
	}
	// Behind a NAT that maps per destination, the STUN address is no use to peers; with our
	// fixed port, the user may have forwarded that port on the router by hand.
	if rep.GlobalV4.IsValid() && rep.GlobalV4.Port() != port && rep.MappingVaries != nil && *rep.MappingVaries {
		add(netip.AddrPortFrom(rep.GlobalV4.Addr(), port), EndpointSTUN4LocalPort)
	}
	for _, ip := range localAddrs() {
		if ip.Is6() && !c.hasV6() {
			continue
		}
		add(netip.AddrPortFrom(ip, port), EndpointLocal)
	}
	return eps
}

func (c *Conn) hasV6() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.pconn6 != nil
}

// localAddrs are the addresses of this host's up interfaces a peer could reach: not loopback,
// link-local, multicast or the tailnet's own.
func localAddrs() []netip.Addr {
	ifs, err := net.Interfaces()
	if err != nil {
		return nil
	}
	var out []netip.Addr
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
			out = append(out, ip)
		}
	}
	return out
}

// publicAddr reports whether a router-reported external address can be a public endpoint: a
// router that lies (0.0.0.0, loopback, a private or CGNAT address) is not advertised.
func publicAddr(ip netip.Addr) bool {
	ip = ip.Unmap()
	return ip.IsValid() && ip.IsGlobalUnicast() && !ip.IsPrivate() && !tsaddr.CGNATRange.Contains(ip)
}
