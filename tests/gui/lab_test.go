package gui_test

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/skeinvpn/skein/internal/lab"
	"github.com/skeinvpn/skein/ipc"
)

// skeind is one skeind in a lab host, as tests/lab starts it.
type skeind struct {
	t      testing.TB
	host   *lab.Host
	proc   *lab.Process
	socket string
}

func startSkeind(t testing.TB, l *lab.Lab, name string) *skeind {
	t.Helper()
	h, err := l.AddHost(name)
	if err != nil {
		t.Fatal(err)
	}
	return startSkeindOn(t, h)
}

// startSkeindOn starts skeind on a host the test made (e.g. behind a NAT).
func startSkeindOn(t testing.TB, h *lab.Host) *skeind {
	t.Helper()
	sockDir, err := os.MkdirTemp("", "skein-sock-")
	if err != nil {
		t.Fatal(err)
	}
	os.Chmod(sockDir, 0o755)
	t.Cleanup(func() { os.RemoveAll(sockDir) })
	n := &skeind{t: t, host: h, socket: filepath.Join(sockDir, "skeind.sock")}
	p, err := h.StartProcess(skeindBin, nil, "--statedir", filepath.Join(h.Dir(), "skein-state"), "--socket", n.socket)
	if err != nil {
		t.Fatal(err)
	}
	n.proc = p
	lab.Eventually(t, 20*time.Second, func() error {
		if p.Exited() {
			return fmt.Errorf("skeind exited: %s", p.Log())
		}
		_, err := os.Stat(n.socket)
		return err
	})
	return n
}

func (n *skeind) client() *ipc.Client { return ipc.NewClient(n.socket) }

func (n *skeind) status() ipc.Status {
	n.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	st, err := n.client().Status(ctx)
	if err != nil {
		n.t.Fatalf("status: %v", err)
	}
	return st
}

// up logs skeind in with the CLI, as a user would.
func (n *skeind) up(tn *lab.Tailnet, hostname string) {
	n.t.Helper()
	key := filepath.Join(n.host.Dir(), "authkey")
	if err := os.WriteFile(key, []byte(tn.AuthKey+"\n"), 0o600); err != nil {
		n.t.Fatal(err)
	}
	out, err := exec.Command(skeinBin, "--socket", n.socket, "up", "--login-server", tn.Control.URL(),
		"--auth-key", "file:"+key, "--hostname", hostname).CombinedOutput()
	if err != nil {
		n.t.Fatalf("skein up: %v\n%s", err, out)
	}
}

func peerByName(st ipc.Status, host string) *ipc.Peer {
	for i := range st.Peers {
		if st.Peers[i].HostName == host {
			return &st.Peers[i]
		}
	}
	return nil
}

// waitMenu polls the tray menu over D-Bus (the test's side; the app itself never polls) until
// check returns nil.
func waitMenu(t testing.TB, it *trayItem, timeout time.Duration, check func(m *menuNode) error) *menuNode {
	t.Helper()
	var m *menuNode
	var last error
	for deadline := time.Now().Add(timeout); time.Now().Before(deadline); time.Sleep(100 * time.Millisecond) {
		var err error
		if m, err = it.layout(); err != nil {
			last = err
			continue
		}
		if last = check(m); last == nil {
			return m
		}
	}
	menu := "(none)"
	if m != nil {
		menu = m.String()
	}
	t.Fatalf("tray menu: %v\nmenu:\n%s", last, menu)
	return nil
}

// clickUntil clicks the item labelled label (read afresh each time: item IDs change whenever
// the app rebuilds its menu, and a click on a stale ID is dropped) until done returns nil.
func clickUntil(t testing.TB, it *trayItem, label string, done func() error) {
	t.Helper()
	var last error
	for deadline := time.Now().Add(45 * time.Second); time.Now().Before(deadline); {
		m, err := it.layout()
		if err != nil {
			last = err
		} else if n := m.find(label); n == nil || n.Label != label || !n.Enabled {
			last = fmt.Errorf("no enabled item %q in\n%s", label, m)
		} else if err := it.click(n.ID); err != nil {
			last = err
		}
		for wait := time.Now().Add(5 * time.Second); time.Now().Before(wait); time.Sleep(100 * time.Millisecond) {
			if last = done(); last == nil {
				return
			}
		}
	}
	t.Fatalf("clicking %q: %v", label, last)
}

func hasItem(m *menuNode, prefix string, enabled bool) error {
	n := m.find(prefix)
	if n == nil {
		return fmt.Errorf("no item %q", prefix)
	}
	if n.Enabled != enabled {
		return fmt.Errorf("item %q enabled=%v, want %v", n.Label, n.Enabled, enabled)
	}
	return nil
}

// TestTrayInLab: skeind logged into Headscale with two official peers; skein-gui under Xvfb
// with a session bus; the tray read and clicked over D-Bus.
func TestTrayInLab(t *testing.T) {
	l := lab.New(t)
	tn, err := l.StartTailnet("lab", "alpha-ts", "beta-ts")
	if err != nil {
		t.Fatal(err)
	}
	n := startSkeind(t, l, "skein-desk")
	n.up(tn, "skein-desk")
	lab.Eventually(t, 30*time.Second, func() error {
		st := n.status()
		for _, p := range []string{"alpha-ts", "beta-ts"} {
			if peerByName(st, p) == nil {
				return fmt.Errorf("%s not in skeind's netmap", p)
			}
		}
		if st.Self == nil || len(st.Self.Addresses) == 0 {
			return fmt.Errorf("no self address yet")
		}
		return nil
	})
	// A direct path to each peer, and traffic through the tunnel while the menu is read, so that
	// the app shows paths in use from its first status (without traffic a peer is idle).
	for _, p := range []string{"alpha-ts", "beta-ts"} {
		lab.Eventually(t, 30*time.Second, func() error {
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			res, err := n.client().Ping(ctx, p)
			if err != nil {
				return err
			}
			if res.Err != "" {
				return fmt.Errorf("ping %s: %s", p, res.Err)
			}
			if res.Endpoint == "" {
				return fmt.Errorf("ping %s: pong via DERP, not direct yet", p)
			}
			return nil
		})
	}
	st := n.status()
	var stopTraffic []func()
	for _, p := range []string{"alpha-ts", "beta-ts"} {
		stopTraffic = append(stopTraffic, trafficTo(t, n.host, peerByName(st, p).FirstIP()))
	}
	selfIP := ""
	for _, a := range st.Self.Addresses {
		if a.Is4() {
			selfIP = a.String()
		}
	}

	d := newDesktop(t)
	launched := time.Now()
	g := d.startGUI(t, guiBin, "--verbose", "--socket", n.socket)
	it := d.watcher.item(t, d.watcher.waitItem(t, 20*time.Second))
	t.Logf("tray item registered %v after launch", time.Since(launched).Round(time.Millisecond))

	if v, err := it.prop("Title"); err != nil || v.Value() != "Skein" {
		t.Errorf("item Title = %v, %v; want Skein", v, err)
	}
	if v, err := it.prop("IconPixmap"); err != nil || fmt.Sprint(v.Value()) == "[]" {
		t.Errorf("item IconPixmap = %v, %v; want an icon", v, err)
	}

	deviceLine := fmt.Sprintf("This device: skein-desk (%s)", selfIP)
	m := waitMenu(t, it, 20*time.Second, func(m *menuNode) error {
		for _, want := range []struct {
			prefix  string
			enabled bool
		}{
			{"Connected", false},
			{"Disconnect", true},
			{deviceLine, true},
			{"Peers", true},
			{"alpha-ts — ", true},
			{"beta-ts — ", true},
			{"Open Skein", true},
			{"Quit", true},
		} {
			if err := hasItem(m, want.prefix, want.enabled); err != nil {
				return err
			}
		}
		for _, p := range []string{"alpha-ts — ", "beta-ts — "} {
			if l := m.find(p).Label; !strings.Contains(l, "direct ") && !strings.Contains(l, "relay (") {
				return fmt.Errorf("peer item %q says neither direct nor relay", l)
			}
		}
		return nil
	})
	t.Logf("tray menu %v after launch:\n%s", time.Since(launched).Round(time.Millisecond), m)
	for _, stop := range stopTraffic {
		stop()
	}
	if peers := m.find("Peers"); len(peers.Children) != 2 {
		t.Errorf("Peers submenu has %d items, want 2:\n%s", len(peers.Children), m)
	}

	// The window, as a person sees it: an artifact of this test (go test -artifacts keeps it),
	// and the README's screenshot when SKEIN_GUI_SCREENSHOT names where to write it.
	time.Sleep(500 * time.Millisecond) // let the window paint its last frame
	shot := d.screenshot(t)
	path := filepath.Join(t.ArtifactDir(), "window.png")
	writePNG(t, path, shot)
	t.Logf("screenshot: %s (%v)", path, shot.Bounds().Size())
	if dst := os.Getenv("SKEIN_GUI_SCREENSHOT"); dst != "" {
		writePNG(t, dst, shot)
	}
	if b := shot.Bounds(); b.Dx() < 400 || b.Dy() < 300 {
		t.Errorf("screenshot is %v: no window on the screen?", b.Size())
	}

	// "Disconnect" clicked through dbusmenu brings skeind to Stopped, and the menu follows.
	clickUntil(t, it, "Disconnect", func() error {
		if s := n.status().State; s != ipc.StateStopped {
			return fmt.Errorf("skeind is %s, want Stopped", s)
		}
		return nil
	})
	waitMenu(t, it, 10*time.Second, func(m *menuNode) error {
		if err := hasItem(m, "Disconnected", false); err != nil {
			return err
		}
		return hasItem(m, "Connect", true)
	})

	// And "Connect" brings it back.
	clickUntil(t, it, "Connect", func() error {
		if s := n.status().State; s != ipc.StateRunning {
			return fmt.Errorf("skeind is %s, want Running", s)
		}
		return nil
	})
	waitMenu(t, it, 10*time.Second, func(m *menuNode) error { return hasItem(m, "Disconnect", true) })

	// A second launch raises the first instance instead of starting another app.
	second := d.startGUI(t, guiBin, "--socket", n.socket)
	select {
	case <-second.done:
		if !strings.Contains(second.output(), "already running") {
			t.Errorf("second launch said: %s", second.output())
		}
	case <-time.After(15 * time.Second):
		t.Error("a second launch did not exit")
	}

	// Quit from the tray ends the app.
	clickUntil(t, it, "Quit", func() error {
		select {
		case <-g.done:
			return nil
		default:
			return errors.New("the app is still running")
		}
	})
}
