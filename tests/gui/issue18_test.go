package gui_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"image"
	"image/png"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/godbus/dbus/v5"

	"github.com/skeinvpn/skein/internal/lab"
	"github.com/skeinvpn/skein/ipc"
	"github.com/skeinvpn/skein/ipc/ipctest"
)

// The desktop app end to end for issue 18: accounts (profiles) switched from the tray, a key
// expiry warned about, the one-click exit node, a watched device's notification, a tray host
// that comes late, and the window in Traditional Chinese.

// appPrefs writes the app's preferences (Fyne's file in the desktop's config directory) before
// the app starts, as a user's earlier choices would have.
func (d *desktop) appPrefs(t testing.TB, prefs map[string]any) {
	t.Helper()
	dir := filepath.Join(d.home, ".config", "fyne", "io.github.skeinvpn.Skein")
	if err := os.MkdirAll(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	b, _ := json.Marshal(prefs)
	if err := os.WriteFile(filepath.Join(dir, "preferences.json"), b, 0o600); err != nil {
		t.Fatal(err)
	}
}

// iconIs tells whether the tray item's icon is the asset named (tray-STATE-VARIANT.png).
func (it *trayItem) iconIs(t testing.TB, asset string) error {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("..", "..", "assets", asset))
	if err != nil {
		t.Fatal(err)
	}
	img, err := png.Decode(bytes.NewReader(b))
	if err != nil {
		t.Fatal(err)
	}
	want := argb(img)
	v, err := it.prop("IconPixmap")
	if err != nil {
		return err
	}
	var pix []struct {
		W, H int32
		Data []byte
	}
	if err := dbus.Store([]any{v.Value()}, &pix); err != nil {
		return fmt.Errorf("IconPixmap: %v", err)
	}
	for _, p := range pix {
		if bytes.Equal(p.Data, want) {
			return nil
		}
	}
	return fmt.Errorf("the tray icon is not %s", asset)
}

// argb is the StatusNotifierItem pixmap of img (ARGB32, network order).
func argb(img image.Image) []byte {
	b := img.Bounds()
	out := make([]byte, 0, b.Dx()*b.Dy()*4)
	for y := b.Min.Y; y < b.Max.Y; y++ {
		for x := b.Min.X; x < b.Max.X; x++ {
			r, g, bl, a := img.At(x, y).RGBA()
			out = append(out, byte(a), byte(r), byte(g), byte(bl))
		}
	}
	return out
}

// shotPage saves the screen as an artifact named name and, for the README's screenshots (docs)
// when SKEIN_GUI_SCREENSHOT_DIR is set, there too.
func (d *desktop) shotPage(t *testing.T, name string, docs bool) {
	t.Helper()
	time.Sleep(time.Second) // let the window paint
	shot := d.screenshot(t)
	path := filepath.Join(t.ArtifactDir(), name)
	writePNG(t, path, shot)
	t.Logf("screenshot: %s (%v)", path, shot.Bounds().Size())
	if b := shot.Bounds(); b.Dx() < 400 || b.Dy() < 300 {
		t.Errorf("screenshot %s is %v: no window on the screen?", name, b.Size())
	}
	if dir := os.Getenv("SKEIN_GUI_SCREENSHOT_DIR"); dir != "" && docs {
		writePNG(t, filepath.Join(dir, name), shot)
	}
}

// TestProfileSwitchFromTray: skeind keeps two logins (two Headscale users kept apart by policy,
// an official peer each); the tray's Account submenu lists them, and one click switches: skeind
// runs the other profile, and the Peers submenu shows that tailnet's device only.
func TestProfileSwitchFromTray(t *testing.T) {
	l := lab.New(t)
	c, err := l.StartControl()
	if err != nil {
		t.Fatal(err)
	}
	keys, err := c.SeparateUsers("alice", "bob")
	if err != nil {
		t.Fatal(err)
	}
	for _, u := range []string{"alice", "bob"} {
		h, err := l.AddHost(u + "-ts")
		if err != nil {
			t.Fatal(err)
		}
		ts, err := h.StartTailscaled(u + "-ts")
		if err != nil {
			t.Fatal(err)
		}
		if err := ts.Up(c.URL(), keys[u]); err != nil {
			t.Fatal(err)
		}
	}
	n := startSkeind(t, l, "skein-desk")
	for _, u := range []string{"alice", "bob"} {
		n.login(t, c.URL(), keys[u], u)
	}
	waitProfile := func(u string) {
		lab.Eventually(t, 30*time.Second, func() error {
			st := n.status()
			if st.State != ipc.StateRunning || st.Profile == nil || st.Profile.Name != u {
				return fmt.Errorf("state %s, profile %+v", st.State, st.Profile)
			}
			if len(st.Peers) != 1 || st.Peers[0].HostName != u+"-ts" {
				return fmt.Errorf("profile %s sees %d peers", u, len(st.Peers))
			}
			return nil
		})
	}
	waitProfile("bob")

	d := newDesktop(t)
	d.startGUI(t, guiBin, "--minimized", "--socket", n.socket)
	it := d.watcher.item(t, d.watcher.waitItem(t, 20*time.Second))
	aliceItem, bobItem := "alice — "+lab.MagicDNSSuffix, "bob — "+lab.MagicDNSSuffix
	waitMenu(t, it, 20*time.Second, func(m *menuNode) error {
		a, b := m.find(aliceItem), m.find(bobItem)
		if a == nil || b == nil || a.Checked || !b.Checked {
			return fmt.Errorf("Account submenu:\n%s", submenu(m, "Account"))
		}
		if m.find("bob-ts — ") == nil || m.find("alice-ts — ") != nil {
			return fmt.Errorf("Peers submenu:\n%s", submenu(m, "Peers"))
		}
		return nil
	})
	start := time.Now()
	clickUntil(t, it, aliceItem, func() error {
		if st := n.status(); st.Profile == nil || st.Profile.Name != "alice" {
			return fmt.Errorf("skeind's profile is %+v", st.Profile)
		}
		return nil
	})
	waitProfile("alice")
	m := waitMenu(t, it, 20*time.Second, func(m *menuNode) error {
		if a := m.find(aliceItem); a == nil || !a.Checked {
			return fmt.Errorf("alice not checked:\n%s", submenu(m, "Account"))
		}
		if m.find("alice-ts — ") == nil || m.find("bob-ts — ") != nil {
			return fmt.Errorf("Peers submenu after the switch:\n%s", submenu(m, "Peers"))
		}
		if err := hasItem(m, "Connected", false); err != nil {
			return err
		}
		return nil
	})
	t.Logf("switched to alice from the tray; the menu showed alice's tailnet %v after the click:\n%s",
		time.Since(start).Round(10*time.Millisecond), m)

	// And back, then the Account page (a screenshot for the README).
	clickUntil(t, it, bobItem, func() error {
		if st := n.status(); st.Profile == nil || st.Profile.Name != "bob" {
			return fmt.Errorf("skeind's profile is %+v", st.Profile)
		}
		return nil
	})
	waitProfile("bob")
	clickUntil(t, it, "Manage accounts…", func() error { return nil })
	d.shotPage(t, "accounts-lab.png", false)
}

// login adds a profile with the CLI, as a user would.
func (n *skeind) login(t testing.TB, server, key, nickname string) {
	t.Helper()
	keyFile := filepath.Join(n.host.Dir(), "authkey-"+nickname)
	if err := os.WriteFile(keyFile, []byte(key+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	out, err := execCLI(n.socket, "login", "--nickname", nickname, "--login-server", server, "--auth-key", "file:"+keyFile, "--hostname", "skein-desk")
	if err != nil {
		t.Fatalf("skein login --nickname %s: %v\n%s", nickname, err, out)
	}
}

// TestKeyExpiryWarningInLab: the admin sets this device's key to expire a few minutes ahead
// (headscale nodes expire --expiry). The app warns at once: a notification with a
// Re-authenticate action, the tray's warning icon and a banner; the action runs the login flow,
// approving it renews the key, and the warning goes.
func TestKeyExpiryWarningInLab(t *testing.T) {
	l := lab.New(t)
	tn, err := l.StartTailnet("lab", "alpha-ts")
	if err != nil {
		t.Fatal(err)
	}
	n := startSkeind(t, l, "skein-desk")
	n.up(tn, "skein-desk")
	lab.Eventually(t, 30*time.Second, func() error {
		if st := n.status(); st.State != ipc.StateRunning || peerByName(st, "alpha-ts") == nil {
			return fmt.Errorf("not running with alpha-ts yet: %s", st.State)
		}
		return nil
	})
	d := newDesktop(t)
	notes := startNotificationServer(t, d.busAddr)
	d.startGUI(t, guiBin, "--verbose", "--tray-theme", "light", "--socket", n.socket)
	it := d.watcher.item(t, d.watcher.waitItem(t, 20*time.Second))
	waitMenu(t, it, 20*time.Second, func(m *menuNode) error { return hasItem(m, "Connected", false) })
	lab.Eventually(t, 10*time.Second, func() error { return it.iconIs(t, "tray-connected-light.png") })

	hs, err := tn.Control.NodeByName("skein-desk")
	if err != nil {
		t.Fatal(err)
	}
	expiry := time.Now().Add(4 * time.Minute).UTC().Truncate(time.Second)
	if _, err := tn.Control.Headscale("nodes", "expire", "--identifier", strconv.FormatUint(hs.ID, 10), "--expiry", expiry.Format(time.RFC3339)); err != nil {
		t.Fatal(err)
	}
	set := time.Now()
	var note notifyCall
	lab.Eventually(t, 30*time.Second, func() error {
		for _, c := range notes.recorded() {
			if strings.HasPrefix(c.Summary, "This device's key expires in ") {
				note = c
				return nil
			}
		}
		return fmt.Errorf("no expiry notification; sent: %+v", notes.recorded())
	})
	t.Logf("notified %v after the expiry was set: %q / %q, actions %v", time.Since(set).Round(10*time.Millisecond), note.Summary, note.Body, note.Actions)
	if !strings.Contains(note.Summary, "minutes") || len(note.Actions) < 2 || note.Actions[1] != "Re-authenticate" {
		t.Errorf("notification %+v", note)
	}
	if st := n.status(); st.Self == nil || st.Self.KeyExpiry == nil || !st.Self.KeyExpiry.Equal(expiry) {
		t.Errorf("skeind's status: key expiry %v, want %v", st.Self.KeyExpiry, expiry)
	}
	lab.Eventually(t, 10*time.Second, func() error { return it.iconIs(t, "tray-warning-light.png") })
	d.shotPage(t, "key-expiry.png", true)

	// The notification's action: the login flow (an interactive login: a URL to approve).
	if err := notes.click(note.ID, "open-folder"); err != nil {
		t.Fatal(err)
	}
	var authURL string
	lab.Eventually(t, 30*time.Second, func() error {
		st := n.status()
		if st.AuthURL == "" {
			return fmt.Errorf("no login started (state %s)", st.State)
		}
		authURL = st.AuthURL
		return nil
	})
	if err := tn.Control.RegisterNode(tn.User, authURL); err != nil {
		t.Fatal(err)
	}
	lab.Eventually(t, 30*time.Second, func() error {
		st := n.status()
		if st.State != ipc.StateRunning || st.AuthURL != "" {
			return fmt.Errorf("state %s, auth URL %q", st.State, st.AuthURL)
		}
		for _, h := range st.Health {
			if h.Code == ipc.IssueKeyExpiring {
				return fmt.Errorf("still warned: %+v", h)
			}
		}
		return nil
	})
	lab.Eventually(t, 10*time.Second, func() error { return it.iconIs(t, "tray-connected-light.png") })
}

// TestExitNodeToggleInLab: an official exit node chosen from the tray; the "Use exit node"
// toggle turns it off, remembering it, and on again with one click.
func TestExitNodeToggleInLab(t *testing.T) {
	l := lab.New(t)
	tn, err := l.StartTailnet("lab", "alpha-ts")
	if err != nil {
		t.Fatal(err)
	}
	nat, err := l.AddNAT("exit-nat", lab.EasyNAT)
	if err != nil {
		t.Fatal(err)
	}
	eh, err := nat.AddHost("exit-ts")
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range []string{"net.ipv4.ip_forward=1", "net.ipv6.conf.all.forwarding=1"} {
		if out, err := eh.Run("sysctl", "-qw", s); err != nil {
			t.Fatalf("sysctl %s: %v %s", s, err, out)
		}
	}
	ets, err := eh.StartTailscaledWith(lab.TailscaledOptions{Hostname: "exit-ts", Env: []string{"TS_DEBUG_FIREWALL_MODE=nftables"}})
	if err != nil {
		t.Fatal(err)
	}
	if err := ets.Up(tn.Control.URL(), tn.AuthKey, "--advertise-exit-node"); err != nil {
		t.Fatal(err)
	}
	if err := tn.Control.ApproveRoutes("exit-ts", "0.0.0.0/0", "::/0"); err != nil {
		t.Fatal(err)
	}
	n := startSkeind(t, l, "skein-desk")
	n.up(tn, "skein-desk")
	var exitID string
	lab.Eventually(t, 30*time.Second, func() error {
		p := peerByName(n.status(), "exit-ts")
		if p == nil || !p.ExitNodeOption || !p.Online {
			return fmt.Errorf("exit-ts not offered yet: %+v", p)
		}
		exitID = p.StableID
		return nil
	})

	d := newDesktop(t)
	d.startGUI(t, guiBin, "--minimized", "--socket", n.socket)
	it := d.watcher.item(t, d.watcher.waitItem(t, 20*time.Second))
	waitMenu(t, it, 20*time.Second, func(m *menuNode) error {
		if exitItem(m, "exit-ts") == nil {
			return fmt.Errorf("no exit-ts in\n%s", submenu(m, "Exit node"))
		}
		return nil
	})
	// "exit-ts" alone is in the Exit node submenu ("exit-ts — idle" in Peers).
	clickIn(t, it, "Exit node", "exit-ts", func() error {
		if id := n.prefs(t).ExitNodeID; id != exitID {
			return fmt.Errorf("skeind's exit node %q", id)
		}
		return nil
	})
	exitOn := func(on bool) func() error {
		return func() error {
			st := n.status()
			p := n.prefs(t)
			switch {
			case on && (st.ExitNode == nil || !st.ExitNode.Online || st.ExitNode.Name != "exit-ts"):
				return fmt.Errorf("exit node %+v", st.ExitNode)
			case !on && (st.ExitNode != nil || p.ExitNodeID != ""):
				return fmt.Errorf("exit node still %+v", st.ExitNode)
			case p.LastExitNodeID != exitID:
				return fmt.Errorf("last exit node %q, want %q", p.LastExitNodeID, exitID)
			}
			return nil
		}
	}
	lab.Eventually(t, 20*time.Second, exitOn(true))
	for i := range 2 {
		clickUntil(t, it, "Use exit node: exit-ts", exitOn(false))
		waitMenu(t, it, 10*time.Second, func(m *menuNode) error {
			if n := m.find("Use exit node: exit-ts"); n == nil || n.Checked || !n.Enabled {
				return fmt.Errorf("toggle after off:\n%s", submenu(m, "Exit node"))
			}
			return hasItem(m, "None", true)
		})
		waitTitle(t, it, "Skein")
		clickUntil(t, it, "Use exit node: exit-ts", exitOn(true))
		waitMenu(t, it, 10*time.Second, func(m *menuNode) error {
			if n := m.find("Use exit node: exit-ts"); n == nil || !n.Checked {
				return fmt.Errorf("toggle after on:\n%s", submenu(m, "Exit node"))
			}
			return nil
		})
		waitTitle(t, it, "Skein · exit node exit-ts")
		t.Logf("round %d: off and on again with the toggle, exit-ts remembered", i+1)
	}
}

// exitItem is the item labelled exactly label in the Exit node submenu.
func exitItem(m *menuNode, label string) *menuNode {
	sub := m.find("Exit node")
	if sub == nil {
		return nil
	}
	for _, c := range sub.Children {
		if c.Label == label && c.Visible {
			return c
		}
	}
	return nil
}

// clickIn is clickUntil for the item labelled exactly label in the submenu sub.
func clickIn(t testing.TB, it *trayItem, sub, label string, done func() error) {
	t.Helper()
	var last error
	for deadline := time.Now().Add(45 * time.Second); time.Now().Before(deadline); {
		m, err := it.layout()
		if err != nil {
			last = err
		} else if n := exitItem(m, label); n == nil || !n.Enabled {
			last = fmt.Errorf("no enabled item %q in\n%s", label, submenu(m, sub))
		} else if err := it.click(n.ID); err != nil {
			last = err
		}
		for wait := time.Now().Add(5 * time.Second); time.Now().Before(wait); time.Sleep(100 * time.Millisecond) {
			if last = done(); last == nil {
				return
			}
		}
	}
	t.Fatalf("clicking %q in %s: %v", label, sub, last)
}

func (n *skeind) prefs(t testing.TB) ipc.Prefs {
	t.Helper()
	ctx, cancel := ctxTimeout(10 * time.Second)
	defer cancel()
	p, err := n.client().Prefs(ctx)
	if err != nil {
		t.Fatalf("prefs: %v", err)
	}
	return p
}

// TestWatchedPeerNotificationInLab: the user watches an official device (its pane's switch,
// kept in the app's settings); the device stops: exactly one notification, naming it, whose
// action shows it. Headscale reports a stopped node offline 10 s after its poll ends.
func TestWatchedPeerNotificationInLab(t *testing.T) {
	l := lab.New(t)
	tn, err := l.StartTailnet("lab", "alpha-ts", "beta-ts")
	if err != nil {
		t.Fatal(err)
	}
	n := startSkeind(t, l, "skein-desk")
	n.up(tn, "skein-desk")
	var alphaID string
	lab.Eventually(t, 30*time.Second, func() error {
		st := n.status()
		a, b := peerByName(st, "alpha-ts"), peerByName(st, "beta-ts")
		if a == nil || b == nil || !a.Online || !b.Online {
			return fmt.Errorf("peers not online yet")
		}
		alphaID = a.StableID
		return nil
	})
	d := newDesktop(t)
	notes := startNotificationServer(t, d.busAddr)
	d.appPrefs(t, map[string]any{"notify.watchedPeers": alphaID})
	d.startGUI(t, guiBin, "--minimized", "--verbose", "--socket", n.socket)
	it := d.watcher.item(t, d.watcher.waitItem(t, 20*time.Second))
	waitMenu(t, it, 20*time.Second, func(m *menuNode) error { return hasItem(m, "alpha-ts — ", true) })

	stopped := time.Now()
	if err := tn.Peer("alpha-ts").Stop(); err != nil {
		t.Fatal(err)
	}
	var note notifyCall
	lab.Eventually(t, 45*time.Second, func() error {
		for _, c := range notes.recorded() {
			if strings.Contains(c.Summary, "alpha-ts") {
				note = c
				return nil
			}
		}
		return fmt.Errorf("no notification about alpha-ts; sent: %+v", notes.recorded())
	})
	t.Logf("alpha-ts stopped: notified %v later: %q / %q", time.Since(stopped).Round(100*time.Millisecond), note.Summary, note.Body)
	if note.Summary != "alpha-ts went offline" {
		t.Errorf("summary %q", note.Summary)
	}
	// And nothing more: not a second one for it, none for beta-ts or the connection.
	time.Sleep(15 * time.Second)
	if got := notes.recorded(); len(got) != 1 {
		t.Errorf("%d notifications, want 1: %+v", len(got), got)
	}
	// Its action shows the device in the window.
	if err := notes.click(note.ID, "default"); err != nil {
		t.Fatal(err)
	}
	d.shotPage(t, "watched-device.png", false)
}

// TestTrayHostAppearsLater: the app starts before the panel (autostart at login); the tray host
// (StatusNotifierWatcher) comes 5 s later. The tray item registers with it, and its menu works.
func TestTrayHostAppearsLater(t *testing.T) {
	be, sock := fakeHelper(t)
	_ = be
	d := newDesktopWithoutTray(t)
	g := d.startGUI(t, guiBin, "--verbose", "--socket", sock)
	time.Sleep(5 * time.Second)
	if strings.Contains(g.output(), "tray host appeared") {
		t.Fatal("the app saw a tray host before there was one")
	}
	started := time.Now()
	d.watcher = startWatcher(t, d.busAddr)
	it := d.watcher.item(t, d.watcher.waitItem(t, 20*time.Second))
	t.Logf("tray item registered %v after the tray host appeared", time.Since(started).Round(10*time.Millisecond))
	waitMenu(t, it, 10*time.Second, func(m *menuNode) error {
		if err := hasItem(m, "Connected", false); err != nil {
			return err
		}
		return hasItem(m, "Open Skein", true)
	})
	lab.Eventually(t, 10*time.Second, func() error {
		if !strings.Contains(g.output(), "tray host appeared") {
			return fmt.Errorf("the app did not notice the tray host:\n%s", g.output())
		}
		return nil
	})
	waitTitle(t, it, "Skein")
	// The app keeps running with its window hidden: the tray's Quit ends it.
	clickUntil(t, it, "Quit", func() error {
		select {
		case <-g.done:
			return nil
		default:
			return fmt.Errorf("still running")
		}
	})
}

// execCLI runs the skein CLI against a socket.
func execCLI(socket string, args ...string) (string, error) {
	out, err := exec.Command(skeinBin, append([]string{"--socket", socket}, args...)...).CombinedOutput()
	return string(out), err
}

func ctxTimeout(d time.Duration) (context.Context, context.CancelFunc) {
	return context.WithTimeout(context.Background(), d)
}

// fakeHelper serves ipctest's helper with a small running tailnet.
func fakeHelper(t testing.TB) (*ipctest.Backend, string) {
	t.Helper()
	be := ipctest.NewBackend(bigTailnet(3), ipc.Prefs{WantRunning: true})
	sock, _ := ipctest.Serve(t, be, ipc.ServerOptions{})
	return be, sock
}

// newDesktopWithoutTray is a desktop whose panel has not started yet: no tray host.
func newDesktopWithoutTray(t testing.TB) *desktop {
	t.Helper()
	d := &desktop{t: t, home: t.TempDir()}
	d.display = startXvfb(t)
	d.busAddr = startSessionBus(t)
	return d
}
