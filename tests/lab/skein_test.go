// Package lab_test holds Skein's acceptance tests: skeind and the skein CLI against real
// Headscale and official tailscaled in network namespaces (see internal/lab). They need root.
package lab_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/skeinvpn/skein/daemon/state"
	"github.com/skeinvpn/skein/internal/lab"
	"github.com/skeinvpn/skein/ipc"
)

// Binaries under test, built once by TestMain: skeind with the race detector (so a data race in
// the helper fails the control-plane lab tests; SKEIN_LAB_NORACE=1 leaves it out), and a plain
// build for the data-plane tests, which move gigabytes that the race detector would slow
// several times (the transport's own tests run with -race).
var skeindBin, skeindFastBin, skeinBin string

func TestMain(m *testing.M) {
	race := []string{"-race"}
	if os.Getenv("SKEIN_LAB_NORACE") == "1" {
		race = nil // for measuring: the race detector slows the data plane several times
	}
	dir, err := lab.BuildForTest("skein-lab-bin-", func(dir string) [][]string {
		skeindBin, skeinBin = filepath.Join(dir, "skeind"), filepath.Join(dir, "skein")
		skeindFastBin = filepath.Join(dir, "skeind-fast")
		return [][]string{
			append(append([]string{"build"}, race...), "-o", skeindBin, "github.com/skeinvpn/skein/cmd/skeind"),
			{"build", "-o", skeindFastBin, "github.com/skeinvpn/skein/cmd/skeind"},
			{"build", "-o", skeinBin, "github.com/skeinvpn/skein/cmd/skein"},
		}
	})
	if err != nil {
		fmt.Fprintln(os.Stderr, "building binaries under test:", err)
		os.Exit(1)
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// node is one skeind running in its own lab host.
type node struct {
	t        testing.TB
	bin      string
	host     *lab.Host
	proc     *lab.Process
	statedir string
	socket   string
	env      []string
	// wrap runs skeind through another command (e.g. unshare --uts).
	wrap []string
	// args are further skeind flags.
	args []string
}

// startNode starts skeind in a new lab host. The socket lives in a world-traversable directory
// so that unprivileged users can reach it, as under /run/skein.
func startNode(t testing.TB, l *lab.Lab, name string, env ...string) *node {
	t.Helper()
	h, err := l.AddHost(name)
	if err != nil {
		t.Fatal(err)
	}
	return startNodeOn(t, h, env...)
}

// startNodeOn starts skeind on an existing lab host (e.g. one behind a NAT).
func startNodeOn(t testing.TB, h *lab.Host, env ...string) *node {
	t.Helper()
	return startNodeWith(t, h, false, env...)
}

func startNodeWith(t testing.TB, h *lab.Host, fastDataPlane bool, env ...string) *node {
	t.Helper()
	sockDir, err := os.MkdirTemp("", "skein-sock-")
	if err != nil {
		t.Fatal(err)
	}
	os.Chmod(sockDir, 0o755)
	t.Cleanup(func() { os.RemoveAll(sockDir) })
	n := &node{
		t:        t,
		host:     h,
		statedir: filepath.Join(h.Dir(), "skein-state"),
		socket:   filepath.Join(sockDir, "skeind.sock"),
		env:      append([]string{"GORACE=halt_on_error=1"}, env...),
		bin:      skeindBin,
	}
	if fastDataPlane {
		n.bin = skeindFastBin
	}
	n.start()
	return n
}

func (n *node) start() {
	n.t.Helper()
	bin, args := n.bin, append([]string{"--statedir", n.statedir, "--socket", n.socket}, n.args...)
	if len(n.wrap) > 0 {
		bin, args = n.wrap[0], append(append(slices.Clone(n.wrap[1:]), n.bin), args...)
	}
	p, err := n.host.StartProcess(bin, n.env, args...)
	if err != nil {
		n.t.Fatal(err)
	}
	n.proc = p
	// Wait for this process to answer (a killed one leaves its socket file behind).
	lab.Eventually(n.t, 20*time.Second, func() error {
		if p.Exited() {
			return fmt.Errorf("skeind exited: %s", p.Log())
		}
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		_, err := ipc.NewClient(n.socket).Status(ctx)
		return err
	})
}

// stop ends skeind with SIGTERM and checks that it exited cleanly (no race report, no panic).
func (n *node) stop() {
	n.t.Helper()
	if err := n.proc.Signal(syscall.SIGTERM); err != nil {
		n.t.Fatal(err)
	}
	select {
	case <-n.proc.Done():
	case <-time.After(15 * time.Second):
		n.t.Fatalf("skeind did not exit 15 s after SIGTERM")
	}
	if err := n.proc.Wait(); err != nil {
		n.t.Errorf("skeind exited with %v; log:\n%s", err, n.proc.Log())
	}
}

type result struct {
	stdout, stderr string
	code           int
}

// cli runs the skein CLI (from the root namespace: the socket is a file path) as root.
func (n *node) cli(args ...string) result {
	return n.cliAs(nil, args...)
}

// cliAs runs the CLI with the given credentials (nil = root).
func (n *node) cliAs(cred *syscall.Credential, args ...string) result {
	n.t.Helper()
	limit := 90 * time.Second
	if len(args) > 0 && args[0] == "file" {
		limit = 10 * time.Minute // a 1 GiB transfer over DERP takes minutes
	}
	ctx, cancel := context.WithTimeout(context.Background(), limit)
	defer cancel()
	cmd := exec.CommandContext(ctx, skeinBin, append([]string{"--socket", n.socket}, args...)...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if cred != nil {
		cmd.SysProcAttr = &syscall.SysProcAttr{Credential: cred}
	}
	err := cmd.Run()
	r := result{stdout: stdout.String(), stderr: stderr.String()}
	if ee, ok := err.(*exec.ExitError); ok {
		r.code = ee.ExitCode()
	} else if err != nil {
		n.t.Fatalf("skein %v: %v", args, err)
	}
	return r
}

func (n *node) status() ipc.Status {
	n.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	st, err := ipc.NewClient(n.socket).Status(ctx)
	if err != nil {
		n.t.Fatalf("status: %v", err)
	}
	return st
}

func (n *node) stored() state.Data {
	n.t.Helper()
	s, err := state.Open(n.statedir)
	if err != nil {
		n.t.Fatal(err)
	}
	d, err := s.Load()
	if err != nil {
		n.t.Fatal(err)
	}
	return d
}

func (n *node) authKeyFile(key string) string {
	n.t.Helper()
	p := filepath.Join(n.host.Dir(), "authkey")
	if err := os.WriteFile(p, []byte(key+"\n"), 0o600); err != nil {
		n.t.Fatal(err)
	}
	return p
}

func (n *node) peer(st ipc.Status, host string) *ipc.Peer {
	for i := range st.Peers {
		if st.Peers[i].HostName == host {
			return &st.Peers[i]
		}
	}
	return nil
}

func mustOK(t testing.TB, r result, what string) {
	t.Helper()
	if r.code != 0 {
		t.Fatalf("%s: exit %d\nstdout: %s\nstderr: %s", what, r.code, r.stdout, r.stderr)
	}
}

func statusJSON(t testing.TB, r result) ipc.Status {
	t.Helper()
	var st ipc.Status
	if err := json.Unmarshal([]byte(r.stdout), &st); err != nil {
		t.Fatalf("status --json: %v\n%s", err, r.stdout)
	}
	return st
}

// oneLine asserts that an error message is a single line (plus an optional "fix:" line).
func oneLine(t testing.TB, stderr string) string {
	t.Helper()
	lines := strings.Split(strings.TrimRight(stderr, "\n"), "\n")
	if len(lines) == 0 || lines[0] == "" {
		t.Fatalf("no error message")
	}
	for _, l := range lines[1:] {
		if !strings.HasPrefix(l, "  fix: ") {
			t.Errorf("error is not one line (+ fix): %q", stderr)
		}
	}
	return lines[0]
}

// joinedNode starts a lab with a tailnet of official peers and one skeind logged into it with
// the tailnet's pre-auth key, and waits until skeind sees every peer.
func joinedNode(t testing.TB, name string, peers ...string) (*lab.Lab, *lab.Tailnet, *node) {
	return joinedNodeWith(t, false, name, peers...)
}

// joinedNodeWith is joinedNode with the choice of the plain (fast) skeind build, for tests that
// move gigabytes.
func joinedNodeWith(t testing.TB, fastDataPlane bool, name string, peers ...string) (*lab.Lab, *lab.Tailnet, *node) {
	t.Helper()
	l := lab.New(t)
	tn, err := l.StartTailnet("lab", peers...)
	if err != nil {
		t.Fatal(err)
	}
	h, err := l.AddHost(name)
	if err != nil {
		t.Fatal(err)
	}
	n := startNodeWith(t, h, fastDataPlane)
	mustOK(t, n.cli("up", "--login-server", tn.Control.URL(), "--auth-key", tn.AuthKey, "--hostname", name), "skein up")
	lab.Eventually(t, 20*time.Second, func() error {
		st := n.status()
		for _, p := range peers {
			if n.peer(st, p) == nil {
				return fmt.Errorf("%s not in skeind's netmap", p)
			}
		}
		return nil
	})
	return l, tn, n
}

// labWithUser starts a lab with Headscale and its user "lab", and no nodes yet.
func labWithUser(t testing.TB) (*lab.Lab, *lab.Control) {
	t.Helper()
	l := lab.New(t)
	c, err := l.StartControl()
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.CreateUser("lab"); err != nil {
		t.Fatal(err)
	}
	return l, c
}

func ipcClient(n *node) *ipc.Client { return ipc.NewClient(n.socket) }
