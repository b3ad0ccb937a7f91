package sessionhelper

import (
	"errors"
	"fmt"
	"net"
	"os"
	"sync"

	"golang.org/x/sys/unix"

	"golang.org/x/crypto/ssh"

	"github.com/skeinvpn/skein/daemon/sshkeys"
	"github.com/skeinvpn/skein/daemon/sshserver"
	"github.com/skeinvpn/skein/internal/unixmsg"
)

// Serve accepts skeind's control connections on ln until it is closed. Only root may talk to
// the helper: the socket is root's with mode 0600, and the peer's credentials are checked too.
func Serve(ln *net.UnixListener, logf func(string, ...any)) error {
	var wg sync.WaitGroup
	defer wg.Wait()
	for {
		uc, err := ln.AcceptUnix()
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return nil
			}
			return err
		}
		if uid, err := peerUID(uc); err != nil || uid != 0 {
			logf("session helper: refused a connection from uid %d (%v): only root (skeind) may connect", uid, err)
			uc.Close()
			continue
		}
		wg.Go(func() { ServeConn(unixmsg.New(uc), logf) })
	}
}

func peerUID(uc *net.UnixConn) (int, error) {
	rc, err := uc.SyscallConn()
	if err != nil {
		return -1, err
	}
	var cred *unix.Ucred
	var cerr error
	if err := rc.Control(func(fd uintptr) { cred, cerr = unix.GetsockoptUcred(int(fd), unix.SOL_SOCKET, unix.SO_PEERCRED) }); err != nil {
		return -1, err
	}
	if cerr != nil {
		return -1, cerr
	}
	return int(cred.Uid), nil
}

// ServeChild serves the socket pair a skeind that started this helper passed as fd 3.
func ServeChild(logf func(string, ...any)) int {
	c, err := unixmsg.FromFile(os.NewFile(3, "skeind"))
	if err != nil {
		logf("session helper: %v", err)
		return 1
	}
	ServeConn(c, logf)
	return 0
}

// ServeConn serves one skeind until it hangs up; then every SSH session it started ends.
func ServeConn(c *unixmsg.Conn, logf func(string, ...any)) {
	defer c.Close()
	h, body, files, err := c.Recv()
	closeAll(files)
	if err != nil {
		return
	}
	hi, err := decode[hello](body)
	if err == nil && (h.Type != typeHello || hi.Version != protocolVersion) {
		err = fmt.Errorf("expected hello version %d, got %q version %d", protocolVersion, h.Type, hi.Version)
	}
	// Without host keys this skeind wants only file servers: an SSH server that refuses all.
	var signers []ssh.Signer
	if err == nil && len(hi.HostKeys) > 0 {
		signers, err = sshkeys.Signers(hi.HostKeys)
	}
	var srv *sshserver.Server
	if err == nil {
		srv = sshserver.New(sshserver.Options{HostKeys: signers, Logf: logf})
		srv.SetPolicy(hi.Policy)
	}
	if err != nil {
		logf("session helper: %v", err)
		c.Send(errorMsg{Header: unixmsg.Header{Type: typeError}, Error: err.Error()})
		return
	}
	var wg sync.WaitGroup
	defer func() {
		srv.Close() // first: the connections' goroutines end with it
		wg.Wait()
	}()
	if err := c.Send(unixmsg.Header{Type: typeReady}); err != nil {
		return
	}
	logf("session helper: skeind connected")
	for {
		h, body, files, err := c.Recv()
		if err != nil {
			closeAll(files)
			logf("session helper: skeind went away; ending its sessions")
			return
		}
		switch h.Type {
		case typePolicy:
			if m, err := decode[policyMsg](body); err == nil {
				srv.SetPolicy(m.Policy)
			}
		case typeFiles:
			m, err := decode[filesMsg](body)
			if err == nil {
				wg.Go(func() { startFileServer(c, m, logf) })
			}
		case typeConn:
			m, err := decode[connMsg](body)
			if err != nil || len(files) != 1 || len(signers) == 0 {
				closeAll(files)
				continue
			}
			nc, err := net.FileConn(files[0])
			files[0].Close()
			if err != nil {
				continue
			}
			wg.Go(func() { srv.HandleConn(nc, m.Identity) })
			continue
		}
		closeAll(files)
	}
}

func closeAll(files []*os.File) {
	for _, f := range files {
		f.Close()
	}
}

// Listen makes the helper's socket when it is started without systemd: root's, mode 0600,
// replacing a stale one.
func Listen(path string) (*net.UnixListener, error) {
	os.Remove(path)
	old := unix.Umask(0o177)
	ln, err := net.ListenUnix("unix", &net.UnixAddr{Name: path, Net: "unix"})
	unix.Umask(old)
	if err != nil {
		return nil, err
	}
	if err := os.Chmod(path, 0o600); err != nil {
		ln.Close()
		return nil, err
	}
	return ln, nil
}
