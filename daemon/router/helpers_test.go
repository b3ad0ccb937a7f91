package router

import (
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"runtime"
	"strings"
	"sync"
	"testing"

	"github.com/vishvananda/netns"
	"golang.zx2c4.com/wireguard/tun"
)

const tunName = "skt0"

// env is a fresh network namespace that the test goroutine's OS thread has
// entered; everything the test creates lives there.
type env struct {
	t   *testing.T
	ns  string
	dev tun.Device

	logMu sync.Mutex
	logs  []string
}

func newEnv(t *testing.T) *env {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root (network namespaces, TUN)")
	}
	if _, err := exec.LookPath("ip"); err != nil {
		t.Skip("needs iproute2")
	}
	name := fmt.Sprintf("skrt-%d-%08x", os.Getpid(), rand.Uint32())
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
	t.Cleanup(func() {
		if err := netns.Set(orig); err != nil {
			// Leave the thread locked: the runtime discards it when the
			// test goroutine ends.
			t.Errorf("restore netns: %v", err)
		} else {
			runtime.UnlockOSThread()
		}
		orig.Close()
		h.Close()
		if out, err := exec.Command("ip", "netns", "del", name).CombinedOutput(); err != nil {
			t.Errorf("ip netns del %s: %v: %s", name, err, out)
		}
	})
	return &env{t: t, ns: name}
}

// createTUN makes the device the way skeind does (wireguard-go).
func (e *env) createTUN() {
	e.t.Helper()
	dev, err := tun.CreateTUN(tunName, 1280)
	if err != nil {
		e.t.Fatalf("CreateTUN: %v", err)
	}
	e.dev = dev
	e.t.Cleanup(func() { dev.Close() })
}

// otherDev makes an unrelated up device ("skt1") for foreign routes.
func (e *env) otherDev() {
	e.t.Helper()
	dev, err := tun.CreateTUN("skt1", 1500)
	if err != nil {
		e.t.Fatalf("CreateTUN: %v", err)
	}
	e.t.Cleanup(func() { dev.Close() })
	e.ip("link", "set", "skt1", "up")
}

func (e *env) logf(format string, args ...any) {
	s := fmt.Sprintf(format, args...)
	e.logMu.Lock()
	e.logs = append(e.logs, s)
	e.logMu.Unlock()
	e.t.Log(s)
}

func (e *env) logged(substr string) bool {
	e.logMu.Lock()
	defer e.logMu.Unlock()
	for _, l := range e.logs {
		if strings.Contains(l, substr) {
			return true
		}
	}
	return false
}

func (e *env) newRouter() *Router {
	e.t.Helper()
	r, err := New(tunName, e.logf)
	if err != nil {
		e.t.Fatalf("New: %v", err)
	}
	return r
}

// ip runs iproute2 inside the namespace and returns its output with
// trailing blanks trimmed from each line.
func (e *env) ip(args ...string) string {
	e.t.Helper()
	out, err := e.ipErr(args...)
	if err != nil {
		e.t.Fatalf("ip %s: %v: %s", strings.Join(args, " "), err, out)
	}
	return out
}

func (e *env) ipErr(args ...string) (string, error) {
	out, err := exec.Command("ip", append([]string{"netns", "exec", e.ns, "ip"}, args...)...).CombinedOutput()
	if err != nil && strings.Contains(string(out), "FIB table does not exist") {
		// iproute2 fails to dump a table that was never created: empty.
		return "", nil
	}
	lines := strings.Split(strings.TrimRight(string(out), "\n"), "\n")
	for i, l := range lines {
		lines[i] = strings.TrimRight(l, " \t")
	}
	return strings.Join(lines, "\n"), err
}

// snapshot is what Close and Cleanup must restore.
func (e *env) snapshot() string {
	return strings.Join([]string{
		e.ip("rule", "show"),
		e.ip("-6", "rule", "show"),
		e.ip("route", "show", "table", "52"),
		e.ip("-6", "route", "show", "table", "52"),
	}, "\n--\n")
}

func (e *env) writeSysctl(path, val string) {
	e.t.Helper()
	// /proc/sys/net follows the opening thread's namespace: ours.
	if err := os.WriteFile("/proc/sys/"+strings.ReplaceAll(path, ".", "/"), []byte(val), 0o644); err != nil {
		e.t.Fatal(err)
	}
}

func diffText(want, got string) string {
	return fmt.Sprintf("\n--- want\n%s\n--- got\n%s", want, got)
}
