package gui_test

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/godbus/dbus/v5"

	"github.com/skeinvpn/skein/internal/lab"
	"github.com/skeinvpn/skein/ipc"
	"github.com/skeinvpn/skein/ipc/ipctest"
	"github.com/skeinvpn/skein/ui/portaltest"
)

const (
	appID   = "io.github.skeinvpn.Skein"
	appPath = dbus.ObjectPath("/io/github/skeinvpn/Skein")
)

// countingHelper is ipctest's helper that counts FileTargets calls: the app asks for the
// targets when it opens its "Send to…" picker, so a new call shows that files reached it.
type countingHelper struct {
	*ipctest.Backend
	targets atomic.Int32
}

func (h *countingHelper) FileTargets(ctx context.Context) ([]ipc.FileTarget, error) {
	h.targets.Add(1)
	return h.Backend.FileTargets(ctx)
}

func newCountingHelper(t *testing.T) (*countingHelper, string) {
	be := &countingHelper{Backend: ipctest.NewBackend(bigTailnet(3), ipc.Prefs{})}
	be.SetFileTargets([]ipc.FileTarget{{StableID: "stable-0001", Name: "peer-001", Online: true}})
	sock, _ := ipctest.Serve(t, be, ipc.ServerOptions{})
	return be, sock
}

func (h *countingHelper) waitTargets(t *testing.T, than int32) {
	t.Helper()
	lab.Eventually(t, 10*time.Second, func() error {
		if n := h.targets.Load(); n <= than {
			return fmt.Errorf("the app did not open its picker (FileTargets calls: %d)", n)
		}
		return nil
	})
}

// nameOwnerPID is the process that owns name on the bus at addr (0 when nobody does).
func nameOwnerPID(t *testing.T, addr, name string) int {
	t.Helper()
	conn, err := dbus.Connect(addr)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	var pid uint32
	if err := conn.BusObject().Call("org.freedesktop.DBus.GetConnectionUnixProcessID", 0, name).Store(&pid); err != nil {
		return 0
	}
	return int(pid)
}

// The app owns its ID on the session bus; a second launch raises it over D-Bus and exits, and
// `skein-gui --send FILE` (the desktop file's Exec, and a file manager's "Open with") hands the
// file to it, which opens its picker; only one tray icon is ever registered.
func TestSecondLaunchOverDBus(t *testing.T) {
	be, sock := newCountingHelper(t)
	d := newDesktop(t)
	first := d.startGUI(t, guiBin, "--minimized", "--verbose", "--socket", sock)
	d.watcher.waitItem(t, 20*time.Second)
	lab.Eventually(t, 10*time.Second, func() error {
		if pid := nameOwnerPID(t, d.busAddr, appID); pid != first.cmd.Process.Pid {
			return fmt.Errorf("%s is owned by pid %d, want the app's %d", appID, pid, first.cmd.Process.Pid)
		}
		return nil
	})

	second := exec.Command(guiBin, "--socket", sock)
	second.Env = d.env()
	out, err := second.CombinedOutput()
	if err != nil || !strings.Contains(string(out), "already running; showed its window") {
		t.Fatalf("second launch: %v\n%s", err, out)
	}
	lab.Eventually(t, 10*time.Second, func() error {
		if !strings.Contains(first.output(), "asked to show the window") {
			return fmt.Errorf("the first instance was not asked to show its window")
		}
		return nil
	})

	before := be.targets.Load()
	doc := filepath.Join(t.TempDir(), "notes from ann.txt")
	if err := os.WriteFile(doc, []byte("notes"), 0o644); err != nil {
		t.Fatal(err)
	}
	send := exec.Command(guiBin, "--send", doc)
	send.Env = d.env()
	send.Dir = filepath.Dir(doc)
	if out, err := send.CombinedOutput(); err != nil || !strings.Contains(string(out), "handed it 1 file(s) to send") {
		t.Fatalf("skein-gui --send: %v\n%s", err, out)
	}
	be.waitTargets(t, before)
	if !strings.Contains(first.output(), "handed 1 file(s) to send") {
		t.Errorf("first instance log:\n%s", first.output())
	}
	select {
	case it := <-d.watcher.reg:
		t.Errorf("a second tray icon registered: %s", it)
	default:
	}
}

// activationBus is a session bus that starts services from dir, as a desktop session's does
// from /usr/share/dbus-1/services; its log (the activated app's output) is kept.
func activationBus(t *testing.T, dir string) (addr string, log func() string) {
	t.Helper()
	conf := filepath.Join(t.TempDir(), "session.conf")
	err := os.WriteFile(conf, []byte(`<!DOCTYPE busconfig PUBLIC "-//freedesktop//DTD D-Bus Bus Configuration 1.0//EN"
 "http://www.freedesktop.org/standards/dbus/1.0/busconfig.dtd">
<busconfig>
  <type>session</type>
  <listen>unix:tmpdir=/tmp</listen>
  <auth>EXTERNAL</auth>
  <servicedir>`+dir+`</servicedir>
  <policy context="default">
    <allow send_destination="*" eavesdrop="true"/>
    <allow eavesdrop="true"/>
    <allow own="*"/>
  </policy>
</busconfig>
`), 0o644)
	if err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	var buf bytes.Buffer
	addr = portaltest.StartBusWith(t, &lockedWriter{mu: &mu, w: &buf}, "--config-file="+conf)
	return addr, func() string { mu.Lock(); defer mu.Unlock(); return buf.String() }
}

// The desktop file is DBusActivatable: with the D-Bus service file the packages install, a
// call to org.freedesktop.Application on the app ID starts the app through the bus, in the
// tray, and hands it the call (here Open with a file, so it opens its picker).
func TestDBusActivation(t *testing.T) {
	be, sock := newCountingHelper(t)
	services := t.TempDir()
	tmpl, err := os.ReadFile(filepath.Join("..", "..", "packaging", "linux", appID+".service.in"))
	if err != nil {
		t.Fatal(err)
	}
	service := strings.ReplaceAll(string(tmpl), "@BINDIR@", filepath.Dir(guiBin))
	if !strings.Contains(service, "Exec="+guiBin+" --minimized") {
		t.Fatalf("the service file does not start %s: %s", guiBin, service)
	}
	if err := os.WriteFile(filepath.Join(services, appID+".service"), []byte(service), 0o644); err != nil {
		t.Fatal(err)
	}
	addr, busLog := activationBus(t, services)
	d := &desktop{t: t, home: t.TempDir(), busAddr: addr}
	d.display = startXvfb(t)
	d.watcher = startWatcher(t, addr)

	conn, err := dbus.Connect(addr)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	// What a session does at login (dbus-update-activation-environment): the environment the
	// bus starts services with.
	env := map[string]string{"SKEIN_SOCKET": sock}
	for _, kv := range d.env() {
		k, v, _ := strings.Cut(kv, "=")
		env[k] = v
	}
	if err := conn.BusObject().Call("org.freedesktop.DBus.UpdateActivationEnvironment", 0, env).Err; err != nil {
		t.Fatal(err)
	}
	if owner := nameOwnerPID(t, addr, appID); owner != 0 {
		t.Fatalf("%s is owned before activation (pid %d)", appID, owner)
	}
	doc := filepath.Join(t.TempDir(), "report.pdf")
	os.WriteFile(doc, []byte("%PDF"), 0o644)
	// Open with the default flags: the bus may start the service.
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	err = conn.Object(appID, appPath).CallWithContext(ctx, "org.freedesktop.Application.Open", 0,
		[]string{"file://" + doc}, map[string]dbus.Variant{}).Err
	if err != nil {
		t.Fatalf("Open through D-Bus activation: %v\nbus log:\n%s", err, busLog())
	}
	pid := nameOwnerPID(t, addr, appID)
	if pid == 0 {
		t.Fatalf("nobody owns %s after activation", appID)
	}
	t.Cleanup(func() {
		if p, err := os.FindProcess(pid); err == nil {
			p.Signal(syscall.SIGTERM)
			for i := 0; i < 50 && syscall.Kill(pid, 0) == nil; i++ {
				time.Sleep(100 * time.Millisecond)
			}
			p.Kill()
		}
	})
	cmdline, _ := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
	if got := strings.ReplaceAll(strings.TrimRight(string(cmdline), "\x00"), "\x00", " "); got != guiBin+" --minimized" {
		t.Errorf("the bus started %q, want %s --minimized", got, guiBin)
	}
	be.waitTargets(t, 0)
	d.watcher.waitItem(t, 20*time.Second)
	t.Logf("the bus started skein-gui (pid %d) in the tray and handed it %s", pid, filepath.Base(doc))
}

// Inside the sandbox (the portal paths, here forced with SKEIN_USE_PORTAL=1 on a stand-in
// portal), a received file's "Open folder" goes to the OpenURI portal's OpenDirectory with a
// descriptor of the file, never to xdg-open or as a file:// URL.
func TestOpenFolderThroughPortal(t *testing.T) {
	be := ipctest.NewBackend(bigTailnet(3), ipc.Prefs{})
	sock, _ := ipctest.Serve(t, be, ipc.ServerOptions{})
	d := newDesktop(t)
	bin := t.TempDir()
	opened := filepath.Join(bin, "opened")
	if err := os.WriteFile(filepath.Join(bin, "xdg-open"), []byte("#!/bin/sh\necho \"$@\" >> "+opened+"\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	d.extraEnv = append(d.extraEnv, "PATH="+bin+":"+os.Getenv("PATH"), "SKEIN_USE_PORTAL=1")
	portal := portaltest.Start(t, d.busAddr)
	ns := startNotificationServer(t, d.busAddr)
	d.startGUI(t, guiBin, "--minimized", "--socket", sock)
	d.watcher.waitItem(t, 20*time.Second)
	lab.Eventually(t, 10*time.Second, func() error {
		if be.Watchers() == 0 {
			return fmt.Errorf("the app does not watch the helper yet")
		}
		return nil
	})
	be.AddFile("photo.jpg", "air", []byte("jpeg bytes"))
	saved := filepath.Join(d.home, "Downloads", "photo.jpg")
	lab.Eventually(t, 15*time.Second, func() error {
		if _, err := os.Stat(saved); err != nil {
			return err
		}
		if len(ns.recorded()) == 0 {
			return fmt.Errorf("no notification")
		}
		return nil
	})
	if err := ns.click(ns.recorded()[0].ID, "open-folder"); err != nil {
		t.Fatal(err)
	}
	c := portal.WaitCalls(t, 1, 10*time.Second)[0]
	if c.Method != "OpenDirectory" || c.Path != saved {
		t.Errorf("portal call %s of %q, want OpenDirectory of %s", c.Method, c.Path, saved)
	}
	time.Sleep(500 * time.Millisecond)
	if b, err := os.ReadFile(opened); err == nil {
		t.Errorf("xdg-open ran inside the sandbox: %s", b)
	}
	t.Logf("Open folder: %s with a descriptor of %s", c.Method, c.Path)
}
