package lab_test

import (
	"fmt"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/skeinvpn/skein/internal/lab"
	"github.com/skeinvpn/skein/ipc"
)

// pathOf reports how skein sees the path to a peer: "direct IP:PORT", "relay CODE" or "".
func (n *node) pathOf(host string) string {
	p := n.peer(n.status(), host)
	switch {
	case p == nil:
		return ""
	case p.CurAddr != "":
		return "direct " + p.CurAddr
	case p.Relay != "":
		return "relay " + p.Relay
	}
	return ""
}

// officialPath reports how an official node sees the path to a peer.
func officialPath(t testing.TB, ts *lab.Tailscaled, host string) string {
	st, err := ts.Status()
	if err != nil {
		t.Fatal(err)
	}
	p := st.PeerByHostName(host)
	switch {
	case p == nil:
		return ""
	case p.CurAddr != "":
		return "direct " + p.CurAddr
	case p.Relay != "":
		return "relay " + p.Relay
	}
	return ""
}

func (n *node) selfIP() netip.Addr {
	st := n.status()
	for _, a := range st.Self.Addresses {
		if a.Is4() {
			return a
		}
	}
	n.t.Fatal("no self IPv4")
	return netip.Addr{}
}

func waitDirect(t testing.TB, timeout time.Duration, what string, path func() string) time.Duration {
	t.Helper()
	start := time.Now()
	lab.Eventually(t, timeout, func() error {
		if p := path(); !strings.HasPrefix(p, "direct ") {
			return fmt.Errorf("%s: path %q, want direct", what, p)
		}
		return nil
	})
	return time.Since(start)
}

// TestDirectPublicHosts: Skein and an official node, both on the "internet", reach each other
// directly: ICMP ping, a TCP transfer with a matching checksum, and both sides report direct.
func TestDirectPublicHosts(t *testing.T) {
	t.Parallel()
	_, tn, n := joinedNode(t, "skein-d", "alpha-ts")
	alpha := tn.Peer("alpha-ts")
	st, _ := alpha.Status()
	alphaIP := st.Self.IPv4()
	lab.Eventually(t, 20*time.Second, func() error {
		if n.peer(n.status(), "alpha-ts") == nil {
			return fmt.Errorf("alpha-ts not in netmap")
		}
		s, err := alpha.Status()
		if err != nil {
			return err
		}
		if p := s.PeerByHostName("skein-d"); p == nil || !p.Online {
			return fmt.Errorf("alpha does not see skein-d online")
		}
		return nil
	})
	pingICMP(t, n.host, alphaIP)
	r := n.cli("ping", "alpha-ts")
	t.Logf("skein ping:\n%s%s", r.stdout, r.stderr)
	if r.code != 0 {
		t.Fatalf("skein ping alpha-ts: exit %d", r.code)
	}
	d := waitDirect(t, 15*time.Second, "skein→alpha", func() string { return n.pathOf("alpha-ts") })
	t.Logf("skein sees direct after %v", d)
	waitDirect(t, 15*time.Second, "alpha→skein", func() string { return officialPath(t, alpha, "skein-d") })
	pingICMP(t, alpha.Host(), n.selfIP())
	transfer(t, n.host, alpha.Host(), alphaIP, 20<<20, time.Minute)
	transfer(t, alpha.Host(), n.host, n.selfIP(), 20<<20, time.Minute)
	// netcheck from the tunnel's socket: UDP works, our public address, the lab's DERP region
	// (by its name, as the official CLI prints it).
	r = n.cli("netcheck")
	t.Logf("skein netcheck:\n%s", r.stdout)
	for _, want := range []string{"UDP: true", "IPv4: yes, " + n.host.Addr().String() + ":41641", "Nearest DERP: Headscale Embedded DERP", "- headscale: "} {
		if r.code != 0 || !strings.Contains(r.stdout, want) {
			t.Errorf("skein netcheck (exit %d) lacks %q", r.code, want)
		}
	}
	r = n.cli("status")
	t.Logf("skein status:\n%s", r.stdout)
	if st := n.status(); st.State != ipc.StateRunning {
		t.Fatalf("state %s", st.State)
	}
	n.stop()
}
