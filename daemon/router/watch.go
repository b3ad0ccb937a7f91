package router

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"strings"
	"syscall"
	"time"

	"github.com/vishvananda/netlink/nl"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
)

// Tunables; tests shorten them.
var (
	watchDebounce = 250 * time.Millisecond // batch a burst of deletes into one repair
	watchMinGap   = time.Second            // don't fight another daemon at full speed
	watchResync   = 30 * time.Second       // catches events lost to socket overflow
)

// Watch repairs the state of the last Set whenever it changes behind our
// back (systemd-networkd deleting foreign rules, a manual route flush): it
// listens to rtnetlink link/address/route/rule events, and resyncs
// periodically in case events were lost. It returns nil when ctx is done or
// the Router is closed.
func (r *Router) Watch(ctx context.Context) error {
	groups := []uint{unix.RTNLGRP_LINK, unix.RTNLGRP_IPV4_IFADDR, unix.RTNLGRP_IPV4_ROUTE, unix.RTNLGRP_IPV4_RULE}
	if r.v6 {
		groups = append(groups, unix.RTNLGRP_IPV6_IFADDR, unix.RTNLGRP_IPV6_ROUTE, unix.RTNLGRP_IPV6_RULE)
	}
	ev, err := r.subscribe(groups, r.relevant)
	if err != nil {
		return fmt.Errorf("router: watch: subscribe: %w", err)
	}
	if ev == nil {
		return nil // closed
	}
	defer ev.close()

	debounce := time.NewTimer(time.Hour)
	debounce.Stop()
	tick := time.NewTicker(watchResync)
	defer tick.Stop()
	pending := false
	var lastFix time.Time
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-r.closedCh:
			return nil
		case err := <-ev.readErr:
			select {
			case <-ctx.Done():
				return nil
			case <-r.closedCh:
				return nil
			default:
			}
			return fmt.Errorf("router: watch: %w", err)
		case <-ev.kick:
			if !pending {
				pending = true
				d := watchDebounce
				if gap := time.Until(lastFix.Add(watchMinGap)); gap > d {
					d = gap
				}
				debounce.Reset(d)
			}
		case <-debounce.C:
			pending = false
			if r.repair() {
				lastFix = time.Now()
			}
		case <-tick.C:
			if r.repair() {
				lastFix = time.Now()
			}
		}
	}
}

// events is a netlink subscription in the router's namespace, read by its own goroutine: kick
// gets a (coalesced) signal for every batch the filter finds relevant, and for lost events.
type events struct {
	kick    chan struct{}
	readErr chan error
	close   func()
}

// subscribe listens to the rtnetlink groups in the router's namespace (r.ns keeps the
// subscription there whatever thread runs the reader). It returns nil, nil when the router is
// closed.
func (r *Router) subscribe(groups []uint, filter func([]syscall.NetlinkMessage) bool) (*events, error) {
	r.mu.Lock()
	if r.closed {
		r.mu.Unlock()
		return nil, nil
	}
	sock, err := nl.SubscribeAt(r.ns, netns.None(), unix.NETLINK_ROUTE, groups...)
	r.mu.Unlock()
	if err != nil {
		return nil, err
	}
	ev := &events{kick: make(chan struct{}, 1), readErr: make(chan error, 1)}
	stopped := make(chan struct{})
	go func() {
		defer close(stopped)
		for {
			msgs, _, err := sock.Receive()
			switch {
			case err == nil:
				if filter(msgs) {
					notify(ev.kick)
				}
			case errors.Is(err, unix.ENOBUFS):
				notify(ev.kick) // events lost: assume something changed
			case errors.Is(err, unix.EAGAIN), errors.Is(err, unix.EINTR):
			default:
				ev.readErr <- err
				return
			}
		}
	}()
	ev.close = func() {
		sock.Close() // wakes the reader
		<-stopped
	}
	return ev, nil
}

func notify(c chan struct{}) {
	select {
	case c <- struct{}{}:
	default:
	}
}

// relevant filters out route changes in other tables (DHCP, docker), which
// are most of the traffic; links, addresses and rules always count.
func (r *Router) relevant(msgs []syscall.NetlinkMessage) bool {
	for _, m := range msgs {
		switch m.Header.Type {
		case unix.RTM_NEWROUTE, unix.RTM_DELROUTE:
			if routeTable(m.Data) != Table {
				continue
			}
			if dst, ok := routeDst(m.Data); ok && r.wasOwn(ownChange{m.Header.Type == unix.RTM_DELROUTE, dst}) {
				continue // our own UpdateRoutes
			}
			return true
		default:
			return true
		}
	}
	return false
}

// routeDst is a route message's destination prefix.
func routeDst(b []byte) (netip.Prefix, bool) {
	if len(b) < unix.SizeofRtMsg {
		return netip.Prefix{}, false
	}
	family, bits := b[0], int(b[1])
	attrs, err := nl.ParseRouteAttr(b[unix.SizeofRtMsg:])
	if err != nil {
		return netip.Prefix{}, false
	}
	for _, a := range attrs {
		if a.Attr.Type != unix.RTA_DST {
			continue
		}
		ip, ok := netip.AddrFromSlice(a.Value)
		if !ok || (family == unix.AF_INET) != ip.Is4() {
			return netip.Prefix{}, false
		}
		return netip.PrefixFrom(ip, bits).Masked(), true
	}
	if bits == 0 { // a default route has no RTA_DST
		if family == unix.AF_INET {
			return netip.PrefixFrom(netip.IPv4Unspecified(), 0), true
		}
		return netip.PrefixFrom(netip.IPv6Unspecified(), 0), true
	}
	return netip.Prefix{}, false
}

func routeTable(b []byte) uint32 {
	if len(b) < unix.SizeofRtMsg {
		return 0
	}
	t := uint32(b[4])
	attrs, err := nl.ParseRouteAttr(b[unix.SizeofRtMsg:])
	if err != nil {
		return t
	}
	for _, a := range attrs {
		if a.Attr.Type == unix.RTA_TABLE && len(a.Value) >= 4 {
			t = nl.NativeEndian().Uint32(a.Value)
		}
	}
	return t
}

// repair re-applies the last Set if the kernel drifted from it, and reports
// whether it changed anything.
func (r *Router) repair() bool {
	r.repairs.Add(1)
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.closed || !r.haveCfg {
		return false
	}
	p, err := r.plan(r.cfg)
	if err != nil {
		r.logf("router: watch: %v", err)
		return false
	}
	if p.empty() {
		return false
	}
	var what []string
	for _, s := range p.adds {
		what = append(what, "missing "+s.desc)
	}
	for _, s := range p.dels {
		what = append(what, "extra "+s.desc)
	}
	r.logf("router: state changed behind our back (likely systemd-networkd); restoring: %s", strings.Join(what, "; "))
	if err := p.apply(r.logf); err != nil {
		r.logf("router: watch: restore: %v", err)
	}
	return true
}
