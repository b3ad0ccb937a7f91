package forwarding

import (
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"sort"
	"strings"
	"sync"
	"testing"

	"github.com/vishvananda/netns"
)

const tunName = "skt0"

// env is a fresh network namespace that the test goroutine's OS thread has
// entered; the Manager under test acts on it and nothing else.
type env struct {
	t        *testing.T
	ns       string
	stateDir string
	extra    []string // further namespaces, deleted at the end

	logMu sync.Mutex
	logs  []string
}

func newEnv(t *testing.T) *env {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root (network namespaces, nftables)")
	}
	for _, bin := range []string{"ip", "nft"} {
		if _, err := exec.LookPath(bin); err != nil {
			t.Skipf("needs %s", bin)
		}
	}
	name := fmt.Sprintf("skfw-%d-%08x", os.Getpid(), rand.Uint32())
	if out, err := exec.Command("ip", "netns", "add", name).CombinedOutput(); err != nil {
		t.Fatalf("ip netns add: %v: %s", err, out)
	}
	runtime.LockOSThread()
	orig, err := netns.Get()
	if err != nil {
		t.Fatal(err)
	}
	h, err := netns.GetFromName(name)
	if err != nil {
		t.Fatal(err)
	}
	if err := netns.Set(h); err != nil {
		t.Fatal(err)
	}
	e := &env{t: t, ns: name, stateDir: filepath.Join(t.TempDir(), "state")}
	oldDir := SysctlDir
	SysctlDir = filepath.Join(t.TempDir(), "sysctl.d")
	t.Cleanup(func() {
		SysctlDir = oldDir
		if err := netns.Set(orig); err != nil {
			// Leave the thread locked: the runtime discards it when the
			// test goroutine ends.
			t.Errorf("restore netns: %v", err)
		} else {
			runtime.UnlockOSThread()
		}
		orig.Close()
		h.Close()
		for _, ns := range append(e.extra, name) {
			if out, err := exec.Command("ip", "netns", "del", ns).CombinedOutput(); err != nil {
				t.Errorf("ip netns del %s: %v: %s", ns, err, out)
			}
		}
	})
	e.ip("link", "set", "lo", "up")
	return e
}

func (e *env) logf(format string, args ...any) {
	s := fmt.Sprintf(format, args...)
	e.logMu.Lock()
	e.logs = append(e.logs, s)
	e.logMu.Unlock()
	e.t.Log(s)
}

func (e *env) newManager() *Manager { return New(e.stateDir, e.logf) }

// run executes a command inside the test namespace.
func (e *env) run(name string, args ...string) string {
	e.t.Helper()
	out, err := exec.Command("ip", append([]string{"netns", "exec", e.ns, name}, args...)...).CombinedOutput()
	if err != nil {
		e.t.Fatalf("%s %s: %v: %s", name, strings.Join(args, " "), err, out)
	}
	return strings.TrimRight(string(out), "\n")
}

func (e *env) ip(args ...string) string  { e.t.Helper(); return e.run("ip", args...) }
func (e *env) nft(args ...string) string { e.t.Helper(); return e.run("nft", args...) }

// nftScript loads a ruleset fragment with nft -f.
func (e *env) nftScript(script string) {
	e.t.Helper()
	cmd := exec.Command("ip", "netns", "exec", e.ns, "nft", "-f", "-")
	cmd.Stdin = strings.NewReader(script)
	if out, err := cmd.CombinedOutput(); err != nil {
		e.t.Fatalf("nft -f: %v: %s\n%s", err, out, script)
	}
}

var counterRE = regexp.MustCompile(`counter packets \d+ bytes \d+`)

// ruleset is `nft list ruleset` with counter values blanked.
func (e *env) ruleset() string {
	e.t.Helper()
	return counterRE.ReplaceAllString(e.nft("list", "ruleset"), "counter")
}

// sysctls is every forwarding switch of the namespace, sorted.
func (e *env) sysctls() string {
	e.t.Helper()
	var lines []string
	add := func(key string) {
		v, err := readSysctl(key)
		if err != nil {
			e.t.Fatal(err)
		}
		lines = append(lines, key+"="+v)
	}
	add("net/ipv4/ip_forward")
	for _, fam := range []string{famV4, famV6} {
		ents, err := os.ReadDir(filepath.Join(procSys, confDir(fam)))
		if err != nil {
			e.t.Fatal(err)
		}
		for _, d := range ents {
			add(confDir(fam) + "/" + d.Name() + "/forwarding")
		}
	}
	sort.Strings(lines)
	return strings.Join(lines, "\n")
}

// snapshot is what Close and Cleanup must give back.
func (e *env) snapshot() string {
	return e.ruleset() + "\n--\n" + e.sysctls()
}

func (e *env) writeSysctl(key, val string) {
	e.t.Helper()
	if err := writeSysctl(key, val); err != nil {
		e.t.Fatal(err)
	}
}

func (e *env) sysctl(key string) string {
	e.t.Helper()
	v, err := readSysctl(key)
	if err != nil {
		e.t.Fatal(err)
	}
	return v
}

// addNS creates another namespace for the test and returns its name.
func (e *env) addNS(suffix string) string {
	e.t.Helper()
	name := e.ns + "-" + suffix
	if out, err := exec.Command("ip", "netns", "add", name).CombinedOutput(); err != nil {
		e.t.Fatalf("ip netns add: %v: %s", err, out)
	}
	e.extra = append(e.extra, name)
	e.ipIn(name, "link", "set", "lo", "up")
	return name
}

// ipIn runs iproute2 in namespace ns.
func (e *env) ipIn(ns string, args ...string) {
	e.t.Helper()
	if out, err := exec.Command("ip", append([]string{"-n", ns}, args...)...).CombinedOutput(); err != nil {
		e.t.Fatalf("ip -n %s %s: %v: %s", ns, strings.Join(args, " "), err, out)
	}
}

// inNS runs fn on an OS thread that has entered namespace ns. Sockets fn
// opens stay in ns and can be used from any goroutine afterwards.
func inNS(ns string, fn func() error) error {
	errc := make(chan error, 1)
	go func() {
		// Never unlocked: the runtime ends the thread with the goroutine.
		runtime.LockOSThread()
		h, err := netns.GetFromName(ns)
		if err != nil {
			errc <- err
			return
		}
		defer h.Close()
		if err := netns.Set(h); err != nil {
			errc <- err
			return
		}
		errc <- fn()
	}()
	return <-errc
}

func mustSet(t *testing.T, m *Manager, cfg Config) {
	t.Helper()
	if err := m.Set(cfg); err != nil {
		t.Fatalf("Set: %v", err)
	}
}

func assertInSync(t *testing.T, m *Manager) {
	t.Helper()
	if missing := m.Check(); len(missing) != 0 {
		t.Errorf("Check: %q", missing)
	}
}

func diffText(want, got string) string {
	return fmt.Sprintf("\n--- want\n%s\n--- got\n%s", want, got)
}

// fakeTun stands in for the tailnet interface: the rules only look at its
// name. (No dummy driver here; one end of a veth pair does as well.)
func (e *env) fakeTun() {
	e.t.Helper()
	e.ip("link", "add", tunName, "type", "veth", "peer", "name", tunName+"p")
	e.ip("link", "set", tunName, "up")
	e.ip("link", "set", tunName+"p", "up")
}

func haveCmd(name string) bool {
	_, err := exec.LookPath(name)
	return err == nil
}
