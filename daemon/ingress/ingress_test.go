package ingress

import (
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/vishvananda/netns"
)

// inNS runs fn on a fresh OS thread inside the named network namespace (the thread is thrown
// away afterwards), for sockets that must live there.
func inNS(t *testing.T, name string, fn func()) {
	t.Helper()
	done := make(chan struct{})
	go func() {
		defer close(done)
		runtime.LockOSThread() // never unlocked: the thread dies with the goroutine
		h, err := netns.GetFromName(name)
		if err != nil {
			t.Error(err)
			return
		}
		defer h.Close()
		if err := netns.Set(h); err != nil {
			t.Error(err)
			return
		}
		fn()
	}()
	<-done
}

func run(t *testing.T, args ...string) {
	t.Helper()
	if out, err := exec.Command(args[0], args[1:]...).CombinedOutput(); err != nil {
		t.Fatalf("%s: %v: %s", strings.Join(args, " "), err, out)
	}
}

// Two namespaces joined by a veth pair standing in for the tunnel: "node" (our side, device
// skin0, 100.64.0.1 and fd7a:115c:a1e0::1) and "peer" (100.64.0.2 and fd7a:115c:a1e0::2).
func twoHosts(t *testing.T) (node, peer string) {
	if os.Geteuid() != 0 {
		t.Skip("needs root (network namespaces, nftables)")
	}
	id := rand.Uint32()
	node, peer = fmt.Sprintf("sking-n-%08x", id), fmt.Sprintf("sking-p-%08x", id)
	for _, ns := range []string{node, peer} {
		run(t, "ip", "netns", "add", ns)
		t.Cleanup(func() { exec.Command("ip", "netns", "del", ns).Run() })
		run(t, "ip", "-n", ns, "link", "set", "lo", "up")
	}
	run(t, "ip", "-n", node, "link", "add", "skin0", "type", "veth", "peer", "name", "skpeer0", "netns", peer)
	run(t, "ip", "-n", node, "addr", "add", "100.64.0.1/24", "dev", "skin0")
	run(t, "ip", "-n", node, "addr", "add", "fd7a:115c:a1e0::1/64", "dev", "skin0", "nodad")
	run(t, "ip", "-n", peer, "addr", "add", "100.64.0.2/24", "dev", "skpeer0")
	run(t, "ip", "-n", peer, "addr", "add", "fd7a:115c:a1e0::2/64", "dev", "skpeer0", "nodad")
	run(t, "ip", "-n", node, "link", "set", "skin0", "up")
	run(t, "ip", "-n", peer, "link", "set", "skpeer0", "up")
	return node, peer
}

var (
	self4 = netip.MustParseAddr("100.64.0.1")
	self6 = netip.MustParseAddr("fd7a:115c:a1e0::1")
	peer4 = netip.MustParseAddr("100.64.0.2")
	peer6 = netip.MustParseAddr("fd7a:115c:a1e0::2")
)

// dial connects and returns the first line the server writes ("" when the connection is
// closed or refused without one).
func dial(t *testing.T, ns, addr string) string {
	var line string
	inNS(t, ns, func() {
		c, err := net.DialTimeout("tcp", addr, 3*time.Second)
		if err != nil {
			return
		}
		defer c.Close()
		c.SetDeadline(time.Now().Add(3 * time.Second))
		b, _ := io.ReadAll(c)
		line = string(b)
	})
	return line
}

// A peer's connection to our address at port 22 reaches the service, with its original
// destination; the host's own listener on 0.0.0.0:22 keeps local connections; connections to
// the listener's own port, from addresses that are not peers, or from this host never reach
// the handler; Cleanup removes the table.
func TestRedirect(t *testing.T) {
	node, peer := twoHosts(t)
	got := make(chan Conn, 10)
	var svc *Service
	var tbl Table
	var host net.Listener
	var peersMu sync.Mutex
	peers := map[netip.Addr]bool{peer4: true, peer6: true}
	inNS(t, node, func() {
		var err error
		svc, err = Listen(Options{
			Tun: "skin0", Port: 22,
			Self:   func(a netip.Addr) bool { return a == self4 || a == self6 },
			Peer:   func(a netip.Addr) bool { peersMu.Lock(); defer peersMu.Unlock(); return peers[a] },
			Handle: func(c Conn) { fmt.Fprintf(c, "ours %v %v\n", c.Src.Addr(), c.Dst); c.Close(); got <- c },
			Logf:   t.Logf,
		})
		if err != nil {
			t.Error(err)
			return
		}
		if err := tbl.Set("skin0", svc.Rules([]netip.Addr{self4, self6})); err != nil {
			t.Error(err)
		}
		host, err = net.Listen("tcp", ":22")
		if err != nil {
			t.Error(err)
		}
	})
	if t.Failed() {
		t.FailNow()
	}
	defer svc.Close()
	defer host.Close()
	go func() {
		for {
			c, err := host.Accept()
			if err != nil {
				return
			}
			fmt.Fprintf(c, "host sshd\n")
			c.Close()
		}
	}()

	if line := dial(t, peer, "100.64.0.1:22"); line != "ours 100.64.0.2 100.64.0.1:22\n" {
		t.Errorf("peer over IPv4: %q", line)
	}
	if line := dial(t, peer, "[fd7a:115c:a1e0::1]:22"); line != "ours fd7a:115c:a1e0::2 [fd7a:115c:a1e0::1]:22\n" {
		t.Errorf("peer over IPv6: %q", line)
	}
	// This machine itself, to its own tailnet address: the host's sshd, never us.
	if line := dial(t, node, "100.64.0.1:22"); line != "host sshd\n" {
		t.Errorf("local connection to own address: %q", line)
	}
	if line := dial(t, node, fmt.Sprintf("100.64.0.1:%d", svc.To4)); line != "" {
		t.Errorf("local connection to the listener's port: %q", line)
	}
	// A peer dialling the listener's port directly: not redirected, so refused.
	if line := dial(t, peer, fmt.Sprintf("100.64.0.1:%d", svc.To4)); line != "" {
		t.Errorf("peer to the listener's own port: %q", line)
	}
	// An address the netmap does not know.
	peersMu.Lock()
	delete(peers, peer4)
	peersMu.Unlock()
	if line := dial(t, peer, "100.64.0.1:22"); line != "" {
		t.Errorf("non-peer: %q", line)
	}
	if len(got) != 2 {
		t.Errorf("handler saw %d connections, want 2", len(got))
	}

	inNS(t, node, func() {
		if err := tbl.Set("skin0", nil); err != nil {
			t.Error(err)
		}
		if out, _ := exec.Command("nft", "list", "tables").CombinedOutput(); strings.Contains(string(out), TableName) {
			t.Errorf("table left after Set(nil): %s", out)
		}
		if err := tbl.Set("skin0", svc.Rules([]netip.Addr{self4})); err != nil {
			t.Error(err)
		}
		if err := Cleanup(t.Logf); err != nil {
			t.Error(err)
		}
		if out, _ := exec.Command("nft", "list", "tables").CombinedOutput(); strings.Contains(string(out), TableName) {
			t.Errorf("table left after Cleanup: %s", out)
		}
	})
	// Without the rule a peer reaches nothing (no listener on 22 for the tunnel but the host's).
	if line := dial(t, peer, "100.64.0.1:22"); line != "host sshd\n" {
		t.Errorf("after cleanup: %q", line)
	}
}
