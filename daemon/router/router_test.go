package router

import (
	"context"
	"net"
	"net/netip"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

var pfx = netip.MustParsePrefix

func baseConfig() Config {
	return Config{
		LocalAddrs: []netip.Prefix{pfx("100.64.0.1/32"), pfx("fd7a:115c:a1e0::1/128")},
		Routes: []netip.Prefix{
			pfx("100.64.0.2/32"), pfx("100.64.0.3/32"), pfx("100.100.100.100/32"),
			pfx("fd7a:115c:a1e0::/48"), pfx("fd7a:115c:a1e0::53/128"),
		},
		MTU: 1280,
	}
}

// The official client's layout, as `ip rule show` prints it.
const (
	wantRules4 = `0:	from all lookup local
5210:	from all fwmark 0x80000/0xff0000 lookup main
5230:	from all fwmark 0x80000/0xff0000 lookup default
5250:	from all fwmark 0x80000/0xff0000 unreachable
5270:	from all lookup 52
32766:	from all lookup main
32767:	from all lookup default`
	wantRules6 = `0:	from all lookup local
5210:	from all fwmark 0x80000/0xff0000 lookup main
5230:	from all fwmark 0x80000/0xff0000 lookup default
5250:	from all fwmark 0x80000/0xff0000 unreachable
5270:	from all lookup 52
32766:	from all lookup main`
	wantTable4 = `100.64.0.2 dev skt0
100.64.0.3 dev skt0
100.100.100.100 dev skt0`
	wantTable6 = `fd7a:115c:a1e0::53 dev skt0 metric 1024 pref medium
fd7a:115c:a1e0::/48 dev skt0 metric 1024 pref medium`
)

func (e *env) assertLayout(t *testing.T, rules4, rules6, table4, table6 string) {
	t.Helper()
	for _, c := range []struct {
		args []string
		want string
	}{
		{[]string{"rule", "show"}, rules4},
		{[]string{"-6", "rule", "show"}, rules6},
		{[]string{"route", "show", "table", "52"}, table4},
		{[]string{"-6", "route", "show", "table", "52"}, table6},
	} {
		if got := e.ip(c.args...); got != c.want {
			t.Errorf("ip %s:%s", strings.Join(c.args, " "), diffText(c.want, got))
		}
	}
}

func (e *env) assertAddrs(t *testing.T, want ...string) {
	t.Helper()
	out := e.ip("addr", "show", "dev", tunName)
	var got []string
	for _, l := range strings.Split(out, "\n") {
		f := strings.Fields(l)
		if len(f) >= 2 && (f[0] == "inet" || f[0] == "inet6") && !strings.HasPrefix(f[1], "fe80:") {
			got = append(got, f[1])
		}
	}
	if strings.Join(got, " ") != strings.Join(want, " ") {
		t.Errorf("addresses on %s: got %v, want %v\n%s", tunName, got, want, out)
	}
	if !strings.Contains(out, ",UP,") || !strings.Contains(out, "mtu 1280 ") {
		t.Errorf("%s not up with mtu 1280:\n%s", tunName, out)
	}
}

func mustSet(t *testing.T, r *Router, cfg Config) {
	t.Helper()
	if err := r.Set(cfg); err != nil {
		t.Fatalf("Set: %v", err)
	}
}

func assertInSync(t *testing.T, r *Router) {
	t.Helper()
	missing, err := r.Check()
	if err != nil {
		t.Fatalf("Check: %v", err)
	}
	if len(missing) != 0 {
		t.Errorf("Check: missing %q", missing)
	}
}

func TestSetInstallsOfficialLayout(t *testing.T) {
	e := newEnv(t)
	e.createTUN()
	r := e.newRouter()
	defer r.Close()
	if !r.IPv6() {
		t.Fatal("IPv6 should be available in a fresh namespace")
	}
	mustSet(t, r, baseConfig())
	e.assertLayout(t, wantRules4, wantRules6, wantTable4, wantTable6)
	e.assertAddrs(t, "100.64.0.1/32", "fd7a:115c:a1e0::1/128")
	assertInSync(t, r)
}

func TestSetIdempotent(t *testing.T) {
	e := newEnv(t)
	e.createTUN()
	r := e.newRouter()
	defer r.Close()
	mustSet(t, r, baseConfig())
	before := e.snapshot()
	mustSet(t, r, baseConfig())
	mustSet(t, r, baseConfig())
	// A second instance (skeind restarted without cleanup) converges too.
	r2 := e.newRouter()
	mustSet(t, r2, baseConfig())
	if got := e.snapshot(); got != before {
		t.Errorf("state changed by repeated Set:%s", diffText(before, got))
	}
	e.assertLayout(t, wantRules4, wantRules6, wantTable4, wantTable6)
	r2.k.close() // drop without Close: r owns the same state
}

func TestSetChangedConfig(t *testing.T) {
	e := newEnv(t)
	e.createTUN()
	r := e.newRouter()
	defer r.Close()
	cfg := baseConfig()
	cfg.LocalRoutes = []netip.Prefix{pfx("198.51.100.0/24"), pfx("2001:db8:1::/48")}
	mustSet(t, r, cfg)
	if got := e.ip("route", "show", "table", "52"); !strings.Contains(got, "throw 198.51.100.0/24") {
		t.Errorf("throw route missing:\n%s", got)
	}
	if got := e.ip("-6", "route", "show", "table", "52"); !strings.Contains(got, "throw 2001:db8:1::/48") {
		t.Errorf("v6 throw route missing:\n%s", got)
	}

	// New addresses, a peer gone, a peer added, exit node on, throw routes gone.
	mustSet(t, r, Config{
		LocalAddrs: []netip.Prefix{pfx("100.64.0.9/32"), pfx("fd7a:115c:a1e0::9/128")},
		Routes: []netip.Prefix{
			pfx("100.64.0.3/32"), pfx("100.64.0.4/32"), pfx("100.100.100.100/32"),
			pfx("fd7a:115c:a1e0::/48"), pfx("0.0.0.0/0"), pfx("::/0"),
		},
		MTU: 1280,
	})
	e.assertLayout(t, wantRules4, wantRules6,
		`default dev skt0
100.64.0.3 dev skt0
100.64.0.4 dev skt0
100.100.100.100 dev skt0`,
		`fd7a:115c:a1e0::/48 dev skt0 metric 1024 pref medium
default dev skt0 metric 1024 pref medium`)
	e.assertAddrs(t, "100.64.0.9/32", "fd7a:115c:a1e0::9/128")
	assertInSync(t, r)

	// Empty config: rules stay (the tunnel is up), routes and addresses go.
	mustSet(t, r, Config{MTU: 1280})
	e.assertLayout(t, wantRules4, wantRules6, "", "")
	e.assertAddrs(t)
}

func TestSetRepairsThirdPartyChanges(t *testing.T) {
	e := newEnv(t)
	e.createTUN()
	r := e.newRouter()
	defer r.Close()
	mustSet(t, r, baseConfig())

	// What systemd-networkd or an admin might do.
	e.ip("rule", "del", "pref", "5270")
	e.ip("-6", "rule", "del", "pref", "5250")
	e.ip("route", "del", "100.64.0.2/32", "dev", tunName, "table", "52")
	e.ip("route", "add", "100.64.0.77/32", "dev", tunName, "table", "52")
	// A stale variant of our rule (fwmark without mask) is ours to remove.
	e.ip("rule", "add", "pref", "5210", "fwmark", "0x80000", "lookup", "main")
	// A foreign rule at one of our prefs is not ours: left alone.
	e.ip("rule", "add", "pref", "5230", "lookup", "100")

	missing, err := r.Check()
	if err != nil {
		t.Fatal(err)
	}
	want := []string{
		"route 100.64.0.2/32 dev skt0 table 52",
		"rule v4 5270: from all lookup 52",
		"rule v6 5250: from all fwmark 0x80000/0xff0000 unreachable",
	}
	if strings.Join(missing, "\n") != strings.Join(want, "\n") {
		t.Errorf("Check:%s", diffText(strings.Join(want, "\n"), strings.Join(missing, "\n")))
	}

	mustSet(t, r, baseConfig())
	e.assertLayout(t,
		strings.Replace(wantRules4, "5250:", "5230:\tfrom all lookup 100\n5250:", 1),
		wantRules6, wantTable4, wantTable6)
	assertInSync(t, r)
	if !e.logged("leaving foreign rule v4 5230") {
		t.Error("foreign rule at our pref not reported")
	}
}

// watching sets cfg on a fresh router, with Watch running on short timers, and undoes it all
// when the test ends.
func watching(t *testing.T, cfg Config) (*env, *Router) {
	t.Helper()
	d, g := watchDebounce, watchMinGap
	t.Cleanup(func() { watchDebounce, watchMinGap = d, g })
	watchDebounce, watchMinGap = 20*time.Millisecond, 50*time.Millisecond
	e := newEnv(t)
	e.createTUN()
	r := e.newRouter()
	t.Cleanup(func() { r.Close() })
	mustSet(t, r, cfg)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- r.Watch(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Watch: %v", err)
		}
	})
	time.Sleep(100 * time.Millisecond) // let it subscribe
	return e, r
}

func TestWatchRestores(t *testing.T) {
	e, r := watching(t, baseConfig())

	for round := 0; round < 2; round++ {
		e.ip("rule", "del", "pref", "5270")
		e.ip("rule", "del", "pref", "5210")
		e.ip("-6", "rule", "del", "pref", "5270")
		e.ip("route", "flush", "table", "52")
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
				t.Fatalf("round %d: Watch did not restore %q", round, missing)
			}
			time.Sleep(20 * time.Millisecond)
		}
		e.assertLayout(t, wantRules4, wantRules6, wantTable4, wantTable6)
	}
	if !e.logged("restoring") {
		t.Error("no log line about the repair")
	}
}

func TestWatchEndsOnClose(t *testing.T) {
	e := newEnv(t)
	e.createTUN()
	r := e.newRouter()
	mustSet(t, r, baseConfig())
	done := make(chan error, 1)
	go func() { done <- r.Watch(context.Background()) }()
	time.Sleep(50 * time.Millisecond)
	if err := r.Close(); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-done:
		if err != nil {
			t.Errorf("Watch: %v", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Watch still running after Close")
	}
}

func TestCloseRestoresPreviousState(t *testing.T) {
	e := newEnv(t)
	// Pre-existing state that is not ours must survive.
	e.otherDev()
	e.ip("rule", "add", "pref", "5220", "lookup", "100")
	e.ip("-6", "rule", "add", "pref", "100", "fwmark", "0x1", "lookup", "200")
	e.ip("route", "add", "10.99.0.0/16", "dev", "skt1", "table", "52")
	e.createTUN()
	before := e.snapshot()

	r := e.newRouter()
	cfg := baseConfig()
	cfg.LocalRoutes = []netip.Prefix{pfx("198.51.100.0/24")}
	mustSet(t, r, cfg)
	if e.snapshot() == before {
		t.Fatal("Set changed nothing")
	}
	if err := r.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	if got := e.snapshot(); got != before {
		t.Errorf("Close did not restore:%s", diffText(before, got))
	}
	e.assertNoAddrs(t)
	if err := r.Close(); err != nil {
		t.Errorf("second Close: %v", err)
	}
	if err := r.Set(cfg); err == nil {
		t.Error("Set after Close succeeded")
	}
}

func (e *env) assertNoAddrs(t *testing.T) {
	t.Helper()
	out := e.ip("addr", "show", "dev", tunName)
	if strings.Contains(out, "100.64.") || strings.Contains(out, "fd7a:") {
		t.Errorf("addresses left on %s:\n%s", tunName, out)
	}
}

func TestCleanupAfterCrash(t *testing.T) {
	e := newEnv(t)
	e.ip("rule", "add", "pref", "5220", "lookup", "100")
	before := e.snapshot()
	e.createTUN()
	r := e.newRouter()
	mustSet(t, r, baseConfig())
	r.k.close() // crash: no Close
	r = nil

	if err := Cleanup(tunName, e.logf); err != nil {
		t.Fatalf("Cleanup: %v", err)
	}
	if got := e.snapshot(); got != before {
		t.Errorf("Cleanup left state:%s", diffText(before, got))
	}
	if _, err := e.ipErr("link", "show", tunName); err == nil {
		t.Errorf("link %s still exists", tunName)
	}
	// Nothing left: a second run is a no-op.
	if err := Cleanup(tunName, e.logf); err != nil {
		t.Fatalf("second Cleanup: %v", err)
	}
}

func TestCleanupDeviceGone(t *testing.T) {
	e := newEnv(t)
	e.otherDev()
	// A rule at our pref with another action is not ours.
	e.ip("rule", "add", "pref", "5270", "lookup", "100")
	before := e.snapshot()
	e.createTUN()
	r := e.newRouter()
	cfg := baseConfig()
	cfg.LocalRoutes = []netip.Prefix{pfx("198.51.100.0/24"), pfx("2001:db8:1::/48")}
	mustSet(t, r, cfg)
	r.k.close()
	e.dev.Close() // the device vanishes with its fd; throw routes and rules stay
	if got := e.ip("route", "show", "table", "52"); !strings.Contains(got, "throw") {
		t.Fatalf("expected leftover throw route:\n%s", got)
	}
	// Anything in table 52 is a leftover once the device is gone.
	e.ip("route", "add", "10.99.0.0/16", "dev", "skt1", "table", "52")

	if err := Cleanup(tunName, e.logf); err != nil {
		t.Fatalf("Cleanup: %v", err)
	}
	if got := e.snapshot(); got != before {
		t.Errorf("Cleanup left state:%s", diffText(before, got))
	}
}

func TestIPv6Disabled(t *testing.T) {
	e := newEnv(t)
	e.writeSysctl("net.ipv6.conf.all.disable_ipv6", "1")
	e.createTUN()
	r := e.newRouter()
	defer r.Close()
	if r.IPv6() {
		t.Fatal("IPv6 reported available")
	}
	if !e.logged("IPv6 unavailable") {
		t.Error("no log line about IPv6")
	}
	mustSet(t, r, baseConfig())
	e.assertLayout(t, wantRules4, "0:\tfrom all lookup local\n32766:\tfrom all lookup main", wantTable4, "")
	e.assertAddrs(t, "100.64.0.1/32")
	assertInSync(t, r)
}

// TestMarkedTrafficBypasses checks what the rules are for: unmarked traffic
// takes table 52, marked traffic the host's routes, and never the tunnel.
func TestMarkedTrafficBypasses(t *testing.T) {
	e := newEnv(t)
	e.otherDev()
	e.ip("addr", "add", "192.0.2.1/24", "dev", "skt1")
	e.ip("route", "add", "default", "via", "192.0.2.254", "dev", "skt1")
	e.createTUN()
	r := e.newRouter()
	defer r.Close()
	cfg := baseConfig()
	cfg.Routes = append(cfg.Routes, pfx("0.0.0.0/0"))
	mustSet(t, r, cfg)

	if got := e.ip("route", "get", "198.51.100.7"); !strings.Contains(got, "dev skt0 table 52") {
		t.Errorf("unmarked: %s", got)
	}
	if got := e.ip("route", "get", "198.51.100.7", "mark", "0x80000"); !strings.Contains(got, "via 192.0.2.254 dev skt1") {
		t.Errorf("marked: %s", got)
	}
	// Only the third byte counts.
	if got := e.ip("route", "get", "198.51.100.7", "mark", "0x80abc"); !strings.Contains(got, "dev skt1") {
		t.Errorf("marked with other bits: %s", got)
	}
	// No host route: marked traffic fails instead of looping into table 52.
	e.ip("route", "del", "default")
	if got, err := e.ipErr("route", "get", "198.51.100.7", "mark", "0x80000"); err == nil || !strings.Contains(got, "unreachable") {
		t.Errorf("marked without host route: err=%v %s", err, got)
	}
}

func readMark(t *testing.T, c syscall.Conn) int {
	t.Helper()
	rc, err := c.SyscallConn()
	if err != nil {
		t.Fatal(err)
	}
	var v int
	var gerr error
	if err := rc.Control(func(fd uintptr) {
		v, gerr = unix.GetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_MARK)
	}); err != nil {
		t.Fatal(err)
	}
	if gerr != nil {
		t.Fatal(gerr)
	}
	return v
}

func TestControlBypass(t *testing.T) {
	lc := net.ListenConfig{Control: ControlBypass}
	pc, err := lc.ListenPacket(context.Background(), "udp4", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("ListenPacket: %v", err)
	}
	defer pc.Close()
	if m := readMark(t, pc.(*net.UDPConn)); m != FwmarkBypass {
		t.Errorf("UDP SO_MARK = %#x, want %#x", m, FwmarkBypass)
	}

	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	d := net.Dialer{Control: ControlBypass}
	c, err := d.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatalf("Dial: %v", err)
	}
	defer c.Close()
	if m := readMark(t, c.(*net.TCPConn)); m != FwmarkBypass {
		t.Errorf("TCP SO_MARK = %#x, want %#x", m, FwmarkBypass)
	}

	fd, err := unix.Socket(unix.AF_INET6, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(fd)
	if err := MarkSocket(uintptr(fd)); err != nil {
		t.Fatal(err)
	}
	if v, err := unix.GetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_MARK); err != nil || v != FwmarkBypass {
		t.Errorf("MarkSocket: SO_MARK = %#x, %v", v, err)
	}
}

// TestDefaultRoutesStay: an exit node's 0.0.0.0/0 and ::/0 in table 52 are recognised as ours
// (the kernel reports default routes without a destination), so a repeated Set keeps them.
func TestDefaultRoutesStay(t *testing.T) {
	e := newEnv(t)
	e.createTUN()
	r := e.newRouter()
	defer r.Close()
	cfg := baseConfig()
	cfg.Routes = append(cfg.Routes, pfx("0.0.0.0/0"), pfx("::/0"))
	for range 3 {
		mustSet(t, r, cfg)
		if got := e.ip("route", "show", "table", "52"); !strings.Contains(got, "default dev") {
			t.Fatalf("v4 default route missing after Set:\n%s", got)
		}
		if got := e.ip("-6", "route", "show", "table", "52"); !strings.Contains(got, "default dev") {
			t.Fatalf("v6 default route missing after Set:\n%s", got)
		}
	}
	assertInSync(t, r)
}

// UpdateRoutes adds and removes single routes without a full Set, and a later Set keeps them:
// what it asked for is part of the config.
func TestUpdateRoutes(t *testing.T) {
	e := newEnv(t)
	e.createTUN()
	r := e.newRouter()
	if err := r.UpdateRoutes([]netip.Prefix{netip.MustParsePrefix("100.64.9.9/32")}, nil); err == nil {
		t.Error("UpdateRoutes before Set succeeded")
	}
	mustSet(t, r, baseConfig())
	add := []netip.Prefix{netip.MustParsePrefix("100.64.9.9/32"), netip.MustParsePrefix("fd7a:115c:a1e0::99/128")}
	if err := r.UpdateRoutes(add, []netip.Prefix{netip.MustParsePrefix("100.64.0.2/32")}); err != nil {
		t.Fatal(err)
	}
	t4, t6 := e.ip("-4", "route", "show", "table", "52"), e.ip("-6", "route", "show", "table", "52")
	if !strings.Contains(t4, "100.64.9.9 dev "+tunName) || strings.Contains(t4, "100.64.0.2 ") || !strings.Contains(t6, "fd7a:115c:a1e0::99 dev "+tunName) {
		t.Fatalf("table 52 after UpdateRoutes:\n%s\n%s", t4, t6)
	}
	// Removing what is not there is not an error.
	if err := r.UpdateRoutes(nil, []netip.Prefix{netip.MustParsePrefix("100.64.77.7/32")}); err != nil {
		t.Errorf("removing an absent route: %v", err)
	}
	mustSet(t, r, r.cfg) // the full reconciliation keeps what UpdateRoutes did
	if t4 := e.ip("-4", "route", "show", "table", "52"); !strings.Contains(t4, "100.64.9.9 dev "+tunName) || strings.Contains(t4, "100.64.0.2 ") {
		t.Errorf("Set undid UpdateRoutes:\n%s", t4)
	}
	assertInSync(t, r)
}

// Watch takes the events of our own UpdateRoutes for what they are: no re-read of the tables
// per peer delta. A route someone else deletes is still put back.
func TestWatchIgnoresOwnUpdates(t *testing.T) {
	e, r := watching(t, baseConfig())

	before := r.repairs.Load()
	for i := range 20 {
		p := netip.PrefixFrom(netip.AddrFrom4([4]byte{100, 70, 0, byte(i)}), 32)
		if err := r.UpdateRoutes([]netip.Prefix{p}, nil); err != nil {
			t.Fatal(err)
		}
		if i%2 == 0 {
			if err := r.UpdateRoutes(nil, []netip.Prefix{p}); err != nil {
				t.Fatal(err)
			}
		}
	}
	time.Sleep(300 * time.Millisecond)
	if n := r.repairs.Load() - before; n != 0 {
		t.Errorf("Watch re-read the tables %d times after our own route changes", n)
	}
	e.ip("route", "del", "100.70.0.1/32", "dev", tunName, "table", "52")
	deadline := time.Now().Add(5 * time.Second)
	for !strings.Contains(e.ip("route", "show", "table", "52"), "100.70.0.1 dev") {
		if time.Now().After(deadline) {
			t.Fatal("a route deleted behind our back was not restored")
		}
		time.Sleep(20 * time.Millisecond)
	}
}
