package ui

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/skeinvpn/skein/ipc"
	"github.com/skeinvpn/skein/ipc/ipctest"
)

// receiverEnv is a receiver against ipctest's helper, with its own folder and notifications.
type receiverEnv struct {
	t         *testing.T
	be        *ipctest.Backend
	sock      string
	lock      string
	prefs     string
	downloads string
	app       atomic.Bool // what the receiver sees of the app
	mu        sync.Mutex
	notes     []string
	cancel    context.CancelFunc
	done      chan struct{}
}

func newReceiverEnv(t *testing.T) *receiverEnv {
	e := &receiverEnv{t: t, be: ipctest.NewBackend(running(), ipc.Prefs{WantRunning: true}), done: make(chan struct{})}
	e.sock, _ = ipctest.Serve(t, e.be, ipc.ServerOptions{})
	dir := t.TempDir()
	e.lock, e.prefs, e.downloads = filepath.Join(dir, "receive.lock"), filepath.Join(dir, "preferences.json"), filepath.Join(dir, "Downloads")
	ctx, cancel := context.WithCancel(context.Background())
	e.cancel = cancel
	go func() {
		defer close(e.done)
		RunReceiver(ctx, ReceiverOptions{Socket: e.sock, LockPath: e.lock, PrefsFile: e.prefs, DownloadsDir: e.downloads,
			Logf: t.Logf, appRunning: e.app.Load, poll: 20 * time.Millisecond,
			notify: func(summary, body string, action func()) error {
				e.mu.Lock()
				defer e.mu.Unlock()
				e.notes = append(e.notes, summary+": "+body)
				return nil
			}})
	}()
	t.Cleanup(func() { cancel(); <-e.done })
	return e
}

func (e *receiverEnv) notices() []string {
	e.mu.Lock()
	defer e.mu.Unlock()
	return slices.Clone(e.notes)
}

func (e *receiverEnv) setPrefs(m map[string]any) {
	b, _ := json.Marshal(m)
	if err := os.WriteFile(e.prefs, b, 0o600); err != nil {
		e.t.Fatal(err)
	}
}

func waitFor(t *testing.T, what string, cond func() error) {
	t.Helper()
	var err error
	for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(10 * time.Millisecond) {
		if err = cond(); err == nil {
			return
		}
	}
	t.Fatalf("%s: %v", what, err)
}

func filesIn(dir string) []string {
	ents, _ := os.ReadDir(dir)
	var out []string
	for _, e := range ents {
		out = append(out, e.Name())
	}
	return out
}

// While the app is closed the receiver saves arrivals and tells about them; when the app
// comes it steps aside, the app takes the lock and every file after; no file is taken twice.
func TestReceiverHandsOverToApp(t *testing.T) {
	e := newReceiverEnv(t)
	e.be.AddFile("early.txt", "beta", []byte("arrived while the app was closed"))
	waitFor(t, "saved by the receiver", func() error {
		if got := filesIn(e.downloads); !slices.Equal(got, []string{"early.txt"}) {
			return fmt.Errorf("downloads %v", got)
		}
		if len(e.be.Inbox()) != 0 {
			return fmt.Errorf("inbox %v", e.be.Inbox())
		}
		if n := e.notices(); len(n) != 1 || n[0] != "early.txt from beta: Saved to "+tildePath(filepath.Join(e.downloads, "early.txt")) {
			return fmt.Errorf("notices %q", n)
		}
		return nil
	})

	// The app starts: the receiver sees it and lets go of the lock, which the app then holds.
	e.app.Store(true)
	h := &harness{t: t, be: e.be, sock: e.sock}
	h.options = func(o *Options) { o.ReceiveLock = e.lock }
	h.start()
	waitFor(t, "the app holds the lock", func() error {
		var can bool
		h.ui(func() { can = h.a.canTake })
		if !can {
			return fmt.Errorf("the app cannot take files yet")
		}
		return nil
	})
	for i := range 5 {
		e.be.AddFile(fmt.Sprintf("later-%d.txt", i), "beta", []byte("while the app runs"))
	}
	waitFor(t, "saved by the app", func() error {
		if got := filesIn(h.downloads); len(got) != 5 {
			return fmt.Errorf("app's downloads %v", got)
		}
		if len(e.be.Inbox()) != 0 {
			return fmt.Errorf("inbox %v", e.be.Inbox())
		}
		return nil
	})
	if got := filesIn(e.downloads); !slices.Equal(got, []string{"early.txt"}) {
		t.Errorf("the receiver took files while the app ran: %v", got)
	}
	if n := len(e.notices()); n != 1 {
		t.Errorf("the receiver notified %d times", n)
	}
	// The lock is the app's: nothing else gets it.
	if l, err := tryLock(e.lock); err == nil {
		l.release()
		t.Error("the lock was free while the app ran")
	}
}

// "Ask before saving": the receiver leaves files for the app and says, once, that they wait;
// switched off in the app, it does nothing.
func TestReceiverAskAndOff(t *testing.T) {
	e := newReceiverEnv(t)
	e.setPrefs(map[string]any{prefRecvMode: recvAsk})
	e.be.AddFile("question.txt", "beta", []byte("?"))
	waitFor(t, "told", func() error {
		if n := e.notices(); len(n) != 1 || n[0] != "question.txt from beta: It waits for you: open Skein to accept or decline it." {
			return fmt.Errorf("notices %q", n)
		}
		return nil
	})
	time.Sleep(200 * time.Millisecond)
	if len(e.be.Inbox()) != 1 || len(filesIn(e.downloads)) != 0 || len(e.notices()) != 1 {
		t.Errorf("ask mode: inbox %v, downloads %v, notices %q", e.be.Inbox(), filesIn(e.downloads), e.notices())
	}
	e.setPrefs(map[string]any{prefReceiveBackground: false})
	e.be.AddFile("ignored.txt", "beta", []byte("x"))
	time.Sleep(300 * time.Millisecond)
	if len(filesIn(e.downloads)) != 0 {
		t.Errorf("switched off, the receiver saved %v", filesIn(e.downloads))
	}
	// A folder chosen in the app.
	folder := filepath.Join(t.TempDir(), "chosen")
	os.Mkdir(folder, 0o700)
	e.setPrefs(map[string]any{prefRecvMode: recvFolder, prefRecvFolder: folder})
	waitFor(t, "into the chosen folder", func() error {
		if got := filesIn(folder); len(got) != 2 {
			return fmt.Errorf("folder %v", got)
		}
		return nil
	})
}

func TestReceiverPrefsAndLock(t *testing.T) {
	dir := t.TempDir()
	if p := readReceiverPrefs(filepath.Join(dir, "missing.json")); !p.on || p.mode != recvDownloads {
		t.Errorf("defaults %+v", p)
	}
	bad := filepath.Join(dir, "bad.json")
	os.WriteFile(bad, []byte(`{"files.receiveMode": "folder"}`), 0o600) // a folder mode without a folder
	if p := readReceiverPrefs(bad); p.mode != recvDownloads {
		t.Errorf("folder mode without a folder: %+v", p)
	}
	lock := filepath.Join(dir, "l")
	a, err := tryLock(lock)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := tryLock(lock); err != errLocked {
		t.Errorf("second lock: %v", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	if _, err := waitLock(ctx, lock, 10*time.Millisecond); err == nil {
		t.Error("waitLock got a held lock")
	}
	a.release()
	b, err := tryLock(lock)
	if err != nil {
		t.Fatalf("after release: %v", err)
	}
	b.release()
	t.Setenv("XDG_RUNTIME_DIR", "/run/user/1000")
	t.Setenv("FLATPAK_ID", "io.github.skeinvpn.Skein")
	if got := ReceiveLockPath(); got != "/run/user/1000/app/io.github.skeinvpn.Skein/skein-receive.lock" {
		t.Errorf("lock path in a Flatpak: %s", got)
	}
}
