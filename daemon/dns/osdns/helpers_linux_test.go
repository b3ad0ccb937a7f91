package osdns

import (
	"bufio"
	"errors"
	"fmt"
	"io/fs"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/godbus/dbus/v5"
)

var (
	v4 = MagicDNSv4
	v6 = MagicDNSv6
)

func noBus() (*dbus.Conn, error) { return nil, errors.New("no bus in this test") }

// fakeClock is a settable clock for the re-apply budget.
type fakeClock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *fakeClock) now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *fakeClock) advance(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
}

// rcOptions returns options for resolv.conf mode on path, with no bus.
func rcOptions(t *testing.T, path string) Options {
	t.Helper()
	return Options{
		TunName:      "skein-test0",
		StateDir:     filepath.Join(t.TempDir(), "state"),
		ResolvConf:   path,
		Logf:         t.Logf,
		Bus:          noBus,
		PollInterval: 50 * time.Millisecond,
		nmRunning:    func() bool { return false },
	}
}

func newRC(t *testing.T, opts Options) *Manager {
	t.Helper()
	m, err := New(opts)
	if err != nil {
		t.Fatal(err)
	}
	if m.Mode() != ModeResolvConf {
		t.Fatalf("mode = %q, want %q (%s)", m.Mode(), ModeResolvConf, m.Status().Reason)
	}
	return m
}

func writeFile(t *testing.T, path, content string, mode fs.FileMode) {
	t.Helper()
	if err := os.WriteFile(path, []byte(content), mode); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(path, mode); err != nil {
		t.Fatal(err)
	}
}

func readFile(t *testing.T, path string) string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// replaceFile swaps in new content by rename, the way NetworkManager and most tools do.
func replaceFile(t *testing.T, path, content string) {
	t.Helper()
	tmp := path + ".other-tmp"
	writeFile(t, tmp, content, 0o644)
	if err := os.Rename(tmp, path); err != nil {
		t.Fatal(err)
	}
}

func inode(t *testing.T, path string) uint64 {
	t.Helper()
	fi, err := os.Lstat(path)
	if err != nil {
		t.Fatal(err)
	}
	return fi.Sys().(*syscall.Stat_t).Ino
}

// waitFor polls cond until it holds or the timeout passes.
func waitFor(t *testing.T, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s", timeout, what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func requireRoot(t *testing.T) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root")
	}
}

func hasWarning(st Status, substrs ...string) bool {
	for _, w := range st.Warnings {
		ok := true
		for _, s := range substrs {
			if !strings.Contains(w, s) {
				ok = false
				break
			}
		}
		if ok {
			return true
		}
	}
	return false
}

func addrPorts(ss ...string) []netip.AddrPort {
	var out []netip.AddrPort
	for _, s := range ss {
		out = append(out, netip.MustParseAddrPort(s))
	}
	return out
}

// startBus runs a private dbus-daemon with a permissive system-bus-like policy and returns
// its address.
func startBus(t *testing.T) string {
	t.Helper()
	if _, err := exec.LookPath("dbus-daemon"); err != nil {
		t.Skip("dbus-daemon not installed")
	}
	dir := t.TempDir()
	conf := filepath.Join(dir, "bus.conf")
	sock := filepath.Join(dir, "bus")
	xml := fmt.Sprintf(`<!DOCTYPE busconfig PUBLIC "-//freedesktop//DTD D-Bus Bus Configuration 1.0//EN"
 "http://www.freedesktop.org/standards/dbus/1.0/busconfig.dtd">
<busconfig>
  <type>system</type>
  <listen>unix:path=%s</listen>
  <auth>EXTERNAL</auth>
  <policy context="default">
    <allow user="*"/>
    <allow own="*"/>
    <allow send_destination="*" eavesdrop="true"/>
    <allow receive_sender="*"/>
    <allow eavesdrop="true"/>
  </policy>
</busconfig>
`, sock)
	if err := os.WriteFile(conf, []byte(xml), 0o600); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command("dbus-daemon", "--config-file="+conf, "--nofork", "--nopidfile", "--print-address")
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stderr = nil
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		cmd.Process.Kill()
		cmd.Wait()
	})
	line, err := bufio.NewReader(out).ReadString('\n')
	if err != nil {
		t.Fatalf("dbus-daemon: %v", err)
	}
	return strings.TrimSpace(line)
}

// settledStatus is the manager's status read under its lock. Status answers with the last
// status while a re-apply holds the lock (so that skeind's status never waits for file or
// D-Bus work), so a test that has just seen the file re-applied could read the status from
// before the re-apply: under load CI did (TestOwnFileEdited).
func settledStatus(t *testing.T, m *Manager) Status {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		st := Status{Mode: m.mode, Reason: m.reason}
		if m.be.status(&st) {
			return st
		}
		if time.Now().After(deadline) {
			t.Fatal("the DNS manager stayed locked for 5 s")
		}
		time.Sleep(time.Millisecond)
	}
}
