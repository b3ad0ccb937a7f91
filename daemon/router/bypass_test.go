package router

import (
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/vishvananda/netlink/nl"
	"golang.org/x/sys/unix"
)

func bypassConfig() Config {
	cfg := baseConfig()
	cfg.Bypass = []netip.Prefix{
		pfx("192.168.100.7/24"), // host bits: masked
		pfx("10.0.0.0/8"),
		pfx("2001:db8:aa::/48"),
		pfx("0.0.0.0/0"),  // would disable the exit node: ignored
		pfx("10.0.0.0/8"), // twice: one rule
	}
	return cfg
}

// withPref5260 inserts lines as pref-5260 rules just before the 5270 rule of
// an `ip rule show` listing.
func withPref5260(rules string, lines ...string) string {
	var b strings.Builder
	for _, l := range lines {
		b.WriteString("5260:\t" + l + "\n")
	}
	return strings.Replace(rules, "5270:", b.String()+"5270:", 1)
}

var (
	bypassRules4 = withPref5260(wantRules4,
		"from all to 10.0.0.0/8 lookup main",
		"from all to 192.168.100.0/24 lookup main")
	bypassRules6 = withPref5260(wantRules6, "from all to 2001:db8:aa::/48 lookup main")
)

func TestBypassRules(t *testing.T) {
	e := newEnv(t)
	e.createTUN()
	r := e.newRouter()
	defer r.Close()
	mustSet(t, r, bypassConfig())
	e.assertLayout(t, bypassRules4, bypassRules6, wantTable4, wantTable6)
	assertInSync(t, r)
	if !e.logged("ignoring bypass 0.0.0.0/0") {
		t.Error("/0 bypass not reported")
	}

	// Set again: nothing changes, no duplicates.
	before := e.snapshot()
	mustSet(t, r, bypassConfig())
	mustSet(t, r, bypassConfig())
	if got := e.snapshot(); got != before {
		t.Errorf("repeated Set changed state:%s", diffText(before, got))
	}

	// Diff: 10.0.0.0/8 and the IPv6 one go, 172.16.0.0/12 comes, the
	// unchanged rule stays where it is.
	cfg := baseConfig()
	cfg.Bypass = []netip.Prefix{pfx("172.16.0.0/12"), pfx("192.168.100.0/24")}
	mustSet(t, r, cfg)
	e.assertLayout(t,
		withPref5260(wantRules4,
			"from all to 192.168.100.0/24 lookup main",
			"from all to 172.16.0.0/12 lookup main"),
		wantRules6, wantTable4, wantTable6)
	assertInSync(t, r)

	mustSet(t, r, baseConfig())
	e.assertLayout(t, wantRules4, wantRules6, wantTable4, wantTable6)
}

// TestBypassRouting checks what the rules are for: with an exit node, the
// exceptions keep the host's routes, everything else takes the tunnel.
func TestBypassRouting(t *testing.T) {
	e := newEnv(t)
	e.otherDev()
	e.ip("addr", "add", "192.0.2.1/24", "dev", "skt1")
	e.ip("route", "add", "default", "via", "192.0.2.254", "dev", "skt1")
	e.ip("-6", "addr", "add", "2001:db8:1::1/64", "dev", "skt1", "nodad")
	e.ip("-6", "route", "add", "default", "via", "2001:db8:1::fe", "dev", "skt1")
	e.createTUN()
	r := e.newRouter()
	defer r.Close()
	cfg := bypassConfig()
	cfg.Routes = append(cfg.Routes, pfx("0.0.0.0/0"), pfx("::/0"))
	mustSet(t, r, cfg)

	for _, c := range []struct{ dst, want string }{
		{"10.1.2.3", "via 192.0.2.254 dev skt1"},
		{"192.168.100.200", "via 192.0.2.254 dev skt1"},
		{"198.51.100.7", "dev skt0 table 52"},
		{"2001:db8:aa::1", "via 2001:db8:1::fe dev skt1"},
		{"2001:db8:bb::1", "dev skt0 table 52"},
	} {
		if got := e.ip("route", "get", c.dst); !strings.Contains(got, c.want) {
			t.Errorf("route get %s: %s, want %q", c.dst, got, c.want)
		}
	}
}

// addRuleDup adds "to dst lookup main" at PrefBypassTo without NLM_F_EXCL,
// which `ip rule add` always sets: the only way to get exact duplicates.
func addRuleDup(t *testing.T, dst netip.Prefix) {
	t.Helper()
	req := nl.NewNetlinkRequest(unix.RTM_NEWRULE, unix.NLM_F_CREATE|unix.NLM_F_ACK)
	msg := nl.NewRtMsg()
	msg.Family = uint8(famOf(dst))
	msg.Dst_len = uint8(dst.Bits())
	msg.Table = unix.RT_TABLE_MAIN
	msg.Type = unix.FR_ACT_TO_TBL
	msg.Protocol, msg.Scope = 0, 0
	req.AddData(msg)
	req.AddData(nl.NewRtAttr(unix.FRA_DST, dst.Addr().AsSlice()))
	prio := make([]byte, 4)
	nl.NativeEndian().PutUint32(prio, PrefBypassTo)
	req.AddData(nl.NewRtAttr(unix.FRA_PRIORITY, prio))
	if _, err := req.Execute(unix.NETLINK_ROUTE, 0); err != nil {
		t.Fatalf("add duplicate rule: %v", err)
	}
}

func TestBypassForeignAndDuplicates(t *testing.T) {
	e := newEnv(t)
	// Not ours: other selectors or another table at our pref.
	e.ip("rule", "add", "pref", "5260", "to", "10.0.0.0/8", "fwmark", "0x1", "lookup", "main")
	e.ip("rule", "add", "pref", "5260", "from", "192.0.2.0/24", "to", "10.2.0.0/16", "lookup", "main")
	e.ip("rule", "add", "pref", "5260", "to", "10.3.0.0/16", "lookup", "100")
	e.ip("rule", "add", "pref", "5260", "iif", "lo", "to", "10.4.0.0/16", "lookup", "main")
	e.ip("-6", "rule", "add", "pref", "5260", "to", "2001:db8:ff::/48", "fwmark", "0x1", "lookup", "main")
	foreign4 := []string{
		"from all to 10.0.0.0/8 fwmark 0x1 lookup main",
		"from 192.0.2.0/24 to 10.2.0.0/16 lookup main",
		"from all to 10.3.0.0/16 lookup 100",
		"from all to 10.4.0.0/16 iif lo lookup main",
	}
	foreign6 := "from all to 2001:db8:ff::/48 fwmark 0x1 lookup main"
	// Ours by shape, left over from an earlier config: removed.
	e.ip("rule", "add", "pref", "5260", "to", "10.9.0.0/16", "lookup", "main")
	e.createTUN()
	r := e.newRouter()
	defer r.Close()

	mustSet(t, r, bypassConfig())
	want4 := withPref5260(wantRules4, append(foreign4,
		"from all to 10.0.0.0/8 lookup main",
		"from all to 192.168.100.0/24 lookup main")...)
	want6 := withPref5260(wantRules6, foreign6, "from all to 2001:db8:aa::/48 lookup main")
	e.assertLayout(t, want4, want6, wantTable4, wantTable6)
	assertInSync(t, r)
	if !e.logged("leaving foreign rule v4 5260: (with selectors) to 10.2.0.0/16") {
		t.Error("foreign rule with a source selector not reported")
	}

	// Exact duplicates of ours: Check is content, Set keeps one.
	addRuleDup(t, pfx("192.168.100.0/24"))
	addRuleDup(t, pfx("2001:db8:aa::/48"))
	if got := strings.Count(e.ip("rule", "show"), "to 192.168.100.0/24 lookup main"); got != 2 {
		t.Fatalf("duplicate not created: %d rules", got)
	}
	assertInSync(t, r)
	mustSet(t, r, bypassConfig())
	e.assertLayout(t, want4, want6, wantTable4, wantTable6)

	// Our 10.0.0.0/8 rule comes after a foreign one the kernel cannot tell
	// apart in a delete request: dropping it from the config must not
	// take the foreign rule with it.
	cfg := bypassConfig()
	cfg.Bypass = []netip.Prefix{pfx("192.168.100.0/24"), pfx("2001:db8:aa::/48")}
	mustSet(t, r, cfg)
	e.assertLayout(t, want4, want6, wantTable4, wantTable6)
	if !e.logged("keeping extra rule v4 5260: to 10.0.0.0/8 lookup 254: deleting it would delete foreign") {
		t.Error("shadowed rule not reported")
	}
	// The second one goes as soon as the foreign rule is gone.
	e.ip("rule", "del", "pref", "5260", "to", "10.0.0.0/8", "fwmark", "0x1", "lookup", "main")
	mustSet(t, r, cfg)
	e.assertLayout(t,
		withPref5260(wantRules4, append(foreign4[1:], "from all to 192.168.100.0/24 lookup main")...),
		want6, wantTable4, wantTable6)
}

func TestBypassCloseAndCleanup(t *testing.T) {
	for _, crash := range []bool{false, true} {
		name := "Close"
		if crash {
			name = "Cleanup"
		}
		t.Run(name, func(t *testing.T) {
			e := newEnv(t)
			e.ip("rule", "add", "pref", "5260", "to", "10.3.0.0/16", "lookup", "100")
			e.ip("-6", "rule", "add", "pref", "5260", "to", "2001:db8:ff::/48", "fwmark", "0x1", "lookup", "main")
			before := e.snapshot()
			e.createTUN()
			r := e.newRouter()
			mustSet(t, r, bypassConfig())
			if !strings.Contains(e.ip("-6", "rule", "show"), "2001:db8:aa::/48 lookup main") {
				t.Fatal("bypass rule not installed")
			}
			if crash {
				r.k.close() // no Close
				if err := Cleanup(tunName, e.logf); err != nil {
					t.Fatalf("Cleanup: %v", err)
				}
			} else if err := r.Close(); err != nil {
				t.Fatalf("Close: %v", err)
			}
			if got := e.snapshot(); got != before {
				t.Errorf("%s left state:%s", name, diffText(before, got))
			}
		})
	}
}

func TestBypassWatchRestores(t *testing.T) {
	e, r := watching(t, bypassConfig())

	e.ip("rule", "del", "pref", "5260", "to", "10.0.0.0/8", "lookup", "main")
	e.ip("-6", "rule", "del", "pref", "5260")
	missing, err := r.Check()
	if err != nil {
		t.Fatal(err)
	}
	// Check reports them unless Watch already beat us to it.
	for _, m := range missing {
		if !strings.Contains(m, "5260") {
			t.Errorf("Check: unexpected %q", m)
		}
	}
	deadline := time.Now().Add(5 * time.Second)
	for {
		missing, err := r.Check()
		if err != nil {
			t.Fatal(err)
		}
		if len(missing) == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("Watch did not restore %q", missing)
		}
		time.Sleep(20 * time.Millisecond)
	}
	// The restored rule comes after the one that stayed.
	e.assertLayout(t,
		withPref5260(wantRules4,
			"from all to 192.168.100.0/24 lookup main",
			"from all to 10.0.0.0/8 lookup main"),
		bypassRules6, wantTable4, wantTable6)
}

func TestBypassCheckReportsMissing(t *testing.T) {
	e := newEnv(t)
	e.createTUN()
	r := e.newRouter()
	defer r.Close()
	mustSet(t, r, bypassConfig())
	e.ip("rule", "del", "pref", "5260", "to", "192.168.100.0/24", "lookup", "main")
	e.ip("-6", "rule", "del", "pref", "5260", "to", "2001:db8:aa::/48", "lookup", "main")
	missing, err := r.Check()
	if err != nil {
		t.Fatal(err)
	}
	want := []string{
		"rule v4 5260: from all to 192.168.100.0/24 lookup main",
		"rule v6 5260: from all to 2001:db8:aa::/48 lookup main",
	}
	if strings.Join(missing, "\n") != strings.Join(want, "\n") {
		t.Errorf("Check:%s", diffText(strings.Join(want, "\n"), strings.Join(missing, "\n")))
	}
}

func TestBypassIPv6Disabled(t *testing.T) {
	e := newEnv(t)
	e.writeSysctl("net.ipv6.conf.all.disable_ipv6", "1")
	e.createTUN()
	r := e.newRouter()
	defer r.Close()
	mustSet(t, r, bypassConfig())
	e.assertLayout(t, bypassRules4, "0:\tfrom all lookup local\n32766:\tfrom all lookup main", wantTable4, "")
	assertInSync(t, r)
}

// TestLooseKernelMatches: the kernel compares a new or deleted rule with the
// existing ones only on the selectors the request has, so a foreign rule
// with the same action and one more selector at our pref looks like ours.
// Set must still install ours, and Close must not delete the foreign one in
// its place (it reports ours as left instead).
func TestLooseKernelMatches(t *testing.T) {
	e := newEnv(t)
	e.ip("rule", "add", "pref", "5270", "to", "10.0.0.0/8", "lookup", "52")
	e.ip("rule", "add", "pref", "5260", "from", "192.0.2.0/24", "to", "10.2.0.0/16", "lookup", "main")
	e.createTUN()
	r := e.newRouter()
	cfg := baseConfig()
	cfg.Bypass = []netip.Prefix{pfx("10.2.0.0/16")}
	mustSet(t, r, cfg)
	assertInSync(t, r)
	want := strings.Replace(wantRules4, "5270:", "5260:\tfrom 192.0.2.0/24 to 10.2.0.0/16 lookup main\n"+
		"5260:\tfrom all to 10.2.0.0/16 lookup main\n"+
		"5270:\tfrom all to 10.0.0.0/8 lookup 52\n5270:", 1)
	if got := e.ip("rule", "show"); got != want {
		t.Errorf("after Set:%s", diffText(want, got))
	}

	err := r.Close()
	for _, w := range []string{
		"left rule v4 5260: to 10.2.0.0/16 lookup 254: deleting it would delete foreign rule v4 5260: (with selectors) to 10.2.0.0/16 lookup 254",
		"left rule v4 5270: lookup 52: deleting it would delete foreign rule v4 5270: to 10.0.0.0/8 lookup 52",
	} {
		if err == nil || !strings.Contains(err.Error(), w) {
			t.Errorf("Close: %v\nwant it to contain %q", err, w)
		}
	}
	// Both of ours stay: removing either would take the foreign rule before it.
	want = "0:\tfrom all lookup local\n" +
		"5260:\tfrom 192.0.2.0/24 to 10.2.0.0/16 lookup main\n" +
		"5260:\tfrom all to 10.2.0.0/16 lookup main\n" +
		"5270:\tfrom all to 10.0.0.0/8 lookup 52\n" +
		"5270:\tfrom all lookup 52\n" +
		"32766:\tfrom all lookup main\n" +
		"32767:\tfrom all lookup default"
	if got := e.ip("rule", "show"); got != want {
		t.Errorf("after Close:%s", diffText(want, got))
	}
}
