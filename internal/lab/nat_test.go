package lab

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/netip"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

// TestNAT checks the NAT kinds by the public ports they map one local port
// to, that a NAT only lets in what its hosts asked for, that a changed
// public address shows up at the far end, and that Close removes NATs too.
func TestNAT(t *testing.T) {
	t.Parallel()
	l := New(t)
	pub1, pub2 := mustHost(t, l, "pub1"), mustHost(t, l, "pub2")
	echo1, echo2 := startUDPEcho(t, pub1, 7100), startUDPEcho(t, pub2, 7100)
	easy, err := l.AddNAT("easy", EasyNAT)
	if err != nil {
		t.Fatal(err)
	}
	hard, err := l.AddNAT("hard", HardNAT)
	if err != nil {
		t.Fatal(err)
	}
	behindEasy, err := easy.AddHost("behind-easy")
	if err != nil {
		t.Fatal(err)
	}
	behindHard, err := hard.AddHost("behind-hard")
	if err != nil {
		t.Fatal(err)
	}
	if easy.LAN() == hard.LAN() || !easy.LAN().Contains(behindEasy.Addr()) || !l.Subnet().Contains(easy.PublicAddr()) ||
		easy.Host().Addr() != easy.PublicAddr() || l.Host("behind-easy") != behindEasy {
		t.Fatalf("addresses: LANs %v %v, behind-easy %v, public %v", easy.LAN(), hard.LAN(), behindEasy.Addr(), easy.PublicAddr())
	}
	if out, err := behindEasy.Run("cat", "/etc/resolv.conf", "/etc/hosts"); err != nil || !strings.Contains(out, controlName) {
		t.Fatalf("NAT host /etc files: %q, %v", out, err)
	}

	// One local port, two destinations: EasyNAT keeps the (local) port,
	// HardNAT picks one per destination.
	conns := map[NATKind]net.PacketConn{}
	for _, c := range []struct {
		nat  *NAT
		host *Host
	}{{easy, behindEasy}, {hard, behindHard}} {
		pc := listenUDP(t, c.host, 40000)
		conns[c.nat.Kind()] = pc
		s1, err := udpProbe(pc, echo1, 5*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		s2, err := udpProbe(pc, echo2, 5*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		t.Logf("%v: %v:40000 -> pub1 sees %v, pub2 sees %v", c.nat.Kind(), c.host.Addr(), s1, s2)
		if s1.Addr() != c.nat.PublicAddr() || s2.Addr() != c.nat.PublicAddr() {
			t.Errorf("%v: source addresses %v %v, want %v", c.nat.Kind(), s1, s2, c.nat.PublicAddr())
		}
		switch c.nat.Kind() {
		case EasyNAT:
			if s1.Port() != 40000 || s2.Port() != 40000 {
				t.Errorf("EasyNAT mapped ports %d %d, want 40000 both", s1.Port(), s2.Port())
			}
		case HardNAT:
			if s1.Port() == s2.Port() {
				t.Errorf("HardNAT mapped both destinations to port %d", s1.Port())
			}
		}
	}

	// Inbound: nothing until the NATed host sends, then the reply to the
	// mapping gets through.
	pcIn := listenUDP(t, behindEasy, 41000)
	pcPub := listenUDP(t, pub1, 7200)
	mapped := netip.AddrPortFrom(easy.PublicAddr(), 41000)
	if _, err := sendUntil(pcPub, mapped, pcIn, time.Second); err == nil {
		t.Fatal("unsolicited packet got through the NAT")
	}
	seen, err := sendUntil(pcIn, netip.AddrPortFrom(pub1.Addr(), 7200), pcPub, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	if seen != mapped {
		t.Fatalf("pub1 sees %v, want %v", seen, mapped)
	}
	if _, err := sendUntil(pcPub, mapped, pcIn, 5*time.Second); err != nil {
		t.Fatalf("reply through the mapping: %v", err)
	}
	// TCP out through the NAT, too.
	startTCPServer(t, pub2, 7101)
	if err := tcpCheck(behindHard, netip.AddrPortFrom(pub2.Addr(), 7101)); err != nil {
		t.Fatal(err)
	}

	// A new public address: the ongoing flow is remapped from it.
	old := easy.PublicAddr()
	addr, err := easy.ChangePublicAddr()
	if err != nil {
		t.Fatal(err)
	}
	if addr == old || easy.PublicAddr() != addr || easy.Host().Addr() != addr {
		t.Fatalf("ChangePublicAddr: %v -> %v (PublicAddr %v)", old, addr, easy.PublicAddr())
	}
	s, err := udpProbe(conns[EasyNAT], echo1, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	if s.Addr() != addr {
		t.Fatalf("after ChangePublicAddr %v -> %v, pub1 sees %v", old, addr, s)
	}
	want := l.addrAt(200)
	if err := hard.SetPublicAddr(pub1.Addr()); err == nil {
		t.Fatal("SetPublicAddr accepted a host's address")
	}
	if err := hard.SetPublicAddr(want); err != nil {
		t.Fatal(err)
	}
	if s, err := udpProbe(conns[HardNAT], echo1, 5*time.Second); err != nil || s.Addr() != want {
		t.Fatalf("after SetPublicAddr(%v), pub1 sees %v, %v", want, s, err)
	}
	// The kernel's masquerade forgets a deleted address's mappings by
	// itself, so the above passes without flushConntrack; check the flush
	// alone: it gives a HardNAT flow a new random port.
	before, err := udpProbe(conns[HardNAT], echo1, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	if err := flushConntrack(hard.Host().Netns()); err != nil {
		t.Fatal(err)
	}
	if after, err := udpProbe(conns[HardNAT], echo1, 5*time.Second); err != nil || after.Port() == before.Port() {
		t.Fatalf("conntrack flush: mapping %v, then %v, %v", before, after, err)
	}
	if out, err := easy.Host().Run("nft", "list", "tables"); err != nil || !strings.Contains(out, natTable) {
		t.Fatalf("nft tables in the NAT: %q, %v", out, err)
	}

	// Close removes the NATs' namespaces (and their nft tables with them).
	namespaces := l.Namespaces()
	for _, name := range []string{"easy", "hard", "behind-easy", "behind-hard"} {
		if !strings.Contains(strings.Join(namespaces, " "), l.nsName(name)) {
			t.Errorf("namespace %s not listed in %v", l.nsName(name), namespaces)
		}
	}
	dir := l.Dir()
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	assertGone(t, l.ID(), namespaces, dir, nil)
}

// TestBlockUDP checks that BlockUDP stops UDP, not TCP, only with the given
// peers, and that NAT.BlockUDP stops forwarded UDP only.
func TestBlockUDP(t *testing.T) {
	t.Parallel()
	l := New(t)
	h1, h2, h3 := mustHost(t, l, "one"), mustHost(t, l, "two"), mustHost(t, l, "three")
	echo1, echo2 := startUDPEcho(t, h1, 7100), startUDPEcho(t, h2, 7100)
	startTCPServer(t, h2, 7101)
	pc1, pc2, pc3 := listenUDP(t, h1, 0), listenUDP(t, h2, 0), listenUDP(t, h3, 0)
	ok := func(pc net.PacketConn, dst netip.AddrPort) {
		t.Helper()
		if _, err := udpProbe(pc, dst, 5*time.Second); err != nil {
			t.Fatal(err)
		}
	}
	blocked := func(pc net.PacketConn, dst netip.AddrPort) {
		t.Helper()
		if s, err := udpProbe(pc, dst, time.Second); err == nil {
			t.Fatalf("%v -> %v: UDP got through (seen as %v)", pc.LocalAddr(), dst, s)
		}
	}
	ok(pc1, echo2)

	if err := h1.BlockUDP(h2.Addr()); err != nil {
		t.Fatal(err)
	}
	blocked(pc1, echo2)
	blocked(pc2, echo1)
	ok(pc3, echo1)
	if err := tcpCheck(h1, netip.AddrPortFrom(h2.Addr(), 7101)); err != nil {
		t.Fatalf("TCP blocked too: %v", err)
	}
	if err := h1.UnblockUDP(); err != nil {
		t.Fatal(err)
	}
	ok(pc1, echo2)
	ok(pc2, echo1)

	if err := h1.BlockUDP(); err != nil {
		t.Fatal(err)
	}
	blocked(pc3, echo1)
	blocked(pc1, echo2)
	if err := h1.UnblockUDP(); err != nil {
		t.Fatal(err)
	}
	if err := h1.UnblockUDP(); err != nil {
		t.Fatalf("second UnblockUDP: %v", err)
	}
	ok(pc3, echo1)

	nat, err := l.AddNAT("nat", EasyNAT)
	if err != nil {
		t.Fatal(err)
	}
	lan, err := nat.AddHost("lan1")
	if err != nil {
		t.Fatal(err)
	}
	pcLAN, pcRouter := listenUDP(t, lan, 0), listenUDP(t, nat.Host(), 0)
	ok(pcLAN, echo2)
	if err := nat.BlockUDP(); err != nil {
		t.Fatal(err)
	}
	blocked(pcLAN, echo2)
	ok(pcRouter, echo2) // the router's own UDP is not forwarded
	if err := tcpCheck(lan, netip.AddrPortFrom(h2.Addr(), 7101)); err != nil {
		t.Fatalf("TCP through the NAT blocked too: %v", err)
	}
	if err := nat.UnblockUDP(); err != nil {
		t.Fatal(err)
	}
	ok(pcLAN, echo2)
}

// TestLinkFlap takes uplinks down and up: a public host's, a NATed host's
// (its LAN leg) and a NAT router's WAN leg.
func TestLinkFlap(t *testing.T) {
	t.Parallel()
	l := New(t)
	h1, h2 := mustHost(t, l, "one"), mustHost(t, l, "two")
	echo2 := startUDPEcho(t, h2, 7100)
	startTCPServer(t, h2, 7101)
	nat, err := l.AddNAT("nat", HardNAT)
	if err != nil {
		t.Fatal(err)
	}
	lan, err := nat.AddHost("lan1")
	if err != nil {
		t.Fatal(err)
	}
	if err := l.Internet().LinkDown(); err == nil {
		t.Fatal("LinkDown on the inet router worked")
	}
	for _, c := range []struct {
		what   string
		flap   *Host // whose link goes down
		sender *Host
	}{
		{"public host", h1, h1},
		{"NATed host", lan, lan},
		{"NAT router WAN", nat.Host(), lan},
	} {
		pc := listenUDP(t, c.sender, 0)
		tcp := netip.AddrPortFrom(h2.Addr(), 7101)
		if _, err := udpProbe(pc, echo2, 5*time.Second); err != nil {
			t.Fatalf("%s: before LinkDown: %v", c.what, err)
		}
		if err := c.flap.LinkDown(); err != nil {
			t.Fatal(err)
		}
		if _, err := udpProbe(pc, echo2, time.Second); err == nil {
			t.Fatalf("%s: UDP works with the link down", c.what)
		}
		if err := tcpCheck(c.sender, tcp); err == nil {
			t.Fatalf("%s: TCP works with the link down", c.what)
		}
		if err := c.flap.LinkUp(); err != nil {
			t.Fatal(err)
		}
		if _, err := udpProbe(pc, echo2, 5*time.Second); err != nil {
			t.Fatalf("%s: after LinkUp: %v", c.what, err)
		}
		if err := tcpCheck(c.sender, tcp); err != nil {
			t.Fatalf("%s: TCP after LinkUp: %v", c.what, err)
		}
		if out, err := c.flap.Run("ip", "route", "show", "default"); err != nil || !strings.Contains(out, "via "+c.flap.gw.String()) {
			t.Fatalf("%s: default route after LinkUp: %q, %v", c.what, out, err)
		}
	}
}

func mustHost(t *testing.T, l *Lab, name string) *Host {
	t.Helper()
	h, err := l.AddHost(name)
	if err != nil {
		t.Fatal(err)
	}
	return h
}

func listenUDP(t *testing.T, h *Host, port int) net.PacketConn {
	t.Helper()
	pc, err := h.ListenPacket("udp4", netip.AddrPortFrom(h.Addr(), uint16(port)).String())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { pc.Close() })
	return pc
}

// startUDPEcho answers each datagram with "<datagram> <source ip:port>".
func startUDPEcho(t *testing.T, h *Host, port int) netip.AddrPort {
	t.Helper()
	pc := listenUDP(t, h, port)
	go func() {
		buf := make([]byte, 1500)
		for {
			n, from, err := pc.ReadFrom(buf)
			if err != nil {
				return
			}
			pc.WriteTo(fmt.Appendf(nil, "%s %s", buf[:n], from), from)
		}
	}()
	return netip.AddrPortFrom(h.Addr(), uint16(port))
}

var probeSeq atomic.Int64

// udpProbe sends to an echo server until it answers, and returns the
// source address the server saw.
func udpProbe(pc net.PacketConn, dst netip.AddrPort, timeout time.Duration) (netip.AddrPort, error) {
	id := fmt.Sprintf("probe-%d", probeSeq.Add(1))
	deadline := time.Now().Add(timeout)
	buf := make([]byte, 1500)
	lastErr := fmt.Errorf("no answer in %v", timeout)
	for time.Now().Before(deadline) {
		if _, err := pc.WriteTo([]byte(id), net.UDPAddrFromAddrPort(dst)); err != nil {
			lastErr = err
		}
		pc.SetReadDeadline(readDeadline(deadline))
		for {
			n, _, err := pc.ReadFrom(buf)
			if err != nil {
				break
			}
			// Skip late answers to earlier probes.
			if got, src, _ := strings.Cut(string(buf[:n]), " "); got == id {
				return netip.ParseAddrPort(src)
			}
		}
	}
	return netip.AddrPort{}, fmt.Errorf("UDP %v -> %v: %w", pc.LocalAddr(), dst, lastErr)
}

// sendUntil sends from src to dst until recv gets it, and returns the
// source address recv saw.
func sendUntil(src net.PacketConn, dst netip.AddrPort, recv net.PacketConn, timeout time.Duration) (netip.AddrPort, error) {
	id := fmt.Sprintf("send-%d", probeSeq.Add(1))
	deadline := time.Now().Add(timeout)
	buf := make([]byte, 1500)
	for time.Now().Before(deadline) {
		src.WriteTo([]byte(id), net.UDPAddrFromAddrPort(dst))
		recv.SetReadDeadline(readDeadline(deadline))
		for {
			n, from, err := recv.ReadFrom(buf)
			if err != nil {
				break
			}
			if string(buf[:n]) == id {
				return from.(*net.UDPAddr).AddrPort(), nil
			}
		}
	}
	return netip.AddrPort{}, fmt.Errorf("UDP %v -> %v: not received in %v", src.LocalAddr(), dst, timeout)
}

// startTCPServer accepts connections and writes "ok" on each.
func startTCPServer(t *testing.T, h *Host, port int) {
	t.Helper()
	ln, err := h.Listen("tcp4", netip.AddrPortFrom(h.Addr(), uint16(port)).String())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			c.Write([]byte("ok"))
			c.Close()
		}
	}()
}

func tcpCheck(h *Host, dst netip.AddrPort) error {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	c, err := h.Dial(ctx, "tcp4", dst.String())
	if err != nil {
		return err
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(2 * time.Second))
	got, err := io.ReadAll(c)
	if err != nil || string(got) != "ok" {
		return fmt.Errorf("TCP %v -> %v: got %q, %v", h.Addr(), dst, got, err)
	}
	return nil
}

// readDeadline is 200ms from now, but no later than deadline.
func readDeadline(deadline time.Time) time.Time {
	if d := time.Now().Add(200 * time.Millisecond); d.Before(deadline) {
		return d
	}
	return deadline
}
