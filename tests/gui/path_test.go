package gui_test

import (
	"context"
	"fmt"
	"os/exec"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/skeinvpn/skein/internal/lab"
)

// TestPathInLab: the tray names the path in use, the way `skein status` does, as a new user
// meets it: skeind behind an easy NAT, an official peer on the internet.
//
//   - No traffic yet: the peer is idle, never "relay" (its home relay is not a path in use).
//   - Traffic through the tunnel (not disco pings, which carry none): direct.
//   - For 3 minutes after the last traffic, sampled every 100 ms: direct, then idle once the
//     session ends (45 s after the last send, as the official client counts), never "relay" in
//     between: the direct path lapses only after the session, when nothing is sent anyway.
//   - UDP blocked at the NAT, and traffic: relay. Unblocked, and traffic: direct again.
func TestPathInLab(t *testing.T) {
	l := lab.New(t)
	tn, err := l.StartTailnet("lab", "alpha-ts")
	if err != nil {
		t.Fatal(err)
	}
	nat, err := l.AddNAT("home", lab.EasyNAT)
	if err != nil {
		t.Fatal(err)
	}
	h, err := nat.AddHost("skein-desk")
	if err != nil {
		t.Fatal(err)
	}
	n := startSkeindOn(t, h)
	n.up(tn, "skein-desk")
	var alphaIP string
	lab.Eventually(t, 30*time.Second, func() error {
		p := peerByName(n.status(), "alpha-ts")
		if p == nil || !p.Online || p.Relay == "" {
			return fmt.Errorf("alpha-ts not online with a home relay in skeind's netmap: %+v", p)
		}
		alphaIP = p.FirstIP()
		return nil
	})
	// The case of the issue: a home relay is known, no packet has taken any path.
	if p := peerByName(n.status(), "alpha-ts"); p.Active || p.TxBytes != 0 {
		t.Fatalf("alpha-ts has traffic before the test sent any: %+v", p)
	}

	d := newDesktop(t)
	d.startGUI(t, guiBin, "--minimized", "--socket", n.socket)
	it := d.watcher.item(t, d.watcher.waitItem(t, 20*time.Second))
	labels := recordLabels(t, it, "alpha-ts — ")

	// Idle: the label never says relay (or direct) while no traffic flows.
	idle := "alpha-ts — idle"
	waitLabel(t, labels, 20*time.Second, func(l string) bool { return l == idle })
	time.Sleep(10 * time.Second) // long enough for two of skeind's path checks
	noTraffic := labels.since(time.Time{})
	for _, s := range noTraffic {
		if s.label != idle && s.label != "" { // "": the app's first menu, before skeind's status
			t.Errorf("without traffic the tray said %q (labels: %v)", s.label, noTraffic)
		}
	}
	if line := n.statusLine(t, "alpha-ts"); !strings.HasSuffix(line, " -") {
		t.Errorf("skein status says %q for the idle peer, want -", line)
	}
	t.Logf("no traffic: %v", noTraffic)

	// Traffic: direct.
	start := time.Now()
	if out, err := h.Run("ping", "-c", "5", "-i", "0.2", "-W", "2", alphaIP); err != nil {
		t.Fatalf("ping through the tunnel: %v\n%s", err, out)
	}
	lastTraffic := time.Now()
	waitLabel(t, labels, 30*time.Second, func(l string) bool { return strings.HasPrefix(l, "alpha-ts — direct ") })
	t.Logf("traffic: %v", labels.since(start))

	// Three minutes after the last traffic: idle, never relay on the way.
	time.Sleep(time.Until(lastTraffic.Add(3 * time.Minute)))
	decay := labels.since(lastTraffic)
	t.Logf("3 min after the last traffic (%s): %v (%d samples, longest gap %v)", lastTraffic.Format("15:04:05.0"), decay,
		labels.count(lastTraffic), labels.maxGap(lastTraffic).Round(time.Millisecond))
	for _, s := range decay {
		if !strings.HasPrefix(s.label, "alpha-ts — direct ") && s.label != idle {
			t.Errorf("after traffic stopped the tray said %q at +%v", s.label, s.at.Sub(lastTraffic).Round(time.Millisecond))
		}
	}
	if got := labels.last(); got != idle {
		t.Errorf("3 min after the last traffic the tray says %q, want %q", got, idle)
	}
	// skeind looks for path changes every 5 s, so a label it got wrong holds for at least that
	// long unless another event follows at once: reads 4 s apart at worst (100 ms normally; the
	// app answers slower on a loaded machine) see every such label.
	if gap := labels.maxGap(lastTraffic); gap > 4*time.Second {
		t.Errorf("the tray was read only every %v at worst: too seldom to catch a wrong label", gap)
	}
	// By now the direct path has lapsed too, so a front end that took the home relay for the
	// path in use would say relay: the state the old tray got wrong.
	if p := peerByName(n.status(), "alpha-ts"); p.Active || p.CurAddr != "" || p.Relay == "" || p.LastAddr == "" {
		t.Errorf("skeind's view 3 min after traffic: active=%v curAddr=%q relay=%q lastAddr=%q; want idle, lapsed, with a home relay and the last direct address",
			p.Active, p.CurAddr, p.Relay, p.LastAddr)
	}
	if line := n.statusLine(t, "alpha-ts"); !strings.Contains(line, " idle, tx ") {
		t.Errorf("skein status says %q for the peer after traffic, want idle", line)
	}

	// UDP blocked at the NAT, and traffic: relay.
	if err := nat.BlockUDP(); err != nil {
		t.Fatal(err)
	}
	start = time.Now()
	stopTraffic := trafficTo(t, h, alphaIP)
	waitLabel(t, labels, 30*time.Second, func(l string) bool { return strings.HasPrefix(l, "alpha-ts — relay (") })
	t.Logf("UDP blocked, traffic: %v", labels.since(start))
	if line := n.statusLine(t, "alpha-ts"); !strings.Contains(line, "active; relay ") {
		t.Errorf("skein status says %q with UDP blocked, want active; relay", line)
	}

	// Unblocked, traffic still flowing: direct again.
	if err := nat.UnblockUDP(); err != nil {
		t.Fatal(err)
	}
	start = time.Now()
	waitLabel(t, labels, 60*time.Second, func(l string) bool { return strings.HasPrefix(l, "alpha-ts — direct ") })
	stopTraffic()
	t.Logf("UDP unblocked, traffic: %v", labels.since(start))
}

// statusLine is the peer's line of `skein status`.
func (n *skeind) statusLine(t testing.TB, host string) string {
	t.Helper()
	out, err := exec.Command(skeinBin, "--socket", n.socket, "status").CombinedOutput()
	if err != nil {
		t.Fatalf("skein status: %v\n%s", err, out)
	}
	for line := range strings.SplitSeq(string(out), "\n") {
		if f := strings.Fields(line); len(f) > 1 && f[1] == host {
			return strings.TrimSpace(line)
		}
	}
	t.Fatalf("no %s in skein status:\n%s", host, out)
	return ""
}

// trafficTo pings addr through the tunnel from h, five times a second, until the returned
// function is called.
func trafficTo(t testing.TB, h *lab.Host, addr string) (stop func()) {
	ctx, cancel := context.WithCancel(context.Background())
	cmd := h.Command(ctx, "ping", "-i", "0.2", "-W", "1", addr)
	if err := cmd.Start(); err != nil {
		cancel()
		t.Fatal(err)
	}
	var once sync.Once
	stop = func() {
		once.Do(func() {
			cancel()
			cmd.Wait()
		})
	}
	t.Cleanup(stop)
	return stop
}

// labelLog records what one tray item says, read over D-Bus every 100 ms.
type labelLog struct {
	mu      sync.Mutex
	changes []labelAt // each change of the label, the first read included
	reads   []time.Time
}

type labelAt struct {
	at    time.Time
	label string
}

func (s labelAt) String() string { return fmt.Sprintf("%s %q", s.at.Format("15:04:05.0"), s.label) }

// recordLabels reads the menu until the test ends and records the label of the item whose
// label starts with prefix ("" while there is none).
func recordLabels(t testing.TB, it *trayItem, prefix string) *labelLog {
	l := &labelLog{}
	done := make(chan struct{})
	stopped := make(chan struct{})
	go func() {
		defer close(stopped)
		tick := time.NewTicker(100 * time.Millisecond)
		defer tick.Stop()
		for {
			select {
			case <-done:
				return
			case <-tick.C:
			}
			m, err := it.layout()
			if err != nil {
				continue // the menu was being replaced; read it again next time
			}
			label := ""
			if n := m.find(prefix); n != nil {
				label = n.Label
			}
			now := time.Now()
			l.mu.Lock()
			l.reads = append(l.reads, now)
			if len(l.changes) == 0 || l.changes[len(l.changes)-1].label != label {
				l.changes = append(l.changes, labelAt{now, label})
			}
			l.mu.Unlock()
		}
	}()
	t.Cleanup(func() {
		close(done)
		<-stopped
	})
	return l
}

// since is the label at t0 and every change after it.
func (l *labelLog) since(t0 time.Time) []labelAt {
	l.mu.Lock()
	defer l.mu.Unlock()
	start := 0
	for i, c := range l.changes {
		if c.at.After(t0) {
			break
		}
		start = i
	}
	return slices.Clone(l.changes[start:])
}

func (l *labelLog) last() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	if len(l.changes) == 0 {
		return ""
	}
	return l.changes[len(l.changes)-1].label
}

// count is the number of reads since t0.
func (l *labelLog) count(t0 time.Time) int {
	l.mu.Lock()
	defer l.mu.Unlock()
	n := 0
	for _, r := range l.reads {
		if !r.Before(t0) {
			n++
		}
	}
	return n
}

// maxGap is the longest time without a read since t0 (up to now).
func (l *labelLog) maxGap(t0 time.Time) time.Duration {
	l.mu.Lock()
	defer l.mu.Unlock()
	prev, gap := t0, time.Duration(0)
	for _, r := range l.reads {
		if r.Before(t0) {
			continue
		}
		gap = max(gap, r.Sub(prev))
		prev = r
	}
	return max(gap, time.Since(prev))
}

func waitLabel(t testing.TB, l *labelLog, timeout time.Duration, ok func(string) bool) {
	t.Helper()
	for deadline := time.Now().Add(timeout); time.Now().Before(deadline); time.Sleep(50 * time.Millisecond) {
		if ok(l.last()) {
			return
		}
	}
	t.Fatalf("the tray item stayed %q (labels: %v)", l.last(), l.since(time.Time{}))
}
