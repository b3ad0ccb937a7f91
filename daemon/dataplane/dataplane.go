// Package dataplane assembles the packet path: a kernel TUN device, upstream wireguard-go on
// top of it, Skein's transport as wireguard-go's Bind, and the host routing for the tunnel. It
// turns each netmap into WireGuard peers, transport peers and routes.
package dataplane

import (
	"context"
	"encoding/hex"
	"errors"
	"fmt"
	"net/netip"
	"runtime"
	"runtime/debug"
	"slices"
	"sync"
	"time"

	"golang.zx2c4.com/wireguard/device"
	"golang.zx2c4.com/wireguard/tun"

	"github.com/skeinvpn/skein/daemon/dns"
	"github.com/skeinvpn/skein/daemon/dns/intercept"
	"github.com/skeinvpn/skein/daemon/dns/osdns"
	"github.com/skeinvpn/skein/daemon/filter"
	"github.com/skeinvpn/skein/daemon/forwarding"
	"github.com/skeinvpn/skein/daemon/ingress"
	"github.com/skeinvpn/skein/daemon/key"
	"github.com/skeinvpn/skein/daemon/netmap"
	"github.com/skeinvpn/skein/daemon/portmap"
	"github.com/skeinvpn/skein/daemon/router"
	"github.com/skeinvpn/skein/daemon/transport"
	"github.com/skeinvpn/skein/daemon/wire"

	"github.com/skeinvpn/skein/internal/tsaddr"
)

// MTU of the tunnel, the official default: worst-case overhead keeps it under 1360 on the wire.
const MTU = 1280

var tsULA = tsaddr.ULARange

// Options configure a Dataplane.
type Options struct {
	TunName  string
	Port     uint16
	NodeKey  key.NodePrivate
	DiscoKey key.DiscoPrivate
	Logf     func(format string, args ...any)
	Verbose  bool
	// StateDir holds the journal of host changes (forwarding), so a crash can be undone.
	StateDir string
	// OnEndpointsChanged is called when our endpoints or home DERP change.
	OnEndpointsChanged func()
	// WireGuard is the device to plug into, kept across sessions so that its buffers are
	// reused; nil makes one for this Dataplane alone.
	WireGuard *WireGuard
}

// Dataplane is one running tunnel.
type Dataplane struct {
	opts Options
	logf func(string, ...any)
	tun  tun.Device
	dev  *device.Device
	conn *transport.Conn
	rt   *router.Router

	// stack is what wireguard-go reads and writes: the packet filter, then MagicDNS, then tun.
	stack tun.Device
	wg    *WireGuard // set once stack and conn are plugged into it
	// spoofedBase is wg.SpoofedInner() when this session began.
	spoofedBase uint64
	ownWG       bool // wg is this Dataplane's alone (Options.WireGuard was nil)

	stopWatch context.CancelFunc

	filter   *filter.Engine
	fwd      *forwarding.Manager
	dnsSrv   *dns.Server
	icpt     *intercept.Device
	osdns    *osdns.Manager
	osdnsErr string

	mu      sync.Mutex
	nodeKey key.NodePrivate
	lazy    *lazyPeers // what WireGuard may have and has (configured on first use)
	// The last apply: its netmap, each usable peer's plan and the table-52 routes they bring
	// (counted: two peers may bring the same subnet), for applying the next map as a delta.
	nm        *netmap.NetworkMap
	peerPlans map[wire.NodeID]*peerPlan
	routeRefs map[netip.Prefix]int
	routing   RoutingState // what applyHostLocked installed
	// expiry fires a full apply when the first peer key expires (usability changes with time):
	// at expiryAt, the key of peer expiryID.
	expiry   *time.Timer
	expiryAt time.Time
	expiryID wire.NodeID
	// routesDirty: plan.routes is stale; routeRefs has the routes (see applyHostLocked).
	routesDirty  bool
	closed       bool
	plan         netPlan // last netmap's plan and prefs, re-applied on host changes
	prefs        Prefs
	havePlan     bool
	dns          dnsPlan
	names        peerNames // MagicDNS's view of the peers: the netmap of the last apply
	dnsWarned    map[string]bool
	filterWarned map[string]bool
	// peerAPIPorts are the peer API's ports; shields up keeps them closed like everything else.
	peerAPIPorts [2]uint16
	shieldsUp    bool
	// jailed: the installed filter rules jail some peers (a delta cannot change that).
	jailed bool

	// pub is what status shows, published at the end of each apply under its own lock, so
	// a status request never waits for an apply (netlink, nftables, D-Bus) in progress.
	pubMu sync.Mutex
	pub   published

	fw    firewallCache
	local localCache
	pm    *portMapper
}

// published is the data plane's status as of its last apply.
type published struct {
	routing RoutingState
	dns     dnsPlan
	wgPeers int
}

// WireGuardPeers is how many peers WireGuard has configured.
func (d *Dataplane) WireGuardPeers() int {
	d.pubMu.Lock()
	defer d.pubMu.Unlock()
	return d.pub.wgPeers
}

// Cleanup undoes what a crashed earlier run left on the host: rules, routes and the TUN device,
// the nftables tables (forwarding's and the SSH/serve ingress) and forwarding sysctls, the
// system resolver, a port mapping on the router. It is the one entry point for
// crash repair: skeind runs it before anything else at start, and `skeind --cleanup` (the unit's
// ExecStopPost) runs only it. Every part is tried; the error joins the failures.
func Cleanup(tunName, stateDir string, logf func(string, ...any)) error {
	var errs []error
	if err := router.Cleanup(tunName, logf); err != nil {
		errs = append(errs, fmt.Errorf("removing routes and rules: %w", err))
	}
	if err := forwarding.Cleanup(stateDir, logf); err != nil {
		errs = append(errs, fmt.Errorf("undoing forwarding changes: %w", err))
	}
	if err := osdns.Cleanup(osdns.Options{TunName: tunName, StateDir: stateDir, Logf: logf}); err != nil {
		errs = append(errs, fmt.Errorf("restoring the system resolver: %w", err))
	}
	// A port mapping a crashed run left on the router (found in its journal) is given back.
	if err := portmap.Cleanup(stateDir, router.ControlBypass, logf); err != nil {
		errs = append(errs, fmt.Errorf("deleting a port mapping: %w", err))
	}
	if err := ingress.Cleanup(logf); err != nil {
		errs = append(errs, fmt.Errorf("removing the SSH and serve redirects: %w", err))
	}
	return errors.Join(errs...)
}

// Start creates the TUN device, brings up WireGuard and the transport, and installs the base
// routing. On error everything made so far is removed.
func Start(opts Options) (dp *Dataplane, err error) {
	logf := opts.Logf
	if logf == nil {
		logf = func(string, ...any) {}
	}
	d := &Dataplane{opts: opts, logf: logf, lazy: newLazyPeers(), nodeKey: opts.NodeKey, filterWarned: map[string]bool{}, dnsWarned: map[string]bool{},
		peerPlans: map[wire.NodeID]*peerPlan{}, routeRefs: map[netip.Prefix]int{}}
	defer func() {
		if err != nil {
			d.Close()
		}
	}()
	d.tun, err = createTUN(opts.TunName, MTU)
	if err != nil {
		return nil, fmt.Errorf("creating TUN device %s: %w", opts.TunName, err)
	}
	d.filter = filter.NewEngine()
	d.fwd = forwarding.New(opts.StateDir, logf)
	d.dnsSrv = dns.NewServer(dns.Options{Logf: logf, SelfAddrs: []netip.Addr{MagicDNSv4, MagicDNSv6}})
	// MagicDNS is answered here, below the packet filter: its replies are ours, not a peer's.
	d.icpt = intercept.Wrap(d.tun, intercept.Options{
		Addrs:   []netip.Addr{MagicDNSv4, MagicDNSv6},
		Handler: d.dnsSrv.Handle,
		Logf:    logf,
	})
	d.pm = newPortMapper(opts.StateDir, logf)
	d.conn = transport.New(transport.Options{
		Port:               opts.Port,
		Mark:               router.FwmarkBypass,
		DiscoKey:           opts.DiscoKey,
		Logf:               logf,
		OnEndpointsChanged: opts.OnEndpointsChanged,
		OnHandshake:        func(k key.NodePublic) { d.ensurePeer(k) },
		PortMapper:         d.pm,
	})
	d.pm.setOnChange(d.conn.PortMapChanged)
	d.conn.SetPrivateKey(opts.NodeKey)
	wgLog := &device.Logger{
		Verbosef: device.DiscardLogf,
		Errorf:   func(format string, args ...any) { logf("wireguard: "+format, args...) },
	}
	if opts.Verbose {
		wgLog.Verbosef = func(format string, args ...any) { logf("wireguard: "+format, args...) }
	}
	// Inbound packets pass the control server's packet filter before the kernel sees them;
	// outbound, a packet to a peer WireGuard does not have yet configures it first.
	d.stack = &lazyTUN{Device: filter.Wrap(d.icpt, d.filter), d: d}
	wg := opts.WireGuard
	if wg == nil {
		wg = NewWireGuard()
		d.ownWG = true
	}
	if d.dev, err = wg.attach(d.stack, d.conn, wgLog); err != nil {
		return nil, err
	}
	d.wg = wg
	d.spoofedBase = wg.SpoofedInner()
	r := opts.NodeKey.Raw()
	if err := d.dev.IpcSet(fmt.Sprintf("private_key=%s\nlisten_port=%d\n", hex.EncodeToString(r[:]), opts.Port)); err != nil {
		return nil, fmt.Errorf("configuring WireGuard: %w", err)
	}
	if err := d.dev.Up(); err != nil {
		return nil, fmt.Errorf("starting WireGuard: %w", err)
	}
	d.rt, err = router.New(opts.TunName, logf)
	if err != nil {
		return nil, fmt.Errorf("routing: %w", err)
	}
	d.osdns, err = osdns.New(osdns.Options{TunName: opts.TunName, StateDir: opts.StateDir, Logf: logf})
	if err != nil {
		// MagicDNS still answers at 100.100.100.100; only the system is not pointed at it.
		logf("dataplane: system DNS cannot be managed: %v", err)
		d.osdnsErr = err.Error()
		d.osdns = nil
	}
	d.dnsSrv.SetStubLoops(d.osdns != nil && d.osdns.Mode() == osdns.ModeResolved)
	// Restore rules and routes that another program (e.g. systemd-networkd) removes.
	ctx, cancel := context.WithCancel(context.Background())
	d.stopWatch = cancel
	go d.rt.Watch(ctx)
	go d.watchHost(ctx)
	go d.watchFirewall(ctx)
	go d.releaseMemoryWhenIdle(ctx)
	go d.trimLoop(ctx)
	return d, nil
}

// idleCheck is how often the data plane looks whether a burst of traffic has ended.
const idleCheck = 10 * time.Second

// releaseMemoryWhenIdle hands memory back to the OS once a burst of traffic is over.
// wireguard-go keeps a 64 KiB buffer per packet in flight in sync.Pools, so a full-speed
// transfer grows the heap to a few hundred MB; Go would keep it mapped for minutes. Two
// collections empty the pools (and their victim caches), then the scavenger returns the pages.
func (d *Dataplane) releaseMemoryWhenIdle(ctx context.Context) {
	t := time.NewTicker(idleCheck)
	defer t.Stop()
	last, busy := d.conn.Packets(), false
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		now := d.conn.Packets()
		switch {
		case now-last > 1000:
			busy = true
		case busy:
			busy = false
			runtime.GC()
			debug.FreeOSMemory()
		}
		last = now
	}
}

// The transport's view, for status, ping and netcheck: the backend asks the data plane, which
// owns the transport.

// HomeDERP is our home DERP region (0 before the first DERP map).
func (d *Dataplane) HomeDERP() int { return d.conn.HomeDERP() }

// LastReport is the newest netcheck report.
func (d *Dataplane) LastReport() transport.Report { return d.conn.LastReport() }

// Endpoints are our own candidate addresses, as reported to control.
func (d *Dataplane) Endpoints() []transport.Endpoint { return d.conn.Endpoints() }

// PeerPath is the transport's path to a peer (direct address, DERP region, traffic).
func (d *Dataplane) PeerPath(k key.NodePublic) (transport.PathInfo, bool) { return d.conn.PeerPath(k) }

// Ping sends a disco ping to a peer over every path and returns the first pong.
func (d *Dataplane) Ping(ctx context.Context, k key.NodePublic) transport.PingResult {
	return d.conn.Ping(ctx, k)
}

// Netcheck runs a netcheck now.
func (d *Dataplane) Netcheck(ctx context.Context) transport.Report { return d.conn.Netcheck(ctx) }

// DNSQuery answers a DNS message as MagicDNS would over TCP (no truncation to a UDP size).
func (d *Dataplane) DNSQuery(ctx context.Context, q []byte) []byte {
	return d.dnsSrv.Handle(ctx, q, true)
}

// Close tears everything down: routes and rules first, then WireGuard, the transport and TUN.
func (d *Dataplane) Close() {
	d.mu.Lock()
	if d.closed {
		d.mu.Unlock()
		return
	}
	d.closed = true
	d.mu.Unlock()
	if d.stopWatch != nil {
		d.stopWatch()
	}
	if d.osdns != nil {
		if err := d.osdns.Close(); err != nil {
			d.logf("dataplane: restoring system DNS: %v", err)
		}
	}
	if d.fwd != nil {
		if err := d.fwd.Close(); err != nil {
			d.logf("dataplane: undoing forwarding: %v", err)
		}
	}
	if d.rt != nil {
		if err := d.rt.Close(); err != nil {
			d.logf("dataplane: removing routes: %v", err)
		}
	}
	if d.wg != nil {
		d.wg.detach() // WireGuard down and its peers gone; it no longer uses stack or conn
	}
	switch {
	case d.stack != nil:
		d.stack.Close() // and with it MagicDNS and the TUN
	case d.icpt != nil:
		d.icpt.Close()
	case d.tun != nil:
		d.tun.Close()
	}
	if d.wg != nil && d.ownWG {
		d.wg.Close() // after the stack: it waits for wireguard-go's TUN reader, maybe still in it
	}
	if d.conn != nil {
		d.conn.Shutdown()
	}
	// A courtesy, not the cure (that is keeping the device, see WireGuard): the session's TUN,
	// transport and tables are garbage now, and without this their pages stay mapped up to the
	// heap goal, which the device's buffers make large. One collection only, so the buffers in
	// the device's pools survive it for the next session.
	go debug.FreeOSMemory()
}

// SetNodeKey switches to a new node key (re-login with rotation).
func (d *Dataplane) SetNodeKey(k key.NodePrivate) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	if k == d.nodeKey || d.closed {
		return nil // a closed Dataplane's device may be serving the next session
	}
	d.nodeKey = k
	d.conn.SetPrivateKey(k)
	r := k.Raw()
	return d.dev.IpcSet("private_key=" + hex.EncodeToString(r[:]) + "\n")
}

// usablePeer mirrors the official rule: peers with neither a disco key nor a home DERP cannot
// be reached, and expired peers are left out.
func usablePeer(nm *netmap.NetworkMap, p *wire.Node, now time.Time) bool {
	if nm.Expired(p, now) || p.Key.IsZero() {
		return false
	}
	return !p.DiscoKey.IsZero() || p.HomeDERP != 0
}

func hexKey(b []byte) string { return hex.EncodeToString(b) }

// filterRules concatenates the named packet filters in name order, as the protocol defines.
func filterRules(nm *netmap.NetworkMap) []wire.FilterRule {
	names := make([]string, 0, len(nm.PacketFilters))
	for n := range nm.PacketFilters {
		names = append(names, n)
	}
	slices.Sort(names)
	var out []wire.FilterRule
	for _, n := range names {
		out = append(out, nm.PacketFilters[n]...)
	}
	return out
}

// applyHostLocked installs routes, rules and forwarding for the current plan plus the host's
// own facts (its LANs, other VPNs' routes), which change without a netmap: it runs again when
// links or routes change.
func (d *Dataplane) applyHostLocked() error {
	if !d.havePlan || d.closed {
		return nil
	}
	if d.routesDirty {
		d.plan.routes = d.routesLocked()
		d.routesDirty = false
	}
	np, prefs := d.plan, d.prefs
	cfg := router.Config{LocalAddrs: np.local, Routes: np.routes, MTU: MTU}
	var rs RoutingState
	rs.Accepted = np.accepted
	if np.exit {
		if prefs.AllowLANAccess {
			lans, err := router.LANRoutes(d.opts.TunName)
			if err != nil {
				d.logf("dataplane: listing LAN routes: %v", err)
			}
			cfg.LocalRoutes = lans
		}
		cfg.Bypass = slices.Clone(prefs.Bypass)
		if prefs.BypassVPNRoutes {
			vpn, err := router.VPNRoutes(d.opts.TunName)
			if err != nil {
				d.logf("dataplane: listing other VPNs' routes: %v", err)
			}
			for _, p := range vpn {
				if !slices.Contains(cfg.Bypass, p) && !tsaddr.OverlapsTailnet(p) {
					cfg.Bypass = append(cfg.Bypass, p)
				}
			}
		}
		rs.LAN, rs.Bypass = cfg.LocalRoutes, cfg.Bypass
	}
	var errs []error
	if err := d.rt.Set(cfg); err != nil {
		errs = append(errs, err)
	}
	fc := forwarding.Config{
		TunName:    d.opts.TunName,
		Forward:    len(np.forwardTo) > 0,
		IPv6:       d.rt.IPv6(),
		Masquerade: prefs.AdvertiseExitNode || (len(prefs.AdvertiseRoutes) > 0 && prefs.SNAT),
		Routes:     np.forwardTo,
		Persist:    prefs.PersistForwarding,
	}
	if prefs.AdvertiseExitNode {
		// Like the official client, an exit node gives its users the internet, not its own
		// LANs: those need to be advertised as subnet routes to be reachable.
		lans, err := router.LANRoutes(d.opts.TunName)
		if err != nil {
			d.logf("dataplane: listing LAN routes: %v", err)
		}
		for _, lan := range lans {
			if !slices.ContainsFunc(prefs.AdvertiseRoutes, func(r netip.Prefix) bool { return r.Overlaps(lan) }) {
				fc.Deny = append(fc.Deny, lan)
			}
		}
	}
	if !fc.Forward {
		fc = forwarding.Config{TunName: d.opts.TunName}
	}
	// Every node, router or not, drops packets that claim a tailnet source but come from
	// another interface: else a LAN host could reach local services as a tailnet peer, past the
	// packet filter (issue 14, hole 1).
	fc.SpoofGuard = !prefs.LANUsesCGNAT
	fc.Stateful = fc.Forward && prefs.StatefulFiltering
	if err := d.fwd.Set(fc); err != nil {
		errs = append(errs, fmt.Errorf("forwarding: %w", err))
	}
	rs.Forwarding, rs.Masquerade = fc.Forward, fc.Masquerade
	// Reading the firewall for warnings is host I/O too: done here, not per status request.
	rs.Warnings = d.fwd.Warnings()
	if fc.SpoofGuard {
		rs.CGNATWarnings = cgnatLANWarnings(d.opts.TunName)
	}
	d.routing = rs
	d.publishRoutingLocked()
	return errors.Join(errs...)
}

// publishRoutingLocked makes the routing state status shows that of the current plan.
func (d *Dataplane) publishRoutingLocked() {
	rs := d.routing
	rs.Accepted, rs.ExitPeer = d.plan.accepted, d.plan.exitPeer
	d.pubMu.Lock()
	d.pub.routing = rs
	d.pubMu.Unlock()
}

// RoutingState is what the data plane installed for routes and forwarding, for status.
type RoutingState struct {
	Bypass, LAN, Accepted  []netip.Prefix
	Forwarding, Masquerade bool
	ExitPeer               *wire.Node
	// CGNATWarnings name interfaces whose own addresses the spoofed-source guard drops.
	CGNATWarnings []string
	Warnings      []string
}

// Routing reports the installed routing state.
func (d *Dataplane) Routing() RoutingState {
	d.pubMu.Lock()
	defer d.pubMu.Unlock()
	return d.pub.routing
}

// FilterStats are the packet filter's counters.
// FilterStats are the packet filter's counters, with the packets WireGuard dropped because their
// inner source was not the sending peer's ("spoofed inner source").
func (d *Dataplane) FilterStats() filter.Stats {
	st := d.filter.Stats()
	if n := d.wg.SpoofedInner() - d.spoofedBase; n > 0 {
		if st.DroppedBy == nil {
			st.DroppedBy = map[string]uint64{}
		}
		st.DroppedBy["spoofed inner source"] += n
		st.Dropped += n
	}
	return st
}

// watchHost re-applies the host part when links, addresses or routes change (a LAN appears,
// another VPN connects) and repairs forwarding state someone removed.
func (d *Dataplane) watchHost(ctx context.Context) {
	changed := make(chan struct{}, 1)
	go d.rt.WatchLinks(ctx, func() {
		select {
		case changed <- struct{}{}:
		default:
		}
	})
	const period = 10 * time.Second
	t := time.NewTicker(period)
	defer t.Stop()
	last := time.Now()
	for {
		select {
		case <-ctx.Done():
			return
		case <-changed:
			// A new address or link may move our direct paths, or give us another router.
			d.conn.NetworkChanged()
			d.pm.networkChanged()
		case <-t.C:
			now := time.Now()
			d.checkResume(ctx, last, now, period)
			last = now
			if len(d.fwdMissing()) == 0 {
				continue
			}
			d.logf("dataplane: forwarding state was changed behind our back; restoring")
		}
		d.mu.Lock()
		if err := d.applyHostLocked(); err != nil {
			d.logf("dataplane: %v", err)
		}
		d.mu.Unlock()
	}
}

func (d *Dataplane) fwdMissing() []string {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.closed {
		return nil
	}
	return d.fwd.Check()
}

// SetPeerAPIPorts lets TCP SYNs to our peer API through the packet filter (the peer API checks
// who may do what itself).
func (d *Dataplane) SetPeerAPIPorts(v4, v6 uint16) {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.peerAPIPorts = [2]uint16{v4, v6}
	d.applyPeerAPIPortsLocked()
}

func (d *Dataplane) applyPeerAPIPortsLocked() {
	if d.shieldsUp {
		d.filter.SetPeerAPIPorts(0, 0)
		return
	}
	d.filter.SetPeerAPIPorts(d.peerAPIPorts[0], d.peerAPIPorts[1])
}
