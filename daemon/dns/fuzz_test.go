package dns

import (
	"bytes"
	"context"
	"encoding/binary"
	"net"
	"net/netip"
	"os"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	mdns "github.com/miekg/dns"
)

// fakeConn is an in-memory upstream connection: each query written is
// passed to respond and the result (if any) becomes readable. UDP reads
// with nothing pending fail at once with a timeout instead of blocking, so
// fuzzing stays fast.
type fakeConn struct {
	tcp     bool
	respond func(query []byte, tcp bool) []byte

	mu      sync.Mutex
	pending [][]byte     // UDP
	in, out bytes.Buffer // TCP: written frames, readable stream
}

type timeoutErr struct{}

func (timeoutErr) Error() string   { return "fake timeout" }
func (timeoutErr) Timeout() bool   { return true }
func (timeoutErr) Temporary() bool { return true }

func (c *fakeConn) Write(b []byte) (int, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if !c.tcp {
		if r := c.respond(bytes.Clone(b), false); r != nil {
			c.pending = append(c.pending, r)
		}
		return len(b), nil
	}
	c.in.Write(b)
	for c.in.Len() >= 2 {
		l := int(binary.BigEndian.Uint16(c.in.Bytes()))
		if c.in.Len() < 2+l {
			break
		}
		frame := bytes.Clone(c.in.Next(2 + l)[2:])
		if r := c.respond(frame, true); r != nil {
			var lb [2]byte
			binary.BigEndian.PutUint16(lb[:], uint16(len(r)))
			c.out.Write(lb[:])
			c.out.Write(r)
		}
	}
	return len(b), nil
}

func (c *fakeConn) Read(b []byte) (int, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if !c.tcp {
		if len(c.pending) == 0 {
			return 0, timeoutErr{}
		}
		n := copy(b, c.pending[0])
		c.pending = c.pending[1:]
		return n, nil
	}
	if c.out.Len() == 0 {
		return 0, timeoutErr{}
	}
	return c.out.Read(b)
}

func (c *fakeConn) Close() error                     { return nil }
func (c *fakeConn) LocalAddr() net.Addr              { return &net.UDPAddr{} }
func (c *fakeConn) RemoteAddr() net.Addr             { return &net.UDPAddr{} }
func (c *fakeConn) SetDeadline(time.Time) error      { return nil }
func (c *fakeConn) SetReadDeadline(time.Time) error  { return nil }
func (c *fakeConn) SetWriteDeadline(time.Time) error { return nil }

func fakeDial(respond func([]byte, bool) []byte) func(context.Context, string, string) (net.Conn, error) {
	return func(_ context.Context, network, _ string) (net.Conn, error) {
		return &fakeConn{tcp: strings.HasPrefix(network, "tcp"), respond: respond}, nil
	}
}

// echoUpstream answers A queries with one record, truncates names starting
// with "big" over UDP, and answers everything else with NXDOMAIN.
func echoUpstream(query []byte, tcp bool) []byte {
	var q mdns.Msg
	if q.Unpack(query) != nil || len(q.Question) != 1 {
		return nil
	}
	r := new(mdns.Msg)
	r.SetReply(&q)
	name := q.Question[0].Name
	switch {
	case !tcp && strings.HasPrefix(strings.ToLower(name), "big"):
		r.Truncated = true
	case q.Question[0].Qtype == mdns.TypeA:
		for range 40 {
			r.Answer = append(r.Answer, &mdns.A{Hdr: mdns.RR_Header{Name: name, Rrtype: mdns.TypeA, Class: mdns.ClassINET, Ttl: 1}, A: net.IPv4(192, 0, 2, 1)})
		}
	default:
		r.Rcode = mdns.RcodeNameError
	}
	if o := q.IsEdns0(); o != nil {
		r.Extra = append(r.Extra, o)
	}
	b, err := r.Pack()
	if err != nil {
		return nil
	}
	return b
}

func fuzzServer(t testing.TB, respond func([]byte, bool) []byte) *Server {
	s := NewServer(Options{
		Dial:         fakeDial(respond),
		TryTimeout:   50 * time.Millisecond,
		QueryTimeout: 200 * time.Millisecond,
		SelfAddrs:    addrs("100.100.100.100"),
	})
	cfg := testConfig()
	cfg.Upstreams = ups(netip.MustParseAddrPort("192.0.2.53:53"))
	cfg.Routes = map[string][]Upstream{"corp.example.": ups(netip.MustParseAddrPort("192.0.2.54:53"))}
	s.SetConfig(cfg)
	return s
}

// checkResponse asserts the invariants every Handle result must meet.
func checkResponse(t *testing.T, query, out []byte, tcp bool) {
	if len(query) < headerLen || query[2]&0x80 != 0 {
		if out != nil {
			t.Fatalf("answered a non-query: %x", out)
		}
		return
	}
	if out == nil {
		t.Fatalf("no answer to %x", query)
	}
	var m mdns.Msg
	if err := m.Unpack(out); err != nil {
		t.Fatalf("response does not parse: %v\n%x", err, out)
	}
	if m.Id != binary.BigEndian.Uint16(query) || !m.Response {
		t.Fatalf("bad id/QR in %v", &m)
	}
	limit := maxTCPResponse
	if !tcp {
		limit = mdns.MinMsgSize
		var q mdns.Msg
		if q.Unpack(query) == nil {
			if o := q.IsEdns0(); o != nil {
				limit = min(max(int(o.UDPSize()), mdns.MinMsgSize), maxUDPResponse)
			}
		}
	}
	if len(out) > limit {
		t.Fatalf("response %d bytes over limit %d", len(out), limit)
	}
}

func FuzzHandle(f *testing.F) {
	for _, q := range seedQueries() {
		f.Add(q, false)
		f.Add(q, true)
	}
	s := fuzzServer(f, echoUpstream)
	f.Fuzz(func(t *testing.T, query []byte, tcp bool) {
		out := s.Handle(context.Background(), query, tcp)
		checkResponse(t, query, out, tcp)
	})
}

// FuzzUpstreamResponse feeds arbitrary bytes back as the upstream's answer
// (with the id fixed up so they get past the first check).
func FuzzUpstreamResponse(f *testing.F) {
	for _, q := range seedQueries() {
		if r := echoUpstream(q, false); r != nil {
			f.Add(r, false)
		}
		if r := echoUpstream(q, true); r != nil {
			f.Add(r, true)
		}
	}
	f.Add([]byte("\x00\x00\x81\x80\x00\x01\x00\x01\x00\x00\x00\x00"), false)
	f.Fuzz(func(t *testing.T, resp []byte, tcp bool) {
		s := fuzzServer(t, func(q []byte, _ bool) []byte {
			r := bytes.Clone(resp)
			if len(r) >= 2 && len(q) >= 2 {
				copy(r, q[:2])
			}
			return r
		})
		for _, qn := range []string{"big.example.", "fuzz.example."} {
			m := question(qn, mdns.TypeA)
			if tcp {
				m.SetEdns0(1232, true)
			}
			query, _ := m.Pack()
			out := s.Handle(context.Background(), query, tcp)
			checkResponse(t, query, out, tcp)
		}
	})
}

// seedQueries are the valid and broken queries the seed corpus is built
// from (see TestWriteSeedCorpus).
func seedQueries() [][]byte {
	var out [][]byte
	add := func(m *mdns.Msg) {
		b, err := m.Pack()
		if err == nil {
			out = append(out, b)
		}
	}
	m := question("laptop."+suffix, mdns.TypeA)
	m.Id = 0x1234
	add(m)
	m = question("LAPTOP."+suffix, mdns.TypeAAAA)
	m.Id = 0x1235
	add(m)
	m = question("1.0.64.100.in-addr.arpa.", mdns.TypePTR)
	m.Id = 0x1236
	add(m)
	m = question("laptop.", mdns.TypeANY)
	m.Id = 0x1237
	add(m)
	m = question("nope."+suffix, mdns.TypeMX)
	m.Id = 0x1238
	add(m)
	m = question("www.example.com.", mdns.TypeA)
	m.Id = 0x1239
	m.SetEdns0(1232, true)
	o := m.IsEdns0()
	o.Option = append(o.Option,
		&mdns.EDNS0_SUBNET{Code: mdns.EDNS0SUBNET, Family: 1, SourceNetmask: 24, Address: net.IPv4(192, 0, 2, 0).To4()},
		&mdns.EDNS0_COOKIE{Code: mdns.EDNS0COOKIE, Cookie: "0102030405060708"},
		&mdns.EDNS0_PADDING{Padding: make([]byte, 8)})
	add(m)
	m = question("big.example.", mdns.TypeA)
	m.Id = 0x123a
	add(m)
	m = question("x.corp.example.", mdns.TypeTXT)
	m.Id = 0x123b
	m.SetEdns0(4096, false)
	m.IsEdns0().SetVersion(1)
	add(m)
	m = question("printer.local.", mdns.TypeSRV)
	m.Id = 0x123c
	add(m)
	m = question("version.bind.", mdns.TypeTXT)
	m.Question[0].Qclass = mdns.ClassCHAOS
	m.Id = 0x123d
	add(m)
	out = append(out,
		[]byte{},
		[]byte("\x12\x34"),
		// header only, QDCOUNT 1
		[]byte("\x12\x34\x01\x00\x00\x01\x00\x00\x00\x00\x00\x00"),
		// pointer loop in name
		[]byte("\x12\x34\x01\x00\x00\x01\x00\x00\x00\x00\x00\x00\xc0\x0c\x00\x01\x00\x01"),
		// OPT with overlong option
		[]byte("\x12\x34\x01\x00\x00\x01\x00\x00\x00\x00\x00\x01\x00\x00\x01\x00\x01\x00\x00\x29\x10\x00\x00\x00\x00\x00\x00\x04\x00\x0a\x00\x08"),
		[]byte("\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff"),
	)
	return out
}

// TestWriteSeedCorpus regenerates testdata/fuzz/FuzzHandle when
// SKEIN_WRITE_FUZZ_SEEDS=1; otherwise it checks the corpus exists.
func TestWriteSeedCorpus(t *testing.T) {
	dir := "testdata/fuzz/FuzzHandle"
	if os.Getenv("SKEIN_WRITE_FUZZ_SEEDS") != "1" {
		ents, err := os.ReadDir(dir)
		if err != nil || len(ents) == 0 {
			t.Fatalf("seed corpus missing in %s: %v", dir, err)
		}
		return
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	for i, q := range seedQueries() {
		for _, tcp := range []bool{false, true} {
			var b strings.Builder
			b.WriteString("go test fuzz v1\n[]byte(")
			b.WriteString(strconv.Quote(string(q)))
			b.WriteString(")\nbool(")
			if tcp {
				b.WriteString("true")
			} else {
				b.WriteString("false")
			}
			b.WriteString(")\n")
			name := dir + "/seed-" + string(rune('a'+i))
			if tcp {
				name += "-tcp"
			}
			if err := os.WriteFile(name, []byte(b.String()), 0o644); err != nil {
				t.Fatal(err)
			}
		}
	}
}
