package dataplane

import (
	"context"
	"net"
	"net/netip"
	"sync"
	"time"

	"github.com/vishvananda/netlink"

	"github.com/skeinvpn/skein/daemon/hostfw"
	"github.com/skeinvpn/skein/daemon/key"
	"github.com/skeinvpn/skein/daemon/router"
	"github.com/skeinvpn/skein/daemon/transport"
	"github.com/skeinvpn/skein/daemon/whyrelay"
	"github.com/skeinvpn/skein/daemon/wire"
	"github.com/skeinvpn/skein/ipc"
)

// The data plane's view of paths and of the network, for the control session and the IPC:
// callers ask here and never reach into the transport.

// NetInfo describes our network for control: home region, UDP, IPv6, the NAT's mapping and
// the region latencies of the last netcheck.
func (d *Dataplane) NetInfo() *wire.NetInfo { return d.conn.NetInfo() }

// PathReport is the data plane's evidence about one peer: its path, what discovery knows and,
// after a round of pings, what each address answered, with this host's side of the facts for
// whyrelay.Explain (the caller adds control's word about the peer).
type PathReport struct {
	transport.PeerDiag
	Facts whyrelay.Facts
}

// PeerPathReport gathers the evidence about a peer; with a positive wait it first sends a
// round of pings to every address of the peer and waits up to wait for the answers. ok is
// false when the peer is not in the tunnel.
func (d *Dataplane) PeerPathReport(ctx context.Context, k key.NodePublic, wait time.Duration) (PathReport, bool) {
	var diag transport.PeerDiag
	var ok bool
	if wait > 0 {
		diag, ok = d.conn.PingRound(ctx, k, wait)
	} else {
		diag, ok = d.conn.Diagnose(k)
	}
	if !ok {
		return PathReport{}, false
	}
	r := PathReport{PeerDiag: diag}
	f := &r.Facts
	f.Direct = diag.Path.Direct.IsValid()
	f.PeerHasDisco = diag.HasDisco
	for _, t := range diag.Round {
		if t.To.IsValid() {
			f.Pings.DirectSent += t.Sent
			f.Pings.DirectAnswered += t.Answered
			f.Pings.Addrs++
		} else {
			f.Pings.DERPSent += t.Sent
			f.Pings.DERPAnswered += t.Answered
		}
	}
	d.localFacts(f)
	return r, true
}

// localFacts fills in this host's side: the last netcheck, the firewall, where we sit.
func (d *Dataplane) localFacts(f *whyrelay.Facts) {
	d.netcheckFacts(f)
	f.Firewall = d.fw.verdict(f.Port)
	f.Gateway, f.LocalAddr = defaultRoute(f.GlobalV4.Addr())
}

// netcheckFacts are the facts that need no host I/O: the last netcheck, port mapping, port.
func (d *Dataplane) netcheckFacts(f *whyrelay.Facts) {
	rep := d.conn.LastReport()
	f.NetcheckRan = !rep.At.IsZero()
	f.UDP = rep.UDP
	f.GlobalV4 = rep.GlobalV4
	f.HardNAT = rep.MappingVaries
	if rep.UPnP != nil {
		f.PortMapChecked = true
		for _, p := range []struct {
			name string
			b    *bool
		}{{"UPnP", rep.UPnP}, {"NAT-PMP", rep.PMP}, {"PCP", rep.PCP}} {
			if p.b != nil && *p.b {
				f.PortMapOffered = append(f.PortMapOffered, p.name)
			}
		}
	}
	for _, e := range d.conn.Endpoints() {
		if e.Type == transport.EndpointPortmapped {
			f.PortMapped = e.Addr
		}
	}
	f.Port = d.conn.LocalPort()
	st := d.pm.status()
	f.RouterExternal = st.RejectedExternal
	if !f.PortMapChecked && !st.Disabled && !st.ProbedAt.IsZero() {
		f.PortMapChecked = true
		for _, p := range []struct {
			name string
			on   bool
		}{{"UPnP", st.Offers.UPnP}, {"NAT-PMP", st.Offers.NATPMP}, {"PCP", st.Offers.PCP}} {
			if p.on {
				f.PortMapOffered = append(f.PortMapOffered, p.name)
			}
		}
	}
}

// RelayCauses are the causes for a relayed peer, most likely first, from what is known without
// pinging (for status); nil when the peer is direct or unknown. peer fills in control's word.
func (d *Dataplane) RelayCauses(k key.NodePublic, peer func(*whyrelay.Facts)) []ipc.Cause {
	diag, ok := d.conn.Diagnose(k)
	if !ok || diag.Path.Direct.IsValid() {
		return nil
	}
	f := d.local.get(d)
	f.PeerHasDisco = diag.HasDisco
	peer(&f)
	return whyrelay.Explain(f)
}

// defaultRoute is the gateway and our source address towards the internet (dst, or a
// documentation address when unknown), from the main table: the tunnel's own routes are
// skipped with the bypass mark.
func defaultRoute(dst netip.Addr) (gw, src netip.Addr) {
	if !dst.IsValid() || !dst.Is4() {
		dst = netip.MustParseAddr("192.0.2.1")
	}
	rts, err := netlink.RouteGetWithOptions(net.IP(dst.AsSlice()), &netlink.RouteGetOptions{Mark: router.FwmarkBypass})
	if err != nil || len(rts) == 0 {
		return
	}
	gw, _ = netip.AddrFromSlice(rts[0].Gw)
	src, _ = netip.AddrFromSlice(rts[0].Src)
	return gw.Unmap(), src.Unmap()
}

// localCache keeps this host's firewall verdict and route for status, which lists every
// relayed peer and must answer at once: they are read in the background when older than 2 s,
// never under the caller's lock.
type localCache struct {
	mu         sync.Mutex
	at         time.Time
	refreshing bool
	fw         hostfw.Verdict
	gw, src    netip.Addr
}

func (lc *localCache) get(d *Dataplane) whyrelay.Facts {
	var f whyrelay.Facts
	d.netcheckFacts(&f)
	lc.mu.Lock()
	defer lc.mu.Unlock()
	if time.Since(lc.at) > 2*time.Second && !lc.refreshing {
		lc.refreshing = true
		port, dst := f.Port, f.GlobalV4.Addr()
		go func() {
			fw := d.fw.verdict(port)
			gw, src := defaultRoute(dst)
			lc.mu.Lock()
			lc.fw, lc.gw, lc.src, lc.at, lc.refreshing = fw, gw, src, time.Now(), false
			lc.mu.Unlock()
		}()
	}
	f.Firewall, f.Gateway, f.LocalAddr = lc.fw, lc.gw, lc.src
	return f
}

// firewallCache keeps the last firewall verdict for a short while (status asks often), and
// forgets it when the ruleset changes.
type firewallCache struct {
	mu   sync.Mutex
	at   time.Time
	port uint16
	v    hostfw.Verdict
}

const firewallCacheTTL = 10 * time.Second

func (fc *firewallCache) verdict(port uint16) hostfw.Verdict {
	fc.mu.Lock()
	defer fc.mu.Unlock()
	if fc.port == port && time.Since(fc.at) < firewallCacheTTL {
		return fc.v
	}
	v, err := hostfw.InboundUDP(port)
	if err != nil {
		v = hostfw.Verdict{}
	}
	fc.v, fc.port, fc.at = v, port, time.Now()
	return v
}

func (fc *firewallCache) forget() {
	fc.mu.Lock()
	fc.at = time.Time{}
	fc.mu.Unlock()
}

// watchFirewall tells the transport when the firewall changed (a port may have opened) and
// drops the cached verdict.
func (d *Dataplane) watchFirewall(ctx context.Context) {
	err := hostfw.Watch(ctx, func() {
		d.fw.forget()
		d.conn.InboundChanged()
	})
	if err != nil {
		d.logf("dataplane: not watching the firewall: %v", err)
	}
}
