package sshchild

import (
	"bytes"
	"io"
	"net"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"golang.org/x/sys/unix"
)

// The test binary is its own child: `ssh-child MODE ...` runs Main.
func TestMain(m *testing.M) {
	if len(os.Args) > 1 && os.Args[1] == Arg {
		os.Exit(Main(os.Args[2:]))
	}
	os.Exit(m.Run())
}

var nobody = Identity{UID: 65534, GID: 65534, Groups: []uint32{65534}, Home: "/"}

func needRoot(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root")
	}
}

// A child gives up root before it runs anything: ids, groups and capabilities are the
// user's, and root cannot be taken back.
func TestExecDropsPrivileges(t *testing.T) {
	needRoot(t)
	id := nobody
	id.Groups = []uint32{65534, 100}
	cmd := Command(ModeExec, id, "/bin/sh", "sh", "-c", `id -u; id -g; id -G; grep -E '^Cap(Eff|Prm)' /proc/self/status; pwd; echo "$FOO"`)
	cmd.Env = []string{"FOO=bar"}
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("%v: %s", err, out)
	}
	want := "65534\n65534\n65534 100\nCapPrm:\t0000000000000000\nCapEff:\t0000000000000000\n/\nbar\n"
	if string(out) != want {
		t.Fatalf("got\n%s\nwant\n%s", out, want)
	}
}

// Verify refuses a process that is not exactly the identity asked for.
func TestVerifyRefusesMismatch(t *testing.T) {
	needRoot(t)
	// Root asked for root: nothing to drop, and the check passes.
	if err := Command(ModeExec, Identity{Home: "/"}, "/bin/true", "true").Run(); err != nil {
		t.Fatalf("root: %v", err)
	}
	if err := Verify(Identity{UID: 12345, GID: 12345}); err == nil {
		t.Fatal("Verify accepted a process that is someone else")
	}
}

// The user's process opens sockets as the user: loopback listeners only, no privileged
// ports, dials that work, an agent socket that is the user's with mode 0600 and is removed
// when the helper hangs up.
func TestUserProcess(t *testing.T) {
	needRoot(t)
	u, err := StartUser(nobody)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := u.ListenTCP("0.0.0.0:0"); err == nil {
		t.Error("listened on a non-loopback address")
	}
	if b, _ := os.ReadFile("/proc/sys/net/ipv4/ip_unprivileged_port_start"); strings.TrimSpace(string(b)) == "1024" {
		if _, err := u.ListenTCP("127.0.0.1:80"); err == nil {
			t.Error("nobody listened on port 80")
		}
	}
	ln, err := u.ListenTCP("127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		c, err := ln.Accept()
		if err == nil {
			c.Write([]byte("hello"))
			c.Close()
		}
	}()
	c, err := u.Dial(ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	// A forwarded connection never carries skeind's bypass mark (or any other).
	if rc, err := c.(*net.TCPConn).SyscallConn(); err == nil {
		var mark int
		rc.Control(func(fd uintptr) { mark, _ = unix.GetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_MARK) })
		if mark != 0 {
			t.Errorf("forwarded dial carries mark %#x", mark)
		}
	}
	got, _ := io.ReadAll(c)
	c.Close()
	if string(got) != "hello" {
		t.Errorf("dial read %q", got)
	}
	if _, err := u.Dial("127.0.0.1:1"); err == nil {
		t.Error("dial to a closed port worked")
	}
	aln, path, err := u.ListenAgent()
	if err != nil {
		t.Fatal(err)
	}
	defer aln.Close()
	var st syscall.Stat_t
	if err := syscall.Stat(path, &st); err != nil || st.Uid != 65534 || st.Mode&0o777 != 0o600 {
		t.Errorf("agent socket %s: uid %d mode %o (%v)", path, st.Uid, st.Mode&0o777, err)
	}
	if err := syscall.Stat(filepath.Dir(path), &st); err != nil || st.Uid != 65534 || st.Mode&0o777 != 0o700 {
		t.Errorf("agent dir: uid %d mode %o (%v)", st.Uid, st.Mode&0o777, err)
	}
	go func() {
		c, err := aln.Accept()
		if err == nil {
			c.Write([]byte("agent"))
			c.Close()
		}
	}()
	ac, err := net.Dial("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	got, _ = io.ReadAll(ac)
	ac.Close()
	if !bytes.Equal(got, []byte("agent")) {
		t.Errorf("agent socket read %q", got)
	}
	u.Close()
	if _, err := os.Stat(filepath.Dir(path)); !os.IsNotExist(err) {
		t.Errorf("agent directory left behind: %v", err)
	}
	if _, err := u.Dial(ln.Addr().String()); err == nil {
		t.Error("dial after Close")
	}
}
