//go:build bench

package bench_test

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"text/tabwriter"
	"time"

	"github.com/skeinvpn/skein/internal/lab"
)

// Roaming: the outage when the NAT in front of a node gets a new public address (its
// conntrack flushed, as when a provider hands out another), for Skein and for the official
// client in the same run. The roaming node, behind an easy NAT, and an official public peer ping
// each other every 100 ms; the figures are the seconds of pings lost each way and the time until
// both ends show a direct path again, the peer via the new address.
const (
	roamMarker   = "Roaming: the NAT's public address changes under ping -i 0.1"
	roamTrials   = 3
	roamStream   = 12 * time.Second // each ping stream; the change comes 3 s in
	roamDeadline = 30 * time.Second // for the direct path to come back
)

// roamTrial is one address change.
type roamTrial struct {
	lostOut, lostIn     time.Duration // pings lost node→peer, peer→node
	directOut, directIn time.Duration // until each end shows direct again (0: not within the deadline)
}

type roamSystem struct {
	name   string
	trials []roamTrial
}

// roamNode is the roaming node, whichever system runs it.
type roamNode struct {
	host   *lab.Host
	ip     netip.Addr
	direct func(peer string) error // its own view: direct to peer?
}

func TestBenchRoaming(t *testing.T) {
	started := time.Now()
	l, c, key := tailnet(t)
	ph := addHosts(t, l, "roam-peer")[0]
	peer, err := ph.StartTailscaled("roam-peer")
	if err != nil {
		t.Fatal(err)
	}
	if err := peer.Up(c.URL(), key); err != nil {
		t.Fatal(err)
	}
	pst, err := peer.Status()
	if err != nil {
		t.Fatal(err)
	}
	peerIP := pst.Self.IPv4()

	var systems []*roamSystem
	for _, sys := range []string{"Skein", "tailscaled"} {
		nat, err := l.AddNAT("nat-"+strings.ToLower(sys), lab.EasyNAT)
		if err != nil {
			t.Fatal(err)
		}
		h, err := nat.AddHost("roam-" + strings.ToLower(sys))
		if err != nil {
			t.Fatal(err)
		}
		var n roamNode
		n.host = h
		switch sys {
		case "Skein":
			sk := startSkein(t, h)
			defer sk.stop()
			if err := sk.up(c.URL(), key); err != nil {
				t.Fatal(err)
			}
			n.ip = sk.selfIP()
			n.direct = sk.directTo
		default:
			ts, err := h.StartTailscaled(h.Name())
			if err != nil {
				t.Fatal(err)
			}
			defer ts.Stop()
			if err := ts.Up(c.URL(), key); err != nil {
				t.Fatal(err)
			}
			st, err := ts.Status()
			if err != nil {
				t.Fatal(err)
			}
			n.ip = st.Self.IPv4()
			n.direct = func(p string) error { return tsDirectTo(ts, p) }
		}
		if err := peer.WaitPeers(30*time.Second, h.Name()); err != nil {
			t.Fatal(err)
		}
		peerDirect := func(want netip.Addr) error {
			st, err := peer.Status()
			if err != nil {
				return err
			}
			p := st.PeerByHostName(h.Name())
			if p == nil || !strings.HasPrefix(p.CurAddr, want.String()+":") {
				return fmt.Errorf("roam-peer→%s: %v, want direct via %v", h.Name(), p, want)
			}
			return nil
		}
		lab.Eventually(t, 30*time.Second, func() error {
			h.Run("ping", "-c", "2", "-i", "0.2", "-W", "1", peerIP.String())
			ph.Run("ping", "-c", "2", "-i", "0.2", "-W", "1", n.ip.String())
			if err := n.direct("roam-peer"); err != nil {
				return err
			}
			return peerDirect(nat.PublicAddr())
		})
		rs := &roamSystem{name: sys}
		for i := range roamTrials {
			out := pingLoss(t, h, peerIP, roamStream)
			in := pingLoss(t, ph, n.ip, roamStream)
			time.Sleep(3 * time.Second)
			addr, err := nat.ChangePublicAddr()
			if err != nil {
				t.Fatal(err)
			}
			changed := time.Now()
			var tr roamTrial
			for time.Since(changed) < roamDeadline && (tr.directOut == 0 || tr.directIn == 0) {
				if tr.directOut == 0 && n.direct("roam-peer") == nil {
					tr.directOut = time.Since(changed)
				}
				if tr.directIn == 0 && peerDirect(addr) == nil {
					tr.directIn = time.Since(changed)
				}
				time.Sleep(100 * time.Millisecond)
			}
			tr.lostOut, tr.lostIn = out(), in()
			t.Logf("%s trial %d: lost %.1f s out, %.1f s in; direct again after %v (own view), %v (peer's view)",
				sys, i+1, tr.lostOut.Seconds(), tr.lostIn.Seconds(), tr.directOut.Round(time.Millisecond), tr.directIn.Round(time.Millisecond))
			rs.trials = append(rs.trials, tr)
		}
		systems = append(systems, rs)
	}
	section := roamSummary(started, time.Since(started), systems)
	fmt.Print("\n" + section)
	if err := appendSection(roamMarker, section); err != nil {
		t.Error(err)
	}
}

// pingLoss starts `ping -i 0.1` from h to dst for d; the function it returns waits for the
// end and returns the time lost (unanswered pings times the interval).
func pingLoss(t *testing.T, h *lab.Host, dst netip.Addr, d time.Duration) func() time.Duration {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), d+30*time.Second)
	cmd := h.Command(ctx, "ping", "-n", "-q", "-i", "0.1", "-W", "1", "-w", strconv.Itoa(int(d/time.Second)), dst.String())
	outp, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	res := make(chan time.Duration, 1)
	go func() {
		defer cancel()
		sum := regexp.MustCompile(`(\d+) packets transmitted, (\d+) received`)
		lost := time.Duration(-1)
		sc := bufio.NewScanner(outp)
		for sc.Scan() {
			if m := sum.FindStringSubmatch(sc.Text()); m != nil {
				sent, _ := strconv.Atoi(m[1])
				got, _ := strconv.Atoi(m[2])
				lost = time.Duration(sent-got) * 100 * time.Millisecond
			}
		}
		cmd.Wait()
		res <- lost
	}()
	return func() time.Duration {
		l := <-res
		if l < 0 {
			t.Fatalf("ping %v from %s: no summary", dst, h.Name())
		}
		return l
	}
}

func roamSummary(started time.Time, elapsed time.Duration, systems []*roamSystem) string {
	var b strings.Builder
	fmt.Fprintf(&b, "%s, %s, took %s\n", roamMarker, started.UTC().Format("2006-01-02 15:04 UTC"), elapsed.Round(time.Second))
	fmt.Fprintf(&b, "%s\nload average at the end %s\n", environment(), loadavg())
	fmt.Fprintf(&b, "The roaming node is behind an easy NAT; its peer is official tailscaled on a public host. %d changes each,\n", roamTrials)
	fmt.Fprintf(&b, "seconds, median [min-max]; \"-\" = not direct again within %v.\n\n", roamDeadline)
	tw := tabwriter.NewWriter(&b, 0, 0, 2, ' ', 0)
	fmt.Fprintf(tw, "roaming node\tlost node→peer\tlost peer→node\tdirect again, own view\tdirect again, peer's view\n")
	for _, s := range systems {
		var lo, li, do, di []float64
		missing := 0
		for _, tr := range s.trials {
			lo = append(lo, tr.lostOut.Seconds())
			li = append(li, tr.lostIn.Seconds())
			if tr.directOut > 0 {
				do = append(do, tr.directOut.Seconds())
			} else {
				missing++
			}
			if tr.directIn > 0 {
				di = append(di, tr.directIn.Seconds())
			} else {
				missing++
			}
		}
		note := ""
		if missing > 0 {
			note = fmt.Sprintf(" (%d views never direct)", missing)
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s%s\n", s.name, spread(lo), spread(li), spread(do), spread(di), note)
	}
	tw.Flush()
	return b.String()
}

// appendSection replaces the section that starts with marker in bench-results.txt (up to the
// next section of another benchmark) with section, or adds it at the end.
func appendSection(marker, section string) error {
	path := filepath.Join(repoDir(), "bench-results.txt")
	old, err := os.ReadFile(path)
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		return err
	}
	prev := string(old)
	if i := strings.Index(prev, marker); i >= 0 {
		rest := prev[i+len(marker):]
		end := len(rest)
		for _, m := range []string{dnsMarker, taildropMarker, roamMarker, pmMarker} {
			if j := strings.Index(rest, m); j >= 0 && j < end {
				end = j
			}
		}
		prev = strings.TrimRight(prev[:i], "\n") + "\n\n" + rest[end:]
	}
	prev = strings.Trim(prev, "\n")
	if prev != "" {
		prev += "\n\n"
	}
	return os.WriteFile(path, []byte(prev+section), 0o644)
}
