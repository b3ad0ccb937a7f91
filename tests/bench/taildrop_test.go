//go:build bench

package bench_test

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"testing"
	"text/tabwriter"
	"time"

	"github.com/skeinvpn/skein/internal/lab"
)

// Taildrop benchmark: a 1 GiB file from one Skein node to another over a direct path, its rate
// against iperf3 TCP on the same tunnel, and the memory of the receiving skeind meanwhile.
const (
	tdSize        = 1 << 30 // bytes sent
	tdSampleEvery = 100 * time.Millisecond
	tdRatioTarget = 0.80 // Taildrop / iperf3 TCP on the same tunnel
	tdRSSTarget   = 40.0 // MB (kB/1024, as in the main summary): receiving skeind, peak
	tdSendTimeout = 10 * time.Minute
)

// taildropMarker starts the Taildrop section of bench-results.txt.
const taildropMarker = "Taildrop over a direct path"

// memTrace is one daemon's memory during a transfer, in kB.
type memTrace struct {
	pid             int
	before          int64 // VmRSS just before the transfer
	peakRSS         int64 // highest VmRSS sampled
	hwm             int64 // VmHWM at the end: since the reset just before, or since start (hwmReset false)
	hwmReset        bool
	samples, misses int
}

// peak is the worse of the sampled peak and VmHWM (which sees between the samples).
func (m *memTrace) peak() int64 { return max(m.peakRSS, m.hwm) }

// tdSend is one timed transfer.
type tdSend struct {
	what    string
	elapsed time.Duration
	mem     []*memTrace // receiver first
}

func (s *tdSend) mbps() float64 { return float64(tdSize*8) / s.elapsed.Seconds() / 1e6 }

// resetHWM sets pid's VmHWM back to its current VmRSS (clear_refs 5, Linux 4.0+).
func resetHWM(pid int) error {
	return os.WriteFile(fmt.Sprintf("/proc/%d/clear_refs", pid), []byte("5"), 0)
}

// watchMem resets the daemons' peak RSS and samples VmRSS every tdSampleEvery until stop, which
// returns the traces in the order of pids.
func watchMem(t *testing.T, pids ...int) (stop func() []*memTrace) {
	t.Helper()
	traces := make([]*memTrace, len(pids))
	for i, pid := range pids {
		tr := &memTrace{pid: pid, hwmReset: true}
		if err := resetHWM(pid); err != nil {
			t.Logf("pid %d: cannot reset VmHWM (%v): it counts from the daemon's start", pid, err)
			tr.hwmReset = false
		}
		rss, _, err := procMem(pid)
		if err != nil {
			t.Fatal(err)
		}
		tr.before, tr.peakRSS = rss, rss
		traces[i] = tr
	}
	done, finished := make(chan struct{}), make(chan struct{})
	sample := func() {
		for _, tr := range traces {
			rss, _, err := procMem(tr.pid)
			if err != nil {
				tr.misses++
				continue
			}
			tr.samples++
			tr.peakRSS = max(tr.peakRSS, rss)
		}
	}
	go func() {
		defer close(finished)
		tick := time.NewTicker(tdSampleEvery)
		defer tick.Stop()
		for {
			select {
			case <-done:
				return
			case <-tick.C:
				sample()
			}
		}
	}()
	var once sync.Once
	return func() []*memTrace {
		once.Do(func() {
			close(done)
			<-finished
			sample()
			for _, tr := range traces {
				if _, hwm, err := procMem(tr.pid); err == nil {
					tr.hwm = hwm
				} else {
					t.Errorf("pid %d: %v", tr.pid, err)
				}
			}
		})
		return traces
	}
}

// tdWriteFile writes size pseudo-random bytes (a 1 MiB block repeated: cheap to make), flushes
// them to disk so that no writeback runs during the transfer (the pages stay cached), and
// returns the path and SHA-256.
func tdWriteFile(t *testing.T, dir, name string, size int64) (string, string) {
	t.Helper()
	block := make([]byte, 1<<20)
	rand.NewChaCha8([32]byte{'t', 'd'}).Read(block)
	p := filepath.Join(dir, name)
	f, err := os.Create(p)
	if err != nil {
		t.Fatal(err)
	}
	h := sha256.New()
	w := io.MultiWriter(f, h)
	for left := size; left > 0; {
		n := min(left, int64(len(block)))
		if _, err := w.Write(block[:n]); err != nil {
			t.Fatal(err)
		}
		left -= n
	}
	if err := f.Sync(); err != nil {
		t.Fatal(err)
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
	return p, hex.EncodeToString(h.Sum(nil))
}

func tdFileSum(t *testing.T, p string) string {
	t.Helper()
	f, err := os.Open(p)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	h := sha256.New()
	if _, err := io.Copy(h, f); err != nil {
		t.Fatal(err)
	}
	return hex.EncodeToString(h.Sum(nil))
}

// tdFetch moves what waits in n's inbox into a fresh directory with `skein file get`, checks
// that name arrived with the given SHA-256, and deletes it.
func tdFetch(t *testing.T, n *skeinNode, name, sum, what string) {
	t.Helper()
	dir := t.TempDir()
	if _, err := n.cli("file", "get", dir); err != nil {
		t.Fatal(err)
	}
	got := filepath.Join(dir, name)
	if fi, err := os.Stat(got); err != nil {
		ls, _ := os.ReadDir(dir)
		t.Fatalf("%s: %s not in what `skein file get` moved (%v): %v", what, name, ls, err)
	} else if fi.Size() != tdSize {
		t.Fatalf("%s: received %d bytes, sent %d", what, fi.Size(), tdSize)
	}
	if s := tdFileSum(t, got); s != sum {
		t.Fatalf("%s: SHA-256 mismatch: received %s, sent %s", what, s, sum)
	}
	os.Remove(got)
}

// tdTimed runs the sending command with the daemons' memory watched and returns the time from
// its start to its exit.
func tdTimed(t *testing.T, what string, cmd *exec.Cmd, pids ...int) *tdSend {
	t.Helper()
	stop := watchMem(t, pids...)
	start := time.Now()
	out, err := cmd.CombinedOutput()
	elapsed := time.Since(start)
	mem := stop()
	if err != nil {
		t.Fatalf("%s: %v\n%s", what, err, out)
	}
	s := &tdSend{what: what, elapsed: elapsed, mem: mem}
	t.Logf("%s: %d MiB in %v (%.0f Mbit/s): %s", what, tdSize>>20, elapsed.Round(time.Millisecond), s.mbps(), strings.TrimSpace(string(out)))
	for _, m := range mem {
		t.Logf("  pid %d: VmRSS before %d kB, sampled peak %d kB (%d samples, %d misses), VmHWM %d kB (reset %v)",
			m.pid, m.before, m.peakRSS, m.samples, m.misses, m.hwm, m.hwmReset)
	}
	return s
}

type tdResult struct {
	started   time.Time
	elapsed   time.Duration
	loadStart string
	iperf     []float64 // Mbit/s, A→B
	retr      int
	iperfMem  []*memTrace // B, A during the counted iperf3 runs
	skein     *tdSend     // A→B, mem: B, A
	official  *tdSend     // official tailscaled → B, mem: B, tailscaled
	officialE string      // why official is missing
}

func TestBenchTaildrop(t *testing.T) {
	for _, tool := range []string{"iperf3", "ss", "ip"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Fatalf("missing %s: run `make deps` (scripts/deps.sh)", tool)
		}
	}
	r := &tdResult{started: time.Now(), loadStart: loadavg()}

	// Same user, untagged: Taildrop's rule. Both hosts on the lab's public network.
	l, c, key := tailnet(t)
	hs := addHosts(t, l, "td-a", "td-b")
	a, b := startSkein(t, hs[0]), startSkein(t, hs[1])
	for _, n := range []*skeinNode{a, b} {
		if err := n.up(c.URL(), key); err != nil {
			t.Fatal(err)
		}
	}
	lab.Eventually(t, 30*time.Second, func() error {
		a.cli("ping", "-c", "3", "td-b")
		b.cli("ping", "-c", "3", "td-a")
		if err := a.directTo("td-b"); err != nil {
			return err
		}
		return b.directTo("td-a")
	})
	lab.Eventually(t, 30*time.Second, func() error {
		out, err := a.cli("file", "cp", "--targets")
		if err == nil && !strings.Contains(out, "td-b") {
			err = fmt.Errorf("td-b is no file target of td-a:\n%s", out)
		}
		return err
	})
	bIP := b.selfIP()
	pids := []int{b.proc.Pid(), a.proc.Pid()} // receiver first

	// iperf3 TCP A→B over the same tunnel, as the main bench does it.
	startIperfServer(t, b.host)
	iperf(t, a.host, bIP, 2, false) // not counted: first-flow setup
	time.Sleep(afterLoad)           // so that the memory watched below starts where the send's does
	stop := watchMem(t, pids...)    // what the data plane alone takes at full speed, for comparison
	for range iperfRuns {
		res := iperf(t, a.host, bIP, iperfSecs, false)
		mbps := res.End.SumReceived.BitsPerSecond / 1e6
		r.iperf = append(r.iperf, mbps)
		r.retr += res.End.SumSent.Retransmits
		t.Logf("iperf3 td-a→%s: %.0f Mbit/s, %d retransmits", bIP, mbps, res.End.SumSent.Retransmits)
	}
	r.iperfMem = stop()
	for _, m := range r.iperfMem {
		t.Logf("  pid %d during iperf3: VmRSS before %d kB, sampled peak %d kB (%d samples), VmHWM %d kB (reset %v)",
			m.pid, m.before, m.peakRSS, m.samples, m.hwm, m.hwmReset)
	}

	// The file is written now (and synced: no writeback during the send), then the daemons get
	// the main bench's afterLoad to give back what the iperf3 runs made them take.
	src, sum := tdWriteFile(t, a.host.Dir(), "taildrop-1g.bin", tdSize)
	time.Sleep(afterLoad)
	ctx, cancel := context.WithTimeout(context.Background(), tdSendTimeout)
	r.skein = tdTimed(t, "skein file cp td-a → td-b", a.cmd(ctx, "file", "cp", "--verbose", src, "td-b:"), pids...)
	cancel()
	os.Remove(src)
	tdFetch(t, b, filepath.Base(src), sum, "Skein → Skein")

	// For comparison: the official client sending to the same receiver.
	t.Run("official-to-skein", func(t *testing.T) {
		h := addHosts(t, l, "td-ts")[0]
		ts, err := h.StartTailscaled(h.Name())
		if err != nil {
			t.Fatal(err)
		}
		defer ts.Stop()
		_, daemon := lab.TailscaleBinaries("")
		checkComm(t, ts.Process().Pid(), daemon)
		if err := ts.Up(c.URL(), key); err != nil {
			t.Fatal(err)
		}
		if err := ts.WaitPeers(30*time.Second, "td-b"); err != nil {
			t.Fatal(err)
		}
		lab.Eventually(t, 30*time.Second, func() error {
			ts.CLI("ping", "-c", "3", "td-b")
			b.cli("ping", "-c", "3", "td-ts")
			if err := tsDirectTo(ts, "td-b"); err != nil {
				return err
			}
			return b.directTo("td-ts")
		})
		src, sum := tdWriteFile(t, h.Dir(), "taildrop-official-1g.bin", tdSize)
		time.Sleep(afterLoad) // B received 1 GiB just before
		ctx, cancel := context.WithTimeout(context.Background(), tdSendTimeout)
		defer cancel()
		cmd := h.Command(ctx, ts.CLIPath(), "--socket="+ts.Socket(), "file", "cp", src, "td-b:")
		s := tdTimed(t, "tailscale file cp td-ts → td-b", cmd, b.proc.Pid(), ts.Process().Pid())
		os.Remove(src)
		tdFetch(t, b, filepath.Base(src), sum, "official → Skein")
		r.official = s
	})
	if r.official == nil {
		r.officialE = "failed, see the test log"
	}

	r.elapsed = time.Since(r.started)
	out := r.summary()
	fmt.Print("\n" + out)
	if err := appendTaildropResults(out); err != nil {
		t.Error(err)
	}
}

func (r *tdResult) summary() string {
	mb := func(kb int64) string { return fmt.Sprintf("%.1f", float64(kb)/1024) }
	var b strings.Builder
	fmt.Fprintf(&b, "%s, %s, took %s\n", taildropMarker, r.started.UTC().Format("2006-01-02 15:04 UTC"), r.elapsed.Round(time.Second))
	fmt.Fprintf(&b, "skein %s, %s, tailscaled %s, %d CPUs; load average at start %s, at end %s\n", srcRev, runtime.Version(), tsVersion, runtime.NumCPU(), r.loadStart, loadavg())
	fmt.Fprintf(&b, "Two lab hosts on the public network (veth + bridge, both ends on this machine, sharing its CPUs),\n")
	fmt.Fprintf(&b, "skeind (plain build) on each, one user, direct path. A 1 GiB file, written and synced beforehand\n")
	fmt.Fprintf(&b, "(page cache warm), sent A→B with `skein file cp`, timed from its start to its exit; SHA-256 checked\n")
	fmt.Fprintf(&b, "after `skein file get` on B. Each measured phase starts %s after the previous load; during it the\n", afterLoad)
	fmt.Fprintf(&b, "daemons' VmRSS is sampled from /proc, and their VmHWM is reset (clear_refs 5) just before it.\n\n")

	tw := tabwriter.NewWriter(&b, 0, 0, 2, ' ', 0)
	fmt.Fprintf(tw, "Throughput A→B over the tunnel, Mbit/s\t\ttime\n")
	if len(r.iperf) > 0 {
		lo, hi := r.iperf[0], r.iperf[0]
		for _, v := range r.iperf {
			lo, hi = min(lo, v), max(hi, v)
		}
		fmt.Fprintf(tw, "iperf3 TCP 1 stream %d s, median of %d [min-max], %d retransmits\t%.0f [%.0f-%.0f]\t\n", iperfSecs, len(r.iperf), r.retr, median(r.iperf), lo, hi)
	} else {
		fmt.Fprintf(tw, "iperf3 TCP 1 stream %d s\t-\t\n", iperfSecs)
	}
	send := func(name string, s *tdSend, why string) {
		if s == nil {
			if why == "" {
				why = "-"
			}
			fmt.Fprintf(tw, "%s\t%s\t\n", name, why)
			return
		}
		fmt.Fprintf(tw, "%s\t%.0f\t%.2f s\n", name, s.mbps(), s.elapsed.Seconds())
	}
	send("Taildrop Skein → Skein, skein file cp, 1 GiB", r.skein, "")
	send("Taildrop official → Skein, tailscale file cp, 1 GiB", r.official, r.officialE)
	tw.Flush()

	fmt.Fprintf(&b, "\n")
	fmt.Fprintf(tw, "Memory, MB\tVmRSS before\tpeak VmRSS, every %s\tVmHWM, reset before\tsamples\n", tdSampleEvery)
	memRow := func(name string, ms []*memTrace, i int) {
		if i >= len(ms) {
			fmt.Fprintf(tw, "%s\t-\t-\t-\t-\n", name)
			return
		}
		m := ms[i]
		hwm := mb(m.hwm)
		if !m.hwmReset {
			hwm += " (since start)"
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%d\n", name, mb(m.before), mb(m.peakRSS), hwm, m.samples)
	}
	sendMem := func(s *tdSend) []*memTrace {
		if s == nil {
			return nil
		}
		return s.mem
	}
	memRow("skeind B receiving the 1 GiB Taildrop from A", sendMem(r.skein), 0)
	memRow("skeind A sending it", sendMem(r.skein), 1)
	memRow(fmt.Sprintf("skeind B receiving iperf3 A→B, %d×%d s", iperfRuns, iperfSecs), r.iperfMem, 0)
	memRow("skeind A sending it", r.iperfMem, 1)
	memRow("skeind B receiving 1 GiB from tailscaled", sendMem(r.official), 0)
	memRow("tailscaled sending it", sendMem(r.official), 1)
	tw.Flush()

	fmt.Fprintf(&b, "\n")
	fmt.Fprintf(tw, "Taildrop against the targets\tmeasured\ttarget\t\n")
	if r.skein != nil && len(r.iperf) > 0 {
		x := r.skein.mbps() / median(r.iperf)
		x = float64(int64(x*100+0.5)) / 100 // judged as printed
		fmt.Fprintf(tw, "Taildrop / iperf3 TCP, same tunnel, A→B\t%.2f×\t≥ %.2f×\t%s\n", x, tdRatioTarget, verdict(x >= tdRatioTarget))
	} else {
		fmt.Fprintf(tw, "Taildrop / iperf3 TCP, same tunnel, A→B\t-\t≥ %.2f×\t\n", tdRatioTarget)
	}
	if r.skein != nil && len(r.skein.mem) > 0 {
		m := r.skein.mem[0]
		v := float64(int64(float64(m.peak())/1024*10+0.5)) / 10 // judged as printed
		fmt.Fprintf(tw, "receiving skeind peak RSS, 1 GiB receive\t%.1f MB\t≤ %g MB\t%s\n", v, tdRSSTarget, verdict(v <= tdRSSTarget))
	} else {
		fmt.Fprintf(tw, "receiving skeind peak RSS, 1 GiB receive\t-\t≤ %g MB\t\n", tdRSSTarget)
	}
	tw.Flush()
	fmt.Fprintf(&b, "(peak RSS: the larger of the sampled peak VmRSS and VmHWM)\n")
	return b.String()
}

// appendTaildropResults adds the Taildrop section at the end of bench-results.txt, after what
// TestBench (which rewrites the file) and TestBenchDNS wrote in the same run, replacing a
// Taildrop section from an earlier run wherever it is. (appendResults in dns_test.go cuts
// everything from the DNS section on, which would take a later section with it: it serves the
// DNS section only.)
func appendTaildropResults(section string) error {
	path := filepath.Join(repoDir(), "bench-results.txt")
	old, err := os.ReadFile(path)
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		return err
	}
	prev := string(old)
	if i := strings.Index(prev, taildropMarker); i >= 0 {
		rest := prev[i:]
		end := len(rest)
		if j := strings.Index(rest, dnsMarker); j >= 0 {
			end = j // a DNS section written after the old Taildrop one stays
		}
		prev = strings.TrimRight(prev[:i], "\n") + "\n\n" + rest[end:]
	}
	prev = strings.Trim(prev, "\n")
	if prev != "" {
		prev += "\n\n"
	}
	return os.WriteFile(path, []byte(prev+section), 0o644)
}
