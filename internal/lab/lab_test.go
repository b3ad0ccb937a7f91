package lab

import (
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// TestTailnet brings up control and two official peers, checks they see and
// reach each other (tailscale ping, and TCP through the kernel TUNs), does
// an interactive login, restarts Headscale, and checks that Close leaves
// nothing behind.
func TestTailnet(t *testing.T) {
	t.Parallel()
	start := time.Now()
	l := New(t)
	tn, err := l.StartTailnet("lab", "alpha-ts", "beta-ts")
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("tailnet with 2 peers up in %v", time.Since(start).Round(time.Millisecond))
	alpha, beta := tn.Peer("alpha-ts"), tn.Peer("beta-ts")

	// Each status shows the other, online, with Linux and an IPv4.
	for _, pair := range [][2]*Tailscaled{{alpha, beta}, {beta, alpha}} {
		self, other := pair[0], pair[1]
		Eventually(t, 30*time.Second, func() error {
			st, err := self.Status()
			if err != nil {
				return err
			}
			if st.BackendState != "Running" || !st.TUN {
				return fmt.Errorf("%s: state %s TUN %v", self.Hostname(), st.BackendState, st.TUN)
			}
			p := st.PeerByHostName(other.Hostname())
			if p == nil {
				return fmt.Errorf("%s does not see %s", self.Hostname(), other.Hostname())
			}
			if !p.Online || p.OS != "linux" || !p.IPv4().IsValid() {
				return fmt.Errorf("%s sees %s", self.Hostname(), p)
			}
			if !strings.HasSuffix(strings.TrimSuffix(p.DNSName, "."), MagicDNSSuffix) {
				return fmt.Errorf("DNSName %q", p.DNSName)
			}
			return nil
		})
	}

	// Headscale's view.
	nodes, err := tn.Control.Nodes()
	if err != nil {
		t.Fatal(err)
	}
	if len(nodes) != 2 {
		t.Fatalf("headscale has %d nodes, want 2: %+v", len(nodes), nodes)
	}
	for _, n := range nodes {
		if n.User != "lab" || len(n.IPAddresses) != 2 || !strings.HasPrefix(n.NodeKey, "nodekey:") || n.RegisterMethod != "authkey" {
			t.Errorf("node %+v", n)
		}
	}

	st, err := beta.Status()
	if err != nil {
		t.Fatal(err)
	}
	betaIP := st.Self.IPv4()
	out, err := alpha.CLI("ping", "--c", "3", "--timeout", "10s", betaIP.String())
	if err != nil {
		t.Fatalf("tailscale ping: %v", err)
	}
	if !strings.Contains(out, "pong from beta-ts") {
		t.Fatalf("tailscale ping output:\n%s", out)
	}
	t.Logf("alpha-ts -> beta-ts: %s", strings.TrimSpace(out))

	// Plain TCP between the kernel TUNs.
	ln, err := beta.Host().Listen("tcp", betaIP.String()+":7001")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		defer c.Close()
		io.Copy(c, c)
	}()
	conn, err := alpha.Host().Dial(t.Context(), "tcp", betaIP.String()+":7001")
	if err != nil {
		t.Fatalf("TCP over the tailnet: %v", err)
	}
	conn.SetDeadline(time.Now().Add(10 * time.Second))
	if _, err := conn.Write([]byte("hello skein")); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 11)
	if _, err := io.ReadFull(conn, buf); err != nil || string(buf) != "hello skein" {
		t.Fatalf("echo over the tailnet: %q, %v", buf, err)
	}
	conn.Close()

	// Interactive login approved with `headscale nodes register`, on a
	// userspace-networking peer.
	gh, err := l.AddHost("gamma-ts")
	if err != nil {
		t.Fatal(err)
	}
	gamma, err := gh.StartTailscaledWith(TailscaledOptions{Hostname: "gamma-ts", Userspace: true})
	if err != nil {
		t.Fatal(err)
	}
	authURL, err := gamma.StartLogin(tn.Control.URL())
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(authURL, tn.Control.URL()+"/register/") {
		t.Errorf("AuthURL %q", authURL)
	}
	if err := tn.Control.RegisterNode("lab", authURL); err != nil {
		t.Fatal(err)
	}
	if err := gamma.WaitRunning(30 * time.Second); err != nil {
		t.Fatal(err)
	}
	if err := alpha.WaitPeers(30*time.Second, "gamma-ts"); err != nil {
		t.Fatal(err)
	}
	if st, err := gamma.Status(); err != nil || st.TUN {
		t.Fatalf("gamma-ts should be userspace: %+v, %v", st, err)
	}
	if n, err := tn.Control.NodeByName("gamma-ts"); err != nil || n.RegisterMethod != "cli" {
		t.Fatalf("gamma-ts in headscale: %+v, %v", n, err)
	}
	t.Logf("interactive login done at %v", time.Since(start).Round(time.Millisecond))

	// Policy reload; invalid policies are refused.
	if err := tn.Control.SetPolicy(`{"acls": [{"action": "accept", "src": ["*"], "dst": ["nosuchthing"]}]}`); err == nil {
		t.Fatal("SetPolicy accepted an invalid policy")
	}
	if err := tn.Control.SetPolicy(`{"acls": [{"action": "accept", "src": ["*"], "dst": ["100.64.0.0/10:1"]}]}`); err != nil {
		t.Fatal(err)
	}
	if err := tn.Control.SetPolicy(DefaultPolicy); err != nil {
		t.Fatal(err)
	}

	// Headscale restart keeps state.
	if err := tn.Control.Stop(); err != nil {
		t.Fatal(err)
	}
	t.Logf("headscale stopped at %v", time.Since(start).Round(time.Millisecond))
	if err := tn.Control.Start(); err != nil {
		t.Fatal(err)
	}
	Eventually(t, 30*time.Second, func() error {
		nodes, err := tn.Control.Nodes()
		if err != nil {
			return err
		}
		online := 0
		for _, n := range nodes {
			if n.Online {
				online++
			}
		}
		if len(nodes) != 3 || online != 3 {
			return fmt.Errorf("after restart: %d nodes, %d online", len(nodes), online)
		}
		return nil
	})

	t.Logf("headscale restarted, all online at %v", time.Since(start).Round(time.Millisecond))

	// Close leaves nothing behind.
	procs := l.Processes()
	namespaces := l.Namespaces()
	dir := l.Dir()
	closeStart := time.Now()
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	t.Logf("closed in %v", time.Since(closeStart).Round(time.Millisecond))
	assertGone(t, l.ID(), namespaces, dir, procs)
}

func assertGone(t *testing.T, id string, namespaces []string, dir string, procs []*Process) {
	t.Helper()
	out, err := exec.Command("ip", "netns", "list").Output()
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(string(out), nsPrefix+id+"-") {
		t.Errorf("namespaces left:\n%s", out)
	}
	for _, ns := range namespaces {
		if _, err := os.Stat(filepath.Join("/etc/netns", ns)); err == nil {
			t.Errorf("/etc/netns/%s left", ns)
		}
	}
	for _, p := range procs {
		if !p.Exited() {
			t.Errorf("%s still running", p.Name())
		}
		if err := syscall.Kill(p.Pid(), 0); err == nil {
			t.Errorf("pid %d (%s) still exists", p.Pid(), p.Name())
		}
	}
	if _, err := os.Stat(dir); err == nil {
		t.Errorf("%s left", dir)
	}
	if _, err := os.Stat(recordPath(id)); err == nil {
		t.Errorf("record %s left", recordPath(id))
	}
}

// TestTwoLabs checks that labs in parallel get distinct names and subnets
// and that hosts of the same name don't collide.
func TestTwoLabs(t *testing.T) {
	t.Parallel()
	a, b := New(t), New(t)
	if a.ID() == b.ID() || a.Subnet() == b.Subnet() {
		t.Fatalf("labs collide: %s %s / %s %s", a.ID(), a.Subnet(), b.ID(), b.Subnet())
	}
	for _, l := range []*Lab{a, b} {
		h1, err := l.AddHost("alpha-ts")
		if err != nil {
			t.Fatal(err)
		}
		h2, err := l.AddHost("beta-ts")
		if err != nil {
			t.Fatal(err)
		}
		// h1 reaches h2 over the bridge.
		ln, err := h2.Listen("tcp", h2.Addr().String()+":7002")
		if err != nil {
			t.Fatal(err)
		}
		go func() {
			if c, err := ln.Accept(); err == nil {
				c.Write([]byte("ok"))
				c.Close()
			}
		}()
		c, err := h1.Dial(t.Context(), "tcp", h2.Addr().String()+":7002")
		if err != nil {
			t.Fatal(err)
		}
		got, _ := io.ReadAll(c)
		c.Close()
		ln.Close()
		if string(got) != "ok" {
			t.Fatalf("got %q", got)
		}
		// resolv.conf and hosts are the namespace's own.
		out, err := h1.Run("cat", "/etc/resolv.conf", "/etc/hosts")
		if err != nil {
			t.Fatal(err)
		}
		if !strings.Contains(out, "skein lab "+l.ID()) || !strings.Contains(out, controlName) {
			t.Errorf("namespace /etc files:\n%s", out)
		}
		// The lab has no way out.
		if _, err := h1.Dial(t.Context(), "tcp", "192.0.2.1:80"); err == nil {
			t.Errorf("dial outside the lab succeeded")
		}
	}
}

// TestSweep fakes the leftovers of a crashed run and checks that Sweep
// removes them, including the process inside its namespace.
func TestSweep(t *testing.T) {
	t.Parallel()
	id := "zz" + randomID()[:2]
	ns := nsPrefix + id + "-inet"
	dir := runDir(id)
	t.Cleanup(func() { removeNetns(ns); os.RemoveAll(dir); removeRecord(id) })
	// The fake run's owner is alive until we kill it below, so that labs
	// starting meanwhile (in this or another test binary) leave it alone.
	owner := exec.Command("sleep", "1000")
	if err := owner.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { owner.Process.Kill(); owner.Wait() })
	ownerStart, err := procStartTime(owner.Process.Pid)
	if err != nil {
		t.Fatal(err)
	}
	if err := withRunLock(func() error {
		return writeRecord(runRecord{ID: id, PID: owner.Process.Pid, PIDStart: ownerStart, Subnet: 511, Dir: dir})
	}); err != nil {
		t.Fatal(err)
	}
	if err := ipCmds([]string{"netns", "add", ns}); err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll(filepath.Join("/etc/netns", ns), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	sleeper := exec.Command("ip", "netns", "exec", ns, "sleep", "1000")
	if err := sleeper.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- sleeper.Wait() }()
	Eventually(t, 5*time.Second, func() error {
		if pids, _ := netnsPids(ns); len(pids) == 0 {
			return fmt.Errorf("sleep not in %s yet", ns)
		}
		return nil
	})

	removed, err := Sweep()
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range removed {
		if strings.Contains(r, id) {
			t.Fatalf("Sweep removed %q of a live run", r)
		}
	}
	if pids, _ := netnsPids(ns); len(pids) == 0 {
		t.Fatal("Sweep killed a live run's process")
	}
	owner.Process.Kill()
	owner.Wait()

	removed, err = Sweep()
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("swept: %q", removed)
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		t.Fatal("process in the stale namespace survived")
	}
	assertGone(t, id, []string{ns}, dir, nil)
}

// TestMissingBinaries checks the failure message when peers aren't built.
func TestMissingBinaries(t *testing.T) {
	t.Setenv("SKEIN_LAB_CACHE", t.TempDir())
	_, err := NewStandalone("test")
	if err == nil || !strings.Contains(err.Error(), "lab-peers.sh") {
		t.Fatalf("err = %v", err)
	}
}
