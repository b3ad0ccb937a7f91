package forwarding

import (
	"errors"
	"net"
	"net/netip"
	"os/exec"
	"strings"
	"testing"
	"time"
)

// Topology (IPv4 only):
//
//	peer ns                 router ns (the test's)              lan ns
//	p0 100.64.0.2  <-veth->  skt0 100.64.0.1   eth-lan 192.168.50.1  <-veth->  l0 192.168.50.2
//	                         ("tun" stand-in)                                   192.168.50.200
//	                                                                            169.254.7.7
//
// The router advertises 192.168.50.0/25 only.
type topo struct {
	e         *env
	peer, lan string
}

func newTopo(t *testing.T) *topo {
	e := newEnv(t)
	tp := &topo{e: e, peer: e.addNS("peer"), lan: e.addNS("lan")}

	e.ip("link", "add", tunName, "type", "veth", "peer", "name", "p0", "netns", tp.peer)
	e.ip("addr", "add", "100.64.0.1/32", "dev", tunName)
	e.ip("link", "set", tunName, "up")
	e.ip("route", "add", "100.64.0.2/32", "dev", tunName)
	e.ipIn(tp.peer, "addr", "add", "100.64.0.2/32", "dev", "p0")
	e.ipIn(tp.peer, "link", "set", "p0", "up")
	e.ipIn(tp.peer, "route", "add", "100.64.0.1/32", "dev", "p0")
	e.ipIn(tp.peer, "route", "add", "default", "via", "100.64.0.1", "dev", "p0", "onlink")

	e.ip("link", "add", "eth-lan", "type", "veth", "peer", "name", "l0", "netns", tp.lan)
	e.ip("addr", "add", "192.168.50.1/24", "dev", "eth-lan")
	e.ip("link", "set", "eth-lan", "up")
	e.ip("route", "add", "169.254.0.0/16", "dev", "eth-lan")
	for _, a := range []string{"192.168.50.2/24", "192.168.50.200/24", "169.254.7.7/16"} {
		e.ipIn(tp.lan, "addr", "add", a, "dev", "l0")
	}
	e.ipIn(tp.lan, "link", "set", "l0", "up")
	tp.waitUp()
	return tp
}

// waitUp waits until the kernel reports every veth up. Until then a new veth still has the
// noop qdisc, which drops what is sent (the kernel's link watch activates the real one, up to a
// second later on a loaded machine), and a test's first datagram would be lost.
func (tp *topo) waitUp() {
	e := tp.e
	e.t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for _, l := range []struct{ ns, dev string }{{e.ns, tunName}, {e.ns, "eth-lan"}, {tp.peer, "p0"}, {tp.lan, "l0"}} {
		for {
			out, _ := exec.Command("ip", "-n", l.ns, "-o", "link", "show", "dev", l.dev).CombinedOutput()
			if strings.Contains(string(out), "state UP") {
				break
			}
			if time.Now().After(deadline) {
				e.t.Fatalf("%s not up after 5 s: %s", l.dev, out)
			}
			time.Sleep(10 * time.Millisecond)
		}
	}
}

func (tp *topo) config() Config {
	return Config{TunName: tunName, Forward: true, Masquerade: true, Routes: []netip.Prefix{pfx("192.168.50.0/25")}}
}

// listen opens a UDP socket in namespace ns.
func listen(t *testing.T, ns, addr string) *net.UDPConn {
	t.Helper()
	var c net.PacketConn
	err := inNS(ns, func() (err error) {
		c, err = net.ListenPacket("udp4", addr)
		return err
	})
	if err != nil {
		t.Fatalf("listen %s in %s: %v", addr, ns, err)
	}
	t.Cleanup(func() { c.Close() })
	return c.(*net.UDPConn)
}

// listenHere opens a UDP socket in the test's own namespace.
func listenHere(t *testing.T, addr string) *net.UDPConn {
	t.Helper()
	c, err := net.ListenPacket("udp4", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c.(*net.UDPConn)
}

// recv returns the source of the next datagram, or an invalid address if
// none comes within a short while.
func recv(t *testing.T, c *net.UDPConn) netip.AddrPort {
	t.Helper()
	c.SetReadDeadline(time.Now().Add(500 * time.Millisecond))
	buf := make([]byte, 100)
	_, from, err := c.ReadFromUDPAddrPort(buf)
	if err != nil {
		var ne net.Error
		if errors.As(err, &ne) && ne.Timeout() {
			return netip.AddrPort{}
		}
		t.Fatal(err)
	}
	return from
}

func send(t *testing.T, c *net.UDPConn, to string) {
	t.Helper()
	if _, err := c.WriteToUDPAddrPort([]byte("hi"), netip.MustParseAddrPort(to)); err != nil {
		t.Fatal(err)
	}
}

// S18 and S21: only advertised destinations are reached, masquerade
// rewrites the source, replies come back.
func TestTrafficForwardAndMasquerade(t *testing.T) {
	tp := newTopo(t)
	m := tp.e.newManager()
	defer m.Close()

	srv := listen(t, tp.lan, "0.0.0.0:9999")
	cli := listen(t, tp.peer, "100.64.0.2:0")

	for _, masq := range []bool{true, false} {
		c := tp.config()
		c.Masquerade = masq
		mustSet(t, m, c)

		send(t, cli, "192.168.50.2:9999")
		from := recv(t, srv)
		want := "192.168.50.1"
		if !masq {
			want = "100.64.0.2"
		}
		if !from.IsValid() || from.Addr().String() != want {
			t.Fatalf("masquerade=%v: LAN saw source %v, want %s", masq, from, want)
		}
		if masq { // the LAN has no route to the tailnet: replies need the NAT
			if _, err := srv.WriteToUDPAddrPort([]byte("re"), from); err != nil {
				t.Fatal(err)
			}
			if got := recv(t, cli); got.Addr().String() != "192.168.50.2" {
				t.Errorf("reply: got %v", got)
			}
		}

		for _, dst := range []string{"192.168.50.200:9999", "169.254.7.7:9999"} {
			send(t, cli, dst)
			if from := recv(t, srv); from.IsValid() {
				t.Errorf("masquerade=%v: %s was reached (from %v) although not forwardable", masq, dst, from)
			}
		}
	}

	// Positive control: the same destination is reached once advertised.
	c := tp.config()
	c.Routes = append(c.Routes, pfx("192.168.50.200/32"))
	mustSet(t, m, c)
	send(t, cli, "192.168.50.200:9999")
	if from := recv(t, srv); !from.IsValid() {
		t.Error("192.168.50.200 not reached after being advertised")
	}
}

// Without the table (forwarding alone) the unadvertised address would be
// reached: the drop above is our rule, not the topology.
func TestTrafficUnfilteredControl(t *testing.T) {
	tp := newTopo(t)
	tp.e.writeSysctl("net/ipv4/ip_forward", "1")
	tp.e.ipIn(tp.lan, "route", "add", "100.64.0.0/10", "via", "192.168.50.1")
	srv := listen(t, tp.lan, "0.0.0.0:9999")
	cli := listen(t, tp.peer, "100.64.0.2:0")
	for _, dst := range []string{"192.168.50.200:9999", "169.254.7.7:9999"} {
		send(t, cli, dst)
		if from := recv(t, srv); !from.IsValid() {
			t.Errorf("%s not reached without rules: the topology is broken", dst)
		}
	}
}

// S21: with Stateful, the LAN cannot open flows into the tailnet.
func TestTrafficStateful(t *testing.T) {
	tp := newTopo(t)
	tp.e.ipIn(tp.lan, "route", "add", "100.64.0.0/10", "via", "192.168.50.1")
	m := tp.e.newManager()
	defer m.Close()
	peerSrv := listen(t, tp.peer, "0.0.0.0:9998")
	lanCli := listen(t, tp.lan, "192.168.50.2:0")

	for _, stateful := range []bool{false, true} {
		c := tp.config()
		c.Masquerade = false
		c.Stateful = stateful
		mustSet(t, m, c)
		send(t, lanCli, "100.64.0.2:9998")
		got := recv(t, peerSrv)
		if got.IsValid() == stateful {
			t.Errorf("stateful=%v: LAN-originated flow into the tailnet reached=%v", stateful, got.IsValid())
		}
	}

	// Replies to a tailnet-originated flow still pass when stateful.
	lanSrv := listen(t, tp.lan, "0.0.0.0:9999")
	cli := listen(t, tp.peer, "100.64.0.2:0")
	send(t, cli, "192.168.50.2:9999")
	from := recv(t, lanSrv)
	if !from.IsValid() {
		t.Fatal("tailnet-originated flow did not reach the LAN")
	}
	if _, err := lanSrv.WriteToUDPAddrPort([]byte("re"), from); err != nil {
		t.Fatal(err)
	}
	if got := recv(t, cli); !got.IsValid() {
		t.Error("reply to a tailnet-originated flow dropped when stateful")
	}
}

// S16: a tailnet source arriving from the LAN is dropped with SpoofGuard.
func TestTrafficSpoofGuard(t *testing.T) {
	tp := newTopo(t)
	tp.e.ipIn(tp.lan, "addr", "add", "100.64.1.2/32", "dev", "l0")
	m := tp.e.newManager()
	defer m.Close()
	srv := listenHere(t, "0.0.0.0:9997")
	spoof := listen(t, tp.lan, "100.64.1.2:0")
	for _, guard := range []bool{false, true} {
		c := tp.config()
		c.SpoofGuard = guard
		mustSet(t, m, c)
		send(t, spoof, "192.168.50.1:9997")
		if got := recv(t, srv); got.IsValid() == guard {
			t.Errorf("SpoofGuard=%v: spoofed packet delivered=%v", guard, got.IsValid())
		}
	}
	if out := tp.e.nft("list", "chain", "inet", "skein", "input"); !counterRE.MatchString(out) || !containsNonZeroCounter(out) {
		t.Errorf("spoof drop counter did not move:\n%s", out)
	}
}

func containsNonZeroCounter(s string) bool {
	for _, m := range counterRE.FindAllString(s, -1) {
		if m != "counter packets 0 bytes 0" {
			return true
		}
	}
	return false
}
