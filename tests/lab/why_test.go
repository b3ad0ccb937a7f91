package lab_test

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/skeinvpn/skein/internal/lab"
	"github.com/skeinvpn/skein/ipc"
)

// hostFirewall is what ufw's default "deny incoming" amounts to: policy drop on input, with
// established and related traffic, loopback and ICMP accepted.
const hostFirewall = `table inet filter {
	chain input {
		type filter hook input priority filter; policy drop;
		ct state established,related accept
		ct state invalid drop
		iif "lo" accept
		meta l4proto { icmp, ipv6-icmp } accept
	}
}
`

// nftIn loads an nft script in h's namespace.
func nftIn(t testing.TB, h *lab.Host, script string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cmd := h.Command(ctx, "nft", "-f", "-")
	cmd.Stdin = strings.NewReader(script)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("nft in %s: %v\n%s", h.Name(), err, out)
	}
}

func (n *node) why(peer string) ipc.WhyReport {
	n.t.Helper()
	r := n.cli("why", "--json", peer)
	mustOK(n.t, r, "skein why --json "+peer)
	var rep ipc.WhyReport
	if err := json.Unmarshal([]byte(r.stdout), &rep); err != nil {
		n.t.Fatalf("skein why --json: %v\n%s", err, r.stdout)
	}
	return rep
}

func causeCodes(rep ipc.WhyReport) []string {
	var out []string
	for _, c := range rep.Causes {
		out = append(out, c.Code)
	}
	return out
}

// TestWhyFirewall: a public Skein node whose firewall drops new inbound UDP (ufw-like) and an
// official peer behind hard NAT stay on relay; `skein why` says it is the firewall and prints
// the command that opens the port, `status --json` carries the cause and `skein ping` names
// it. Running that command makes the pair direct within 5 s, in both ends' views.
func TestWhyFirewall(t *testing.T) {
	t.Parallel()
	l, c := labWithUser(t)
	key, err := c.PreAuthKey("lab", true, false)
	if err != nil {
		t.Fatal(err)
	}
	ha := public(t, l, "skein-fw")
	nftIn(t, ha, hostFirewall)
	a := startFastNodeOn(t, ha)
	mustOK(t, a.cli("up", "--login-server", c.URL(), "--auth-key", key, "--hostname", "skein-fw"), "skein up")
	var nat *lab.NAT
	ho := behind(lab.HardNAT, "nat-o", &nat)(t, l, "official-o")
	o, err := ho.StartTailscaled("official-o")
	if err != nil {
		t.Fatal(err)
	}
	if err := o.Up(c.URL(), key); err != nil {
		t.Fatal(err)
	}
	if err := o.WaitPeers(30*time.Second, "skein-fw"); err != nil {
		t.Fatal(err)
	}
	ost, err := o.Status()
	if err != nil {
		t.Fatal(err)
	}
	stop := keepPinging(t, ha, ost.Self.IPv4())
	defer stop()
	stopO := keepPinging(t, ho, a.selfIP())
	defer stopO()
	// Discovery has had its chances (several rounds both ways): still relayed.
	time.Sleep(6 * time.Second)
	if p := a.pathOf("official-o"); !strings.HasPrefix(p, "relay ") {
		t.Fatalf("skein-fw→official-o %q behind its firewall, want relay", p)
	}
	const fix = "sudo nft insert rule inet filter input udp dport 41641 accept"
	rep := a.why("official-o")
	t.Logf("why: path %s, pings %+v, causes %v", rep.Path, rep.Pings, causeCodes(rep))
	if rep.Path != "relay" || len(rep.Causes) == 0 || rep.Causes[0].Code != ipc.CauseFirewall || rep.Causes[0].Fix != fix {
		t.Fatalf("why: %+v, want relay with %s first and fix %q", rep, ipc.CauseFirewall, fix)
	}
	human := a.cli("why", "official-o")
	if !strings.Contains(human.stdout, "[firewall_inbound]") || !strings.Contains(human.stdout, "fix: "+fix) {
		t.Errorf("skein why official-o:\n%s", human.stdout)
	}
	st := statusJSON(t, a.cli("status", "--json"))
	if p := a.peer(st, "official-o"); p == nil || len(p.RelayCauses) == 0 || p.RelayCauses[0] != ipc.CauseFirewall {
		t.Errorf("status --json relayCauses of official-o: %+v", p)
	}
	ping := a.cli("ping", "-c", "2", "official-o")
	if ping.code != 1 || !strings.Contains(ping.stderr, "fix: "+fix) {
		t.Errorf("skein ping without a direct path: exit %d, stderr %q", ping.code, ping.stderr)
	}

	// The fix, as printed (root already).
	args := strings.Fields(strings.TrimPrefix(fix, "sudo "))
	if out, err := ha.Run(args[0], args[1:]...); err != nil {
		t.Fatalf("%s: %v\n%s", fix, err, out)
	}
	opened := time.Now()
	took := directWithin(t, opened, 5*time.Second, map[string]func() string{
		"skein-fw→official-o": func() string { return a.pathOf("official-o") },
		"official-o→skein-fw": func() string { return officialPath(t, o, "skein-fw") },
	})
	t.Logf("direct after the port was opened: %v", took)
	if rep := a.why("official-o"); rep.Path != "direct" || len(rep.Causes) != 0 {
		t.Errorf("why once direct: %+v", rep)
	}
	stop()
	stopO()
	a.stop()
}

// TestWhyUDPBlocked: on a network that drops all UDP the peer is relayed and `skein why` says
// UDP is blocked.
func TestWhyUDPBlocked(t *testing.T) {
	t.Parallel()
	l := lab.New(t)
	tn, err := l.StartTailnet("lab", "alpha-ts")
	if err != nil {
		t.Fatal(err)
	}
	h, err := l.AddHost("skein-noudp")
	if err != nil {
		t.Fatal(err)
	}
	if err := h.BlockUDP(); err != nil {
		t.Fatal(err)
	}
	n := startNodeOn(t, h)
	mustOK(t, n.cli("up", "--login-server", tn.Control.URL(), "--auth-key", tn.AuthKey, "--hostname", "skein-noudp"), "skein up")
	lab.Eventually(t, 30*time.Second, func() error {
		if r := n.cli("ping", "-c", "1", "--until-direct=false", "alpha-ts"); r.code != 0 {
			return fmt.Errorf("no pong from alpha-ts: %s%s", r.stdout, r.stderr)
		}
		return nil
	})
	rep := n.why("alpha-ts")
	t.Logf("why: path %s, pings %+v, causes %+v", rep.Path, rep.Pings, rep.Causes)
	if rep.Path != "relay" || len(rep.Causes) == 0 || rep.Causes[0].Code != ipc.CauseUDPBlocked || !strings.Contains(rep.Causes[0].Fix, "allow outgoing UDP") {
		t.Fatalf("why with UDP blocked: %+v", rep)
	}
	n.stop()
}

// TestWhyPeerOffline: a stopped peer is named offline, with the command that starts it.
func TestWhyPeerOffline(t *testing.T) {
	t.Parallel()
	_, tn, n := joinedNode(t, "skein-off", "alpha-ts")
	alpha := tn.Peer("alpha-ts")
	if err := alpha.Stop(); err != nil {
		t.Fatal(err)
	}
	lab.Eventually(t, 90*time.Second, func() error {
		if p := n.peer(n.status(), "alpha-ts"); p == nil || p.Online {
			return fmt.Errorf("alpha-ts still online in skeind's netmap")
		}
		return nil
	})
	rep := n.why("alpha-ts")
	t.Logf("why: %+v", rep)
	if len(rep.Causes) != 1 || rep.Causes[0].Code != ipc.CausePeerOffline || !strings.Contains(rep.Causes[0].Fix, "tailscale up") {
		t.Fatalf("why for a stopped peer: %+v", rep)
	}
	n.stop()
}
