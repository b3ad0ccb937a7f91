package sshchild

import (
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"sync"

	"github.com/skeinvpn/skein/internal/unixmsg"
)

// User is the helper's end of a ModeUser child: sockets opened as the user, on request.
type User struct {
	cmd  *exec.Cmd
	conn *unixmsg.Conn

	mu      sync.Mutex
	next    uint64
	waiting map[uint64]chan result
	err     error
	done    chan struct{}
}

type result struct {
	rep  Reply
	file *os.File
}

// StartUser starts the child as id. Close ends it (it removes what it made).
func StartUser(id Identity) (*User, error) {
	parent, child, err := unixmsg.Pair()
	if err != nil {
		return nil, err
	}
	cmd := Command(ModeUser, id, "")
	cmd.ExtraFiles = []*os.File{child}
	cmd.Stderr = os.Stderr
	// Nothing of the helper's environment: TMPDIR, for one, may name a directory of root's.
	cmd.Env = []string{"PATH=/usr/local/bin:/usr/bin:/bin"}
	if err := cmd.Start(); err != nil {
		parent.Close()
		child.Close()
		return nil, err
	}
	child.Close()
	u := &User{cmd: cmd, conn: parent, waiting: map[uint64]chan result{}, done: make(chan struct{})}
	go u.read()
	return u, nil
}

func (u *User) read() {
	defer close(u.done)
	for {
		_, body, files, err := u.conn.Recv()
		var rep Reply
		if err == nil {
			err = unixmsg.Decode(body, &rep)
		}
		if err != nil {
			for _, f := range files {
				f.Close()
			}
			u.mu.Lock()
			u.err = errors.New("the user's process ended")
			for id, ch := range u.waiting {
				delete(u.waiting, id)
				close(ch)
			}
			u.mu.Unlock()
			return
		}
		var f *os.File
		if len(files) == 1 && rep.Error == "" {
			f = files[0]
		} else {
			for _, f := range files {
				f.Close()
			}
		}
		u.mu.Lock()
		ch := u.waiting[rep.ID]
		delete(u.waiting, rep.ID)
		u.mu.Unlock()
		if ch == nil {
			if f != nil {
				f.Close()
			}
			continue
		}
		ch <- result{rep, f}
	}
}

func (u *User) call(typ, addr string) (Reply, *os.File, error) {
	u.mu.Lock()
	if u.err != nil {
		u.mu.Unlock()
		return Reply{}, nil, u.err
	}
	u.next++
	id := u.next
	ch := make(chan result, 1)
	u.waiting[id] = ch
	u.mu.Unlock()
	if err := u.conn.Send(Request{Header: unixmsg.Header{Type: typ}, ID: id, Addr: addr}); err != nil {
		return Reply{}, nil, err
	}
	r, ok := <-ch
	if !ok {
		return Reply{}, nil, errors.New("the user's process ended")
	}
	if r.rep.Error != "" {
		return r.rep, nil, errors.New(r.rep.Error)
	}
	if r.file == nil {
		return r.rep, nil, fmt.Errorf("%s: no socket in the reply", typ)
	}
	return r.rep, r.file, nil
}

// Dial connects to addr as the user.
func (u *User) Dial(addr string) (net.Conn, error) {
	_, f, err := u.call(ReqDial, addr)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	return net.FileConn(f)
}

// ListenTCP listens on a loopback addr as the user.
func (u *User) ListenTCP(addr string) (net.Listener, error) {
	_, f, err := u.call(ReqListenTCP, addr)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	return net.FileListener(f)
}

// ListenAgent makes the user's agent socket and returns its listener and path.
func (u *User) ListenAgent() (net.Listener, string, error) {
	rep, f, err := u.call(ReqListenAgent, "")
	if err != nil {
		return nil, "", err
	}
	defer f.Close()
	ln, err := net.FileListener(f)
	return ln, rep.Path, err
}

// Close hangs up; the child removes its agent sockets and exits.
func (u *User) Close() {
	u.conn.Close()
	<-u.done
	u.cmd.Wait()
}
