package lab_test

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"os"
	"sync"
	"testing"
	"time"

	"github.com/skeinvpn/skein/daemon/control"
	"github.com/skeinvpn/skein/daemon/derp"
	"github.com/skeinvpn/skein/daemon/key"
	"github.com/skeinvpn/skein/daemon/wire"
	"github.com/skeinvpn/skein/internal/lab"
)

// TestDERPAgainstHeadscale: two derp.Clients in one lab host exchange packets both ways
// through Headscale's embedded DERP (region 999), get PeerGone for a disco-looking packet to
// an unknown key and when the other side leaves, and ping the server. Then two
// RegionClients exchange packets, survive a Headscale restart and exchange again.
func TestDERPAgainstHeadscale(t *testing.T) {
	t.Parallel()
	l := lab.New(t)
	c, err := l.StartControl()
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.CreateUser("derp"); err != nil {
		t.Fatal(err)
	}
	authKey, err := c.PreAuthKey("derp", true, false)
	if err != nil {
		t.Fatal(err)
	}
	h, err := l.AddHost("derp-h")
	if err != nil {
		t.Fatal(err)
	}
	ca, err := os.ReadFile(l.CACertFile())
	if err != nil {
		t.Fatal(err)
	}
	roots := x509.NewCertPool()
	if !roots.AppendCertsFromPEM(ca) {
		t.Fatal("no CA certificate in", l.CACertFile())
	}
	tlsConf := &tls.Config{RootCAs: roots}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()

	// The embedded DERP runs with verify_clients: only registered node keys get in.
	register := func(name string) key.NodePrivate {
		t.Helper()
		cc, err := control.New(control.Options{ServerURL: c.URL(), MachineKey: key.NewMachine(), TLSConfig: tlsConf, DialContext: h.Dial, Logf: t.Logf})
		if err != nil {
			t.Fatal(err)
		}
		defer cc.Close()
		nk := key.NewNode()
		resp, err := cc.Register(ctx, &wire.RegisterRequest{
			NodeKey:  nk.Public(),
			Auth:     &wire.AuthInfo{AuthKey: authKey},
			Hostinfo: &wire.Hostinfo{Hostname: name, OS: "linux"},
		})
		if err != nil {
			t.Fatal(err)
		}
		if !resp.MachineAuthorized {
			t.Fatalf("register %s: not authorized: %+v", name, resp)
		}
		return nk
	}
	pa, pb := register("derp-a"), register("derp-b")
	pc, pd := register("derp-c"), register("derp-d")

	node := &wire.DERPNode{Name: "999", RegionID: 999, HostName: c.Addr().String(), IPv4: c.Addr().String(), DERPPort: 443}
	dial := func(priv key.NodePrivate) *derp.Client {
		t.Helper()
		dc, err := derp.Dial(ctx, derp.DialOptions{Node: node, PrivateKey: priv, TLSConfig: tlsConf, DialContext: h.Dial, Logf: t.Logf})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { dc.Close() })
		return dc
	}

	// An unregistered key is refused.
	if dc, err := derp.Dial(ctx, derp.DialOptions{Node: node, PrivateKey: key.NewNode(), TLSConfig: tlsConf, DialContext: h.Dial}); err == nil {
		dc.Close()
		t.Error("unregistered node key admitted")
	} else {
		t.Logf("unregistered key: %v", err)
	}

	a, b := dial(pa), dial(pb)
	ma, mb := recvAll(a), recvAll(b)
	if err := a.NotePreferred(true); err != nil {
		t.Fatal(err)
	}
	for i := range 5 {
		ab := fmt.Appendf(nil, "a->b %d", i)
		if err := a.Send(pb.Public(), ab); err != nil {
			t.Fatal(err)
		}
		waitPacket(t, mb, pa.Public(), ab)
		ba := fmt.Appendf(nil, "b->a %d", i)
		if err := b.Send(pa.Public(), ba); err != nil {
			t.Fatal(err)
		}
		waitPacket(t, ma, pb.Public(), ba)
	}
	big := bytes.Repeat([]byte{0xa5}, 60000)
	if err := a.Send(pb.Public(), big); err != nil {
		t.Fatal(err)
	}
	waitPacket(t, mb, pa.Public(), big)

	pctx, pcancel := context.WithTimeout(ctx, 10*time.Second)
	rtt, err := a.Ping(pctx)
	pcancel()
	if err != nil {
		t.Fatalf("ping: %v", err)
	}
	t.Logf("DERP ping rtt %v", rtt)

	// Only disco-looking packets to an unknown key earn a PeerGone(not here).
	nobody := key.NewNode().Public()
	if err := a.Send(nobody, []byte("not disco")); err != nil {
		t.Fatal(err)
	}
	disco := append([]byte("TS\xf0\x9f\x92\xac"), make([]byte, 100)...)
	if err := a.Send(nobody, disco); err != nil {
		t.Fatal(err)
	}
	pg := waitPeerGone(t, ma)
	if pg.Peer != nobody || pg.Reason != derp.PeerGoneNotHere {
		t.Errorf("PeerGone %+v, want %v not-here", pg, nobody.ShortString())
	}

	// B, which sent to A, leaves: A hears PeerGone(disconnected).
	b.Close()
	pg = waitPeerGone(t, ma)
	if pg.Peer != pb.Public() || pg.Reason != derp.PeerGoneDisconnected {
		t.Errorf("PeerGone %+v, want %v disconnected", pg, pb.Public().ShortString())
	}

	// Reconnecting region clients.
	region := &wire.DERPRegion{RegionID: 999, RegionCode: "headscale", Nodes: []*wire.DERPNode{node}}
	var mc, md packetLog
	rcc := derp.NewRegionClient(derp.RegionOptions{Region: region, PrivateKey: pc, TLSConfig: tlsConf,
		DialContext: h.Dial, Preferred: true, Logf: t.Logf, OnMessage: mc.onMessage})
	defer rcc.Close()
	rcd := derp.NewRegionClient(derp.RegionOptions{Region: region, PrivateKey: pd, TLSConfig: tlsConf,
		DialContext: h.Dial, Logf: t.Logf, OnMessage: md.onMessage})
	defer rcd.Close()
	exchange := func(round string) {
		t.Helper()
		cd, dc := "c->d "+round, "d->c "+round
		// Retry: right after a (re)connect the peer may not be registered on the server yet.
		lab.Eventually(t, 30*time.Second, func() error {
			if !rcc.Connected() || !rcd.Connected() {
				return fmt.Errorf("connected: c %v, d %v", rcc.Connected(), rcd.Connected())
			}
			rcc.Send(pd.Public(), []byte(cd))
			rcd.Send(pc.Public(), []byte(dc))
			time.Sleep(50 * time.Millisecond)
			if !md.has(pc.Public(), cd) || !mc.has(pd.Public(), dc) {
				return fmt.Errorf("round %s: packets not delivered", round)
			}
			return nil
		})
	}
	exchange("1")
	if err := c.Stop(); err != nil {
		t.Fatal(err)
	}
	lab.Eventually(t, 15*time.Second, func() error {
		if rcc.Connected() || rcd.Connected() {
			return fmt.Errorf("still connected with Headscale stopped")
		}
		return nil
	})
	if err := rcc.Send(pd.Public(), []byte("dropped")); err != derp.ErrNotConnected {
		t.Errorf("Send while disconnected: %v", err)
	}
	if err := c.Start(); err != nil {
		t.Fatal(err)
	}
	exchange("2")
}

// packetLog records packets a RegionClient delivers.
type packetLog struct {
	mu   sync.Mutex
	pkts []derp.ReceivedPacket
}

func (p *packetLog) onMessage(m derp.Message) {
	if rp, ok := m.(*derp.ReceivedPacket); ok {
		p.mu.Lock()
		p.pkts = append(p.pkts, derp.ReceivedPacket{Source: rp.Source, Data: bytes.Clone(rp.Data)})
		p.mu.Unlock()
	}
}

func (p *packetLog) has(src key.NodePublic, data string) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, rp := range p.pkts {
		if rp.Source == src && string(rp.Data) == data {
			return true
		}
	}
	return false
}

// recvAll copies every message of c into a channel.
func recvAll(c *derp.Client) <-chan derp.Message {
	ch := make(chan derp.Message, 256)
	go func() {
		defer close(ch)
		for {
			m, err := c.Recv()
			if err != nil {
				return
			}
			if p, ok := m.(*derp.ReceivedPacket); ok { // Data is reused by the next Recv
				m = &derp.ReceivedPacket{Source: p.Source, Data: bytes.Clone(p.Data)}
			}
			ch <- m
		}
	}()
	return ch
}

func waitPacket(t *testing.T, ch <-chan derp.Message, src key.NodePublic, data []byte) {
	t.Helper()
	timeout := time.After(15 * time.Second)
	for {
		select {
		case m, ok := <-ch:
			if !ok {
				t.Fatal("DERP connection closed")
			}
			if p, ok := m.(*derp.ReceivedPacket); ok {
				if p.Source != src || !bytes.Equal(p.Data, data) {
					t.Fatalf("got %d bytes from %v, want %d from %v", len(p.Data), p.Source.ShortString(), len(data), src.ShortString())
				}
				return
			}
		case <-timeout:
			t.Fatalf("no packet from %v", src.ShortString())
		}
	}
}

func waitPeerGone(t *testing.T, ch <-chan derp.Message) derp.PeerGone {
	t.Helper()
	timeout := time.After(15 * time.Second)
	for {
		select {
		case m, ok := <-ch:
			if !ok {
				t.Fatal("DERP connection closed")
			}
			if pg, ok := m.(derp.PeerGone); ok {
				return pg
			}
		case <-timeout:
			t.Fatal("no PeerGone")
		}
	}
}
