// Package portaltest is a stand-in for the desktop portals (xdg-desktop-portal) and a private
// session bus, for tests of the app's sandbox paths: the portal owns
// org.freedesktop.portal.Desktop, implements OpenURI (OpenURI, OpenFile, OpenDirectory) and
// Background (RequestBackground), and records every call, with the path behind each file
// descriptor it is handed.
package portaltest

import (
	"bufio"
	"fmt"
	"io"
	"os"
	"os/exec"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/godbus/dbus/v5"
)

const (
	name = "org.freedesktop.portal.Desktop"
	path = dbus.ObjectPath("/org/freedesktop/portal/desktop")
)

// StartBus runs a private session bus (dbus-daemon) for the test and returns its address.
func StartBus(t testing.TB) string {
	t.Helper()
	return StartBusWith(t, os.Stderr, "--session")
}

// StartBusWith runs dbus-daemon with config (such as --session or --config-file=FILE), its log
// going to stderr, until the test ends, and returns the bus's address.
func StartBusWith(t testing.TB, stderr io.Writer, config string) string {
	t.Helper()
	cmd := exec.Command("dbus-daemon", config, "--nofork", "--nopidfile", "--print-address=1")
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stderr = stderr
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		t.Fatalf("dbus-daemon: %v (install dbus-daemon)", err)
	}
	t.Cleanup(func() {
		cmd.Process.Signal(syscall.SIGTERM)
		cmd.Wait()
	})
	line, err := bufio.NewReader(out).ReadString('\n')
	if err != nil {
		t.Fatalf("reading the bus address: %v", err)
	}
	return strings.TrimSpace(line)
}

// Call is one recorded portal call.
type Call struct {
	Method  string // OpenURI, OpenFile, OpenDirectory or RequestBackground
	URI     string // OpenURI's
	Path    string // the file an Open* descriptor refers to (from /proc/self/fd)
	FDFlags int    // the descriptor's open flags (O_PATH, O_RDONLY, ...)
	Options map[string]dbus.Variant
}

// Autostart and Commandline read RequestBackground's options.
func (c Call) Autostart() bool {
	v, _ := c.Options["autostart"].Value().(bool)
	return v
}

func (c Call) Commandline() []string {
	v, _ := c.Options["commandline"].Value().([]string)
	return v
}

// Portal is the stand-in.
type Portal struct {
	conn    *dbus.Conn
	mu      sync.Mutex
	calls   []Call
	deny    bool
	changed chan struct{}
}

// Start puts the stand-in portal on the bus at addr.
func Start(t testing.TB, addr string) *Portal {
	t.Helper()
	conn, err := dbus.Connect(addr)
	if err != nil {
		t.Fatalf("connecting to the test bus: %v", err)
	}
	t.Cleanup(func() { conn.Close() })
	p := &Portal{conn: conn, changed: make(chan struct{}, 1)}
	if err := conn.Export(openURI{p}, path, "org.freedesktop.portal.OpenURI"); err != nil {
		t.Fatal(err)
	}
	if err := conn.Export(background{p}, path, "org.freedesktop.portal.Background"); err != nil {
		t.Fatal(err)
	}
	if reply, err := conn.RequestName(name, dbus.NameFlagDoNotQueue); err != nil || reply != dbus.RequestNameReplyPrimaryOwner {
		t.Fatalf("owning %s: %v (reply %v)", name, err, reply)
	}
	return p
}

// Deny makes RequestBackground answer "cancelled by the user" (response 1).
func (p *Portal) Deny(deny bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.deny = deny
}

// Calls returns the calls so far.
func (p *Portal) Calls() []Call {
	p.mu.Lock()
	defer p.mu.Unlock()
	return slices.Clone(p.calls)
}

// WaitCalls waits until at least n calls were made.
func (p *Portal) WaitCalls(t testing.TB, n int, timeout time.Duration) []Call {
	t.Helper()
	deadline := time.After(timeout)
	for {
		if c := p.Calls(); len(c) >= n {
			return c
		}
		select {
		case <-p.changed:
		case <-deadline:
			t.Fatalf("want %d portal calls, have %+v", n, p.Calls())
		}
	}
}

func (p *Portal) record(c Call) {
	p.mu.Lock()
	p.calls = append(p.calls, c)
	p.mu.Unlock()
	select {
	case p.changed <- struct{}{}:
	default:
	}
}

// fdCall records an Open* call made with a descriptor, then closes the descriptor.
func (p *Portal) fdCall(method string, fd dbus.UnixFD, options map[string]dbus.Variant) (dbus.ObjectPath, *dbus.Error) {
	defer syscall.Close(int(fd))
	target, err := os.Readlink(fmt.Sprintf("/proc/self/fd/%d", fd))
	if err != nil {
		return "", dbus.MakeFailedError(err)
	}
	flags, _, errno := syscall.Syscall(syscall.SYS_FCNTL, uintptr(fd), syscall.F_GETFL, 0)
	if errno != 0 {
		return "", dbus.MakeFailedError(errno)
	}
	p.record(Call{Method: method, Path: target, FDFlags: int(flags), Options: options})
	return path + "/request/test/open", nil
}

type openURI struct{ p *Portal }

func (o openURI) OpenURI(parent, uri string, options map[string]dbus.Variant) (dbus.ObjectPath, *dbus.Error) {
	o.p.record(Call{Method: "OpenURI", URI: uri, Options: options})
	return path + "/request/test/uri", nil
}

func (o openURI) OpenFile(parent string, fd dbus.UnixFD, options map[string]dbus.Variant) (dbus.ObjectPath, *dbus.Error) {
	return o.p.fdCall("OpenFile", fd, options)
}

func (o openURI) OpenDirectory(parent string, fd dbus.UnixFD, options map[string]dbus.Variant) (dbus.ObjectPath, *dbus.Error) {
	return o.p.fdCall("OpenDirectory", fd, options)
}

type background struct{ p *Portal }

// RequestBackground answers on the Request object named by the caller's unique name and
// handle_token, as the portal does, a moment after returning its path.
func (b background) RequestBackground(sender dbus.Sender, parent string, options map[string]dbus.Variant) (dbus.ObjectPath, *dbus.Error) {
	token, _ := options["handle_token"].Value().(string)
	if token == "" {
		token = "t"
	}
	req := dbus.ObjectPath("/org/freedesktop/portal/desktop/request/" +
		strings.ReplaceAll(strings.TrimPrefix(string(sender), ":"), ".", "_") + "/" + token)
	call := Call{Method: "RequestBackground", Options: options}
	b.p.mu.Lock()
	deny := b.p.deny
	b.p.mu.Unlock()
	go func() {
		time.Sleep(50 * time.Millisecond)
		code, results := uint32(0), map[string]dbus.Variant{
			"background": dbus.MakeVariant(true),
			"autostart":  dbus.MakeVariant(call.Autostart()),
		}
		if deny {
			code, results = 1, map[string]dbus.Variant{}
		}
		b.p.conn.Emit(req, "org.freedesktop.portal.Request.Response", code, results)
		b.p.record(call)
	}()
	return req, nil
}
