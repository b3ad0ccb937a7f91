package ui

import (
	"context"
	"errors"
	"fmt"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"fyne.io/fyne/v2/test"
	"github.com/godbus/dbus/v5"
	"golang.org/x/sys/unix"

	"github.com/skeinvpn/skein/ipc"
	"github.com/skeinvpn/skein/ipc/ipctest"
	"github.com/skeinvpn/skein/ui/portaltest"
)

// sandboxed runs the test as the app runs inside a Flatpak: portals on, on a private session
// bus with a stand-in portal.
func sandboxed(t *testing.T) (*portaltest.Portal, string) {
	t.Helper()
	addr := portaltest.StartBus(t)
	t.Setenv("DBUS_SESSION_BUS_ADDRESS", addr)
	t.Setenv(PortalEnv, "")
	info := filepath.Join(t.TempDir(), ".flatpak-info")
	if err := os.WriteFile(info, []byte("[Application]\nname="+AppID+"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	old := flatpakInfo
	flatpakInfo = info
	t.Cleanup(func() { flatpakInfo = old })
	return portaltest.Start(t, addr), addr
}

// Inside a Flatpak is told by /.flatpak-info, as the portals tell it; SKEIN_USE_PORTAL=1 asks
// for the portals elsewhere.
func TestUsePortals(t *testing.T) {
	old := flatpakInfo
	defer func() { flatpakInfo = old }()
	t.Setenv(PortalEnv, "")
	flatpakInfo = filepath.Join(t.TempDir(), "none")
	if usePortals() {
		t.Error("portals without /.flatpak-info")
	}
	os.WriteFile(flatpakInfo, nil, 0o644)
	if !usePortals() {
		t.Error("no portals with /.flatpak-info")
	}
	os.Remove(flatpakInfo)
	t.Setenv(PortalEnv, "1")
	if !usePortals() {
		t.Errorf("no portals with %s=1", PortalEnv)
	}
}

// In the sandbox "Start at login" asks the Background portal for autostart with our command
// line, and writes no autostart file of its own; the answer is remembered; turning it off asks
// the portal again; a refusal leaves the box unticked and says so.
func TestStartAtLoginThroughPortal(t *testing.T) {
	portal, _ := sandboxed(t)
	h := newHarness(t, running(), ipc.Prefs{})
	h.ui(func() {
		h.a.tabs.selectSettings()
		test.Tap(h.a.settings.autostart)
	})
	calls := portal.WaitCalls(t, 1, 10*time.Second)
	c := calls[0]
	if c.Method != "RequestBackground" || !c.Autostart() || !slices.Equal(c.Commandline(), []string{"skein-gui", "--minimized"}) {
		t.Fatalf("portal call %s autostart=%v commandline=%q, want RequestBackground, true, [skein-gui --minimized]", c.Method, c.Autostart(), c.Commandline())
	}
	if tok, _ := c.Options["handle_token"].Value().(string); tok == "" {
		t.Errorf("no handle_token in %v", c.Options)
	}
	h.eventually("checkbox on", func() string {
		if !h.a.settings.autostartOn || !h.a.settings.autostart.Checked || h.a.settings.autostart.Disabled() {
			return "the answer did not arrive"
		}
		return ""
	})
	h.ui(func() {
		if !h.a.startAtLoginEnabled() || !h.fa.Preferences().Bool(prefStartAtLogin) {
			t.Error("the portal's answer is not remembered")
		}
	})
	if _, err := os.Stat(autostartFile(h.a.opts.AutostartDir)); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("an autostart file was written inside the sandbox: %v", err)
	}

	h.ui(func() { test.Tap(h.a.settings.autostart) })
	if c := portal.WaitCalls(t, 2, 10*time.Second)[1]; c.Method != "RequestBackground" || c.Autostart() {
		t.Fatalf("second call %s autostart=%v, want RequestBackground false", c.Method, c.Autostart())
	}
	h.eventually("checkbox off", func() string {
		if h.a.settings.autostartOn || h.a.settings.autostart.Disabled() {
			return "still on"
		}
		return ""
	})

	portal.Deny(true)
	h.ui(func() { test.Tap(h.a.settings.autostart) })
	portal.WaitCalls(t, 3, 10*time.Second)
	h.eventually("refusal shown", func() string {
		if h.a.settings.autostartOn || h.a.settings.autostart.Checked {
			return "the box is ticked after a refusal"
		}
		return h.expect("start at login: " + errPortalDenied.Error())
	})
}

// In the sandbox "Open folder" hands the OpenURI portal a descriptor: of the received file from
// its notification (the file manager shows it selected in its folder), of the folder itself
// from the Files tab. No file:// URL goes to the portal or to xdg-open.
func TestOpenFolderThroughPortal(t *testing.T) {
	portal, _ := sandboxed(t)
	h := &harness{t: t, be: ipctest.NewBackend(filesTailnet(), ipc.Prefs{})}
	h.sock, _ = ipctest.Serve(t, h.be, ipc.ServerOptions{})
	var opened []string
	h.before = func(a *App) {
		a.openURI = func(u *url.URL) error { opened = append(opened, u.String()); return nil }
	}
	h.start()
	h.waitConnected()
	data := pattern(10 << 10)
	h.be.AddFile("report.pdf", "air", data)
	saved := filepath.Join(h.downloads, "report.pdf")
	h.waitFile(saved, data)
	h.waitNotices(1, "report.pdf from air") // it follows the file (and the inbox's delete)
	n := h.sentNotices()
	if len(n) != 1 || n[0].open == nil {
		t.Fatalf("notifications %+v", n)
	}
	n[0].open()
	c := portal.WaitCalls(t, 1, 10*time.Second)[0]
	if c.Method != "OpenDirectory" || c.Path != saved || c.FDFlags&unix.O_PATH == 0 {
		t.Errorf("portal call %s of %q (flags %#x), want OpenDirectory of %s with an O_PATH descriptor", c.Method, c.Path, c.FDFlags, saved)
	}
	h.ui(func() { h.a.openFolder(h.downloads) })
	c = portal.WaitCalls(t, 2, 10*time.Second)[1]
	if c.Method != "OpenFile" || c.Path != h.downloads {
		t.Errorf("portal call %s of %q, want OpenFile of the folder %s", c.Method, c.Path, h.downloads)
	}
	// The file was moved away: its folder opens instead.
	os.Remove(saved)
	n[0].open()
	if c = portal.WaitCalls(t, 3, 10*time.Second)[2]; c.Method != "OpenFile" || c.Path != h.downloads {
		t.Errorf("after the file moved: %s of %q, want OpenFile of %s", c.Method, c.Path, h.downloads)
	}
	h.ui(func() {
		if len(opened) > 0 {
			t.Errorf("file:// URLs opened in the sandbox: %q", opened)
		}
	})
	for _, c := range portal.Calls() {
		if c.Method == "OpenURI" {
			t.Errorf("OpenURI called with %q", c.URI)
		}
	}
}

// Without a portal to answer, "Open folder" says why it failed.
func TestOpenFolderPortalMissing(t *testing.T) {
	addr := portaltest.StartBus(t)
	t.Setenv("DBUS_SESSION_BUS_ADDRESS", addr)
	t.Setenv(PortalEnv, "1")
	h := newHarness(t, running(), ipc.Prefs{})
	dir := t.TempDir()
	h.ui(func() { h.a.openFolder(dir) })
	want := "cannot open " + tildePath(dir) + ": "
	h.eventually("error shown", func() string {
		for _, text := range h.look().texts {
			if strings.HasPrefix(text, want) {
				return ""
			}
		}
		return "no " + want
	})
}

// A second instance finds the first on the session bus: with no files it activates it, with
// files (`skein-gui --send`) it opens them there; the first owns the app ID until it closes.
func TestSingleInstanceOverDBus(t *testing.T) {
	addr := portaltest.StartBus(t)
	t.Setenv("DBUS_SESSION_BUS_ADDRESS", addr)
	first, err := ClaimInstance("")
	if err != nil {
		t.Fatal(err)
	}
	defer first.Close()
	if first.bus == nil {
		t.Fatal("the first instance did not claim the bus name")
	}
	type got struct {
		what  string
		paths []string
	}
	reqs := make(chan got, 8)
	go first.ServeHandlers(Handlers{
		Show: func() { reqs <- got{what: "show"} },
		Send: func(p []string) { reqs <- got{"send", p} },
		Quit: func() { reqs <- got{what: "quit"} },
	})
	next := func() got {
		t.Helper()
		select {
		case g := <-reqs:
			return g
		case <-time.After(5 * time.Second):
			t.Fatal("the first instance was not asked")
		}
		return got{}
	}
	if _, err := ClaimInstance(""); err != ErrRunning {
		t.Fatalf("second instance: %v, want ErrRunning", err)
	}
	if g := next(); g.what != "show" {
		t.Errorf("first instance got %+v, want show", g)
	}
	files := []string{"/home/ann/a file.pdf", "/home/ann/Ünïcode #1?.txt", "/run/user/1000/doc/1a2b3c/b\nc.txt"}
	if _, err := ClaimInstance("", files...); err != ErrRunning {
		t.Fatalf("second instance with files: %v, want ErrRunning", err)
	}
	if g := next(); g.what != "send" || !slices.Equal(g.paths, files) {
		t.Errorf("first instance got %+v, want send %q", g, files)
	}

	// What the desktop calls directly: Open with URIs, ActivateAction; bad input is refused.
	conn, err := dbus.Connect(addr)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	obj := conn.Object(AppID, appPath)
	call := func(method string, args ...any) error {
		return obj.CallWithContext(context.Background(), appIface+"."+method, 0, args...).Err
	}
	none := map[string]dbus.Variant{}
	if err := call("Open", []string{"file:///tmp/x%20y.txt", "file://localhost/tmp/z"}, none); err != nil {
		t.Fatal(err)
	}
	if g := next(); !slices.Equal(g.paths, []string{"/tmp/x y.txt", "/tmp/z"}) {
		t.Errorf("Open: %+v", g)
	}
	if err := call("ActivateAction", "quit", []dbus.Variant{}, none); err != nil {
		t.Fatal(err)
	}
	if g := next(); g.what != "quit" {
		t.Errorf("ActivateAction quit: %+v", g)
	}
	for _, bad := range [][]string{{"https://example.com/x"}, {"file://otherhost/x"}, {"file:relative"}, {"file:///tmp/a?b=1"}, {"::"}} {
		if err := call("Open", bad, none); err == nil {
			t.Errorf("Open(%q) accepted", bad)
		}
	}
	if err := call("ActivateAction", "format-disk", []dbus.Variant{}, none); err == nil {
		t.Error("an unknown action was accepted")
	}
	select {
	case g := <-reqs:
		t.Errorf("a refused call reached the app: %+v", g)
	case <-time.After(100 * time.Millisecond):
	}
	var xml string
	if err := obj.Call("org.freedesktop.DBus.Introspectable.Introspect", 0).Store(&xml); err != nil || !strings.Contains(xml, `<interface name="org.freedesktop.Application">`) || !strings.Contains(xml, `name="ActivateAction"`) {
		t.Errorf("introspection: %v\n%s", err, xml)
	}

	// Once the first instance closes, the name is free for the next one.
	first.Close()
	again, err := ClaimInstance("")
	if err != nil {
		t.Fatalf("after the first closed: %v", err)
	}
	again.Close()
}

// Without a session bus the instances still meet, on the socket.
func TestSingleInstanceWithoutBus(t *testing.T) {
	t.Setenv("DBUS_SESSION_BUS_ADDRESS", "unix:path="+filepath.Join(t.TempDir(), "no-bus"))
	t.Setenv("XDG_RUNTIME_DIR", t.TempDir())
	first, err := ClaimInstance("")
	if err != nil {
		t.Fatal(err)
	}
	defer first.Close()
	if first.bus != nil || first.path != InstanceSocket() {
		t.Fatalf("instance %+v, want the socket %s", first, InstanceSocket())
	}
	shown := make(chan struct{}, 1)
	go first.Serve(func() { shown <- struct{}{} })
	if _, err := ClaimInstance(""); err != ErrRunning {
		t.Fatalf("second: %v, want ErrRunning", err)
	}
	select {
	case <-shown:
	case <-time.After(5 * time.Second):
		t.Fatal("not shown")
	}
}

// The /tmp fallback directory must be this user's own (hole 8): one made first by someone
// else, open to others, or a symbolic link is refused, and nothing listens in it.
func TestInstanceSocketDirOwnerChecked(t *testing.T) {
	t.Setenv("DBUS_SESSION_BUS_ADDRESS", "unix:path="+filepath.Join(t.TempDir(), "no-bus"))
	t.Setenv("XDG_RUNTIME_DIR", "")
	tmp := t.TempDir()
	t.Setenv("TMPDIR", tmp)
	dir := filepath.Join(tmp, fmt.Sprintf("skein-gui-%d", os.Getuid()))

	// Open to everyone.
	if err := os.Mkdir(dir, 0o777); err != nil {
		t.Fatal(err)
	}
	os.Chmod(dir, 0o777)
	if in, err := ClaimInstance(""); err == nil {
		in.Close()
		t.Fatal("claimed a socket in a world-writable directory")
	}
	// Someone else's (when we can make it so).
	if os.Getuid() == 0 {
		os.Chmod(dir, 0o700)
		if err := os.Chown(dir, 65534, 65534); err != nil {
			t.Fatal(err)
		}
		if in, err := ClaimInstance(""); err == nil {
			in.Close()
			t.Fatal("claimed a socket in another user's directory")
		}
	}
	// A symbolic link to a directory of ours.
	os.RemoveAll(dir)
	target := t.TempDir()
	if err := os.Symlink(target, dir); err != nil {
		t.Fatal(err)
	}
	if in, err := ClaimInstance(""); err == nil {
		in.Close()
		t.Fatal("claimed a socket through a symbolic link")
	}
	if _, err := os.Stat(filepath.Join(target, "skein-gui.sock")); err == nil {
		t.Error("a socket was made through the link")
	}
	// Made by us: fine.
	os.Remove(dir)
	in, err := ClaimInstance("")
	if err != nil {
		t.Fatal(err)
	}
	in.Close()
}
