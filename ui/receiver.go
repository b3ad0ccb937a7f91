package ui

import (
	"context"
	"encoding/json"
	"errors"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"time"

	"fyne.io/fyne/v2/lang"
	"github.com/godbus/dbus/v5"

	"github.com/skeinvpn/skein/ipc"
)

// The receiver: `skein-gui --receive`, a small per-user service (a systemd user unit in the
// packages, the Background portal's autostart in the Flatpak) that saves files arriving while
// the app is closed into the folder the app's "Received files" setting names, and notifies. It
// has no window and needs no display. It follows the app's settings (read from the app's
// preferences file); in "Ask before saving" mode it leaves files for the app and says they wait.
// While the app runs (its name on the session bus, or its instance socket) the receiver steps
// aside; see receivelock.go for how the two never take the same file.

// prefReceiveBackground switches the receiver on or off (default on).
const prefReceiveBackground = "files.receiveWhileClosed"

// ReceiverOptions configure RunReceiver.
type ReceiverOptions struct {
	// Socket is skeind's socket ("" = the default).
	Socket string
	// LockPath is the lock shared with the app ("" = ReceiveLockPath()).
	LockPath string
	// PrefsFile is the app's preferences ("" = Fyne's file for the app ID).
	PrefsFile string
	// DownloadsDir overrides the Downloads folder (tests).
	DownloadsDir string
	Logf         func(format string, args ...any)

	// appRunning and notify replace the checks for the app and the desktop notification (tests).
	appRunning func() bool
	notify     func(summary, body string, action func()) error
	// poll is how often the receiver looks for the app (0 = 1 s).
	poll time.Duration
}

// appPrefsFile is where Fyne keeps the app's preferences.
func appPrefsFile() string {
	dir, err := os.UserConfigDir()
	if err != nil {
		return ""
	}
	return filepath.Join(dir, "fyne", AppID, "preferences.json")
}

// ChosenLanguageFromFile is ChosenLanguage for the receiver, which has no Fyne app: it reads
// the app's preferences file.
func ChosenLanguageFromFile() string {
	b, err := os.ReadFile(appPrefsFile())
	if err != nil {
		return ""
	}
	var m map[string]any
	if json.Unmarshal(b, &m) != nil {
		return ""
	}
	tag, _ := m[prefLanguage].(string)
	for _, l := range Languages {
		if l.Tag == tag {
			return tag
		}
	}
	return ""
}

// receiverPrefs are the app's settings the receiver follows.
type receiverPrefs struct {
	on     bool
	mode   string
	folder string
}

func readReceiverPrefs(path string) receiverPrefs {
	p := receiverPrefs{on: true, mode: recvDownloads}
	b, err := os.ReadFile(path)
	if err != nil {
		return p
	}
	var m map[string]any
	if json.Unmarshal(b, &m) != nil {
		return p
	}
	if v, ok := m[prefReceiveBackground].(bool); ok {
		p.on = v
	}
	if v, ok := m[prefRecvMode].(string); ok {
		p.mode = v
	}
	if v, ok := m[prefRecvFolder].(string); ok {
		p.folder = v
	}
	if p.mode == recvFolder && p.folder == "" || p.mode != recvFolder && p.mode != recvAsk {
		p.mode = recvDownloads
	}
	return p
}

// appRunningNow tells whether the app runs for this user: it owns its name on the session
// bus, or (without a bus) answers on its instance socket.
func appRunningNow() bool {
	if conn, err := dbus.SessionBus(); err == nil {
		return hasOwner(conn, AppID)
	}
	c, err := net.DialTimeout("unix", InstanceSocket(), time.Second)
	if err != nil {
		return false
	}
	c.Close()
	return true
}

type receiver struct {
	opts   ReceiverOptions
	client *ipc.Client
	notes  *desktopNotifier
	// told are the files whose arrival was told ("ask" mode) or whose saving failed, so that
	// each is told once, not on every look at the inbox.
	told map[string]bool
}

// RunReceiver runs the receiver until ctx ends.
func RunReceiver(ctx context.Context, opts ReceiverOptions) error {
	if opts.Logf == nil {
		opts.Logf = func(string, ...any) {}
	}
	if opts.LockPath == "" {
		opts.LockPath = ReceiveLockPath()
	}
	if opts.PrefsFile == "" {
		opts.PrefsFile = appPrefsFile()
	}
	if opts.appRunning == nil {
		opts.appRunning = appRunningNow
	}
	if opts.poll == 0 {
		opts.poll = time.Second
	}
	r := &receiver{opts: opts, client: ipc.NewClient(opts.Socket), told: map[string]bool{}}
	if opts.notify == nil {
		r.notes = newDesktopNotifier()
		defer r.notes.close()
		opts.notify = r.notes.send
		r.opts.notify = opts.notify
	}
	for ctx.Err() == nil {
		if opts.appRunning() {
			if !sleepCtx(ctx, opts.poll) {
				break
			}
			continue
		}
		lock, err := tryLock(opts.LockPath)
		if err != nil {
			if !errors.Is(err, errLocked) {
				opts.Logf("receiver: %v", err)
			}
			if !sleepCtx(ctx, opts.poll) {
				break
			}
			continue
		}
		opts.Logf("receiver: taking received files")
		r.serve(ctx)
		lock.release()
		opts.Logf("receiver: the app runs; leaving received files to it")
	}
	return nil
}

func sleepCtx(ctx context.Context, d time.Duration) bool {
	select {
	case <-ctx.Done():
		return false
	case <-time.After(d):
		return true
	}
}

// serve takes files until the app appears or ctx ends.
func (r *receiver) serve(ctx context.Context) {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	go func() {
		for sleepCtx(ctx, r.opts.poll) {
			if r.opts.appRunning() {
				cancel()
				return
			}
		}
	}()
	backoff := time.Second
	for ctx.Err() == nil {
		p := readReceiverPrefs(r.opts.PrefsFile)
		if !p.on {
			sleepCtx(ctx, 5*time.Second) // switched off in the app: look again later
			continue
		}
		// A long poll: it answers at once when files wait, else when one arrives.
		files, err := r.client.WaitingFiles(ctx, time.Minute)
		if err != nil {
			if ctx.Err() == nil {
				r.opts.Logf("receiver: %v", err)
				sleepCtx(ctx, backoff)
				backoff = min(2*backoff, 30*time.Second)
			}
			continue
		}
		backoff = time.Second
		took := false
		for _, f := range files {
			if ctx.Err() != nil {
				return
			}
			took = r.handle(ctx, readReceiverPrefs(r.opts.PrefsFile), f) || took
		}
		if !took {
			// Every waiting file was told already (or failed): wait for news, not a busy loop.
			sleepCtx(ctx, 5*time.Second)
		}
	}
}

// handle saves one file (or, in "ask" mode, says it waits); true when it was taken.
func (r *receiver) handle(ctx context.Context, p receiverPrefs, f ipc.WaitingFile) bool {
	from := f.From
	if from == "" {
		from = lang.L("a device")
	}
	if p.mode == recvAsk {
		if !r.told[f.Name] {
			r.told[f.Name] = true
			r.opts.notify(lang.L("{{.Name}} from {{.Peer}}", map[string]any{"Name": f.Name, "Peer": from}),
				lang.L("It waits for you: open Skein to accept or decline it."), startApp)
		}
		return false
	}
	dir := downloadsDir()
	if r.opts.DownloadsDir != "" {
		dir = r.opts.DownloadsDir
	}
	if p.mode == recvFolder {
		dir = p.folder
	} else if err := os.MkdirAll(dir, 0o700); err != nil {
		r.failed(f, from, err)
		return false
	}
	rc, size, err := r.client.OpenFile(ctx, f.Name)
	if err != nil {
		if !isNotFound(err) && ctx.Err() == nil {
			r.failed(f, from, err)
		}
		return false
	}
	path, err := saveInto(dir, f.Name, rc, size, nil)
	rc.Close()
	if err != nil {
		if ctx.Err() == nil {
			r.failed(f, from, err)
		}
		return false
	}
	dctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	derr := r.client.DeleteFile(dctx, f.Name)
	cancel()
	if derr != nil && !isNotFound(derr) {
		r.opts.Logf("receiver: %s saved, but skeind kept its copy: %v", f.Name, derr)
	}
	r.opts.Logf("receiver: saved %s from %s to %s", f.Name, from, path)
	r.opts.notify(lang.L("{{.Name}} from {{.Peer}}", map[string]any{"Name": f.Name, "Peer": from}),
		lang.L("Saved to {{.Path}}", map[string]any{"Path": tildePath(path)}), func() { showOutsideApp(path) })
	return true
}

func (r *receiver) failed(f ipc.WaitingFile, from string, err error) {
	r.opts.Logf("receiver: %s: %v", f.Name, err)
	if r.told[f.Name] {
		return
	}
	r.told[f.Name] = true
	r.opts.notify(lang.L("Could not save {{.Name}} from {{.Peer}}", map[string]any{"Name": f.Name, "Peer": from}), errText(err), startApp)
}

// showOutsideApp shows a saved file in the file manager without the app's window: through the
// OpenURI portal in a sandbox, else xdg-open of its folder.
func showOutsideApp(path string) {
	if usePortals() {
		portalShow(path)
		return
	}
	cmd := exec.Command("xdg-open", filepath.Dir(path))
	if cmd.Start() == nil {
		go cmd.Wait()
	}
}

// startApp opens the app (a notification's action: "open Skein").
func startApp() {
	exe, err := os.Executable()
	if err != nil {
		return
	}
	cmd := exec.Command(exe)
	if cmd.Start() == nil {
		go cmd.Wait()
	}
}
