package lab_test

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/skeinvpn/skein/internal/lab"
	"github.com/skeinvpn/skein/ipc"
)

// TestJoinRestartAndPermissions: skeind joins with a pre-auth key and sees an official peer,
// the official peer and Headscale see it; a restart keeps the same node; a non-operator may
// read but not change state.
func TestJoinRestartAndPermissions(t *testing.T) {
	t.Parallel()
	l := lab.New(t)
	tn, err := l.StartTailnet("lab", "alpha-ts")
	if err != nil {
		t.Fatal(err)
	}
	c := tn.Control
	alpha := tn.Peer("alpha-ts")
	n := startNode(t, l, "skein-a")

	mustOK(t, n.cli("up", "--login-server", c.URL(), "--auth-key", "file:"+n.authKeyFile(tn.AuthKey), "--hostname", "skein-a"), "skein up")

	// skein status lists the official node with its 100.64 address and hostname.
	alphaSt, err := alpha.Status()
	if err != nil {
		t.Fatal(err)
	}
	alphaIP := alphaSt.Self.IPv4()
	if !alphaIP.IsValid() {
		t.Fatalf("alpha has no IPv4: %+v", alphaSt.Self)
	}
	lab.Eventually(t, 20*time.Second, func() error {
		r := n.cli("status")
		if r.code != 0 {
			return fmt.Errorf("status exit %d: %s", r.code, r.stderr)
		}
		for _, line := range strings.Split(r.stdout, "\n") {
			f := strings.Fields(line)
			if len(f) >= 4 && f[0] == alphaIP.String() && f[1] == "alpha-ts" {
				return nil
			}
		}
		return fmt.Errorf("alpha-ts %s not in status:\n%s", alphaIP, r.stdout)
	})
	st := statusJSON(t, n.cli("status", "--json"))
	if st.State != ipc.StateRunning || st.Self == nil || st.Self.HostName != "skein-a" {
		t.Fatalf("status: state %s self %+v", st.State, st.Self)
	}
	if p := n.peer(st, "alpha-ts"); p == nil || p.OS != "linux" || !p.Online {
		t.Fatalf("alpha-ts in status --json: %+v", p)
	}
	selfIP := st.Self.Addresses[0]
	if !strings.HasPrefix(selfIP.String(), "100.") {
		t.Fatalf("self address %v not in 100.64/10", selfIP)
	}
	if r := n.cli("ip", "-4"); r.code != 0 || strings.TrimSpace(r.stdout) != selfIP.String() {
		t.Fatalf("skein ip -4: %q (exit %d), want %s", r.stdout, r.code, selfIP)
	}

	// The official client sees our node, with the OS we report (which it learns through
	// Headscale's stored Hostinfo).
	lab.Eventually(t, 20*time.Second, func() error {
		s, err := alpha.Status()
		if err != nil {
			return err
		}
		p := s.PeerByHostName("skein-a")
		if p == nil {
			return fmt.Errorf("alpha-ts does not list skein-a")
		}
		if p.OS != "linux" || p.IPv4() != selfIP {
			return fmt.Errorf("alpha-ts sees skein-a as %s os=%q", p, p.OS)
		}
		return nil
	})
	hsNode, err := c.NodeByName("skein-a")
	if err != nil {
		t.Fatal(err)
	}
	if hsNode.RegisterMethod != "authkey" || hsNode.IPAddresses[0] != selfIP {
		t.Fatalf("headscale node: %+v", hsNode)
	}
	nodesBefore, _ := c.Nodes()

	// The state file is private (root's, 0600 in a 0700 directory) and holds the registration.
	d := n.stored()
	if !d.LoggedIn || d.Prefs.LoginServer != c.URL() {
		t.Fatalf("stored state: logged in %v, server %q", d.LoggedIn, d.Prefs.LoginServer)
	}
	for path, want := range map[string]os.FileMode{n.statedir: 0o700, filepath.Join(n.statedir, "skeind.state"): 0o600} {
		fi, err := os.Stat(path)
		if err != nil {
			t.Fatal(err)
		}
		if st := fi.Sys().(*syscall.Stat_t); fi.Mode().Perm() != want || st.Uid != 0 {
			t.Errorf("%s: mode %v owner %d, want %v owned by root", path, fi.Mode().Perm(), st.Uid, want)
		}
	}
	if out, err := exec.Command("setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", "cat", filepath.Join(n.statedir, "skeind.state")).CombinedOutput(); err == nil {
		t.Errorf("nobody can read the state file: %s", out)
	}

	// Restart: same node key, same address, no new node in Headscale.
	keyBefore := st.Self.NodeKey
	n.stop()
	n.start()
	lab.Eventually(t, 20*time.Second, func() error {
		if s := n.status(); s.State != ipc.StateRunning {
			return fmt.Errorf("state %s after restart", s.State)
		}
		return nil
	})
	st2 := n.status()
	if st2.Self.NodeKey != keyBefore || st2.Self.Addresses[0] != selfIP {
		t.Fatalf("after restart: key %s addr %v; before: key %s addr %v", st2.Self.NodeKey, st2.Self.Addresses[0], keyBefore, selfIP)
	}
	nodesAfter, _ := c.Nodes()
	if len(nodesAfter) != len(nodesBefore) {
		t.Fatalf("headscale has %d nodes after restart, %d before", len(nodesAfter), len(nodesBefore))
	}
	if after, _ := c.NodeByName("skein-a"); after == nil || after.ID != hsNode.ID {
		t.Fatalf("node ID changed across restart: %+v", after)
	}

	// A non-operator user may read status but not change anything.
	nobody := &syscall.Credential{Uid: 65534, Gid: 65534}
	r := n.cliAs(nobody, "status")
	if r.code != 0 || !strings.Contains(r.stdout, "alpha-ts") {
		t.Fatalf("status as nobody: exit %d\n%s%s", r.code, r.stdout, r.stderr)
	}
	r = n.cliAs(nobody, "up")
	if r.code == 0 || !strings.Contains(oneLine(t, r.stderr), "permission denied") {
		t.Fatalf("up as nobody: exit %d, stderr %q", r.code, r.stderr)
	}
	if r := n.cliAs(nobody, "down"); r.code == 0 {
		t.Fatalf("down as nobody succeeded")
	}
	if r := n.cliAs(nobody, "set", "--operator=nobody"); r.code == 0 {
		t.Fatalf("nobody made itself operator")
	}
	if s := n.status(); s.State != ipc.StateRunning {
		t.Fatalf("state %s after refused calls", s.State)
	}
	// Once root names it operator, the same user may take the node down and up again.
	mustOK(t, n.cli("set", "--operator=nobody"), "set --operator")
	mustOK(t, n.cliAs(nobody, "down"), "down as operator")
	if s := n.status(); s.State != ipc.StateStopped {
		t.Fatalf("state %s after down", s.State)
	}
	mustOK(t, n.cliAs(nobody, "up"), "up as operator")
	if s := n.status(); s.State != ipc.StateRunning {
		t.Fatalf("state %s after up", s.State)
	}
	n.stop()
}
