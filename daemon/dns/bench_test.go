package dns

import (
	"context"
	"fmt"
	"net/netip"
	"slices"
	"testing"
	"time"

	mdns "github.com/miekg/dns"
)

// bigConfig is a MagicDNS-like config with n peers, each with an IPv4 and
// an IPv6 address.
func bigConfig(n int) Config {
	cfg := Config{
		Hosts:         make(map[string][]netip.Addr, n),
		SearchDomains: []string{"tail1234.ts.net"},
		LocalDomains:  append([]string{suffix}, magicReverseZones()...),
	}
	for i := range n {
		v4 := netip.AddrFrom4([4]byte{100, 64 + byte(i>>16), byte(i >> 8), byte(i)})
		v6 := netip.AddrFrom16([16]byte{0xfd, 0x7a, 0x11, 0x5c, 0xa1, 0xe0, 14: byte(i >> 8), 15: byte(i)})
		cfg.Hosts[fmt.Sprintf("host%d.%s", i, suffix)] = []netip.Addr{v4, v6}
	}
	return cfg
}

func packed(tb testing.TB, name string, qtype uint16) []byte {
	q := question(name, qtype)
	b, err := q.Pack()
	if err != nil {
		tb.Fatal(err)
	}
	return b
}

func benchLocal(b *testing.B, name string, qtype uint16, wantRcode int) {
	s := NewServer(Options{})
	s.SetConfig(bigConfig(10000))
	q := packed(b, name, qtype)
	ctx := context.Background()
	out := s.Handle(ctx, q, false)
	var m mdns.Msg
	if err := m.Unpack(out); err != nil || m.Rcode != wantRcode {
		b.Fatalf("bad answer %v %v", err, &m)
	}
	b.ReportAllocs()
	b.ResetTimer()
	for b.Loop() {
		if s.Handle(ctx, q, false) == nil {
			b.Fatal("nil")
		}
	}
}

func BenchmarkLocalA(b *testing.B) {
	benchLocal(b, "host4321."+suffix, mdns.TypeA, mdns.RcodeSuccess)
}

func BenchmarkLocalAAAA(b *testing.B) {
	benchLocal(b, "Host4321."+suffix, mdns.TypeAAAA, mdns.RcodeSuccess)
}

func BenchmarkLocalShortName(b *testing.B) {
	benchLocal(b, "host4321.", mdns.TypeA, mdns.RcodeSuccess)
}

func BenchmarkLocalPTR4(b *testing.B) {
	benchLocal(b, "225.16.64.100.in-addr.arpa.", mdns.TypePTR, mdns.RcodeSuccess)
}

func BenchmarkLocalPTR6(b *testing.B) {
	benchLocal(b, "1.e.0.1.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.e.1.a.c.5.1.1.a.7.d.f.ip6.arpa.", mdns.TypePTR, mdns.RcodeSuccess)
}

func BenchmarkLocalNXDOMAIN(b *testing.B) {
	benchLocal(b, "nosuchhost."+suffix, mdns.TypeA, mdns.RcodeNameError)
}

func BenchmarkLocalAParallel(b *testing.B) {
	s := NewServer(Options{})
	s.SetConfig(bigConfig(10000))
	q := packed(b, "host4321."+suffix, mdns.TypeA)
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			s.Handle(context.Background(), q, false)
		}
	})
}

// BenchmarkLocalLatency reports p50/p99 of individual local queries (A,
// AAAA, PTR, NXDOMAIN over random hosts) against a 10k-host config.
func BenchmarkLocalLatency(b *testing.B) {
	s := NewServer(Options{})
	s.SetConfig(bigConfig(10000))
	var qs [][]byte
	for i := 0; i < 10000; i += 97 {
		qs = append(qs,
			packed(b, fmt.Sprintf("host%d.%s", i, suffix), mdns.TypeA),
			packed(b, fmt.Sprintf("HOST%d.%s", i, suffix), mdns.TypeAAAA),
			packed(b, fmt.Sprintf("%d.%d.%d.100.in-addr.arpa.", byte(i), byte(i>>8), 64+byte(i>>16)), mdns.TypePTR),
			packed(b, fmt.Sprintf("missing%d.%s", i, suffix), mdns.TypeA))
	}
	ctx := context.Background()
	durs := make([]time.Duration, 0, b.N)
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		q := qs[i%len(qs)]
		t0 := time.Now()
		s.Handle(ctx, q, false)
		durs = append(durs, time.Since(t0))
	}
	b.StopTimer()
	slices.Sort(durs)
	b.ReportMetric(float64(durs[len(durs)/2].Nanoseconds()), "p50-ns")
	b.ReportMetric(float64(durs[len(durs)*99/100].Nanoseconds()), "p99-ns")
}

func BenchmarkSetConfig10k(b *testing.B) {
	s := NewServer(Options{})
	cfg := bigConfig(10000)
	b.ReportAllocs()
	for b.Loop() {
		s.SetConfig(cfg)
	}
}

func TestBigConfigAnswers(t *testing.T) {
	s := NewServer(Options{Logf: testLogf(t)})
	s.SetConfig(bigConfig(10000))
	for _, i := range []int{0, 1, 255, 256, 4321, 9999} {
		r := ask(t, s, question(fmt.Sprintf("host%d.%s", i, suffix), mdns.TypeA), false)
		want := netip.AddrFrom4([4]byte{100, 64 + byte(i>>16), byte(i >> 8), byte(i)})
		if len(r.Answer) != 1 || r.Answer[0].(*mdns.A).A.String() != want.String() {
			t.Fatalf("host%d: %v", i, r.Answer)
		}
		rev, _ := mdns.ReverseAddr(want.String())
		r = ask(t, s, question(rev, mdns.TypePTR), false)
		if len(r.Answer) != 1 || r.Answer[0].(*mdns.PTR).Ptr != fmt.Sprintf("host%d.%s", i, suffix) {
			t.Fatalf("PTR %s: %v", rev, r.Answer)
		}
	}
}
