package osdns

import (
	"fmt"
	"net/netip"
	"slices"
	"testing"
	"time"
)

// FuzzResolvConf parses resolv.conf text as any program or user may have left it (issue 14,
// S22: the resolv.conf parser), renders skeind's own file from it and rebuilds an original from
// that: no panic, our file always points at our resolver and is recognised as ours, and what it
// records of the original comes back.
func FuzzResolvConf(f *testing.F) {
	f.Add([]byte("# generated\nnameserver 192.168.1.1\nnameserver fe80::1%eth0\nsearch lan example.com\noptions edns0 trust-ad\n"))
	f.Add([]byte("domain a.b\nsearch x.y ; comment\nnameserver 1.1.1.1 # x\nnameserver\noptions\n\n\t\n#"))
	f.Add([]byte("nameserver 100.100.100.100\n# skein: original nameservers 9.9.9.9\n"))
	cfg := Config{Nameservers: []netip.Addr{netip.MustParseAddr("100.100.100.100")}, SearchDomains: []string{"tail.example"}}
	f.Fuzz(func(t *testing.T, b []byte) {
		orig := parseResolvConf(b)
		ours := renderOurs(cfg, orig, "/etc/resolv.pre-skein.conf")
		if !hasMarker(ours) {
			t.Fatalf("our file is not recognised as ours:\n%s", ours)
		}
		got := parseResolvConf(ours)
		if !slices.Equal(got.Nameservers, cfg.Nameservers) {
			t.Fatalf("our file's nameservers %v, want %v:\n%s", got.Nameservers, cfg.Nameservers, ours)
		}
		if rec := recordedNameservers(ours); !slices.Equal(rec, orig.Nameservers) && !(len(rec) == 0 && len(orig.Nameservers) == 0) {
			t.Fatalf("recorded %v, the original had %v", rec, orig.Nameservers)
		}
		if rebuilt, ok := rebuildFromMarker(ours); ok {
			r := parseResolvConf(rebuilt)
			if hasMarker(rebuilt) || !slices.Equal(r.Nameservers, orig.Nameservers) {
				t.Fatalf("rebuilt %v from an original with %v:\n%s", r.Nameservers, orig.Nameservers, rebuilt)
			}
		}
	})
}

// A search list is bounded: it may come from a DHCP server, and 80,000 domains took 20 s of
// CPU per apply before (found by FuzzResolvConf).
func TestResolvConfSearchBounded(t *testing.T) {
	var b []byte
	b = append(b, "search"...)
	for i := range 80000 {
		b = append(b, fmt.Sprintf(" d%d.example", i)...)
	}
	t0 := time.Now()
	// A nameserver after the long line still counts (a line scanner stopped at the first line
	// over its buffer and dropped the rest).
	f := parseResolvConf(append(b, "\nnameserver 10.0.0.1\n"...))
	if !slices.Equal(f.Nameservers, []netip.Addr{netip.MustParseAddr("10.0.0.1")}) {
		t.Errorf("nameservers after the long line: %v", f.Nameservers)
	}
	renderOurs(Config{Nameservers: []netip.Addr{netip.MustParseAddr("100.100.100.100")}}, f, "/x")
	if len(f.Search) != maxSearch || time.Since(t0) > 2*time.Second {
		t.Errorf("%d search domains kept, in %v", len(f.Search), time.Since(t0))
	}
}
