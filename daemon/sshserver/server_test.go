package sshserver

import (
	"bytes"
	"crypto/ed25519"
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"golang.org/x/crypto/ssh"
	"golang.org/x/crypto/ssh/agent"

	"github.com/skeinvpn/skein/daemon/sshchild"
	"github.com/skeinvpn/skein/daemon/wire"
	"github.com/skeinvpn/skein/internal/userdb"
)

// The test binary is also the sessions' child (`ssh-child MODE ...`).
func TestMain(m *testing.M) {
	if len(os.Args) > 1 && os.Args[1] == sshchild.Arg {
		os.Exit(sshchild.Main(os.Args[2:]))
	}
	os.Exit(m.Run())
}

var (
	peerAddr = netip.MustParseAddrPort("100.64.0.2:40000")
	selfAddr = netip.MustParseAddrPort("100.64.0.1:22")
	peerID   = Identity{Src: peerAddr, Dst: selfAddr, NodeID: 2, StableID: "nPeer", NodeName: "peer.ts.test.", UserLogin: "alice@"}
)

// accounts are the local users the tests log in as: "tester" is nobody with a shell and a
// home of its own.
func accounts(home string) func(string) (userdb.User, error) {
	return func(name string) (userdb.User, error) {
		if err := userdb.ValidLoginName(name); err != nil {
			return userdb.User{}, err
		}
		switch name {
		case "tester":
			return userdb.User{Name: "tester", UID: 65534, GID: 65534, Home: home, Shell: "/bin/sh"}, nil
		case "root":
			return userdb.User{Name: "root", UID: 0, GID: 0, Home: "/root", Shell: "/bin/sh"}, nil
		}
		return userdb.User{}, userdb.ErrUnknown
	}
}

func accept(users map[string]string) *wire.SSHPolicy {
	return &wire.SSHPolicy{Rules: []*wire.SSHRule{{
		Principals: []*wire.SSHPrincipal{{NodeIP: "100.64.0.2"}},
		SSHUsers:   users,
		Action:     &wire.SSHAction{Accept: true, AllowAgentForwarding: true, AllowLocalPortForwarding: true, AllowRemotePortForwarding: true},
	}}}
}

type harness struct {
	t     *testing.T
	srv   *Server
	home  string
	hostK ssh.Signer
	mu    sync.Mutex
	log   []string
}

func newHarness(t *testing.T) *harness {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root: sessions run as another user")
	}
	_, priv, _ := ed25519.GenerateKey(rand.Reader)
	hk, _ := ssh.NewSignerFromKey(priv)
	home, err := os.MkdirTemp("", "skein-sshtest-")
	if err != nil {
		t.Fatal(err)
	}
	os.Chmod(home, 0o755)
	os.Chown(home, 65534, 65534)
	t.Cleanup(func() { os.RemoveAll(home) })
	h := &harness{t: t, home: home, hostK: hk}
	h.srv = New(Options{
		HostKeys:   []ssh.Signer{hk},
		LookupUser: accounts(home),
		Groups:     func(u userdb.User) ([]uint32, error) { return []uint32{u.GID}, nil },
		Logf: func(f string, a ...any) {
			h.mu.Lock()
			h.log = append(h.log, fmt.Sprintf(f, a...))
			h.mu.Unlock()
		},
	})
	t.Cleanup(h.srv.Close)
	return h
}

// dial connects a client as user; banner collects the server's authentication banners.
func (h *harness) dial(user string, banner *strings.Builder) (*ssh.Client, error) {
	a, b := tcpPair(h.t)
	go h.srv.HandleConn(b, peerID)
	cfg := &ssh.ClientConfig{
		User:            user,
		HostKeyCallback: ssh.FixedHostKey(h.hostK.PublicKey()),
		Auth:            []ssh.AuthMethod{},
		BannerCallback: func(m string) error {
			if banner != nil {
				banner.WriteString(m)
			}
			return nil
		},
		Timeout: 10 * time.Second,
	}
	c, chans, reqs, err := ssh.NewClientConn(a, "peer", cfg)
	if err != nil {
		a.Close()
		return nil, err
	}
	return ssh.NewClient(c, chans, reqs), nil
}

// tcpPair is a connected pair of loopback TCP sockets (the handshake needs buffering that
// net.Pipe does not have).
func tcpPair(t *testing.T) (net.Conn, net.Conn) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	a, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	b, err := ln.Accept()
	if err != nil {
		t.Fatal(err)
	}
	return a, b
}

func (h *harness) mustDial(user string) *ssh.Client {
	h.t.Helper()
	c, err := h.dial(user, nil)
	if err != nil {
		h.t.Fatalf("login as %s: %v", user, err)
	}
	h.t.Cleanup(func() { c.Close() })
	return c
}

func run(t *testing.T, c *ssh.Client, cmd string, setup ...func(*ssh.Session)) (stdout, stderr string, code int) {
	t.Helper()
	s, err := c.NewSession()
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	for _, f := range setup {
		f(s)
	}
	var o, e bytes.Buffer
	s.Stdout, s.Stderr = &o, &e
	err = s.Run(cmd)
	var ee *ssh.ExitError
	switch {
	case err == nil:
	case errors.As(err, &ee):
		code = ee.ExitStatus()
	default:
		t.Fatalf("%q: %v", cmd, err)
	}
	return o.String(), e.String(), code
}

// Without a policy, and for peers or users no rule names, the login is refused with the
// official banners, and nothing runs.
func TestDenials(t *testing.T) {
	h := newHarness(t)
	var b strings.Builder
	if _, err := h.dial("tester", &b); err == nil || b.String() != bannerNotPermitted {
		t.Fatalf("no policy: %v, banner %q", err, b.String())
	}
	h.srv.SetPolicy(accept(map[string]string{"*": "=", "root": ""}))
	b.Reset()
	if _, err := h.dial("root", &b); err == nil || b.String() != `tailscale: tailnet policy does not permit you to SSH as user "root"`+"\n" {
		t.Fatalf("root: %v, banner %q", err, b.String())
	}
	for _, bad := range []string{"0", "-oProxyCommand=x", "a;b", strings.Repeat("x", 40)} {
		b.Reset()
		if _, err := h.dial(bad, &b); err == nil || !strings.Contains(b.String(), "is not a valid user name") {
			t.Errorf("%q: %v, banner %q", bad, err, b.String())
		}
	}
	b.Reset()
	if _, err := h.dial("nosuchuser", &b); err == nil || !strings.Contains(b.String(), "failed to look up local user") {
		t.Errorf("unknown user: %v, banner %q", err, b.String())
	}
	h.srv.SetPolicy(&wire.SSHPolicy{Rules: []*wire.SSHRule{{Principals: []*wire.SSHPrincipal{{Any: true}}, Action: &wire.SSHAction{Reject: true, Message: "go away\n"}}}})
	b.Reset()
	if _, err := h.dial("tester", &b); err == nil || b.String() != "go away\n" {
		t.Errorf("reject rule: %v, banner %q", err, b.String())
	}
	h.srv.SetPolicy(&wire.SSHPolicy{Rules: []*wire.SSHRule{{Principals: []*wire.SSHPrincipal{{Any: true}}, SSHUsers: map[string]string{"*": "="}, Action: &wire.SSHAction{HoldAndDelegate: "https://control/x"}}}})
	b.Reset()
	if _, err := h.dial("tester", &b); err == nil || !strings.Contains(b.String(), "approval by the control server") {
		t.Errorf("hold and delegate: %v, banner %q", err, b.String())
	}
	h.srv.SetPolicy(&wire.SSHPolicy{Rules: []*wire.SSHRule{{Principals: []*wire.SSHPrincipal{{Any: true}}, SSHUsers: map[string]string{"*": "="}, Action: &wire.SSHAction{Accept: true, Recorders: []string{"100.64.0.9:80"}}}}})
	b.Reset()
	if _, err := h.dial("tester", &b); err == nil || !strings.Contains(b.String(), "session recording") {
		t.Errorf("recorders: %v, banner %q", err, b.String())
	}
}

// Commands run as the mapped user with a login environment, exit codes and all output get
// through, and the client's environment is filtered.
func TestExec(t *testing.T) {
	h := newHarness(t)
	h.srv.SetPolicy(accept(map[string]string{"*": "="}))
	c := h.mustDial("tester")
	out, _, code := run(t, c, `id -un 2>/dev/null || id -u; id -u; echo "$HOME $USER $LOGNAME $SHELL"; echo "$SSH_CONNECTION"; pwd`)
	want := fmt.Sprintf("65534\n%s tester tester /bin/sh\n100.64.0.2 40000 100.64.0.1 22\n%s\n", h.home, h.home)
	if code != 0 || !strings.HasSuffix(out, want) {
		t.Errorf("identity: exit %d\n%q\nwant suffix\n%q", code, out, want)
	}
	if _, _, code := run(t, c, "exit 7"); code != 7 {
		t.Errorf("exit 7 gave %d", code)
	}
	out, errOut, _ := run(t, c, "head -c 1048576 /dev/zero | tr '\\0' x; echo oops >&2")
	if len(out) != 1<<20 || strings.Trim(out, "x") != "" || errOut != "oops\n" {
		t.Errorf("1 MB of output: %d bytes, stderr %q", len(out), errOut)
	}
	out, _, _ = run(t, c, `echo "[$LD_PRELOAD] [$LC_ALL] [$FOO] [$PATH]"`, func(s *ssh.Session) {
		if s.Setenv("LD_PRELOAD", "/tmp/evil.so") == nil {
			t.Error("LD_PRELOAD accepted")
		}
		if s.Setenv("FOO", "x") == nil {
			t.Error("FOO accepted")
		}
		if err := s.Setenv("LC_ALL", "C.UTF-8"); err != nil {
			t.Error(err)
		}
	})
	if out != "[] [C.UTF-8] [] ["+userPath+"]\n" {
		t.Errorf("environment: %q", out)
	}
	out, _, _ = run(t, c, `tty; echo "$TERM"`, func(s *ssh.Session) {
		if err := s.RequestPty("xterm-skein", 40, 100, ssh.TerminalModes{}); err != nil {
			t.Fatal(err)
		}
	})
	if !strings.HasPrefix(out, "/dev/pts/") || !strings.HasSuffix(out, "xterm-skein\r\n") {
		t.Errorf("pty: %q", out)
	}
}

// A policy change that no longer allows the connection ends its sessions with "Access
// revoked." and the connection; new logins are refused.
func TestRevoke(t *testing.T) {
	h := newHarness(t)
	h.srv.SetPolicy(accept(map[string]string{"*": "="}))
	c := h.mustDial("tester")
	s, err := c.NewSession()
	if err != nil {
		t.Fatal(err)
	}
	var errOut bytes.Buffer
	s.Stderr = &errOut
	if err := s.Start("sleep 300"); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- s.Wait() }()
	time.Sleep(200 * time.Millisecond)
	// An unrelated change keeps it.
	h.srv.SetPolicy(accept(map[string]string{"*": "=", "other": "root"}))
	select {
	case err := <-done:
		t.Fatalf("session ended on an unrelated change: %v", err)
	case <-time.After(300 * time.Millisecond):
	}
	start := time.Now()
	h.srv.SetPolicy(accept(map[string]string{"root": "root"}))
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Fatal("session still open 10 s after the policy revoked it")
	}
	if !strings.Contains(errOut.String(), "Access revoked.") {
		t.Errorf("stderr %q", errOut.String())
	}
	t.Logf("revoked after %v", time.Since(start))
	if _, err := h.dial("tester", nil); err == nil {
		t.Error("new login allowed after the revocation")
	}
}

// A rule with a session duration ends sessions with the timeout message.
func TestSessionDuration(t *testing.T) {
	h := newHarness(t)
	p := accept(map[string]string{"*": "="})
	p.Rules[0].Action.SessionDuration = time.Second
	h.srv.SetPolicy(p)
	c := h.mustDial("tester")
	start := time.Now()
	_, errOut, _ := run(t, c, "sleep 30")
	if d := time.Since(start); d > 8*time.Second || !strings.Contains(errOut, "Session timeout of 1s elapsed.") {
		t.Errorf("after %v: stderr %q", d, errOut)
	}
}

// SFTP runs as the user: files land the user's, root's directories stay closed.
func TestSFTPAsUser(t *testing.T) {
	h := newHarness(t)
	h.srv.SetPolicy(accept(map[string]string{"*": "="}))
	c := h.mustDial("tester")
	s, err := c.NewSession()
	if err != nil {
		t.Fatal(err)
	}
	if err := s.RequestSubsystem("sftp"); err != nil {
		t.Fatal(err)
	}
	s.Close()
	// The protocol itself is OpenSSH's sftp's to drive (tests/lab); here: a file written
	// through the session's shell lands the user's.
	run(t, c, "echo hi > f")
	var st syscall.Stat_t
	if err := syscall.Stat(filepath.Join(h.home, "f"), &st); err != nil || st.Uid != 65534 {
		t.Errorf("file owner %d (%v)", st.Uid, err)
	}
	if _, errOut, code := run(t, c, "echo x > /root/skein-sshtest"); code == 0 {
		os.Remove("/root/skein-sshtest")
		t.Errorf("wrote into /root: %q", errOut)
	}
}

// Forwarding: -L dials as the user, -R listens on loopback only and never on a privileged
// port, -A gives the user's own socket.
func TestForwarding(t *testing.T) {
	h := newHarness(t)
	h.srv.SetPolicy(accept(map[string]string{"*": "="}))
	c := h.mustDial("tester")

	target, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer target.Close()
	go func() {
		for {
			nc, err := target.Accept()
			if err != nil {
				return
			}
			io.WriteString(nc, "target\n")
			nc.Close()
		}
	}()
	lc, err := c.Dial("tcp", target.Addr().String())
	if err != nil {
		t.Fatalf("-L: %v", err)
	}
	got, _ := io.ReadAll(lc)
	lc.Close()
	if string(got) != "target\n" {
		t.Errorf("-L read %q", got)
	}

	if _, err := c.Listen("tcp", "0.0.0.0:80"); err == nil {
		t.Error("-R 80 allowed for a non-root user")
	}
	rl, err := c.Listen("tcp", "0.0.0.0:0")
	if err != nil {
		t.Fatalf("-R: %v", err)
	}
	port := rl.Addr().(*net.TCPAddr).Port
	go func() {
		nc, err := rl.Accept()
		if err == nil {
			io.WriteString(nc, "back\n")
			nc.Close()
		}
	}()
	if out, _, _ := run(t, c, fmt.Sprintf("ss -Htln 'sport = :%d' | awk '{print $4}'", port)); strings.TrimSpace(out) != fmt.Sprintf("127.0.0.1:%d", port) {
		t.Errorf("-R 0.0.0.0 listens on %q", out)
	}
	rc, err := net.Dial("tcp", fmt.Sprintf("127.0.0.1:%d", port))
	if err != nil {
		t.Fatal(err)
	}
	got, _ = io.ReadAll(rc)
	rc.Close()
	if string(got) != "back\n" {
		t.Errorf("-R read %q", got)
	}
	rl.Close()

	// Agent forwarding with an in-memory agent on the client side.
	keyring := agent.NewKeyring()
	_, priv, _ := ed25519.GenerateKey(rand.Reader)
	keyring.Add(agent.AddedKey{PrivateKey: priv, Comment: "skein-test-key"})
	if err := agent.ForwardToAgent(c, keyring); err != nil {
		t.Fatal(err)
	}
	out, _, code := run(t, c, `stat -c '%U %a' "$SSH_AUTH_SOCK"`, func(s *ssh.Session) {
		if err := agent.RequestAgentForwarding(s); err != nil {
			t.Fatal(err)
		}
	})
	if code != 0 || out != "nobody 600\n" {
		t.Errorf("agent socket: %q exit %d", out, code)
	}
}

// Forwarding follows the rule's flags (Headscale sets all three; a policy may not), and Unix
// socket and X11 forwarding are never offered, whatever the flags.
func TestForwardingFlagsAndKinds(t *testing.T) {
	h := newHarness(t)
	p := accept(map[string]string{"*": "="})
	p.Rules[0].Action = &wire.SSHAction{Accept: true}
	h.srv.SetPolicy(p)
	c := h.mustDial("tester")
	target, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer target.Close()
	if lc, err := c.Dial("tcp", target.Addr().String()); err == nil {
		lc.Close()
		t.Error("-L allowed by a rule without local forwarding")
	}
	if rl, err := c.Listen("tcp", "127.0.0.1:0"); err == nil {
		rl.Close()
		t.Error("-R allowed by a rule without remote forwarding")
	}
	s, err := c.NewSession()
	if err != nil {
		t.Fatal(err)
	}
	if err := agent.RequestAgentForwarding(s); err == nil {
		t.Error("-A allowed by a rule without agent forwarding")
	}
	s.Close()

	h.srv.SetPolicy(accept(map[string]string{"*": "="}))
	c = h.mustDial("tester")
	sock := filepath.Join(h.home, "fwd.sock")
	if ul, err := c.ListenUnix(sock); err == nil {
		ul.Close()
		t.Error("a remote Unix socket forward was accepted")
	}
	if uc, err := c.Dial("unix", "/run/skein-test-nothing.sock"); err == nil {
		uc.Close()
		t.Error("a local Unix socket forward was accepted")
	}
	if _, err := os.Stat(sock); err == nil {
		t.Error("the server made the Unix socket")
	}
	s, err = c.NewSession()
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	x11 := struct {
		SingleConnection         bool
		AuthProtocol, AuthCookie string
		ScreenNumber             uint32
	}{false, "MIT-MAGIC-COOKIE-1", "00112233445566778899aabbccddeeff", 0}
	if ok, err := s.SendRequest("x11-req", true, ssh.Marshal(&x11)); ok || err != nil {
		t.Errorf("x11-req: ok %v, err %v", ok, err)
	}
	// The session itself still works.
	if out, _, code := run(t, c, "echo ok"); out != "ok\n" || code != 0 {
		t.Errorf("after the refusals: %q exit %d", out, code)
	}
}
