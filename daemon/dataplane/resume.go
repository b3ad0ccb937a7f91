package dataplane

import (
	"bufio"
	"context"
	"encoding/hex"
	"strconv"
	"strings"
	"time"

	"golang.zx2c4.com/wireguard/device"
)

// After a suspend, or skeind frozen (SIGSTOP, a stopped cgroup), the WireGuard sessions are past
// their key lifetime and the socket holds the handshake initiations peers sent meanwhile, all
// stale: their senders gave up on them. Answering them is what wireguard-go does first, and an
// answer counts as a handshake sent, so our own new initiation waits out the 5 s retry timer
// while the peer ignores the answers. Seeing the gap, we drop those half-done handshakes and
// start fresh ones with every peer that had a session before it: traffic flows again within a
// round trip (issue 14, R16).
const (
	// resumeGap is how late the host watch's 10 s tick may come before it counts as a freeze: a
	// handshake retry (5 s), beyond any scheduling delay on a loaded machine. The tick is one
	// that runs anyway, so noticing costs no wakeup: after SIGSTOP the late tick fires at once;
	// after a suspend (the monotonic clock, which timers follow, stood still) within 10 s.
	resumeGap = 5 * time.Second
	// resumeSettle lets the packets queued during the freeze be read before the new handshakes,
	// so that no stale initiation replaces ours.
	resumeSettle = 300 * time.Millisecond
	// rejectAfterTime is WireGuard's key lifetime: peers with a handshake this close before the
	// freeze had a session.
	rejectAfterTime = 180 * time.Second
)

// checkResume is called on each tick of period; last is the previous tick's time. A tick late
// by either clock (the wall clock also counts a suspend) starts new handshakes.
func (d *Dataplane) checkResume(ctx context.Context, last, now time.Time, period time.Duration) {
	gap := max(now.Sub(last), now.Round(0).Sub(last.Round(0)))
	if gap <= period+resumeGap {
		return
	}
	go func() {
		select {
		case <-ctx.Done():
			return
		case <-time.After(resumeSettle):
		}
		n := d.rehandshake(last.Round(0).Add(-rejectAfterTime))
		d.logf("dataplane: skeind did not run for %v (suspend or freeze); new handshakes with %d peers", (gap - period).Round(time.Second), n)
	}()
}

// rehandshake starts a new handshake with every peer whose last one was after since, and
// returns how many.
func (d *Dataplane) rehandshake(since time.Time) int {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.closed {
		return 0
	}
	n, err := rehandshakeDevice(d.dev, since)
	if err != nil {
		d.logf("dataplane: reading WireGuard's peers: %v", err)
	}
	return n
}

func rehandshakeDevice(dev *device.Device, since time.Time) (int, error) {
	keys, err := recentHandshakes(dev, since)
	n := 0
	for _, k := range keys {
		p := dev.LookupPeer(k)
		if p == nil {
			continue
		}
		// Forget the half-done handshakes (our answers to stale initiations) and the old keys,
		// which also lifts the retry timer.
		p.ExpireCurrentKeypairs()
		p.SendHandshakeInitiation(false)
		n++
	}
	return n, err
}

// recentHandshakes lists the peers of dev whose last handshake was after since.
func recentHandshakes(dev *device.Device, since time.Time) ([]device.NoisePublicKey, error) {
	cfg, err := dev.IpcGet()
	if err != nil {
		return nil, err
	}
	var out []device.NoisePublicKey
	var cur device.NoisePublicKey
	have := false
	sc := bufio.NewScanner(strings.NewReader(cfg))
	for sc.Scan() {
		k, v, _ := strings.Cut(sc.Text(), "=")
		switch k {
		case "public_key":
			b, err := hex.DecodeString(v)
			have = err == nil && len(b) == len(cur)
			if have {
				copy(cur[:], b)
			}
		case "last_handshake_time_sec":
			sec, err := strconv.ParseInt(v, 10, 64)
			if have && err == nil && sec > 0 && time.Unix(sec, 0).After(since) {
				out = append(out, cur)
				have = false
			}
		}
	}
	return out, sc.Err()
}
