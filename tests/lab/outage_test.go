package lab_test

import (
	"fmt"
	"testing"
	"time"

	"github.com/skeinvpn/skein/internal/lab"
	"github.com/skeinvpn/skein/ipc"
)

// TestControlOutage: Headscale goes away for 15 s; traffic with a peer keeps flowing both ways
// all the while (pings and checksummed transfers during the outage), skeind reconnects by
// itself when the server is back, and a peer that joins after the return shows up within 10 s.
func TestControlOutage(t *testing.T) {
	t.Parallel()
	l, tn, n := joinedNode(t, "skein-o", "alpha-ts")
	c := tn.Control
	pid := n.proc.Pid()
	alpha := tn.Peer("alpha-ts")
	ast, err := alpha.Status()
	if err != nil {
		t.Fatal(err)
	}
	alphaIP := ast.Self.IPv4()
	pingICMP(t, n.host, alphaIP) // the path is up before the outage

	if err := c.Stop(); err != nil {
		t.Fatal(err)
	}
	down := time.Now()
	lab.Eventually(t, 15*time.Second, func() error {
		if n.status().ControlConnected {
			return fmt.Errorf("still connected to a stopped server")
		}
		return nil
	})
	// The data plane keeps going without control: both directions, for the whole outage.
	for time.Since(down) < 15*time.Second {
		pingICMP(t, n.host, alphaIP)
		transfer(t, n.host, alpha.Host(), alphaIP, 4<<20, 30*time.Second)
		transfer(t, alpha.Host(), n.host, n.selfIP(), 4<<20, 30*time.Second)
		time.Sleep(time.Second)
	}
	if st := n.status(); st.State != ipc.StateRunning || st.ControlConnected {
		t.Errorf("during the outage: state %s, control connected %v; want Running without control", st.State, st.ControlConnected)
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
