// Package ui is Skein's desktop app: a Fyne window and a system tray menu that show skeind's
// state live from its watch stream and change it through the ipc client. It talks to skeind only
// through package ipc.
//
// Threading: every field of App below the "UI goroutine" line is touched only on Fyne's UI
// goroutine. IPC calls run on their own goroutines and hand results back with a.do (fyne.Do).
package ui

import (
	"context"
	"errors"
	"net/url"
	"os"
	"sync"
	"time"

	"fyne.io/fyne/v2"
	"fyne.io/fyne/v2/dialog"
	"fyne.io/fyne/v2/driver/desktop"
	"fyne.io/fyne/v2/lang"
	"fyne.io/fyne/v2/theme"
	"fyne.io/fyne/v2/widget"

	"github.com/skeinvpn/skein/assets"
	"github.com/skeinvpn/skein/ipc"
)

// AppID is the app's stable ID (desktop file, D-Bus, preferences).
const AppID = "io.github.skeinvpn.Skein"

// Options configure an App.
type Options struct {
	// Socket is skeind's socket; "" means $SKEIN_SOCKET or ipc.DefaultSocket.
	Socket string
	// Do runs a function on the UI goroutine; nil means fyne.Do. Tests serialise with it.
	Do func(func())
	// Now is the clock for "last seen"; nil means time.Now.
	Now func() time.Time
	// AutostartDir is where "Start at login" writes its entry; "" means
	// $XDG_CONFIG_HOME/autostart (~/.config/autostart).
	AutostartDir string
	// Exec is the command line the autostart entry runs; "" means this executable.
	Exec string
	// TrayTheme picks the tray icon variant: "light" (dark glyphs, for light panels), "dark",
	// or "" to follow the app's theme.
	TrayTheme string
	// NoTrayHost says that no StatusNotifierWatcher is on the session bus: the window then
	// explains that there is no tray and closing it quits.
	NoTrayHost bool
	// ReconnectMax bounds the wait between attempts to reach skeind; 0 means 2 s.
	ReconnectMax time.Duration
	// Logf, when set, logs the watch stream's life (connected, lost, events).
	Logf func(format string, args ...any)
	// DownloadsDir is the Downloads folder for received files; "" means XDG_DOWNLOAD_DIR from
	// user-dirs.dirs, else ~/Downloads.
	DownloadsDir string

	// ReceiveLock is the lock the app and the receiver (skein-gui --receive) take received files
	// under; "" means ReceiveLockPath().
	ReceiveLock string
	// NoReceiver leaves the receiver service alone (tests without a service manager).
	NoReceiver bool
	// WatchTrayHost follows the tray host (StatusNotifierWatcher) on the session bus: one that
	// appears after the app started gets the tray, and closing the window then hides it.
	WatchTrayHost bool

	// notify replaces the desktop notification of received files, alert the others (tests).
	notify noticeFunc
	alert  alertFunc
}

// App is the running desktop app.
type App struct {
	fa     fyne.App
	opts   Options
	client *ipc.Client
	do     func(func())
	now    func() time.Time

	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup
	xferWG sync.WaitGroup // file transfers, so that Stop lets them clean up

	doMu    sync.RWMutex
	stopped bool // under doMu: set by Stop, after which a.do drops UI work

	notifier *desktopNotifier
	openURI  func(*url.URL) error

	// UI goroutine only below.
	v         view
	errAction bool // v.err came from an action of ours (kept until the next action)
	busy      bool // an up/down/login/logout call is in flight
	win       fyne.Window
	root      *fyne.Container
	header    *header
	banner    *errorBanner
	peers     *peerPage
	settings  *settingsPage
	account   *accountPage
	health    *healthBanners
	notifyPg  *notifyPage
	langPg    *languagePage
	noTray    *widget.Label
	tabs      tabsView
	trayMenu  *fyne.Menu
	traySig   string
	trayIcon  fyne.Resource
	// hasTray: the Fyne app can show a tray icon (it is started even without a tray host, so
	// that a host that comes later finds it); trayHost: a tray host is on the bus now.
	hasTray  bool
	trayHost bool
	// trayStarted: the tray menu was handed to Fyne (which then starts the tray).
	trayStarted bool
	trayTitle   string // the tray item's title and tooltip as last computed
	trayTip     string
	// trayTextLive: the tray item is on the bus, so a new title goes out at once.
	trayTextLive bool
	exit         *exitPage
	authURL      string        // the login URL from our own Up call, until Running
	prefsPatches int           // prefs patches sent so far, to tell the latest answer from older ones
	prefsEvents  int           // prefs received on the watch stream so far (newer than any answer sent before)
	lastPatch    chan struct{} // closed when the last patch sent is answered

	// Taildrop (transfer.go).
	files      *filesPage
	recv       *receiveSection
	xfers      []*transfer     // in progress, in the order they started
	hist       []historyEntry  // finished, newest first
	inFlight   map[string]bool // inbox names being saved, asked about or declined
	askQueue   []ipc.WaitingFile
	askDlg     dialog.Dialog // the Accept/Decline dialog on screen
	picker     dialog.Dialog // the "Send to…" dialog on screen
	ticking    bool          // the progress ticker runs
	filesNote  string        // why received files cannot be taken, if so
	recvMode   string        // recvDownloads, recvFolder or recvAsk
	recvFolder string        // recvFolder's folder

	// canTake: the app holds the receive lock, so it may take files from the inbox.
	canTake bool
	// receiverNote says why the receiver does not run, when it cannot.
	receiverNote string

	// Notifications (alerts.go).
	notifyOpts notifySettings
	watched    map[string]bool // StableIDs of watched peers
	alerts     alerter
}

// New builds the app's window and tray on fa; Start connects to skeind.
func New(fa fyne.App, opts Options) *App {
	a := &App{fa: fa, opts: opts, client: ipc.NewClient(opts.Socket), now: opts.Now}
	setHelperSocket(a.client.SocketPath())
	do := opts.Do
	if do == nil {
		do = fyne.Do
	}
	// Background goroutines (IPC calls, pings, portals) may finish after Stop: their UI work is
	// dropped then, and Stop waits for any that is running, so a stopped App never touches Fyne.
	a.do = func(fn func()) {
		do(func() {
			a.doMu.RLock()
			defer a.doMu.RUnlock()
			if a.stopped {
				return
			}
			fn()
		})
	}
	if a.now == nil {
		a.now = time.Now
	}
	if a.opts.Logf == nil {
		a.opts.Logf = func(string, ...any) {}
	}
	if a.opts.ReconnectMax == 0 {
		a.opts.ReconnectMax = 2 * time.Second
	}
	a.ctx, a.cancel = context.WithCancel(context.Background())
	a.v = view{connecting: true}
	a.inFlight = map[string]bool{}
	a.notifier = newDesktopNotifier()
	a.openURI = a.openURIDefault
	a.loadFilePrefs()
	a.loadNotifySettings()
	a.alerts.thr = throttle{now: a.now, after: a.later, send: a.alertUser}
	a.trayHost = !opts.NoTrayHost
	fa.SetIcon(assets.AppIcon())
	a.buildWindow()
	if _, ok := fa.(desktop.App); ok && (!opts.NoTrayHost || opts.WatchTrayHost) {
		a.hasTray = true
	}
	a.refresh()
	return a
}

// Client is the ipc client the app uses.
func (a *App) Client() *ipc.Client { return a.client }

// Window is the main window (hidden until ShowWindow unless started visible).
func (a *App) Window() fyne.Window { return a.win }

// Start subscribes to skeind's watch stream (and keeps resubscribing when skeind restarts),
// and follows the tray host when asked to.
func (a *App) Start() {
	a.wg.Add(1)
	go func() {
		defer a.wg.Done()
		a.watchLoop()
	}()
	a.wg.Add(1)
	go func() {
		defer a.wg.Done()
		a.holdReceiveLock()
	}()
	a.ensureReceiver()
	if a.opts.WatchTrayHost {
		a.wg.Add(1)
		go func() {
			defer a.wg.Done()
			a.followTrayHost()
		}()
	}
}

// Stop ends the watch stream and any calls in flight, and waits for the watcher to end and,
// for a short while, for transfers to clean up (a partly received file is removed).
func (a *App) Stop() {
	a.cancel()
	a.wg.Wait()
	done := make(chan struct{})
	go func() {
		a.xferWG.Wait()
		close(done)
	}()
	select {
	case <-done:
	case <-time.After(3 * time.Second):
	}
	a.doMu.Lock()
	a.stopped = true
	a.doMu.Unlock()
	a.notifier.close()
}

// holdReceiveLock waits for the receive lock (the receiver gives it up when it sees the app),
// then lets the app take received files; the lock stays with the app until it stops.
func (a *App) holdReceiveLock() {
	path := a.opts.ReceiveLock
	if path == "" {
		path = ReceiveLockPath()
	}
	l, err := waitLock(a.ctx, path, 250*time.Millisecond)
	if a.ctx.Err() != nil {
		return
	}
	if err != nil {
		// No lock to be had (no runtime directory?): nothing else takes files then either.
		a.opts.Logf("receive lock %s: %v; taking files without it", path, err)
	}
	defer l.release() // when the app stops: Stop waits for this goroutine
	a.do(func() {
		a.canTake = true
		a.opts.Logf("taking received files")
	})
	a.takeWaiting()
	<-a.ctx.Done()
}

// ShowWindow shows and raises the window (the tray's "Open Skein", a second launch).
func (a *App) ShowWindow() {
	a.win.Show()
	a.win.RequestFocus()
}

// TrayMenu is the tray menu as last built (what the tray shows).
func (a *App) TrayMenu() *fyne.Menu { return a.trayMenu }

// TrayIcon is the tray icon as last set.
func (a *App) TrayIcon() fyne.Resource { return a.trayIcon }

// TrayTitle is the tray item's title (it names the exit node while one carries the traffic).
func (a *App) TrayTitle() string { return a.trayTitle }

// TrayTooltip is the tray item's tooltip.
func (a *App) TrayTooltip() string { return a.trayTip }

func (a *App) watchLoop() {
	wait := 100 * time.Millisecond
	for {
		first := true
		err := a.client.Watch(a.ctx, func(ev ipc.Event) error {
			a.opts.Logf("watch: %s event (state %s)", ev.Kind, stateOf(ev))
			if first {
				first = false
				wait = 100 * time.Millisecond
				// The watch stream carries prefs only when they change: fetch them once.
				go a.loadPrefs()
				// Files that arrived while nobody listened are still in the inbox.
				go a.takeWaiting()
			}
			a.do(func() { a.onEvent(ev) })
			return nil
		})
		if a.ctx.Err() != nil {
			return
		}
		e := asError(err)
		a.opts.Logf("watch: %v; retrying in %v", err, wait)
		a.do(func() { a.onUnreachable(e) })
		select {
		case <-a.ctx.Done():
			return
		case <-time.After(wait):
		}
		wait = min(wait*2, a.opts.ReconnectMax)
	}
}

func stateOf(ev ipc.Event) ipc.State {
	if ev.Status == nil {
		return ""
	}
	return ev.Status.State
}

func (a *App) loadPrefs() {
	ctx, cancel := context.WithTimeout(a.ctx, 10*time.Second)
	defer cancel()
	p, err := a.client.Prefs(ctx)
	if err != nil {
		return // the watch loop reports an unreachable helper
	}
	a.do(func() {
		a.v.prefs, a.v.havePrefs = p, true
		a.refresh()
	})
}

func asError(err error) *ipc.Error {
	var e *ipc.Error
	if errors.As(err, &e) {
		return e
	}
	if err == nil {
		return nil
	}
	return &ipc.Error{Code: ipc.ErrInternal, Message: err.Error()}
}

// onEvent applies one event of the watch stream.
func (a *App) onEvent(ev ipc.Event) {
	old := a.v
	defer func() { a.observe(&old, &a.v) }()
	wasUnreachable := !a.v.reachable
	a.v.reachable, a.v.connecting = true, false
	if wasUnreachable && a.v.err != nil && a.v.err.Code == ipc.ErrHelperUnreachable {
		a.v.err, a.errAction = nil, false
	}
	if ev.Status != nil {
		a.v.st = *ev.Status
		if a.v.st.State == ipc.StateRunning {
			a.authURL = ""
		}
	}
	if ev.Prefs != nil {
		a.v.prefs, a.v.havePrefs = *ev.Prefs, true
		a.prefsEvents++
	}
	if ev.Kind == ipc.EventFile && ev.File != nil {
		a.fileArrived(*ev.File)
	}
	switch {
	case ev.Error != nil:
		a.v.err, a.errAction = ev.Error, false
	case ev.Kind == ipc.EventState && !a.errAction:
		a.v.err = nil
	case a.v.st.State == ipc.StateRunning && a.v.st.ControlConnected && !a.errAction:
		a.v.err = nil
	}
	a.refresh()
}

func (a *App) onUnreachable(e *ipc.Error) {
	old := a.v
	defer func() { a.observe(&old, &a.v) }()
	a.v.reachable, a.v.connecting = false, false
	a.v.err, a.errAction = e, false
	a.v.st = ipc.Status{}
	a.authURL = ""
	a.refresh()
}

// refresh redraws everything from a.v.
func (a *App) refresh() {
	a.header.update(a)
	a.banner.update(a)
	a.health.update(a)
	a.notifyPg.update(a)
	a.langPg.update(a)
	a.peers.update(a)
	a.exit.update(a)
	a.settings.update(a)
	a.account.update(a)
	a.files.update(a)
	a.updateTray()
}

// call runs an IPC action off the UI goroutine; done (on the UI goroutine) gets its error.
func (a *App) call(timeout time.Duration, fn func(ctx context.Context) error, done func(err error)) {
	go func() {
		ctx, cancel := context.WithTimeout(a.ctx, timeout)
		defer cancel()
		err := fn(ctx)
		if a.ctx.Err() != nil {
			return
		}
		a.do(func() {
			if err != nil {
				if errors.Is(err, context.DeadlineExceeded) {
					err = &ipc.Error{Code: ipc.ErrInternal, Message: lang.L("skeind did not answer in time")}
				}
				a.v.err, a.errAction = asError(err), true
			} else if a.errAction {
				a.v.err, a.errAction = nil, false
			}
			if done != nil {
				done(err)
			}
			a.refresh()
		})
	}()
}

// busyCall is call for the state-changing actions: one at a time, the toggle greyed meanwhile.
func (a *App) busyCall(timeout time.Duration, fn func(ctx context.Context) error, done func(err error)) {
	if a.busy {
		return
	}
	a.busy = true
	a.refresh()
	a.call(timeout, fn, func(err error) {
		a.busy = false
		if done != nil {
			done(err)
		}
	})
}

// toggleConnection is the header's big button and the tray's first item.
func (a *App) toggleConnection() {
	_, act := a.v.toggle()
	switch act {
	case actConnect:
		a.connect()
	case actDisconnect:
		a.disconnect()
	case actLogin:
		a.ShowWindow()
		a.tabs.selectAccount()
		a.login("", "")
	}
}

func (a *App) connect() {
	a.busyCall(2*time.Minute, func(ctx context.Context) error {
		resp, err := a.client.Up(ctx, ipc.UpRequest{})
		if err == nil && resp.AuthURL != "" {
			a.do(func() { a.authURL = resp.AuthURL; a.refresh() })
		}
		return err
	}, nil)
}

func (a *App) disconnect() {
	a.busyCall(30*time.Second, func(ctx context.Context) error {
		_, err := a.client.Down(ctx)
		return err
	}, nil)
}

// login starts a login (interactive unless authKey is set) against server ("" = the stored one).
// Moving a logged-in device to another server is asked about first, as skeind requires.
func (a *App) login(server, authKey string) {
	a.loginWith(ipc.UpRequest{LoginServer: server, AuthKey: authKey})
}

func (a *App) loginWith(req ipc.UpRequest) {
	a.authURL = ""
	a.busyCall(2*time.Minute, func(ctx context.Context) error {
		resp, err := a.client.Up(ctx, req)
		if err == nil && resp.AuthURL != "" {
			a.do(func() { a.authURL = resp.AuthURL; a.refresh() })
		}
		return err
	}, func(err error) {
		var e *ipc.Error
		if errors.As(err, &e) && e.Code == ipc.ErrNeedsConfirmation && !req.ForceReauth && a.win != nil {
			a.v.err, a.errAction = nil, false
			dialog.ShowConfirm(lang.L("Log in to another server?"), e.Message+".", func(ok bool) {
				if ok {
					req.ForceReauth = true
					a.loginWith(req)
				}
			}, a.win)
		}
	})
}

func (a *App) logout() {
	a.busyCall(30*time.Second, func(ctx context.Context) error {
		_, err := a.client.Logout(ctx)
		return err
	}, nil)
}

// copyText puts s on the clipboard.
func (a *App) copyText(s string) {
	if s == "" {
		return
	}
	a.fa.Clipboard().SetContent(s)
}

// openURL opens a login URL in the browser: https only, since the URL comes from the control
// server and a browser would run a javascript: or file: one with the user's rights.
func (a *App) openURL(u string) {
	pu, err := url.Parse(u)
	if err != nil || pu.Scheme != "https" || pu.Host == "" {
		a.v.err, a.errAction = &ipc.Error{Code: ipc.ErrBadRequest, Message: "only https:// login addresses are opened; copy it to your browser if you trust it"}, true
		a.refresh()
		return
	}
	if err := a.fa.OpenURL(pu); err != nil {
		a.v.err, a.errAction = &ipc.Error{Code: ipc.ErrInternal, Message: lang.L("cannot open a browser: {{.Err}}", map[string]any{"Err": err.Error()})}, true
		a.refresh()
	}
}

// darkTray tells which tray icon variant to use.
func (a *App) darkTray() bool {
	switch a.opts.TrayTheme {
	case "dark":
		return true
	case "light":
		return false
	}
	return a.fa.Settings().ThemeVariant() == theme.VariantDark
}

// quit ends the app.
func (a *App) quit() {
	a.cancel()
	a.fa.Quit()
}

// exePath is the command line for the autostart entry.
func (a *App) exePath() string {
	if a.opts.Exec != "" {
		return a.opts.Exec
	}
	p, err := os.Executable()
	if err != nil {
		return "skein-gui"
	}
	return p
}

// NoTray tells that there is no tray host now, so the window is the only way in.
func (a *App) NoTray() bool { return !a.trayHost }
