package ui

import (
	"bufio"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// Single instance: the first app listens on a Unix socket in $XDG_RUNTIME_DIR; a second
// launch finds it, asks it to show its window (or, with `--send FILE...`, to offer to send the
// files), and exits.
//
// The protocol is one line each way: "show" or "send " + a JSON array of absolute paths, then
// "ok". Only connections from this user's own uid are served.

// InstanceSocket is the path of the single-instance socket for this user.
func InstanceSocket() string {
	dir := os.Getenv("XDG_RUNTIME_DIR")
	if dir == "" {
		dir = filepath.Join(os.TempDir(), fmt.Sprintf("skein-gui-%d", os.Getuid()))
		os.MkdirAll(dir, 0o700)
	}
	return filepath.Join(dir, "skein-gui.sock")
}

// Instance is the first instance's listener.
type Instance struct {
	l    net.Listener
	path string
}

// ErrRunning is returned by Claim when another instance took the request (to show its window,
// or to send files).
var ErrRunning = errors.New("another Skein window is already running; it was asked to show itself")

// ErrCannotSend is returned by Claim when the running instance showed its window but does not
// take files to send (an older version).
var ErrCannotSend = errors.New("the running Skein cannot take files to send (an older version?); quit it and try again")

// maxRequest bounds one request line (the paths of the files to send).
const maxRequest = 1 << 20

// Claim makes this process the app's instance, or, when another one answers on path, asks it
// to show its window, or with files to offer to send them, and returns ErrRunning. Paths must
// be absolute (the other instance has its own working directory).
func Claim(path string, send ...string) (*Instance, error) {
	req := "show\n"
	if len(send) > 0 {
		b, err := json.Marshal(send)
		if err != nil {
			return nil, err
		}
		req = "send " + string(b) + "\n"
	}
	for attempt := 0; attempt < 2; attempt++ {
		dialed, ok := ask(path, req)
		if ok {
			return nil, ErrRunning
		}
		if dialed && len(send) > 0 {
			if _, ok := ask(path, "show\n"); ok {
				return nil, ErrCannotSend
			}
		}
		l, err := net.Listen("unix", path)
		if err == nil {
			return &Instance{l: l, path: path}, nil
		}
		if !errors.Is(err, syscall.EADDRINUSE) {
			return nil, err
		}
		// A socket left by a crashed instance: nobody answered, so remove it and retry.
		os.Remove(path)
	}
	return nil, fmt.Errorf("cannot claim the single-instance socket %s", path)
}

// ask sends one request to the instance on path: dialed tells that something listens, ok that
// it answered "ok".
func ask(path, req string) (dialed, ok bool) {
	c, err := net.DialTimeout("unix", path, time.Second)
	if err != nil {
		return false, false
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(2 * time.Second))
	if _, err := io.WriteString(c, req); err != nil {
		return true, false
	}
	reply, _ := bufio.NewReader(c).ReadString('\n')
	return true, strings.TrimSpace(reply) == "ok"
}

// Serve calls show for every request until Close.
func (in *Instance) Serve(show func()) { in.ServeSend(show, nil) }

// ServeSend calls show for every "show" request and send with the paths of every "send"
// request (show when send is nil), until Close.
func (in *Instance) ServeSend(show func(), send func(paths []string)) {
	for {
		c, err := in.l.Accept()
		if err != nil {
			return
		}
		go func() {
			defer c.Close()
			if !sameUser(c) {
				return
			}
			c.SetDeadline(time.Now().Add(2 * time.Second))
			line, err := bufio.NewReaderSize(io.LimitReader(c, maxRequest), 4096).ReadString('\n')
			if err != nil {
				return
			}
			line = strings.TrimSpace(line)
			switch {
			case line == "show":
				show()
			case strings.HasPrefix(line, "send "):
				var paths []string
				if json.Unmarshal([]byte(strings.TrimPrefix(line, "send ")), &paths) != nil {
					return
				}
				for _, p := range paths {
					if !filepath.IsAbs(p) {
						return
					}
				}
				if send != nil && len(paths) > 0 {
					send(paths)
				} else {
					show()
				}
			default:
				return
			}
			c.Write([]byte("ok\n"))
		}()
	}
}

// sameUser tells whether the process at the other end of c runs as this user.
func sameUser(c net.Conn) bool {
	uc, ok := c.(*net.UnixConn)
	if !ok {
		return false
	}
	raw, err := uc.SyscallConn()
	if err != nil {
		return false
	}
	var cred *unix.Ucred
	var cerr error
	if err := raw.Control(func(fd uintptr) {
		cred, cerr = unix.GetsockoptUcred(int(fd), unix.SOL_SOCKET, unix.SO_PEERCRED)
	}); err != nil || cerr != nil {
		return false
	}
	return int(cred.Uid) == os.Getuid()
}

// Close stops listening and removes the socket.
func (in *Instance) Close() {
	in.l.Close()
	os.Remove(in.path)
}
