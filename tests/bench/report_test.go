//go:build bench

package bench_test

import (
	"fmt"
	"math"
	"os"
	"strings"
	"text/tabwriter"
	"time"
)

// report collects every system's results; summary renders them as the final table.
type report struct {
	started             time.Time
	elapsed             time.Duration
	loadStart           string
	bare, skein, ts, wg *sysResult
}

func (r *report) summary() string {
	var b strings.Builder
	fmt.Fprintf(&b, "Skein benchmark, %s, took %s\n", r.started.UTC().Format("2006-01-02 15:04 UTC"), r.elapsed.Round(time.Second))
	fmt.Fprintf(&b, "%s\n", environment())
	fmt.Fprintf(&b, "load average at start %s, at end %s (other work on the machine skews every figure)\n", r.loadStart, loadavg())
	fmt.Fprintf(&b, "Both ends of every pair run on this machine (lab namespaces, veth + bridge), sharing its CPUs.\n")
	fmt.Fprintf(&b, "Tunnel MTU 1280 for all three systems. \"-\": not measured (see the test log).\n\n")

	tw := tabwriter.NewWriter(&b, 0, 0, 2, ' ', 0)
	systems := []struct {
		name string
		r    *sysResult
	}{{"bare path", r.bare}, {"Skein", r.skein}, {"tailscaled", r.ts}, {"wireguard-go", r.wg}}

	fmt.Fprintf(tw, "TCP throughput, Gbit/s\tA→B\tB→A (-R)\tretransmits\tdaemon CPU\n")
	fmt.Fprintf(tw, "iperf3 1 stream 10 s, median of %d [min-max]\t\t\tA→B / B→A\ts per GB, both ends\n", iperfRuns)
	for _, s := range systems {
		p := s.r.p()
		if p == nil {
			fmt.Fprintf(tw, "%s\t-\t-\t-\t-\n", s.name)
			continue
		}
		cpu := "-"
		if s.r != r.bare {
			cpu = fmt.Sprintf("%.2f", p.daemonCPU/(p.bytes/1e9))
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%d / %d\t%s\n", s.name, spread(p.fwd), spread(p.rev), p.retrFwd, p.retrRev, cpu)
	}
	tw.Flush()

	fmt.Fprintf(&b, "\n")
	fmt.Fprintf(tw, "Latency, ms (ping -c %d -i %s)\tbare RTT\ttunnel RTT\tadded\ttunnel p99\tloss\n", pingCount, pingInterval)
	fmt.Fprintf(tw, "medians; bare path measured on the same pair just before\t\t\t\t\t\n")
	for _, s := range systems[1:] {
		p := s.r.p()
		if p == nil {
			fmt.Fprintf(tw, "%s\t-\t-\t-\t-\t-\n", s.name)
			continue
		}
		fmt.Fprintf(tw, "%s\t%.3f\t%.3f\t%+.3f\t%.3f\t%.1f%%\n", s.name, median(p.bareRTT), median(p.tunRTT),
			median(p.tunRTT)-median(p.bareRTT), percentile(p.tunRTT, 0.99), p.tunLoss*100)
	}
	tw.Flush()

	fmt.Fprintf(&b, "\n")
	rss := func(f func(*daemonStats) int64) string {
		return fmt.Sprintf("%s\t%s\t%s", r.skein.mem(f), r.ts.mem(f), r.wg.mem(f))
	}
	cpu := func(f func(*daemonStats) float64) string {
		return fmt.Sprintf("%s\t%s\t%s", r.skein.cpu(f), r.ts.cpu(f), r.wg.cpu(f))
	}
	fmt.Fprintf(tw, "Daemon resources (A / B)\tSkein\ttailscaled\twireguard-go\n")
	fmt.Fprintf(tw, "RSS idle, MB (end of the idle window)\t%s\n", rss(func(d *daemonStats) int64 { return d.rssIdle }))
	fmt.Fprintf(tw, "RSS %s after load, MB\t%s\n", afterLoad, rss(func(d *daemonStats) int64 { return d.rssLoad }))
	fmt.Fprintf(tw, "peak RSS (VmHWM), MB\t%s\n", rss(func(d *daemonStats) int64 { return d.hwm }))
	fmt.Fprintf(tw, "idle CPU, ms/min, utime+stime\t%s\n", cpu(func(d *daemonStats) float64 { return d.idleTicks }))
	fmt.Fprintf(tw, "idle CPU, ms/min, schedstat (exact)\t%s\n", cpu(func(d *daemonStats) float64 { return d.idleExact }))
	tw.Flush()
	fmt.Fprintf(&b, "(idle window: %s without traffic, starting %s after both ends reported a direct path)\n", idleWindow, settle)

	fmt.Fprintf(&b, "\n")
	fmt.Fprintf(tw, "Fresh node: `up` → first direct pong, s\ttrials\tup returns\tfirst pong\tfirst direct pong\tof which after up\tDERP pongs first\n")
	fmt.Fprintf(tw, "from the start of `up`; median [min-max]\t\t\t\t\t\t\n")
	for _, s := range []struct {
		name string
		r    *sysResult
	}{{"Skein (skein ping --c 20)", r.skein}, {"tailscaled (tailscale ping --c 20)", r.ts}} {
		if s.r == nil || len(s.r.trials) == 0 {
			fmt.Fprintf(tw, "%s\t-\t-\t-\t-\t-\t-\n", s.name)
			continue
		}
		ts := trialStats(s.r.trials)
		fmt.Fprintf(tw, "%s\t%d (%d direct)\t%s\t%s\t%s\t%s\t%s\n", s.name, len(s.r.trials), ts.ok,
			spread(ts.up), spread(ts.first), spread(ts.direct), spread(ts.afterUp), spreadN(ts.derp))
	}
	tw.Flush()

	fmt.Fprintf(&b, "\n")
	fmt.Fprintf(tw, "Skein against the targets\tmeasured\ttarget\t\n")
	ratio := func(what string, num, den *sysResult, fwd bool, target float64) {
		n, d := num.p(), den.p()
		if n == nil || d == nil {
			fmt.Fprintf(tw, "%s\t-\t≥ %.2f×\t\n", what, target)
			return
		}
		x := median(n.fwd) / median(d.fwd)
		if !fwd {
			x = median(n.rev) / median(d.rev)
		}
		fmt.Fprintf(tw, "%s\t%.2f×\t≥ %.2f×\t%s\n", what, x, target, verdict(x >= target))
	}
	ratio("throughput Skein / tailscaled, A→B", r.skein, r.ts, true, 1.05)
	ratio("throughput Skein / tailscaled, B→A", r.skein, r.ts, false, 1.05)
	ratio("throughput Skein / wireguard-go, A→B", r.skein, r.wg, true, 1.0)
	ratio("throughput Skein / wireguard-go, B→A", r.skein, r.wg, false, 1.0)
	limit := func(what, unit string, v float64, have bool, target float64) {
		if !have {
			fmt.Fprintf(tw, "%s\t-\t≤ %g %s\t\n", what, target, unit)
			return
		}
		fmt.Fprintf(tw, "%s\t%s %s\t≤ %g %s\t%s\n", what, num(v), unit, target, unit, verdict(v <= target))
	}
	worst := func(f func(*daemonStats) float64) (float64, bool) {
		if r.skein == nil || len(r.skein.daemons) == 0 {
			return 0, false
		}
		m := 0.0
		for _, d := range r.skein.daemons {
			m = max(m, f(d))
		}
		return m, true
	}
	// RSS 0 means the phase did not get that far; 0 CPU ticks is a real (if coarse) result.
	v, ok := worst(func(d *daemonStats) float64 { return float64(d.rssIdle) / 1024 })
	limit("skeind RSS idle, worse of A/B", "MB", v, ok && v > 0, 25)
	v, ok = worst(func(d *daemonStats) float64 { return float64(d.rssLoad) / 1024 })
	limit("skeind RSS 30 s after load, worse of A/B", "MB", v, ok && v > 0, 40)
	v, ok = worst(func(d *daemonStats) float64 { return d.idleTicks })
	limit("skeind idle CPU (utime+stime), worse of A/B", "ms/min", v, ok, 30)
	if r.skein != nil && len(r.skein.trials) > 0 {
		ts := trialStats(r.skein.trials)
		limit(fmt.Sprintf("first direct pong from `skein up`, median of %d", len(ts.direct)), "s", median(ts.direct), true, 1)
		limit("  the same, counted from when `up` returns", "s", median(ts.afterUp), true, 1)
	} else {
		limit("first direct pong from `skein up`, median", "s", 0, false, 1)
	}
	tw.Flush()
	return b.String()
}

type trialSummary struct {
	up, first, direct, afterUp, derp []float64 // seconds; counts for derp
	ok                               int
}

func trialStats(trials []trial) trialSummary {
	var ts trialSummary
	for _, tr := range trials {
		ts.up = append(ts.up, tr.up.Seconds())
		ts.first = append(ts.first, tr.firstPong.Seconds())
		d := math.Inf(1) // never direct: sorts last
		if tr.ok {
			d = tr.direct.Seconds()
			ts.ok++
		}
		ts.direct = append(ts.direct, d)
		ts.afterUp = append(ts.afterUp, d-tr.up.Seconds())
		ts.derp = append(ts.derp, float64(tr.derpPongs))
	}
	return ts
}

func (s *sysResult) p() *pairResult {
	if s == nil {
		return nil
	}
	return s.pair
}

func (s *sysResult) mem(f func(*daemonStats) int64) string {
	if s == nil || len(s.daemons) == 0 {
		return "-"
	}
	var parts []string
	for _, d := range s.daemons {
		if f(d) == 0 {
			parts = append(parts, "-")
		} else {
			parts = append(parts, fmt.Sprintf("%.1f", float64(f(d))/1024))
		}
	}
	return strings.Join(parts, " / ")
}

func (s *sysResult) cpu(f func(*daemonStats) float64) string {
	if s == nil || len(s.daemons) == 0 {
		return "-"
	}
	var parts []string
	for _, d := range s.daemons {
		if d.idleWindow == 0 {
			parts = append(parts, "-")
		} else {
			parts = append(parts, fmt.Sprintf("%.0f", f(d)))
		}
	}
	return strings.Join(parts, " / ")
}

func verdict(ok bool) string {
	if ok {
		return "met"
	}
	return "MISSED"
}

// spread is "median [min-max]" with two decimals.
func spread(v []float64) string {
	if len(v) == 0 {
		return "-"
	}
	lo, hi := v[0], v[0]
	for _, x := range v {
		lo, hi = min(lo, x), max(hi, x)
	}
	return fmt.Sprintf("%s [%s-%s]", num(median(v)), num(lo), num(hi))
}

// num prints a figure with two decimals, or "never" for a trial that never went direct.
func num(x float64) string {
	if math.IsInf(x, 1) {
		return "never"
	}
	return fmt.Sprintf("%.2f", x)
}

// spreadN is spread for counts.
func spreadN(v []float64) string {
	if len(v) == 0 {
		return "-"
	}
	lo, hi := v[0], v[0]
	for _, x := range v {
		lo, hi = min(lo, x), max(hi, x)
	}
	return fmt.Sprintf("%g [%g-%g]", median(v), lo, hi)
}

// loadavg is the 1-minute load average.
func loadavg() string {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return "?"
	}
	f := strings.Fields(string(b))
	return f[0]
}
