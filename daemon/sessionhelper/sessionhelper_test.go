package sessionhelper

import (
	"bytes"
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/crypto/ssh"

	"github.com/skeinvpn/skein/daemon/sshchild"
	"github.com/skeinvpn/skein/daemon/sshkeys"
	"github.com/skeinvpn/skein/daemon/sshserver"
	"github.com/skeinvpn/skein/daemon/wire"
	"github.com/skeinvpn/skein/internal/unixmsg"
)

// The test binary plays every role: the helper a skeind starts, the sessions' children, and a
// non-root client of the helper's socket.
func TestMain(m *testing.M) {
	if len(os.Args) > 1 {
		switch os.Args[1] {
		case ChildArg:
			os.Exit(ServeChild(func(f string, a ...any) { fmt.Fprintf(os.Stderr, f+"\n", a...) }))
		case sshchild.Arg:
			os.Exit(sshchild.Main(os.Args[2:]))
		case "dial-helper":
			uc, err := net.DialUnix("unix", nil, &net.UnixAddr{Name: os.Args[2], Net: "unix"})
			if err != nil {
				fmt.Println("refused at connect")
				os.Exit(0)
			}
			c := unixmsg.New(uc)
			c.Send(hello{Header: unixmsg.Header{Type: typeHello}, Version: protocolVersion})
			if h, _, _, err := c.Recv(); err != nil {
				fmt.Println("hung up")
			} else {
				fmt.Println("answered", h.Type)
			}
			os.Exit(0)
		}
	}
	os.Exit(m.Run())
}

func needRoot(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root")
	}
}

var allowRoot = &wire.SSHPolicy{Rules: []*wire.SSHRule{{
	Principals: []*wire.SSHPrincipal{{NodeIP: "100.64.0.2"}},
	SSHUsers:   map[string]string{"root": "root"},
	Action:     &wire.SSHAction{Accept: true},
}}}

// loggedIn hands a loopback connection to the helper and logs in over it as root.
func loggedIn(t *testing.T, cl *Client, hostKey ssh.PublicKey) (*ssh.Client, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		cl.Handoff(c.(*net.TCPConn), sshserver.Identity{
			Src: netip.MustParseAddrPort("100.64.0.2:5555"), Dst: netip.MustParseAddrPort("100.64.0.1:22"), NodeName: "peer.",
		})
	}()
	nc, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	cc, chans, reqs, err := ssh.NewClientConn(nc, "x", &ssh.ClientConfig{User: "root", HostKeyCallback: ssh.FixedHostKey(hostKey), HostKeyAlgorithms: []string{hostKey.Type()}, Timeout: 10 * time.Second})
	if err != nil {
		return nil, err
	}
	return ssh.NewClient(cc, chans, reqs), nil
}

func keys(t *testing.T) (*sshkeys.Keys, ssh.PublicKey) {
	k, err := sshkeys.Load(filepath.Join(t.TempDir(), "keys"))
	if err != nil {
		t.Fatal(err)
	}
	pub, _, _, _, err := ssh.ParseAuthorizedKey([]byte(k.Public[0]))
	if err != nil {
		t.Fatal(err)
	}
	return k, pub
}

// A fully privileged skeind with no helper socket starts its own helper; connections handed
// to it log in by the policy it was told; hanging up ends the sessions.
func TestSpawnedHelper(t *testing.T) {
	needRoot(t)
	if !CanRunSessions() {
		t.Skip("not fully privileged")
	}
	k, pub := keys(t)
	cl, err := Connect(filepath.Join(t.TempDir(), "absent.sock"), k.PEM, nil)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := loggedIn(t, cl, pub); err == nil {
		t.Fatal("logged in without a policy")
	}
	if err := cl.SetPolicy(allowRoot); err != nil {
		t.Fatal(err)
	}
	time.Sleep(100 * time.Millisecond)
	c, err := loggedIn(t, cl, pub)
	if err != nil {
		t.Fatal(err)
	}
	s, _ := c.NewSession()
	var out bytes.Buffer
	s.Stdout = &out
	if err := s.Run("id -u"); err != nil || out.String() != "0\n" {
		t.Fatalf("id -u: %q %v", out.String(), err)
	}
	s, _ = c.NewSession()
	s.Start("sleep 300")
	ended := make(chan error, 1)
	go func() { ended <- s.Wait() }()
	cl.Close()
	select {
	case <-ended:
	case <-time.After(10 * time.Second):
		t.Fatal("session outlived skeind's hang-up")
	}
}

// The helper's own socket: root's, mode 0600, and a client that is not root is hung up on
// even if it reaches it.
func TestSocketRootOnly(t *testing.T) {
	needRoot(t)
	dir, err := os.MkdirTemp("", "skein-helper-")
	if err != nil {
		t.Fatal(err)
	}
	defer os.RemoveAll(dir)
	os.Chmod(dir, 0o755)
	path := filepath.Join(dir, "helper.sock")
	ln, err := Listen(path)
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go Serve(ln, t.Logf)
	fi, err := os.Stat(path)
	if err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("socket mode %v (%v)", fi.Mode(), err)
	}
	// Even with the socket opened up, a non-root client gets nothing.
	os.Chmod(path, 0o666)
	cmd := exec.Command("/proc/self/exe", "dial-helper", path)
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: 65534, Gid: 65534}}
	out, err := cmd.CombinedOutput()
	if err != nil || strings.TrimSpace(string(out)) != "hung up" {
		t.Fatalf("non-root client: %q %v", out, err)
	}
	// Root is served.
	k, pub := keys(t)
	cl, err := Connect(path, k.PEM, allowRoot)
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	c, err := loggedIn(t, cl, pub)
	if err != nil {
		t.Fatal(err)
	}
	c.Close()
}
