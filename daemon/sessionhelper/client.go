package sessionhelper

import (
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/skeinvpn/skein/daemon/sshserver"
	"github.com/skeinvpn/skein/daemon/wire"
	"github.com/skeinvpn/skein/internal/unixmsg"
)

// ErrUnavailable says no helper answers and this skeind may not start one.
var ErrUnavailable = errors.New("the session helper is not running")

// Client is skeind's end of a helper.
type Client struct {
	c    *unixmsg.Conn
	cmd  *exec.Cmd // the helper we started, if we did
	done chan struct{}

	mu      sync.Mutex
	next    uint64
	waiting map[uint64]chan filesResult
}

type filesResult struct {
	err  error
	file *os.File
}

// Connect reaches the helper at socket and greets it with the host keys and the policy. When
// nothing listens there and this process may act as other users itself (fully root, not in
// a sandbox), it starts a helper of its own instead.
func Connect(socket string, hostKeys [][]byte, policy *wire.SSHPolicy) (*Client, error) {
	var cl *Client
	uc, err := net.DialUnix("unix", nil, &net.UnixAddr{Name: socket, Net: "unix"})
	switch {
	case err == nil:
		cl = &Client{c: unixmsg.New(uc)}
	case CanRunSessions():
		cl, err = spawn()
		if err != nil {
			return nil, err
		}
	default:
		return nil, fmt.Errorf("%w at %s (%v)", ErrUnavailable, socket, err)
	}
	cl.done = make(chan struct{})
	cl.waiting = map[uint64]chan filesResult{}
	if err := cl.greet(hostKeys, policy); err != nil {
		cl.Close()
		return nil, err
	}
	go cl.watch()
	return cl, nil
}

func (cl *Client) greet(hostKeys [][]byte, policy *wire.SSHPolicy) error {
	if err := cl.c.Send(hello{Header: unixmsg.Header{Type: typeHello}, Version: protocolVersion, HostKeys: hostKeys, Policy: policy}); err != nil {
		return fmt.Errorf("session helper: %w", err)
	}
	reply := make(chan error, 1)
	go func() {
		h, body, files, err := cl.c.Recv()
		closeAll(files)
		switch {
		case err != nil:
			reply <- err
		case h.Type == typeReady:
			reply <- nil
		case h.Type == typeError:
			m, _ := decode[errorMsg](body)
			reply <- errors.New(m.Error)
		default:
			reply <- fmt.Errorf("unexpected %q", h.Type)
		}
	}()
	select {
	case err := <-reply:
		if err != nil {
			return fmt.Errorf("session helper: %w", err)
		}
		return nil
	case <-time.After(10 * time.Second):
		return errors.New("session helper: no answer in 10 s")
	}
}

// watch takes the helper's answers, and notices it going away.
func (cl *Client) watch() {
	defer close(cl.done)
	defer func() {
		cl.mu.Lock()
		for id, ch := range cl.waiting {
			delete(cl.waiting, id)
			ch <- filesResult{err: errors.New("the session helper went away")}
		}
		cl.waiting = nil
		cl.mu.Unlock()
	}()
	for {
		h, body, files, err := cl.c.Recv()
		if err != nil {
			closeAll(files)
			return
		}
		if h.Type != typeFilesReply {
			closeAll(files)
			continue
		}
		m, err := decode[filesReply](body)
		r := filesResult{}
		switch {
		case err != nil:
			r.err = err
		case m.Error != "":
			r.err = errors.New(m.Error)
		case len(files) != 1:
			r.err = errors.New("the session helper sent no file server")
		default:
			r.file, files = files[0], nil
		}
		closeAll(files)
		cl.mu.Lock()
		ch := cl.waiting[m.ID]
		delete(cl.waiting, m.ID)
		cl.mu.Unlock()
		if ch != nil {
			ch <- r
		} else if r.file != nil {
			r.file.Close()
		}
	}
}

// StartFileServer asks for a file server for path, shared by uid: it runs as the path's owner
// (uid must be that owner, or root). Closing the returned stream stops it.
func (cl *Client) StartFileServer(uid uint32, path string) (*unixmsg.Conn, error) {
	cl.mu.Lock()
	if cl.waiting == nil {
		cl.mu.Unlock()
		return nil, errors.New("the session helper went away")
	}
	cl.next++
	id := cl.next
	ch := make(chan filesResult, 1)
	cl.waiting[id] = ch
	cl.mu.Unlock()
	if err := cl.c.Send(filesMsg{Header: unixmsg.Header{Type: typeFiles}, ID: id, UID: uid, Path: path}); err != nil {
		return nil, err
	}
	select {
	case r := <-ch:
		if r.err != nil {
			return nil, r.err
		}
		return unixmsg.FromFile(r.file)
	case <-time.After(30 * time.Second):
		return nil, errors.New("the session helper did not answer in 30 s")
	}
}

// Done is closed when the helper has gone away.
func (cl *Client) Done() <-chan struct{} { return cl.done }

// SetPolicy tells the helper the current SSH policy.
func (cl *Client) SetPolicy(p *wire.SSHPolicy) error {
	return cl.c.Send(policyMsg{Header: unixmsg.Header{Type: typePolicy}, Policy: p})
}

// Handoff gives the helper an accepted connection and who it comes from; this process's
// copy of the connection is closed.
func (cl *Client) Handoff(tc *net.TCPConn, id sshserver.Identity) error {
	defer tc.Close()
	f, err := tc.File()
	if err != nil {
		return err
	}
	defer f.Close()
	return cl.c.Send(connMsg{Header: unixmsg.Header{Type: typeConn, FDs: 1}, Identity: id}, f)
}

// Close hangs up: the helper ends every session this skeind started (and a helper we started
// exits).
func (cl *Client) Close() {
	cl.c.Close()
	if cl.done != nil {
		<-cl.done
	}
	if cl.cmd != nil {
		done := make(chan struct{})
		go func() { cl.cmd.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			cl.cmd.Process.Kill()
			<-done
		}
	}
}

// spawn starts a helper of our own on a socket pair.
func spawn() (*Client, error) {
	c, child, err := unixmsg.Pair()
	if err != nil {
		return nil, err
	}
	cmd := exec.Command("/proc/self/exe", ChildArg)
	cmd.Args[0] = "skeind"
	cmd.ExtraFiles = []*os.File{child}
	cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGTERM}
	if err := cmd.Start(); err != nil {
		c.Close()
		child.Close()
		return nil, fmt.Errorf("starting a session helper: %w", err)
	}
	child.Close()
	return &Client{c: c, cmd: cmd}, nil
}

// Capabilities a process needs to run sessions for other users.
const (
	capChown       = 0
	capDACOverride = 1
	capKill        = 5
	capSetGID      = 6
	capSetUID      = 7
)

// CanRunSessions reports whether this process could act as other users: it has the
// capabilities to switch user and group, and no-new-privileges is off. skeind under its
// systemd unit never can.
func CanRunSessions() bool {
	b, err := os.ReadFile("/proc/self/status")
	if err != nil {
		return false
	}
	var eff uint64
	nnp := true
	for _, line := range strings.Split(string(b), "\n") {
		k, v, _ := strings.Cut(line, ":")
		v = strings.TrimSpace(v)
		switch k {
		case "CapEff":
			eff, _ = strconv.ParseUint(v, 16, 64)
		case "NoNewPrivs":
			nnp = v != "0"
		}
	}
	need := uint64(1)<<capChown | 1<<capDACOverride | 1<<capKill | 1<<capSetGID | 1<<capSetUID
	return !nnp && eff&need == need
}
