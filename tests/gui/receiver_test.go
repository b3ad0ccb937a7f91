package gui_test

import (
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/godbus/dbus/v5"

	"github.com/skeinvpn/skein/internal/lab"
	"github.com/skeinvpn/skein/ipc"
	"github.com/skeinvpn/skein/ipc/ipctest"
)

// systemdUser is a stand-in for the user's service manager (org.freedesktop.systemd1 on the
// session bus): it records the calls the app makes to run its receiver.
type systemdUser struct {
	mu    sync.Mutex
	calls []string
}

func (s *systemdUser) record(c string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.calls = append(s.calls, c)
}

func (s *systemdUser) recorded() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone(s.calls)
}

// EnableUnitFiles enables unit files (recorded).
func (s *systemdUser) EnableUnitFiles(files []string, runtime, force bool) (bool, [][]any, *dbus.Error) {
	s.record("EnableUnitFiles " + strings.Join(files, ","))
	return true, [][]any{}, nil
}

// StartUnit starts a unit (recorded).
func (s *systemdUser) StartUnit(name, mode string) (dbus.ObjectPath, *dbus.Error) {
	s.record("StartUnit " + name + " " + mode)
	return "/org/freedesktop/systemd1/job/1", nil
}

// StopUnit stops a unit (recorded).
func (s *systemdUser) StopUnit(name, mode string) (dbus.ObjectPath, *dbus.Error) {
	s.record("StopUnit " + name + " " + mode)
	return "/org/freedesktop/systemd1/job/2", nil
}

// DisableUnitFiles disables unit files (recorded).
func (s *systemdUser) DisableUnitFiles(files []string, runtime bool) ([][]any, *dbus.Error) {
	s.record("DisableUnitFiles " + strings.Join(files, ","))
	return [][]any{}, nil
}

func startSystemdUser(t testing.TB, busAddr string) *systemdUser {
	t.Helper()
	conn, err := dbus.Connect(busAddr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	s := &systemdUser{}
	if err := conn.Export(s, "/org/freedesktop/systemd1", "org.freedesktop.systemd1.Manager"); err != nil {
		t.Fatal(err)
	}
	if reply, err := conn.RequestName("org.freedesktop.systemd1", dbus.NameFlagDoNotQueue); err != nil || reply != dbus.RequestNameReplyPrimaryOwner {
		t.Fatalf("owning org.freedesktop.systemd1: %v %v", err, reply)
	}
	return s
}

// TestReceiverWhileAppClosed: files sent while the app is closed are saved by the receiver
// (skein-gui --receive, the systemd user unit's command) into the Downloads folder, each with
// a notification; when the app starts, the receiver steps aside and the app takes the files
// that come next; no file is taken twice (one copy each, no "name (1)"). The app, at start,
// enables and starts the receiver's user unit through the service manager.
func TestReceiverWhileAppClosed(t *testing.T) {
	be := ipctest.NewBackend(bigTailnet(3), ipc.Prefs{WantRunning: true})
	sock, _ := ipctest.Serve(t, be, ipc.ServerOptions{})
	d := newDesktop(t)
	notes := startNotificationServer(t, d.busAddr)
	sd := startSystemdUser(t, d.busAddr)
	downloads := filepath.Join(d.home, "Downloads")

	recv := d.startGUI(t, guiBin, "--receive", "--verbose", "--socket", sock)
	lab.Eventually(t, 20*time.Second, func() error {
		if !strings.Contains(recv.output(), "receiver: taking received files") {
			return fmt.Errorf("the receiver is not taking files:\n%s", recv.output())
		}
		return nil
	})
	be.AddFile("while-closed.txt", "peer-001", []byte("sent while no app ran"))
	lab.Eventually(t, 20*time.Second, func() error {
		if b, err := os.ReadFile(filepath.Join(downloads, "while-closed.txt")); err != nil || string(b) != "sent while no app ran" {
			return fmt.Errorf("not saved: %v", err)
		}
		if len(be.Inbox()) != 0 {
			return fmt.Errorf("inbox %v", be.Inbox())
		}
		for _, c := range notes.recorded() {
			if c.Summary == "while-closed.txt from peer-001" {
				return nil
			}
		}
		return fmt.Errorf("no notification: %+v", notes.recorded())
	})

	app := d.startGUI(t, guiBin, "--minimized", "--verbose", "--socket", sock)
	lab.Eventually(t, 20*time.Second, func() error {
		if !strings.Contains(recv.output(), "receiver: the app runs") || !strings.Contains(app.output(), "taking received files") {
			return fmt.Errorf("no handover yet:\nreceiver:\n%s\napp:\n%s", recv.output(), app.output())
		}
		return nil
	})
	for i := range 5 {
		be.AddFile(fmt.Sprintf("with-app-%d.txt", i), "peer-001", []byte("sent while the app ran"))
		time.Sleep(50 * time.Millisecond)
	}
	lab.Eventually(t, 30*time.Second, func() error {
		ents, _ := os.ReadDir(downloads)
		if len(ents) != 6 || len(be.Inbox()) != 0 {
			return fmt.Errorf("downloads %d files, inbox %v", len(ents), be.Inbox())
		}
		return nil
	})
	ents, _ := os.ReadDir(downloads)
	for _, e := range ents {
		if strings.Contains(e.Name(), " (") {
			t.Errorf("a file was taken twice: %s", e.Name())
		}
	}
	if strings.Contains(recv.output(), "saved with-app") {
		t.Errorf("the receiver took files while the app ran:\n%s", recv.output())
	}
	// The app put its receiver in place with the user's service manager.
	lab.Eventually(t, 20*time.Second, func() error {
		want := []string{"EnableUnitFiles skein-receive.service", "StartUnit skein-receive.service replace"}
		if got := sd.recorded(); !slices.Equal(got, want) {
			return fmt.Errorf("service manager calls %q, want %q", got, want)
		}
		return nil
	})

	// The app quits: the receiver takes over again.
	app.stop()
	lab.Eventually(t, 20*time.Second, func() error {
		if strings.Count(recv.output(), "receiver: taking received files") < 2 {
			return fmt.Errorf("the receiver did not take over:\n%s", recv.output())
		}
		return nil
	})
	be.AddFile("after-quit.txt", "peer-001", []byte("the app quit"))
	lab.Eventually(t, 20*time.Second, func() error {
		if _, err := os.Stat(filepath.Join(downloads, "after-quit.txt")); err != nil {
			return err
		}
		return nil
	})
}
