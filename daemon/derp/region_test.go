package derp

import (
	"bytes"
	"errors"
	"net"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/skeinvpn/skein/daemon/key"
	"github.com/skeinvpn/skein/daemon/wire"
)

// collector gathers what a RegionClient delivers.
type collector struct {
	mu      sync.Mutex
	packets [][]byte
	infos   int
}

func (c *collector) onMessage(m Message) {
	c.mu.Lock()
	defer c.mu.Unlock()
	switch m := m.(type) {
	case *ReceivedPacket:
		c.packets = append(c.packets, bytes.Clone(m.Data))
	case ServerInfoMessage:
		c.infos++
	}
}

func (c *collector) has(data string) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, p := range c.packets {
		if string(p) == data {
			return true
		}
	}
	return false
}

func (c *collector) connects() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.infos
}

// deadNode is a node whose port refuses connections.
func deadNode(t *testing.T) *wire.DERPNode {
	ln, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := ln.Addr().(*net.TCPAddr).Port
	ln.Close()
	return &wire.DERPNode{Name: "dead", HostName: "127.0.0.1", DERPPort: port}
}

func TestRegionClientReconnect(t *testing.T) {
	s := newTestServer(t)
	pa, pb := key.NewNode(), key.NewNode()
	stunOnly := &wire.DERPNode{Name: "stun", HostName: "127.0.0.1", STUNOnly: true, DERPPort: 1}
	region := &wire.DERPRegion{RegionID: 900, Nodes: []*wire.DERPNode{deadNode(t), stunOnly, s.node()}}
	var ca, cb collector
	a := NewRegionClient(RegionOptions{Region: region, PrivateKey: pa, TLSConfig: s.tlsConfig(),
		Preferred: true, OnMessage: ca.onMessage, Logf: t.Logf})
	defer a.Close()
	b := NewRegionClient(RegionOptions{Region: region, PrivateKey: pb, TLSConfig: s.tlsConfig(), OnMessage: cb.onMessage})
	defer b.Close()
	if a.RegionID() != 900 {
		t.Errorf("region %d", a.RegionID())
	}

	exchange := func(round string) {
		t.Helper()
		waitFor(t, func() bool {
			return a.Connected() && b.Connected() && s.connected(pa.Public()) && s.connected(pb.Public())
		})
		ab, ba := "a->b "+round, "b->a "+round
		// Sends can race a connection that the server has just dropped; retry until delivered.
		waitFor(t, func() bool {
			a.Send(pb.Public(), []byte(ab))
			b.Send(pa.Public(), []byte(ba))
			time.Sleep(20 * time.Millisecond)
			return cb.has(ab) && ca.has(ba)
		})
	}
	exchange("1")
	if _, p := s.stats(); len(p[pa.Public()]) != 1 || !p[pa.Public()][0] || len(p[pb.Public()]) != 0 {
		t.Errorf("NotePreferred after first connect: %v", p)
	}

	for round := 2; round <= 3; round++ {
		before := ca.connects()
		s.dropAll()
		waitFor(t, func() bool { return ca.connects() > before && cb.connects() > before })
		exchange(strconv.Itoa(round))
	}
	// The home region re-announced itself on every connection.
	if _, p := s.stats(); len(p[pa.Public()]) != 3 {
		t.Errorf("NotePreferred sent %d times, want 3", len(p[pa.Public()]))
	}
	a.SetPreferred(false)
	waitFor(t, func() bool { _, p := s.stats(); return len(p[pa.Public()]) == 4 })
	if _, p := s.stats(); p[pa.Public()][3] {
		t.Error("SetPreferred(false) sent true")
	}
}

func TestRegionClientSendWhileDisconnected(t *testing.T) {
	region := &wire.DERPRegion{RegionID: 901, Nodes: []*wire.DERPNode{deadNode(t)}}
	rc := NewRegionClient(RegionOptions{Region: region, PrivateKey: key.NewNode()})
	start := time.Now()
	for range 100 {
		if err := rc.Send(testKey(1), []byte("x")); !errors.Is(err, ErrNotConnected) {
			t.Fatalf("Send = %v", err)
		}
	}
	if d := time.Since(start); d > 100*time.Millisecond {
		t.Errorf("100 failing sends took %v", d)
	}
	if rc.Connected() {
		t.Error("connected to a dead node")
	}
	start = time.Now()
	rc.Close()
	if d := time.Since(start); d > time.Second {
		t.Errorf("Close took %v", d)
	}
	rc.Close() // idempotent
}

func TestRegionClientCloseWhileConnected(t *testing.T) {
	s := newTestServer(t)
	priv := key.NewNode()
	var c collector
	rc := NewRegionClient(RegionOptions{Region: &wire.DERPRegion{RegionID: 900, Nodes: []*wire.DERPNode{s.node()}},
		PrivateKey: priv, TLSConfig: s.tlsConfig(), OnMessage: c.onMessage})
	waitFor(t, rc.Connected)
	rc.Close()
	if rc.Connected() {
		t.Error("connected after Close")
	}
	waitFor(t, func() bool { return !s.connected(priv.Public()) })
	if err := rc.Send(testKey(1), nil); !errors.Is(err, ErrNotConnected) {
		t.Errorf("Send after Close = %v", err)
	}
}

func TestRegionClientSetRegion(t *testing.T) {
	s := newTestServer(t)
	rc := NewRegionClient(RegionOptions{Region: &wire.DERPRegion{RegionID: 900, Nodes: []*wire.DERPNode{deadNode(t)}},
		PrivateKey: key.NewNode(), TLSConfig: s.tlsConfig()})
	defer rc.Close()
	rc.SetRegion(&wire.DERPRegion{RegionID: 900, Nodes: []*wire.DERPNode{s.node()}})
	waitFor(t, rc.Connected) // within one backoff period (≤ 5 s)
}

func TestBackoff(t *testing.T) {
	for n := range 100 {
		d := backoff(n)
		if d <= 0 || d > maxBackoff {
			t.Fatalf("backoff(%d) = %v", n, d)
		}
	}
	if d := backoff(1); d > minBackoff {
		t.Errorf("first retry after %v", d)
	}
	if d := backoff(50); d < maxBackoff/2 {
		t.Errorf("capped backoff %v", d)
	}
}
