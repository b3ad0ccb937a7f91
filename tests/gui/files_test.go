package gui_test

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/godbus/dbus/v5"

	"github.com/skeinvpn/skein/internal/lab"
	"github.com/skeinvpn/skein/ipc"
	"github.com/skeinvpn/skein/ipc/ipctest"
)

// notifyCall is one org.freedesktop.Notifications.Notify call.
type notifyCall struct {
	ID      uint32
	AppName string
	Icon    string
	Summary string
	Body    string
	Actions []string
	Hints   map[string]dbus.Variant
}

// notificationServer is a stand-in notification daemon on a test's session bus: it owns
// org.freedesktop.Notifications, records every Notify, and can report a click on an action.
type notificationServer struct {
	conn  *dbus.Conn
	mu    sync.Mutex
	calls []notifyCall
}

const (
	notifyPath  = dbus.ObjectPath("/org/freedesktop/Notifications")
	notifyIface = "org.freedesktop.Notifications"
)

// Notify records the call and returns its ID (1, 2, …).
func (s *notificationServer) Notify(appName string, replacesID uint32, icon, summary, body string,
	actions []string, hints map[string]dbus.Variant, timeout int32) (uint32, *dbus.Error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	id := uint32(len(s.calls) + 1)
	s.calls = append(s.calls, notifyCall{ID: id, AppName: appName, Icon: icon, Summary: summary, Body: body, Actions: actions, Hints: hints})
	return id, nil
}

// GetCapabilities says what this server shows: bodies and action buttons.
func (s *notificationServer) GetCapabilities() ([]string, *dbus.Error) {
	return []string{"body", "actions"}, nil
}

// GetServerInformation names the stand-in.
func (s *notificationServer) GetServerInformation() (name, vendor, version, specVersion string, err *dbus.Error) {
	return "skein-test-notifications", "skein tests", "1.0", "1.2", nil
}

// CloseNotification is accepted and ignored.
func (s *notificationServer) CloseNotification(id uint32) *dbus.Error { return nil }

func (s *notificationServer) recorded() []notifyCall {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone(s.calls)
}

// click reports that the user chose action key on notification id.
func (s *notificationServer) click(id uint32, key string) error {
	return s.conn.Emit(notifyPath, notifyIface+".ActionInvoked", id, key)
}

func startNotificationServer(t testing.TB, busAddr string) *notificationServer {
	t.Helper()
	conn, err := dbus.Connect(busAddr)
	if err != nil {
		t.Fatalf("connecting to the session bus: %v", err)
	}
	t.Cleanup(func() { conn.Close() })
	s := &notificationServer{conn: conn}
	if err := conn.Export(s, notifyPath, notifyIface); err != nil {
		t.Fatal(err)
	}
	reply, err := conn.RequestName(notifyIface, dbus.NameFlagDoNotQueue)
	if err != nil || reply != dbus.RequestNameReplyPrimaryOwner {
		t.Fatalf("owning %s: %v (reply %v)", notifyIface, err, reply)
	}
	return s
}

// TestReceivedFileWithFakeHelper: a file arrives in the (fake) helper's inbox while the app
// runs hidden in the tray. The app saves it in the Downloads folder named by the desktop's
// user-dirs.dirs, empties the inbox, and sends exactly one notification naming the file and
// the sender; its "Open folder" action opens that folder with xdg-open.
func TestReceivedFileWithFakeHelper(t *testing.T) {
	be := ipctest.NewBackend(bigTailnet(3), ipc.Prefs{})
	sock, _ := ipctest.Serve(t, be, ipc.ServerOptions{})
	d := newDesktop(t)

	// Downloads is ~/Incoming on this desktop.
	cfg := filepath.Join(d.home, ".config")
	if err := os.MkdirAll(cfg, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(cfg, "user-dirs.dirs"), []byte("XDG_DESKTOP_DIR=\"$HOME/Desktop\"\nXDG_DOWNLOAD_DIR=\"$HOME/Incoming\"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	// xdg-open records what it is asked to open.
	bin := t.TempDir()
	opened := filepath.Join(bin, "opened")
	script := "#!/bin/sh\nprintf '%s\\n' \"$@\" >> " + opened + "\n"
	if err := os.WriteFile(filepath.Join(bin, "xdg-open"), []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
	d.extraEnv = append(d.extraEnv, "PATH="+bin+":"+os.Getenv("PATH"))

	ns := startNotificationServer(t, d.busAddr)
	d.startGUI(t, guiBin, "--minimized", "--socket", sock)
	d.watcher.waitItem(t, 20*time.Second)
	lab.Eventually(t, 10*time.Second, func() error {
		if be.Watchers() == 0 {
			return fmt.Errorf("the app does not watch the helper yet")
		}
		return nil
	})

	data := bytes.Repeat([]byte("%PDF-1.7 skein test "), 20000)
	be.AddFile("report.pdf", "air", data)

	path := filepath.Join(d.home, "Incoming", "report.pdf")
	lab.Eventually(t, 15*time.Second, func() error {
		got, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		if !bytes.Equal(got, data) {
			return fmt.Errorf("%s has %d bytes, want %d", path, len(got), len(data))
		}
		if in := be.Inbox(); len(in) > 0 {
			return fmt.Errorf("inbox still holds %v", in)
		}
		return nil
	})
	fi, err := os.Lstat(path)
	if err != nil {
		t.Fatal(err)
	}
	if !fi.Mode().IsRegular() {
		t.Errorf("%s is %v, want a regular file", path, fi.Mode())
	}
	if uid := fi.Sys().(*syscall.Stat_t).Uid; int(uid) != os.Getuid() {
		t.Errorf("%s is owned by uid %d, want %d", path, uid, os.Getuid())
	}

	// Exactly one notification: wait for it, then make sure no second one follows.
	lab.Eventually(t, 10*time.Second, func() error {
		if len(ns.recorded()) == 0 {
			return fmt.Errorf("no Notify call")
		}
		return nil
	})
	time.Sleep(time.Second)
	calls := ns.recorded()
	if len(calls) != 1 {
		t.Fatalf("%d Notify calls, want 1: %+v", len(calls), calls)
	}
	c := calls[0]
	text := c.Summary + "\n" + c.Body
	for _, want := range []string{"report.pdf", "air"} {
		if !strings.Contains(text, want) {
			t.Errorf("notification %q / %q lacks %q", c.Summary, c.Body, want)
		}
	}
	if c.AppName != "Skein" || !slices.Contains(c.Actions, "open-folder") {
		t.Errorf("notification from %q with actions %q, want Skein with open-folder", c.AppName, c.Actions)
	}
	t.Logf("notification: %q / %q, actions %q", c.Summary, c.Body, c.Actions)

	// The user clicks "Open folder".
	if err := ns.click(c.ID, "open-folder"); err != nil {
		t.Fatal(err)
	}
	want := "file://" + filepath.Join(d.home, "Incoming")
	lab.Eventually(t, 10*time.Second, func() error {
		b, err := os.ReadFile(opened)
		if err != nil {
			return fmt.Errorf("xdg-open not run: %v", err)
		}
		if got := strings.TrimSpace(string(b)); got != want {
			return fmt.Errorf("xdg-open %q, want %q", got, want)
		}
		return nil
	})

	// `skein-gui --send FILE` (the desktop file's %F) hands the file to the running app, which
	// opens its window with the peer picker; the screenshot is an artifact of this test.
	be.SetFileTargets([]ipc.FileTarget{
		{StableID: "stable-0001", Name: "peer-001", Online: true},
		{StableID: "stable-0002", Name: "peer-002", Online: true},
		{StableID: "stable-0000", Name: "peer-000"},
	})
	doc := filepath.Join(t.TempDir(), "notes.txt")
	if err := os.WriteFile(doc, []byte("notes"), 0o644); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(guiBin, "--send", doc)
	cmd.Env = d.env()
	out, err := cmd.CombinedOutput()
	if err != nil || !strings.Contains(string(out), "handed it 1 file(s) to send") {
		t.Fatalf("skein-gui --send: %v\n%s", err, out)
	}
	time.Sleep(1500 * time.Millisecond) // the window and the picker paint
	shot := d.screenshot(t)
	shotPath := filepath.Join(t.ArtifactDir(), "send-picker.png")
	writePNG(t, shotPath, shot)
	t.Logf("screenshot: %s (%v)", shotPath, shot.Bounds().Size())
}
