package main

import (
	"context"
	"fmt"
	"log"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/skeinvpn/skein/ipc"
)

// listenNotify is systemd's end: a datagram socket the test reads.
func listenNotify(t *testing.T, name string) *net.UnixConn {
	t.Helper()
	c, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: name, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

func readMsg(t *testing.T, c *net.UnixConn) string {
	t.Helper()
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	buf := make([]byte, 4096)
	n, err := c.Read(buf)
	if err != nil {
		t.Fatalf("no notify message: %v", err)
	}
	return string(buf[:n])
}

func noMsg(t *testing.T, c *net.UnixConn) {
	t.Helper()
	c.SetReadDeadline(time.Now().Add(200 * time.Millisecond))
	buf := make([]byte, 4096)
	if n, err := c.Read(buf); err == nil {
		t.Fatalf("unexpected notify message %q", buf[:n])
	}
}

func running() ipc.Status {
	return ipc.Status{
		State: ipc.StateRunning, ControlConnected: true,
		Self:  &ipc.Peer{UserID: 7, Addresses: []netip.Addr{netip.MustParseAddr("100.64.0.1"), netip.MustParseAddr("fd7a:115c:a1e0::1")}},
		Users: []ipc.User{{ID: 7, LoginName: "alice@example.com"}},
	}
}

// READY=1 with the first status, then one STATUS line per change (none for a repeat), and
// STOPPING=1 at the end; NOTIFY_SOCKET is not passed on to skeind's children.
func TestNotifyPath(t *testing.T) {
	path := filepath.Join(t.TempDir(), "notify")
	sys := listenNotify(t, path)
	t.Setenv("NOTIFY_SOCKET", path)
	n := newNotifier(t.Logf)
	defer n.close()
	if v, ok := os.LookupEnv("NOTIFY_SOCKET"); ok {
		t.Errorf("NOTIFY_SOCKET still set (%q): children would inherit it", v)
	}
	n.ready(ipc.Status{State: ipc.StateNeedsLogin})
	if got := readMsg(t, sys); got != "READY=1\nSTATUS=Logged out; run 'skein up' to log in" {
		t.Errorf("first message %q", got)
	}
	n.status(ipc.Status{State: ipc.StateNeedsLogin})
	noMsg(t, sys)
	n.status(running())
	if got := readMsg(t, sys); got != "STATUS=Connected; alice@example.com; 100.64.0.1 fd7a:115c:a1e0::1" {
		t.Errorf("running: %q", got)
	}
	n.stopping()
	if got := readMsg(t, sys); !strings.HasPrefix(got, "STOPPING=1\n") {
		t.Errorf("stopping: %q", got)
	}
}

// "@name" is the abstract namespace (systemd's usual NOTIFY_SOCKET is a path, but both exist).
func TestNotifyAbstract(t *testing.T) {
	name := fmt.Sprintf("skeind-test-%d-%d", os.Getpid(), time.Now().UnixNano())
	sys := listenNotify(t, "\x00"+name)
	t.Setenv("NOTIFY_SOCKET", "@"+name)
	n := newNotifier(t.Logf)
	defer n.close()
	n.ready(ipc.Status{State: ipc.StateStopped})
	if got := readMsg(t, sys); !strings.HasPrefix(got, "READY=1\nSTATUS=Stopped") {
		t.Errorf("got %q", got)
	}
}

// Without NOTIFY_SOCKET (not under systemd) nothing is sent and nothing fails.
func TestNotifyUnset(t *testing.T) {
	t.Setenv("NOTIFY_SOCKET", "")
	n := newNotifier(t.Logf)
	n.ready(running())
	n.status(ipc.Status{})
	n.follow(context.Background(), func() (<-chan ipc.Event, func()) {
		t.Fatal("watching without systemd")
		return nil, nil
	})
	n.close()
	t.Setenv("NOTIFY_SOCKET", "relative/path")
	newNotifier(t.Logf).ready(running())
}

// follow turns the watch stream into STATUS lines and ends with the context.
func TestNotifyFollow(t *testing.T) {
	path := filepath.Join(t.TempDir(), "notify")
	sys := listenNotify(t, path)
	t.Setenv("NOTIFY_SOCKET", path)
	n := newNotifier(t.Logf)
	defer n.close()
	events := make(chan ipc.Event, 4)
	cancelled := make(chan struct{})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		n.follow(ctx, func() (<-chan ipc.Event, func()) { return events, func() { close(cancelled) } })
		close(done)
	}()
	st := ipc.Status{State: ipc.StateStarting}
	events <- ipc.Event{Kind: ipc.EventState, Status: &st}
	if got := readMsg(t, sys); got != "STATUS=Connecting" {
		t.Errorf("got %q", got)
	}
	events <- ipc.Event{Kind: ipc.EventFile}
	r := running()
	r.ControlConnected = false
	events <- ipc.Event{Kind: ipc.EventNetmap, Status: &r}
	if got := readMsg(t, sys); got != "STATUS=Connected; alice@example.com; 100.64.0.1 fd7a:115c:a1e0::1; control server unreachable" {
		t.Errorf("got %q", got)
	}
	cancel()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		t.Fatal("follow did not end with its context")
	}
	select {
	case <-cancelled:
	default:
		t.Error("follow did not cancel its watch")
	}
}

// A STATUS value is one line: a login URL with a newline cannot inject another assignment.
func TestStatusLineOneLine(t *testing.T) {
	got := statusLine(ipc.Status{State: ipc.StateNeedsLogin, AuthURL: "https://x/a\nREADY=1\x00" + strings.Repeat("y", 1000)})
	if strings.ContainsAny(got, "\n\x00") || len(got) > 420 || !strings.HasPrefix(got, "Needs login: https://x/a READY=1") {
		t.Errorf("statusLine = %q", got)
	}
	for st, want := range map[ipc.State]string{
		ipc.StateNoState: "Starting", ipc.StateStopped: "Stopped; run 'skein up' to connect", "Weird": "State Weird",
	} {
		if got := statusLine(ipc.Status{State: st}); got != want {
			t.Errorf("statusLine(%s) = %q, want %q", st, got, want)
		}
	}
	if got := statusLine(ipc.Status{State: ipc.StateRunning}); got != "Connected; -; -; control server unreachable" {
		t.Errorf("running without self: %q", got)
	}
}

// Under journald (stderr is the stream JOURNAL_STREAM names) lines carry no timestamp or
// prefix of their own; anywhere else they do.
func TestJournalLogFlags(t *testing.T) {
	f, err := os.CreateTemp(t.TempDir(), "stderr")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var st syscall.Stat_t
	if err := syscall.Fstat(int(f.Fd()), &st); err != nil {
		t.Fatal(err)
	}
	t.Setenv("JOURNAL_STREAM", fmt.Sprintf("%d:%d", st.Dev, st.Ino))
	if flags, prefix := logFlags(f); flags != 0 || prefix != "" {
		t.Errorf("stderr is the journal: flags %d prefix %q, want none", flags, prefix)
	}
	other, err := os.CreateTemp(t.TempDir(), "other")
	if err != nil {
		t.Fatal(err)
	}
	defer other.Close()
	for name, w := range map[string]any{"redirected": other, "not a file": &strings.Builder{}} {
		if flags, prefix := logFlags(w); flags&log.LstdFlags == 0 || prefix == "" {
			t.Errorf("%s: flags %d prefix %q, want timestamps", name, flags, prefix)
		}
	}
	for _, bad := range []string{"", "garbage", fmt.Sprintf("%d", st.Dev), fmt.Sprintf("%d:%d", st.Dev, st.Ino+1)} {
		if isJournal(f, bad) {
			t.Errorf("JOURNAL_STREAM=%q taken for the journal", bad)
		}
	}
}
