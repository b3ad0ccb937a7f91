// Package tsaddr holds the address facts of Tailscale-protocol tailnets, once: the ranges nodes
// get their addresses from and the MagicDNS service addresses. Both the helper and the front
// ends use it (through ipc), so it lives under internal/, not daemon/.
package tsaddr

import (
	"fmt"
	"net/netip"
)

var (
	// CGNATRange is where tailnet IPv4 addresses come from (RFC 6598 shared address space).
	CGNATRange = netip.MustParsePrefix("100.64.0.0/10")
	// ULARange is where tailnet IPv6 addresses come from (Tailscale's unique local prefix).
	ULARange = netip.MustParsePrefix("fd7a:115c:a1e0::/48")
	// ChromeOSVMRange is the part of CGNATRange that ChromeOS gives its Linux containers, so
	// addresses from it arrive on ordinary interfaces.
	ChromeOSVMRange = netip.MustParsePrefix("100.115.92.0/23")

	// MagicDNSv4 and MagicDNSv6 are the addresses MagicDNS answers on ("quad 100").
	MagicDNSv4 = netip.MustParseAddr("100.100.100.100")
	MagicDNSv6 = netip.MustParseAddr("fd7a:115c:a1e0::53")
)

// IsTailnetAddr reports whether a is in one of the tailnet's address ranges.
func IsTailnetAddr(a netip.Addr) bool {
	a = a.Unmap()
	return CGNATRange.Contains(a) || ULARange.Contains(a)
}

// OverlapsTailnet reports whether p overlaps a tailnet range.
func OverlapsTailnet(p netip.Prefix) bool {
	return p.Overlaps(CGNATRange) || p.Overlaps(ULARange)
}

// ReverseZones are the reverse-DNS zones of the tailnet's ranges, which MagicDNS answers.
func ReverseZones() []string {
	var z []string
	for i := 64; i <= 127; i++ { // 100.64.0.0/10 is 100.64.x.x to 100.127.x.x
		z = append(z, fmt.Sprintf("%d.100.in-addr.arpa.", i))
	}
	return append(z, "0.e.1.a.c.5.1.1.a.7.d.f.ip6.arpa.")
}
