package dataplane

import (
	"sync"
	"testing"
	"time"

	"golang.zx2c4.com/wireguard/conn"
	"golang.zx2c4.com/wireguard/device"
	"golang.zx2c4.com/wireguard/tun/tuntest"

	"github.com/skeinvpn/skein/daemon/key"
)

// holdBind keeps the handshake initiations (type 1) the peer sends while holding is on, to be
// delivered later: what a socket holds for a frozen skeind.
type holdBind struct {
	conn.Bind
	mu      sync.Mutex
	holding bool
	held    [][]byte
	ep      conn.Endpoint
}

func (b *holdBind) Send(bufs [][]byte, ep conn.Endpoint) error {
	b.mu.Lock()
	defer b.mu.Unlock()
	var rest [][]byte
	for _, buf := range bufs {
		if b.holding && len(buf) > 0 && buf[0] == 1 {
			b.held = append(b.held, append([]byte(nil), buf...))
			b.ep = ep
			continue
		}
		rest = append(rest, buf)
	}
	if len(rest) == 0 {
		return nil
	}
	return b.Bind.Send(rest, ep)
}

// TestRehandshakeAfterFreeze (issue 14, R16): our keys are past their lifetime and we answered a
// stale initiation the peer no longer waits for, as after a freeze. Our own handshake is then
// held back by the retry timer and the packet goes nowhere; rehandshakeDevice gets it through
// within a round trip.
func TestRehandshakeAfterFreeze(t *testing.T) {
	w := NewWireGuard()
	defer w.Close()
	ourKey, peerKey := key.NewNode(), key.NewNode()
	var hb *holdBind
	s := startSessionVia(t, w, ourKey, peerKey, func(b conn.Bind) conn.Bind { hb = &holdBind{Bind: b}; return hb })
	defer s.stop(w)
	s.ping(t)
	sessionAt := time.Now()

	// Frozen: the peer gives up on one initiation and sends another; neither reaches us yet.
	hb.mu.Lock()
	hb.holding = true
	hb.mu.Unlock()
	toUs := s.peer.LookupPeer(device.NoisePublicKey(ourKey.Public().Raw()))
	for range 2 {
		toUs.ExpireCurrentKeypairs()
		toUs.SendHandshakeInitiation(false)
	}
	hb.mu.Lock()
	hb.holding = false
	held, ep := hb.held, hb.ep
	hb.mu.Unlock()
	if len(held) != 2 {
		t.Fatalf("%d initiations held, want 2", len(held))
	}
	// Resumed: our keys are too old, and the first (stale) initiation is read and answered.
	dev := w.dev
	dev.LookupPeer(device.NoisePublicKey(peerKey.Public().Raw())).ExpireCurrentKeypairs()
	if err := hb.Bind.Send(held[:1], ep); err != nil {
		t.Fatal(err)
	}
	time.Sleep(100 * time.Millisecond)

	msg := tuntest.Ping(peerIP, ourIP)
	s.tun.Outbound <- msg
	select {
	case <-s.peerTUN.Inbound:
		t.Fatal("the packet went through at once: the test no longer reproduces the stall")
	case <-time.After(time.Second):
	}
	if n, err := rehandshakeDevice(dev, time.Now().Add(time.Minute)); n != 0 || err != nil {
		t.Fatalf("rehandshakeDevice with no handshake since: %d peers, %v", n, err)
	}
	start := time.Now()
	if n, err := rehandshakeDevice(dev, sessionAt.Add(-time.Minute)); n != 1 || err != nil {
		t.Fatalf("rehandshakeDevice: %d peers, %v; want 1", n, err)
	}
	select {
	case <-s.peerTUN.Inbound:
		t.Logf("the held packet arrived %v after the new handshake began", time.Since(start).Round(time.Millisecond))
	case <-time.After(2 * time.Second):
		t.Fatal("no packet within 2 s of the new handshake")
	}
	s.ping(t)
}
