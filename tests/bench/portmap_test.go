//go:build bench

package bench_test

import (
	"context"
	"fmt"
	"os/exec"
	"strings"
	"testing"
	"text/tabwriter"
	"time"

	"github.com/skeinvpn/skein/internal/lab"
)

// Hard NAT to hard NAT with a port mapping: fresh nodes behind a hard NAT whose router runs
// miniupnpd (UPnP, NAT-PMP and PCP) ping an official node behind another hard NAT, which has
// no mapping. The figures: how many of 10 fresh Skein nodes get a direct pong within 20 pings,
// and the time from the start of `up` to the first direct pong (official tailscaled in the
// same place, 3 nodes, for comparison).
//
// Each node gets a router of its own: a router keeps the conntrack entry of a peer's flow to
// a mapped port after the mapping is deleted, so the next host mapped to that port would never
// see the peer's packets (measured: 1 of 10 direct with one shared router, the peer's NAT
// reusing its flow). Fresh routers measure what a user behind one would see.
const (
	pmMarker      = "Hard NAT to hard NAT, one router mapping ports (miniupnpd)"
	pmSkeinTrials = 10
	pmTSTrials    = 3
)

func TestBenchPortMapping(t *testing.T) {
	started := time.Now()
	l, c, key := tailnet(t)
	mappedHost := func(name string) *lab.Host {
		nat, err := l.AddNAT("r-"+name, lab.HardNAT)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := nat.EnablePortMapping(lab.PortMappingOptions{UPnP: true, NATPMP: true}); err != nil {
			t.Fatal(err)
		}
		h, err := nat.AddHost(name)
		if err != nil {
			t.Fatal(err)
		}
		return h
	}
	natB, err := l.AddNAT("hard-plain", lab.HardNAT)
	if err != nil {
		t.Fatal(err)
	}
	hb, err := natB.AddHost("peer-hard")
	if err != nil {
		t.Fatal(err)
	}
	peer, err := hb.StartTailscaled("peer-hard")
	if err != nil {
		t.Fatal(err)
	}
	if err := peer.Up(c.URL(), key); err != nil {
		t.Fatal(err)
	}
	var skein, ts []trial
	for i := range pmSkeinTrials {
		h := mappedHost(fmt.Sprintf("mapped-s%d", i+1))
		n := startSkein(t, h)
		start := time.Now()
		if err := n.up(c.URL(), key); err != nil {
			t.Fatal(err)
		}
		skein = append(skein, pingTrial(t, start, h.Name(), func(ctx context.Context) *exec.Cmd {
			return n.cmd(ctx, "ping", "--c", "20", "peer-hard")
		}))
		n.cli("down") // gives the mapping back before the next node asks
		n.stop()
	}
	for i := range pmTSTrials {
		h := mappedHost(fmt.Sprintf("mapped-t%d", i+1))
		tsd, err := h.StartTailscaled(h.Name())
		if err != nil {
			t.Fatal(err)
		}
		start := time.Now()
		if err := tsd.Up(c.URL(), key); err != nil {
			t.Fatal(err)
		}
		ts = append(ts, pingTrial(t, start, h.Name(), func(ctx context.Context) *exec.Cmd {
			return h.Command(ctx, tsd.CLIPath(), "--socket="+tsd.Socket(), "ping", "--c", "20", "peer-hard")
		}))
		tsd.Stop()
	}
	var b strings.Builder
	fmt.Fprintf(&b, "%s, %s, took %s\n", pmMarker, started.UTC().Format("2006-01-02 15:04 UTC"), time.Since(started).Round(time.Second))
	fmt.Fprintf(&b, "%s\nload average at the end %s\n", environment(), loadavg())
	fmt.Fprintf(&b, "Fresh nodes behind a hard NAT whose router maps ports ping an official node behind another hard NAT\n")
	fmt.Fprintf(&b, "(no mapping there) with --c 20; seconds from the start of `up`, median [min-max].\n\n")
	tw := tabwriter.NewWriter(&b, 0, 0, 2, ' ', 0)
	fmt.Fprintf(tw, "mapped node\tdirect\tup returns\tfirst pong\tfirst direct pong\n")
	for _, s := range []struct {
		name   string
		trials []trial
	}{{"Skein", skein}, {"tailscaled", ts}} {
		st := trialStats(s.trials)
		fmt.Fprintf(tw, "%s\t%d of %d\t%s\t%s\t%s\n", s.name, st.ok, len(s.trials), spread(st.up), spread(st.first), spread(st.direct))
	}
	tw.Flush()
	section := b.String()
	fmt.Print("\n" + section)
	if err := appendSection(pmMarker, section); err != nil {
		t.Error(err)
	}
}
