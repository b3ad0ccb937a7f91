package lab_test

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"os"
	"os/exec"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/skeinvpn/skein/internal/lab"
	"github.com/skeinvpn/skein/ipc"
)

// TestInteractiveLogin: `skein up` without a key prints the AuthURL; once the admin approves
// the node, the same command reports success and the helper is Running, with no restart.
func TestInteractiveLogin(t *testing.T) {
	t.Parallel()
	l, c := labWithUser(t)
	n := startNode(t, l, "skein-i")
	pid := n.proc.Pid()

	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, skeinBin, "--socket", n.socket, "up", "--login-server", c.URL(), "--hostname", "skein-i")
	stderr, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stdout = os.Stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	urlRE := regexp.MustCompile(`https://\S+/register/\S+`)
	var out strings.Builder
	found := make(chan string, 1)
	done := make(chan struct{})
	go func() {
		defer close(done)
		sc := bufio.NewScanner(stderr)
		for sc.Scan() {
			out.WriteString(sc.Text() + "\n")
			if m := urlRE.FindString(sc.Text()); m != "" {
				select {
				case found <- m:
				default:
				}
			}
		}
		io.Copy(io.Discard, stderr)
	}()
	var authURL string
	select {
	case authURL = <-found:
	case <-time.After(30 * time.Second):
		cancel()
		<-done
		t.Fatalf("no AuthURL printed; output:\n%s", out.String())
	}
	if !strings.HasPrefix(authURL, c.URL()+"/register/") {
		t.Fatalf("AuthURL %q not on the login server", authURL)
	}
	st := n.status()
	if st.State != ipc.StateNeedsLogin || st.AuthURL != authURL {
		t.Fatalf("while waiting: state %s authURL %q", st.State, st.AuthURL)
	}

	time.Sleep(2 * time.Second) // the user takes a moment to approve
	if err := c.RegisterNode("lab", authURL); err != nil {
		t.Fatal(err)
	}
	<-done
	if err := cmd.Wait(); err != nil {
		t.Fatalf("skein up after approval: %v\n%s", err, out.String())
	}
	if !strings.Contains(out.String(), "Success.") {
		t.Errorf("skein up did not say Success.:\n%s", out.String())
	}
	st = n.status()
	if st.State != ipc.StateRunning || st.AuthURL != "" || st.Self == nil {
		t.Fatalf("after approval: state %s authURL %q self %v", st.State, st.AuthURL, st.Self)
	}
	if n.proc.Pid() != pid || n.proc.Exited() {
		t.Fatalf("skeind restarted during login")
	}
	hs, err := c.NodeByName("skein-i")
	if err != nil {
		t.Fatal(err)
	}
	if hs.RegisterMethod != "cli" || hs.User != "lab" {
		t.Fatalf("headscale node: %+v", hs)
	}

	// Logout: the server expires the node and the helper forgets its key.
	mustOK(t, n.cli("logout"), "logout")
	if st := n.status(); st.State != ipc.StateNeedsLogin || st.Self != nil {
		t.Fatalf("after logout: state %s self %v", st.State, st.Self)
	}
	if d := n.stored(); d.LoggedIn || !d.NodeKey.IsZero() {
		t.Fatalf("state after logout: logged in %v", d.LoggedIn)
	}
	lab.Eventually(t, 10*time.Second, func() error {
		hs, err := c.NodeByName("skein-i")
		if err != nil {
			return err
		}
		if hs.Expiry.IsZero() || hs.Expiry.After(time.Now()) {
			return fmt.Errorf("node expiry %v after logout", hs.Expiry)
		}
		return nil
	})
	n.stop()
}

// TestLoginErrors: a wrong auth key, an unreachable server and a server with an untrusted
// certificate each give one clear line, a non-zero exit, and no half-logged-in state.
func TestLoginErrors(t *testing.T) {
	t.Parallel()
	l, c := labWithUser(t)
	n := startNode(t, l, "skein-e")
	nodesBefore, err := c.Nodes()
	if err != nil {
		t.Fatal(err)
	}

	clean := func(what string) {
		t.Helper()
		st := n.status()
		if st.State != ipc.StateNeedsLogin || st.LoginServer != "" || st.Self != nil {
			t.Errorf("%s: state %s loginServer %q self %v", what, st.State, st.LoginServer, st.Self)
		}
		d := n.stored()
		if d.LoggedIn || d.Prefs.LoginServer != "" {
			t.Errorf("%s: stored state logged in %v server %q", what, d.LoggedIn, d.Prefs.LoginServer)
		}
	}

	start := time.Now()
	r := n.cli("up", "--login-server", c.URL(), "--auth-key", "not-a-real-key")
	msg := oneLine(t, r.stderr)
	if r.code != 1 || !strings.Contains(msg, "login failed") {
		t.Errorf("wrong key: exit %d, %q", r.code, r.stderr)
	}
	t.Logf("wrong key (%v): %s", time.Since(start).Round(time.Millisecond), msg)
	clean("wrong key")

	// A host with nothing listening on the port.
	start = time.Now()
	r = n.cli("up", "--login-server", fmt.Sprintf("https://%s:8443", c.Addr()), "--auth-key", "whatever")
	msg = oneLine(t, r.stderr)
	if r.code != 1 || !strings.Contains(msg, "cannot reach") {
		t.Errorf("unreachable: exit %d, %q", r.code, r.stderr)
	}
	t.Logf("unreachable (%v): %s", time.Since(start).Round(time.Millisecond), msg)
	clean("unreachable")

	// A helper that does not trust the lab's CA.
	n.stop()
	n.env = append(n.env, "SSL_CERT_FILE=/dev/null", "SSL_CERT_DIR=/nonexistent")
	n.start()
	key, err := c.PreAuthKey("lab", false, false)
	if err != nil {
		t.Fatal(err)
	}
	r = n.cli("up", "--login-server", c.URL(), "--auth-key", key)
	msg = oneLine(t, r.stderr)
	if r.code != 1 || !strings.Contains(msg, "certificate") {
		t.Errorf("untrusted cert: exit %d, %q", r.code, r.stderr)
	}
	t.Logf("untrusted cert: %s", msg)
	clean("untrusted cert")

	nodesAfter, err := c.Nodes()
	if err != nil {
		t.Fatal(err)
	}
	if len(nodesAfter) != len(nodesBefore) {
		t.Errorf("failed logins left %d nodes in Headscale (had %d)", len(nodesAfter), len(nodesBefore))
	}
	// The same (single-use) key still works once the CA is trusted: nothing was consumed.
	n.stop()
	n.env = n.env[:len(n.env)-2]
	n.start()
	mustOK(t, n.cli("up", "--login-server", c.URL(), "--auth-key", key, "--hostname", "skein-e"), "up after errors")
	n.stop()
}
