package lab_test

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/skeinvpn/skein/internal/lab"
)

// TestNATMappingExpiryKeepalive (issue 14, R9): Skein sits behind a NAT that forgets a UDP
// mapping after 5 s without traffic (nf_conntrack_udp_timeout=5 in the router). After the
// last application packet the session stays active, and Skein's keepalives must keep the
// mapping alive: 20 s later the official peer on the internet still reaches Skein directly,
// through the same public port, at once.
func TestNATMappingExpiryKeepalive(t *testing.T) {
	t.Parallel()
	l := lab.New(t)
	tn, err := l.StartTailnet("lab", "alpha-ts")
	if err != nil {
		t.Fatal(err)
	}
	nat, err := l.AddNAT("nat-r9", lab.EasyNAT)
	if err != nil {
		t.Fatal(err)
	}
	for _, kv := range []string{"net.netfilter.nf_conntrack_udp_timeout=5", "net.netfilter.nf_conntrack_udp_timeout_stream=5"} {
		if out, err := nat.Host().Run("sysctl", "-qw", kv); err != nil {
			t.Fatalf("%s: %v %s", kv, err, out)
		}
	}
	h, err := nat.AddHost("skein-r9")
	if err != nil {
		t.Fatal(err)
	}
	n := startNodeWith(t, h, false)
	mustOK(t, n.cli("up", "--login-server", tn.Control.URL(), "--auth-key", tn.AuthKey, "--hostname", "skein-r9"), "skein up")
	alpha := tn.Peer("alpha-ts")
	ast, err := alpha.Status()
	if err != nil {
		t.Fatal(err)
	}
	lab.Eventually(t, 20*time.Second, func() error {
		if n.peer(n.status(), "alpha-ts") == nil {
			return fmt.Errorf("alpha-ts not in netmap")
		}
		return nil
	})
	pingICMP(t, n.host, ast.Self.IPv4())
	waitDirect(t, 30*time.Second, "skein→alpha", func() string { return n.pathOf("alpha-ts") })
	waitDirect(t, 30*time.Second, "alpha→skein", func() string { return officialPath(t, alpha, "skein-r9") })
	before := officialPath(t, alpha, "skein-r9")
	if !strings.Contains(before, nat.PublicAddr().String()) {
		t.Fatalf("alpha's path %q is not through the NAT's public address %s", before, nat.PublicAddr())
	}

	// No application traffic for four mapping lifetimes.
	time.Sleep(20 * time.Second)
	start := time.Now()
	out, err := alpha.Host().Run("ping", "-c", "1", "-W", "1", n.selfIP().String())
	if err != nil {
		t.Errorf("alpha's first ping after 20 s without traffic: %v\n%s", err, out)
	}
	after := officialPath(t, alpha, "skein-r9")
	t.Logf("alpha→skein before %q, after 20 s idle %q (first ping %v)", before, after, time.Since(start).Round(time.Millisecond))
	if after != before {
		t.Errorf("alpha's path changed from %q to %q: the NAT mapping was not kept alive", before, after)
	}
	n.stop()
}
