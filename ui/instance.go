package ui

import (
	"bufio"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"time"
)

// Single instance: the first app listens on a Unix socket in $XDG_RUNTIME_DIR; a second
// launch finds it, asks it to show its window, and exits.

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

// ErrRunning is returned by Claim when another instance took the request to show its window.
var ErrRunning = errors.New("another Skein window is already running; it was asked to show itself")

// Claim makes this process the app's instance, or, when another one answers on path, asks it to
// show its window and returns ErrRunning.
func Claim(path string) (*Instance, error) {
	for attempt := 0; attempt < 2; attempt++ {
		if c, err := net.DialTimeout("unix", path, time.Second); err == nil {
			c.SetDeadline(time.Now().Add(2 * time.Second))
			_, werr := c.Write([]byte("show\n"))
			reply, _ := bufio.NewReader(c).ReadString('\n')
			c.Close()
			if werr == nil && strings.TrimSpace(reply) == "ok" {
				return nil, ErrRunning
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

// Serve calls show for every "show" request until Close.
func (in *Instance) Serve(show func()) {
	for {
		c, err := in.l.Accept()
		if err != nil {
			return
		}
		go func() {
			defer c.Close()
			c.SetDeadline(time.Now().Add(2 * time.Second))
			line, err := bufio.NewReader(c).ReadString('\n')
			if err != nil || strings.TrimSpace(line) != "show" {
				return
			}
			show()
			c.Write([]byte("ok\n"))
		}()
	}
}

// Close stops listening and removes the socket.
func (in *Instance) Close() {
	in.l.Close()
	os.Remove(in.path)
}
