package lab_test

import (
	"context"
	"fmt"
	"net/netip"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/skeinvpn/skein/internal/lab"
	"github.com/skeinvpn/skein/ipc"
)

// officialExit starts an official tailscaled that offers to be an exit node (forwarding on,
// nftables firewall mode so it masquerades), approved in Headscale. It sits behind its own
// NAT, as a cloud VM would: an exit node does not forward to its own LAN, and the lab's
// public hosts share one LAN. The web hosts see the NAT's public address.
func officialExit(t testing.TB, c *lab.Control, key, name string, extraUp ...string) (*lab.Tailscaled, netip.Addr) {
	t.Helper()
	nat, err := c.Host().Lab().AddNAT(name+"-nat", lab.EasyNAT)
	if err != nil {
		t.Fatal(err)
	}
	h, err := nat.AddHost(name)
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range []string{"net.ipv4.ip_forward=1", "net.ipv6.conf.all.forwarding=1"} {
		if out, err := h.Run("sysctl", "-qw", s); err != nil {
			t.Fatalf("sysctl %s: %v %s", s, err, out)
		}
	}
	ts, err := h.StartTailscaledWith(lab.TailscaledOptions{Hostname: name, Env: []string{"TS_DEBUG_FIREWALL_MODE=nftables"}})
	if err != nil {
		t.Fatal(err)
	}
	if err := ts.Up(c.URL(), key, append([]string{"--advertise-exit-node"}, extraUp...)...); err != nil {
		t.Fatal(err)
	}
	if err := c.ApproveRoutes(name, "0.0.0.0/0", "::/0"); err != nil {
		t.Fatal(err)
	}
	return ts, nat.PublicAddr()
}

// tcpReachable reports whether a TCP connection from h to addr succeeds within d.
func tcpReachable(h *lab.Host, addr netip.AddrPort, d time.Duration) error {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	defer cancel()
	c, err := h.Dial(ctx, "tcp", addr.String())
	if err != nil {
		return err
	}
	c.Close()
	return nil
}

// listenTCP accepts and closes connections on h at addr until the test ends.
func listenTCP(t testing.TB, h *lab.Host, addr netip.AddrPort) {
	t.Helper()
	ln, err := h.Listen("tcp", addr.String())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			c.Close()
		}
	}()
}

func wantCaller(t testing.TB, web *lab.Web, from *lab.Host, want netip.Addr, what string) {
	t.Helper()
	lab.Eventually(t, 20*time.Second, func() error {
		got, err := web.CallerAddr(from, 3*time.Second)
		if err != nil {
			return fmt.Errorf("%s: %v", what, err)
		}
		if got != want {
			return fmt.Errorf("%s: web host sees %v, want %v", what, got, want)
		}
		return nil
	})
}

// TestUseOfficialExitNode: Skein behind a home NAT uses an official node as exit node; LAN
// access, exceptions, bad input, fail-closed, and crash cleanup.
func TestUseOfficialExitNode(t *testing.T) {
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
	web2, err := mustHost(t, l, "web-two").StartWeb()
	if err != nil {
		t.Fatal(err)
	}
	exit, exitPublic := officialExit(t, c, key, "exit-ts")
	plainHost := mustHost(t, l, "plain-ts")
	plain, err := plainHost.StartTailscaled("plain-ts")
	if err != nil {
		t.Fatal(err)
	}
	if err := plain.Up(c.URL(), key); err != nil {
		t.Fatal(err)
	}
	home, err := l.AddNAT("home", lab.EasyNAT)
	if err != nil {
		t.Fatal(err)
	}
	lanPC, err := home.AddHost("lanpc")
	if err != nil {
		t.Fatal(err)
	}
	lanSvc := netip.AddrPortFrom(lanPC.Addr(), 8080)
	listenTCP(t, lanPC, lanSvc)
	skHost, err := home.AddHost("sk-user")
	if err != nil {
		t.Fatal(err)
	}
	before, err := skHost.HostState()
	if err != nil {
		t.Fatal(err)
	}
	n := startNodeWith(t, skHost, true)
	mustOK(t, n.cli("up", "--login-server", c.URL(), "--auth-key", key, "--hostname", "sk-user"), "skein up")
	lab.Eventually(t, 30*time.Second, func() error {
		p := n.peer(n.status(), "exit-ts")
		if p == nil || !p.ExitNodeOption {
			return fmt.Errorf("exit-ts not offered as exit node yet: %+v", p)
		}
		if n.peer(n.status(), "plain-ts") == nil {
			return fmt.Errorf("plain-ts not in netmap")
		}
		return nil
	})
	wantCaller(t, web, skHost, home.PublicAddr(), "no exit node")

	// Bad input first: clear errors, prefs unchanged.
	prefsBefore := n.stored().Prefs
	for _, args := range [][]string{
		{"set", "--exit-node=no-such-node"},
		{"set", "--exit-node=plain-ts"},
		{"set", "--exit-node-bypass=10.0.0.0/33"},
		{"set", "--exit-node-bypass=10.0.0.1/16"},
		{"set", "--advertise-routes=not-a-cidr"},
	} {
		r := n.cli(args...)
		if r.code == 0 {
			t.Errorf("skein %v succeeded", args)
			continue
		}
		t.Logf("skein %v → exit %d: %s", args, r.code, oneLine(t, r.stderr))
	}
	if got := n.stored().Prefs; fmt.Sprint(got) != fmt.Sprint(prefsBefore) {
		t.Errorf("prefs changed by rejected input:\n%+v\n%+v", prefsBefore, got)
	}

	// Exit node on: the web host sees the exit node; the home LAN is unreachable.
	lab.Eventually(t, 10*time.Second, func() error { return tcpReachable(skHost, lanSvc, 2*time.Second) })
	mustOK(t, n.cli("set", "--exit-node=exit-ts"), "set --exit-node")
	wantCaller(t, web, skHost, exitPublic, "exit node on")
	if err := tcpReachable(skHost, lanSvc, 2*time.Second); err == nil {
		t.Errorf("LAN host reachable with an exit node and no LAN access")
	}
	st := n.status()
	if st.ExitNode == nil || !st.ExitNode.Online || st.ExitNode.Name != "exit-ts" {
		t.Errorf("status exit node: %+v", st.ExitNode)
	}
	r := n.cli("exit-node", "list")
	t.Logf("skein exit-node list:\n%s", r.stdout)
	if r.code != 0 || !strings.Contains(r.stdout, "exit-ts") || strings.Contains(r.stdout, "plain-ts") {
		t.Errorf("exit-node list (exit %d) wrong:\n%s%s", r.code, r.stdout, r.stderr)
	}
	// UDP too.
	lab.Eventually(t, 10*time.Second, func() error {
		got, err := web.UDPCallerAddr(skHost, 2*time.Second)
		if err != nil || got != exitPublic {
			return fmt.Errorf("UDP via exit node: %v %v", got, err)
		}
		return nil
	})

	// LAN access on: reachable, exit node still used for the internet.
	mustOK(t, n.cli("set", "--exit-node-allow-lan-access"), "set --exit-node-allow-lan-access")
	lab.Eventually(t, 10*time.Second, func() error {
		err := tcpReachable(skHost, lanSvc, 2*time.Second)
		if err != nil {
			out, _ := skHost.Run("sh", "-c", "ip route show table 52; ip rule; ip route get "+lanPC.Addr().String()+"; ping -c1 -W1 "+lanPC.Addr().String()+"; timeout 3 curl -sv http://"+lanPC.Addr().String()+":8080/ 2>&1; nft list ruleset")
			err = fmt.Errorf("%v; routing %+v\n%s", err, n.status().Routing, out)
		}
		return err
	})
	wantCaller(t, web, skHost, exitPublic, "exit node + LAN access")
	mustOK(t, n.cli("set", "--exit-node-allow-lan-access=false"), "LAN access off")
	lab.Eventually(t, 10*time.Second, func() error {
		if tcpReachable(skHost, lanSvc, time.Second) == nil {
			return fmt.Errorf("LAN still reachable after LAN access off")
		}
		return nil
	})

	// An exception keeps one destination on the main table.
	mustOK(t, n.cli("set", "--exit-node-bypass="+netip.PrefixFrom(web.Addr(), 32).String()), "set --exit-node-bypass")
	wantCaller(t, web, skHost, home.PublicAddr(), "exception")
	wantCaller(t, web2, skHost, exitPublic, "exit node for the rest")
	if out, _ := skHost.Run("ip", "rule", "show"); !strings.Contains(out, "to "+web.Addr().String()+" lookup main") {
		t.Errorf("no exception rule:\n%s", out)
	}

	// "Bypass routes of other VPN interfaces": a company VPN comes up later (a tun device with
	// a route); its route gets an exception by itself, and loses it when the VPN goes.
	mustOK(t, n.cli("set", "--bypass-vpn-routes"), "set --bypass-vpn-routes")
	for _, c := range [][]string{{"tuntap", "add", "dev", "wg7", "mode", "tun"}, {"addr", "add", "10.77.0.1/16", "dev", "wg7"}, {"link", "set", "wg7", "up"}} {
		if out, err := skHost.Run("ip", c...); err != nil {
			t.Fatalf("ip %v: %v %s", c, err, out)
		}
	}
	hasRule := func(want bool) func() error {
		return func() error {
			out, err := skHost.Run("ip", "rule", "show")
			if err != nil {
				return err
			}
			if strings.Contains(out, "to 10.77.0.0/16 lookup main") != want {
				return fmt.Errorf("exception rule for the other VPN present=%v, want %v:\n%s", !want, want, out)
			}
			return nil
		}
	}
	lab.Eventually(t, 10*time.Second, hasRule(true))
	if out, err := skHost.Run("ip", "link", "del", "wg7"); err != nil {
		t.Fatalf("%v %s", err, out)
	}
	lab.Eventually(t, 10*time.Second, hasRule(false))
	mustOK(t, n.cli("set", "--bypass-vpn-routes=false"), "set --bypass-vpn-routes=false")

	// Crash while the exit node is on, restart: one copy of everything, and still working.
	during, err := skHost.HostState()
	if err != nil {
		t.Fatal(err)
	}
	n.proc.Kill()
	n.start()
	lab.Eventually(t, 30*time.Second, func() error {
		now, err := skHost.HostState()
		if err != nil {
			return err
		}
		// A new TUN device gets a new random IPv6 link-local address; nothing else may differ.
		if d := lab.DiffLines(tunLinkLocal.ReplaceAllString(during, "fe80::X dev skein0"), tunLinkLocal.ReplaceAllString(now, "fe80::X dev skein0")); d != "" {
			return fmt.Errorf("host state after kill -9 and restart differs from before the crash:\n%s", d)
		}
		return nil
	})
	wantCaller(t, web2, skHost, exitPublic, "after restart")

	// Fail closed: the exit node goes away; nothing leaves in clear.
	if err := exit.Stop(); err != nil {
		t.Fatal(err)
	}
	for range 3 {
		if got, err := web2.CallerAddr(skHost, 2*time.Second); err == nil {
			t.Fatalf("with the exit node down the web host still answered, seeing %v", got)
		}
	}

	// Clear the exit node: the direct internet is back.
	mustOK(t, n.cli("set", "--exit-node="), "clear exit node")
	wantCaller(t, web2, skHost, home.PublicAddr(), "exit node cleared")

	// kill -9 again, then `skeind --cleanup`: the host is as before skeind ever ran.
	n.proc.Kill()
	if out, err := skHost.Run(n.bin, "--cleanup", "--statedir", n.statedir); err != nil {
		t.Fatalf("skeind --cleanup: %v\n%s", err, out)
	}
	after, err := skHost.HostState()
	if err != nil {
		t.Fatal(err)
	}
	if d := lab.DiffLines(before, after); d != "" {
		t.Errorf("host state after kill -9 + cleanup differs from before start:\n%s", d)
	}
}

var tunLinkLocal = regexp.MustCompile(`fe80::[0-9a-f:]+ dev skein0`)

func mustHost(t testing.TB, l *lab.Lab, name string) *lab.Host {
	t.Helper()
	h, err := l.AddHost(name)
	if err != nil {
		t.Fatal(err)
	}
	return h
}

// TestOfficialUsesSkeinExitNode: an official node routes its internet traffic through Skein.
func TestOfficialUsesSkeinExitNode(t *testing.T) {
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
	// Behind a NAT like a home server: an exit node never forwards to its own LAN, and the
	// lab's public hosts (the web host too) share one LAN.
	skNAT, err := l.AddNAT("sk-nat", lab.EasyNAT)
	if err != nil {
		t.Fatal(err)
	}
	skHost, err := skNAT.AddHost("sk-exit")
	if err != nil {
		t.Fatal(err)
	}
	before, err := skHost.HostState()
	if err != nil {
		t.Fatal(err)
	}
	n := startNodeWith(t, skHost, true)
	mustOK(t, n.cli("up", "--login-server", c.URL(), "--auth-key", key, "--hostname", "sk-exit", "--advertise-exit-node"), "skein up --advertise-exit-node")
	if err := c.ApproveRoutes("sk-exit", "0.0.0.0/0", "::/0"); err != nil {
		t.Fatal(err)
	}
	userHost := mustHost(t, l, "user-ts")
	user, err := userHost.StartTailscaled("user-ts")
	if err != nil {
		t.Fatal(err)
	}
	if err := user.Up(c.URL(), key); err != nil {
		t.Fatal(err)
	}
	wantCaller(t, web, userHost, userHost.Addr(), "no exit node")
	skIP := n.selfIP()
	lab.Eventually(t, 30*time.Second, func() error {
		_, err := user.CLI("set", "--exit-node="+skIP.String())
		return err
	})
	st := n.status()
	if st.Routing == nil || !st.Routing.Forwarding || !st.Routing.Masquerade {
		t.Errorf("status routing: %+v", st.Routing)
	}
	wantCaller(t, web, userHost, skNAT.PublicAddr(), "official via Skein exit (TCP)")
	lab.Eventually(t, 10*time.Second, func() error {
		got, err := web.UDPCallerAddr(userHost, 2*time.Second)
		if err != nil || got != skNAT.PublicAddr() {
			return fmt.Errorf("UDP via Skein exit: %v %v", got, err)
		}
		return nil
	})
	d, err := web.Download(userHost, 100<<20, 2*time.Minute)
	if err != nil {
		t.Fatalf("100 MB download via Skein exit node: %v", err)
	}
	t.Logf("100 MB via Skein exit node in %v (%.0f Mbit/s), checksum ok", d.Round(time.Millisecond), 100*8*1.048576/d.Seconds())

	// kill -9 while forwarding, then cleanup: no forwarding, nftables or routing change left.
	n.proc.Kill()
	if out, err := skHost.Run(n.bin, "--cleanup", "--statedir", n.statedir); err != nil {
		t.Fatalf("skeind --cleanup: %v\n%s", err, out)
	}
	after, err := skHost.HostState()
	if err != nil {
		t.Fatal(err)
	}
	if d := lab.DiffLines(before, after); d != "" {
		t.Errorf("host state after kill -9 + cleanup differs from before start:\n%s", d)
	}
	// And a fresh start after a crash cleans up by itself before anything else.
	n.start()
	lab.Eventually(t, 30*time.Second, func() error {
		if s := n.status(); s.State != ipc.StateRunning || s.Routing == nil || !s.Routing.Forwarding {
			return fmt.Errorf("not forwarding again: %s %+v", s.State, s.Routing)
		}
		return nil
	})
	n.proc.Kill()
	n.start()
	lab.Eventually(t, 30*time.Second, func() error {
		out, err := skHost.Run("nft", "list", "tables")
		if err != nil {
			return err
		}
		if c := strings.Count(out, "skein"); c != 1 {
			return fmt.Errorf("want one skein nftables table after restart, have:\n%s", out)
		}
		return nil
	})
	wantCaller(t, web, userHost, skNAT.PublicAddr(), "after crash and restart")
	mustOK(t, n.cli("down"), "skein down")
	n.stop()
	after, err = skHost.HostState()
	if err != nil {
		t.Fatal(err)
	}
	if d := lab.DiffLines(before, after); d != "" {
		t.Errorf("host state after down + stop differs from before start:\n%s", d)
	}
}

// TestSubnetRoutes: an official node reaches a LAN-only host behind a Skein subnet router, and
// Skein reaches one behind an official subnet router.
func TestSubnetRoutes(t *testing.T) {
	t.Parallel()
	l, c := labWithUser(t)
	key, err := c.PreAuthKey("lab", true, false)
	if err != nil {
		t.Fatal(err)
	}
	siteA, err := l.AddNAT("site-a", lab.EasyNAT)
	if err != nil {
		t.Fatal(err)
	}
	siteB, err := l.AddNAT("site-b", lab.EasyNAT)
	if err != nil {
		t.Fatal(err)
	}
	lanA, err := siteA.AddHost("lan-a")
	if err != nil {
		t.Fatal(err)
	}
	lanB, err := siteB.AddHost("lan-b")
	if err != nil {
		t.Fatal(err)
	}
	svcA, svcB := netip.AddrPortFrom(lanA.Addr(), 8080), netip.AddrPortFrom(lanB.Addr(), 8080)
	listenTCP(t, lanA, svcA)
	listenTCP(t, lanB, svcB)

	skHost, err := siteA.AddHost("sk-router")
	if err != nil {
		t.Fatal(err)
	}
	n := startNodeWith(t, skHost, true)
	mustOK(t, n.cli("up", "--login-server", c.URL(), "--auth-key", key, "--hostname", "sk-router",
		"--advertise-routes="+siteA.LAN().String(), "--accept-routes"), "skein up --advertise-routes")
	if err := c.ApproveRoutes("sk-router", siteA.LAN().String()); err != nil {
		t.Fatal(err)
	}

	tsHost, err := siteB.AddHost("ts-router")
	if err != nil {
		t.Fatal(err)
	}
	if out, err := tsHost.Run("sysctl", "-qw", "net.ipv4.ip_forward=1"); err != nil {
		t.Fatalf("%v %s", err, out)
	}
	tsr, err := tsHost.StartTailscaledWith(lab.TailscaledOptions{Hostname: "ts-router", Env: []string{"TS_DEBUG_FIREWALL_MODE=nftables"}})
	if err != nil {
		t.Fatal(err)
	}
	if err := tsr.Up(c.URL(), key, "--advertise-routes="+siteB.LAN().String(), "--accept-routes"); err != nil {
		t.Fatal(err)
	}
	if err := c.ApproveRoutes("ts-router", siteB.LAN().String()); err != nil {
		t.Fatal(err)
	}

	// Official (behind site B) → LAN host behind Skein (site A).
	lab.Eventually(t, 30*time.Second, func() error { return tcpReachable(tsHost, svcA, 2*time.Second) })
	// Skein (site A) → LAN host behind the official router (site B).
	lab.Eventually(t, 30*time.Second, func() error { return tcpReachable(skHost, svcB, 2*time.Second) })
	st := n.status()
	if st.Routing == nil || !containsPrefix(st.Routing.AcceptedRoutes, siteB.LAN()) {
		t.Errorf("accepted routes in status: %+v", st.Routing)
	}
	if p := n.peer(st, "ts-router"); p == nil || !containsPrefix(p.PrimaryRoutes, siteB.LAN()) {
		t.Errorf("ts-router's primary routes: %+v", p)
	}
	// Without --accept-routes the route goes away.
	mustOK(t, n.cli("set", "--accept-routes=false"), "set --accept-routes=false")
	lab.Eventually(t, 10*time.Second, func() error {
		if tcpReachable(skHost, svcB, time.Second) == nil {
			return fmt.Errorf("site B still reachable without --accept-routes")
		}
		return nil
	})
}

func containsPrefix(l []netip.Prefix, p netip.Prefix) bool {
	for _, x := range l {
		if x == p {
			return true
		}
	}
	return false
}

// TestPacketFilterACL: Headscale's policy allows only port 22 from bob to alice's nodes; Skein
// (alice) drops bob's port-80 connections, and a policy change applies without a restart.
func TestPacketFilterACL(t *testing.T) {
	t.Parallel()
	l := lab.New(t)
	c, err := l.StartControl()
	if err != nil {
		t.Fatal(err)
	}
	for _, u := range []string{"alice", "bob"} {
		if _, err := c.CreateUser(u); err != nil {
			t.Fatal(err)
		}
	}
	policy := func(ports string) string {
		return `{"acls": [{"action": "accept", "src": ["bob@"], "dst": ["alice@:` + ports + `"]}]}`
	}
	if err := c.SetPolicy(policy("22")); err != nil {
		t.Fatal(err)
	}
	aliceKey, err := c.PreAuthKey("alice", false, false)
	if err != nil {
		t.Fatal(err)
	}
	bobKey, err := c.PreAuthKey("bob", false, false)
	if err != nil {
		t.Fatal(err)
	}
	n := startNode(t, l, "alice-sk")
	mustOK(t, n.cli("up", "--login-server", c.URL(), "--auth-key", aliceKey, "--hostname", "alice-sk"), "skein up")
	bobHost := mustHost(t, l, "bob-ts")
	bob, err := bobHost.StartTailscaled("bob-ts")
	if err != nil {
		t.Fatal(err)
	}
	if err := bob.Up(c.URL(), bobKey); err != nil {
		t.Fatal(err)
	}
	skIP := n.selfIP()
	for _, port := range []uint16{22, 80} {
		listenTCP(t, n.host, netip.AddrPortFrom(skIP, port))
	}
	lab.Eventually(t, 30*time.Second, func() error {
		return tcpReachable(bobHost, netip.AddrPortFrom(skIP, 22), 2*time.Second)
	})
	dropped := n.status().Filter.Dropped
	if err := tcpReachable(bobHost, netip.AddrPortFrom(skIP, 80), 2*time.Second); err == nil {
		t.Fatalf("port 80 reachable although the policy allows only 22")
	}
	st := n.status()
	if st.Filter == nil || st.Filter.Dropped <= dropped || st.Filter.Rules == 0 {
		t.Errorf("filter counters did not count the drop: %+v (before: %d dropped)", st.Filter, dropped)
	}
	r := n.cli("status", "--json")
	if !strings.Contains(r.stdout, `"filter"`) {
		t.Errorf("status --json has no filter counters:\n%s", r.stdout)
	}
	start := time.Now()
	if err := c.SetPolicy(policy("22,80")); err != nil {
		t.Fatal(err)
	}
	lab.Eventually(t, 20*time.Second, func() error {
		return tcpReachable(bobHost, netip.AddrPortFrom(skIP, 80), 2*time.Second)
	})
	t.Logf("port 80 allowed %v after the policy change, without restart", time.Since(start).Round(100*time.Millisecond))
}
