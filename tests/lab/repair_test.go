package lab_test

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/skeinvpn/skein/internal/lab"
)

// TestTunRepairedAfterFlush (issue 14, R18): another program (NetworkManager, systemd-networkd,
// an admin) flushes the tunnel's addresses, then the tailnet routes in table 52: skeind puts
// both back within a few seconds and traffic with the peer flows again, without a restart.
func TestTunRepairedAfterFlush(t *testing.T) {
	t.Parallel()
	_, tn, n := joinedNode(t, "skein-r", "alpha-ts")
	alpha := tn.Peer("alpha-ts")
	ast, err := alpha.Status()
	if err != nil {
		t.Fatal(err)
	}
	alphaIP := ast.Self.IPv4()
	self := n.selfIP()
	pingICMP(t, n.host, alphaIP)
	pid := n.proc.Pid()

	for _, step := range []struct {
		what string
		cmd  []string
		back func() error
	}{
		{"ip addr flush dev skein0", []string{"ip", "addr", "flush", "dev", "skein0"}, func() error {
			out, err := n.host.Run("ip", "-4", "addr", "show", "dev", "skein0")
			if err != nil || !strings.Contains(out, self.String()) {
				return fmt.Errorf("%s not back on skein0: %v\n%s", self, err, out)
			}
			return nil
		}},
		{"ip route flush table 52", []string{"ip", "route", "flush", "table", "52"}, func() error {
			out, err := n.host.Run("ip", "route", "show", "table", "52")
			if err != nil || !strings.Contains(out, alphaIP.String()) {
				return fmt.Errorf("no route to %s in table 52: %v\n%s", alphaIP, err, out)
			}
			return nil
		}},
	} {
		if out, err := n.host.Run(step.cmd[0], step.cmd[1:]...); err != nil {
			t.Fatalf("%s: %v %s", step.what, err, out)
		}
		start := time.Now()
		lab.Eventually(t, 10*time.Second, step.back)
		t.Logf("after %s: restored in %v", step.what, time.Since(start).Round(time.Millisecond))
		pingICMP(t, n.host, alphaIP)
		pingICMP(t, alpha.Host(), self)
	}
	if n.proc.Pid() != pid || n.proc.Exited() {
		t.Fatal("skeind restarted")
	}
	n.stop()
}
