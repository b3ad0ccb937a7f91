package gui_test

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/skeinvpn/skein/internal/lab"
)

// TestPathChangeInLab: the tray's peer item follows a path change live, from "direct" to
// "relay" when UDP is blocked on skeind's host, and back to "direct" when it is unblocked.
//
// The app only listens to the watch stream. skeind emits no event for a path change as such;
// what the app sees here is the netmap event that follows (skeind's endpoints change and
// control sends the update back), which is why the switch to relay shows some seconds after
// skeind made it.
func TestPathChangeInLab(t *testing.T) {
	l := lab.New(t)
	tn, err := l.StartTailnet("lab", "alpha-ts")
	if err != nil {
		t.Fatal(err)
	}
	n := startSkeind(t, l, "skein-desk")
	n.up(tn, "skein-desk")
	ping := func(want string) func() error {
		return func() error {
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			res, err := n.client().Ping(ctx, "alpha-ts")
			if err != nil {
				return err
			}
			p := peerByName(n.status(), "alpha-ts")
			if p == nil {
				return fmt.Errorf("alpha-ts not in the netmap")
			}
			got := "relay"
			if p.CurAddr != "" {
				got = "direct"
			}
			if got != want {
				return fmt.Errorf("skeind says %s (pong via %q), want %s", got, res.Endpoint, want)
			}
			return nil
		}
	}
	lab.Eventually(t, 60*time.Second, ping("direct"))

	d := newDesktop(t)
	d.startGUI(t, guiBin, "--minimized", "--socket", n.socket)
	it := d.watcher.item(t, d.watcher.waitItem(t, 20*time.Second))
	item := func(want string) func(m *menuNode) error {
		return func(m *menuNode) error {
			p := m.find("alpha-ts — ")
			if p == nil {
				return fmt.Errorf("no alpha-ts item")
			}
			if !strings.Contains(p.Label, want) {
				return fmt.Errorf("alpha-ts item is %q, want %q", p.Label, want)
			}
			return nil
		}
	}
	waitMenu(t, it, 20*time.Second, item("direct "))

	if err := n.host.BlockUDP(); err != nil {
		t.Fatal(err)
	}
	lab.Eventually(t, 60*time.Second, ping("relay"))
	start := time.Now()
	waitMenu(t, it, 30*time.Second, item("relay ("))
	t.Logf("menu showed relay %v after skeind did", time.Since(start).Round(time.Millisecond))

	if err := n.host.UnblockUDP(); err != nil {
		t.Fatal(err)
	}
	lab.Eventually(t, 90*time.Second, ping("direct"))
	start = time.Now()
	waitMenu(t, it, 20*time.Second, item("direct "))
	t.Logf("menu showed direct again %v after skeind did", time.Since(start).Round(time.Millisecond))
}
