package lab_test

import (
	"fmt"
	"net/netip"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/skeinvpn/skein/internal/lab"
	"github.com/skeinvpn/skein/ipc"
)

// profileState is what a profile may change on its host: HostState (rules, routes, addresses,
// nftables, forwarding, links) and the namespace's resolv.conf, with the TUN device's random
// link-local address (new with every TUN) masked.
func profileState(t testing.TB, h *lab.Host) string {
	t.Helper()
	s, err := h.HostState()
	if err != nil {
		t.Fatal(err)
	}
	rc, err := h.Run("cat", "/etc/resolv.conf")
	if err != nil {
		t.Fatal(err)
	}
	return tunLinkLocal.ReplaceAllString(s, "fe80::X dev skein0") + "# resolv.conf\n" + rc
}

func peerHostNames(st ipc.Status) []string {
	var out []string
	for _, p := range st.Peers {
		out = append(out, p.HostName)
	}
	slices.Sort(out)
	return out
}

// TestProfileSwitch: two Headscale users whose policy keeps them apart (two tailnets as far as
// each node sees), one official peer each; skeind logs into both as profiles and switches
// between them five times. Each time: the right profile, self address and peers, traffic to
// the right peer only, and the host exactly as it was the first time that profile ran (no rule,
// route, address or DNS setting of the other left behind). At the end, down: as before skeind.
func TestProfileSwitch(t *testing.T) {
	t.Parallel()
	l := lab.New(t)
	c, err := l.StartControl()
	if err != nil {
		t.Fatal(err)
	}
	keys, err := c.SeparateUsers("alice", "bob")
	if err != nil {
		t.Fatal(err)
	}
	official := map[string]netip.Addr{}
	for _, u := range []string{"alice", "bob"} {
		h := mustHost(t, l, u+"-ts")
		ts, err := h.StartTailscaled(u + "-ts")
		if err != nil {
			t.Fatal(err)
		}
		if err := ts.Up(c.URL(), keys[u]); err != nil {
			t.Fatal(err)
		}
		st, err := ts.Status()
		if err != nil {
			t.Fatal(err)
		}
		official[u] = st.Self.IPv4()
	}

	skHost := mustHost(t, l, "sk-desk")
	before := profileState(t, skHost)
	n := startNodeOn(t, skHost)
	type prof struct {
		self  netip.Addr
		peer  string
		state string
	}
	profs := map[string]*prof{}
	running := func(user string) ipc.Status {
		var st ipc.Status
		lab.Eventually(t, 30*time.Second, func() error {
			st = n.status()
			if st.State != ipc.StateRunning || st.Profile == nil || st.Profile.Name != user || st.Self == nil {
				return fmt.Errorf("state %s, profile %+v", st.State, st.Profile)
			}
			if got := peerHostNames(st); !slices.Equal(got, []string{user + "-ts"}) {
				return fmt.Errorf("profile %s sees peers %v", user, got)
			}
			return nil
		})
		return st
	}
	reach := func(user string, want bool) {
		t.Helper()
		ip := official[user].String()
		if want {
			lab.Eventually(t, 20*time.Second, func() error {
				out, err := skHost.Run("ping", "-c1", "-W2", ip)
				if err != nil {
					return fmt.Errorf("ping %s (%s-ts): %v %s", ip, user, err, out)
				}
				return nil
			})
			return
		}
		if out, err := skHost.Run("ping", "-c1", "-W1", ip); err == nil {
			t.Errorf("%s-ts (%s) reachable from the other profile: %s", user, ip, out)
		}
	}
	for _, u := range []string{"alice", "bob"} {
		mustOK(t, n.cli("login", "--nickname", u, "--login-server", c.URL(), "--auth-key", keys[u], "--hostname", "sk-desk"), "skein login --nickname "+u)
		st := running(u)
		reach(u, true)
		profs[u] = &prof{self: firstV4(st.Self.Addresses), peer: u + "-ts"}
		// The host as this profile leaves it once settled.
		profs[u].state = settledState(t, skHost, "")
	}
	if profs["alice"].self == profs["bob"].self {
		t.Fatalf("both profiles have the address %v", profs["alice"].self)
	}
	r := n.cli("switch", "--list")
	t.Logf("skein switch --list:\n%s", r.stdout)
	if r.code != 0 || !strings.Contains(r.stdout, "bob*") || !strings.Contains(r.stdout, "alice ") {
		t.Fatalf("switch --list (exit %d):\n%s%s", r.code, r.stdout, r.stderr)
	}

	for i := range 5 {
		u, other := "alice", "bob"
		if i%2 == 1 {
			u, other = "bob", "alice"
		}
		start := time.Now()
		r := n.cli("switch", u)
		mustOK(t, r, "skein switch "+u)
		st := running(u)
		took := time.Since(start)
		if got := firstV4(st.Self.Addresses); got != profs[u].self {
			t.Errorf("switch %d to %s: self %v, want %v", i+1, u, got, profs[u].self)
		}
		reach(u, true)
		reach(other, false)
		if d := lab.DiffLines(profs[u].state, settledState(t, skHost, profs[u].state)); d != "" {
			t.Errorf("switch %d to %s: the host differs from when %s last ran:\n%s", i+1, u, u, d)
		}
		if out, _ := skHost.Run("ip", "addr"); strings.Contains(out, profs[other].self.String()+"/") {
			t.Errorf("switch %d: %s's address %v still on the host:\n%s", i+1, other, profs[other].self, out)
		}
		t.Logf("switch %d to %s: running with the right peers in %v (%s)", i+1, u, took.Round(time.Millisecond), strings.TrimSpace(r.stderr))
	}

	mustOK(t, n.cli("down"), "skein down")
	n.stop()
	if d := lab.DiffLines(before, profileState(t, skHost)); d != "" {
		t.Errorf("host after down + stop differs from before skeind:\n%s", d)
	}
}

// settledState waits until the host's state stops changing (the data plane adds routes for
// peers and DNS as the map settles) and, with want set, until it equals want, and returns it.
func settledState(t testing.TB, h *lab.Host, want string) string {
	t.Helper()
	var last string
	stable := 0
	for deadline := time.Now().Add(20 * time.Second); time.Now().Before(deadline); time.Sleep(300 * time.Millisecond) {
		s := profileState(t, h)
		if want != "" && s == want {
			return s
		}
		if s == last {
			stable++
		} else {
			stable = 0
		}
		last = s
		if want == "" && stable >= 3 {
			return s
		}
	}
	return last
}

func firstV4(as []netip.Addr) netip.Addr {
	for _, a := range as {
		if a.Is4() {
			return a
		}
	}
	return netip.Addr{}
}

// leakCounter counts, on h, packets to dst that leave by any interface but the tunnel: with an
// exit node in use, each one is internet traffic sent in clear.
type leakCounter struct {
	h *lab.Host
}

var nftCounter = regexp.MustCompile(`counter packets (\d+) bytes (\d+)`)

func newLeakCounter(t testing.TB, h *lab.Host, dst netip.Addr) *leakCounter {
	t.Helper()
	rules := `table inet skein_leakwatch {
	chain post {
		type filter hook postrouting priority 0; policy accept;
		oifname != "skein0" ip daddr ` + dst.String() + ` counter
	}
}`
	cmd := h.Command(t.Context(), "nft", "-f", "-")
	cmd.Stdin = strings.NewReader(rules)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("nft: %v %s", err, out)
	}
	lc := &leakCounter{h: h}
	t.Cleanup(lc.remove)
	return lc
}

func (lc *leakCounter) packets(t testing.TB) int {
	t.Helper()
	out, err := lc.h.Run("nft", "list", "table", "inet", "skein_leakwatch")
	if err != nil {
		t.Fatalf("nft list: %v %s", err, out)
	}
	m := nftCounter.FindStringSubmatch(out)
	if m == nil {
		t.Fatalf("no counter in:\n%s", out)
	}
	n, _ := strconv.Atoi(m[1])
	return n
}

func (lc *leakCounter) remove() { lc.h.Run("nft", "delete", "table", "inet", "skein_leakwatch") }

// TestAutoExitNodeFailover: with --exit-node=auto:any, skeind uses one of two official exit
// nodes; when that one stops, it moves to the other by itself, and meanwhile no packet for the
// internet leaves the host in clear (counted on the host's own egress while a client keeps
// connecting). With neither left, traffic stays blocked; clearing the exit node restores the
// direct path.
func TestAutoExitNodeFailover(t *testing.T) {
	t.Parallel()
	l, c := labWithUser(t)
	key, err := c.PreAuthKey("lab", true, false)
	if err != nil {
		t.Fatal(err)
	}
	web, err := mustHost(t, l, "web").StartWeb()
	if err != nil {
		t.Fatal(err)
	}
	exits := map[string]*lab.Tailscaled{}
	public := map[string]netip.Addr{}
	for _, name := range []string{"exit-a", "exit-b"} {
		exits[name], public[name] = officialExit(t, c, key, name)
	}
	home, err := l.AddNAT("home", lab.EasyNAT)
	if err != nil {
		t.Fatal(err)
	}
	skHost, err := home.AddHost("sk-auto")
	if err != nil {
		t.Fatal(err)
	}
	n := startNodeWith(t, skHost, true)
	mustOK(t, n.cli("up", "--login-server", c.URL(), "--auth-key", key, "--hostname", "sk-auto"), "skein up")
	lab.Eventually(t, 30*time.Second, func() error {
		st := n.status()
		for name := range exits {
			if p := n.peer(st, name); p == nil || !p.ExitNodeOption || !p.Online {
				return fmt.Errorf("%s not offered yet: %+v", name, p)
			}
		}
		return nil
	})
	wantCaller(t, web, skHost, home.PublicAddr(), "no exit node")
	r := n.cli("exit-node", "suggest")
	t.Logf("skein exit-node suggest: %s", strings.TrimSpace(r.stdout))
	if r.code != 0 || !strings.Contains(r.stdout, "Suggested exit node: exit-") {
		t.Errorf("exit-node suggest (exit %d): %s%s", r.code, r.stdout, r.stderr)
	}

	mustOK(t, n.cli("set", "--exit-node=auto:any"), "set --exit-node=auto:any")
	var first string
	lab.Eventually(t, 20*time.Second, func() error {
		st := n.status()
		if st.ExitNode == nil || !st.ExitNode.Auto || !st.ExitNode.Online {
			return fmt.Errorf("exit node %+v", st.ExitNode)
		}
		first = st.ExitNode.Name
		return nil
	})
	second := map[string]string{"exit-a": "exit-b", "exit-b": "exit-a"}[first]
	wantCaller(t, web, skHost, public[first], "auto:any on "+first)

	// From here on, count every packet to the web host that does not go into the tunnel, while
	// a client keeps trying to reach it.
	leaks := newLeakCounter(t, skHost, web.Addr())
	var tries, answered atomic.Int64
	stop := make(chan struct{})
	var wg sync.WaitGroup
	wg.Go(func() {
		for {
			select {
			case <-stop:
				return
			case <-time.After(100 * time.Millisecond):
			}
			tries.Add(1)
			if err := tcpReachable(skHost, netip.AddrPortFrom(web.Addr(), 80), time.Second); err == nil {
				answered.Add(1)
			}
		}
	})
	defer func() {
		select {
		case <-stop:
		default:
			close(stop)
		}
		wg.Wait()
	}()

	stopped := time.Now()
	if err := exits[first].Stop(); err != nil {
		t.Fatal(err)
	}
	lab.Eventually(t, 60*time.Second, func() error {
		st := n.status()
		if st.ExitNode == nil || st.ExitNode.Name != second || !st.ExitNode.Online {
			return fmt.Errorf("exit node %+v", st.ExitNode)
		}
		return nil
	})
	moved := time.Since(stopped)
	wantCaller(t, web, skHost, public[second], "auto:any moved to "+second)
	t.Logf("%s stopped: skeind uses %s after %v, and the web host sees it %v after the stop",
		first, second, moved.Round(100*time.Millisecond), time.Since(stopped).Round(100*time.Millisecond))
	if p := n.stored().Prefs; p.AutoExitNode != "any" || p.ExitNodeID == "" {
		t.Errorf("stored prefs %+v", p)
	}

	// Neither left: blocked, never in clear.
	if err := exits[second].Stop(); err != nil {
		t.Fatal(err)
	}
	lab.Eventually(t, 60*time.Second, func() error {
		st := n.status()
		for _, h := range st.Health {
			if h.Code == ipc.IssueNoExitNode {
				return nil
			}
		}
		return fmt.Errorf("no %q issue: %+v / %+v", ipc.IssueNoExitNode, st.ExitNode, st.Health)
	})
	for range 3 {
		if got, err := web.CallerAddr(skHost, 2*time.Second); err == nil {
			t.Fatalf("with no exit node left the web host answered, seeing %v", got)
		}
	}
	close(stop)
	wg.Wait()
	if n := leaks.packets(t); n != 0 {
		t.Errorf("%d packets to the web host left the host outside the tunnel while auto:any switched", n)
	}
	t.Logf("%d connection attempts during the switch, %d answered, 0 packets in clear", tries.Load(), answered.Load())
	leaks.remove()

	mustOK(t, n.cli("set", "--exit-node="), "clear the exit node")
	wantCaller(t, web, skHost, home.PublicAddr(), "exit node cleared")
}

// TestShieldsUp: "Allow incoming connections" off (skein set --shields-up) stops an official
// peer from opening connections to Skein, while Skein's own connections to it keep working
// (replies pass); switched back, the peer connects again.
func TestShieldsUp(t *testing.T) {
	t.Parallel()
	l, tn, n := joinedNode(t, "skein-sh", "alpha-ts")
	_ = l
	alpha := tn.Peer("alpha-ts")
	st, err := alpha.Status()
	if err != nil {
		t.Fatal(err)
	}
	alphaIP := st.Self.IPv4()
	skIP := n.selfIP()
	listenTCP(t, n.host, netip.AddrPortFrom(skIP, 8080))
	listenTCP(t, alpha.Host(), netip.AddrPortFrom(alphaIP, 8081))
	in := netip.AddrPortFrom(skIP, 8080)
	out := netip.AddrPortFrom(alphaIP, 8081)
	lab.Eventually(t, 30*time.Second, func() error { return tcpReachable(alpha.Host(), in, 2*time.Second) })

	mustOK(t, n.cli("set", "--shields-up"), "set --shields-up")
	lab.Eventually(t, 10*time.Second, func() error {
		if tcpReachable(alpha.Host(), in, time.Second) == nil {
			return fmt.Errorf("alpha-ts still connects to Skein with shields up")
		}
		return nil
	})
	for range 3 {
		if err := tcpReachable(n.host, out, 3*time.Second); err != nil {
			t.Fatalf("Skein cannot reach alpha-ts with shields up (replies must pass): %v", err)
		}
	}
	if !n.stored().Prefs.ShieldsUp {
		t.Error("shields up not stored")
	}
	mustOK(t, n.cli("set", "--shields-up=false"), "set --shields-up=false")
	lab.Eventually(t, 10*time.Second, func() error { return tcpReachable(alpha.Host(), in, 2*time.Second) })
}
