package lab

import (
	"crypto/rand"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// Versions of the third-party binaries the lab runs by default.
const (
	HeadscaleVersion = "v0.27.1"
	TailscaleVersion = "v1.86.5"
)

// CacheDir is where scripts/lab-peers.sh puts the binaries:
// $SKEIN_LAB_CACHE, default /var/cache/skein-lab.
func CacheDir() string {
	if d := os.Getenv("SKEIN_LAB_CACHE"); d != "" {
		return d
	}
	return "/var/cache/skein-lab"
}

// HeadscaleBinary is the path of the Headscale binary.
func HeadscaleBinary() string {
	return filepath.Join(CacheDir(), "headscale-"+HeadscaleVersion, "headscale")
}

// TailscaleBinaries returns the paths of the official tailscale CLI and
// tailscaled for a version such as "v1.86.5" ("" means TailscaleVersion).
func TailscaleBinaries(version string) (cli, daemon string) {
	if version == "" {
		version = TailscaleVersion
	}
	dir := filepath.Join(CacheDir(), "tailscale-"+version)
	return filepath.Join(dir, "tailscale"), filepath.Join(dir, "tailscaled")
}

const (
	nsPrefix = "skl" // namespace names: skl<id>-<role>
	idLen    = 4
	// controlName is a DNS name for the control host, valid in every lab
	// namespace (through /etc/netns/NS/hosts) and in the control cert.
	controlName = "control.skein.test"
	firstHost   = 10 // AddHost addresses start at .10
)

var (
	idRE     = regexp.MustCompile(`^[a-z0-9]{4}$`)
	nsRE     = regexp.MustCompile(`^` + nsPrefix + `([a-z0-9]{4})-[a-z0-9-]+$`)
	hostRE   = regexp.MustCompile(`^[a-z0-9][a-z0-9-]{0,30}[a-z0-9]$`)
	reserved = map[string]bool{"inet": true, "ctl": true}
)

// Lab is one run of the test lab: an "internet" namespace acting as router,
// optionally a control host and any number of hosts. Create it with New (in
// tests) or NewStandalone; it is safe for concurrent use.
type Lab struct {
	id     string
	subnet int          // index of the /24 in 198.18.0.0/15
	prefix netip.Prefix // 198.18.X.0/24
	dir    string
	ca     *certAuthority
	logf   func(format string, args ...any)

	inet *Host

	mu       sync.Mutex
	nsList   []string // created namespaces, in creation order
	hosts    map[string]*Host
	procs    []*Process
	nextAddr int
	usedAddr map[int]bool // last bytes taken by hosts and NATs (ever)
	nextLAN  int          // NAT LANs are 192.168.<nextLAN>.0/24
	control  *Control
	closed   bool
	cleanups []func() // in-process servers to stop before the namespaces go

	closeOnce sync.Once
	closeErr  error
}

// New starts a lab for a test and registers its cleanup with t.Cleanup. It
// fails the test (it does not skip) when not root, when the peer binaries
// are missing, or when the lab cannot be set up. If the test fails, the tail
// of every process log is dumped with t.Log before cleanup.
func New(t testing.TB) *Lab {
	t.Helper()
	l, err := newLab(t.Name(), t.Logf)
	if err != nil {
		t.Fatalf("lab: %v", err)
	}
	t.Cleanup(func() {
		if t.Failed() {
			l.dumpLogs(t.Logf)
		}
		keep := t.Failed() && os.Getenv("SKEIN_LAB_KEEP") == "1"
		if err := l.close(keep); err != nil {
			t.Errorf("lab cleanup: %v", err)
		}
	})
	return l
}

// NewStandalone starts a lab outside of tests (cmd/skein-lab). name is only
// recorded for humans. The caller must call Close.
func NewStandalone(name string) (*Lab, error) {
	return newLab(name, func(format string, args ...any) {
		fmt.Fprintf(os.Stderr, "lab: "+format+"\n", args...)
	})
}

func newLab(name string, logf func(string, ...any)) (*Lab, error) {
	start := time.Now()
	if err := checkPrereqs(); err != nil {
		return nil, err
	}
	l := &Lab{
		logf:     logf,
		hosts:    map[string]*Host{},
		nextAddr: firstHost,
		usedAddr: map[int]bool{},
		nextLAN:  1,
	}
	err := withRunLock(func() error {
		if _, err := sweepLocked(logf); err != nil {
			logf("sweep: %v", err)
		}
		recs, err := readRecords()
		if err != nil {
			return err
		}
		used := map[int]bool{}
		ids := map[string]bool{}
		for _, r := range recs {
			used[r.Subnet] = true
			ids[r.ID] = true
		}
		for range 100 {
			id := randomID()
			if ids[id] {
				continue
			}
			if _, err := os.Stat(runDir(id)); err == nil {
				continue
			}
			l.id = id
			break
		}
		if l.id == "" {
			return errors.New("cannot pick a run ID")
		}
		// Subnets 1..510 of 198.18.0.0/15, starting at a random one so that
		// parallel runs rarely probe the same indexes.
		startIdx := 1 + int(randomUint()%510)
		for i := range 510 {
			idx := 1 + (startIdx-1+i)%510
			if !used[idx] {
				l.subnet = idx
				break
			}
		}
		if l.subnet == 0 {
			return errors.New("all 510 lab subnets are in use")
		}
		l.prefix = subnetPrefix(l.subnet)
		l.dir = runDir(l.id)
		rec := runRecord{
			ID:      l.id,
			Name:    name,
			PID:     os.Getpid(),
			Subnet:  l.subnet,
			Dir:     l.dir,
			Created: time.Now(),
		}
		rec.PIDStart, err = procStartTime(rec.PID)
		if err != nil {
			return err
		}
		return writeRecord(rec)
	})
	if err != nil {
		return nil, err
	}
	if err := l.setup(); err != nil {
		if cerr := l.close(false); cerr != nil {
			err = fmt.Errorf("%w (cleanup: %v)", err, cerr)
		}
		return nil, err
	}
	logf("lab %s up: subnet %s, dir %s (%v)", l.id, l.prefix, l.dir, time.Since(start).Round(time.Millisecond))
	return l, nil
}

func checkPrereqs() error {
	if os.Geteuid() != 0 {
		return errors.New("the lab needs root (network namespaces, veth, TUN); run the lab tests as root")
	}
	if _, err := exec.LookPath("ip"); err != nil {
		return errors.New("the lab needs iproute2's `ip` in PATH")
	}
	cli, daemon := TailscaleBinaries("")
	for _, b := range []string{HeadscaleBinary(), cli, daemon} {
		if _, err := os.Stat(b); err != nil {
			return fmt.Errorf("missing %s: build it with scripts/lab-peers.sh (or set SKEIN_LAB_CACHE)", b)
		}
	}
	return nil
}

func (l *Lab) setup() error {
	if err := os.Mkdir(l.dir, 0o700); err != nil {
		return err
	}
	var err error
	if l.ca, err = newCA(l.dir, l.id); err != nil {
		return fmt.Errorf("CA: %w", err)
	}
	// The "internet": a namespace with a bridge; the router address is .1.
	inet := l.nsName("inet")
	if err := l.addNetns(inet); err != nil {
		return err
	}
	router := l.addrAt(1)
	if err := ipCmds(
		[]string{"-n", inet, "link", "add", "br0", "type", "bridge", "stp_state", "0", "forward_delay", "0"},
		[]string{"-n", inet, "addr", "add", netip.PrefixFrom(router, 24).String(), "dev", "br0"},
		[]string{"-n", inet, "link", "set", "br0", "up"},
		[]string{"netns", "exec", inet, "sysctl", "-qw", "net.ipv4.ip_forward=1"},
	); err != nil {
		return err
	}
	l.inet = &Host{lab: l, name: "inet", netns: inet, addr: router, dir: filepath.Join(l.dir, "inet")}
	return os.Mkdir(l.inet.dir, 0o755)
}

// ID is the run's short unique ID (also in every namespace name).
func (l *Lab) ID() string { return l.id }

// Dir is the per-run temp dir (CA, Headscale state, logs, tailscaled state).
func (l *Lab) Dir() string { return l.dir }

// CACertFile is the PEM file of the per-run CA that signs the control
// server's certificate; clients trust it through SSL_CERT_FILE.
func (l *Lab) CACertFile() string { return l.ca.certFile }

// Subnet is the run's "internet" subnet, e.g. 198.18.37.0/24.
func (l *Lab) Subnet() netip.Prefix { return l.prefix }

// Internet is the router namespace holding the bridge (address .1). Tests
// can use it to run tcpdump-like tools or to add routes and NAT later.
func (l *Lab) Internet() *Host { return l.inet }

// Close stops every process and removes everything the lab created. It is
// idempotent.
func (l *Lab) Close() error { return l.close(false) }

func (l *Lab) nsName(role string) string { return nsPrefix + l.id + "-" + role }

func (l *Lab) addrAt(last int) netip.Addr {
	a := l.prefix.Addr().As4()
	a[3] = byte(last)
	return netip.AddrFrom4(a)
}

// allocAddrLocked picks the next free public address (its last byte).
// Addresses are never reused within a run, so stale ARP entries and
// conntrack state cannot point at a new owner.
func (l *Lab) allocAddrLocked() (int, error) {
	for l.nextAddr <= 254 {
		last := l.nextAddr
		l.nextAddr++
		if !l.usedAddr[last] {
			l.usedAddr[last] = true
			return last, nil
		}
	}
	return 0, errors.New("subnet full")
}

func subnetPrefix(idx int) netip.Prefix {
	return netip.PrefixFrom(netip.AddrFrom4([4]byte{198, byte(18 + idx/256), byte(idx % 256), 0}), 24)
}

func runDir(id string) string { return filepath.Join(os.TempDir(), "skein-lab-"+id) }

// addNetns creates a namespace with lo up and its /etc/netns files, and
// records it for cleanup.
func (l *Lab) addNetns(ns string) error {
	l.mu.Lock()
	if l.closed {
		l.mu.Unlock()
		return errors.New("lab is closed")
	}
	l.nsList = append(l.nsList, ns)
	l.mu.Unlock()
	etc := filepath.Join("/etc/netns", ns)
	if err := os.MkdirAll(etc, 0o755); err != nil {
		return err
	}
	ctl := l.addrAt(2)
	files := map[string]string{
		"resolv.conf": "# skein lab " + l.id + ": nothing answers here\nnameserver " + l.addrAt(1).String() + "\n",
		"hosts":       "127.0.0.1 localhost\n::1 localhost\n" + ctl.String() + " " + controlName + "\n",
	}
	for name, content := range files {
		if err := os.WriteFile(filepath.Join(etc, name), []byte(content), 0o644); err != nil {
			return err
		}
	}
	return ipCmds(
		[]string{"netns", "add", ns},
		[]string{"-n", ns, "link", "set", "lo", "up"},
	)
}

// close tears the lab down. keep renames the run dir instead of removing it.
func (l *Lab) close(keep bool) error {
	l.closeOnce.Do(func() {
		l.mu.Lock()
		l.closed = true
		procs := append([]*Process(nil), l.procs...)
		nsList := append([]string(nil), l.nsList...)
		cleanups := l.cleanups
		l.mu.Unlock()
		for _, f := range cleanups {
			f()
		}

		var errs []error
		// Stop processes, politely and in parallel.
		var wg sync.WaitGroup
		for _, p := range procs {
			wg.Go(func() {
				if err := p.stop(5 * time.Second); err != nil {
					l.logf("%s: %v", p.name, err)
				}
			})
		}
		wg.Wait()
		// Hosts first, the internet last.
		for i := len(nsList) - 1; i >= 0; i-- {
			if err := removeNetns(nsList[i]); err != nil {
				errs = append(errs, err)
			}
		}
		if l.dir != "" {
			if keep {
				kept := filepath.Join(os.TempDir(), "skein-lab-kept-"+l.id)
				if err := os.Rename(l.dir, kept); err == nil {
					l.logf("kept lab dir %s", kept)
				} else {
					errs = append(errs, err)
				}
			} else if err := os.RemoveAll(l.dir); err != nil {
				errs = append(errs, err)
			}
		}
		if l.id != "" {
			if err := removeRecord(l.id); err != nil {
				errs = append(errs, err)
			}
		}
		l.closeErr = errors.Join(errs...)
	})
	return l.closeErr
}

// dumpLogs writes the tail of every process log.
func (l *Lab) dumpLogs(logf func(string, ...any)) {
	n := 60
	if v, err := strconv.Atoi(os.Getenv("SKEIN_LAB_LOG_LINES")); err == nil && v > 0 {
		n = v
	}
	l.mu.Lock()
	procs := append([]*Process(nil), l.procs...)
	l.mu.Unlock()
	seen := map[string]bool{} // restarted processes share their log
	for _, p := range procs {
		if seen[p.logPath] {
			continue
		}
		seen[p.logPath] = true
		logf("=== lab %s: last %d lines of %s (%s) ===\n%s", l.id, n, p.name, p.logPath, tailLines(p.Log(), n))
	}
}

func tailLines(s string, n int) string {
	s = strings.TrimRight(s, "\n")
	lines := strings.Split(s, "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// Namespaces lists the lab's namespaces, sorted.
func (l *Lab) Namespaces() []string {
	l.mu.Lock()
	defer l.mu.Unlock()
	out := append([]string(nil), l.nsList...)
	sort.Strings(out)
	return out
}

// Processes lists the processes the lab started (including exited ones).
func (l *Lab) Processes() []*Process {
	l.mu.Lock()
	defer l.mu.Unlock()
	return append([]*Process(nil), l.procs...)
}

func randomID() string {
	const alphabet = "abcdefghijklmnopqrstuvwxyz0123456789"
	b := make([]byte, idLen)
	if _, err := rand.Read(b); err != nil {
		panic(err)
	}
	for i := range b {
		b[i] = alphabet[int(b[i])%len(alphabet)]
	}
	return string(b)
}

func randomUint() uint64 {
	var b [8]byte
	if _, err := rand.Read(b[:]); err != nil {
		panic(err)
	}
	var v uint64
	for _, x := range b {
		v = v<<8 | uint64(x)
	}
	return v
}

// ipCmds runs `ip ARGS...` for each argument list, stopping at the first
// failure.
func ipCmds(cmds ...[]string) error {
	for _, args := range cmds {
		out, err := exec.Command("ip", args...).CombinedOutput()
		if err != nil {
			return fmt.Errorf("ip %s: %v: %s", strings.Join(args, " "), err, strings.TrimSpace(string(out)))
		}
	}
	return nil
}

// addCleanup registers f to run when the lab closes.
func (l *Lab) addCleanup(f func()) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.cleanups = append(l.cleanups, f)
}
