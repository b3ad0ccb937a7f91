package lab_test

import (
	"fmt"
	"net/netip"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/skeinvpn/skein/internal/lab"
)

// transferSize is what every path in the traversal matrix must carry intact.
const transferSize = 200 << 20

// startFastNodeOn starts the plain (non-race) skeind: the matrix moves gigabytes.
func startFastNodeOn(t testing.TB, h *lab.Host) *node {
	t.Helper()
	return startNodeWith(t, h, true)
}

// place puts a new host somewhere in the lab: on the internet, or behind a NAT.
type place func(t testing.TB, l *lab.Lab, name string) *lab.Host

func public(t testing.TB, l *lab.Lab, name string) *lab.Host {
	h, err := l.AddHost(name)
	if err != nil {
		t.Fatal(err)
	}
	return h
}

// behind returns a place that puts hosts on the LAN of one NAT, made on first use.
func behind(kind lab.NATKind, natName string, nat **lab.NAT) place {
	var mu sync.Mutex
	return func(t testing.TB, l *lab.Lab, name string) *lab.Host {
		mu.Lock()
		defer mu.Unlock()
		if *nat == nil {
			n, err := l.AddNAT(natName, kind)
			if err != nil {
				t.Fatal(err)
			}
			*nat = n
		}
		h, err := (*nat).AddHost(name)
		if err != nil {
			t.Fatal(err)
		}
		return h
	}
}

// trio is one Skein node A on one side, and on the other side an official node O and a second
// Skein node B: the pairs A↔O (interop) and A↔B (Skein↔Skein).
type trio struct {
	t    testing.TB
	l    *lab.Lab
	c    *lab.Control
	key  string
	a, b *node
	o    *lab.Tailscaled
}

func newTrio(t testing.TB, sideA, sideB place) *trio {
	t.Helper()
	l, c := labWithUser(t)
	key, err := c.PreAuthKey("lab", true, false)
	if err != nil {
		t.Fatal(err)
	}
	return newTrioOn(t, l, c, key, sideA, sideB)
}

// newTrioOn is newTrio in a lab the caller set up (extra DERP regions, routers with port
// mapping).
func newTrioOn(t testing.TB, l *lab.Lab, c *lab.Control, key string, sideA, sideB place) *trio {
	t.Helper()
	var err error
	tr := &trio{t: t, l: l, c: c, key: key}
	tr.a = startFastNodeOn(t, sideA(t, l, "skein-a"))
	tr.b = startFastNodeOn(t, sideB(t, l, "skein-b"))
	ho := sideB(t, l, "official-o")
	if tr.o, err = ho.StartTailscaled("official-o"); err != nil {
		t.Fatal(err)
	}
	if err := tr.o.Up(c.URL(), key); err != nil {
		t.Fatal(err)
	}
	for _, n := range []*node{tr.a, tr.b} {
		mustOK(t, n.cli("up", "--login-server", c.URL(), "--auth-key", key, "--hostname", n.host.Name()), "skein up on "+n.host.Name())
	}
	// Everyone sees everyone online.
	lab.Eventually(t, 30*time.Second, func() error {
		for _, n := range []*node{tr.a, tr.b} {
			st := n.status()
			for _, other := range []string{"skein-a", "skein-b", "official-o"} {
				if other == n.host.Name() {
					continue
				}
				if p := n.peer(st, other); p == nil || !p.Online {
					return fmt.Errorf("%s does not see %s online", n.host.Name(), other)
				}
			}
		}
		s, err := tr.o.Status()
		if err != nil {
			return err
		}
		for _, other := range []string{"skein-a", "skein-b"} {
			if p := s.PeerByHostName(other); p == nil || !p.Online {
				return fmt.Errorf("official-o does not see %s online", other)
			}
		}
		return nil
	})
	return tr
}

func (tr *trio) officialIP() netip.Addr {
	st, err := tr.o.Status()
	if err != nil {
		tr.t.Fatal(err)
	}
	return st.Self.IPv4()
}

type want int

const (
	wantDirect want = iota
	wantRelay
)

// checkPairs checks A↔O and A↔B: the path both ends report, ICMP, and a checksummed transfer.
func (tr *trio) checkPairs(w want) {
	t := tr.t
	t.Helper()
	oIP, bIP := tr.officialIP(), tr.b.selfIP()
	// Traffic starts discovery, as it would for a user.
	for _, peer := range []string{"official-o", "skein-b"} {
		r := tr.a.cli("ping", "-c", "5", peer)
		t.Logf("skein-a: skein ping %s:\n%s%s", peer, r.stdout, r.stderr)
	}
	pingICMP(t, tr.a.host, oIP)
	pingICMP(t, tr.a.host, bIP)
	pingICMP(t, tr.o.Host(), tr.a.selfIP())
	pingICMP(t, tr.b.host, tr.a.selfIP())
	switch w {
	case wantDirect:
		waitDirect(t, 15*time.Second, "skein-a→official-o", func() string { return tr.a.pathOf("official-o") })
		waitDirect(t, 15*time.Second, "official-o→skein-a", func() string { return officialPath(t, tr.o, "skein-a") })
		waitDirect(t, 15*time.Second, "skein-a→skein-b", func() string { return tr.a.pathOf("skein-b") })
		waitDirect(t, 15*time.Second, "skein-b→skein-a", func() string { return tr.b.pathOf("skein-a") })
	case wantRelay:
		// Give discovery time to (wrongly) succeed, then insist on relay.
		time.Sleep(3 * time.Second)
		for what, path := range map[string]func() string{
			"skein-a→official-o": func() string { return tr.a.pathOf("official-o") },
			"official-o→skein-a": func() string { return officialPath(t, tr.o, "skein-a") },
			"skein-a→skein-b":    func() string { return tr.a.pathOf("skein-b") },
			"skein-b→skein-a":    func() string { return tr.b.pathOf("skein-a") },
		} {
			if p := path(); !strings.HasPrefix(p, "relay ") {
				t.Errorf("%s: path %q, want relay", what, p)
			}
		}
	}
	transfer(t, tr.a.host, tr.o.Host(), oIP, transferSize, 3*time.Minute)
	transfer(t, tr.b.host, tr.a.host, tr.a.selfIP(), transferSize, 3*time.Minute)
	r := tr.a.cli("status")
	t.Logf("skein-a status:\n%s", r.stdout)
}

func (tr *trio) stop() {
	tr.a.stop()
	tr.b.stop()
}

func TestTraversalPublicPublic(t *testing.T) {
	t.Parallel()
	tr := newTrio(t, public, public)
	// Both up and in each other's netmap: the first ping must find the direct path fast.
	start := time.Now()
	r := tr.a.cli("ping", "-c", "3", "official-o")
	if !strings.Contains(r.stdout, "via 198.") {
		t.Errorf("first pings did not go direct:\n%s", r.stdout)
	}
	waitDirect(t, 2*time.Second-time.Since(start), "skein-a→official-o", func() string { return tr.a.pathOf("official-o") })
	t.Logf("direct %v after the first ping", time.Since(start).Round(time.Millisecond))
	tr.checkPairs(wantDirect)
	tr.stop()
}

func TestTraversalEasyNATToPublic(t *testing.T) {
	t.Parallel()
	var nat *lab.NAT
	tr := newTrio(t, behind(lab.EasyNAT, "nat-a", &nat), public)
	tr.checkPairs(wantDirect)
	tr.stop()
}

func TestTraversalEasyNATBoth(t *testing.T) {
	t.Parallel()
	var natA, natB *lab.NAT
	tr := newTrio(t, behind(lab.EasyNAT, "nat-a", &natA), behind(lab.EasyNAT, "nat-b", &natB))
	tr.checkPairs(wantDirect)
	tr.stop()
}

func TestTraversalHardNATBoth(t *testing.T) {
	t.Parallel()
	var natA, natB *lab.NAT
	tr := newTrio(t, behind(lab.HardNAT, "nat-a", &natA), behind(lab.HardNAT, "nat-b", &natB))
	tr.checkPairs(wantRelay)
	tr.stop()
}

// TestTraversalUDPBlocked: with UDP between the sides dropped, traffic goes over DERP; once
// the drop is lifted the path becomes direct again by itself within 15 s.
func TestTraversalUDPBlocked(t *testing.T) {
	t.Parallel()
	tr := newTrio(t, public, public)
	if err := tr.a.host.BlockUDP(tr.o.Host().Addr(), tr.b.host.Addr()); err != nil {
		t.Fatal(err)
	}
	tr.checkPairs(wantRelay)
	if err := tr.a.host.UnblockUDP(); err != nil {
		t.Fatal(err)
	}
	lifted := time.Now()
	// Keep traffic flowing, as a user's would; the heartbeat finds the direct path.
	stop := keepPinging(t, tr.a.host, tr.officialIP(), tr.b.selfIP())
	defer stop()
	waitDirect(t, 15*time.Second, "skein-a→official-o", func() string { return tr.a.pathOf("official-o") })
	waitDirect(t, 15*time.Second, "official-o→skein-a", func() string { return officialPath(t, tr.o, "skein-a") })
	waitDirect(t, 15*time.Second, "skein-a→skein-b", func() string { return tr.a.pathOf("skein-b") })
	t.Logf("direct again %v after the drop was lifted", time.Since(lifted).Round(time.Millisecond))
	stop()
	tr.stop()
}

// keepPinging sends ICMP echoes from h to each address every 200 ms until stopped.
func keepPinging(t testing.TB, h *lab.Host, to ...netip.Addr) (stop func()) {
	done := make(chan struct{})
	var wg sync.WaitGroup
	for _, a := range to {
		wg.Go(func() {
			for {
				select {
				case <-done:
					return
				default:
				}
				h.Run("ping", "-c", "5", "-i", "0.2", "-W", "1", a.String())
			}
		})
	}
	var once sync.Once
	return func() {
		once.Do(func() {
			close(done)
			wg.Wait()
		})
	}
}

// transferAsync runs transfer in the background; wait returns its duration.
func transferAsync(t testing.TB, from, to *lab.Host, toIP netip.Addr, size int64) (wait func()) {
	var wg sync.WaitGroup
	wg.Go(func() { transfer(t, from, to, toIP, size, 3*time.Minute) })
	// If the test fails first, its end still waits for the transfer, so that the transfer's
	// own failure is reported in the test and not after it.
	t.Cleanup(wg.Wait)
	return wg.Wait
}

// Roaming acceptance (issue 12): under `ping -i 0.1` both ways between the roaming Skein node
// A and each peer (official O, Skein B), a change of A's network costs at most roamLossBudget
// of pings per stream, and every pair is direct again, in both ends' views, within
// roamDirectBudget of the change.
const (
	roamLossBudget   = 2 * time.Second
	roamDirectBudget = 5 * time.Second
)

// roamStreams starts `ping -i 0.1` A→O, O→A, A→B and B→A for d.
func (tr *trio) roamStreams(d time.Duration) (wait func() []pingStats) {
	oIP, aIP, bIP := tr.officialIP(), tr.a.selfIP(), tr.b.selfIP()
	ws := []func() pingStats{
		pingStream(tr.t, "skein-a→official-o", tr.a.host, oIP, d),
		pingStream(tr.t, "official-o→skein-a", tr.o.Host(), aIP, d),
		pingStream(tr.t, "skein-a→skein-b", tr.a.host, bIP, d),
		pingStream(tr.t, "skein-b→skein-a", tr.b.host, aIP, d),
	}
	return func() []pingStats {
		var out []pingStats
		for _, w := range ws {
			out = append(out, w())
		}
		return out
	}
}

// paths are the four views of the trio's two pairs; officialWant, when set, is the address
// O must reach A at.
func (tr *trio) paths(officialWant string) map[string]func() string {
	t := tr.t
	return map[string]func() string{
		"skein-a→official-o": func() string { return tr.a.pathOf("official-o") },
		"official-o→skein-a": func() string {
			p := officialPath(t, tr.o, "skein-a")
			if officialWant != "" && strings.HasPrefix(p, "direct ") && !strings.Contains(p, officialWant) {
				return "stale " + p
			}
			return p
		},
		"skein-a→skein-b": func() string { return tr.a.pathOf("skein-b") },
		"skein-b→skein-a": func() string { return tr.b.pathOf("skein-a") },
	}
}

// TestTraversalLinkFlap: A's link goes down for 3 s and comes back under ping streams both
// ways: beyond the time the link was down, each stream loses at most roamLossBudget, and every
// path is direct again within roamDirectBudget of the link's return.
func TestTraversalLinkFlap(t *testing.T) {
	t.Parallel()
	tr := newTrio(t, public, public)
	tr.checkDirectQuick()
	wait := tr.roamStreams(12 * time.Second)
	time.Sleep(3 * time.Second)
	if err := tr.a.host.LinkDown(); err != nil {
		t.Fatal(err)
	}
	down := time.Now()
	time.Sleep(3 * time.Second)
	if err := tr.a.host.LinkUp(); err != nil {
		t.Fatal(err)
	}
	up := time.Now()
	downFor := up.Sub(down)
	took := directWithin(t, up, roamDirectBudget, tr.paths(""))
	t.Logf("direct again after the link came back: %v", took)
	for _, s := range wait() {
		t.Logf("%v", s)
		if beyond := s.lost() - downFor; beyond > roamLossBudget {
			t.Errorf("%s lost %.1f s beyond the %.1f s the link was down (budget %v)", s.what, beyond.Seconds(), downFor.Seconds(), roamLossBudget)
		}
	}
	tr.stop()
}

// TestTraversalNATAddressChange: the NAT in front of A gets a new public address (its
// conntrack flushed, as when an ISP hands out another) under ping streams both ways: each
// stream loses at most roamLossBudget, and every pair is direct again within roamDirectBudget,
// the official peer via A's new address.
func TestTraversalNATAddressChange(t *testing.T) {
	t.Parallel()
	var nat *lab.NAT
	tr := newTrio(t, behind(lab.EasyNAT, "nat-a", &nat), public)
	tr.checkDirectQuick()
	wait := tr.roamStreams(10 * time.Second)
	time.Sleep(3 * time.Second)
	old := nat.PublicAddr()
	naddr, err := nat.ChangePublicAddr()
	if err != nil {
		t.Fatal(err)
	}
	changed := time.Now()
	t.Logf("NAT public address %v -> %v", old, naddr)
	took := directWithin(t, changed, roamDirectBudget, tr.paths(naddr.String()+":"))
	t.Logf("direct again after the change: %v", took)
	for _, s := range wait() {
		t.Logf("%v", s)
		if s.lost() > roamLossBudget {
			t.Errorf("%s lost %.1f s of pings (budget %v)", s.what, s.lost().Seconds(), roamLossBudget)
		}
	}
	// Transfers still work both ways over the new paths.
	transfer(t, tr.a.host, tr.o.Host(), tr.officialIP(), 50<<20, time.Minute)
	transfer(t, tr.b.host, tr.a.host, tr.a.selfIP(), 50<<20, time.Minute)
	tr.stop()
}

// TestTraversalDERPDown: with direct paths up, stopping the DERP server (embedded in
// Headscale) does not disturb traffic.
func TestTraversalDERPDown(t *testing.T) {
	t.Parallel()
	tr := newTrio(t, public, public)
	tr.checkDirectQuick()
	if err := tr.c.Stop(); err != nil {
		t.Fatal(err)
	}
	stopPing := keepPinging(t, tr.a.host, tr.officialIP(), tr.b.selfIP())
	defer stopPing()
	transfer(t, tr.a.host, tr.o.Host(), tr.officialIP(), transferSize, time.Minute)
	transfer(t, tr.b.host, tr.a.host, tr.a.selfIP(), transferSize, time.Minute)
	for what, path := range map[string]func() string{
		"skein-a→official-o": func() string { return tr.a.pathOf("official-o") },
		"official-o→skein-a": func() string { return officialPath(t, tr.o, "skein-a") },
		"skein-a→skein-b":    func() string { return tr.a.pathOf("skein-b") },
	} {
		if p := path(); !strings.HasPrefix(p, "direct ") {
			t.Errorf("%s with DERP down: path %q, want direct", what, p)
		}
	}
	stopPing()
	if err := tr.c.Start(); err != nil {
		t.Fatal(err)
	}
	tr.stop()
}

// checkDirectQuick gets both pairs onto direct paths (ping, then wait).
func (tr *trio) checkDirectQuick() {
	tr.t.Helper()
	for _, peer := range []string{"official-o", "skein-b"} {
		tr.a.cli("ping", "-c", "5", peer)
	}
	pingICMP(tr.t, tr.o.Host(), tr.a.selfIP())
	pingICMP(tr.t, tr.b.host, tr.a.selfIP())
	tr.waitAllDirect(15 * time.Second)
}

func (tr *trio) waitAllDirect(d time.Duration) {
	tr.t.Helper()
	t := tr.t
	waitDirect(t, d, "skein-a→official-o", func() string { return tr.a.pathOf("official-o") })
	waitDirect(t, d, "official-o→skein-a", func() string { return officialPath(t, tr.o, "skein-a") })
	waitDirect(t, d, "skein-a→skein-b", func() string { return tr.a.pathOf("skein-b") })
	waitDirect(t, d, "skein-b→skein-a", func() string { return tr.b.pathOf("skein-a") })
}
