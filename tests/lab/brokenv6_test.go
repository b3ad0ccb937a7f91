package lab_test

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/skeinvpn/skein/internal/lab"
	"github.com/skeinvpn/skein/ipc"
)

// TestIPv6AddressWithoutRoute (issue 14, R27): the host has a global IPv6 address but no IPv6
// route anywhere (a broken address family: a stale router advertisement, a captive network).
// Nothing stalls on it: skein up connects, the peer answers within 2 s of Running, and the
// path is direct over IPv4.
func TestIPv6AddressWithoutRoute(t *testing.T) {
	t.Parallel()
	l := lab.New(t)
	tn, err := l.StartTailnet("lab", "alpha-ts")
	if err != nil {
		t.Fatal(err)
	}
	h, err := l.AddHost("skein-6")
	if err != nil {
		t.Fatal(err)
	}
	if out, err := h.Run("ip", "-6", "addr", "add", "2001:db8:66::6/64", "dev", "eth0", "nodad"); err != nil {
		t.Fatalf("%v %s", err, out)
	}
	if out, _ := h.Run("ip", "-6", "route", "show", "default"); strings.TrimSpace(out) != "" {
		t.Fatalf("the host has an IPv6 default route: %s", out)
	}
	n := startNodeWith(t, h, false)
	start := time.Now()
	mustOK(t, n.cli("up", "--login-server", tn.Control.URL(), "--auth-key", tn.AuthKey, "--hostname", "skein-6"), "skein up")
	upTook := time.Since(start)
	var running time.Time
	lab.Eventually(t, 20*time.Second, func() error {
		st := n.status()
		if st.State != ipc.StateRunning || n.peer(st, "alpha-ts") == nil {
			return fmt.Errorf("state %s", st.State)
		}
		running = time.Now()
		return nil
	})
	alpha := tn.Peer("alpha-ts")
	ast, err := alpha.Status()
	if err != nil {
		t.Fatal(err)
	}
	// The peer answers (a disco ping: no WireGuard handshake to wait for, which an official
	// peer delays by 5 s on first contact) within 2 s of Running.
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	res, err := ipcClient(n).Ping(ctx, "alpha-ts")
	cancel()
	first := time.Since(running)
	if err != nil || res.Err != "" || first > 2*time.Second {
		t.Errorf("ping alpha-ts: %+v %v, %v after Running", res, err, first)
	}
	pingICMP(t, n.host, ast.Self.IPv4())
	t.Logf("skein up took %v; first pong %v after Running", upTook.Round(time.Millisecond), first.Round(time.Millisecond))
	if upTook > 10*time.Second {
		t.Errorf("skein up took %v with a routeless IPv6 address (a stall?)", upTook)
	}
	d := waitDirect(t, 15*time.Second, "skein→alpha", func() string { return n.pathOf("alpha-ts") })
	if p := n.pathOf("alpha-ts"); !strings.Contains(p, alpha.Host().Addr().String()) {
		t.Errorf("path %q: want direct to alpha's IPv4 address %s", p, alpha.Host().Addr())
	}
	t.Logf("direct after %v", d)
	// netcheck answers promptly and says IPv6 does not work.
	start = time.Now()
	r := n.cli("netcheck")
	if r.code != 0 || time.Since(start) > 10*time.Second {
		t.Errorf("skein netcheck: exit %d after %v\n%s%s", r.code, time.Since(start), r.stdout, r.stderr)
	}
	n.stop()
}
