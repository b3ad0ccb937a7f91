package dns

import (
	"context"
	"encoding/binary"
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"testing"

	mdns "github.com/miekg/dns"
)

const suffix = "tail1234.ts.net."

func testConfig() Config {
	return Config{
		Hosts: map[string][]netip.Addr{
			"laptop." + suffix:   addrs("100.64.0.1", "fd7a:115c:a1e0::1"),
			"server." + suffix:   addrs("100.64.0.2"),
			"v6only." + suffix:   addrs("fd7a:115c:a1e0::3"),
			"a.sub." + suffix:    addrs("100.64.1.1"),
			"web." + suffix:      addrs("100.64.0.7"),
			"web.example.com.":   addrs("10.0.0.7"),
			"db.example.com.":    addrs("10.0.0.5"), // ExtraRecords-style, outside local domains
			"Mixed.Example.Org":  addrs("10.9.9.9"), // normalised by SetConfig
			"alias." + suffix:    addrs("100.64.0.1"),
			"printer.local.":     addrs("192.168.1.20"),
			"mapped." + suffix:   addrs("::ffff:100.64.0.9"),
			"multi." + suffix:    addrs("100.64.0.10", "100.64.0.11", "100.64.0.10"),
			"other.corp.local.":  nil,
			"empty-addrs.ts.ex.": {},
		},
		SearchDomains: []string{strings.TrimSuffix(suffix, "."), "example.com"},
		LocalDomains:  append([]string{suffix}, magicReverseZones()...),
	}
}

func newLocalServer(t testing.TB) *Server {
	s := NewServer(Options{Logf: testLogf(t)})
	s.SetConfig(testConfig())
	return s
}

func rrStrings(rrs []mdns.RR) []string {
	var out []string
	for _, rr := range rrs {
		switch v := rr.(type) {
		case *mdns.A:
			out = append(out, fmt.Sprintf("%s A %s %d", v.Hdr.Name, v.A, v.Hdr.Ttl))
		case *mdns.AAAA:
			out = append(out, fmt.Sprintf("%s AAAA %s %d", v.Hdr.Name, v.AAAA, v.Hdr.Ttl))
		case *mdns.PTR:
			out = append(out, fmt.Sprintf("%s PTR %s %d", v.Hdr.Name, v.Ptr, v.Hdr.Ttl))
		default:
			out = append(out, rr.String())
		}
	}
	return out
}

func TestLocal(t *testing.T) {
	s := newLocalServer(t)
	tests := []struct {
		name  string
		qname string
		qtype uint16
		rcode int
		want  []string // nil means no answers
	}{
		{"A", "laptop." + suffix, mdns.TypeA, mdns.RcodeSuccess, []string{"laptop." + suffix + " A 100.64.0.1 600"}},
		{"AAAA", "laptop." + suffix, mdns.TypeAAAA, mdns.RcodeSuccess, []string{"laptop." + suffix + " AAAA fd7a:115c:a1e0::1 600"}},
		{"case echoed", "LapTop.TAIL1234.ts.NET.", mdns.TypeA, mdns.RcodeSuccess, []string{"LapTop.TAIL1234.ts.NET. A 100.64.0.1 600"}},
		{"AAAA of v4-only host is NODATA", "server." + suffix, mdns.TypeAAAA, mdns.RcodeSuccess, nil},
		{"A of v6-only host is NODATA", "v6only." + suffix, mdns.TypeA, mdns.RcodeSuccess, nil},
		{"AAAA v6-only", "v6only." + suffix, mdns.TypeAAAA, mdns.RcodeSuccess, []string{"v6only." + suffix + " AAAA fd7a:115c:a1e0::3 600"}},
		{"MX of known name is NODATA", "laptop." + suffix, mdns.TypeMX, mdns.RcodeSuccess, nil},
		{"ANY of known name is NODATA", "laptop." + suffix, mdns.TypeANY, mdns.RcodeSuccess, nil},
		{"unknown type of known name is NODATA", "laptop." + suffix, 65280, mdns.RcodeSuccess, nil},
		{"unknown in local domain", "nope." + suffix, mdns.TypeA, mdns.RcodeNameError, nil},
		{"unknown deep in local domain", "x.y.nope." + suffix, mdns.TypeAAAA, mdns.RcodeNameError, nil},
		{"zone apex is NODATA", suffix, mdns.TypeA, mdns.RcodeSuccess, nil},
		{"empty non-terminal is NODATA", "sub." + suffix, mdns.TypeA, mdns.RcodeSuccess, nil},
		{"deeper host", "a.sub." + suffix, mdns.TypeA, mdns.RcodeSuccess, []string{"a.sub." + suffix + " A 100.64.1.1 600"}},
		{"PTR v4", "1.0.64.100.in-addr.arpa.", mdns.TypePTR, mdns.RcodeSuccess, []string{
			"1.0.64.100.in-addr.arpa. PTR alias." + suffix + " 600",
			"1.0.64.100.in-addr.arpa. PTR laptop." + suffix + " 600"}},
		{"PTR v6", "1.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.e.1.a.c.5.1.1.a.7.d.f.ip6.arpa.", mdns.TypePTR, mdns.RcodeSuccess, []string{
			"1.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.e.1.a.c.5.1.1.a.7.d.f.ip6.arpa. PTR laptop." + suffix + " 600"}},
		{"PTR v6 upper-case nibbles", "3.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.E.1.A.C.5.1.1.A.7.D.F.ip6.arpa.", mdns.TypePTR, mdns.RcodeSuccess, []string{
			"3.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.E.1.A.C.5.1.1.A.7.D.F.ip6.arpa. PTR v6only." + suffix + " 600"}},
		{"PTR of v4-mapped config addr", "9.0.64.100.in-addr.arpa.", mdns.TypePTR, mdns.RcodeSuccess, []string{"9.0.64.100.in-addr.arpa. PTR mapped." + suffix + " 600"}},
		{"A of reverse name is NODATA", "1.0.64.100.in-addr.arpa.", mdns.TypeA, mdns.RcodeSuccess, nil},
		{"PTR unknown in CGNAT", "9.9.64.100.in-addr.arpa.", mdns.TypePTR, mdns.RcodeNameError, nil},
		{"PTR unknown in 127.100", "1.2.3.127.100.in-addr.arpa.", mdns.TypePTR, mdns.RcodeNameError, nil},
		{"PTR unknown v6 ULA", "f.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.e.1.a.c.5.1.1.a.7.d.f.ip6.arpa.", mdns.TypePTR, mdns.RcodeNameError, nil},
		{"reverse ENT is NODATA", "0.64.100.in-addr.arpa.", mdns.TypePTR, mdns.RcodeSuccess, nil},
		{"reverse zone apex is NODATA", "64.100.in-addr.arpa.", mdns.TypeSOA, mdns.RcodeSuccess, nil},
		{"PTR of extra record outside local zones", "5.0.0.10.in-addr.arpa.", mdns.TypePTR, mdns.RcodeSuccess, []string{"5.0.0.10.in-addr.arpa. PTR db.example.com. 600"}},
		{"extra record", "db.example.com.", mdns.TypeA, mdns.RcodeSuccess, []string{"db.example.com. A 10.0.0.5 600"}},
		{"extra record NODATA", "db.example.com.", mdns.TypeAAAA, mdns.RcodeSuccess, nil},
		{"host name normalised", "mixed.example.org.", mdns.TypeA, mdns.RcodeSuccess, []string{"mixed.example.org. A 10.9.9.9 600"}},
		{"duplicates removed", "multi." + suffix, mdns.TypeA, mdns.RcodeSuccess, []string{
			"multi." + suffix + " A 100.64.0.10 600", "multi." + suffix + " A 100.64.0.11 600"}},
		{"short name", "laptop.", mdns.TypeA, mdns.RcodeSuccess, []string{"laptop. A 100.64.0.1 600"}},
		{"short name AAAA", "LAPTOP.", mdns.TypeAAAA, mdns.RcodeSuccess, []string{"LAPTOP. AAAA fd7a:115c:a1e0::1 600"}},
		{"short name second search domain", "db.", mdns.TypeA, mdns.RcodeSuccess, []string{"db. A 10.0.0.5 600"}},
		{"short name first search domain wins", "web.", mdns.TypeA, mdns.RcodeSuccess, []string{"web. A 100.64.0.7 600"}},
		{"mDNS name from hosts", "printer.local.", mdns.TypeA, mdns.RcodeSuccess, []string{"printer.local. A 192.168.1.20 600"}},
		{"mDNS name unknown is NXDOMAIN", "other-printer.local.", mdns.TypeA, mdns.RcodeNameError, nil},
		{"host without addresses is NODATA", "other.corp.local.", mdns.TypeA, mdns.RcodeSuccess, nil},
		{"link-local reverse", "1.1.254.169.in-addr.arpa.", mdns.TypePTR, mdns.RcodeNameError, nil},
		{"onion", "foo.onion.", mdns.TypeA, mdns.RcodeNameError, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			for _, tcp := range []bool{false, true} {
				q := question(tt.qname, tt.qtype)
				resp := ask(t, s, q, tcp)
				if resp.Rcode != tt.rcode {
					t.Fatalf("rcode %s, want %s", mdns.RcodeToString[resp.Rcode], mdns.RcodeToString[tt.rcode])
				}
				if !resp.Authoritative {
					t.Errorf("AA not set")
				}
				if len(resp.Ns) != 0 || len(resp.Extra) != 0 {
					t.Errorf("unexpected authority/additional: %v %v", resp.Ns, resp.Extra)
				}
				if len(resp.Question) != 1 || resp.Question[0].Name != tt.qname {
					t.Errorf("question not echoed: %v", resp.Question)
				}
				got := rrStrings(resp.Answer)
				if !slices.Equal(got, tt.want) {
					t.Errorf("answers\n got %q\nwant %q", got, tt.want)
				}
			}
		})
	}
	st := s.Stats()
	if st.LocalAnswers != uint64(2*len(tests)) || st.Forwarded != 0 {
		t.Errorf("stats %+v", st)
	}
}

func TestNoUpstreamServfail(t *testing.T) {
	var lines []string
	s := NewServer(Options{Logf: func(f string, a ...any) { lines = append(lines, fmt.Sprintf(f, a...)) }})
	s.SetConfig(testConfig())
	for range 3 {
		resp := ask(t, s, question("example.org.", mdns.TypeA), false)
		if resp.Rcode != mdns.RcodeServerFailure {
			t.Fatalf("rcode %d", resp.Rcode)
		}
	}
	if len(lines) != 1 || !strings.Contains(lines[0], "no usable upstream") {
		t.Fatalf("log lines %q, want exactly one about missing upstreams", lines)
	}
}

func TestMalformed(t *testing.T) {
	s := newLocalServer(t)
	good, _ := question("laptop."+suffix, mdns.TypeA).Pack()

	if out := s.Handle(context.Background(), nil, false); out != nil {
		t.Errorf("empty input: %x", out)
	}
	if out := s.Handle(context.Background(), good[:11], false); out != nil {
		t.Errorf("short input: %x", out)
	}
	resp := slices.Clone(good)
	resp[2] |= 0x80
	if out := s.Handle(context.Background(), resp, false); out != nil {
		t.Errorf("response as input should be dropped: %x", out)
	}

	headerRcode := func(t *testing.T, in []byte, tcp bool, want int) {
		t.Helper()
		out := s.Handle(context.Background(), in, tcp)
		if len(out) < headerLen {
			t.Fatalf("got %x", out)
		}
		m := new(mdns.Msg)
		if err := m.Unpack(out); err != nil {
			t.Fatal(err)
		}
		if m.Rcode != want || m.Id != binary.BigEndian.Uint16(in) || !m.Response {
			t.Fatalf("got rcode %d id %d, want rcode %d id %d", m.Rcode, m.Id, want, binary.BigEndian.Uint16(in))
		}
	}
	t.Run("truncated question", func(t *testing.T) { headerRcode(t, good[:len(good)-3], false, mdns.RcodeFormatError) })
	t.Run("header only", func(t *testing.T) { headerRcode(t, good[:12], false, mdns.RcodeFormatError) })
	t.Run("garbage", func(t *testing.T) {
		g := append(slices.Clone(good[:12]), 0xff, 0xff, 0xff, 0xff, 0xc0, 0x0c)
		headerRcode(t, g, false, mdns.RcodeFormatError)
	})
	t.Run("two questions", func(t *testing.T) {
		m := question("a.", mdns.TypeA)
		m.Question = append(m.Question, m.Question[0])
		b, _ := m.Pack()
		headerRcode(t, b, false, mdns.RcodeFormatError)
	})
	t.Run("no question", func(t *testing.T) {
		m := question("a.", mdns.TypeA)
		m.Question = nil
		b, _ := m.Pack()
		headerRcode(t, b, false, mdns.RcodeFormatError)
	})
	t.Run("notify opcode", func(t *testing.T) {
		m := question("a.", mdns.TypeSOA)
		m.Opcode = mdns.OpcodeNotify
		b, _ := m.Pack()
		headerRcode(t, b, false, mdns.RcodeNotImplemented)
	})
	t.Run("oversized TCP", func(t *testing.T) {
		big := make([]byte, MaxQuerySize+1)
		copy(big, good)
		headerRcode(t, big, true, mdns.RcodeFormatError)
	})
	t.Run("two OPT", func(t *testing.T) {
		m := question("laptop."+suffix, mdns.TypeA)
		m.SetEdns0(1232, false)
		m.Extra = append(m.Extra, m.Extra[0])
		b, _ := m.Pack()
		headerRcode(t, b, false, mdns.RcodeFormatError)
	})
	t.Run("EDNS version 1", func(t *testing.T) {
		m := question("laptop."+suffix, mdns.TypeA)
		m.SetEdns0(1232, false)
		m.IsEdns0().SetVersion(1)
		r := ask(t, s, m, false)
		if r.Rcode != mdns.RcodeBadVers || r.IsEdns0() == nil || r.IsEdns0().Version() != 0 {
			t.Fatalf("got %v", r)
		}
	})
	t.Run("CHAOS class", func(t *testing.T) {
		m := question("version.bind.", mdns.TypeTXT)
		m.Question[0].Qclass = mdns.ClassCHAOS
		if r := ask(t, s, m, false); r.Rcode != mdns.RcodeRefused {
			t.Fatalf("rcode %d", r.Rcode)
		}
	})
	t.Run("AXFR", func(t *testing.T) {
		if r := ask(t, s, question(suffix, mdns.TypeAXFR), true); r.Rcode != mdns.RcodeNotImplemented {
			t.Fatalf("rcode %d", r.Rcode)
		}
	})
}

func TestLocalTruncation(t *testing.T) {
	var many []netip.Addr
	for i := range 200 {
		many = append(many, netip.AddrFrom4([4]byte{100, 64, byte(i / 250), byte(1 + i%250)}))
	}
	s := NewServer(Options{Logf: testLogf(t)})
	s.SetConfig(Config{Hosts: map[string][]netip.Addr{"big." + suffix: many}, LocalDomains: []string{suffix}})

	r := ask(t, s, question("big."+suffix, mdns.TypeA), false)
	if !r.Truncated || len(r.Answer) == 0 || len(r.Answer) >= 200 {
		t.Fatalf("plain UDP: TC=%v answers=%d", r.Truncated, len(r.Answer))
	}
	q := question("big."+suffix, mdns.TypeA)
	q.SetEdns0(1232, true)
	r = ask(t, s, q, false)
	if !r.Truncated || r.IsEdns0() == nil || !r.IsEdns0().Do() {
		t.Fatalf("EDNS UDP: TC=%v opt=%v", r.Truncated, r.IsEdns0())
	}
	q.IsEdns0().SetUDPSize(65000) // clamped to 4096
	r = ask(t, s, q, false)
	if r.Truncated || len(r.Answer) != 200 {
		t.Fatalf("EDNS 65000: TC=%v answers=%d", r.Truncated, len(r.Answer))
	}
	r = ask(t, s, question("big."+suffix, mdns.TypeA), true)
	if r.Truncated || len(r.Answer) != 200 {
		t.Fatalf("TCP: TC=%v answers=%d", r.Truncated, len(r.Answer))
	}
	if s.Stats().Truncated != 2 {
		t.Errorf("truncated count %d", s.Stats().Truncated)
	}
}

func TestSetConfigReplaces(t *testing.T) {
	s := newLocalServer(t)
	if r := ask(t, s, question("laptop."+suffix, mdns.TypeA), false); len(r.Answer) != 1 {
		t.Fatal("laptop missing")
	}
	s.SetConfig(Config{LocalDomains: []string{suffix}})
	if r := ask(t, s, question("laptop."+suffix, mdns.TypeA), false); r.Rcode != mdns.RcodeNameError {
		t.Fatalf("after swap rcode %d", r.Rcode)
	}
	if r := ask(t, s, question("laptop.", mdns.TypeA), false); r.Rcode != mdns.RcodeServerFailure {
		t.Fatalf("short name after swap rcode %d (no upstreams: SERVFAIL)", r.Rcode)
	}
}

func TestRouteWithoutResolversIsLocal(t *testing.T) {
	s := NewServer(Options{Logf: testLogf(t)})
	s.SetConfig(Config{
		Hosts:  map[string][]netip.Addr{"a.internal.": addrs("10.1.1.1")},
		Routes: map[string][]Upstream{"internal.": nil},
	})
	if r := ask(t, s, question("b.internal.", mdns.TypeA), false); r.Rcode != mdns.RcodeNameError {
		t.Fatalf("rcode %d", r.Rcode)
	}
	if r := ask(t, s, question("a.internal.", mdns.TypeA), false); len(r.Answer) != 1 {
		t.Fatalf("answers %v", r.Answer)
	}
}

func TestParentName(t *testing.T) {
	tests := []struct{ in, want string }{
		{"a.b.", "b."}, {"b.", "."}, {".", ""}, {`a\.b.c.`, "c."}, {`a\\.b.`, "b."}, {"", ""},
	}
	for _, tt := range tests {
		got, _ := parentName(tt.in)
		if got != tt.want {
			t.Errorf("parentName(%q) = %q, want %q", tt.in, got, tt.want)
		}
	}
}
