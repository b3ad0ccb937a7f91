package tsaddr

import (
	"net/netip"
	"strconv"
	"testing"
)

func TestRanges(t *testing.T) {
	for _, s := range []string{"100.64.0.1", "100.127.255.254", "fd7a:115c:a1e0::1", "::ffff:100.64.0.9", "100.100.100.100"} {
		if !IsTailnetAddr(netip.MustParseAddr(s)) {
			t.Errorf("%s not a tailnet address", s)
		}
	}
	for _, s := range []string{"100.63.255.255", "100.128.0.0", "10.0.0.1", "fd7a:115c:a1e1::1"} {
		if IsTailnetAddr(netip.MustParseAddr(s)) {
			t.Errorf("%s is a tailnet address", s)
		}
	}
	if !OverlapsTailnet(netip.MustParsePrefix("100.0.0.0/8")) || OverlapsTailnet(netip.MustParsePrefix("10.0.0.0/8")) {
		t.Error("OverlapsTailnet")
	}
	if !CGNATRange.Contains(ChromeOSVMRange.Addr()) || !CGNATRange.Contains(MagicDNSv4) || !ULARange.Contains(MagicDNSv6) {
		t.Error("service addresses outside the ranges")
	}
}

// Every address of the range has exactly one reverse zone, and nothing outside it has one.
func TestReverseZones(t *testing.T) {
	z := ReverseZones()
	if len(z) != 64+1 {
		t.Fatalf("%d zones", len(z))
	}
	has := map[string]bool{}
	for _, s := range z {
		has[s] = true
	}
	for _, ip := range []string{"100.64.0.1", "100.127.1.2"} {
		a := netip.MustParseAddr(ip).As4()
		zone := strconv.Itoa(int(a[1])) + ".100.in-addr.arpa."
		if !has[zone] {
			t.Errorf("no zone %s for %s", zone, ip)
		}
	}
	if has["63.100.in-addr.arpa."] || has["128.100.in-addr.arpa."] {
		t.Error("a zone outside 100.64.0.0/10")
	}
}
