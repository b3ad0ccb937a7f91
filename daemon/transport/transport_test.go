package transport

import (
	"bytes"
	"context"
	"encoding/hex"
	"fmt"
	"net/netip"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"golang.zx2c4.com/wireguard/device"
	"golang.zx2c4.com/wireguard/tun/tuntest"

	"github.com/skeinvpn/skein/daemon/disco"
	"github.com/skeinvpn/skein/daemon/key"
	"github.com/skeinvpn/skein/daemon/wire"
)

// node is one WireGuard device on a channel TUN with our Conn as its Bind.
type testNode struct {
	node  key.NodePrivate
	disco key.DiscoPrivate
	conn  *Conn
	tun   *tuntest.ChannelTUN
	dev   *device.Device
	ip    netip.Addr
}

func newTestNode(t *testing.T, ip string) *testNode {
	t.Helper()
	n := &testNode{node: key.NewNode(), disco: key.NewDisco(), tun: tuntest.NewChannelTUN(), ip: netip.MustParseAddr(ip)}
	n.conn = New(Options{DiscoKey: n.disco, Logf: t.Logf})
	n.conn.SetPrivateKey(n.node)
	n.dev = device.NewDevice(n.tun.TUN(), n.conn, device.NewLogger(device.LogLevelError, "wg: "))
	n.dev.DisableSomeRoamingForBrokenMobileSemantics()
	r := n.node.Raw()
	if err := n.dev.IpcSet("private_key=" + hex.EncodeToString(r[:]) + "\nlisten_port=0\n"); err != nil {
		t.Fatal(err)
	}
	if err := n.dev.Up(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		n.dev.Close()
		n.conn.Shutdown()
	})
	return n
}

func (n *testNode) addPeer(t *testing.T, p *testNode, endpoints ...netip.AddrPort) {
	t.Helper()
	n.conn.SetPeers([]PeerConfig{{NodeKey: p.node.Public(), DiscoKey: p.disco.Public(), Endpoints: endpoints, Name: p.ip.String()}})
	n.addWGPeer(t, p)
}

// addWGPeer configures p in n's WireGuard device (the transport peer is set up already).
func (n *testNode) addWGPeer(t *testing.T, p *testNode) {
	t.Helper()
	r := p.node.Public().Raw()
	hk := hex.EncodeToString(r[:])
	cfg := fmt.Sprintf("public_key=%s\nendpoint=%s\nallowed_ip=%s/32\n", hk, hk, p.ip)
	if err := n.dev.IpcSet(cfg); err != nil {
		t.Fatal(err)
	}
}

func (n *testNode) loopback() netip.AddrPort {
	return netip.AddrPortFrom(netip.MustParseAddr("127.0.0.1"), n.conn.LocalPort())
}

// TestDirectOverLoopback: two devices that only know each other's UDP endpoints find the
// direct path with disco and carry WireGuard packets over it, both ways.
func TestDirectOverLoopback(t *testing.T) {
	a := newTestNode(t, "100.64.0.1")
	b := newTestNode(t, "100.64.0.2")
	a.addPeer(t, b, b.loopback())
	b.addPeer(t, a, a.loopback())

	// Disco finds the direct path.
	pingUntilDirect(t, a, b)

	for i := 0; i < 20; i++ {
		sendAndExpect(t, a, b)
		sendAndExpect(t, b, a)
	}
	pi, ok := a.conn.PeerPath(b.node.Public())
	if !ok || pi.Direct != b.loopback() || pi.TxBytes == 0 || pi.RxBytes == 0 {
		t.Fatalf("path info %+v", pi)
	}
}

// pingUntilDirect sends disco pings from one node to the other until one is answered over
// the direct path to the other's loopback address.
func pingUntilDirect(t *testing.T, from, to *testNode) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	var res PingResult
	for ctx.Err() == nil {
		res = from.conn.Ping(ctx, to.node.Public())
		if res.Err == "" && res.Endpoint.IsValid() {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	if res.Endpoint != to.loopback() {
		t.Fatalf("ping result %+v, want direct via %v", res, to.loopback())
	}
}

func sendAndExpect(t *testing.T, from, to *testNode) {
	t.Helper()
	pkt := tuntest.Ping(to.ip, from.ip)
	select {
	case from.tun.Outbound <- pkt:
	case <-time.After(5 * time.Second):
		t.Fatal("TUN outbound stuck")
	}
	select {
	case got := <-to.tun.Inbound:
		if !bytes.Equal(got, pkt) {
			t.Fatalf("got a different packet")
		}
	case <-time.After(10 * time.Second):
		t.Fatalf("packet %v -> %v not delivered", from.ip, to.ip)
	}
}

// TestUnknownSourceDropped: WireGuard packets from an address no disco exchange verified are
// not handed to wireguard-go.
func TestUnknownSourceDropped(t *testing.T) {
	a := newTestNode(t, "100.64.0.1")
	b := newTestNode(t, "100.64.0.2")
	a.addPeer(t, b) // a knows b but no endpoint: nothing is verified
	pi, _ := a.conn.PeerPath(b.node.Public())
	if pi.Direct.IsValid() {
		t.Fatal("direct path without disco")
	}
	res := a.conn.Ping(context.Background(), b.node.Public())
	if res.Err == "" {
		t.Fatalf("ping with no path answered: %+v", res)
	}
}

// TestCallMeMaybeIsNotAnsweredWithOne: a CallMeMaybe makes us ping the listed endpoints at
// once, but never answer with a CallMeMaybe of our own: two peers would bounce them forever.
func TestCallMeMaybeIsNotAnsweredWithOne(t *testing.T) {
	a := newTestNode(t, "100.64.0.1")
	b := newTestNode(t, "100.64.0.2")
	a.conn.SetDERPMap(testDERPMap(1))
	a.conn.SetPeers([]PeerConfig{{NodeKey: b.node.Public(), DiscoKey: b.disco.Public(), HomeDERP: 1, Endpoints: []netip.AddrPort{b.loopback()}}})
	mine := a.loopback()
	a.conn.mu.Lock()
	a.conn.myEPs = []Endpoint{{Addr: mine, Type: 1}} // something to offer in a CallMeMaybe
	a.conn.mu.Unlock()
	var sent []disco.Message
	var mu sync.Mutex
	a.conn.testHookDiscoDERP = func(region int, m disco.Message) {
		mu.Lock()
		sent = append(sent, m)
		mu.Unlock()
	}
	cmm := &disco.CallMeMaybe{MyNumber: []netip.AddrPort{b.loopback()}}
	pkt := disco.Seal(nil, b.disco.Public(), disco.Precompute(a.disco.Public(), b.disco), cmm)
	for i := 0; i < 3; i++ {
		a.conn.handleDisco(pkt, netip.AddrPort{}, 1, b.node.Public(), time.Now())
	}
	mu.Lock()
	defer mu.Unlock()
	for _, m := range sent {
		if _, ok := m.(*disco.CallMeMaybe); ok {
			t.Fatalf("answered a CallMeMaybe with a CallMeMaybe")
		}
	}
	// The listed endpoint was pinged (a ping is outstanding for it).
	pe := a.conn.peerByKey(b.node.Public())
	pe.mu.Lock()
	defer pe.mu.Unlock()
	pinged := false
	for _, p := range pe.pings {
		if p.to == b.loopback() {
			pinged = true
		}
	}
	if !pinged {
		t.Fatal("CallMeMaybe endpoint not pinged")
	}
}

// A DERP map gives a node without a home one at once (before any netcheck), never a region
// that only runs STUN or that control asks nodes to avoid, and control is told.
func TestProvisionalHomeOnDERPMap(t *testing.T) {
	var told sync.WaitGroup
	told.Add(1)
	var once sync.Once
	c := New(Options{DiscoKey: key.NewDisco(), Logf: t.Logf, OnEndpointsChanged: func() { once.Do(told.Done) }})
	defer c.Shutdown()
	c.SetPrivateKey(key.NewNode())
	dm := testDERPMap(7, 9, 12)
	dm.Regions[3] = &wire.DERPRegion{RegionID: 3, Nodes: []*wire.DERPNode{{Name: "s", RegionID: 3, HostName: "127.0.0.1", STUNOnly: true}}}
	dm.Regions[5] = &wire.DERPRegion{RegionID: 5, Avoid: true, Nodes: []*wire.DERPNode{{Name: "a", RegionID: 5, HostName: "127.0.0.1"}}}
	dm.Regions[6] = &wire.DERPRegion{RegionID: 6, NoMeasureNoHome: true, Nodes: []*wire.DERPNode{{Name: "m", RegionID: 6, HostName: "127.0.0.1"}}}
	c.SetDERPMap(dm)
	if h := c.HomeDERP(); h != 7 {
		t.Fatalf("home %d right after the DERP map, want 7 (lowest region with a relay)", h)
	}
	told.Wait()
	// A later map keeps the home it has.
	c.SetDERPMap(testDERPMap(1, 7))
	if h := c.HomeDERP(); h != 7 {
		t.Errorf("home %d after a new map, want 7 kept", h)
	}
}

// A direct path that stops answering while traffic flows is probed and, when the probe goes
// unanswered, stops being trusted within a second: traffic goes over DERP (and the old
// address) while discovery looks for another path.
func TestQuietPathFallsBackWithinASecond(t *testing.T) {
	a := newTestNode(t, "100.64.0.1")
	b := newTestNode(t, "100.64.0.2")
	a.conn.SetDERPMap(testDERPMap(1))
	a.conn.SetPeers([]PeerConfig{{NodeKey: b.node.Public(), DiscoKey: b.disco.Public(), HomeDERP: 1, Endpoints: []netip.AddrPort{b.loopback()}}})
	a.addWGPeer(t, b)
	b.addPeer(t, a, a.loopback())
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	// Direct, with a latency measured after start-up (the first pong can take long).
	for ctx.Err() == nil {
		if r := a.conn.Ping(ctx, b.node.Public()); r.Endpoint.IsValid() && r.Latency < 20*time.Millisecond {
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	sendAndExpect(t, a, b)
	sendAndExpect(t, b, a)
	// From now on nothing of b reaches a.
	var dropping atomic.Bool
	a.conn.testHookDrop = func(src netip.AddrPort) bool { return dropping.Load() && src == b.loopback() }
	dropping.Store(true)
	cut := time.Now()
	var fellBack time.Duration
	for time.Since(cut) < 3*time.Second {
		select {
		case a.tun.Outbound <- tuntest.Ping(b.ip, a.ip):
		default:
		}
		if pi, _ := a.conn.PeerPath(b.node.Public()); !pi.Direct.IsValid() && pi.DERPRegion == 1 {
			fellBack = time.Since(cut)
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	if fellBack == 0 || fellBack > time.Second {
		t.Fatalf("still direct %v after the path went quiet (fell back after %v)", time.Since(cut), fellBack)
	}
	t.Logf("relayed %v after the direct path went quiet", fellBack.Round(time.Millisecond))
	// The path comes back: so does direct.
	dropping.Store(false)
	deadline := time.Now().Add(10 * time.Second)
	for {
		a.tun.Outbound <- tuntest.Ping(b.ip, a.ip)
		if pi, _ := a.conn.PeerPath(b.node.Public()); pi.Direct.IsValid() {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("direct path not found again")
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// fakeMapper is a PortMapper whose mapping the test sets.
type fakeMapper struct {
	mu   sync.Mutex
	port uint16
	ext  netip.AddrPort
}

func (f *fakeMapper) SetLocalPort(p uint16) { f.mu.Lock(); f.port = p; f.mu.Unlock() }
func (f *fakeMapper) Mapping() (netip.AddrPort, bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.ext, f.ext.IsValid()
}
func (f *fakeMapper) Probe(context.Context) (PortMapProbe, error) {
	return PortMapProbe{UPnP: true, PMP: true}, nil
}
func (f *fakeMapper) Close() error { return nil }

// A port mapping is advertised first (type 3) as soon as the mapper says it changed, control is
// told, and a router that claims a non-public external address is not believed.
func TestPortMappedEndpointFirst(t *testing.T) {
	fm := &fakeMapper{}
	told := make(chan struct{}, 10)
	c := New(Options{DiscoKey: key.NewDisco(), Logf: t.Logf, PortMapper: fm, OnEndpointsChanged: func() { told <- struct{}{} }})
	defer c.Shutdown()
	if _, _, err := c.Open(0); err != nil {
		t.Fatal(err)
	}
	if fm.port == 0 || fm.port != c.LocalPort() {
		t.Fatalf("mapper asked for port %d, socket on %d", fm.port, c.LocalPort())
	}
	for _, lie := range []string{"0.0.0.0:41641", "192.168.1.1:41641", "100.64.0.9:41641", "127.0.0.1:41641"} {
		fm.mu.Lock()
		fm.ext = netip.MustParseAddrPort(lie)
		fm.mu.Unlock()
		c.PortMapChanged()
		for _, e := range c.Endpoints() {
			if e.Type == EndpointPortmapped {
				t.Fatalf("advertised %v from a lying router", e.Addr)
			}
		}
	}
	ext := netip.MustParseAddrPort("203.0.113.9:61000")
	fm.mu.Lock()
	fm.ext = ext
	fm.mu.Unlock()
	for len(told) > 0 {
		<-told
	}
	c.PortMapChanged()
	eps := c.Endpoints()
	if len(eps) == 0 || eps[0] != (Endpoint{Addr: ext, Type: EndpointPortmapped}) {
		t.Fatalf("endpoints %v, want %v first", eps, ext)
	}
	select {
	case <-told:
	case <-time.After(time.Second):
		t.Fatal("control not told of the mapping")
	}
	if ni := c.NetInfo(); !ni.HavePortMap {
		t.Error("NetInfo does not say we have a port mapping")
	}
}
