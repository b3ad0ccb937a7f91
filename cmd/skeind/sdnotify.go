package main

import (
	"context"
	"fmt"
	"net"
	"os"
	"strings"
	"sync"

	"github.com/skeinvpn/skein/ipc"
)

// systemd's readiness protocol (sd_notify(3)), as a Type=notify service speaks it: one datagram
// of newline-separated VAR=value assignments per message, sent to the Unix socket named by
// $NOTIFY_SOCKET (a path, or "@name" for the abstract namespace). skeind sends READY=1 once its
// IPC socket accepts connections, STATUS=<one line> whenever its state reads differently (shown
// by `systemctl status skeind`), and STOPPING=1 when it shuts down.

// notifier sends to systemd; the zero value (no $NOTIFY_SOCKET) sends nothing.
type notifier struct {
	mu   sync.Mutex
	conn *net.UnixConn
	last string // the last STATUS= line, so that unchanged states are not sent again
	logf func(string, ...any)
}

// newNotifier connects to $NOTIFY_SOCKET when it is set, then unsets it so that the programs
// skeind starts (getent, …) do not inherit a channel to systemd meant for skeind alone.
func newNotifier(logf func(string, ...any)) *notifier {
	n := &notifier{logf: logf}
	addr := os.Getenv("NOTIFY_SOCKET")
	if addr == "" {
		return n
	}
	os.Unsetenv("NOTIFY_SOCKET")
	if strings.HasPrefix(addr, "@") {
		addr = "\x00" + addr[1:] // Go spells the abstract namespace with a leading NUL
	} else if !strings.HasPrefix(addr, "/") {
		logf("systemd: ignoring NOTIFY_SOCKET %q: neither a path nor @abstract", addr)
		return n
	}
	c, err := net.DialUnix("unixgram", nil, &net.UnixAddr{Name: addr, Net: "unixgram"})
	if err != nil {
		logf("systemd: cannot reach NOTIFY_SOCKET: %v", err)
		return n
	}
	n.conn = c
	return n
}

// send sends one message; a failure is logged, never fatal (systemd then times the start out).
func (n *notifier) send(msg string) {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.conn == nil {
		return
	}
	if _, err := n.conn.Write([]byte(msg)); err != nil {
		n.logf("systemd: notify %q: %v", firstLine(msg), err)
	}
}

// ready says that skeind serves its socket, with the status it starts in.
func (n *notifier) ready(st ipc.Status) {
	line := statusLine(st)
	n.mu.Lock()
	n.last = line
	n.mu.Unlock()
	n.send("READY=1\nSTATUS=" + line)
}

// status sends st's line if it differs from the last one sent.
func (n *notifier) status(st ipc.Status) {
	line := statusLine(st)
	n.mu.Lock()
	same := line == n.last
	n.last = line
	n.mu.Unlock()
	if !same {
		n.send("STATUS=" + line)
	}
}

// stopping tells systemd that the stop it sees next is intended.
func (n *notifier) stopping() { n.send("STOPPING=1\nSTATUS=Stopping") }

// follow sends a STATUS line for every change of state that watch reports, until ctx ends or
// the stream closes.
func (n *notifier) follow(ctx context.Context, watch func() (<-chan ipc.Event, func())) {
	if n.conn == nil {
		return
	}
	events, cancel := watch()
	defer cancel()
	for {
		select {
		case <-ctx.Done():
			return
		case ev, ok := <-events:
			if !ok {
				return
			}
			if ev.Status != nil {
				n.status(*ev.Status)
			}
		}
	}
}

func (n *notifier) close() {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.conn != nil {
		n.conn.Close()
		n.conn = nil
	}
}

// statusLine is the one-line state systemctl shows, in the official daemon's shape
// ("Connected; LOGIN; ADDRESSES", "Needs login: URL", "Stopped; …").
func statusLine(st ipc.Status) string {
	var s string
	switch st.State {
	case ipc.StateRunning:
		var addrs []string
		login := ""
		if st.Self != nil {
			for _, a := range st.Self.Addresses {
				addrs = append(addrs, a.String())
			}
			for _, u := range st.Users {
				if u.ID == st.Self.UserID {
					login = u.LoginName
				}
			}
		}
		s = fmt.Sprintf("Connected; %s; %s", orDash(login), orDash(strings.Join(addrs, " ")))
		if !st.ControlConnected {
			s += "; control server unreachable"
		}
	case ipc.StateStarting:
		s = "Connecting"
	case ipc.StateNeedsLogin:
		if st.AuthURL != "" {
			s = "Needs login: " + st.AuthURL
		} else {
			s = "Logged out; run 'skein up' to log in"
		}
	case ipc.StateStopped:
		s = "Stopped; run 'skein up' to connect"
	case ipc.StateNoState:
		s = "Starting"
	default:
		s = "State " + string(st.State)
	}
	return oneLine(s)
}

// oneLine keeps a STATUS value to one printable line of bounded length: a newline would start
// another assignment in the datagram.
func oneLine(s string) string {
	s = strings.Map(func(r rune) rune {
		if r < 0x20 || r == 0x7f {
			return ' '
		}
		return r
	}, s)
	if len(s) > 400 {
		s = strings.ToValidUTF8(s[:400], "") + "…"
	}
	return s
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

func firstLine(s string) string {
	l, _, _ := strings.Cut(s, "\n")
	return l
}
