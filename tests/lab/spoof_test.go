package lab_test

import (
	"fmt"
	"net"
	"net/netip"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/skeinvpn/skein/internal/lab"
)

// TestSpoofedTailnetSourceDropped (issue 14 hole 1, S16): a host on the LAN that sends from a
// tailnet address (100.64.0.77) reaches nothing on a plain Skein client — not a router, no
// forwarding — on the ruleset skeind installs by default; the drop is counted; a packet from
// the host's own address still arrives; and `skein set --lan-uses-cgnat` (for networks that use
// 100.64.0.0/10 themselves) lets it through, until set back.
func TestSpoofedTailnetSourceDropped(t *testing.T) {
	t.Parallel()
	l, _, n := joinedNode(t, "skein-sg")
	lan, err := l.AddHost("lan-sg")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := lan.Run("ip", "addr", "add", "100.64.0.77/32", "dev", "eth0"); err != nil {
		t.Fatal(err)
	}
	srv, err := n.host.ListenPacket("udp4", "0.0.0.0:9797")
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Close()
	spoofed, err := lan.ListenPacket("udp4", "100.64.0.77:0")
	if err != nil {
		t.Fatal(err)
	}
	defer spoofed.Close()
	plain, err := lan.ListenPacket("udp4", netip.AddrPortFrom(lan.Addr(), 0).String())
	if err != nil {
		t.Fatal(err)
	}
	defer plain.Close()
	dst := &net.UDPAddr{IP: n.host.Addr().AsSlice(), Port: 9797}
	// arrives sends one datagram from c and tells whether the server got it.
	arrives := func(c net.PacketConn, tag string) bool {
		t.Helper()
		if _, err := c.WriteTo([]byte(tag), dst); err != nil {
			t.Fatal(err)
		}
		buf := make([]byte, 64)
		deadline := time.Now().Add(time.Second)
		for {
			srv.SetReadDeadline(deadline)
			m, _, err := srv.ReadFrom(buf)
			if err != nil {
				return false
			}
			if string(buf[:m]) == tag {
				return true
			}
		}
	}

	if !arrives(plain, "plain-1") {
		t.Fatal("a packet from the LAN host's own address did not arrive: the topology is broken")
	}
	if arrives(spoofed, "spoofed-1") {
		t.Errorf("a packet from a spoofed tailnet source reached a socket on the Skein host")
	}
	ruleset, err := n.host.Run("nft", "list", "chain", "inet", "skein", "input")
	if err != nil {
		t.Fatalf("skeind installed no input chain on a plain client: %v", err)
	}
	if c := spoofDrops(ruleset); c == 0 {
		t.Errorf("the spoofed-source drop is not counted:\n%s", ruleset)
	}
	t.Logf("skeind's input chain:\n%s", ruleset)

	// A network that uses CGNAT space itself.
	mustOK(t, n.cli("set", "--lan-uses-cgnat"), "skein set --lan-uses-cgnat")
	lab.Eventually(t, 10*time.Second, func() error {
		if !arrives(spoofed, "spoofed-2") {
			return fmt.Errorf("100.64.0.77 still dropped with --lan-uses-cgnat")
		}
		return nil
	})
	mustOK(t, n.cli("set", "--lan-uses-cgnat=false"), "skein set --lan-uses-cgnat=false")
	lab.Eventually(t, 10*time.Second, func() error {
		if arrives(spoofed, "spoofed-3") {
			return fmt.Errorf("the guard did not come back")
		}
		return nil
	})
	if !arrives(plain, "plain-2") {
		t.Error("the LAN host's own packets stopped arriving")
	}

	// A machine whose own network has CGNAT addresses is told what the guard does to it.
	if _, err := n.host.Run("ip", "addr", "add", "100.64.9.9/32", "dev", "eth0"); err != nil {
		t.Fatal(err)
	}
	lab.Eventually(t, 15*time.Second, func() error {
		for _, h := range n.status().Health {
			if h.Code == "cgnat_lan" && strings.Contains(h.Message, "eth0") && strings.Contains(h.Message, "--lan-uses-cgnat") {
				return nil
			}
		}
		return fmt.Errorf("no cgnat_lan warning: %+v", n.status().Health)
	})
	n.host.Run("ip", "addr", "del", "100.64.9.9/32", "dev", "eth0")
	n.stop()
}

var counterPackets = regexp.MustCompile(`counter packets (\d+)`)

// spoofDrops adds up the counters of the rules that drop spoofed tailnet sources.
func spoofDrops(chain string) int {
	total := 0
	for _, line := range strings.Split(chain, "\n") {
		if !strings.Contains(line, "spoofed tailnet source") {
			continue
		}
		if m := counterPackets.FindStringSubmatch(line); m != nil {
			v, _ := strconv.Atoi(m[1])
			total += v
		}
	}
	return total
}
