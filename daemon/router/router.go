// Package router configures the host's routing for the tunnel device with the
// same layout as the official Tailscale Linux client (table 52, rule prefs
// 5210/5230/5250/5270, fwmark 0x80000/0xff0000), so scripts written for
// tailscaled keep working with skeind.
//
// Everything goes through netlink on a handle bound to the network namespace
// New was called in, so goroutines on other OS threads (Watch, WatchLinks)
// act on the same namespace. LANRoutes and VPNRoutes, which need no Router,
// read the namespace of the thread that calls them.
//
// What the package owns (see owned.go), and nothing else is ever removed:
//   - ip rules (IPv4 and IPv6) at prefs 5210, 5230, 5250 and 5270 whose action
//     is the one the layout puts there (the fwmark may differ: stale variants);
//   - ip rules at pref 5260 of exactly the shape "from all to <prefix> lookup
//     main" (no fwmark, no other selector): the Config.Bypass exceptions;
//   - routes in table 52 that leave via the TUN device, and throw routes in
//     table 52;
//   - every address on the TUN device except IPv6 link-local ones.
package router

import (
	"errors"
	"fmt"
	"net/netip"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netlink/nl"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
)

const (
	// FwmarkBypass is set (SO_MARK) on skeind's own sockets so their packets
	// skip table 52 and never loop into the tunnel.
	FwmarkBypass = 0x80000
	// FwmarkMask is the part of the fwmark the rules look at; the rest stays
	// free for other software.
	FwmarkMask = 0xff0000
	// Table is the routing table holding the tunnel routes.
	Table = 52
)

// Rule preferences of the layout, in the order the kernel evaluates them.
const (
	PrefBypassMain        = 5210 // fwmark 0x80000/0xff0000 lookup main
	PrefBypassDefault     = 5230 // fwmark 0x80000/0xff0000 lookup default
	PrefBypassUnreachable = 5250 // fwmark 0x80000/0xff0000 unreachable
	PrefBypassTo          = 5260 // to <prefix> lookup main, one per Config.Bypass entry
	PrefTable             = 5270 // lookup 52
)

// Config is the routing state wanted for the tunnel.
type Config struct {
	// LocalAddrs are the node's addresses, put on the TUN device
	// (100.64.x.y/32, fd7a:115c:a1e0::x/128).
	LocalAddrs []netip.Prefix
	// Routes go into table 52 via the TUN device.
	Routes []netip.Prefix
	// LocalRoutes become throw routes in table 52: destinations that must
	// keep using the host's own routing although a broader entry of Routes
	// (an exit node's 0.0.0.0/0) covers them. The official client fills it
	// only when an exit node is in use (LAN access); normally empty.
	LocalRoutes []netip.Prefix
	// Bypass are destinations that keep using the main routing table even
	// when Routes send everything to the tunnel (an intranet behind another
	// VPN, exceptions the user chose): one rule "to <prefix> lookup main" at
	// PrefBypassTo each, ahead of the table-52 rule. Unlike LocalRoutes they
	// win over any route of table 52, however specific (one covering a
	// peer's address takes that peer off the tunnel). A /0 entry is
	// ignored (it would turn the exit node off), as are IPv6 entries when
	// the router manages IPv4 only.
	Bypass []netip.Prefix
	// MTU of the TUN device; 0 leaves it as it is.
	MTU int
}

// Router owns the routing state for one TUN device.
type Router struct {
	tun  string
	logf func(string, ...any)
	v6   bool
	k    *kernel
	ns   netns.NsHandle

	mu       sync.Mutex
	cfg      Config
	haveCfg  bool
	closed   bool
	closedCh chan struct{}

	// own are route changes UpdateRoutes is making, so that Watch does not take our own
	// events for someone else's and re-read every table after each peer delta.
	ownMu sync.Mutex
	own   map[ownChange]time.Time
	// repairs counts Watch's re-reads of the kernel state (tests).
	repairs atomic.Int64
}

// ownChange is one route event we expect from our own change.
type ownChange struct {
	del bool
	dst netip.Prefix
}

// New returns a Router for the existing link tunName in the calling thread's
// network namespace. It changes nothing until Set.
func New(tunName string, logf func(string, ...any)) (*Router, error) {
	if logf == nil {
		logf = func(string, ...any) {}
	}
	ns, err := netns.Get()
	if err != nil {
		return nil, fmt.Errorf("router: current netns: %w", err)
	}
	k, err := newKernel()
	if err != nil {
		ns.Close()
		return nil, err
	}
	if _, err := k.h.LinkByName(tunName); err != nil {
		k.close()
		ns.Close()
		return nil, fmt.Errorf("router: link %q: %w", tunName, err)
	}
	r := &Router{tun: tunName, logf: logf, k: k, ns: ns, closedCh: make(chan struct{})}
	// Read once here: /proc/sys/net follows the reading thread's namespace,
	// and later calls may run on threads in another one.
	if why := ipv6Off(tunName); why != "" {
		logf("router: IPv6 unavailable (%s); managing IPv4 only", why)
	} else {
		r.v6 = true
	}
	return r, nil
}

// ipv6Off says why IPv6 cannot be used in this namespace, or "" if it can.
func ipv6Off(tun string) string {
	b, err := os.ReadFile("/proc/sys/net/ipv6/conf/all/disable_ipv6")
	if err != nil {
		return "no IPv6 in this kernel"
	}
	if strings.TrimSpace(string(b)) != "0" {
		return "net.ipv6.conf.all.disable_ipv6=1"
	}
	if b, err := os.ReadFile("/proc/sys/net/ipv6/conf/" + tun + "/disable_ipv6"); err == nil && strings.TrimSpace(string(b)) != "0" {
		return "net.ipv6.conf." + tun + ".disable_ipv6=1"
	}
	return ""
}

// IPv6 reports whether the router manages IPv6 too.
func (r *Router) IPv6() bool { return r.v6 }

// Set makes the kernel state match cfg: it reads what is installed, adds
// what is missing and removes what is extra among the things we own. It is
// idempotent and also repairs changes made behind our back.
func (r *Router) Set(cfg Config) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.closed {
		return errors.New("router: closed")
	}
	r.cfg = cloneConfig(cfg)
	r.haveCfg = true
	return r.applyLocked()
}

// UpdateRoutes adds and removes routes via the tunnel in table 52 (a peer joining or leaving)
// without reading the kernel's tables, which Set does every time: with 10,000 peers that read
// costs tens of milliseconds. What Set last asked for is updated too, so a later Set, Check
// or a repair after someone flushed the table keeps the change. Routes the family is off for
// are skipped, as Set skips them.
func (r *Router) UpdateRoutes(add, remove []netip.Prefix) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.closed {
		return errors.New("router: closed")
	}
	if !r.haveCfg {
		return errors.New("router: UpdateRoutes before Set")
	}
	link, err := r.k.h.LinkByName(r.tun)
	if err != nil {
		return fmt.Errorf("router: link %q: %w", r.tun, err)
	}
	idx := link.Attrs().Index
	gone := make(map[netip.Prefix]bool, len(remove))
	var errs []error
	for _, p := range remove {
		p = p.Masked()
		gone[p] = true
		if !p.IsValid() || (p.Addr().Is6() && !r.v6) {
			continue
		}
		r.expectOwn(ownChange{true, p})
		err := r.k.h.RouteDel(&netlink.Route{LinkIndex: idx, Dst: prefixIPNet(p), Table: Table})
		if err != nil && !errors.Is(err, unix.ESRCH) {
			errs = append(errs, fmt.Errorf("route %v: %w", p, err))
		}
	}
	kept := r.cfg.Routes[:0:0]
	for _, p := range r.cfg.Routes {
		if !gone[p.Masked()] {
			kept = append(kept, p)
		}
	}
	for _, p := range add {
		p = p.Masked()
		kept = append(kept, p)
		if !p.IsValid() || (p.Addr().Is6() && !r.v6) {
			continue
		}
		r.expectOwn(ownChange{false, p})
		if err := r.k.h.RouteReplace(&netlink.Route{LinkIndex: idx, Dst: prefixIPNet(p), Table: Table}); err != nil {
			errs = append(errs, fmt.Errorf("route %v: %w", p, err))
		}
	}
	r.cfg.Routes = kept
	return errors.Join(errs...)
}

// ownEventTTL bounds how long an expected event is waited for (a change that produced no event,
// e.g. deleting a route already gone, must not hide a later real one for long).
const ownEventTTL = 5 * time.Second

func (r *Router) expectOwn(c ownChange) {
	r.ownMu.Lock()
	defer r.ownMu.Unlock()
	if r.own == nil {
		r.own = map[ownChange]time.Time{}
	}
	r.own[c] = time.Now()
}

// wasOwn reports (and forgets) whether an event is one our own change caused.
func (r *Router) wasOwn(c ownChange) bool {
	r.ownMu.Lock()
	defer r.ownMu.Unlock()
	at, ok := r.own[c]
	if ok {
		delete(r.own, c)
	}
	return ok && time.Since(at) < ownEventTTL
}

func (r *Router) applyLocked() error {
	p, err := r.plan(r.cfg)
	if err != nil {
		return err
	}
	return p.apply(r.logf)
}

// Check reports what Set last asked for and is not installed now (a rule
// deleted by systemd-networkd, a route flushed by hand, ...), one line per
// item. Nil means in sync (extra items we own are not reported).
func (r *Router) Check() (missing []string, err error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.closed {
		return nil, errors.New("router: closed")
	}
	if !r.haveCfg {
		return nil, nil
	}
	p, err := r.plan(r.cfg)
	if err != nil {
		return nil, err
	}
	for _, a := range p.adds {
		missing = append(missing, a.desc)
	}
	return missing, nil
}

// Close removes every rule, table-52 route and address the router owns and
// sets the link down. The TUN device itself is left to its creator.
func (r *Router) Close() error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.closed {
		return nil
	}
	r.closed = true
	close(r.closedCh)
	var errs []error
	link, err := r.k.h.LinkByName(r.tun)
	if err != nil {
		var nf netlink.LinkNotFoundError
		if !errors.As(err, &nf) {
			errs = append(errs, err)
		}
		link = nil
	}
	if _, err := r.k.removeOwned(r.families(), link, false); err != nil {
		errs = append(errs, err)
	}
	if link != nil {
		for _, a := range r.ownedAddrs(link) {
			if err := r.k.h.AddrDel(link, nlAddr(a)); err != nil && !errors.Is(err, unix.EADDRNOTAVAIL) {
				errs = append(errs, fmt.Errorf("del addr %v: %w", a, err))
			}
		}
		if err := r.k.h.LinkSetDown(link); err != nil {
			errs = append(errs, fmt.Errorf("link down: %w", err))
		}
	}
	r.k.close()
	r.ns.Close()
	return errors.Join(errs...)
}

func (r *Router) families() []int {
	if r.v6 {
		return []int{netlink.FAMILY_V4, netlink.FAMILY_V6}
	}
	return []int{netlink.FAMILY_V4}
}

func cloneConfig(c Config) Config {
	return Config{
		LocalAddrs:  append([]netip.Prefix(nil), c.LocalAddrs...),
		Routes:      append([]netip.Prefix(nil), c.Routes...),
		LocalRoutes: append([]netip.Prefix(nil), c.LocalRoutes...),
		Bypass:      append([]netip.Prefix(nil), c.Bypass...),
		MTU:         c.MTU,
	}
}

// kernel is a netlink handle plus a socket for rule dumps (the library's
// RuleList drops the rule action, which we need to tell "unreachable" from
// "blackhole"), both bound to the namespace they were created in.
type kernel struct {
	h     *netlink.Handle
	rsock *nl.SocketHandle
}

func newKernel() (*kernel, error) {
	h, err := netlink.NewHandle(unix.NETLINK_ROUTE)
	if err != nil {
		return nil, fmt.Errorf("router: netlink: %w", err)
	}
	s, err := nl.GetNetlinkSocketAt(netns.None(), netns.None(), unix.NETLINK_ROUTE)
	if err != nil {
		h.Close()
		return nil, fmt.Errorf("router: netlink: %w", err)
	}
	tv := unix.NsecToTimeval(int64(5e9))
	s.SetReceiveTimeout(&tv)
	s.SetSendTimeout(&tv)
	return &kernel{h: h, rsock: &nl.SocketHandle{Socket: s}}, nil
}

func (k *kernel) close() {
	k.h.Close()
	k.rsock.Close()
}
