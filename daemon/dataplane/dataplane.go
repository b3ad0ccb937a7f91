// Package dataplane assembles the packet path: a kernel TUN device, upstream wireguard-go on
// top of it, Skein's transport as wireguard-go's Bind, and the host routing for the tunnel. It
// turns each netmap into WireGuard peers, transport peers and routes.
package dataplane

import (
	"bytes"
	"context"
	"encoding/hex"
	"fmt"
	"net/netip"
	"runtime"
	"runtime/debug"
	"slices"
	"sync"
	"time"

	"golang.zx2c4.com/wireguard/device"
	"golang.zx2c4.com/wireguard/tun"

	"github.com/skeinvpn/skein/daemon/key"
	"github.com/skeinvpn/skein/daemon/netmap"
	"github.com/skeinvpn/skein/daemon/router"
	"github.com/skeinvpn/skein/daemon/transport"
	"github.com/skeinvpn/skein/daemon/wire"
)

// MTU of the tunnel, the official default: worst-case overhead keeps it under 1360 on the wire.
const MTU = 1280

var tsULA = netip.MustParsePrefix("fd7a:115c:a1e0::/48")

// Options configure a Dataplane.
type Options struct {
	TunName  string
	Port     uint16
	NodeKey  key.NodePrivate
	DiscoKey key.DiscoPrivate
	Logf     func(format string, args ...any)
	Verbose  bool
	// OnEndpointsChanged is called when our endpoints or home DERP change.
	OnEndpointsChanged func()
}

// Dataplane is one running tunnel.
type Dataplane struct {
	opts Options
	logf func(string, ...any)
	tun  tun.Device
	dev  *device.Device
	conn *transport.Conn
	rt   *router.Router

	stopWatch context.CancelFunc

	mu      sync.Mutex
	nodeKey key.NodePrivate
	wgPeers map[key.NodePublic]string // peer → its UAPI block, to send only changes
	closed  bool
}

// Start creates the TUN device, brings up WireGuard and the transport, and installs the base
// routing. On error everything made so far is removed.
func Start(opts Options) (dp *Dataplane, err error) {
	logf := opts.Logf
	if logf == nil {
		logf = func(string, ...any) {}
	}
	d := &Dataplane{opts: opts, logf: logf, wgPeers: map[key.NodePublic]string{}, nodeKey: opts.NodeKey}
	defer func() {
		if err != nil {
			d.Close()
		}
	}()
	// A crashed earlier run may have left rules, routes or the device behind.
	if err := router.Cleanup(opts.TunName, logf); err != nil {
		logf("dataplane: cleanup of leftovers: %v", err)
	}
	d.tun, err = tun.CreateTUN(opts.TunName, MTU)
	if err != nil {
		return nil, fmt.Errorf("creating TUN device %s: %w", opts.TunName, err)
	}
	d.conn = transport.New(transport.Options{
		Port:               opts.Port,
		Mark:               router.FwmarkBypass,
		DiscoKey:           opts.DiscoKey,
		Logf:               logf,
		OnEndpointsChanged: opts.OnEndpointsChanged,
	})
	d.conn.SetPrivateKey(opts.NodeKey)
	wgLog := &device.Logger{
		Verbosef: device.DiscardLogf,
		Errorf:   func(format string, args ...any) { logf("wireguard: "+format, args...) },
	}
	if opts.Verbose {
		wgLog.Verbosef = func(format string, args ...any) { logf("wireguard: "+format, args...) }
	}
	d.dev = device.NewDevice(d.tun, d.conn, wgLog)
	// The endpoint we give each peer is the peer itself and the transport picks the path;
	// wireguard-go must not replace it with whatever endpoint a packet came in on.
	d.dev.DisableSomeRoamingForBrokenMobileSemantics()
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
	// Restore rules and routes that another program (e.g. systemd-networkd) removes.
	ctx, cancel := context.WithCancel(context.Background())
	d.stopWatch = cancel
	go d.rt.Watch(ctx)
	go d.releaseMemoryWhenIdle(ctx)
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

// Conn returns the transport, for status, ping and netcheck.
func (d *Dataplane) Conn() *transport.Conn { return d.conn }

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
	if d.rt != nil {
		if err := d.rt.Close(); err != nil {
			d.logf("dataplane: removing routes: %v", err)
		}
	}
	if d.dev != nil {
		d.dev.Close() // closes the Bind and the TUN
	} else if d.tun != nil {
		d.tun.Close()
	}
	if d.conn != nil {
		d.conn.Shutdown()
	}
}

// SetNodeKey switches to a new node key (re-login with rotation).
func (d *Dataplane) SetNodeKey(k key.NodePrivate) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	if k == d.nodeKey {
		return nil
	}
	d.nodeKey = k
	d.conn.SetPrivateKey(k)
	r := k.Raw()
	return d.dev.IpcSet("private_key=" + hex.EncodeToString(r[:]) + "\n")
}

// usablePeer mirrors the official rule: peers with neither a disco key nor a home DERP cannot
// be reached, and expired peers are left out.
func usablePeer(nm *netmap.NetworkMap, p *wire.Node, now time.Time) bool {
	if nm.Expired(p, now) {
		return false
	}
	return !p.DiscoKey.IsZero() || p.HomeDERP != 0
}

// peerAllowedIPs are the prefixes routed to a peer: its own addresses; exit routes (/0) and
// subnet routes come with later features (exit nodes, --accept-routes).
func peerAllowedIPs(p *wire.Node) []netip.Prefix {
	var out []netip.Prefix
	for _, pfx := range p.AllowedIPs {
		if pfx.Bits() == 0 {
			continue
		}
		if slices.Contains(p.Addresses, pfx) {
			out = append(out, pfx)
		}
	}
	return out
}

// SetNetmap applies a netmap: transport peers, WireGuard peers (only what changed, so live
// sessions are kept) and routes.
func (d *Dataplane) SetNetmap(nm *netmap.NetworkMap) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.closed || nm.Self == nil {
		return nil
	}
	now := time.Now()
	var cfgs []transport.PeerConfig
	var routes []netip.Prefix
	want := map[key.NodePublic]string{}
	hasULA := false
	for _, p := range nm.SortedPeers() {
		if !usablePeer(nm, p, now) {
			continue
		}
		name := p.Name
		if p.Hostinfo != nil && p.Hostinfo.Hostname != "" {
			name = p.Hostinfo.Hostname
		}
		cfgs = append(cfgs, transport.PeerConfig{NodeKey: p.Key, DiscoKey: p.DiscoKey, Endpoints: p.Endpoints, HomeDERP: p.HomeDERP, Name: name})
		allowed := peerAllowedIPs(p)
		var b bytes.Buffer
		r := p.Key.Raw()
		hk := hex.EncodeToString(r[:])
		fmt.Fprintf(&b, "public_key=%s\nendpoint=%s\nreplace_allowed_ips=true\n", hk, hk)
		for _, a := range allowed {
			fmt.Fprintf(&b, "allowed_ip=%s\n", a)
			if a.Addr().Is6() && tsULA.Contains(a.Addr()) {
				hasULA = true
			} else {
				routes = append(routes, a)
			}
		}
		want[p.Key] = b.String()
	}
	if hasULA {
		routes = append(routes, tsULA)
	}
	d.conn.SetDERPMap(nm.DERPMap)
	d.conn.SetPeers(cfgs)

	var uapi bytes.Buffer
	for k, block := range want {
		if d.wgPeers[k] != block {
			uapi.WriteString(block)
		}
	}
	for k := range d.wgPeers {
		if _, ok := want[k]; !ok {
			r := k.Raw()
			fmt.Fprintf(&uapi, "public_key=%s\nremove=true\n", hex.EncodeToString(r[:]))
		}
	}
	if uapi.Len() > 0 {
		if err := d.dev.IpcSet(uapi.String()); err != nil {
			return fmt.Errorf("configuring WireGuard peers: %w", err)
		}
	}
	d.wgPeers = want

	var local []netip.Prefix
	for _, a := range nm.Self.Addresses {
		if a.IsSingleIP() {
			local = append(local, a)
		}
	}
	return d.rt.Set(router.Config{LocalAddrs: local, Routes: routes, MTU: MTU})
}
