package lab_test

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
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
	"github.com/skeinvpn/skein/ipc"
)

// pprofAddr is where skeind serves its profiles in the cycle test (inside its own namespace).
const pprofAddr = "127.0.0.1:6060"

// usage is what one skeind holds at a moment.
type usage struct {
	rssKB, anonKB int // VmRSS, RssAnon
	heapInuse     int // Go heap in use after a collection, bytes
	goroutines    int
	fds, threads  int
	rules, routes int // ip rules and routes (both families, all tables)
	nftLines      int
	totalAlloc    uint64 // Go's cumulative allocations, bytes
}

func (u usage) String() string {
	return fmt.Sprintf("RSS %.1f MB (anon %.1f), heap in use %.1f MB, %d goroutines, %d fds, %d threads, %d rules, %d routes, %d nft lines",
		float64(u.rssKB)/1024, float64(u.anonKB)/1024, float64(u.heapInuse)/(1<<20), u.goroutines, u.fds, u.threads, u.rules, u.routes, u.nftLines)
}

// pprofGet fetches a path from skeind's profiling switch, from inside its namespace.
func (n *node) pprofGet(path string) []byte {
	n.t.Helper()
	c := &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{DialContext: n.host.Dial, DisableKeepAlives: true}}
	resp, err := c.Get("http://" + pprofAddr + path)
	if err != nil {
		n.t.Fatalf("GET %s: %v", path, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil || resp.StatusCode != 200 {
		n.t.Fatalf("GET %s: %s %v", path, resp.Status, err)
	}
	return b
}

var heapInuseRE = regexp.MustCompile(`(?m)^# HeapInuse = (\d+)$`)

// procStatus reads fields (in kB or counts) from /proc/PID/status.
func procStatus(t testing.TB, pid int, fields ...string) []int {
	t.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		t.Fatal(err)
	}
	out := make([]int, len(fields))
	for _, line := range strings.Split(string(b), "\n") {
		k, v, _ := strings.Cut(line, ":")
		for i, f := range fields {
			if k == f {
				out[i], _ = strconv.Atoi(strings.Fields(v)[0])
			}
		}
	}
	return out
}

// hostState is the namespace's rules, routes, nftables ruleset and resolv.conf, without the
// IPv6 link-local lines the kernel adds on its own schedule.
func (n *node) hostState() (snapshot string, rules, routes, nft int) {
	n.t.Helper()
	var b strings.Builder
	for _, fam := range []string{"-4", "-6"} {
		r := n.ipLines(fam, "rule")
		rt := n.ipLines(fam, "route", "show", "table", "all")
		rules, routes = rules+len(r), routes+len(rt)
		b.WriteString(strings.Join(append(r, rt...), "\n") + "\n")
	}
	link, _ := n.host.Run("ip", "link", "show", "skein0") // absent while down
	b.WriteString(link + "\n")
	out, err := n.host.Run("nft", "list", "ruleset")
	if err != nil {
		n.t.Fatalf("nft list ruleset: %v", err)
	}
	for _, line := range strings.Split(out, "\n") {
		if strings.TrimSpace(line) != "" {
			b.WriteString(line + "\n")
			nft++
		}
	}
	resolv, err := n.host.Run("cat", "/etc/resolv.conf") // the namespace's own file
	if err != nil {
		n.t.Fatalf("resolv.conf: %v", err)
	}
	b.WriteString("resolv.conf:\n" + resolv + "\n")
	return b.String(), rules, routes, nft
}

// measure reads skeind's memory, goroutines and descriptors and the host's routing state. RSS is
// read first, as the user would see it; the heap figure is taken after a collection, so that
// garbage not yet collected does not hide or fake a leak. With SKEIN_LAB_PROFILES=DIR the heap
// profile and the goroutine dump are saved there, named by label.
func (n *node) measure(label string) usage {
	n.t.Helper()
	pid := n.proc.Pid()
	var u usage
	st := procStatus(n.t, pid, "VmRSS", "RssAnon", "Threads")
	u.rssKB, u.anonKB, u.threads = st[0], st[1], st[2]
	fds, err := os.ReadDir(fmt.Sprintf("/proc/%d/fd", pid))
	if err != nil {
		n.t.Fatal(err)
	}
	u.fds = len(fds)
	heap := n.pprofGet("/debug/pprof/heap?gc=1&debug=1")
	m := heapInuseRE.FindSubmatch(heap)
	if m == nil {
		n.t.Fatalf("no HeapInuse in the heap profile")
	}
	u.heapInuse, _ = strconv.Atoi(string(m[1]))
	var vars struct {
		Goroutines int
		Memstats   struct{ TotalAlloc uint64 }
	}
	if err := json.Unmarshal(n.pprofGet("/debug/vars"), &vars); err != nil {
		n.t.Fatal(err)
	}
	u.goroutines, u.totalAlloc = vars.Goroutines, vars.Memstats.TotalAlloc
	_, u.rules, u.routes, u.nftLines = n.hostState()
	if dir := os.Getenv("SKEIN_LAB_PROFILES"); dir != "" {
		os.WriteFile(filepath.Join(dir, label+".heap"), n.pprofGet("/debug/pprof/heap"), 0o644)
		os.WriteFile(filepath.Join(dir, label+".goroutines"), n.pprofGet("/debug/pprof/goroutine?debug=1"), 0o644)
	}
	return u
}

// cycler is one skeind going through repeated disconnects in the cycle test.
type cycler struct {
	t        *testing.T
	n        *node
	ipc      *ipc.Client // one client: a new one per call would leave idle connections in skeind
	peer     string      // the official peer in its netmap
	peerIP   netip.Addr
	pristine string // the host before the first up
	name     string // for the log: down/up or logout/login
	up, down []string
	table    map[int]usage
}

// connect runs the up command and checks skeind is Running with the official peer.
func (c *cycler) connect() {
	c.t.Helper()
	mustOK(c.t, c.n.cli(c.up...), c.up[0])
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	st, err := c.ipc.Status(ctx)
	if err != nil {
		c.t.Fatal(err)
	}
	if st.State != ipc.StateRunning || c.n.peer(st, c.peer) == nil {
		c.t.Fatalf("after %s: state %s, %s in netmap: %v", c.up[0], st.State, c.peer, c.n.peer(st, c.peer) != nil)
	}
}

// disconnect runs the down command and checks the host is exactly as before the first up.
func (c *cycler) disconnect(i int) {
	c.t.Helper()
	mustOK(c.t, c.n.cli(c.down...), c.down[0])
	if got, _, _, _ := c.n.hostState(); got != c.pristine {
		c.t.Fatalf("after %s %d the host differs from before the first up:\n--- before\n%s--- after\n%s", c.down[0], i, c.pristine, got)
	}
}

// run does cycles down/up cycles, measuring at the checkpoints (0 = before the first), and
// asserts that everything stays within reach of the figures after the first cycle.
func (c *cycler) run(cycles int, checkpoints ...int) {
	c.t.Helper()
	name := c.name
	c.table = map[int]usage{0: c.n.measure(fmt.Sprintf("%s-0", c.down[0]))}
	start := time.Now()
	for i := 1; i <= cycles; i++ {
		c.disconnect(i)
		c.connect()
		if slices.Contains(checkpoints, i) {
			pingICMP(c.t, c.n.host, c.peerIP) // the tunnel works
			c.table[i] = c.n.measure(fmt.Sprintf("%s-%d", c.down[0], i))
		}
	}
	c.t.Logf("%d %s cycles in %v", cycles, name, time.Since(start).Round(time.Second))
	for _, i := range append([]int{0}, checkpoints...) {
		c.t.Logf("%s %3d: %v", name, i, c.table[i])
	}
	ref, last := c.table[checkpoints[0]], c.table[checkpoints[len(checkpoints)-1]]
	perCycle := float64(last.totalAlloc-ref.totalAlloc) / float64(cycles-checkpoints[0]) / (1 << 20)
	c.t.Logf("%s: Go allocated %.1f MB per cycle", name, perCycle)
	// A new wireguard-go device per session allocated 35 MB a cycle (issue 21); a session on
	// the kept one allocates about 3.
	if perCycle > 8 {
		c.t.Errorf("%s: %.1f MB allocated per cycle, want ≤ 8 (is a new WireGuard device made per session?)", name, perCycle)
	}
	for _, i := range checkpoints[1:] {
		u := c.table[i]
		if d := float64(u.rssKB-ref.rssKB) / 1024; d > 10 {
			c.t.Errorf("%s %d: RSS %.1f MB, %.1f MB above the first cycle's (want ≤ 10)", name, i, float64(u.rssKB)/1024, d)
		}
		if d := float64(u.heapInuse-ref.heapInuse) / (1 << 20); d > 5 {
			c.t.Errorf("%s %d: Go heap in use %.1f MB, %.1f MB above the first cycle's (want ≤ 5)", name, i, float64(u.heapInuse)/(1<<20), d)
		}
		if u.goroutines > ref.goroutines+3 {
			c.t.Errorf("%s %d: %d goroutines, %d after the first cycle", name, i, u.goroutines, ref.goroutines)
		}
		if u.fds > ref.fds+2 {
			c.t.Errorf("%s %d: %d descriptors, %d after the first cycle", name, i, u.fds, ref.fds)
		}
		if u.rules != ref.rules || u.routes != ref.routes || u.nftLines != ref.nftLines {
			c.t.Errorf("%s %d: %d rules, %d routes, %d nftables lines; after the first cycle %d, %d, %d",
				name, i, u.rules, u.routes, u.nftLines, ref.rules, ref.routes, ref.nftLines)
		}
	}
}

// TestCyclesStayFlat (issue 21): skeind logged in with one official peer, no traffic, taken
// through 100 `skein down`/`skein up` cycles; beside it, in the same lab, another skeind through
// 50 `skein logout`/`skein up --auth-key` cycles. Each one's RSS stays within 10 MB of its value
// after the first cycle, its Go heap in use (after a collection), goroutines, descriptors, and
// the host's rules, routes and nftables objects stay flat, every disconnect leaves the host
// exactly as before the first up, and a cycle allocates a few MB, not a new WireGuard device.
//
// Both run the plain skeind build: the race detector's shadow memory would swamp the figures.
// Two users whose policy keeps them apart, so that neither sees the other's nodes come and go
// (the stop/start node has a third user of its own).
func TestCyclesStayFlat(t *testing.T) {
	t.Parallel()
	l := lab.New(t)
	c, err := l.StartControl()
	if err != nil {
		t.Fatal(err)
	}
	tnA, err := l.StartTailnet("lab", "alpha-ts")
	if err != nil {
		t.Fatal(err)
	}
	tnB, err := l.StartTailnet("other", "beta-ts")
	if err != nil {
		t.Fatal(err)
	}
	tnC, err := l.StartTailnet("solo", "gamma-ts")
	if err != nil {
		t.Fatal(err)
	}
	apart := `{"acls": [
    {"action": "accept", "src": ["lab@"], "dst": ["lab@:*"]},
    {"action": "accept", "src": ["other@"], "dst": ["other@:*"]},
    {"action": "accept", "src": ["solo@"], "dst": ["solo@:*"]}
  ]}`
	if err := c.SetPolicy(apart); err != nil {
		t.Fatal(err)
	}
	newCycler := func(t *testing.T, tn *lab.Tailnet, peer, host, name string, logIn bool) *cycler {
		h, err := l.AddHost(host)
		if err != nil {
			t.Fatal(err)
		}
		st, err := tn.Peer(peer).Status()
		if err != nil {
			t.Fatal(err)
		}
		n := startNodeWith(t, h, true, "SKEIN_PPROF="+pprofAddr)
		down, _, _ := strings.Cut(name, "/")
		cy := &cycler{t: t, n: n, ipc: ipc.NewClient(n.socket), peer: peer, peerIP: st.Self.IPv4(), name: name, down: []string{down}}
		cy.pristine, _, _, _ = n.hostState()
		cy.up = []string{"up", "--login-server", tn.Control.URL(), "--auth-key", tn.AuthKey, "--hostname", host}
		cy.connect()
		pingICMP(t, h, cy.peerIP)
		if !logIn {
			cy.up = []string{"up"}
		}
		return cy
	}
	t.Run("down-up", func(t *testing.T) {
		t.Parallel()
		cy := newCycler(t, tnA, "alpha-ts", "skein-c", "down/up", false)
		cy.run(100, 1, 5, 20, 40, 100)
		cy.n.stop()
	})
	t.Run("logout-login", func(t *testing.T) {
		t.Parallel()
		cy := newCycler(t, tnB, "beta-ts", "skein-l", "logout/login", true)
		cy.run(50, 1, 10, 25, 50)
		cy.n.stop()
	})
	// Issue 14, R15: 100 stops (SIGTERM, exit 0) and starts of skeind while logged in. Each stop
	// leaves the host exactly as before the first start, and each new process reaches Running
	// with the same rules, routes, nftables objects, descriptors and goroutines as the first.
	t.Run("stop-start", func(t *testing.T) {
		t.Parallel()
		h, err := l.AddHost("skein-s")
		if err != nil {
			t.Fatal(err)
		}
		st, err := tnC.Peer("gamma-ts").Status()
		if err != nil {
			t.Fatal(err)
		}
		n := startNodeWith(t, h, true, "SKEIN_PPROF="+pprofAddr)
		pristine, _, _, _ := n.hostState()
		mustOK(t, n.cli("up", "--login-server", tnC.Control.URL(), "--auth-key", tnC.AuthKey, "--hostname", "skein-s"), "skein up")
		client := ipc.NewClient(n.socket)
		running := func(i int) {
			t.Helper()
			lab.Eventually(t, 20*time.Second, func() error {
				ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
				defer cancel()
				s, err := client.Status(ctx)
				if err != nil {
					return err
				}
				if s.State != ipc.StateRunning || n.peer(s, "gamma-ts") == nil {
					return fmt.Errorf("start %d: state %s", i, s.State)
				}
				return nil
			})
		}
		running(0)
		pingICMP(t, h, st.Self.IPv4())
		first := n.measure("stop-start-0")
		start := time.Now()
		const cycles = 100
		for i := 1; i <= cycles; i++ {
			n.stop() // SIGTERM, exit 0 (checked)
			if got, _, _, _ := n.hostState(); got != pristine {
				t.Fatalf("after stop %d the host differs from before the first start:\n--- before\n%s--- after\n%s", i, pristine, got)
			}
			n.start()
			running(i)
		}
		pingICMP(t, h, st.Self.IPv4())
		last := n.measure(fmt.Sprintf("stop-start-%d", cycles))
		t.Logf("%d stop/start cycles in %v; first: %v; last: %v", cycles, time.Since(start).Round(time.Second), first, last)
		if last.rules != first.rules || last.routes != first.routes || last.nftLines != first.nftLines {
			t.Errorf("after %d restarts: %d rules, %d routes, %d nftables lines; after the first start %d, %d, %d",
				cycles, last.rules, last.routes, last.nftLines, first.rules, first.routes, first.nftLines)
		}
		if last.fds > first.fds+2 || last.goroutines > first.goroutines+3 {
			t.Errorf("after %d restarts: %d descriptors, %d goroutines; after the first start %d, %d",
				cycles, last.fds, last.goroutines, first.fds, first.goroutines)
		}
		n.stop()
	})
}
