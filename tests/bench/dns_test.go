//go:build bench

package bench_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math"
	"math/rand/v2"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"text/tabwriter"
	"time"

	mdns "github.com/miekg/dns"
	"github.com/vishvananda/netns"
	"golang.zx2c4.com/wireguard/tun"

	"github.com/skeinvpn/skein/daemon/dns"
	"github.com/skeinvpn/skein/daemon/dns/intercept"
)

// MagicDNS benchmark: the resolver as skeind runs it, measured through the real packet path.
// A kernel TUN in a fresh network namespace has the service addresses routed into it and is
// wrapped by intercept.Wrap with a dns.Server holding a 10 000-host tailnet, while a goroutine
// keeps reading the wrapped device as wireguard-go would. Queries go from a UDP socket in the
// namespace through the kernel, the TUN, the interceptor and the resolver, and back.
const (
	dnsHosts      = 10000
	dnsSuffix     = "tail.example.test"
	dnsFQDNQs     = 10000
	dnsShortQs    = 10000
	dnsPTRQs      = 1000
	dnsLocalQs    = 20
	dnsWarmup     = 200
	dnsTUNName    = "skbdns0"
	dnsNetnsPre   = "skbench-dns-"
	dnsP50Target  = 100.0  // µs
	dnsP99Target  = 1000.0 // µs
	dnsStall      = time.Second
	dnsTryTimeout = 2 * time.Second
)

var (
	dnsSvc4   = netip.MustParseAddr("100.100.100.100")
	dnsSvc6   = netip.MustParseAddr("fd7a:115c:a1e0::53")
	dnsServer = netip.AddrPortFrom(dnsSvc4, 53).String()
)

// dnsSeries is one kind of query: latencies of the answered ones (µs), and what went wrong.
type dnsSeries struct {
	name    string
	sent    int
	lat     []float64 // µs, answered queries only
	lost    int       // no answer within the client timeout
	wrong   int       // answered, but not with what the config says
	example string    // the first wrong answer, for the log
}

func (s *dnsSeries) max() float64 {
	m := 0.0
	for _, v := range s.lat {
		m = max(m, v)
	}
	return m
}

// peerName and peerAddr are host i of the config (1-based).
func peerName(i int) string { return fmt.Sprintf("peer-%05d", i) }

func peerAddr(i int) netip.Addr {
	return netip.AddrFrom4([4]byte{100, 64 + byte(i>>16), byte(i >> 8), byte(i)})
}

// magicConfig is what skeind's computeDNS builds for a tailnet of n MagicDNS peers whose self
// node has an IPv4 address (peers' IPv6 addresses are then left out), with the system's
// resolver as upstream for everything else.
func magicConfig(n int, upstream netip.AddrPort) dns.Config {
	cfg := dns.Config{
		Hosts:         make(map[string][]netip.Addr, n),
		SearchDomains: []string{dnsSuffix},
		LocalDomains:  []string{dnsSuffix + "."},
		Upstreams:     []dns.Upstream{{Addr: upstream}},
	}
	for i := 1; i <= n; i++ {
		cfg.Hosts[peerName(i)+"."+dnsSuffix+"."] = []netip.Addr{peerAddr(i)}
	}
	for i := 64; i <= 127; i++ {
		cfg.LocalDomains = append(cfg.LocalDomains, fmt.Sprintf("%d.100.in-addr.arpa.", i))
	}
	cfg.LocalDomains = append(cfg.LocalDomains, "0.e.1.a.c.5.1.1.a.7.d.f.ip6.arpa.")
	return cfg
}

// sweepDNSNetns removes namespaces left by earlier runs whose process is gone (a run killed
// by the test timeout or a signal does not get to its cleanups).
func sweepDNSNetns(t *testing.T) {
	entries, _ := os.ReadDir("/run/netns")
	for _, e := range entries {
		pid, err := strconv.Atoi(strings.TrimPrefix(e.Name(), dnsNetnsPre))
		if !strings.HasPrefix(e.Name(), dnsNetnsPre) || err != nil || pid == os.Getpid() {
			continue
		}
		if _, err := os.Stat(fmt.Sprintf("/proc/%d", pid)); err == nil {
			continue // still running
		}
		if out, err := exec.Command("ip", "netns", "del", e.Name()).CombinedOutput(); err != nil {
			t.Logf("removing stale namespace %s: %v: %s", e.Name(), err, out)
		} else {
			t.Logf("removed stale namespace %s", e.Name())
		}
	}
}

// dnsNetns creates the namespace and removes it when the test ends, failed or not.
func dnsNetns(t *testing.T) string {
	t.Helper()
	sweepDNSNetns(t)
	name := dnsNetnsPre + strconv.Itoa(os.Getpid())
	if out, err := exec.Command("ip", "netns", "add", name).CombinedOutput(); err != nil {
		t.Fatalf("ip netns add %s: %v: %s", name, err, out)
	}
	t.Cleanup(func() {
		if out, err := exec.Command("ip", "netns", "del", name).CombinedOutput(); err != nil {
			t.Errorf("ip netns del %s: %v: %s", name, err, out)
		}
	})
	return name
}

// enterNetns moves the test goroutine's OS thread into ns until the test ends: the TUN and
// every socket the test goroutine opens live there.
func enterNetns(t *testing.T, ns string) {
	t.Helper()
	runtime.LockOSThread()
	home, err := netns.Get()
	if err != nil {
		t.Fatal(err)
	}
	target, err := netns.GetFromName(ns)
	if err != nil {
		home.Close()
		t.Fatal(err)
	}
	if err := netns.Set(target); err != nil {
		home.Close()
		target.Close()
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := netns.Set(home); err != nil {
			t.Errorf("back to the original namespace: %v", err) // the thread dies with the goroutine
		} else {
			runtime.UnlockOSThread()
		}
		home.Close()
		target.Close()
	})
}

func ipIn(t *testing.T, ns string, args ...string) {
	t.Helper()
	if out, err := exec.Command("ip", append([]string{"-n", ns}, args...)...).CombinedOutput(); err != nil {
		t.Fatalf("ip %s: %v: %s", strings.Join(args, " "), err, out)
	}
}

// silentDial stands in for the upstream connections: a resolver that takes the query and never
// answers. A query the server forwards instead of answering locally therefore stalls until
// its forwarding timeout, and is counted.
func silentDial(count *atomic.Int64) func(context.Context, string, string) (net.Conn, error) {
	return func(ctx context.Context, network, addr string) (net.Conn, error) {
		count.Add(1)
		c, s := net.Pipe()
		go func() { io.Copy(io.Discard, s); s.Close() }() // until the server closes its end
		return c, nil
	}
}

func TestBenchDNS(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Fatal("needs root (network namespace, TUN)")
	}
	if _, err := exec.LookPath("ip"); err != nil {
		t.Fatal("missing ip: run `make deps` (scripts/deps.sh)")
	}
	started, loadStart := time.Now(), loadavg()

	ns := dnsNetns(t)
	enterNetns(t, ns)
	dev, err := tun.CreateTUN(dnsTUNName, 1280) // skeind's MTU
	if err != nil {
		t.Fatalf("CreateTUN: %v", err)
	}
	ipIn(t, ns, "link", "set", "lo", "up")
	ipIn(t, ns, "link", "set", dnsTUNName, "up")
	ipIn(t, ns, "addr", "add", "100.64.0.1/32", "dev", dnsTUNName)
	ipIn(t, ns, "route", "add", dnsSvc4.String()+"/32", "dev", dnsTUNName)
	ipIn(t, ns, "-6", "addr", "add", "fd7a:115c:a1e0::1/128", "dev", dnsTUNName, "nodad")
	ipIn(t, ns, "-6", "route", "add", dnsSvc6.String()+"/128", "dev", dnsTUNName)

	var forwards atomic.Int64
	srv := dns.NewServer(dns.Options{
		Logf:      t.Logf,
		SelfAddrs: []netip.Addr{dnsSvc4, dnsSvc6},
		Dial:      silentDial(&forwards),
	})
	// 192.0.2.53 stands for the system resolver skeind forwards everything else to; silentDial
	// makes it one that never answers.
	srv.SetConfig(magicConfig(dnsHosts, netip.MustParseAddrPort("192.0.2.53:53")))

	d := intercept.Wrap(dev, intercept.Options{
		Addrs:   []netip.Addr{dnsSvc4, dnsSvc6},
		Handler: srv.Handle,
		Logf:    t.Logf,
	})
	// What wireguard-go does with the device: read batches at offset 16, forever. What comes
	// out (not for the service addresses) is discarded; here that is only the kernel's own
	// IPv6 chatter, if any.
	var passed atomic.Int64
	readerDone := make(chan error, 1)
	go func() {
		bufs := make([][]byte, d.BatchSize())
		for i := range bufs {
			bufs[i] = make([]byte, 16+65535)
		}
		sizes := make([]int, len(bufs))
		for {
			n, err := d.Read(bufs, sizes, 16)
			passed.Add(int64(n))
			if err != nil {
				if errors.Is(err, tun.ErrTooManySegments) {
					continue
				}
				readerDone <- err
				return
			}
		}
	}()
	t.Cleanup(func() {
		if err := d.Close(); err != nil {
			t.Errorf("closing the device: %v", err)
		}
		select {
		case err := <-readerDone:
			if !errors.Is(err, os.ErrClosed) {
				t.Errorf("reader: %v", err)
			}
		case <-time.After(5 * time.Second):
			t.Error("reader did not stop")
		}
	})

	client := &mdns.Client{Net: "udp", Timeout: dnsTryTimeout}
	conn, err := client.Dial(dnsServer) // in the namespace: this goroutine's thread is there
	if err != nil {
		t.Fatalf("dial %s: %v", dnsServer, err)
	}
	defer conn.Close()

	// exchange sends one query and checks the answer; it records the latency of answered ones.
	exchange := func(s *dnsSeries, name string, qtype uint16, check func(*mdns.Msg) error) {
		m := new(mdns.Msg)
		m.SetQuestion(name, qtype)
		s.sent++
		t0 := time.Now()
		r, _, err := client.ExchangeWithConn(m, conn)
		el := time.Since(t0)
		if err != nil {
			s.lost++
			if s.example == "" {
				s.example = fmt.Sprintf("%s %s: %v after %s", name, mdns.TypeToString[qtype], err, el.Round(time.Millisecond))
			}
			return
		}
		s.lat = append(s.lat, float64(el.Nanoseconds())/1e3)
		if err := check(r); err != nil {
			s.wrong++
			if s.example == "" {
				s.example = fmt.Sprintf("%s %s: %v", name, mdns.TypeToString[qtype], err)
			}
		}
	}
	wantA := func(owner string, a netip.Addr) func(*mdns.Msg) error {
		return func(r *mdns.Msg) error {
			if r.Rcode != mdns.RcodeSuccess || !r.Authoritative || len(r.Answer) != 1 {
				return fmt.Errorf("rcode %s, AA %v, %d answers", mdns.RcodeToString[r.Rcode], r.Authoritative, len(r.Answer))
			}
			rr, ok := r.Answer[0].(*mdns.A)
			if !ok || rr.Hdr.Name != owner || rr.A.String() != a.String() {
				return fmt.Errorf("answer %v, want %s A %s", r.Answer[0], owner, a)
			}
			return nil
		}
	}

	rng := rand.New(rand.NewPCG(uint64(started.UnixNano()), 0x5ce1))
	fqdn := &dnsSeries{name: fmt.Sprintf("peer FQDN, A (random of %d)", dnsHosts)}
	short := &dnsSeries{name: "short name via search domain, A"}
	ptr := &dnsSeries{name: "PTR, x.y.64.100.in-addr.arpa."}
	local := &dnsSeries{name: "printer.local., A/AAAA (NXDOMAIN)"}

	// Warm-up, not counted: first use of the socket, the handler paths, the CPU caches.
	warm := &dnsSeries{}
	for range dnsWarmup {
		i := 1 + rng.IntN(dnsHosts)
		exchange(warm, peerName(i)+"."+dnsSuffix+".", mdns.TypeA, wantA(peerName(i)+"."+dnsSuffix+".", peerAddr(i)))
	}
	if len(warm.lat) == 0 {
		t.Fatalf("no answer through the TUN during the warm-up: %s", warm.example)
	}

	for range dnsFQDNQs {
		i := 1 + rng.IntN(dnsHosts)
		name := peerName(i) + "." + dnsSuffix + "."
		exchange(fqdn, name, mdns.TypeA, wantA(name, peerAddr(i)))
	}
	for range dnsShortQs {
		i := 1 + rng.IntN(dnsHosts)
		name := peerName(i) + "." // the owner name is the short name as asked
		exchange(short, name, mdns.TypeA, wantA(name, peerAddr(i)))
	}
	for range dnsPTRQs {
		i := 1 + rng.IntN(dnsHosts)
		a := peerAddr(i).As4()
		name := fmt.Sprintf("%d.%d.%d.%d.in-addr.arpa.", a[3], a[2], a[1], a[0])
		want := peerName(i) + "." + dnsSuffix + "."
		exchange(ptr, name, mdns.TypePTR, func(r *mdns.Msg) error {
			if r.Rcode != mdns.RcodeSuccess || len(r.Answer) != 1 {
				return fmt.Errorf("rcode %s, %d answers", mdns.RcodeToString[r.Rcode], len(r.Answer))
			}
			if rr, ok := r.Answer[0].(*mdns.PTR); !ok || rr.Ptr != want {
				return fmt.Errorf("answer %v, want PTR %s", r.Answer[0], want)
			}
			return nil
		})
	}
	// .local belongs to multicast DNS: it must get NXDOMAIN at once, never wait for an
	// upstream. A longer client timeout here, so that a forwarding stall shows as such.
	client.Timeout = dns.DefaultQueryTimeout + 3*time.Second
	for i := range dnsLocalQs {
		qtype := []uint16{mdns.TypeA, mdns.TypeAAAA}[i%2]
		exchange(local, "printer.local.", qtype, func(r *mdns.Msg) error {
			if r.Rcode != mdns.RcodeNameError {
				return fmt.Errorf("rcode %s, want NXDOMAIN", mdns.RcodeToString[r.Rcode])
			}
			return nil
		})
	}

	all := []*dnsSeries{fqdn, short, ptr, local}
	for _, s := range all {
		if s.lost > 0 || s.wrong > 0 {
			t.Errorf("%s: %d of %d unanswered, %d wrong; first: %s", s.name, s.lost, s.sent, s.wrong, s.example)
		}
	}
	if n := forwards.Load(); n > 0 {
		t.Errorf("%d upstream connections: a local name was forwarded", n)
	}
	if m := local.max(); m >= float64(dnsStall.Microseconds()) {
		t.Errorf(".local: slowest answer after %.0f ms, a stall (want NXDOMAIN at once)", m/1e3)
	}
	st := d.Stats()
	t.Logf("interceptor %+v; %d packets passed through Read; resolver %+v", st, passed.Load(), srv.Stats())

	out := dnsSummary(started, time.Since(started), loadStart, all, d.BatchSize())
	fmt.Print("\n" + out)
	if err := appendResults(out); err != nil {
		t.Error(err)
	}
}

// dnsMarker starts the DNS section of bench-results.txt.
const dnsMarker = "MagicDNS through the packet path"

func dnsSummary(started time.Time, elapsed time.Duration, loadStart string, all []*dnsSeries, batch int) string {
	var b strings.Builder
	fmt.Fprintf(&b, "%s, %s, took %s\n", dnsMarker, started.UTC().Format("2006-01-02 15:04 UTC"), elapsed.Round(time.Second))
	fmt.Fprintf(&b, "skein %s, %s, %d CPUs; load average at start %s, at end %s\n", srcRev, runtime.Version(), runtime.NumCPU(), loadStart, loadavg())
	fmt.Fprintf(&b, "Kernel TUN (MTU 1280, batch %d) in a fresh namespace, 100.100.100.100 routed into it, read in a\n", batch)
	fmt.Fprintf(&b, "loop as wireguard-go does; intercept.Wrap + dns.Server with %d MagicDNS hosts, upstream silent.\n", dnsHosts)
	fmt.Fprintf(&b, "Client: miekg/dns over one UDP socket in the namespace, one query at a time, after %d warm-up.\n\n", dnsWarmup)

	tw := tabwriter.NewWriter(&b, 0, 0, 2, ' ', 0)
	fmt.Fprintf(tw, "MagicDNS over UDP, µs\tqueries\tanswered\tp50\tp99\tmax\n")
	for _, s := range all {
		if len(s.lat) == 0 {
			fmt.Fprintf(tw, "%s\t%d\t0\t-\t-\t-\n", s.name, s.sent)
			continue
		}
		fmt.Fprintf(tw, "%s\t%d\t%d\t%.0f\t%.0f\t%.0f\n", s.name, s.sent, len(s.lat)-s.wrong,
			percentile(s.lat, 0.50), percentile(s.lat, 0.99), s.max())
	}
	tw.Flush()

	fmt.Fprintf(&b, "\n")
	fmt.Fprintf(tw, "MagicDNS against the targets\tmeasured\ttarget\t\n")
	limit := func(what string, v float64, have bool, target float64) {
		if !have {
			fmt.Fprintf(tw, "%s\t-\t≤ %g µs\t\n", what, target)
			return
		}
		v = math.Round(v) // judged as printed
		fmt.Fprintf(tw, "%s\t%.0f µs\t≤ %g µs\t%s\n", what, v, target, verdict(v <= target))
	}
	for _, s := range all[:3] {
		kind, _, _ := strings.Cut(s.name, ",")
		limit(kind+", p50", percentile(s.lat, 0.50), len(s.lat) > 0, dnsP50Target)
		limit(kind+", p99", percentile(s.lat, 0.99), len(s.lat) > 0, dnsP99Target)
	}
	loc := all[3]
	if len(loc.lat) == 0 {
		fmt.Fprintf(tw, ".local NXDOMAIN, max of %d\t-\t< 1 s, no stall\t\n", loc.sent)
	} else {
		fmt.Fprintf(tw, ".local NXDOMAIN, max of %d\t%.0f µs\t< %g s, no stall\t%s\n", loc.sent, loc.max(), dnsStall.Seconds(),
			verdict(loc.lost == 0 && loc.wrong == 0 && loc.max() < float64(dnsStall.Microseconds())))
	}
	tw.Flush()
	return b.String()
}

// appendResults adds the DNS section to bench-results.txt, after what TestBench wrote in the
// same run (it runs first and rewrites the file), replacing a DNS section from an earlier run.
func appendResults(section string) error {
	path := filepath.Join(repoDir(), "bench-results.txt")
	old, err := os.ReadFile(path)
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		return err
	}
	prev := string(old)
	if i := strings.Index(prev, dnsMarker); i >= 0 {
		prev = prev[:i]
	}
	prev = strings.TrimRight(prev, "\n")
	if prev != "" {
		prev += "\n\n"
	}
	return os.WriteFile(path, []byte(prev+section), 0o644)
}
