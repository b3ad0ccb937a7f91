package forwarding

import (
	"strings"
	"testing"
)

func warningsText(m *Manager) string { return strings.Join(m.Warnings(), "\n") }

func expectWarning(t *testing.T, m *Manager, substrs ...string) {
	t.Helper()
	w := warningsText(m)
	for _, s := range substrs {
		if !strings.Contains(w, s) {
			t.Errorf("Warnings lack %q:\n%s", s, w)
		}
	}
}

func expectNoWarning(t *testing.T, m *Manager, substr string) {
	t.Helper()
	if w := warningsText(m); strings.Contains(w, substr) {
		t.Errorf("Warnings mention %q:\n%s", substr, w)
	}
}

func TestNoWarningsOnCleanHost(t *testing.T) {
	e := newEnv(t)
	e.fakeTun()
	m := e.newManager()
	defer m.Close()
	mustSet(t, m, exitConfig())
	if w := m.Warnings(); len(w) != 0 {
		t.Errorf("Warnings on a clean namespace: %q", w)
	}
}

// R24: foreign forward chains with policy drop are reported, left alone,
// and the warning goes away once they accept our traffic.
func TestWarningForeignForwardDrop(t *testing.T) {
	e := newEnv(t)
	e.fakeTun()
	e.nftScript(`
table inet fw {
	chain myfwd {
		type filter hook forward priority filter; policy drop;
	}
}`)
	before := e.ruleset()
	m := e.newManager()
	mustSet(t, m, routerConfig())
	expectWarning(t, m, "nftables chain inet fw myfwd drops forwarded traffic",
		`nft insert rule inet fw myfwd iifname "skt0" accept`)

	e.nft("insert", "rule", "inet", "fw", "myfwd", "iifname", "skt0", "accept")
	expectWarning(t, m, "nftables chain inet fw myfwd") // replies still dropped
	e.nft("insert", "rule", "inet", "fw", "myfwd", "oifname", "skt0", "ct", "state", "established,related", "accept")
	expectNoWarning(t, m, "inet fw")

	if err := m.Close(); err != nil {
		t.Fatal(err)
	}
	e.nft("flush", "chain", "inet", "fw", "myfwd")
	if got := e.ruleset(); got != before {
		t.Errorf("foreign table changed:%s", diffText(before, got))
	}
}

// A catch-all reject at the end of a policy-accept chain counts as well.
func TestWarningForeignTrailingReject(t *testing.T) {
	e := newEnv(t)
	e.fakeTun()
	e.nftScript(`
table ip guard {
	chain FWD {
		type filter hook forward priority filter; policy accept;
		ct state established,related accept
		counter reject
	}
}`)
	m := e.newManager()
	defer m.Close()
	mustSet(t, m, routerConfig())
	expectWarning(t, m, "nftables chain ip guard FWD drops forwarded traffic")
	e.nft("insert", "rule", "ip", "guard", "FWD", "iifname", "skt0", "accept")
	expectNoWarning(t, m, "ip guard")
}

func TestWarningIptablesNft(t *testing.T) {
	e := newEnv(t)
	e.fakeTun()
	if !haveCmd("iptables-nft") {
		t.Fatal("needs iptables-nft: make deps installs it")
	}
	e.run("iptables-nft", "-P", "FORWARD", "DROP")
	e.run("iptables-nft", "-N", "DOCKER-USER")
	e.run("iptables-nft", "-A", "FORWARD", "-j", "DOCKER-USER")
	before := e.ruleset()
	m := e.newManager()
	mustSet(t, m, routerConfig())
	expectWarning(t, m, "iptables (table ip filter) chain FORWARD drops forwarded traffic",
		"iptables -I DOCKER-USER -i skt0 -j ACCEPT")
	e.run("iptables-nft", "-I", "DOCKER-USER", "-i", tunName, "-j", "ACCEPT")
	e.run("iptables-nft", "-I", "DOCKER-USER", "-o", tunName, "-m", "conntrack", "--ctstate", "RELATED,ESTABLISHED", "-j", "ACCEPT")
	expectNoWarning(t, m, "FORWARD")
	if err := m.Close(); err != nil {
		t.Fatal(err)
	}
	e.run("iptables-nft", "-F", "DOCKER-USER")
	if got := e.ruleset(); got != before {
		t.Errorf("foreign rules changed:%s", diffText(before, got))
	}
}

func TestWarningUFW(t *testing.T) {
	for _, bin := range []string{"iptables-nft", "iptables-legacy"} {
		t.Run(bin, func(t *testing.T) {
			e := newEnv(t)
			e.fakeTun()
			if !haveCmd(bin) {
				t.Fatal("needs " + bin + ": make deps installs it")
			}
			// Roughly what ufw's default "deny (routed)" looks like.
			e.run(bin, "-P", "FORWARD", "DROP")
			for _, ch := range []string{"ufw-before-forward", "ufw-user-forward"} {
				e.run(bin, "-N", ch)
				e.run(bin, "-A", "FORWARD", "-j", ch)
			}
			e.run(bin, "-A", "ufw-before-forward", "-m", "conntrack", "--ctstate", "RELATED,ESTABLISHED", "-j", "ACCEPT")
			m := e.newManager()
			defer m.Close()
			mustSet(t, m, routerConfig())
			expectWarning(t, m, "ufw is active", "`ufw route allow in on skt0`")
			if n := strings.Count(warningsText(m), "ufw is active"); n != 1 {
				t.Errorf("ufw reported %d times", n)
			}
			// What `ufw route allow in on skt0` adds.
			e.run(bin, "-A", "ufw-user-forward", "-i", tunName, "-j", "ACCEPT")
			expectNoWarning(t, m, "ufw")
		})
	}
}

func TestWarningLegacyIptables(t *testing.T) {
	e := newEnv(t)
	e.fakeTun()
	if !haveCmd("iptables-legacy") {
		t.Fatal("needs iptables-legacy: make deps installs it")
	}
	m := e.newManager()
	defer m.Close()
	mustSet(t, m, routerConfig())
	e.run("iptables-legacy", "-L", "FORWARD") // creates the legacy filter table, policy ACCEPT
	expectNoWarning(t, m, "legacy")
	e.run("iptables-legacy", "-P", "FORWARD", "DROP")
	e.run("ip6tables-legacy", "-P", "FORWARD", "DROP")
	expectWarning(t, m, "legacy iptables chain FORWARD drops forwarded traffic",
		"iptables -I FORWARD -i skt0 -j ACCEPT", "ip6tables -I FORWARD -i skt0 -j ACCEPT")
	e.run("iptables-legacy", "-A", "FORWARD", "-i", tunName+"+", "-j", "ACCEPT") // wildcard: not ours exactly
	e.run("iptables-legacy", "-A", "FORWARD", "-o", tunName, "-j", "ACCEPT")
	expectWarning(t, m, "iptables -I FORWARD -i skt0 -j ACCEPT")
	e.run("iptables-legacy", "-A", "FORWARD", "-i", tunName, "-j", "ACCEPT")
	e.run("ip6tables-legacy", "-A", "FORWARD", "-i", tunName, "-j", "ACCEPT")
	e.run("ip6tables-legacy", "-A", "FORWARD", "-m", "state", "--state", "ESTABLISHED", "-j", "ACCEPT")
	expectNoWarning(t, m, "legacy")
}

func TestWarningFirewalld(t *testing.T) {
	e := newEnv(t)
	e.fakeTun()
	e.nftScript(`
table inet firewalld {
	chain filter_FORWARD {
		type filter hook forward priority filter + 10; policy accept;
		reject with icmpx admin-prohibited
	}
}`)
	m := e.newManager()
	defer m.Close()
	mustSet(t, m, routerConfig())
	expectWarning(t, m, "firewalld is running", "firewall-cmd --permanent --zone=trusted --add-interface=skt0")
	if n := len(m.Warnings()); n != 1 {
		t.Errorf("want only the firewalld warning, got %q", m.Warnings())
	}
}

func TestWarningSysctls(t *testing.T) {
	e := newEnv(t)
	e.fakeTun()
	m := e.newManager()
	defer m.Close()

	c := routerConfig()
	c.IPv6 = false
	mustSet(t, m, c)
	expectWarning(t, m, "IPv6 routes are advertised but IPv6 forwarding is not enabled")

	mustSet(t, m, routerConfig())
	e.writeSysctl("net/ipv6/conf/all/disable_ipv6", "1")
	expectWarning(t, m, "`sysctl -w net.ipv6.conf.all.disable_ipv6=0`")
	e.writeSysctl("net/ipv6/conf/all/disable_ipv6", "0")

	e.writeSysctl("net/ipv6/conf/all/forwarding", "0")
	expectWarning(t, m, "`sysctl -w net.ipv6.conf.all.forwarding=1`")
	e.writeSysctl("net/ipv4/ip_forward", "0")
	expectWarning(t, m, "`sysctl -w net.ipv4.ip_forward=1`")
	mustSet(t, m, routerConfig())

	e.writeSysctl("net/ipv4/conf/"+tunName+"/forwarding", "0")
	expectWarning(t, m, "tailnet traffic is not forwarded (net.ipv4.conf.skt0.forwarding=0): `sysctl -w net.ipv4.conf.skt0.forwarding=1`")

	// Forwarding not requested: nothing to warn about.
	c.Forward = false
	mustSet(t, m, c)
	if w := m.Warnings(); len(w) != 0 {
		t.Errorf("Warnings without Forward: %q", w)
	}
}
