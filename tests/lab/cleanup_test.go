package lab_test

import (
	"fmt"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/skeinvpn/skein/internal/lab"
	"github.com/skeinvpn/skein/ipc"
)

func (n *node) ipOut(args ...string) string {
	n.t.Helper()
	out, err := n.host.Run("ip", args...)
	if err != nil {
		n.t.Fatalf("ip %v: %v", args, err)
	}
	return out
}

// routingSnapshot is the host's rules and routes, without the IPv6 link-local lines the kernel
// adds on its own schedule after a namespace is made.
func (n *node) routingSnapshot() string {
	var b strings.Builder
	for _, args := range [][]string{{"rule"}, {"-6", "rule"}, {"route", "show", "table", "all"}, {"-6", "route", "show", "table", "all"}} {
		for _, line := range n.ipLines(args...) {
			b.WriteString(line + "\n")
		}
	}
	return b.String()
}

// ipLines is the output of ip ARGS without empty and IPv6 link-local lines.
func (n *node) ipLines(args ...string) []string {
	n.t.Helper()
	var lines []string
	for _, line := range strings.Split(n.ipOut(args...), "\n") {
		if line != "" && !strings.Contains(line, "fe80::") {
			lines = append(lines, line)
		}
	}
	return lines
}

// rulePrefs counts the official-layout rule preferences in `ip rule` output.
func rulePrefs(out string) map[string]int {
	m := map[string]int{}
	for _, line := range strings.Split(out, "\n") {
		pref, _, _ := strings.Cut(line, ":")
		switch pref {
		case "5210", "5230", "5250", "5270":
			m[pref]++
		}
	}
	return m
}

// TestRoutingLifecycle: the official rule layout and table 52 while running; exactly one copy
// of each after kill -9 and restart; nothing left after a clean stop.
func TestRoutingLifecycle(t *testing.T) {
	t.Parallel()
	l := lab.New(t)
	tn, err := l.StartTailnet("lab", "alpha-ts")
	if err != nil {
		t.Fatal(err)
	}
	n := startNode(t, l, "skein-r")
	before := n.routingSnapshot() // before the first up: nothing of ours yet
	mustOK(t, n.cli("up", "--login-server", tn.Control.URL(), "--auth-key", tn.AuthKey, "--hostname", "skein-r"), "skein up")
	alphaSt, _ := tn.Peer("alpha-ts").Status()
	alphaIP := alphaSt.Self.IPv4()
	check := func(when string) {
		t.Helper()
		lab.Eventually(t, 10*time.Second, func() error {
			for _, fam := range [][]string{{"rule"}, {"-6", "rule"}} {
				got := rulePrefs(n.ipOut(fam...))
				for _, p := range []string{"5210", "5230", "5250", "5270"} {
					if got[p] != 1 {
						return fmt.Errorf("%s: ip %v has %d rules at %s", when, fam, got[p], p)
					}
				}
			}
			if rt := n.ipOut("route", "show", "table", "52"); !strings.Contains(rt, alphaIP.String()+" dev skein0") {
				return fmt.Errorf("%s: table 52 lacks %s via skein0:\n%s", when, alphaIP, rt)
			}
			return nil
		})
	}
	check("running")
	pingICMP(t, n.host, alphaIP)

	// Crash: kill -9 leaves everything behind; the next start must not duplicate it.
	n.proc.Signal(syscall.SIGKILL)
	<-n.proc.Done()
	n.start()
	lab.Eventually(t, 20*time.Second, func() error {
		if st := n.status(); st.State != ipc.StateRunning {
			return fmt.Errorf("state %s after restart", st.State)
		}
		return nil
	})
	check("after kill -9 and restart")
	pingICMP(t, n.host, alphaIP)

	// A clean stop removes what it added.
	n.stop()
	after := n.routingSnapshot()
	if after != before {
		t.Errorf("routing after stop differs from before start:\n--- before\n%s\n--- after\n%s", before, after)
	}
	if out, err := n.host.Run("ip", "link", "show", "skein0"); err == nil {
		t.Errorf("skein0 still exists after stop:\n%s", out)
	}
}
