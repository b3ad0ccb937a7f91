package lab_test

import (
	"fmt"
	"net/netip"
	"os"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/skeinvpn/skein/internal/lab"
)

// reachableBudget is how soon after the start of `skein up` (login included) an official peer
// must reach a fresh Skein node that has no UDP at all: only its home DERP region can carry the
// first packet, so the region must be chosen and reach control (and through it the peer) at once.
const reachableBudget = 5 * time.Second

// TestReachableOverDERPAtOnce: ten fresh Skein nodes in a row, each on a network that drops all
// UDP, are each reachable by an official node over DERP within reachableBudget of the start of
// `skein up`. It runs beside the rest of the lab, so the machine is loaded: the regression test
// for home DERP reports that lagged or were lost (issue 12: 43 s in a CI run).
func TestReachableOverDERPAtOnce(t *testing.T) {
	t.Parallel()
	rounds := 10
	if s := os.Getenv("SKEIN_LAB_DERPHOME_ROUNDS"); s != "" {
		fmt.Sscan(s, &rounds)
	}
	l := lab.New(t)
	tn, err := l.StartTailnet("lab", "alpha-ts")
	if err != nil {
		t.Fatal(err)
	}
	alpha := tn.Peer("alpha-ts")
	var took []time.Duration
	for i := range rounds {
		name := fmt.Sprintf("sk-udpless-%d", i)
		h, err := l.AddHost(name)
		if err != nil {
			t.Fatal(err)
		}
		if err := h.BlockUDP(); err != nil {
			t.Fatal(err)
		}
		n := startNodeWith(t, h, true)
		start := time.Now()
		mustOK(t, n.cli("up", "--login-server", tn.Control.URL(), "--auth-key", tn.AuthKey, "--hostname", name), "skein up")
		upTook := time.Since(start)
		ip := n.selfIP()
		reached, err := firstPing(alpha.Host(), ip, start.Add(reachableBudget+10*time.Second))
		if err != nil {
			t.Errorf("round %d: alpha never reached %s (%s): %v; alpha sees it as %s", i, name, ip, err, peerString(t, alpha, name))
			n.stop()
			continue
		}
		d := reached.Sub(start)
		took = append(took, d)
		t.Logf("round %d: up returned after %.2f s; alpha reached %s over DERP %.2f s after the start of up (path %q)",
			i, upTook.Seconds(), name, d.Seconds(), officialPath(t, alpha, name))
		if d > reachableBudget {
			t.Errorf("round %d: alpha reached %s only %.2f s after the start of up (budget %v)", i, name, d.Seconds(), reachableBudget)
		}
		n.stop()
	}
	if len(took) > 0 {
		slices.Sort(took)
		t.Logf("reachable over DERP after the start of up: median %.2f s, worst %.2f s (%d rounds)",
			took[len(took)/2].Seconds(), took[len(took)-1].Seconds(), len(took))
	}
}

// firstPing pings to from h every 100 ms (each echo waits up to 1 s) until one answers, and
// returns when the answered echo was sent.
func firstPing(h *lab.Host, to netip.Addr, deadline time.Time) (time.Time, error) {
	type answer struct {
		sent time.Time
		err  error
	}
	answers := make(chan answer, 64)
	inFlight := 0
	var last error
	tick := time.NewTicker(100 * time.Millisecond)
	defer tick.Stop()
	for {
		select {
		case a := <-answers:
			inFlight--
			if a.err == nil {
				return a.sent, nil
			}
			last = a.err
			continue
		case <-tick.C:
		}
		if time.Now().After(deadline) {
			if last == nil {
				last = fmt.Errorf("no answer by the deadline")
			}
			return time.Time{}, last
		}
		if inFlight >= 12 {
			continue
		}
		inFlight++
		sent := time.Now()
		go func() {
			out, err := h.Run("ping", "-c", "1", "-W", "1", to.String())
			if err != nil {
				err = fmt.Errorf("%v: %s", err, strings.TrimSpace(out))
			}
			answers <- answer{sent, err}
		}()
	}
}

func peerString(t testing.TB, ts *lab.Tailscaled, host string) string {
	st, err := ts.Status()
	if err != nil {
		return err.Error()
	}
	return st.PeerByHostName(host).String()
}
