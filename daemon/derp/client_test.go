package derp

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"math/big"
	"net"
	"net/netip"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/skeinvpn/skein/daemon/key"
	"github.com/skeinvpn/skein/daemon/wire"
)

// recvLoop runs Recv in the background and hands out copies of what arrives.
type recvLoop struct {
	c    *Client
	msgs chan Message
	done chan error
}

func startRecv(t testing.TB, c *Client) *recvLoop {
	r := &recvLoop{c: c, msgs: make(chan Message, 1024), done: make(chan error, 1)}
	go func() {
		for {
			m, err := c.Recv()
			if err != nil {
				r.done <- err
				close(r.msgs)
				return
			}
			if rp, ok := m.(*ReceivedPacket); ok {
				m = &ReceivedPacket{Source: rp.Source, Data: bytes.Clone(rp.Data)}
			}
			r.msgs <- m
		}
	}()
	t.Cleanup(func() { c.Close() })
	return r
}

// next returns the next message that matches keep, skipping others.
func (r *recvLoop) next(t testing.TB, keep func(Message) bool) Message {
	t.Helper()
	timeout := time.After(10 * time.Second)
	for {
		select {
		case m, ok := <-r.msgs:
			if !ok {
				t.Fatalf("connection ended: %v", <-r.done)
			}
			if keep(m) {
				return m
			}
		case <-timeout:
			t.Fatal("timed out waiting for a message")
		}
	}
}

func isPacket(m Message) bool { _, ok := m.(*ReceivedPacket); return ok }

func dialTest(t testing.TB, s *testServer, priv key.NodePrivate) *Client {
	t.Helper()
	c, err := Dial(context.Background(), DialOptions{Node: s.node(), PrivateKey: priv, TLSConfig: s.tlsConfig(), Logf: t.Logf})
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func TestTwoClientsExchange(t *testing.T) {
	s := newTestServer(t)
	pa, pb := key.NewNode(), key.NewNode()
	a, b := dialTest(t, s, pa), dialTest(t, s, pb)
	if a.ServerPublicKey() != s.pub {
		t.Errorf("server key %v, want %v", a.ServerPublicKey(), s.pub)
	}
	if a.LocalAddr() == nil {
		t.Error("no local address")
	}
	ra, rb := startRecv(t, a), startRecv(t, b)
	for _, r := range []*recvLoop{ra, rb} {
		if _, ok := r.next(t, func(Message) bool { return true }).(ServerInfoMessage); !ok {
			t.Fatal("first message is not ServerInfoMessage")
		}
	}
	for i := range 20 {
		msg := fmt.Appendf(nil, "a->b %d", i)
		if err := a.Send(pb.Public(), msg); err != nil {
			t.Fatal(err)
		}
		got := rb.next(t, isPacket).(*ReceivedPacket)
		if got.Source != pa.Public() || !bytes.Equal(got.Data, msg) {
			t.Fatalf("b got %q from %v", got.Data, got.Source.ShortString())
		}
		msg = fmt.Appendf(nil, "b->a %d", i)
		if err := b.Send(pa.Public(), msg); err != nil {
			t.Fatal(err)
		}
		got = ra.next(t, isPacket).(*ReceivedPacket)
		if got.Source != pb.Public() || !bytes.Equal(got.Data, msg) {
			t.Fatalf("a got %q from %v", got.Data, got.Source.ShortString())
		}
	}
	// A maximum-size packet goes through; a larger one is refused locally.
	maxPkt := bytes.Repeat([]byte{0x5a}, MaxPacketSize)
	if err := a.Send(pb.Public(), maxPkt); err != nil {
		t.Fatal(err)
	}
	if got := rb.next(t, isPacket).(*ReceivedPacket); !bytes.Equal(got.Data, maxPkt) {
		t.Fatalf("max-size packet arrived with %d bytes", len(got.Data))
	}
	if err := a.Send(pb.Public(), make([]byte, MaxPacketSize+1)); err == nil {
		t.Error("oversized packet accepted")
	}

	s.mu.Lock()
	infos := append([]string(nil), s.infos...)
	s.mu.Unlock()
	for _, info := range infos {
		if info != `{"version":2,"CanAckPings":true}` {
			t.Errorf("client info JSON %s", info)
		}
	}

	// B leaves: A, which got packets from B, hears PeerGone(disconnected).
	b.Close()
	pg := ra.next(t, func(m Message) bool { _, ok := m.(PeerGone); return ok }).(PeerGone)
	if pg.Peer != pb.Public() || pg.Reason != PeerGoneDisconnected {
		t.Errorf("got %+v", pg)
	}
	if err := <-rb.done; !errors.Is(err, ErrClosed) {
		t.Errorf("Recv after Close: %v", err)
	}
	if err := b.Send(pa.Public(), []byte("x")); err == nil {
		t.Error("Send after Close succeeded")
	}
}

func TestPeerGoneNotHere(t *testing.T) {
	s := newTestServer(t)
	a := dialTest(t, s, key.NewNode())
	ra := startRecv(t, a)
	nobody := key.NewNode().Public()
	// Not disco-looking: silently dropped by the server. Then a disco-looking one.
	if err := a.Send(nobody, []byte("wireguard-ish")); err != nil {
		t.Fatal(err)
	}
	disco := append([]byte("TS\xf0\x9f\x92\xac"), make([]byte, 80)...)
	if err := a.Send(nobody, disco); err != nil {
		t.Fatal(err)
	}
	pg := ra.next(t, func(m Message) bool { _, ok := m.(PeerGone); return ok }).(PeerGone)
	if pg.Peer != nobody || pg.Reason != PeerGoneNotHere {
		t.Errorf("got %+v", pg)
	}
	if pg.Reason.String() != "not-here" {
		t.Errorf("reason string %q", pg.Reason)
	}
}

func TestServerFramesAndPings(t *testing.T) {
	s := newTestServer(t)
	priv := key.NewNode()
	a := dialTest(t, s, priv)
	ra := startRecv(t, a)
	ra.next(t, func(m Message) bool { _, ok := m.(ServerInfoMessage); return ok })

	// Server ping: answered with a Pong carrying the same bytes, then reported.
	ping := [8]byte{1, 2, 3, 4, 5, 6, 7, 8}
	if err := s.inject(priv.Public(), 0x12, ping[:]); err != nil {
		t.Fatal(err)
	}
	if m := ra.next(t, func(Message) bool { return true }); m != PingMessage(ping) {
		t.Errorf("got %#v, want ping", m)
	}
	select {
	case p := <-s.pongs:
		if p != ping {
			t.Errorf("pong %x, want %x", p, ping)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("no pong from client")
	}

	// Unknown frame types are skipped; the rest arrive in order.
	s.inject(priv.Public(), 0x7e, []byte("from the future"))
	s.inject(priv.Public(), 0x06, nil)
	s.inject(priv.Public(), 0x14, []byte("disk full"))
	s.inject(priv.Public(), 0x15, binary.BigEndian.AppendUint32(binary.BigEndian.AppendUint32(nil, 250), 30000))
	want := []Message{
		KeepAliveMessage{},
		HealthMessage{Problem: "disk full"},
		ServerRestartingMessage{ReconnectIn: 250 * time.Millisecond, TryFor: 30 * time.Second},
	}
	for _, w := range want {
		if m := ra.next(t, func(Message) bool { return true }); m != w {
			t.Errorf("got %#v, want %#v", m, w)
		}
	}

	// Client-initiated ping for latency.
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	rtt, err := a.Ping(ctx)
	if err != nil || rtt <= 0 {
		t.Errorf("Ping = %v, %v", rtt, err)
	}

	if err := a.NotePreferred(true); err != nil {
		t.Fatal(err)
	}
	if err := a.NotePreferred(false); err != nil {
		t.Fatal(err)
	}
	waitFor(t, func() bool {
		_, p := s.stats()
		return len(p[priv.Public()]) == 2
	})
	if _, p := s.stats(); !(p[priv.Public()][0] && !p[priv.Public()][1]) {
		t.Errorf("NotePreferred values %v", p[priv.Public()])
	}
}

func waitFor(t testing.TB, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatal("condition not met in 10 s")
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func TestConcurrentSend(t *testing.T) {
	s := newTestServer(t)
	pa, pb := key.NewNode(), key.NewNode()
	a, b := dialTest(t, s, pa), dialTest(t, s, pb)
	rb := startRecv(t, b)
	const senders, each = 8, 200
	var wg sync.WaitGroup
	for g := range senders {
		wg.Go(func() {
			pkt := make([]byte, 100+g*50)
			for i := range each {
				binary.BigEndian.PutUint32(pkt, uint32(g))
				binary.BigEndian.PutUint32(pkt[4:], uint32(i))
				for j := 8; j < len(pkt); j++ {
					pkt[j] = byte(g + i)
				}
				if err := a.Send(pb.Public(), pkt); err != nil {
					t.Error(err)
					return
				}
			}
		})
	}
	// Pings from another goroutine share the writer too.
	wg.Go(func() {
		for i := range 50 {
			a.SendPing([8]byte{byte(i)})
		}
	})
	next := make([]uint32, senders)
	for range senders * each {
		p := rb.next(t, isPacket).(*ReceivedPacket)
		g, i := binary.BigEndian.Uint32(p.Data), binary.BigEndian.Uint32(p.Data[4:])
		if int(g) >= senders || len(p.Data) != 100+int(g)*50 || i != next[g] {
			t.Fatalf("packet from sender %d seq %d len %d, want seq %d", g, i, len(p.Data), next[g])
		}
		for _, c := range p.Data[8:] {
			if c != byte(int(g)+int(i)) {
				t.Fatalf("corrupt packet from sender %d seq %d", g, i)
			}
		}
		next[g]++
	}
	wg.Wait()
}

// discardConn accepts writes and reports nothing else.
type discardConn struct{ net.Conn }

func (discardConn) Write(p []byte) (int, error)      { return len(p), nil }
func (discardConn) SetWriteDeadline(time.Time) error { return nil }
func (discardConn) Close() error                     { return nil }

func TestSendDoesNotAllocate(t *testing.T) {
	c := &Client{raw: discardConn{}, conn: discardConn{}}
	dst := testKey(4)
	pkt := make([]byte, 1280)
	c.Send(dst, pkt) // grow the buffer once
	if allocs := testing.AllocsPerRun(1000, func() {
		if err := c.Send(dst, pkt); err != nil {
			t.Fatal(err)
		}
	}); allocs > 0 {
		t.Errorf("%v allocations per Send", allocs)
	}
}

func TestRateLimit(t *testing.T) {
	c := &Client{raw: discardConn{}, conn: discardConn{}}
	c.setLimiter(ServerInfoMessage{TokenBucketBytesPerSecond: 1, TokenBucketBytesBurst: 2000})
	c.Send(testKey(1), make([]byte, 1000))
	if c.limiter.tokens > 1000 {
		t.Errorf("tokens %v after a send", c.limiter.tokens)
	}
	c.Send(testKey(1), make([]byte, 1000)) // dropped, not an error
	c.setLimiter(ServerInfoMessage{})
	if c.limiter != nil {
		t.Error("limiter kept")
	}
}

func TestDialErrors(t *testing.T) {
	s := newTestServer(t)
	s.admit = func(key.NodePublic) bool { return false }
	_, err := Dial(context.Background(), DialOptions{Node: s.node(), PrivateKey: key.NewNode(), TLSConfig: s.tlsConfig()})
	if err == nil || !strings.Contains(err.Error(), "server info") {
		t.Errorf("refused client: err = %v", err)
	}

	// No upgrade: the server says 426.
	h := newTestServerUnstarted(t)
	h.hs.Config.Handler = nil
	h.hs.StartTLS()
	t.Cleanup(h.close)
	_, err = Dial(context.Background(), DialOptions{Node: h.node(), PrivateKey: key.NewNode(), TLSConfig: h.tlsConfig()})
	if err == nil || !strings.Contains(err.Error(), "404") {
		t.Errorf("non-101: err = %v", err)
	}

	// Untrusted certificate.
	_, err = Dial(context.Background(), DialOptions{Node: s.node(), PrivateKey: key.NewNode(), TLSConfig: &tls.Config{RootCAs: x509.NewCertPool()}})
	if err == nil || !strings.Contains(err.Error(), "TLS") {
		t.Errorf("untrusted: err = %v", err)
	}

	n := s.node()
	n.STUNOnly = true
	if _, err := Dial(context.Background(), DialOptions{Node: n, PrivateKey: key.NewNode()}); err == nil {
		t.Error("STUN-only node dialled")
	}
	if _, err := Dial(context.Background(), DialOptions{Node: s.node()}); err == nil {
		t.Error("dial without key")
	}

	// A cancelled context ends Dial promptly.
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := Dial(ctx, DialOptions{Node: s.node(), PrivateKey: key.NewNode(), TLSConfig: s.tlsConfig()}); err == nil {
		t.Error("dial with cancelled context")
	}
}

func TestTLSVariants(t *testing.T) {
	s := newTestServer(t)
	sum := sha256.Sum256(s.hs.Certificate().Raw)
	for _, tt := range []struct {
		name   string
		mod    func(*wire.DERPNode)
		tlsCfg *tls.Config
		ok     bool
	}{
		// httptest's certificate is for 127.0.0.1 and example.com.
		{"CertName", func(n *wire.DERPNode) { n.CertName = "example.com" }, s.tlsConfig(), true},
		{"wrong CertName", func(n *wire.DERPNode) { n.CertName = "other.example" }, s.tlsConfig(), false},
		{"sha256 pin", func(n *wire.DERPNode) { n.CertName = "sha256-raw:" + hex.EncodeToString(sum[:]) }, nil, true},
		{"wrong pin", func(n *wire.DERPNode) { n.CertName = "sha256-raw:" + strings.Repeat("00", 32) }, nil, false},
		// Control's InsecureForTests is ignored: the certificate is still checked (hole 7).
		{"InsecureForTests ignored", func(n *wire.DERPNode) { n.InsecureForTests = true }, nil, false},
		{"InsecureForTests ignored with a wrong CertName", func(n *wire.DERPNode) {
			n.InsecureForTests, n.CertName = true, "other.example"
		}, s.tlsConfig(), false},
		{"system roots", func(n *wire.DERPNode) {}, nil, false},
	} {
		t.Run(tt.name, func(t *testing.T) {
			n := s.node()
			tt.mod(n)
			c, err := Dial(context.Background(), DialOptions{Node: n, PrivateKey: key.NewNode(), TLSConfig: tt.tlsCfg})
			if (err == nil) != tt.ok {
				t.Fatalf("err = %v, want ok=%v", err, tt.ok)
			}
			if c != nil {
				c.Close()
			}
		})
	}
}

func TestDialPrefersIPv4(t *testing.T) {
	s := newTestServer(t)
	base := s.node()
	var mu sync.Mutex
	var dialed []string
	dial := func(ctx context.Context, network, addr string) (net.Conn, error) {
		mu.Lock()
		dialed = append(dialed, network+" "+addr)
		mu.Unlock()
		if network == "tcp6" {
			return nil, errors.New("no IPv6 here")
		}
		var d net.Dialer
		return d.DialContext(ctx, network, addr)
	}
	port := fmt.Sprint(base.DERPPort)
	for _, tt := range []struct {
		name     string
		node     wire.DERPNode
		wantDial []string
		ok       bool
	}{
		{"IPv4 over name", wire.DERPNode{HostName: "derp.invalid", CertName: "127.0.0.1", IPv4: "127.0.0.1", IPv6: "2001:db8::1"},
			[]string{"tcp4 127.0.0.1:" + port}, true},
		{"IPv6 when IPv4 is none", wire.DERPNode{HostName: "127.0.0.1", IPv4: "none", IPv6: "2001:db8::1"},
			[]string{"tcp6 [2001:db8::1]:" + port}, false},
		{"name when no IPs", wire.DERPNode{HostName: "127.0.0.1"},
			[]string{"tcp 127.0.0.1:" + port}, true},
		{"name, IPv4 only", wire.DERPNode{HostName: "127.0.0.1", IPv6: "none"},
			[]string{"tcp4 127.0.0.1:" + port}, true},
	} {
		t.Run(tt.name, func(t *testing.T) {
			mu.Lock()
			dialed = nil
			mu.Unlock()
			n := tt.node
			n.DERPPort = base.DERPPort
			c, err := Dial(context.Background(), DialOptions{Node: &n, PrivateKey: key.NewNode(), TLSConfig: s.tlsConfig(), DialContext: dial})
			if (err == nil) != tt.ok {
				t.Fatalf("err = %v", err)
			}
			if c != nil {
				c.Close()
			}
			mu.Lock()
			defer mu.Unlock()
			if fmt.Sprint(dialed) != fmt.Sprint(tt.wantDial) {
				t.Errorf("dialed %v, want %v", dialed, tt.wantDial)
			}
		})
	}
}

func TestDialFallsBackToSecondAddress(t *testing.T) {
	s := newTestServer(t)
	n := s.node()
	n.HostName, n.IPv4, n.IPv6 = "127.0.0.1", "127.0.0.1", "::1"
	dial := func(ctx context.Context, network, addr string) (net.Conn, error) {
		if network == "tcp4" {
			<-ctx.Done() // a black hole
			return nil, ctx.Err()
		}
		// Reach the IPv4 listener whatever the address says.
		var d net.Dialer
		return d.DialContext(ctx, "tcp4", netip.AddrPortFrom(netip.MustParseAddr("127.0.0.1"), uint16(n.DERPPort)).String())
	}
	start := time.Now()
	c, err := Dial(context.Background(), DialOptions{Node: n, PrivateKey: key.NewNode(), TLSConfig: s.tlsConfig(), DialContext: dial})
	if err != nil {
		t.Fatal(err)
	}
	c.Close()
	if d := time.Since(start); d > addrDialTimeout {
		t.Errorf("second address used only after %v", d)
	}
}

// TestFastStart serves a TLS 1.3 chain with a derpkey meta certificate: the client must skip
// the HTTP response and take the server key from the certificate.
func TestFastStart(t *testing.T) {
	s := newTestServerUnstarted(t)
	caKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	caTmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "test CA"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign,
	}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	ca, _ := x509.ParseCertificate(caDER)
	leafKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	leafDER, err := x509.CreateCertificate(rand.Reader, &x509.Certificate{
		SerialNumber: big.NewInt(2), Subject: pkix.Name{CommonName: "derp"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IPAddresses: []net.IP{net.IPv4(127, 0, 0, 1)}, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}, ca, &leafKey.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	pub := s.pub.Raw()
	metaDER, err := x509.CreateCertificate(rand.Reader, &x509.Certificate{
		SerialNumber: big.NewInt(ProtocolVersion), Subject: pkix.Name{CommonName: "derpkey" + hex.EncodeToString(pub[:])},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
	}, ca, &leafKey.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	s.hs.TLS = &tls.Config{
		MinVersion:   tls.VersionTLS13,
		Certificates: []tls.Certificate{{Certificate: [][]byte{leafDER, metaDER}, PrivateKey: leafKey}},
	}
	s.hs.StartTLS()
	t.Cleanup(s.close)
	pool := x509.NewCertPool()
	pool.AddCert(ca)
	dial := func(priv key.NodePrivate) *Client {
		c, err := Dial(context.Background(), DialOptions{Node: s.node(), PrivateKey: priv, TLSConfig: &tls.Config{RootCAs: pool}})
		if err != nil {
			t.Fatal(err)
		}
		return c
	}
	pa, pb := key.NewNode(), key.NewNode()
	a, b := dial(pa), dial(pb)
	if s.fastStarts != 2 {
		t.Errorf("%d fast starts, want 2", s.fastStarts)
	}
	if a.ServerPublicKey() != s.pub {
		t.Error("wrong server key")
	}
	rb := startRecv(t, b)
	startRecv(t, a)
	if err := a.Send(pb.Public(), []byte("fast")); err != nil {
		t.Fatal(err)
	}
	if p := rb.next(t, isPacket).(*ReceivedPacket); string(p.Data) != "fast" || p.Source != pa.Public() {
		t.Errorf("got %q", p.Data)
	}
}

func TestParseMetaCert(t *testing.T) {
	k := testKey(5)
	r := k.Raw()
	cn := "derpkey" + hex.EncodeToString(r[:])
	for _, tt := range []struct {
		cn     string
		serial int64
		ok     bool
	}{
		{cn, 2, true},
		{cn, 255, true},
		{cn, 256, false},
		{cn, 0, false},
		{"derpkeyxyz", 2, false},
		{"example.com", 2, false},
	} {
		cert := &x509.Certificate{Subject: pkix.Name{CommonName: tt.cn}, SerialNumber: big.NewInt(tt.serial)}
		got, ok := parseMetaCert([]*x509.Certificate{cert})
		if ok != tt.ok || (ok && got != k) {
			t.Errorf("%s/%d: got %v %v", tt.cn, tt.serial, got, ok)
		}
	}
}
