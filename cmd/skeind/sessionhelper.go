package main

import (
	"context"
	"fmt"
	"net"
	"os"
	"os/signal"
	"strconv"
	"syscall"

	"github.com/skeinvpn/skein/daemon/sessionhelper"
)

// runSessionHelper is `skeind --session-helper`: under systemd it serves the socket the
// socket unit passes (LISTEN_FDS); started by hand it makes socket itself (root, 0600).
func runSessionHelper(socket string, logf func(string, ...any)) int {
	if os.Geteuid() != 0 || !sessionhelper.CanRunSessions() {
		logf("session helper: must run as root with the capabilities to switch users (not inside skeind's sandbox)")
		return 1
	}
	ln, own, err := helperListener(socket)
	if err != nil {
		logf("session helper: %v", err)
		return 1
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	go func() {
		<-ctx.Done()
		ln.Close()
	}()
	how := "a socket of its own"
	if !own {
		how = "systemd's socket"
	}
	logf("session helper: listening on %s (%s)", ln.Addr(), how)
	err = sessionhelper.Serve(ln, logf)
	if own {
		os.Remove(socket)
	}
	if err != nil {
		logf("session helper: %v", err)
		return 1
	}
	return 0
}

// helperListener is systemd's socket (own=false), or one made at path.
func helperListener(path string) (ln *net.UnixListener, own bool, err error) {
	if pid, _ := strconv.Atoi(os.Getenv("LISTEN_PID")); pid == os.Getpid() {
		if n, _ := strconv.Atoi(os.Getenv("LISTEN_FDS")); n != 1 {
			return nil, false, fmt.Errorf("systemd passed %s sockets, want 1", os.Getenv("LISTEN_FDS"))
		}
		os.Unsetenv("LISTEN_PID")
		os.Unsetenv("LISTEN_FDS")
		os.Unsetenv("LISTEN_FDNAMES")
		f := os.NewFile(3, "systemd-socket")
		l, err := net.FileListener(f)
		f.Close()
		if err != nil {
			return nil, false, err
		}
		ul, ok := l.(*net.UnixListener)
		if !ok {
			l.Close()
			return nil, false, fmt.Errorf("systemd passed a socket that is not a Unix stream socket")
		}
		return ul, false, nil
	}
	ul, err := sessionhelper.Listen(path)
	return ul, true, err
}
