package dns

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	mdns "github.com/miekg/dns"
)

func TestForwardRoutes(t *testing.T) {
	def := startUpstream(t, answerA("1.1.1.1"))
	ex := startUpstream(t, answerA("2.2.2.2"))
	corp := startUpstream(t, answerA("3.3.3.3"))
	inner := startUpstream(t, answerA("4.4.4.4"))
	s := NewServer(Options{Logf: testLogf(t)})
	cfg := testConfig()
	cfg.Upstreams = ups(def.addr)
	cfg.Routes = map[string][]Upstream{
		"example.":              ups(ex.addr),
		"corp.example.":         ups(corp.addr),
		"fwd." + suffix:         ups(inner.addr), // route inside a local domain: longest wins
		"corp.local.":           ups(corp.addr),  // a route covering .local overrides the mDNS rule
		"0.10.in-addr.arpa.":    ups(corp.addr),
		"nothing-here.example.": nil, // no resolvers: local
	}
	s.SetConfig(cfg)

	tests := []struct {
		qname string
		qtype uint16
		want  string // A answer, or "" for none
		rcode int
	}{
		{"www.other.org.", mdns.TypeA, "1.1.1.1", 0},
		{"WWW.Example.", mdns.TypeA, "2.2.2.2", 0},
		{"example.", mdns.TypeA, "2.2.2.2", 0},
		{"a.corp.example.", mdns.TypeA, "3.3.3.3", 0},
		{"corp.example.", mdns.TypeA, "3.3.3.3", 0},
		{"xcorp.example.", mdns.TypeA, "2.2.2.2", 0},
		{"x.fwd." + suffix, mdns.TypeA, "4.4.4.4", 0},
		{"dc1.corp.local.", mdns.TypeA, "3.3.3.3", 0},
		{"printer.local.", mdns.TypeA, "192.168.1.20", 0}, // from Hosts
		{"x.nothing-here.example.", mdns.TypeA, "", mdns.RcodeNameError},
		{"unknown-single.", mdns.TypeA, "1.1.1.1", 0}, // single label not in hosts: forwarded as asked
		{".", mdns.TypeNS, "1.1.1.1", 0},
	}
	for _, tt := range tests {
		t.Run(tt.qname, func(t *testing.T) {
			for _, tcp := range []bool{false, true} {
				r := ask(t, s, question(tt.qname, tt.qtype), tcp)
				if r.Rcode != tt.rcode {
					t.Fatalf("rcode %d want %d", r.Rcode, tt.rcode)
				}
				var got string
				if len(r.Answer) > 0 {
					got = r.Answer[0].(*mdns.A).A.String()
				}
				if got != tt.want {
					t.Fatalf("got %q want %q", got, tt.want)
				}
				if r.Question[0].Name != tt.qname {
					t.Fatalf("question %q", r.Question[0].Name)
				}
			}
		})
	}
	if n := corp.udpHits.Load(); n != 6 {
		t.Errorf("corp upstream saw %d queries, want 6", n)
	}
}

func TestUpstreamTruncatedRetriesTCP(t *testing.T) {
	var ips []string
	for i := range 60 {
		ips = append(ips, fmt.Sprintf("10.0.%d.%d", i/200, 1+i%200))
	}
	full := answerA(ips...)
	u := startUpstream(t, func(w mdns.ResponseWriter, r *mdns.Msg, tcp bool) {
		if !tcp {
			m := new(mdns.Msg)
			m.SetReply(r)
			m.Truncated = true
			w.WriteMsg(m)
			return
		}
		full(w, r, tcp)
	})
	s := NewServer(Options{Logf: testLogf(t)})
	s.SetConfig(Config{Upstreams: ups(u.addr)})

	// Plain UDP client: 512 bytes max, so a partial answer with TC.
	r := ask(t, s, question("big.example.", mdns.TypeA), false)
	if !r.Truncated || len(r.Answer) == 0 || len(r.Answer) >= 60 {
		t.Fatalf("UDP: TC=%v answers=%d", r.Truncated, len(r.Answer))
	}
	// EDNS client with room: the whole answer, no TC.
	q := question("big.example.", mdns.TypeA)
	q.SetEdns0(4096, false)
	r = ask(t, s, q, false)
	if r.Truncated || len(r.Answer) != 60 {
		t.Fatalf("EDNS UDP: TC=%v answers=%d", r.Truncated, len(r.Answer))
	}
	// TCP client.
	r = ask(t, s, question("big.example.", mdns.TypeA), true)
	if r.Truncated || len(r.Answer) != 60 {
		t.Fatalf("TCP: TC=%v answers=%d", r.Truncated, len(r.Answer))
	}
	st := s.Stats()
	if st.TCPRetries != 3 || u.tcpHits.Load() != 3 || st.Truncated != 1 {
		t.Fatalf("stats %+v tcpHits %d", st, u.tcpHits.Load())
	}
}

func TestUpstreamTruncatedTCPDown(t *testing.T) {
	// Upstream answers TC over UDP but has no TCP: the truncated answer is
	// passed on (TC set) instead of a SERVFAIL.
	u := startUpstream(t, func(w mdns.ResponseWriter, r *mdns.Msg, tcp bool) {
		m := new(mdns.Msg)
		m.SetReply(r)
		m.Truncated = true
		w.WriteMsg(m)
	})
	s := NewServer(Options{Logf: testLogf(t), Dial: func(ctx context.Context, network, addr string) (net.Conn, error) {
		if network == "tcp" {
			return nil, errors.New("no tcp in this test")
		}
		var d net.Dialer
		return d.DialContext(ctx, network, addr)
	}})
	s.SetConfig(Config{Upstreams: ups(u.addr)})
	r := ask(t, s, question("x.example.", mdns.TypeA), false)
	if r.Rcode != mdns.RcodeSuccess || !r.Truncated {
		t.Fatalf("got %v", r)
	}
}

func TestTimeoutServfail(t *testing.T) {
	bh := blackhole(t)
	s := NewServer(Options{Logf: testLogf(t), TryTimeout: 100 * time.Millisecond, QueryTimeout: 350 * time.Millisecond})
	s.SetConfig(Config{Upstreams: ups(bh, blackhole(t))})
	var r *mdns.Msg
	el := within(t, 1500*time.Millisecond, func() { r = ask(t, s, question("slow.example.", mdns.TypeA), false) })
	if r.Rcode != mdns.RcodeServerFailure {
		t.Fatalf("rcode %d", r.Rcode)
	}
	if el < 300*time.Millisecond {
		t.Errorf("gave up after %v, before the query timeout", el)
	}
	if n := s.Stats().UpstreamQueries; n < 3 {
		t.Errorf("only %d upstream attempts; expected retries across upstreams", n)
	}
}

func TestTimeoutDefaultCap(t *testing.T) {
	if testing.Short() {
		t.Skip("takes 5 s")
	}
	t.Parallel()
	s := NewServer(Options{Logf: testLogf(t)})
	s.SetConfig(Config{Upstreams: ups(blackhole(t))})
	var r *mdns.Msg
	within(t, DefaultQueryTimeout+time.Second, func() { r = ask(t, s, question("slow.example.", mdns.TypeA), true) })
	if r.Rcode != mdns.RcodeServerFailure {
		t.Fatalf("rcode %d", r.Rcode)
	}
}

func TestFailoverToSecondUpstream(t *testing.T) {
	good := startUpstream(t, answerA("5.5.5.5"))
	s := NewServer(Options{Logf: testLogf(t), TryTimeout: time.Second, QueryTimeout: 3 * time.Second})
	s.SetConfig(Config{Upstreams: ups(blackhole(t), good.addr)})
	r := ask(t, s, question("a.example.", mdns.TypeA), false)
	if len(r.Answer) != 1 {
		t.Fatalf("got %v", r)
	}
	// The working upstream is now preferred: no further try timeout.
	within(t, 500*time.Millisecond, func() {
		if r := ask(t, s, question("b.example.", mdns.TypeA), false); len(r.Answer) != 1 {
			t.Fatalf("got %v", r)
		}
	})
}

func TestServfailUpstreamSkipped(t *testing.T) {
	bad := startUpstream(t, func(w mdns.ResponseWriter, r *mdns.Msg, tcp bool) {
		m := new(mdns.Msg)
		m.SetRcode(r, mdns.RcodeServerFailure)
		w.WriteMsg(m)
	})
	good := startUpstream(t, answerA("6.6.6.6"))
	s := NewServer(Options{Logf: testLogf(t)})
	s.SetConfig(Config{Upstreams: ups(bad.addr, good.addr)})
	if r := ask(t, s, question("a.example.", mdns.TypeA), false); len(r.Answer) != 1 {
		t.Fatalf("got %v", r)
	}
	// Only SERVFAILing upstreams: their SERVFAIL is passed on.
	s.SetConfig(Config{Upstreams: ups(bad.addr)})
	if r := ask(t, s, question("a.example.", mdns.TypeA), false); r.Rcode != mdns.RcodeServerFailure {
		t.Fatalf("got %v", r)
	}
}

func TestNXDOMAINFromUpstream(t *testing.T) {
	u := startUpstream(t, func(w mdns.ResponseWriter, r *mdns.Msg, tcp bool) {
		m := new(mdns.Msg)
		m.SetRcode(r, mdns.RcodeNameError)
		m.Ns = []mdns.RR{&mdns.SOA{Hdr: mdns.RR_Header{Name: "example.", Rrtype: mdns.TypeSOA, Class: mdns.ClassINET, Ttl: 60},
			Ns: "ns.example.", Mbox: "h.example.", Serial: 1, Refresh: 2, Retry: 3, Expire: 4, Minttl: 5}}
		w.WriteMsg(m)
	})
	s := NewServer(Options{Logf: testLogf(t)})
	s.SetConfig(Config{Upstreams: ups(u.addr)})
	r := ask(t, s, question("nope.example.", mdns.TypeA), false)
	if r.Rcode != mdns.RcodeNameError || len(r.Ns) != 1 {
		t.Fatalf("got %v", r)
	}
}

// recordingDial fails every dial and counts them.
type recordingDial struct{ n atomic.Int64 }

func (d *recordingDial) dial(ctx context.Context, network, addr string) (net.Conn, error) {
	d.n.Add(1)
	return nil, errors.New("dial refused by test")
}

func TestLoopRefusal(t *testing.T) {
	var rd recordingDial
	var logs []string
	var mu sync.Mutex
	s := NewServer(Options{
		Logf: func(f string, a ...any) {
			mu.Lock()
			logs = append(logs, fmt.Sprintf(f, a...))
			mu.Unlock()
		},
		Dial:      rd.dial,
		SelfAddrs: addrs("100.100.100.100", "fd7a:115c:a1e0::53"),
	})
	s.SetConfig(Config{
		Upstreams: ups(netip.MustParseAddrPort("100.100.100.100:53"), netip.MustParseAddrPort("[::ffff:100.100.100.100]:5353")),
		Routes:    map[string][]Upstream{"corp.": ups(netip.MustParseAddrPort("[fd7a:115c:a1e0::53]:53"))},
	})
	for _, n := range []string{"a.example.", "b.corp."} {
		if r := ask(t, s, question(n, mdns.TypeA), false); r.Rcode != mdns.RcodeServerFailure {
			t.Fatalf("%s: rcode %d", n, r.Rcode)
		}
	}
	if rd.n.Load() != 0 {
		t.Fatalf("dialed a self address %d times", rd.n.Load())
	}

	// 127.0.0.53 is fine until told it loops.
	stub := ups(netip.MustParseAddrPort("127.0.0.53:53"))
	s.SetConfig(Config{Upstreams: stub})
	ask(t, s, question("c.example.", mdns.TypeA), false)
	if rd.n.Load() == 0 {
		t.Fatal("127.0.0.53 not used while not looping")
	}
	s.SetStubLoops(true)
	s.SetConfig(Config{Upstreams: stub})
	before := rd.n.Load()
	if r := ask(t, s, question("d.example.", mdns.TypeA), false); r.Rcode != mdns.RcodeServerFailure {
		t.Fatalf("rcode %d", r.Rcode)
	}
	if rd.n.Load() != before {
		t.Fatal("dialed 127.0.0.53 while it loops")
	}
	mu.Lock()
	defer mu.Unlock()
	refusals := 0
	for _, l := range logs {
		if strings.Contains(l, "forwarding loop") {
			refusals++
		}
	}
	if refusals != 4 {
		t.Errorf("got %d loop refusal log lines, want 4: %q", refusals, logs)
	}
}

// TestForwardingLoopBounded models an upstream that sends our queries back
// to us (a stub such as dnsmasq forwarding to 100.100.100.100 while being
// our upstream): the echo joins the in-flight query, so upstream traffic per
// client query stays bounded and the client gets SERVFAIL at the cap.
func TestForwardingLoopBounded(t *testing.T) {
	s := NewServer(Options{Logf: testLogf(t), TryTimeout: 100 * time.Millisecond, QueryTimeout: 400 * time.Millisecond})
	u := startUpstream(t, func(w mdns.ResponseWriter, r *mdns.Msg, tcp bool) {
		b, _ := r.Pack()
		out := s.Handle(context.Background(), b, tcp)
		if out != nil {
			w.Write(out)
		}
	})
	s.SetConfig(Config{Upstreams: ups(u.addr)})
	const clients = 10
	var wg sync.WaitGroup
	for i := range clients {
		wg.Add(1)
		go func() {
			defer wg.Done()
			r := ask(t, s, question(fmt.Sprintf("loop%d.example.", i), mdns.TypeA), false)
			if r.Rcode != mdns.RcodeServerFailure {
				t.Errorf("rcode %d", r.Rcode)
			}
		}()
	}
	within(t, 2*time.Second, wg.Wait)
	if hits := u.udpHits.Load(); hits > clients*maxRounds {
		t.Fatalf("upstream saw %d queries for %d client queries", hits, clients)
	}
	t.Logf("upstream queries for %d looping client queries: %d", clients, u.udpHits.Load())
}

func TestEDNSPassThrough(t *testing.T) {
	const reqCode, respCode = 65001, 65002
	var sawOpt atomic.Bool
	u := startUpstream(t, func(w mdns.ResponseWriter, r *mdns.Msg, tcp bool) {
		m := new(mdns.Msg)
		m.SetReply(r)
		if o := r.IsEdns0(); o != nil {
			var local, ecs bool
			for _, e := range o.Option {
				switch v := e.(type) {
				case *mdns.EDNS0_LOCAL:
					local = v.Code == reqCode && string(v.Data) == "hello"
				case *mdns.EDNS0_SUBNET:
					ecs = v.Address.String() == "192.0.2.0" && v.SourceNetmask == 24
				}
			}
			sawOpt.Store(local && ecs && o.Do() && o.UDPSize() == 1232)
			ro := &mdns.OPT{Hdr: mdns.RR_Header{Name: ".", Rrtype: mdns.TypeOPT}}
			ro.SetUDPSize(8192)
			ro.SetDo()
			ro.Option = append(ro.Option, &mdns.EDNS0_LOCAL{Code: respCode, Data: []byte("world")})
			m.Extra = append(m.Extra, ro)
		}
		m.Answer = append(m.Answer, &mdns.A{Hdr: mdns.RR_Header{Name: r.Question[0].Name, Rrtype: mdns.TypeA, Class: mdns.ClassINET, Ttl: 9}, A: net.IPv4(7, 7, 7, 7)})
		w.WriteMsg(m)
	})
	s := NewServer(Options{Logf: testLogf(t)})
	s.SetConfig(Config{Upstreams: ups(u.addr)})

	q := question("edns.example.", mdns.TypeA)
	q.SetEdns0(1232, true)
	o := q.IsEdns0()
	o.Option = append(o.Option,
		&mdns.EDNS0_LOCAL{Code: reqCode, Data: []byte("hello")},
		&mdns.EDNS0_SUBNET{Code: mdns.EDNS0SUBNET, Family: 1, SourceNetmask: 24, Address: net.IPv4(192, 0, 2, 0).To4()})
	r := ask(t, s, q, false)
	if !sawOpt.Load() {
		t.Fatal("upstream did not see the client's EDNS0 options")
	}
	ro := r.IsEdns0()
	if ro == nil {
		t.Fatal("no OPT in response")
	}
	var got bool
	for _, e := range ro.Option {
		if v, ok := e.(*mdns.EDNS0_LOCAL); ok && v.Code == respCode && string(v.Data) == "world" {
			got = true
		}
	}
	if !got || !ro.Do() || ro.UDPSize() != maxUDPResponse {
		t.Fatalf("response OPT %v", ro)
	}
	if len(r.Answer) != 1 {
		t.Fatalf("answers %v", r.Answer)
	}

	// A query without EDNS gets a response without OPT.
	r = ask(t, s, question("plain.example.", mdns.TypeA), false)
	if r.IsEdns0() != nil {
		t.Fatalf("unexpected OPT: %v", r)
	}
}

func TestInFlightBound(t *testing.T) {
	release := make(chan struct{})
	u := startUpstream(t, func(w mdns.ResponseWriter, r *mdns.Msg, tcp bool) {
		<-release
		answerA("8.8.8.8")(w, r, tcp)
	})
	defer close(release)
	s := NewServer(Options{Logf: testLogf(t), MaxInFlight: 4, TryTimeout: 2 * time.Second, QueryTimeout: 3 * time.Second})
	s.SetConfig(Config{Upstreams: ups(u.addr)})

	results := make(chan int, 10)
	for i := range 4 {
		go func() {
			results <- ask(t, s, question(fmt.Sprintf("held%d.example.", i), mdns.TypeA), false).Rcode
		}()
	}
	deadline := time.Now().Add(2 * time.Second)
	for s.Stats().InFlight != 4 && time.Now().Before(deadline) {
		time.Sleep(time.Millisecond)
	}
	if s.Stats().InFlight != 4 {
		t.Fatalf("in flight %d", s.Stats().InFlight)
	}
	within(t, time.Second, func() { // the held queries last 3 s
		for i := range 6 {
			if r := ask(t, s, question(fmt.Sprintf("extra%d.example.", i), mdns.TypeA), false); r.Rcode != mdns.RcodeServerFailure {
				t.Errorf("over the bound: rcode %d", r.Rcode)
			}
		}
	})
	// Local answers are not subject to the bound.
	s.SetConfig(Config{Upstreams: ups(u.addr), Hosts: map[string][]netip.Addr{"me.ts.": addrs("100.64.0.1")}})
	if r := ask(t, s, question("me.ts.", mdns.TypeA), false); len(r.Answer) != 1 {
		t.Fatalf("local answer under load: %v", r)
	}
	if st := s.Stats(); st.Overloaded != 6 {
		t.Fatalf("stats %+v", st)
	}
	for range 4 {
		release <- struct{}{}
	}
	for range 4 {
		if rc := <-results; rc != mdns.RcodeSuccess {
			t.Errorf("held query rcode %d", rc)
		}
	}
}

func TestCoalescing(t *testing.T) {
	release := make(chan struct{})
	u := startUpstream(t, func(w mdns.ResponseWriter, r *mdns.Msg, tcp bool) {
		<-release
		answerA("9.9.9.9")(w, r, tcp)
	})
	s := NewServer(Options{Logf: testLogf(t)})
	s.SetConfig(Config{Upstreams: ups(u.addr)})
	var wg sync.WaitGroup
	for i := range 5 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			// Different ids and spellings, same question.
			name := "same.example."
			if i%2 == 1 {
				name = "SAME.example."
			}
			r := ask(t, s, question(name, mdns.TypeA), false)
			if len(r.Answer) != 1 || r.Question[0].Name != name {
				t.Errorf("got %v", r)
			}
		}()
	}
	deadline := time.Now().Add(2 * time.Second)
	for s.Stats().InFlight != 5 && time.Now().Before(deadline) {
		time.Sleep(time.Millisecond)
	}
	close(release)
	wg.Wait()
	if n := u.udpHits.Load(); n != 1 {
		t.Fatalf("upstream saw %d queries, want 1", n)
	}
	if st := s.Stats(); st.Coalesced != 4 || st.Forwarded != 5 {
		t.Fatalf("stats %+v", st)
	}
}

// TestSpoofedResponsesIgnored sends wrong-id and wrong-question datagrams
// before the real answer.
func TestSpoofedResponsesIgnored(t *testing.T) {
	pc, err := net.ListenPacket("udp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer pc.Close()
	go func() {
		buf := make([]byte, 4096)
		for {
			n, from, err := pc.ReadFrom(buf)
			if err != nil {
				return
			}
			r := new(mdns.Msg)
			if r.Unpack(buf[:n]) != nil {
				continue
			}
			bad := new(mdns.Msg)
			bad.SetReply(r)
			bad.Id++
			bad.Answer = []mdns.RR{&mdns.A{Hdr: mdns.RR_Header{Name: r.Question[0].Name, Rrtype: mdns.TypeA, Class: mdns.ClassINET}, A: net.IPv4(6, 6, 6, 6)}}
			b, _ := bad.Pack()
			pc.WriteTo(b, from)
			bad.Id--
			bad.Question[0].Name = "evil.example."
			b, _ = bad.Pack()
			pc.WriteTo(b, from)
			pc.WriteTo([]byte("garbage"), from)
			good := new(mdns.Msg)
			good.SetReply(r)
			good.Answer = []mdns.RR{&mdns.A{Hdr: mdns.RR_Header{Name: r.Question[0].Name, Rrtype: mdns.TypeA, Class: mdns.ClassINET}, A: net.IPv4(1, 2, 3, 4)}}
			b, _ = good.Pack()
			pc.WriteTo(b, from)
		}
	}()
	s := NewServer(Options{Logf: testLogf(t)})
	s.SetConfig(Config{Upstreams: ups(netip.MustParseAddrPort(pc.LocalAddr().String()))})
	r := ask(t, s, question("target.example.", mdns.TypeA), false)
	if len(r.Answer) != 1 || r.Answer[0].(*mdns.A).A.String() != "1.2.3.4" {
		t.Fatalf("got %v", r)
	}
}

func TestConcurrentQueriesAndConfigSwaps(t *testing.T) {
	u := startUpstream(t, answerA("1.1.1.1"))
	s := NewServer(Options{Logf: testLogf(t)})
	cfg := testConfig()
	cfg.Upstreams = ups(u.addr)
	s.SetConfig(cfg)
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for i := 0; ctx.Err() == nil; i++ {
			c := testConfig()
			c.Upstreams = ups(u.addr)
			c.Hosts[fmt.Sprintf("h%d.%s", i, suffix)] = addrs("100.64.3.3")
			s.SetConfig(c)
			time.Sleep(100 * time.Microsecond)
		}
	}()
	names := []struct {
		n string
		t uint16
	}{
		{"laptop." + suffix, mdns.TypeA}, {"1.0.64.100.in-addr.arpa.", mdns.TypePTR}, {"laptop.", mdns.TypeAAAA},
		{"nope." + suffix, mdns.TypeA}, {"www.example.org.", mdns.TypeA}, {"x.local.", mdns.TypeA},
	}
	var qwg sync.WaitGroup
	for g := range 16 {
		qwg.Add(1)
		go func() {
			defer qwg.Done()
			for i := range 200 {
				nt := names[(g+i)%len(names)]
				q := question(nt.n, nt.t)
				if i%3 == 0 {
					q.SetEdns0(1232, i%2 == 0)
				}
				r := ask(t, s, q, i%4 == 0)
				if r.Rcode == mdns.RcodeServerFailure {
					t.Errorf("%s: SERVFAIL", nt.n)
				}
			}
		}()
	}
	qwg.Wait()
	cancel()
	wg.Wait()
	if st := s.Stats(); st.InFlight != 0 || st.Queries != 16*200 {
		t.Fatalf("stats %+v", st)
	}
}
