package forwarding

import (
	"bufio"
	"encoding/json"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

var pfx = netip.MustParsePrefix

func routerConfig() Config {
	return Config{
		TunName:    tunName,
		Forward:    true,
		IPv6:       true,
		Masquerade: true,
		Routes:     []netip.Prefix{pfx("192.168.50.0/24"), pfx("fd00:50::/64"), pfx("192.168.50.128/25")},
	}
}

func exitConfig() Config {
	c := routerConfig()
	c.Routes = append(c.Routes, pfx("0.0.0.0/0"), pfx("::/0"))
	c.Stateful = true
	c.SpoofGuard = true
	return c
}

// The subnet-router table, as `nft list ruleset` prints it (counters
// blanked). 192.168.50.128/25 is inside 192.168.50.0/24 and needs no rule.
const wantRouterRuleset = `table inet skein {
	chain forward {
		type filter hook forward priority filter; policy accept;
		oifname "skt0" tcp flags syn / syn,rst counter tcp option maxseg size set rt mtu comment "skein: clamp MSS into the tailnet"
		iifname "skt0" tcp flags syn / syn,rst counter tcp option maxseg size set rt mtu comment "skein: clamp MSS out of the tailnet"
		iifname "skt0" meta mark set meta mark & 0xff04ffff | 0x00040000 comment "skein: mark tailnet-forwarded"
		iifname "skt0" oifname "skt0" counter drop comment "skein: no tailnet hairpin"
		iifname "skt0" ip daddr 0.0.0.0/8 counter drop comment "skein: never forwarded"
		iifname "skt0" ip daddr 127.0.0.0/8 counter drop comment "skein: never forwarded"
		iifname "skt0" ip daddr 169.254.0.0/16 counter drop comment "skein: never forwarded"
		iifname "skt0" ip daddr 224.0.0.0/4 counter drop comment "skein: never forwarded"
		iifname "skt0" ip daddr 255.255.255.255 counter drop comment "skein: never forwarded"
		iifname "skt0" ip6 daddr :: counter drop comment "skein: never forwarded"
		iifname "skt0" ip6 daddr ::1 counter drop comment "skein: never forwarded"
		iifname "skt0" ip6 daddr ::ffff:0.0.0.0/96 counter drop comment "skein: never forwarded"
		iifname "skt0" ip6 daddr fe80::/10 counter drop comment "skein: never forwarded"
		iifname "skt0" ip6 daddr ff00::/8 counter drop comment "skein: never forwarded"
		iifname "skt0" ip daddr 192.168.50.0/24 accept comment "skein: advertised route"
		iifname "skt0" ip6 daddr fd00:50::/64 accept comment "skein: advertised route"
		iifname "skt0" counter drop comment "skein: not an advertised route"
		oifname "skt0" ip saddr 100.64.0.0/10 counter drop comment "skein: spoofed tailnet source"
		oifname "skt0" ip6 saddr fd7a:115c:a1e0::/48 counter drop comment "skein: spoofed tailnet source"
		oifname "skt0" accept comment "skein: into tailnet"
	}

	chain postrouting {
		type nat hook postrouting priority srcnat; policy accept;
		oifname != "skt0" meta mark & 0x00ff0000 == 0x00040000 masquerade comment "skein: masquerade tailnet-forwarded"
	}
}`

// The exit-node table with stateful filtering and the spoof guard.
const wantExitRuleset = `table inet skein {
	chain forward {
		type filter hook forward priority filter; policy accept;
		oifname "skt0" tcp flags syn / syn,rst counter tcp option maxseg size set rt mtu comment "skein: clamp MSS into the tailnet"
		iifname "skt0" tcp flags syn / syn,rst counter tcp option maxseg size set rt mtu comment "skein: clamp MSS out of the tailnet"
		iifname "skt0" meta mark set meta mark & 0xff04ffff | 0x00040000 comment "skein: mark tailnet-forwarded"
		iifname "skt0" oifname "skt0" counter drop comment "skein: no tailnet hairpin"
		iifname "skt0" ip daddr 0.0.0.0/8 counter drop comment "skein: never forwarded"
		iifname "skt0" ip daddr 127.0.0.0/8 counter drop comment "skein: never forwarded"
		iifname "skt0" ip daddr 169.254.0.0/16 counter drop comment "skein: never forwarded"
		iifname "skt0" ip daddr 224.0.0.0/4 counter drop comment "skein: never forwarded"
		iifname "skt0" ip daddr 255.255.255.255 counter drop comment "skein: never forwarded"
		iifname "skt0" ip6 daddr :: counter drop comment "skein: never forwarded"
		iifname "skt0" ip6 daddr ::1 counter drop comment "skein: never forwarded"
		iifname "skt0" ip6 daddr ::ffff:0.0.0.0/96 counter drop comment "skein: never forwarded"
		iifname "skt0" ip6 daddr fe80::/10 counter drop comment "skein: never forwarded"
		iifname "skt0" ip6 daddr ff00::/8 counter drop comment "skein: never forwarded"
		iifname "skt0" meta nfproto ipv4 accept comment "skein: advertised route"
		iifname "skt0" meta nfproto ipv6 accept comment "skein: advertised route"
		iifname "skt0" counter drop comment "skein: not an advertised route"
		oifname "skt0" ip saddr 100.64.0.0/10 counter drop comment "skein: spoofed tailnet source"
		oifname "skt0" ip6 saddr fd7a:115c:a1e0::/48 counter drop comment "skein: spoofed tailnet source"
		oifname "skt0" ct state established,related accept comment "skein: replies into tailnet"
		oifname "skt0" counter drop comment "skein: new flows into tailnet"
	}

	chain input {
		type filter hook input priority filter; policy accept;
		iifname "skt0" accept comment "skein: tailnet and loopback"
		iifname "lo" accept comment "skein: tailnet and loopback"
		ip saddr 100.115.92.0/23 accept comment "skein: ChromeOS containers"
		ip saddr 100.64.0.0/10 counter drop comment "skein: spoofed tailnet source"
		ip6 saddr fd7a:115c:a1e0::/48 counter drop comment "skein: spoofed tailnet source"
	}

	chain postrouting {
		type nat hook postrouting priority srcnat; policy accept;
		oifname != "skt0" meta mark & 0x00ff0000 == 0x00040000 masquerade comment "skein: masquerade tailnet-forwarded"
	}
}`

// quirkySysctls gives the namespace per-interface forwarding values that
// differ from the global switch, which a naive restore would lose.
func (e *env) quirkySysctls() {
	e.ip("link", "add", "lan9", "type", "veth", "peer", "name", "lan9p")
	e.writeSysctl("net/ipv4/conf/lan9/forwarding", "1")
	e.writeSysctl("net/ipv6/conf/lan9p/forwarding", "1")
	e.writeSysctl("net/ipv4/conf/default/forwarding", "1")
}

func (e *env) assertForwardingOn(t *testing.T, v6 bool) {
	t.Helper()
	if v := e.sysctl("net/ipv4/ip_forward"); v != "1" {
		t.Errorf("net.ipv4.ip_forward = %s, want 1", v)
	}
	want6 := "0"
	if v6 {
		want6 = "1"
	}
	if v := e.sysctl("net/ipv6/conf/all/forwarding"); v != want6 {
		t.Errorf("net.ipv6.conf.all.forwarding = %s, want %s", v, want6)
	}
}

func TestSetInstallsRulesAndCloseRestores(t *testing.T) {
	for _, tc := range []struct {
		name string
		cfg  Config
		want string
	}{
		{"subnet-router", routerConfig(), wantRouterRuleset},
		{"exit-node", exitConfig(), wantExitRuleset},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := newEnv(t)
			e.fakeTun()
			e.quirkySysctls()
			before := e.snapshot()

			m := e.newManager()
			mustSet(t, m, tc.cfg)
			if got := e.ruleset(); got != tc.want {
				t.Errorf("ruleset:%s", diffText(tc.want, got))
			}
			e.assertForwardingOn(t, true)
			assertInSync(t, m)
			if _, err := os.Stat(filepath.Join(SysctlDir, PersistFileName)); err == nil {
				t.Errorf("%s written without Persist", PersistFileName)
			}

			if err := m.Close(); err != nil {
				t.Fatalf("Close: %v", err)
			}
			if got := e.snapshot(); got != before {
				t.Errorf("after Close:%s", diffText(before, got))
			}
			if _, err := os.Stat(journalPath(e.stateDir)); err == nil {
				t.Error("journal left after Close")
			}
		})
	}
}

func TestSetIdempotentAndDiffs(t *testing.T) {
	e := newEnv(t)
	e.fakeTun()
	before := e.snapshot()
	m := e.newManager()
	defer m.Close()

	mustSet(t, m, routerConfig())
	first := e.nft("-a", "list", "ruleset") // with handles: a rewrite would change them
	mustSet(t, m, routerConfig())
	if got := e.nft("-a", "list", "ruleset"); got != first {
		t.Errorf("second identical Set changed the ruleset:%s", diffText(first, got))
	}
	if got := e.ruleset(); got != wantRouterRuleset {
		t.Errorf("ruleset:%s", diffText(wantRouterRuleset, got))
	}

	// Routes in a different order and with duplicates: same config.
	c := routerConfig()
	c.Routes = append([]netip.Prefix{pfx("fd00:50::1/64"), pfx("192.168.50.7/24")}, c.Routes...)
	mustSet(t, m, c)
	if got := e.nft("-a", "list", "ruleset"); got != first {
		t.Errorf("equivalent Set changed the ruleset:%s", diffText(first, got))
	}

	// A different config replaces the table: one copy of each rule.
	mustSet(t, m, exitConfig())
	mustSet(t, m, exitConfig())
	if got := e.ruleset(); got != wantExitRuleset {
		t.Errorf("ruleset:%s", diffText(wantExitRuleset, got))
	}
	assertInSync(t, m)

	// Forwarding off, rules kept (routes still limit what is forwarded).
	c = routerConfig()
	c.Forward = false
	mustSet(t, m, c)
	if v := e.sysctl("net/ipv4/ip_forward"); v != "0" {
		t.Errorf("ip_forward = %s after Forward=false", v)
	}
	if !strings.Contains(e.ruleset(), "table inet skein") {
		t.Error("table removed although the config is not zero")
	}

	// The zero config removes everything.
	mustSet(t, m, Config{})
	if got := e.snapshot(); got != before {
		t.Errorf("after Set(Config{}):%s", diffText(before, got))
	}
	assertInSync(t, m)
}

func TestZeroConfigChangesNothing(t *testing.T) {
	e := newEnv(t)
	e.writeSysctl("net/ipv4/ip_forward", "1") // e.g. Docker turned it on
	before := e.snapshot()
	m := e.newManager()
	mustSet(t, m, Config{})
	if got := e.snapshot(); got != before {
		t.Errorf("Set(Config{}):%s", diffText(before, got))
	}
	if err := m.Close(); err != nil {
		t.Fatal(err)
	}
	if got := e.snapshot(); got != before {
		t.Errorf("Close:%s", diffText(before, got))
	}
	if _, err := os.Stat(e.stateDir); err == nil {
		if ents, _ := os.ReadDir(e.stateDir); len(ents) != 0 {
			t.Errorf("state dir not empty: %v", ents)
		}
	}
}

func TestForwardingAlreadyOnIsLeftOn(t *testing.T) {
	e := newEnv(t)
	e.fakeTun()
	e.writeSysctl("net/ipv4/ip_forward", "1")
	before := e.snapshot()
	m := e.newManager()
	mustSet(t, m, routerConfig())
	if err := m.Close(); err != nil {
		t.Fatal(err)
	}
	if got := e.snapshot(); got != before {
		t.Errorf("after Close:%s", diffText(before, got))
	}
}

func TestNormalizeErrors(t *testing.T) {
	for _, c := range []Config{
		{Forward: true},
		{Routes: []netip.Prefix{pfx("10.0.0.0/8")}},
		{TunName: "bad/name", Forward: true},
		{TunName: "waytoolonginterfacename", Forward: true},
		{TunName: tunName, Routes: []netip.Prefix{{}}},
		{TunName: tunName, Routes: []netip.Prefix{pfx("::ffff:10.0.0.0/104")}},
	} {
		if _, err := c.normalize(); err == nil {
			t.Errorf("normalize(%+v) succeeded", c)
		}
	}
}

// readJournal returns the journal file and checks its mode.
func readJournal(t *testing.T, dir string) journal {
	t.Helper()
	fi, err := os.Stat(journalPath(dir))
	if err != nil {
		t.Fatalf("journal: %v", err)
	}
	if fi.Mode().Perm() != 0o600 {
		t.Errorf("journal mode %v, want 0600", fi.Mode().Perm())
	}
	b, err := os.ReadFile(journalPath(dir))
	if err != nil {
		t.Fatal(err)
	}
	var j journal
	if err := json.Unmarshal(b, &j); err != nil {
		t.Fatalf("journal: %v\n%s", err, b)
	}
	return j
}

func TestCrashThenCleanup(t *testing.T) {
	e := newEnv(t)
	e.fakeTun()
	e.quirkySysctls()
	before := e.snapshot()

	m := e.newManager()
	mustSet(t, m, exitConfig())
	j := readJournal(t, e.stateDir)
	if j.Table != "inet skein" || len(j.Sysctls[famV4]) == 0 || len(j.Sysctls[famV6]) == 0 {
		t.Errorf("journal does not record the changes: %+v", j)
	}
	if j.Sysctls[famV4][0] != (sysctlValue{Key: "net/ipv4/ip_forward", Value: "0"}) {
		t.Errorf("journal ipv4 record starts with %+v", j.Sysctls[famV4][0])
	}
	m = nil // crash: no Close

	if err := Cleanup(e.stateDir, e.logf); err != nil {
		t.Fatalf("Cleanup: %v", err)
	}
	if got := e.snapshot(); got != before {
		t.Errorf("after Cleanup:%s", diffText(before, got))
	}
	if _, err := os.Stat(journalPath(e.stateDir)); err == nil {
		t.Error("journal left after Cleanup")
	}
	// Cleanup with nothing to do is fine.
	if err := Cleanup(e.stateDir, e.logf); err != nil {
		t.Fatalf("second Cleanup: %v", err)
	}
}

// A restart after a crash without Cleanup: the new Manager adopts the
// journal, installs one copy of everything and restores the values from
// before the first run.
func TestRestartWithoutCleanup(t *testing.T) {
	e := newEnv(t)
	e.fakeTun()
	before := e.snapshot()

	mustSet(t, e.newManager(), exitConfig())
	m := e.newManager()
	mustSet(t, m, exitConfig())
	if got := e.ruleset(); got != wantExitRuleset {
		t.Errorf("ruleset after restart:%s", diffText(wantExitRuleset, got))
	}
	if err := m.Close(); err != nil {
		t.Fatal(err)
	}
	if got := e.snapshot(); got != before {
		t.Errorf("after Close:%s", diffText(before, got))
	}
}

// Cleanup removes our table even without a journal (e.g. the state
// directory was wiped), and never touches other tables.
func TestCleanupWithoutJournal(t *testing.T) {
	e := newEnv(t)
	e.fakeTun()
	e.nftScript("table inet other { chain myfwd { type filter hook forward priority filter; policy accept; }; }")
	before := e.ruleset()
	mustSet(t, e.newManager(), routerConfig())
	if err := os.RemoveAll(e.stateDir); err != nil {
		t.Fatal(err)
	}
	if err := Cleanup(e.stateDir, e.logf); err != nil {
		t.Fatalf("Cleanup: %v", err)
	}
	if got := e.ruleset(); got != before {
		t.Errorf("after Cleanup:%s", diffText(before, got))
	}
}

// A corrupt journal does not stop Cleanup from removing the table.
func TestCleanupCorruptJournal(t *testing.T) {
	e := newEnv(t)
	e.fakeTun()
	mustSet(t, e.newManager(), routerConfig())
	if err := os.WriteFile(journalPath(e.stateDir), []byte("{garbage"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := Cleanup(e.stateDir, e.logf); err != nil {
		t.Fatalf("Cleanup: %v", err)
	}
	if got := e.ruleset(); got != "" {
		t.Errorf("ruleset after Cleanup:\n%s", got)
	}
	if _, err := os.Stat(journalPath(e.stateDir)); err == nil {
		t.Error("corrupt journal left behind")
	}
}

const childEnv = "SKEIN_FORWARDING_CRASH_CHILD"

// TestCrashChild is the process that TestKill9 kills: it runs in the
// parent's namespace (via ip netns exec), sets up an exit node and waits.
func TestCrashChild(t *testing.T) {
	dir := os.Getenv(childEnv)
	if dir == "" {
		t.Skip("helper process for TestKill9")
	}
	SysctlDir = filepath.Join(dir, "sysctl.d")
	m := New(filepath.Join(dir, "state"), t.Logf)
	if err := m.Set(exitConfig()); err != nil {
		t.Fatal(err)
	}
	os.Stdout.WriteString("ready\n")
	time.Sleep(time.Minute)
}

func TestKill9(t *testing.T) {
	e := newEnv(t)
	e.fakeTun()
	e.quirkySysctls()
	before := e.snapshot()

	dir := filepath.Dir(e.stateDir)
	for i := range 3 {
		cmd := exec.Command("ip", "netns", "exec", e.ns, os.Args[0], "-test.run=^TestCrashChild$", "-test.v")
		cmd.Env = append(os.Environ(), childEnv+"="+dir)
		out, err := cmd.StdoutPipe()
		if err != nil {
			t.Fatal(err)
		}
		cmd.Stderr = os.Stderr
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		ready := make(chan bool, 1)
		go func() {
			sc := bufio.NewScanner(out)
			for sc.Scan() {
				if sc.Text() == "ready" {
					ready <- true
					break
				}
			}
			close(ready)
		}()
		select {
		case ok := <-ready:
			if !ok {
				cmd.Wait()
				t.Fatal("child exited before it was ready")
			}
		case <-time.After(30 * time.Second):
			cmd.Process.Kill()
			t.Fatal("child not ready")
		}
		if err := cmd.Process.Kill(); err != nil { // SIGKILL
			t.Fatal(err)
		}
		cmd.Wait()

		if got := e.ruleset(); got != wantExitRuleset {
			t.Errorf("run %d: ruleset after kill -9:%s", i, diffText(wantExitRuleset, got))
		}
		e.assertForwardingOn(t, true)
	}
	// Three crashed runs later: Cleanup restores the state before the first.
	if err := Cleanup(e.stateDir, e.logf); err != nil {
		t.Fatalf("Cleanup: %v", err)
	}
	if got := e.snapshot(); got != before {
		t.Errorf("after Cleanup:%s", diffText(before, got))
	}
}

func TestPersist(t *testing.T) {
	e := newEnv(t)
	e.fakeTun()
	before := e.snapshot()
	file := filepath.Join(SysctlDir, PersistFileName)

	c := routerConfig()
	c.Persist = true
	m := e.newManager()
	mustSet(t, m, c)
	b, err := os.ReadFile(file)
	if err != nil {
		t.Fatalf("persist file: %v", err)
	}
	s := string(b)
	for _, line := range []string{"net.ipv4.ip_forward = 1\n", "net.ipv6.conf.all.forwarding = 1\n"} {
		if !strings.Contains(s, line) {
			t.Errorf("persist file lacks %q:\n%s", line, s)
		}
	}
	if fi, _ := os.Stat(file); fi.Mode().Perm() != 0o644 {
		t.Errorf("persist file mode %v", fi.Mode().Perm())
	}
	if !readJournal(t, e.stateDir).Persisted {
		t.Error("journal does not say persisted")
	}
	assertInSync(t, m)

	if err := m.Close(); err != nil {
		t.Fatal(err)
	}
	e.assertForwardingOn(t, true)
	if got := e.ruleset(); got != "" {
		t.Errorf("table left after Close:\n%s", got)
	}
	if _, err := os.Stat(file); err != nil {
		t.Errorf("persist file removed by Close: %v", err)
	}

	// Crash while persisted: Cleanup leaves forwarding on too.
	m = e.newManager()
	mustSet(t, m, c)
	if err := Cleanup(e.stateDir, e.logf); err != nil {
		t.Fatal(err)
	}
	e.assertForwardingOn(t, true)

	// Consent withdrawn: the file goes away.
	c.Persist = false
	m = e.newManager()
	mustSet(t, m, c)
	if _, err := os.Stat(file); err == nil {
		t.Error("persist file kept after Persist=false")
	}
	m.Close()

	// A file of that name that skeind did not write is left alone.
	e.writeSysctl("net/ipv4/ip_forward", "0")
	e.writeSysctl("net/ipv6/conf/all/forwarding", "0")
	if got := e.snapshot(); got != before {
		t.Fatalf("test setup:%s", diffText(before, got))
	}
	foreign := "net.ipv4.ip_forward = 1\n"
	if err := os.WriteFile(file, []byte(foreign), 0o644); err != nil {
		t.Fatal(err)
	}
	c.Persist = true
	m = e.newManager()
	if err := m.Set(c); err == nil {
		t.Error("Set replaced a foreign sysctl.d file without an error")
	}
	c.Persist = false
	mustSet(t, m, c)
	if b, _ := os.ReadFile(file); string(b) != foreign {
		t.Errorf("foreign file changed: %q", b)
	}
	if err := m.Close(); err != nil {
		t.Fatal(err)
	}
	if got := e.snapshot(); got != before {
		t.Errorf("after Close:%s", diffText(before, got))
	}
}

func TestCheckReportsDeletedState(t *testing.T) {
	e := newEnv(t)
	e.fakeTun()
	m := e.newManager()
	defer m.Close()
	c := exitConfig()
	c.Persist = true
	mustSet(t, m, c)
	assertInSync(t, m)

	expect := func(substr string) {
		t.Helper()
		got := m.Check()
		if !strings.Contains(strings.Join(got, "\n"), substr) {
			t.Errorf("Check = %q, want it to mention %q", got, substr)
		}
		mustSet(t, m, c)
		assertInSync(t, m)
		if got := e.ruleset(); got != wantExitRuleset {
			t.Errorf("ruleset after repair:%s", diffText(wantExitRuleset, got))
		}
	}

	e.nft("delete", "table", "inet", "skein")
	expect("nftables table inet skein is missing")

	e.nft("delete", "chain", "inet", "skein", "postrouting")
	expect("chain inet skein postrouting is missing")

	out := e.nft("-a", "list", "chain", "inet", "skein", "forward")
	var handle string
	for _, l := range strings.Split(out, "\n") {
		if strings.Contains(l, "not an advertised route") {
			handle = l[strings.LastIndex(l, " ")+1:]
		}
	}
	e.nft("delete", "rule", "inet", "skein", "forward", "handle", handle)
	expect(`"skein: not an advertised route"`)

	e.nft("add", "rule", "inet", "skein", "forward", "accept")
	expect("1 extra rules")

	e.writeSysctl("net/ipv4/ip_forward", "0")
	expect("net.ipv4.ip_forward is 0, want 1")

	os.Remove(filepath.Join(SysctlDir, PersistFileName))
	expect(PersistFileName + " is missing")
}

// Nothing changes unless the journal can be written first.
func TestUnwritableJournalChangesNothing(t *testing.T) {
	e := newEnv(t)
	e.fakeTun()
	before := e.snapshot()
	blocker := filepath.Join(t.TempDir(), "file")
	if err := os.WriteFile(blocker, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	m := New(filepath.Join(blocker, "state"), e.logf)
	if err := m.Set(exitConfig()); err == nil {
		t.Error("Set succeeded without a journal")
	}
	if got := e.snapshot(); got != before {
		t.Errorf("host changed without a journal:%s", diffText(before, got))
	}
}
