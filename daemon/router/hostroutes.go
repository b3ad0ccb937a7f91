package router

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"slices"
	"strings"
	"syscall"
	"time"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netlink/nl"
	"golang.org/x/sys/unix"
)

// LANRoutes returns the prefixes directly connected to this host in the
// calling thread's network namespace, for "allow LAN access" (they become
// Config.LocalRoutes): the unicast routes of the main table without a
// gateway (scope link for IPv4; IPv6 does not record a scope, so on-link
// there), masked, sorted and without duplicates. Routes leaving via a device
// named in exclude (our TUN) or via a loopback device are skipped, and so are
// default routes, IPv6 link-local and multicast prefixes. Routes through
// other tunnel devices are not told apart: see VPNRoutes.
func LANRoutes(exclude ...string) ([]netip.Prefix, error) {
	return hostRoutes("LAN routes", exclude, func(rt netlink.Route, links map[int]netlink.Link) bool {
		if rt.Gw != nil || rt.Via != nil || len(rt.MultiPath) > 0 {
			return false
		}
		if rt.Family == netlink.FAMILY_V4 && rt.Scope != netlink.SCOPE_LINK {
			return false
		}
		l, ok := links[rt.LinkIndex]
		return ok && l.Attrs().Flags&net.FlagLoopback == 0
	})
}

// vpnMinBits are the shortest prefixes VPNRoutes reports. Shorter ones are
// a full tunnel in pieces (OpenVPN's 0.0.0.0/1 + 128.0.0.0/1, or ::/3 and
// 2000::/4 for IPv6) and, as exceptions, would make the exit node pointless
// just like a default route. fc00::/7 (all of ULA) is the broadest private
// range and still passes.
const (
	vpnMinBits4 = 8
	vpnMinBits6 = 7
)

// VPNRoutes returns the destinations that the main table of the calling
// thread's network namespace sends into other tunnels (a company VPN): the
// unicast routes, IPv4 and IPv6, whose output device (any hop of a multipath
// route) is tunnel-like by link kind (tun/tap, wireguard, ppp, ipip, gre,
// sit, vti, ip6tnl, xfrm, ...) or by name (wg*, tun*, tap*, ppp*). Devices
// named in exclude (our TUN) and tailscale0 do not count. Default routes and
// other very broad prefixes (see vpnMinBits4/6) are left out, as are IPv6
// link-local and multicast prefixes. The result is masked, sorted and
// without duplicates; it is meant for Config.Bypass.
func VPNRoutes(exclude ...string) ([]netip.Prefix, error) {
	exclude = append(slices.Clip(exclude), "tailscale0")
	return hostRoutes("VPN routes", exclude, func(rt netlink.Route, links map[int]netlink.Link) bool {
		if b := rt.Dst; b != nil {
			ones, _ := b.Mask.Size()
			if (rt.Family == netlink.FAMILY_V4 && ones < vpnMinBits4) || (rt.Family == netlink.FAMILY_V6 && ones < vpnMinBits6) {
				return false
			}
		}
		if tunnelLike(links[rt.LinkIndex]) {
			return true
		}
		for _, nh := range rt.MultiPath {
			if tunnelLike(links[nh.LinkIndex]) {
				return true
			}
		}
		return false
	})
}

// tunnelKinds are IFLA_INFO_KIND values (as the netlink package names the
// link types) of devices that carry traffic into another network.
var tunnelKinds = map[string]bool{
	"tuntap": true, "tun": true, "wireguard": true, "ppp": true,
	"ipip": true, "gre": true, "gretap": true, "ip6gre": true, "ip6gretap": true,
	"sit": true, "vti": true, "vti6": true, "ip6tnl": true, "xfrm": true,
	"ovpn": true, "ovpn-dco": true,
}

var tunnelNamePrefixes = []string{"wg", "tun", "tap", "ppp"}

func tunnelLike(l netlink.Link) bool {
	if l == nil {
		return false
	}
	if tunnelKinds[l.Type()] {
		return true
	}
	name := l.Attrs().Name
	for _, p := range tunnelNamePrefixes {
		if strings.HasPrefix(name, p) {
			return true
		}
	}
	return false
}

// hostRoutes lists the main table of both families and returns the masked
// destinations of the unicast routes that keep passes, minus those via a
// device in exclude and those never worth reporting (default, IPv6
// link-local, multicast).
func hostRoutes(what string, exclude []string, keep func(netlink.Route, map[int]netlink.Link) bool) ([]netip.Prefix, error) {
	h, err := netlink.NewHandle(unix.NETLINK_ROUTE)
	if err != nil {
		return nil, fmt.Errorf("router: %s: netlink: %w", what, err)
	}
	defer h.Close()
	ls, err := h.LinkList()
	if err != nil {
		return nil, fmt.Errorf("router: %s: list links: %w", what, err)
	}
	links := make(map[int]netlink.Link, len(ls))
	for _, l := range ls {
		if !slices.Contains(exclude, l.Attrs().Name) {
			links[l.Attrs().Index] = l
		}
	}
	seen := map[netip.Prefix]bool{}
	for _, fam := range []int{netlink.FAMILY_V4, netlink.FAMILY_V6} {
		rts, err := listMain(h, fam)
		if err != nil {
			return nil, fmt.Errorf("router: %s: %w", what, err)
		}
		for _, rt := range rts {
			if rt.Type != unix.RTN_UNICAST || rt.Dst == nil {
				continue
			}
			p := routePrefix(rt)
			if !p.IsValid() || p.Bits() == 0 || p.Addr().IsMulticast() || (p.Addr().Is6() && p.Addr().IsLinkLocalUnicast()) {
				continue
			}
			// A route via an excluded device is not in links; neither
			// is one whose device vanished since LinkList.
			if _, ok := links[rt.LinkIndex]; !ok && len(rt.MultiPath) == 0 {
				continue
			}
			if keep(rt, links) {
				seen[p] = true
			}
		}
	}
	return sortedKeys(seen), nil
}

// listMain returns the routes of one family in the main table; nothing when
// the kernel has no such family.
func listMain(h *netlink.Handle, fam int) ([]netlink.Route, error) {
	var (
		rts []netlink.Route
		err error
	)
	for range 3 {
		rts, err = h.RouteListFiltered(fam, &netlink.Route{Table: unix.RT_TABLE_MAIN}, netlink.RT_FILTER_TABLE)
		if !errors.Is(err, netlink.ErrDumpInterrupted) {
			break
		}
	}
	if errors.Is(err, unix.EAFNOSUPPORT) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("list %s main table: %w", famName(fam), err)
	}
	return rts, nil
}

// Tunables; tests shorten them.
var (
	linkDebounce = 500 * time.Millisecond // quiet time before onChange
	linkMaxDelay = 3 * time.Second        // onChange at the latest this long after a change
)

// WatchLinks calls onChange when the links, addresses or main-table routes
// of the router's network namespace change, so the caller can recompute
// LANRoutes and VPNRoutes and Set again. Changes are debounced: onChange
// runs once the namespace has been quiet for about 500 ms (at most 3 s after
// the first change of a burst), and again if something changes while it
// runs. Changes to the router's own TUN device (its link, its addresses,
// main-table routes via it) are ignored: Set makes them. So are IPv6
// link-local addresses and link-local or multicast routes, which neither
// LANRoutes nor VPNRoutes report (the kernel announces a link-local address
// only once DAD is done, a second or two after the link came up).
//
// onChange runs on the goroutine that called WatchLinks, never concurrently
// with itself, and may call Set. WatchLinks returns nil when ctx is done or
// the Router is closed, and an error if it cannot listen.
func (r *Router) WatchLinks(ctx context.Context, onChange func()) error {
	groups := []uint{unix.RTNLGRP_LINK, unix.RTNLGRP_IPV4_IFADDR, unix.RTNLGRP_IPV4_ROUTE}
	if r.v6 {
		groups = append(groups, unix.RTNLGRP_IPV6_IFADDR, unix.RTNLGRP_IPV6_ROUTE)
	}
	tunIdx := -1
	r.mu.Lock()
	if l, err := r.k.h.LinkByName(r.tun); err == nil && !r.closed {
		tunIdx = l.Attrs().Index
	}
	r.mu.Unlock()
	ev, err := r.subscribe(groups, func(msgs []syscall.NetlinkMessage) bool { return hostChange(msgs, tunIdx) })
	if err != nil {
		return fmt.Errorf("router: watch links: subscribe: %w", err)
	}
	if ev == nil {
		return nil // closed
	}
	defer ev.close()

	timer := time.NewTimer(time.Hour)
	timer.Stop()
	var first time.Time // first change not yet reported; zero if none
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
			return fmt.Errorf("router: watch links: %w", err)
		case <-ev.kick:
			if first.IsZero() {
				first = time.Now()
			}
			d := min(linkDebounce, time.Until(first.Add(linkMaxDelay)))
			timer.Reset(max(d, 0))
		case <-timer.C:
			first = time.Time{}
			onChange()
		}
	}
}

// hostChange reports whether msgs hold a link, address or main-table route
// change that is not about the device with index tunIdx and could matter to
// LANRoutes or VPNRoutes.
func hostChange(msgs []syscall.NetlinkMessage, tunIdx int) bool {
	for _, m := range msgs {
		switch m.Header.Type {
		case unix.RTM_NEWLINK, unix.RTM_DELLINK:
			if ifIndex(m.Data) != tunIdx {
				return true
			}
		case unix.RTM_NEWADDR, unix.RTM_DELADDR:
			if ifIndex(m.Data) != tunIdx && !linkLocalAddr(m.Data) {
				return true
			}
		case unix.RTM_NEWROUTE, unix.RTM_DELROUTE:
			if routeTable(m.Data) != unix.RT_TABLE_MAIN {
				continue
			}
			oif, dst := routeInfo(m.Data)
			if oif != tunIdx && !(dst.Is6() && (dst.IsLinkLocalUnicast() || dst.IsMulticast())) {
				return true
			}
		}
	}
	return false
}

// ifIndex reads the device index of an ifinfomsg or ifaddrmsg (both keep it
// at offset 4); 0 if the message is short.
func ifIndex(b []byte) int {
	if len(b) < 8 {
		return 0
	}
	return int(int32(nl.NativeEndian().Uint32(b[4:8])))
}

// linkLocalAddr reports whether an ifaddrmsg is about an IPv6 link-local
// address.
func linkLocalAddr(b []byte) bool {
	if len(b) < unix.SizeofIfAddrmsg || b[0] != unix.AF_INET6 {
		return false
	}
	attrs, err := nl.ParseRouteAttr(b[unix.SizeofIfAddrmsg:])
	if err != nil {
		return false
	}
	for _, a := range attrs {
		if a.Attr.Type == unix.IFA_ADDRESS {
			ip, ok := netip.AddrFromSlice(a.Value)
			return ok && ip.IsLinkLocalUnicast()
		}
	}
	return false
}

// routeInfo reads the output device (0 if none, or several: multipath) and
// the destination address (invalid for a default route) of a route message.
func routeInfo(b []byte) (oif int, dst netip.Addr) {
	if len(b) < unix.SizeofRtMsg {
		return 0, netip.Addr{}
	}
	attrs, err := nl.ParseRouteAttr(b[unix.SizeofRtMsg:])
	if err != nil {
		return 0, netip.Addr{}
	}
	for _, a := range attrs {
		switch {
		case a.Attr.Type == unix.RTA_OIF && len(a.Value) >= 4:
			oif = int(int32(nl.NativeEndian().Uint32(a.Value)))
		case a.Attr.Type == unix.RTA_DST:
			dst, _ = netip.AddrFromSlice(a.Value)
		}
	}
	return oif, dst
}
