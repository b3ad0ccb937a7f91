package netcheck

import (
	"context"
	"errors"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/skeinvpn/skein/daemon/stun"
	"github.com/skeinvpn/skein/daemon/wire"
)

// fakeNet delivers our STUN requests to in-process servers and their answers back to the
// Checker, with the mapped address a NAT of the given kind would give: easy (one public
// address:port for every destination) or hard (a port per destination IP).
type fakeNet struct {
	t       *testing.T
	c       *Checker
	hard    bool
	noV6    bool
	drop    map[netip.Addr]bool // servers that never answer
	delay   time.Duration
	sent    atomic.Int32
	mu      sync.Mutex
	perDest map[netip.Addr]uint16
}

var (
	public4 = netip.MustParseAddr("203.0.113.7")
	public6 = netip.MustParseAddr("2001:db8::7")
)

func (f *fakeNet) send(b []byte, dst netip.AddrPort) error {
	f.sent.Add(1)
	if dst.Addr().Is6() && f.noV6 {
		return errors.New("network unreachable")
	}
	tx, err := stun.ParseBindingRequest(b)
	if err != nil {
		f.t.Errorf("bad request to %v: %v", dst, err)
		return nil
	}
	if f.drop[dst.Addr()] {
		return nil
	}
	f.mu.Lock()
	port := uint16(41641)
	if f.hard {
		if f.perDest == nil {
			f.perDest = map[netip.Addr]uint16{}
		}
		if f.perDest[dst.Addr()] == 0 {
			f.perDest[dst.Addr()] = uint16(50000 + len(f.perDest))
		}
		port = f.perDest[dst.Addr()]
	}
	f.mu.Unlock()
	mapped := netip.AddrPortFrom(public4, port)
	if dst.Addr().Is6() {
		mapped = netip.AddrPortFrom(public6, 41641)
	}
	resp := stun.Response(tx, mapped)
	go func() {
		time.Sleep(f.delay)
		f.c.Receive(resp, dst, time.Now())
	}()
	return nil
}

func derpMap(regions map[int][]string) *wire.DERPMap {
	dm := &wire.DERPMap{Regions: map[int]*wire.DERPRegion{}}
	for id, addrs := range regions {
		r := &wire.DERPRegion{RegionID: id, RegionCode: "r"}
		for _, a := range addrs {
			nd := &wire.DERPNode{Name: "n", RegionID: id, HostName: "derp.example"}
			if ip := netip.MustParseAddr(a); ip.Is4() {
				nd.IPv4 = a
				nd.IPv6 = "none"
			} else {
				nd.IPv4 = "none"
				nd.IPv6 = a
			}
			r.Nodes = append(r.Nodes, nd)
		}
		dm.Regions[id] = r
	}
	return dm
}

func newFake(t *testing.T) *fakeNet {
	f := &fakeNet{t: t, drop: map[netip.Addr]bool{}, delay: time.Millisecond}
	f.c = New(Options{Send: f.send, Logf: t.Logf, LookupIP: func(context.Context, string, string) ([]netip.Addr, error) {
		return nil, errors.New("no DNS in tests")
	}})
	return f
}

// Two STUN servers at different IPv4 addresses measure the NAT: the same mapping from both
// is an easy NAT, a port per destination a hard one; one server alone says nothing.
func TestMappingVariesByDestIP(t *testing.T) {
	two := derpMap(map[int][]string{1: {"192.0.2.1"}, 2: {"192.0.2.2"}})
	for _, tc := range []struct {
		name string
		hard bool
		dm   *wire.DERPMap
		want *bool
	}{
		{"easy", false, two, ptr(false)},
		{"hard", true, two, ptr(true)},
		{"one server", true, derpMap(map[int][]string{1: {"192.0.2.1"}}), nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := newFake(t)
			f.hard = tc.hard
			rep := f.c.Run(context.Background(), tc.dm, 0)
			if !rep.UDP || !rep.IPv4 || !rep.GlobalV4.IsValid() {
				t.Fatalf("report %+v: want UDP and a public IPv4", rep)
			}
			if (rep.MappingVaries == nil) != (tc.want == nil) || (tc.want != nil && *rep.MappingVaries != *tc.want) {
				t.Fatalf("MappingVaries = %v, want %v", show(rep.MappingVaries), show(tc.want))
			}
		})
	}
}

// A STUN-only region is measured (it is what makes the NAT type known with one relay) but is
// never the home, however fast.
func TestSTUNOnlyRegionMeasuredNotHome(t *testing.T) {
	f := newFake(t)
	dm := derpMap(map[int][]string{1: {"192.0.2.1"}, 2: {"192.0.2.2"}})
	dm.Regions[2].Nodes[0].STUNOnly = true
	f.hard = true
	rep := f.c.Run(context.Background(), dm, 0)
	if rep.PreferredDERP != 1 {
		t.Errorf("home %d, want 1 (region 2 only runs STUN)", rep.PreferredDERP)
	}
	if _, ok := rep.RegionLatency[2]; !ok || rep.MappingVaries == nil || !*rep.MappingVaries {
		t.Errorf("STUN-only region not measured: %+v", rep)
	}
}

// With an IPv6 server and a host that can send IPv6, the report has the v6 address, the
// region's v6 latency and IPv6 working; without v6 it says the host has none.
func TestIPv6(t *testing.T) {
	dm := derpMap(map[int][]string{1: {"192.0.2.1", "2001:db8::53"}})
	f := newFake(t)
	rep := f.c.Run(context.Background(), dm, 0)
	if !rep.IPv6 || !rep.OSHasIPv6 || rep.GlobalV6.Addr() != public6 || rep.RegionV6Latency[1] == 0 || rep.RegionV4Latency[1] == 0 {
		t.Fatalf("dual-stack report %+v", rep)
	}
	f = newFake(t)
	f.noV6 = true
	rep = f.c.Run(context.Background(), dm, 0)
	if rep.IPv6 || rep.OSHasIPv6 || !rep.IPv4 {
		t.Fatalf("v4-only report %+v", rep)
	}
}

// A second caller while a run is in flight gets that run's report: one set of requests, one
// result, no caller wiping another's answers.
func TestOneRunAtATime(t *testing.T) {
	f := newFake(t)
	f.delay = 50 * time.Millisecond
	dm := derpMap(map[int][]string{1: {"192.0.2.1"}, 2: {"192.0.2.2"}})
	var wg sync.WaitGroup
	reps := make([]Report, 5)
	for i := range reps {
		wg.Go(func() { reps[i] = f.c.Run(context.Background(), dm, 0) })
	}
	wg.Wait()
	for i, r := range reps {
		if !r.UDP || len(r.RegionLatency) != 2 || !r.At.Equal(reps[0].At) {
			t.Errorf("caller %d: report %+v, want the shared full one", i, r)
		}
	}
	if n := f.sent.Load(); n != 2 {
		t.Errorf("%d STUN requests for 5 concurrent callers, want 2 (one run)", n)
	}
	if f.c.Running() {
		t.Error("still running")
	}
}

// Nothing can leave (a host firewall): the run ends at once, without waiting for timeouts.
func TestNoUDPEndsAtOnce(t *testing.T) {
	c := New(Options{Send: func([]byte, netip.AddrPort) error { return errors.New("operation not permitted") }})
	start := time.Now()
	rep := c.Run(context.Background(), derpMap(map[int][]string{1: {"192.0.2.1"}}), 0)
	if rep.UDP || time.Since(start) > time.Second {
		t.Fatalf("report %+v after %v", rep, time.Since(start))
	}
	if rep.PreferredDERP != 1 {
		t.Errorf("home %d without measurements, want the lowest region 1", rep.PreferredDERP)
	}
}

// A quick run asks only the given region and replaces the public address in a copy of the
// last full report, which it leaves alone.
func TestQuick(t *testing.T) {
	f := newFake(t)
	dm := derpMap(map[int][]string{1: {"192.0.2.1"}, 2: {"192.0.2.2"}})
	full := f.c.Run(context.Background(), dm, 0)
	f.sent.Store(0)
	f.hard = true // now the mapping differs
	q := f.c.Quick(context.Background(), dm, 1)
	if f.sent.Load() != 1 {
		t.Errorf("quick run sent %d requests, want 1", f.sent.Load())
	}
	if !q.Quick || q.GlobalV4 == full.GlobalV4 || q.PreferredDERP != full.PreferredDERP || len(q.RegionLatency) != 2 {
		t.Errorf("quick report %+v (full %+v)", q, full)
	}
	if last := f.c.Last(); last.GlobalV4 != full.GlobalV4 {
		t.Errorf("quick run changed the last full report: %v", last.GlobalV4)
	}
}

// Replies from anyone but the server asked, and replies nobody asked for, are ignored.
func TestReceiveOnlyOurAnswers(t *testing.T) {
	c := New(Options{Send: func([]byte, netip.AddrPort) error { return nil }})
	tx := stun.NewTxID()
	if c.Receive(stun.Response(tx, netip.MustParseAddrPort("1.2.3.4:5")), netip.MustParseAddrPort("192.0.2.1:3478"), time.Now()) {
		t.Error("accepted an answer to nothing")
	}
}

// Real sockets: two STUN responders on loopback (IPv4 and, when the host has it, IPv6) answer
// a Checker that sends from one UDP socket.
func TestLoopbackServers(t *testing.T) {
	pc, err := net.ListenUDP("udp", &net.UDPAddr{})
	if err != nil {
		t.Fatal(err)
	}
	defer pc.Close()
	c := New(Options{Send: func(b []byte, dst netip.AddrPort) error {
		_, err := pc.WriteToUDPAddrPort(b, dst)
		return err
	}})
	go func() {
		buf := make([]byte, 1500)
		for {
			n, src, err := pc.ReadFromUDPAddrPort(buf)
			if err != nil {
				return
			}
			c.Receive(buf[:n], src, time.Now())
		}
	}()
	regions := map[int][]string{1: {serve(t, "udp4", "127.0.0.1")}}
	if s := serve(t, "udp6", "::1"); s != "" {
		regions[2] = []string{s}
	}
	dm := &wire.DERPMap{Regions: map[int]*wire.DERPRegion{}}
	for id, addrs := range regions {
		ap := netip.MustParseAddrPort(addrs[0])
		nd := &wire.DERPNode{Name: "n", RegionID: id, HostName: ap.Addr().String(), STUNPort: int(ap.Port())}
		dm.Regions[id] = &wire.DERPRegion{RegionID: id, Nodes: []*wire.DERPNode{nd}}
	}
	rep := c.Run(context.Background(), dm, 0)
	if !rep.UDP || !rep.GlobalV4.Addr().IsLoopback() {
		t.Fatalf("report %+v", rep)
	}
	if _, v6 := regions[2]; v6 && (!rep.IPv6 || !rep.GlobalV6.Addr().IsLoopback()) {
		t.Fatalf("IPv6 server answered nothing: %+v", rep)
	}
}

// serve runs a STUN responder on addr ("" when the family is missing) until the test ends.
func serve(t *testing.T, network, addr string) string {
	pc, err := net.ListenPacket(network, net.JoinHostPort(addr, "0"))
	if err != nil {
		t.Logf("no %s: %v", network, err)
		return ""
	}
	t.Cleanup(func() { pc.Close() })
	go func() {
		buf := make([]byte, 1500)
		for {
			n, src, err := pc.ReadFrom(buf)
			if err != nil {
				return
			}
			tx, err := stun.ParseBindingRequest(buf[:n])
			if err != nil {
				continue
			}
			ap := src.(*net.UDPAddr).AddrPort()
			pc.WriteTo(stun.Response(tx, ap), src)
		}
	}()
	return pc.LocalAddr().(*net.UDPAddr).AddrPort().String()
}

func TestPickHome(t *testing.T) {
	ms := time.Millisecond
	lat := map[int]time.Duration{1: 30 * ms, 2: 25 * ms, 3: 50 * ms}
	if got := PickHome(lat, 0, nil); got != 2 {
		t.Errorf("fresh pick %d, want 2", got)
	}
	dm := derpMap(map[int][]string{1: {"192.0.2.1"}, 2: {"192.0.2.2"}, 3: {"192.0.2.3"}})
	// Keep the old home when the new best is less than 10 ms better.
	if got := PickHome(lat, 1, dm); got != 1 {
		t.Errorf("hysteresis pick %d, want 1", got)
	}
	lat[2] = 5 * ms
	if got := PickHome(lat, 1, dm); got != 2 {
		t.Errorf("clearly better pick %d, want 2", got)
	}
	if got := PickHome(nil, 3, dm); got != 3 {
		t.Errorf("no data: %d, want old home 3", got)
	}
	if got := PickHome(nil, 0, dm); got != 1 {
		t.Errorf("no data, no home: %d, want lowest region 1", got)
	}
	dm.Regions[1].Avoid = true
	if got := PickHome(nil, 1, dm); got != 2 {
		t.Errorf("old home now avoided: %d, want 2", got)
	}
}

func ptr(b bool) *bool { return &b }

func show(b *bool) any {
	if b == nil {
		return "unknown"
	}
	return *b
}
