//go:build bench

package bench_test

import (
	"context"
	"crypto/tls"
	"fmt"
	"io"
	"net/http"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/skeinvpn/skein/daemon/control/controltest"
	"github.com/skeinvpn/skein/daemon/key"
	"github.com/skeinvpn/skein/daemon/wire"
	"github.com/skeinvpn/skein/internal/lab"
	"github.com/skeinvpn/skein/ipc"
)

// Scale targets (issue "skeind's core"): per single-peer delta through the data plane, skeind's
// RSS with the map applied, and status latency while deltas stream.
const (
	scalePeers         = 10000
	scaleDeltaTargetMs = 1.0
	scaleDeltaStretch  = 0.2
	scaleRSSTargetMB   = 60
	scaleStatusP99Ms   = 50
)

// TestBenchScale: skeind logs in to a fake control server (the real wire protocol) whose
// tailnet has 10,000 peers, then takes a stream of single-peer deltas (online changes,
// endpoint changes, new peers) while a client asks for status in a loop.
func TestBenchScale(t *testing.T) {
	peers := scalePeers
	if s := os.Getenv("SKEIN_BENCH_SCALE_PEERS"); s != "" {
		fmt.Sscan(s, &peers)
	}
	l := lab.New(t)
	ctl, err := l.AddHost("fakectl")
	if err != nil {
		t.Fatal(err)
	}
	cs := controltest.New(controltest.Options{AuthKey: "scale-key", Logf: t.Logf})
	cs.SetMap(controltest.Map{
		Peers: controltest.SyntheticPeers(peers, 1),
		// A relay nobody answers on: the transport keeps a home region without traffic.
		DERPMap: &wire.DERPMap{Regions: map[int]*wire.DERPRegion{1: {RegionID: 1, RegionCode: "void", Nodes: []*wire.DERPNode{
			{Name: "1", RegionID: 1, HostName: ctl.Addr().String(), IPv4: ctl.Addr().String(), DERPPort: 9, STUNPort: -1},
		}}}},
	})
	certFile, keyFile, err := l.IssueCert("fakectl", ctl.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	cert, err := tls.LoadX509KeyPair(certFile, keyFile)
	if err != nil {
		t.Fatal(err)
	}
	ln, err := ctl.Listen("tcp", netip.AddrPortFrom(ctl.Addr(), 443).String())
	if err != nil {
		t.Fatal(err)
	}
	hs := &http.Server{Handler: cs.Handler(), TLSConfig: &tls.Config{Certificates: []tls.Certificate{cert}}}
	go hs.ServeTLS(ln, "", "")
	defer hs.Close()

	h, err := l.AddHost("skein-scale")
	if err != nil {
		t.Fatal(err)
	}
	// SKEIN_BENCH_PROFILE=DIR saves skeind's heap once the map has settled and a CPU profile
	// taken while the deltas stream.
	profDir := os.Getenv("SKEIN_BENCH_PROFILE")
	var env []string
	if profDir != "" {
		env = append(env, "SKEIN_PPROF=127.0.0.1:6060")
	}
	n := startSkein(t, h, env...)
	start := time.Now()
	if err := n.up("https://"+ctl.Addr().String(), "scale-key"); err != nil {
		t.Fatal(err)
	}
	fullApply := time.Since(start)
	c := ipc.NewClient(n.socket)
	st := status(t, c)
	if len(st.Peers) != peers || st.Engine == nil {
		t.Fatalf("skeind shows %d peers (want %d), engine %+v", len(st.Peers), peers, st.Engine)
	}
	firstApplyMs := st.Engine.ApplyMaxMs
	time.Sleep(10 * time.Second) // let the first burst settle before reading memory
	if profDir != "" {
		saveProfile(t, h, profDir, "heap-settled.pprof", "/debug/pprof/heap?gc=1")
	}
	rss, hwm, err := procMem(n.proc.Pid())
	if err != nil {
		t.Fatal(err)
	}

	// Deltas at 20/s while status is asked for in a loop.
	const deltas = 300
	stop := make(chan struct{})
	var mu sync.Mutex
	var statusMs []float64
	var wg sync.WaitGroup
	wg.Go(func() {
		for {
			select {
			case <-stop:
				return
			default:
			}
			t0 := time.Now()
			if _, err := c.Status(context.Background()); err != nil {
				t.Errorf("status: %v", err)
				return
			}
			mu.Lock()
			statusMs = append(statusMs, float64(time.Since(t0).Microseconds())/1000)
			mu.Unlock()
			time.Sleep(20 * time.Millisecond)
		}
	})
	if profDir != "" {
		wg.Go(func() { saveProfile(t, h, profDir, "cpu-deltas.pprof", "/debug/pprof/profile?seconds=12") })
	}
	before := st.Engine.Applies
	base := controltest.SyntheticPeers(1, 1)[0]
	for i := range deltas {
		id := wire.NodeID(100000 + (i*37)%peers)
		var mr wire.MapResponse
		switch i % 3 {
		case 0:
			online := i%2 == 0
			mr.PeersChangedPatch = []*wire.PeerChange{{NodeID: id, Online: &online}}
		case 1:
			mr.PeersChangedPatch = []*wire.PeerChange{{NodeID: id, Endpoints: []netip.AddrPort{netip.AddrPortFrom(netip.AddrFrom4([4]byte{203, 0, 113, byte(i)}), uint16(40000+i))}}}
		case 2:
			p := *base
			p.ID = wire.NodeID(900000 + i)
			p.StableID = fmt.Sprintf("new%d", i)
			p.Name = fmt.Sprintf("new%04d.test.example.", i)
			p.Key = key.NewNode().Public()
			p.DiscoKey = key.NewDisco().Public()
			a := netip.AddrFrom4([4]byte{100, 99, byte(i >> 8), byte(i)})
			p.Addresses = []netip.Prefix{netip.PrefixFrom(a, 32)}
			p.Hostinfo = &wire.Hostinfo{Hostname: fmt.Sprintf("new%04d", i), OS: "linux"}
			mr.PeersChanged = []*wire.Node{&p}
		}
		if cs.Push(&mr) != 1 {
			t.Fatal("skeind's map poll is gone")
		}
		time.Sleep(50 * time.Millisecond)
	}
	time.Sleep(2 * time.Second)
	close(stop)
	wg.Wait()
	st = status(t, c)
	e := st.Engine
	rssAfter, hwmAfter, _ := procMem(n.proc.Pid())
	slices.Sort(statusMs)

	var b strings.Builder
	fmt.Fprintf(&b, "scale: %d peers, skeind %s, %s\n", peers, srcRev, loadavg())
	fmt.Fprintf(&b, "  full map: skein up %.2f s (its apply %.1f ms); RSS %.1f MB (peak %.1f MB); WireGuard peers configured %d of %d\n",
		fullApply.Seconds(), firstApplyMs, float64(rss)/1e3, float64(hwm)/1e3, e.WireGuardPeers, e.NetmapPeers)
	fmt.Fprintf(&b, "  %d single-peer deltas at 20/s: %d applies; apply p50 %.3f ms, p99 %.3f ms, max %.3f ms; arrival->applied p50 %.3f ms, p99 %.3f ms (target <= %.1f ms, stretch %.1f): %s\n",
		deltas, e.Applies-before, e.ApplyP50Ms, e.ApplyP99Ms, e.ApplyMaxMs, e.LatencyP50Ms, e.LatencyP99Ms, scaleDeltaTargetMs, scaleDeltaStretch, verdict(e.ApplyP99Ms <= scaleDeltaTargetMs))
	fmt.Fprintf(&b, "  status while deltas stream: %d calls, p50 %.1f ms, p99 %.1f ms (target <= %d): %s\n",
		len(statusMs), percentile(statusMs, 0.5), percentile(statusMs, 0.99), scaleStatusP99Ms, verdict(percentile(statusMs, 0.99) <= scaleStatusP99Ms))
	fmt.Fprintf(&b, "  RSS with the map: %.1f MB after settling, %.1f MB after the deltas (peak %.1f MB) (target <= %d): %s\n",
		float64(rss)/1e3, float64(rssAfter)/1e3, float64(hwmAfter)/1e3, scaleRSSTargetMB, verdict(float64(max(rss, rssAfter))/1e3 <= scaleRSSTargetMB))
	t.Log("\n" + b.String())
	if err := appendResults(b.String()); err != nil {
		t.Log(err)
	}
}

func status(t *testing.T, c *ipc.Client) ipc.Status {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	st, err := c.Status(ctx)
	if err != nil {
		t.Fatal(err)
	}
	return st
}

// saveProfile fetches a pprof profile from skeind (SKEIN_PPROF, inside its namespace).
func saveProfile(t *testing.T, h *lab.Host, dir, name, path string) {
	resp, err := h.HTTPClient().Get("http://127.0.0.1:6060" + path)
	if err != nil {
		t.Errorf("profile: %v", err)
		return
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if err := os.WriteFile(filepath.Join(dir, name), b, 0o644); err != nil {
		t.Error(err)
	}
	t.Logf("saved %s (%d bytes)", filepath.Join(dir, name), len(b))
}
