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
	"sync"
	"syscall"
	"time"

	"github.com/godbus/dbus/v5"
	"golang.org/x/sys/unix"
)

// Single instance: the first app owns the app ID on the session bus (dbusapp.go); a second
// launch finds it there, asks it to show its window (or, with `--send FILE...`, to offer to
// send the files), and exits. Without a session bus (or with --instance-socket) the first app
// listens on a Unix socket in $XDG_RUNTIME_DIR instead, with the same effect.
//
// The socket's protocol is one line each way: "show" or "send " + a JSON array of absolute
// paths, then "ok". Only connections from this user's own uid are served.

// InstanceSocket is the path of the single-instance socket for this user.
func InstanceSocket() string {
	dir := os.Getenv("XDG_RUNTIME_DIR")
	if dir == "" {
		dir = filepath.Join(os.TempDir(), fmt.Sprintf("skein-gui-%d", os.Getuid()))
		os.MkdirAll(dir, 0o700)
	}
	return filepath.Join(dir, "skein-gui.sock")
}

// Instance is the first instance's listener: its bus name, or its socket.
type Instance struct {
	l    net.Listener
	path string

	bus  *dbus.Conn
	app  *application
	done chan struct{}
	once sync.Once
}

// ClaimInstance makes this process the app's instance: on the session bus when there is one
// and socket is "", else on the Unix socket (socket, or InstanceSocket()). When another
// instance runs it is asked to show its window, or to send files, and ErrRunning is returned.
func ClaimInstance(socket string, files ...string) (*Instance, error) {
	if socket == "" {
		conn, err := dbus.ConnectSessionBus()
		if err == nil {
			in, err := claimBus(conn, files)
			if in == nil {
				conn.Close()
			}
			return in, err
		}
		socket = InstanceSocket()
		if os.Getenv("XDG_RUNTIME_DIR") == "" { // the shared /tmp fallback
			if err := privateDir(filepath.Dir(socket)); err != nil {
				return nil, err
			}
		}
	}
	return Claim(socket, files...)
}

// privateDir checks that dir is a real directory of this user that nobody else may enter: the
// /tmp fallback could have been made first by another user (or be their symbolic link), who
// would then receive the paths of the files we are asked to send, or answer for us.
func privateDir(dir string) error {
	fi, err := os.Lstat(dir)
	if err != nil {
		return fmt.Errorf("single-instance socket directory: %w", err)
	}
	st, ok := fi.Sys().(*syscall.Stat_t)
	if !fi.IsDir() || !ok || int(st.Uid) != os.Getuid() || fi.Mode().Perm()&0o077 != 0 {
		return fmt.Errorf("single-instance socket directory %s is not a private directory of this user (%v, owner uid %d); not using it", dir, fi.Mode(), st.Uid)
	}
	return nil
}

// Handlers are what the instance does when asked.
type Handlers struct {
	Show func()               // show and raise the window
	Send func(paths []string) // offer to send these files; nil means Show
	Quit func()               // quit the app (ActivateAction "quit"); nil ignores it
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
	in.ServeHandlers(Handlers{Show: show, Send: send})
}

// ServeHandlers serves requests with h until Close.
func (in *Instance) ServeHandlers(h Handlers) {
	if in.bus != nil {
		in.serveBus(h)
		return
	}
	show, send := h.Show, h.Send
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

// serveBus runs the requests that arrive over D-Bus, in order.
func (in *Instance) serveBus(h Handlers) {
	for {
		select {
		case <-in.done:
			return
		case r := <-in.app.reqs:
			switch {
			case r.action == "quit":
				if h.Quit != nil {
					h.Quit()
				}
			case len(r.paths) > 0 && h.Send != nil:
				h.Send(r.paths)
			default:
				h.Show()
			}
		}
	}
}

// Close gives up the bus name (or stops listening and removes the socket).
func (in *Instance) Close() {
	if in.bus != nil {
		in.once.Do(func() {
			close(in.done)
			in.bus.ReleaseName(AppID)
			in.bus.Close()
		})
		return
	}
	in.l.Close()
	os.Remove(in.path)
}
