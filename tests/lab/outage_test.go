package lab_test

import (
	"fmt"
	"testing"
	"time"

	"github.com/skeinvpn/skein/internal/lab"
	"github.com/skeinvpn/skein/ipc"
)

// TestControlOutage: Headscale goes away for 15 s; skeind reconnects by itself when it is
// back, and a peer that joins after the return shows up within 10 s.
func TestControlOutage(t *testing.T) {
	t.Parallel()
	l, tn, n := joinedNode(t, "skein-o", "alpha-ts")
	c := tn.Control
	pid := n.proc.Pid()

	if err := c.Stop(); err != nil {
		t.Fatal(err)
	}
	lab.Eventually(t, 15*time.Second, func() error {
		if n.status().ControlConnected {
			return fmt.Errorf("still connected to a stopped server")
		}
		return nil
	})
	time.Sleep(15 * time.Second)
	if st := n.status(); st.State != ipc.StateRunning {
		t.Errorf("state %s during the outage; want Running (the data plane keeps going)", st.State)
	}
	if err := c.Start(); err != nil {
		t.Fatal(err)
	}
	back := time.Now()
	lab.Eventually(t, 10*time.Second, func() error {
		if !n.status().ControlConnected {
			return fmt.Errorf("not reconnected")
		}
		return nil
	})
	t.Logf("reconnected %v after the server returned", time.Since(back).Round(time.Millisecond))

	// A peer added after the return appears within 10 s of joining.
	h, err := l.AddHost("beta-ts")
	if err != nil {
		t.Fatal(err)
	}
	beta, err := h.StartTailscaled("beta-ts")
	if err != nil {
		t.Fatal(err)
	}
	if err := beta.Up(c.URL(), tn.AuthKey); err != nil {
		t.Fatal(err)
	}
	joined := time.Now()
	lab.Eventually(t, 10*time.Second, func() error {
		st := n.status()
		p := n.peer(st, "beta-ts")
		if p == nil || !p.Online {
			return fmt.Errorf("beta-ts not (online) in netmap: %+v", p)
		}
		return nil
	})
	t.Logf("beta-ts appeared %v after joining", time.Since(joined).Round(time.Millisecond))
	if n.proc.Pid() != pid || n.proc.Exited() {
		t.Fatal("skeind restarted")
	}
	n.stop()
}
