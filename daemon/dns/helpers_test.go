package dns

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	mdns "github.com/miekg/dns"
)

func mustAddr(s string) netip.Addr { return netip.MustParseAddr(s) }

func addrs(ss ...string) []netip.Addr {
	out := make([]netip.Addr, len(ss))
	for i, s := range ss {
		out[i] = mustAddr(s)
	}
	return out
}

// magicReverseZones lists the local reverse zones the daemon configures for
// MagicDNS.
func magicReverseZones() []string {
	var zs []string
	for i := 64; i <= 127; i++ {
		zs = append(zs, fmt.Sprintf("%d.100.in-addr.arpa.", i))
	}
	return append(zs, "0.e.1.a.c.5.1.1.a.7.d.f.ip6.arpa.")
}

func testLogf(t testing.TB) func(string, ...any) {
	var mu sync.Mutex
	done := false
	t.Cleanup(func() { mu.Lock(); done = true; mu.Unlock() })
	return func(f string, a ...any) {
		mu.Lock()
		defer mu.Unlock()
		if !done {
			t.Logf(f, a...)
		}
	}
}

// ask packs a query, passes it through Handle and unpacks the answer.
func ask(t testing.TB, s *Server, m *mdns.Msg, tcp bool) *mdns.Msg {
	t.Helper()
	b, err := m.Pack()
	if err != nil {
		t.Fatalf("pack: %v", err)
	}
	out := s.Handle(context.Background(), b, tcp)
	if out == nil {
		t.Fatalf("Handle returned nil for %v", m.Question)
	}
	if !tcp {
		limit := mdns.MinMsgSize
		if o := m.IsEdns0(); o != nil {
			limit = min(max(int(o.UDPSize()), mdns.MinMsgSize), maxUDPResponse)
		}
		if len(out) > limit {
			t.Fatalf("UDP response is %d bytes, limit %d", len(out), limit)
		}
	}
	resp := new(mdns.Msg)
	if err := resp.Unpack(out); err != nil {
		t.Fatalf("unpack response: %v", err)
	}
	if resp.Id != m.Id {
		t.Fatalf("response id %d, query id %d", resp.Id, m.Id)
	}
	if !resp.Response {
		t.Fatalf("QR not set")
	}
	return resp
}

func question(name string, qtype uint16) *mdns.Msg {
	m := new(mdns.Msg)
	m.SetQuestion(name, qtype)
	m.Id = mdns.Id()
	return m
}

// upstream is an in-test DNS server on 127.0.0.1, UDP and TCP on the same
// port, backed by miekg's server.
type upstream struct {
	addr    netip.AddrPort
	udpHits atomic.Int64
	tcpHits atomic.Int64
}

func startUpstream(t testing.TB, h func(w mdns.ResponseWriter, r *mdns.Msg, tcp bool)) *upstream {
	t.Helper()
	u := &upstream{}
	var pc net.PacketConn
	var ln net.Listener
	for range 20 {
		var err error
		pc, err = net.ListenPacket("udp4", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		ln, err = net.Listen("tcp4", pc.LocalAddr().String())
		if err == nil {
			break
		}
		pc.Close()
		pc, ln = nil, nil
	}
	if pc == nil {
		t.Fatal("no port for UDP+TCP upstream")
	}
	u.addr = netip.MustParseAddrPort(pc.LocalAddr().String())
	started := make(chan struct{}, 2)
	udp := &mdns.Server{PacketConn: pc, NotifyStartedFunc: func() { started <- struct{}{} },
		Handler: mdns.HandlerFunc(func(w mdns.ResponseWriter, r *mdns.Msg) { u.udpHits.Add(1); h(w, r, false) })}
	tcp := &mdns.Server{Listener: ln, NotifyStartedFunc: func() { started <- struct{}{} },
		Handler: mdns.HandlerFunc(func(w mdns.ResponseWriter, r *mdns.Msg) { u.tcpHits.Add(1); h(w, r, true) })}
	go udp.ActivateAndServe()
	go tcp.ActivateAndServe()
	<-started
	<-started
	t.Cleanup(func() {
		udp.Shutdown()
		tcp.Shutdown()
	})
	return u
}

// answerA replies with one A record per address for any question.
func answerA(ips ...string) func(w mdns.ResponseWriter, r *mdns.Msg, tcp bool) {
	return func(w mdns.ResponseWriter, r *mdns.Msg, tcp bool) {
		m := new(mdns.Msg)
		m.SetReply(r)
		for _, ip := range ips {
			m.Answer = append(m.Answer, &mdns.A{
				Hdr: mdns.RR_Header{Name: r.Question[0].Name, Rrtype: mdns.TypeA, Class: mdns.ClassINET, Ttl: 30},
				A:   net.ParseIP(ip),
			})
		}
		w.WriteMsg(m)
	}
}

// blackhole returns a UDP address that swallows everything.
func blackhole(t testing.TB) netip.AddrPort {
	pc, err := net.ListenPacket("udp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { pc.Close() })
	go func() {
		buf := make([]byte, 65535)
		for {
			if _, _, err := pc.ReadFrom(buf); err != nil {
				return
			}
		}
	}()
	return netip.MustParseAddrPort(pc.LocalAddr().String())
}

func ups(aps ...netip.AddrPort) []Upstream {
	out := make([]Upstream, len(aps))
	for i, a := range aps {
		out[i] = Upstream{Addr: a}
	}
	return out
}

func within(t testing.TB, d time.Duration, f func()) time.Duration {
	t.Helper()
	start := time.Now()
	f()
	el := time.Since(start)
	if el > d {
		t.Fatalf("took %v, want at most %v", el, d)
	}
	return el
}
