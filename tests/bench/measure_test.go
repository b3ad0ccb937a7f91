//go:build bench

package bench_test

import (
	"context"
	"encoding/json"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/skeinvpn/skein/internal/lab"
)

// pairResult is what measurePair finds between host A and host B over one system.
type pairResult struct {
	fwd, rev         []float64 // Gbit/s, receiver side, one per run: A→B and B→A (-R)
	retrFwd, retrRev int       // TCP retransmits over all runs
	bareRTT, tunRTT  []float64 // ms, one per reply
	tunLoss          float64   // fraction
	daemonCPU        float64   // seconds of utime+stime of the tunnel daemons (both ends) during the runs
	bytes            float64   // received over all runs
}

// startIperfServer runs `iperf3 -s` on h for the rest of the lab and waits until it listens.
func startIperfServer(t *testing.T, h *lab.Host) {
	t.Helper()
	p, err := h.StartProcess("iperf3", nil, "-s")
	if err != nil {
		t.Fatal(err)
	}
	// iperf3 -s exits 1 on SIGTERM, which the lab's cleanup would report; SIGKILL is quiet.
	t.Cleanup(func() { p.Kill() })
	// A probe connection would count as a failed test in iperf3's log, so ask the socket table.
	lab.Eventually(t, 10*time.Second, func() error {
		if p.Exited() {
			t.Fatalf("iperf3 -s exited: %s", p.Log())
		}
		out, err := h.Run("ss", "-Hltn", "sport = :5201")
		if err != nil {
			return err
		}
		if strings.TrimSpace(out) == "" {
			return fmt.Errorf("iperf3 not listening yet on %s", h.Name())
		}
		return nil
	})
}

type iperfJSON struct {
	Error string `json:"error"`
	End   struct {
		SumSent struct {
			Retransmits int `json:"retransmits"`
		} `json:"sum_sent"`
		SumReceived struct {
			Bytes         float64 `json:"bytes"`
			BitsPerSecond float64 `json:"bits_per_second"`
		} `json:"sum_received"`
	} `json:"end"`
}

// iperf runs one TCP test from a to dst (an iperf3 -s) and returns the receiver's figures.
// Anything but a clean run with data is a broken measurement.
func iperf(t *testing.T, a *lab.Host, dst netip.Addr, secs int, reverse bool) iperfJSON {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Duration(secs+30)*time.Second)
	defer cancel()
	args := []string{"-c", dst.String(), "-t", strconv.Itoa(secs), "-J", "--connect-timeout", "5000"}
	if reverse {
		args = append(args, "-R")
	}
	cmd := a.Command(ctx, "iperf3", args...)
	var stderr strings.Builder
	cmd.Stderr = &stderr
	out, runErr := cmd.Output()
	var r iperfJSON
	if err := json.Unmarshal(out, &r); err != nil {
		t.Fatalf("iperf3 %v from %s: %v, unparsable output: %v %s%s", args, a.Name(), runErr, err, out, stderr.String())
	}
	if runErr != nil || r.Error != "" || r.End.SumReceived.BitsPerSecond <= 0 {
		t.Fatalf("iperf3 %v from %s failed: %v %q %s", args, a.Name(), runErr, r.Error, stderr.String())
	}
	return r
}

var rttRE = regexp.MustCompile(`time=([0-9.]+) ms`)

// pingRTTs sends pingCount ICMP echoes from h to dst and returns the RTTs (ms) and the loss.
func pingRTTs(t *testing.T, h *lab.Host, dst netip.Addr) ([]float64, float64) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	// ping exits 1 on any loss; judge by the replies instead.
	out, _ := h.Command(ctx, "ping", "-n", "-c", strconv.Itoa(pingCount), "-i", pingInterval, "-W", "1", dst.String()).Output()
	var rtts []float64
	for _, m := range rttRE.FindAllStringSubmatch(string(out), -1) {
		v, err := strconv.ParseFloat(m[1], 64)
		if err == nil {
			rtts = append(rtts, v)
		}
	}
	if len(rtts) < pingCount/2 {
		t.Fatalf("ping %s from %s: %d of %d replies:\n%s", dst, h.Name(), len(rtts), pingCount, out)
	}
	return rtts, 1 - float64(len(rtts))/pingCount
}

// measurePair runs the latency and throughput series from a to b's address over the system
// under test (dst; b.Addr() for the bare path). pids are the tunnel daemons on both ends.
func measurePair(t *testing.T, a, b *lab.Host, dst netip.Addr, pids ...int) *pairResult {
	t.Helper()
	startIperfServer(t, b)
	// Not counted: proves the path carries TCP and gets handshakes and first-flow setup out of
	// the way, like discarding the first run after daemon start.
	iperf(t, a, dst, 2, false)
	res := &pairResult{}
	// Bare and tunnel RTTs back to back on the same pair, so the difference is the tunnel's.
	res.bareRTT, _ = pingRTTs(t, a, b.Addr())
	res.tunRTT, res.tunLoss = pingRTTs(t, a, dst)
	cpu0 := sumCPU(t, pids)
	for range iperfRuns {
		for _, rev := range []bool{false, true} {
			r := iperf(t, a, dst, iperfSecs, rev)
			gbps := r.End.SumReceived.BitsPerSecond / 1e9
			res.bytes += r.End.SumReceived.Bytes
			if rev {
				res.rev = append(res.rev, gbps)
				res.retrRev += r.End.SumSent.Retransmits
			} else {
				res.fwd = append(res.fwd, gbps)
				res.retrFwd += r.End.SumSent.Retransmits
			}
			t.Logf("iperf3 %s→%s reverse=%v: %.2f Gbit/s, %d retransmits", a.Name(), dst, rev, gbps, r.End.SumSent.Retransmits)
		}
	}
	res.daemonCPU = sumCPU(t, pids) - cpu0
	return res
}

// daemonStats is the resource use of one daemon process.
type daemonStats struct {
	rssIdle, rssLoad, hwm int64   // kB: VmRSS after the idle window, VmRSS after load, VmHWM
	idleTicks, idleExact  float64 // CPU ms per minute while idle: utime+stime, and schedstat
	idleWindow            time.Duration
}

// userHZ is the unit of utime/stime in /proc/PID/stat (USER_HZ, 100 on every Linux ABI Go
// supports).
const userHZ = 100

// procTicks is utime+stime of pid in USER_HZ ticks (exited threads included).
func procTicks(pid int) (int64, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, err
	}
	// comm may hold spaces: the fields that follow start after the last ')'.
	s := string(b)
	f := strings.Fields(s[strings.LastIndexByte(s, ')')+1:])
	if len(f) < 13 {
		return 0, fmt.Errorf("short /proc/%d/stat", pid)
	}
	ut, err1 := strconv.ParseInt(f[11], 10, 64)
	st, err2 := strconv.ParseInt(f[12], 10, 64)
	if err1 != nil || err2 != nil {
		return 0, fmt.Errorf("bad /proc/%d/stat: %q", pid, s)
	}
	return ut + st, nil
}

// procRunNs sums the threads' on-CPU time from schedstat (ns). Unlike the tick-sampled
// utime+stime it sees short wakeups exactly, which is what idle cost is made of.
func procRunNs(pid int) (int64, error) {
	tasks, err := filepath.Glob(fmt.Sprintf("/proc/%d/task/*/schedstat", pid))
	if err != nil || len(tasks) == 0 {
		return 0, fmt.Errorf("no schedstat for pid %d", pid)
	}
	var sum int64
	for _, p := range tasks {
		b, err := os.ReadFile(p)
		if err != nil {
			continue // the thread exited
		}
		f := strings.Fields(string(b))
		if len(f) > 0 {
			v, _ := strconv.ParseInt(f[0], 10, 64)
			sum += v
		}
	}
	return sum, nil
}

// procMem returns VmRSS and VmHWM of pid in kB.
func procMem(pid int) (rss, hwm int64, err error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, 0, err
	}
	for _, l := range strings.Split(string(b), "\n") {
		k, v, ok := strings.Cut(l, ":")
		if !ok {
			continue
		}
		n, _ := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 10, 64)
		switch k {
		case "VmRSS":
			rss = n
		case "VmHWM":
			hwm = n
		}
	}
	if rss == 0 {
		return 0, 0, fmt.Errorf("no VmRSS for pid %d", pid)
	}
	return rss, hwm, nil
}

func sumCPU(t *testing.T, pids []int) float64 {
	t.Helper()
	var sum int64
	for _, pid := range pids {
		v, err := procTicks(pid)
		if err != nil {
			t.Fatal(err)
		}
		sum += v
	}
	return float64(sum) / userHZ
}

// checkComm makes sure pid is the program we mean to measure (`ip netns exec` execs it, so the
// lab's PID is the daemon's).
func checkComm(t *testing.T, pid int, bin string) {
	t.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/comm", pid))
	if err != nil {
		t.Fatal(err)
	}
	want := filepath.Base(bin)
	if len(want) > 15 {
		want = want[:15]
	}
	if got := strings.TrimSpace(string(b)); got != want {
		t.Fatalf("pid %d is %q, want %q: would measure the wrong process", pid, got, want)
	}
}

// measureIdle watches the daemons for idleWindow with no traffic: CPU per minute and RSS.
func measureIdle(t *testing.T, pids ...int) []*daemonStats {
	t.Helper()
	ticks0, ns0 := make([]int64, len(pids)), make([]int64, len(pids))
	for i, pid := range pids {
		var err error
		if ticks0[i], err = procTicks(pid); err != nil {
			t.Fatal(err)
		}
		if ns0[i], err = procRunNs(pid); err != nil {
			t.Fatal(err)
		}
	}
	start := time.Now()
	time.Sleep(idleWindow)
	elapsed := time.Since(start)
	perMin := float64(time.Minute) / float64(elapsed)
	var out []*daemonStats
	for i, pid := range pids {
		ticks, err := procTicks(pid)
		if err != nil {
			t.Fatal(err)
		}
		ns, err := procRunNs(pid)
		if err != nil {
			t.Fatal(err)
		}
		rss, hwm, err := procMem(pid)
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, &daemonStats{
			rssIdle:    rss,
			hwm:        hwm,
			idleTicks:  float64(ticks-ticks0[i]) * 1000 / userHZ * perMin,
			idleExact:  float64(ns-ns0[i]) / 1e6 * perMin,
			idleWindow: elapsed,
		})
	}
	return out
}

// measureAfterLoad waits afterLoad after the last full-speed run and records RSS and peak RSS.
func measureAfterLoad(t *testing.T, stats []*daemonStats, pids ...int) {
	t.Helper()
	time.Sleep(afterLoad)
	for i, pid := range pids {
		rss, hwm, err := procMem(pid)
		if err != nil {
			t.Fatal(err)
		}
		stats[i].rssLoad, stats[i].hwm = rss, hwm
	}
}

// trial is one fresh node's way from `up` to the first direct pong.
type trial struct {
	up, firstPong, direct time.Duration // from the start of `up`
	derpPongs             int           // pongs via DERP before the direct one
	ok                    bool          // a direct pong came
}

var (
	directPongRE = regexp.MustCompile(`^pong from .* via (\d+\.\d+\.\d+\.\d+|\[[0-9a-fA-F:.]+\]):\d+ in `)
	anyPongRE    = regexp.MustCompile(`^pong from `)
)

func median(v []float64) float64 {
	if len(v) == 0 {
		return 0
	}
	s := slices.Clone(v)
	slices.Sort(s)
	if len(s)%2 == 1 {
		return s[len(s)/2]
	}
	return (s[len(s)/2-1] + s[len(s)/2]) / 2
}

func percentile(v []float64, p float64) float64 {
	if len(v) == 0 {
		return 0
	}
	s := slices.Clone(v)
	slices.Sort(s)
	i := int(p * float64(len(s)-1))
	return s[i]
}
