package ui

import (
	"context"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"fyne.io/fyne/v2"
	"fyne.io/fyne/v2/test"
	"fyne.io/fyne/v2/widget"

	"github.com/skeinvpn/skein/ipc"
	"github.com/skeinvpn/skein/ipc/ipctest"
)

// These tests drive the app against a real ipc server (ipctest's fake backend on a Unix socket)
// and assert what a person sees: the texts of visible labels and buttons, whether buttons are
// enabled, and the tray menu's items.

var now = time.Date(2026, 5, 1, 12, 0, 0, 0, time.UTC)

// harness runs one app. All UI work, the app's and the test's, happens under mu: the Fyne test
// driver runs fyne.Do inline on the calling goroutine.
type harness struct {
	t    *testing.T
	mu   sync.Mutex
	be   *ipctest.Backend
	sock string
	a    *App
	fa   fyne.App
	// downloads is the app's Downloads folder (a temp dir); before is run on the app before
	// it starts (e.g. to change its settings).
	downloads string
	before    func(a *App)
	// options, when set, changes the app's options before it is made.
	options func(o *Options)
	// notices are the desktop notifications sent (guarded by noticeMu, not the UI lock: the
	// app sends them from its transfer goroutines).
	noticeMu sync.Mutex
	notices  []notice
	alerts   []alert
}

func (h *harness) alert(al alert) error {
	h.noticeMu.Lock()
	defer h.noticeMu.Unlock()
	h.alerts = append(h.alerts, al)
	return nil
}

func (h *harness) sentAlerts() []alert {
	h.noticeMu.Lock()
	defer h.noticeMu.Unlock()
	return slices.Clone(h.alerts)
}

// notice is one desktop notification the app sent.
type notice struct {
	summary, body string
	open          func()
}

func (h *harness) notify(summary, body string, open func()) error {
	h.noticeMu.Lock()
	defer h.noticeMu.Unlock()
	h.notices = append(h.notices, notice{summary, body, open})
	return nil
}

func (h *harness) sentNotices() []notice {
	h.noticeMu.Lock()
	defer h.noticeMu.Unlock()
	return slices.Clone(h.notices)
}

func newHarness(t *testing.T, st ipc.Status, p ipc.Prefs) *harness {
	h := &harness{t: t, be: ipctest.NewBackend(st, p)}
	h.sock, _ = ipctest.Serve(t, h.be, ipc.ServerOptions{})
	h.start()
	return h
}

// start creates the app on h.sock (which may not be served yet).
func (h *harness) start() {
	h.t.Helper()
	h.mu.Lock()
	h.fa = test.NewApp()
	if h.downloads == "" {
		h.downloads = filepath.Join(h.t.TempDir(), "Downloads")
	}
	opts := Options{
		Socket:       h.sock,
		Do:           h.serialised,
		Now:          func() time.Time { return now },
		AutostartDir: filepath.Join(h.t.TempDir(), "autostart"),
		Exec:         "/usr/bin/skein-gui",
		ReconnectMax: 100 * time.Millisecond,
		DownloadsDir: h.downloads,
		ReceiveLock:  filepath.Join(h.t.TempDir(), "receive.lock"),
		NoReceiver:   true,
		notify:       h.notify,
		alert:        h.alert,
	}
	if h.options != nil {
		h.options(&opts)
	}
	h.a = New(h.fa, opts)
	h.a.Window().Resize(fyne.NewSize(1000, 700))
	h.a.Window().Show()
	if h.before != nil {
		h.before(h.a)
	}
	h.mu.Unlock()
	h.a.Start()
	h.t.Cleanup(func() {
		h.a.Stop()
		h.mu.Lock()
		h.a.Window().Close()
		h.mu.Unlock()
	})
}

func (h *harness) serialised(fn func()) {
	h.mu.Lock()
	defer h.mu.Unlock()
	fn()
}

// ui runs fn under the UI lock.
func (h *harness) ui(fn func()) {
	h.mu.Lock()
	defer h.mu.Unlock()
	fn()
}

// eventually waits until cond (run under the UI lock) returns "" and fails with its last answer.
func (h *harness) eventually(what string, cond func() string) {
	h.t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	var last string
	for time.Now().Before(deadline) {
		h.ui(func() { last = cond() })
		if last == "" {
			return
		}
		time.Sleep(10 * time.Millisecond)
	}
	h.t.Fatalf("%s: %s", what, last)
}

// seen is what the window shows: visible labels, entries and buttons, in tree order.
type seen struct {
	texts   []string
	buttons map[string]*widget.Button
}

func (h *harness) look() seen {
	s := seen{buttons: map[string]*widget.Button{}}
	walk(h.a.Window().Content(), &s)
	return s
}

func walk(o fyne.CanvasObject, s *seen) {
	if o == nil || !o.Visible() {
		return
	}
	switch w := o.(type) {
	case *widget.Label:
		if w.Text != "" {
			s.texts = append(s.texts, w.Text)
		}
		return
	case *widget.Button:
		s.texts = append(s.texts, "["+w.Text+"]")
		s.buttons[w.Text] = w
		return
	case *widget.Entry:
		if w.Text != "" {
			s.texts = append(s.texts, w.Text)
		}
		return
	case *fyne.Container:
		for _, c := range w.Objects {
			walk(c, s)
		}
		return
	case fyne.Widget:
		for _, c := range test.WidgetRenderer(w).Objects() {
			walk(c, s)
		}
	}
}

func (s seen) has(text string) bool { return slices.Contains(s.texts, text) }

func (s seen) hasPrefix(prefix string) bool {
	return slices.ContainsFunc(s.texts, func(t string) bool { return strings.HasPrefix(t, prefix) })
}

func (s seen) String() string { return strings.Join(s.texts, " | ") }

// expect returns "" when every text is visible, else what is missing and what is there.
func (h *harness) expect(texts ...string) string {
	s := h.look()
	for _, t := range texts {
		if !s.has(t) {
			return fmt.Sprintf("%q not shown; window shows: %s", t, s)
		}
	}
	return ""
}

func (h *harness) button(label string) *widget.Button {
	h.t.Helper()
	var b *widget.Button
	h.ui(func() { b = h.look().buttons[label] })
	if b == nil {
		h.t.Fatalf("no visible button %q", label)
	}
	return b
}

func (h *harness) tap(label string) {
	h.t.Helper()
	b := h.button(label)
	h.ui(func() {
		if b.Disabled() {
			h.t.Fatalf("button %q is disabled", label)
		}
		test.Tap(b)
	})
}

func addr(s string) netip.Addr { return netip.MustParseAddr(s) }

func ago5() *time.Time { t := now.Add(-5 * time.Minute); return &t }

func running() ipc.Status {
	return ipc.Status{
		Version:          "test",
		State:            ipc.StateRunning,
		LoginServer:      "https://control.example.test",
		ControlConnected: true,
		Self: &ipc.Peer{ID: 1, NodeKey: "nodekey:01", HostName: "skein-a", DNSName: "skein-a.lab.ts.net.", OS: "linux",
			UserID: 1, Addresses: []netip.Addr{addr("100.64.0.1"), addr("fd7a:115c:a1e0::1")}, Online: true, Relay: "lab"},
		Users: []ipc.User{{ID: 1, LoginName: "alice"}},
		Peers: []ipc.Peer{
			{ID: 2, NodeKey: "nodekey:02", HostName: "beta", DNSName: "beta.lab.ts.net.", OS: "linux", UserID: 1,
				Addresses: []netip.Addr{addr("100.64.0.2")}, Online: true, Active: true, CurAddr: "198.51.100.7:41641", LatencyMs: 1.234},
			{ID: 3, NodeKey: "nodekey:03", HostName: "gamma", DNSName: "gamma.lab.ts.net.", OS: "windows", UserID: 1,
				Addresses: []netip.Addr{addr("100.64.0.3")}, Online: true, Active: true, Relay: "lab"},
			{ID: 4, NodeKey: "nodekey:04", HostName: "delta", DNSName: "delta.lab.ts.net.", OS: "macOS", UserID: 1,
				Addresses: []netip.Addr{addr("100.64.0.4")}, Online: false, LastSeen: ago5()},
		},
	}
}

func TestHeaderFollowsState(t *testing.T) {
	h := newHarness(t, running(), ipc.Prefs{LoginServer: "https://control.example.test", WantRunning: true})
	h.eventually("running header", func() string {
		return h.expect("Connected", "[Disconnect]", "This device: skein-a (100.64.0.1) · https://control.example.test")
	})
	if h.button("Disconnect").Disabled() {
		t.Fatal("Disconnect is disabled while connected")
	}

	// The big toggle disconnects through the IPC; the header follows the helper's event.
	h.tap("Disconnect")
	h.eventually("stopped header", func() string { return h.expect("Disconnected", "[Connect]") })

	h.tap("Connect")
	h.eventually("running again", func() string { return h.expect("Connected", "[Disconnect]") })
	if got := len(h.be.UpRequests()); got != 1 {
		t.Errorf("Up called %d times, want 1", got)
	}

	h.be.SetState(ipc.StateNeedsLogin, "")
	h.eventually("needs login", func() string { return h.expect("Logged out", "[Log in…]") })
}

func TestHelperNotRunningThenReconnects(t *testing.T) {
	h := &harness{t: t, be: ipctest.NewBackend(running(), ipc.Prefs{})}
	dir, err := os.MkdirTemp("", "skein-ui-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	h.sock = filepath.Join(dir, "skeind.sock") // nothing listens yet
	h.start()

	h.eventually("helper down", func() string {
		if s := h.expect("Helper not running", "Skein's helper is installed but not running", "sudo systemctl enable --now skeind"); s != "" {
			return s
		}
		if !h.look().buttons["Connect"].Disabled() {
			return "Connect is enabled without a helper"
		}
		if h.a.TrayIcon().Name() != "tray-error-light.png" {
			return "tray icon is " + h.a.TrayIcon().Name()
		}
		return ""
	})

	// skeind starts: the app reconnects by itself and the error goes away.
	srv := ipctest.ServeAt(t, h.sock, h.be, ipc.ServerOptions{})
	h.eventually("reconnected", func() string {
		if s := h.expect("Connected", "[Disconnect]"); s != "" {
			return s
		}
		if h.look().has("installed but not running") {
			return "error still shown"
		}
		return ""
	})

	// skeind stops again: back to the error, and again when it returns.
	srv.Close()
	h.eventually("helper down again", func() string { return h.expect("Helper not running") })
	ipctest.ServeAt(t, h.sock, h.be, ipc.ServerOptions{})
	h.eventually("reconnected again", func() string { return h.expect("Connected") })
}

func TestPermissionDeniedShowsOperatorFix(t *testing.T) {
	h := newHarness(t, running(), ipc.Prefs{})
	h.be.OnDown(func(ctx context.Context) error {
		return &ipc.Error{Code: ipc.ErrNeedsOperator, Message: "permission denied: uid 1000 is neither root nor skeind's operator", Fix: "sudo skein set --operator=$USER"}
	})
	h.eventually("running", func() string { return h.expect("[Disconnect]") })
	h.tap("Disconnect")
	want := "sudo skein set --operator=" + currentUser()
	h.eventually("operator fix", func() string {
		return h.expect("Permission denied: your user may not change Skein's settings", want, "[Copy]")
	})
	h.tap("Copy")
	h.ui(func() {
		if got := h.fa.Clipboard().Content(); got != want {
			t.Errorf("clipboard = %q, want %q", got, want)
		}
	})
	// Still connected: the failed action did not change the state.
	h.eventually("still connected", func() string { return h.expect("Connected", "[Disconnect]") })
}

func TestServerUnreachableError(t *testing.T) {
	h := newHarness(t, running(), ipc.Prefs{})
	h.eventually("running", func() string { return h.expect("Connected") })
	st := running()
	st.ControlConnected = false
	h.be.Emit(ipc.Event{Kind: ipc.EventState, Status: &st, Error: &ipc.Error{Code: ipc.ErrServerUnreachable, Message: "cannot reach the login server: dial tcp: connection refused"}})
	h.eventually("server error", func() string {
		if s := h.expect("The login server cannot be reached", "cannot reach the login server: dial tcp: connection refused"); s != "" {
			return s
		}
		if h.a.TrayIcon().Name() != "tray-error-light.png" {
			return "tray icon is " + h.a.TrayIcon().Name()
		}
		return ""
	})
}

// rows are the peer list's visible rows: name line and info line.
func (h *harness) rows() [][2]string {
	var out [][2]string
	var visit func(o fyne.CanvasObject)
	visit = func(o fyne.CanvasObject) {
		if o == nil || !o.Visible() {
			return
		}
		switch w := o.(type) {
		case *peerRow:
			out = append(out, [2]string{w.name.Text, w.info.Text})
		case *fyne.Container:
			for _, c := range w.Objects {
				visit(c)
			}
		case fyne.Widget:
			for _, c := range test.WidgetRenderer(w).Objects() {
				visit(c)
			}
		}
	}
	visit(h.a.peers.list)
	// The list reuses row widgets: keep the ones bound to an item, in item order.
	n := len(h.a.peers.shown)
	if len(out) > n {
		out = out[:n]
	}
	return out
}

func rowsString(rows [][2]string) string {
	var b strings.Builder
	for _, r := range rows {
		fmt.Fprintf(&b, "%s / %s\n", r[0], r[1])
	}
	return b.String()
}

func TestPeerListShowsPathsAndSearch(t *testing.T) {
	h := newHarness(t, running(), ipc.Prefs{})
	want := "beta · linux / 100.64.0.2 · online · direct 198.51.100.7:41641 · 1.2 ms\n" +
		"gamma · windows / 100.64.0.3 · online · relay (lab)\n" +
		"delta · macOS / 100.64.0.4 · offline · last seen 5 min ago\n"
	h.eventually("rows", func() string {
		if got := rowsString(h.rows()); got != want {
			return "rows:\n" + got + "want:\n" + want
		}
		return ""
	})

	search := func(q string) {
		h.ui(func() { h.a.peers.search.SetText(q) })
	}
	for q, want := range map[string]string{
		"relay":      "gamma · windows / 100.64.0.3 · online · relay (lab)\n",
		"direct":     "beta · linux / 100.64.0.2 · online · direct 198.51.100.7:41641 · 1.2 ms\n",
		"offline":    "delta · macOS / 100.64.0.4 · offline · last seen 5 min ago\n",
		"windows":    "gamma · windows / 100.64.0.3 · online · relay (lab)\n",
		"100.64.0.4": "delta · macOS / 100.64.0.4 · offline · last seen 5 min ago\n",
		"BETA":       "beta · linux / 100.64.0.2 · online · direct 198.51.100.7:41641 · 1.2 ms\n",
	} {
		search(q)
		h.eventually("search "+q, func() string {
			if got := rowsString(h.rows()); got != want {
				return "rows:\n" + got + "want:\n" + want
			}
			return ""
		})
	}
	search("nothing-like-this")
	h.eventually("no match", func() string { return h.expect("No peer matches “nothing-like-this”.") })
	search("")

	// Live: beta loses its direct path and goes through the relay; a new peer joins.
	st := running()
	st.Peers[0].CurAddr, st.Peers[0].Relay, st.Peers[0].LatencyMs = "", "lab", 0
	st.Peers = append(st.Peers, ipc.Peer{ID: 5, NodeKey: "nodekey:05", HostName: "epsilon", OS: "android",
		Addresses: []netip.Addr{addr("100.64.0.5")}, Online: true})
	h.be.SetStatus(st)
	want = "beta · linux / 100.64.0.2 · online · relay (lab)\n" +
		"epsilon · android / 100.64.0.5 · online · idle\n" +
		"gamma · windows / 100.64.0.3 · online · relay (lab)\n" +
		"delta · macOS / 100.64.0.4 · offline · last seen 5 min ago\n"
	h.eventually("live update", func() string {
		if got := rowsString(h.rows()); got != want {
			return "rows:\n" + got + "want:\n" + want
		}
		return ""
	})
}

func TestPeerDetailCopyAndPing(t *testing.T) {
	h := newHarness(t, running(), ipc.Prefs{})
	var pings int
	var pingMu sync.Mutex
	h.be.OnPing(func(ctx context.Context, peer string) (ipc.PingResult, error) {
		pingMu.Lock()
		defer pingMu.Unlock()
		pings++
		if peer != "100.64.0.3" {
			return ipc.PingResult{}, &ipc.Error{Code: ipc.ErrNotFound, Message: "unknown peer " + peer}
		}
		if pings == 1 {
			return ipc.PingResult{NodeName: "gamma", NodeIP: addr("100.64.0.3"), DERPRegionID: 999, DERPRegionCode: "lab", LatencySeconds: 0.021}, nil
		}
		return ipc.PingResult{NodeName: "gamma", NodeIP: addr("100.64.0.3"), Endpoint: "198.51.100.9:41641", LatencySeconds: 0.0012}, nil
	})
	h.eventually("rows", func() string {
		if len(h.rows()) != 3 {
			return "rows: " + rowsString(h.rows())
		}
		return ""
	})
	h.eventually("nothing selected", func() string { return h.expect("Select a device to see its details.") })
	h.ui(func() { h.a.peers.list.Select(1) }) // gamma
	h.eventually("detail", func() string {
		return h.expect("gamma", "gamma.lab.ts.net", "100.64.0.3", "windows", "alice", "online, active", "relay (lab)", "[Copy IP]", "[Copy DNS name]", "[Ping]")
	})
	h.tap("Copy IP")
	h.ui(func() {
		if got := h.fa.Clipboard().Content(); got != "100.64.0.3" {
			t.Errorf("clipboard after Copy IP = %q", got)
		}
	})
	h.tap("Copy DNS name")
	h.ui(func() {
		if got := h.fa.Clipboard().Content(); got != "gamma.lab.ts.net" {
			t.Errorf("clipboard after Copy DNS name = %q", got)
		}
	})
	h.tap("Ping")
	want := "pong from gamma (100.64.0.3) via DERP(lab) in 21 ms\npong from gamma (100.64.0.3) via 198.51.100.9:41641 in 1.2 ms"
	h.eventually("pongs", func() string {
		if s := h.expect(want); s != "" {
			return s
		}
		if h.look().buttons["Ping"].Disabled() {
			return "Ping still disabled after the direct pong"
		}
		return ""
	})
	pingMu.Lock()
	defer pingMu.Unlock()
	if pings != 2 {
		t.Errorf("%d pings sent, want 2 (stop at the first direct pong)", pings)
	}
}

// menuLines renders a tray menu as a person reads it, one item per line, submenu items
// indented, checked and disabled items marked.
func menuLines(m *fyne.Menu) string {
	var b strings.Builder
	var walk func(m *fyne.Menu, indent string)
	walk = func(m *fyne.Menu, indent string) {
		for _, it := range m.Items {
			if it.IsSeparator {
				b.WriteString(indent + "---\n")
				continue
			}
			b.WriteString(indent + it.Label)
			if it.Checked {
				b.WriteString(" ✓")
			}
			if it.Disabled {
				b.WriteString(" (disabled)")
			}
			if it.ChildMenu != nil {
				b.WriteString(" ▸")
			}
			b.WriteString("\n")
			if it.ChildMenu != nil {
				walk(it.ChildMenu, indent+"    ")
			}
		}
	}
	walk(m, "")
	return b.String()
}

func (h *harness) menuItem(label string) *fyne.MenuItem {
	h.t.Helper()
	var found *fyne.MenuItem
	var walk func(m *fyne.Menu)
	walk = func(m *fyne.Menu) {
		for _, it := range m.Items {
			if it.Label == label {
				found = it
			}
			if it.ChildMenu != nil {
				walk(it.ChildMenu)
			}
		}
	}
	h.ui(func() { walk(h.a.TrayMenu()) })
	if found == nil {
		h.t.Fatalf("no tray item %q", label)
	}
	return found
}

func (h *harness) click(label string) {
	h.t.Helper()
	it := h.menuItem(label)
	h.ui(func() {
		if it.Disabled || it.Action == nil {
			h.t.Fatalf("tray item %q cannot be clicked", label)
		}
		it.Action()
	})
}

func TestTrayMenu(t *testing.T) {
	h := newHarness(t, running(), ipc.Prefs{})
	want := `Connected to control.example.test (disabled)
Disconnect
---
This device: skein-a (100.64.0.1)
Peers ▸
    beta — direct 198.51.100.7:41641 (1.2 ms)
    gamma — relay (lab)
    delta — offline
Exit node ▸
    Use exit node (disabled)
    ---
    None ✓
    No peer offers an exit node (disabled)
    ---
    Allow LAN access
    Exit node settings…
Send file…
Account ▸
    Add account…
    Manage accounts…
---
Open Skein
Quit
`
	h.eventually("menu", func() string {
		if got := menuLines(h.a.TrayMenu()); got != want {
			return "menu:\n" + got + "want:\n" + want
		}
		return ""
	})
	h.ui(func() {
		if got := h.a.TrayIcon().Name(); got != "tray-connected-light.png" {
			t.Errorf("tray icon %q", got)
		}
	})

	// Clicking the device line or a peer copies its address.
	h.click("This device: skein-a (100.64.0.1)")
	h.ui(func() {
		if got := h.fa.Clipboard().Content(); got != "100.64.0.1" {
			t.Errorf("clipboard = %q", got)
		}
	})
	h.click("gamma — relay (lab)")
	h.ui(func() {
		if got := h.fa.Clipboard().Content(); got != "100.64.0.3" {
			t.Errorf("clipboard = %q", got)
		}
	})

	// Live: the path of beta changes and gamma leaves, with no call from the app.
	st := running()
	st.Peers[0].CurAddr, st.Peers[0].Relay, st.Peers[0].LatencyMs = "", "lab", 0
	st.Peers = st.Peers[:1]
	h.be.SetStatus(st)
	h.eventually("live menu", func() string {
		want := "Peers ▸\n    beta — relay (lab)\nExit node ▸\n"
		if got := menuLines(h.a.TrayMenu()); !strings.Contains(got, want) {
			return "menu:\n" + got
		}
		return ""
	})

	// Every peer gone: the submenu keeps one disabled item rather than being empty.
	st.Peers = nil
	h.be.SetStatus(st)
	h.eventually("no peers", func() string {
		want := "Peers ▸\n    No peers (disabled)\n"
		if got := menuLines(h.a.TrayMenu()); !strings.Contains(got, want) {
			return "menu:\n" + got
		}
		return ""
	})

	// The toggle disconnects; the menu then offers Connect and the icon changes.
	h.click("Disconnect")
	h.eventually("disconnected menu", func() string {
		got := menuLines(h.a.TrayMenu())
		if !strings.HasPrefix(got, "Disconnected (disabled)\nConnect\n") {
			return "menu:\n" + got
		}
		if n := h.a.TrayIcon().Name(); n != "tray-disconnected-light.png" {
			return "icon " + n
		}
		return ""
	})

	// "Open Skein" shows the window (the test driver cannot tell shown from hidden: this
	// checks that the item works).
	h.click("Open Skein")
}

func TestTrayWithoutHelper(t *testing.T) {
	h := &harness{t: t, be: ipctest.NewBackend(ipc.Status{}, ipc.Prefs{})}
	h.sock = filepath.Join(t.TempDir(), "absent.sock")
	h.start()
	want := `Helper not running (disabled)
Connect (disabled)
---
Peers ▸
    No peers (disabled)
Exit node ▸
    Use exit node (disabled)
    ---
    None ✓ (disabled)
    No peer offers an exit node (disabled)
    ---
    Allow LAN access (disabled)
    Exit node settings…
Send file… (disabled)
Account ▸
    Add account… (disabled)
    Manage accounts…
---
Open Skein
Quit
`
	h.eventually("menu", func() string {
		if got := menuLines(h.a.TrayMenu()); got != want {
			return "menu:\n" + got + "want:\n" + want
		}
		return ""
	})
}

func TestLoginShowsAuthURLAndLogout(t *testing.T) {
	st := ipc.Status{State: ipc.StateNeedsLogin, LoginServer: "https://control.example.test"}
	h := newHarness(t, st, ipc.Prefs{LoginServer: "https://control.example.test"})
	const authURL = "https://control.example.test/register/abc123"
	h.be.OnUp(func(ctx context.Context, req ipc.UpRequest) (ipc.UpResponse, error) {
		if req.LoginServer != "https://control.example.test" {
			return ipc.UpResponse{}, &ipc.Error{Code: ipc.ErrBadRequest, Message: "unexpected server " + req.LoginServer}
		}
		h.be.SetState(ipc.StateNeedsLogin, authURL)
		return ipc.UpResponse{State: ipc.StateNeedsLogin, AuthURL: authURL}, nil
	})
	h.eventually("logged out", func() string { return h.expect("Logged out", "[Log in…]") })
	h.ui(func() { h.a.tabs.selectAccount() })
	h.eventually("account", func() string { return h.expect("https://control.example.test", "[Log in]") })
	h.tap("Log in")
	h.eventually("auth url", func() string {
		return h.expect(authURL, "[Open in browser]", "Waiting for the login to be approved…", "Waiting for login approval")
	})

	// The login is approved elsewhere: the helper reports Running and the URL goes away.
	h.be.SetStatus(running())
	h.eventually("logged in", func() string {
		if s := h.expect("Connected", "Logged in as alice on https://control.example.test.", "[Log out]"); s != "" {
			return s
		}
		if h.look().has(authURL) {
			return "auth URL still shown"
		}
		return ""
	})
}

func TestSettingsHostnameAndOperator(t *testing.T) {
	h := newHarness(t, running(), ipc.Prefs{LoginServer: "https://control.example.test", Hostname: "old-name"})
	h.ui(func() { h.a.tabs.selectSettings() })
	h.eventually("settings", func() string {
		return h.expect("old-name", "https://control.example.test", "none (only root can change Skein's state)")
	})
	if !h.button("Save").Disabled() {
		t.Error("Save enabled before any edit")
	}
	h.ui(func() { h.a.settings.hostname.SetText("new-name") })
	h.tap("Save")
	h.eventually("saved", func() string {
		if h.be.Prefs().Hostname != "new-name" {
			return "backend hostname " + h.be.Prefs().Hostname
		}
		if !h.look().buttons["Save"].Disabled() {
			return "Save still enabled"
		}
		return ""
	})
	// The operator set elsewhere shows up live.
	op := "alice"
	h.be.SetPrefs(context.Background(), ipc.PrefsPatch{Operator: &op})
	h.eventually("operator", func() string { return h.expect("alice") })
}

func TestAutostartEntry(t *testing.T) {
	dir := t.TempDir()
	if autostartEnabled(dir) {
		t.Fatal("enabled before writing")
	}
	if err := setAutostart(dir, "/opt/Skein Apps/skein-gui", true); err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(filepath.Join(dir, AppID+".desktop"))
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"[Desktop Entry]", "Type=Application", `Exec="/opt/Skein Apps/skein-gui" --minimized`, "X-GNOME-Autostart-enabled=true"} {
		if !strings.Contains(string(b), want) {
			t.Errorf("entry lacks %q:\n%s", want, b)
		}
	}
	if !autostartEnabled(dir) {
		t.Error("not enabled after writing")
	}
	if err := setAutostart(dir, "x", false); err != nil {
		t.Fatal(err)
	}
	if autostartEnabled(dir) {
		t.Error("still enabled after removing")
	}
}

func TestStartAtLoginCheckbox(t *testing.T) {
	h := newHarness(t, running(), ipc.Prefs{})
	h.ui(func() {
		h.a.tabs.selectSettings()
		test.Tap(h.a.settings.autostart)
	})
	b, err := os.ReadFile(autostartFile(h.a.opts.AutostartDir))
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(b), "Exec=/usr/bin/skein-gui --minimized") {
		t.Errorf("entry:\n%s", b)
	}
}

func TestSingleInstance(t *testing.T) {
	path := filepath.Join(t.TempDir(), "gui.sock")
	first, err := Claim(path)
	if err != nil {
		t.Fatal(err)
	}
	shown := make(chan struct{}, 1)
	go first.Serve(func() { shown <- struct{}{} })
	if _, err := Claim(path); err != ErrRunning {
		t.Fatalf("second Claim: %v, want ErrRunning", err)
	}
	select {
	case <-shown:
	case <-time.After(5 * time.Second):
		t.Fatal("first instance was not asked to show its window")
	}
	first.Close()

	// A socket left by a crashed instance is taken over.
	os.WriteFile(path, nil, 0o600)
	again, err := Claim(path)
	if err != nil {
		t.Fatalf("Claim over a stale file: %v", err)
	}
	again.Close()
}

// UI work that a background goroutine hands over after Stop is dropped: CI once caught a
// finished test's prefs fetch refreshing its closed window while the next test's App ran
// (Fyne's caches are shared, so under -race that is a data race between two tests).
func TestStoppedAppDropsLateUIWork(t *testing.T) {
	h := newHarness(t, running(), ipc.Prefs{})
	h.eventually("connected", func() string { return h.expect("Connected") })
	ran := make(chan bool, 1)
	done := make(chan struct{})
	h.mu.Lock() // the UI goroutine is busy: the late work waits behind it
	go func() {
		defer close(done)
		h.a.do(func() { ran <- true })
	}()
	h.a.Stop()
	h.mu.Unlock()
	<-done
	select {
	case <-ran:
		t.Fatal("a stopped App still ran UI work")
	default:
	}
}
