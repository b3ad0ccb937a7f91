//go:build bench

// Package bench_test is Skein's benchmark harness (`make bench`, see README "Benchmarks"):
// throughput, added latency and resource use of Skein, official tailscaled and plain upstream
// wireguard-go, each measured on its own fresh host pair in the lab (internal/lab) in the same
// run, so that the ratios compare like with like. It prints figures and ratios and writes them
// to bench-results.txt; it fails only when a measurement breaks, never on a missed target.
package bench_test

import (
	"crypto/sha256"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/skeinvpn/skein/internal/lab"
)

// Binaries under test, built by TestMain with a plain `go build` (no -race: it would slow the
// data plane several times).
var skeindBin, skeinBin, wgBin string

// wgVersion is the upstream wireguard-go module version, the one skeind links too.
var wgVersion string

// srcRev names the source skeind was built from: the commit, and for a dirty tree a hash of the
// uncommitted Go changes, so that runs against a working tree that others edit can be told apart.
var srcRev = "?"

func sourceRev() string {
	git := func(args ...string) []byte {
		cmd := exec.Command("git", args...)
		cmd.Dir = repoDir() // pathspecs below are from the top
		out, _ := cmd.Output()
		return out
	}
	rev := strings.TrimSpace(string(git("rev-parse", "--short", "HEAD")))
	if rev == "" {
		return "?"
	}
	h := sha256.New()
	diff := git("diff", "HEAD", "--", "*.go")
	h.Write(diff)
	untracked := git("ls-files", "--others", "--exclude-standard", "--", "*.go")
	for _, f := range strings.Fields(string(untracked)) {
		if strings.HasPrefix(f, "tests/") {
			continue // not part of the binaries
		}
		b, _ := os.ReadFile(filepath.Join(repoDir(), f))
		h.Write([]byte(f))
		h.Write(b)
	}
	if len(diff) == 0 && len(untracked) == 0 {
		return rev
	}
	return fmt.Sprintf("%s-dirty.%x", rev, h.Sum(nil)[:4])
}

func TestMain(m *testing.M) {
	srcRev = sourceRev() // before building, in case the tree changes during the run
	dir, err := lab.BuildForTest("skein-bench-bin-", func(dir string) [][]string {
		skeindBin, skeinBin, wgBin = filepath.Join(dir, "skeind"), filepath.Join(dir, "skein"), filepath.Join(dir, "wireguard-go")
		return [][]string{
			{"build", "-o", skeindBin, "github.com/skeinvpn/skein/cmd/skeind"},
			{"build", "-o", skeinBin, "github.com/skeinvpn/skein/cmd/skein"},
			// The module root is upstream's main package: its standard Bind on a kernel TUN.
			{"build", "-o", wgBin, "golang.zx2c4.com/wireguard"},
		}
	})
	if err != nil {
		fmt.Fprintln(os.Stderr, "building binaries under test:", err)
		os.Exit(1)
	}
	if out, err := exec.Command("go", "list", "-m", "-f", "{{.Version}}", "golang.zx2c4.com/wireguard").Output(); err == nil {
		wgVersion = strings.TrimSpace(string(out))
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// Run parameters. The whole bench takes about 9 minutes; the fixed waits below are most of it.
const (
	iperfSecs    = 10
	iperfRuns    = 3 // per direction; the median is reported
	pingCount    = 200
	pingInterval = "0.005"
	settle       = 5 * time.Second  // after the path went direct, before the idle window
	idleWindow   = 60 * time.Second // no traffic at all: CPU and RSS of the daemons
	afterLoad    = 30 * time.Second // after the last full-speed run, before RSS "after load"
	skeinTrials  = 5                // fresh nodes for time to first direct pong
	tsTrials     = 3                // the same for official tailscaled, for comparison
)

func TestBench(t *testing.T) {
	for _, tool := range []string{"iperf3", "ping", "ss", "ip"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Fatalf("missing %s: run `make deps` (scripts/deps.sh)", tool)
		}
	}
	start := time.Now()
	r := &report{started: start, loadStart: loadavg()}
	t.Run("bare", func(t *testing.T) { r.bare = benchBare(t) })
	t.Run("skein", func(t *testing.T) { r.skein = benchSkein(t) })
	t.Run("tailscaled", func(t *testing.T) { r.ts = benchTailscaled(t) })
	t.Run("wireguard-go", func(t *testing.T) { r.wg = benchWireguardGo(t) })
	r.elapsed = time.Since(start)
	out := r.summary()
	fmt.Print("\n" + out)
	path := filepath.Join(repoDir(), "bench-results.txt")
	if err := os.WriteFile(path, []byte(out), 0o644); err != nil {
		t.Error(err)
	} else {
		t.Logf("summary written to %s", path)
	}
}

// repoDir is the directory holding go.mod, above the test's working directory.
func repoDir() string {
	dir, _ := os.Getwd()
	for d := dir; ; d = filepath.Dir(d) {
		if _, err := os.Stat(filepath.Join(d, "go.mod")); err == nil {
			return d
		}
		if d == filepath.Dir(d) {
			return dir
		}
	}
}

// environment describes the machine and versions, so that figures are never compared across
// machines without knowing it.
func environment() string {
	cpu := "unknown CPU"
	if b, err := os.ReadFile("/proc/cpuinfo"); err == nil {
		for _, l := range strings.Split(string(b), "\n") {
			if k, v, ok := strings.Cut(l, ":"); ok && strings.TrimSpace(k) == "model name" {
				cpu = strings.TrimSpace(v)
				break
			}
		}
	}
	kernel, _ := os.ReadFile("/proc/sys/kernel/osrelease")
	iperf := "iperf3 ?"
	if out, err := exec.Command("iperf3", "--version").Output(); err == nil {
		iperf, _, _ = strings.Cut(string(out), " (")
	}
	return fmt.Sprintf("machine: %s, %d CPUs, Linux %s\nskein %s, %s, %s, tailscaled %s, wireguard-go %s",
		cpu, runtime.NumCPU(), strings.TrimSpace(string(kernel)), srcRev, runtime.Version(), iperf, tsVersion, wgVersion)
}
