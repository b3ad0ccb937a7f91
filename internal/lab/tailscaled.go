package lab

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"
)

// TailscaledOptions configures StartTailscaledWith. The zero value is what
// StartTailscaled uses, apart from Hostname.
type TailscaledOptions struct {
	// Hostname is passed to `tailscale up --hostname`. Default: the host's
	// name. Headscale rejects one-letter hostnames.
	Hostname string
	// Version selects the binaries (tailscale-<Version> in CacheDir).
	// Default TailscaleVersion.
	Version string
	// Userspace runs --tun=userspace-networking instead of a kernel TUN.
	Userspace bool
	// TUN is the kernel TUN name (default tailscale0; names are per
	// namespace).
	TUN string
	// Env and Args are added to tailscaled's environment and flags.
	Env  []string
	Args []string
}

// Tailscaled is an official tailscaled running in a host namespace.
type Tailscaled struct {
	host     *Host
	opts     TailscaledOptions
	cli      string
	daemon   string
	stateDir string
	socket   string
	logPath  string

	mu   sync.Mutex
	proc *Process
}

// StartTailscaled starts the official tailscaled (TailscaleVersion) with a
// kernel TUN in the host's namespace and waits until its socket answers.
func (h *Host) StartTailscaled(hostname string) (*Tailscaled, error) {
	return h.StartTailscaledWith(TailscaledOptions{Hostname: hostname})
}

// StartTailscaledWith is StartTailscaled with options. A host runs at most
// one tailscaled.
func (h *Host) StartTailscaledWith(opts TailscaledOptions) (*Tailscaled, error) {
	if opts.Hostname == "" {
		opts.Hostname = h.name
	}
	if opts.Version == "" {
		opts.Version = TailscaleVersion
	}
	if opts.TUN == "" {
		opts.TUN = "tailscale0"
	}
	ts := &Tailscaled{
		host:     h,
		opts:     opts,
		stateDir: filepath.Join(h.dir, "tailscaled"),
		logPath:  filepath.Join(h.dir, "tailscaled.log"),
	}
	ts.socket = filepath.Join(ts.stateDir, "tailscaled.sock")
	ts.cli, ts.daemon = TailscaleBinaries(opts.Version)
	for _, b := range []string{ts.cli, ts.daemon} {
		if _, err := os.Stat(b); err != nil {
			return nil, fmt.Errorf("tailscale %s: missing %s (scripts/lab-peers.sh, LAB_EXTRA=1 for extra versions)", opts.Version, b)
		}
	}
	if err := os.Mkdir(ts.stateDir, 0o700); err != nil {
		return nil, fmt.Errorf("StartTailscaled on %s: %w", h.name, err)
	}
	if err := ts.Start(); err != nil {
		return nil, err
	}
	return ts, nil
}

// Start (re)starts the daemon with the same state dir and waits until it
// answers on its socket. StartTailscaled calls it.
func (ts *Tailscaled) Start() error {
	ts.mu.Lock()
	defer ts.mu.Unlock()
	if ts.proc != nil && !ts.proc.Exited() {
		return errors.New("tailscaled is running")
	}
	tun := ts.opts.TUN
	if ts.opts.Userspace {
		tun = "userspace-networking"
	}
	args := append([]string{
		"--statedir=" + ts.stateDir,
		"--socket=" + ts.socket,
		"--tun=" + tun,
		"--no-logs-no-support",
	}, ts.opts.Args...)
	label := ts.host.name + "/tailscaled"
	// TS_LOGS_DIR: otherwise tailscaled writes tailscaled.log.conf into
	// the machine's /var/lib/tailscale, shared by all peers.
	env := append([]string{"TS_LOGS_DIR=" + ts.stateDir}, ts.opts.Env...)
	p, err := ts.host.startProcess(label, ts.logPath, env, ts.daemon, args...)
	if err != nil {
		return err
	}
	ts.proc = p
	err = WaitFor(30*time.Second, func() error {
		if p.Exited() {
			return stopWaiting(fmt.Errorf("tailscaled exited: %v\n%s", p.Wait(), tailLines(p.Log(), 30)))
		}
		_, err := ts.Status()
		return err
	})
	if err != nil {
		return fmt.Errorf("starting tailscaled on %s: %w", ts.host.name, err)
	}
	return nil
}

// Stop stops the daemon (SIGTERM, then SIGKILL); Start restarts it.
func (ts *Tailscaled) Stop() error {
	ts.mu.Lock()
	defer ts.mu.Unlock()
	if ts.proc == nil {
		return nil
	}
	return ts.proc.Stop()
}

// Host is the host the daemon runs on.
func (ts *Tailscaled) Host() *Host { return ts.host }

// Hostname is the hostname Up announces.
func (ts *Tailscaled) Hostname() string { return ts.opts.Hostname }

// Version is the tailscale version, e.g. "v1.86.5".
func (ts *Tailscaled) Version() string { return ts.opts.Version }

// Socket is the daemon's LocalAPI socket (tailscale --socket=...).
func (ts *Tailscaled) Socket() string { return ts.socket }

// StateDir is the daemon's --statedir.
func (ts *Tailscaled) StateDir() string { return ts.stateDir }

// CLIPath is the path of the matching tailscale CLI binary.
func (ts *Tailscaled) CLIPath() string { return ts.cli }

// Process is the running daemon process.
func (ts *Tailscaled) Process() *Process {
	ts.mu.Lock()
	defer ts.mu.Unlock()
	return ts.proc
}

// CLI runs `tailscale --socket=... ARGS...` in the namespace (2-minute
// timeout) and returns stdout; errors include stderr.
func (ts *Tailscaled) CLI(args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	return ts.CLIContext(ctx, args...)
}

// CLIContext is CLI with a caller-provided context.
func (ts *Tailscaled) CLIContext(ctx context.Context, args ...string) (string, error) {
	return runCmd(ts.host.Command(ctx, ts.cli, append([]string{"--socket=" + ts.socket}, args...)...))
}

func (ts *Tailscaled) upArgs(loginServer string, extra []string) []string {
	// --accept-dns=false first so that extraArgs can override it; see the
	// package doc for why it is the default.
	return append([]string{"up",
		"--accept-dns=false",
		"--login-server=" + loginServer,
		"--hostname=" + ts.opts.Hostname,
	}, extra...)
}

// Up runs `tailscale up --login-server=... --authkey=... --hostname=...
// --accept-dns=false --timeout=60s EXTRA...` and returns once the node is
// Running.
func (ts *Tailscaled) Up(loginServer, authKey string, extraArgs ...string) error {
	args := ts.upArgs(loginServer, append([]string{"--authkey=" + authKey, "--timeout=60s"}, extraArgs...))
	_, err := ts.CLI(args...)
	return err
}

// StartLogin starts an interactive `tailscale up` (no auth key) in the
// background and returns the AuthURL once the daemon has one. Approve it
// with Control.RegisterNode, then wait for BackendState "Running".
func (ts *Tailscaled) StartLogin(loginServer string, extraArgs ...string) (authURL string, err error) {
	p, err := ts.host.StartProcess(ts.cli, nil, append([]string{"--socket=" + ts.socket}, ts.upArgs(loginServer, extraArgs)...)...)
	if err != nil {
		return "", err
	}
	err = WaitFor(30*time.Second, func() error {
		st, err := ts.Status()
		if err != nil {
			return err
		}
		if st.AuthURL == "" {
			if p.Exited() {
				return stopWaiting(fmt.Errorf("tailscale up exited: %v\n%s", p.Wait(), tailLines(p.Log(), 20)))
			}
			return fmt.Errorf("no AuthURL yet (state %s)", st.BackendState)
		}
		authURL = st.AuthURL
		return nil
	})
	return authURL, err
}

// Status parses `tailscale status --json`.
func (ts *Tailscaled) Status() (*TSStatus, error) {
	out, err := ts.CLI("status", "--json")
	if err != nil {
		return nil, err
	}
	var st TSStatus
	if err := json.Unmarshal([]byte(out), &st); err != nil {
		return nil, fmt.Errorf("tailscale status --json on %s: %w", ts.host.name, err)
	}
	return &st, nil
}

// TSStatus is the part of `tailscale status --json` (ipnstate.Status) the
// lab uses.
type TSStatus struct {
	Version        string
	BackendState   string // NoState, NeedsLogin, NeedsMachineAuth, Stopped, Starting, Running
	AuthURL        string
	TUN            bool
	TailscaleIPs   []netip.Addr
	Self           *TSPeer
	Peer           map[string]*TSPeer // by node public key
	MagicDNSSuffix string
	Health         []string
}

// TSPeer is ipnstate.PeerStatus, abridged.
type TSPeer struct {
	ID             string
	PublicKey      string
	HostName       string
	DNSName        string
	OS             string
	UserID         int64
	TailscaleIPs   []netip.Addr
	AllowedIPs     []netip.Prefix
	PrimaryRoutes  []netip.Prefix
	Tags           []string
	Addrs          []string
	CurAddr        string // direct ip:port in use, "" when relayed
	Relay          string // home DERP region code
	RxBytes        int64
	TxBytes        int64
	LastHandshake  time.Time
	Online         bool
	ExitNode       bool
	ExitNodeOption bool
	Active         bool
	InNetworkMap   bool
	InMagicSock    bool
	InEngine       bool
	PeerAPIURL     []string
}

// PeerByHostName returns the peer with the given HostName, or nil.
func (s *TSStatus) PeerByHostName(name string) *TSPeer {
	for _, p := range s.Peer {
		if p.HostName == name {
			return p
		}
	}
	return nil
}

// IPv4 returns the peer's Tailscale IPv4 address (invalid if none).
func (p *TSPeer) IPv4() netip.Addr {
	for _, a := range p.TailscaleIPs {
		if a.Is4() {
			return a
		}
	}
	return netip.Addr{}
}

// String is a one-line summary for logs.
func (p *TSPeer) String() string {
	if p == nil {
		return "not in netmap"
	}
	return fmt.Sprintf("%s %v online=%v cur=%q relay=%q", p.HostName, p.TailscaleIPs, p.Online, p.CurAddr, p.Relay)
}

// WaitRunning waits until BackendState is Running and the node has an IP.
func (ts *Tailscaled) WaitRunning(timeout time.Duration) error {
	return WaitFor(timeout, func() error {
		st, err := ts.Status()
		if err != nil {
			return err
		}
		if st.BackendState != "Running" || len(st.TailscaleIPs) == 0 {
			return fmt.Errorf("%s: state %s, IPs %v", ts.host.name, st.BackendState, st.TailscaleIPs)
		}
		return nil
	})
}

// WaitPeers waits until the daemon's status lists every given hostname as
// an online peer with a home DERP region or endpoints, i.e. reachable. (A
// peer listed without them is not: a `tailscale ping` to it right away
// times out.)
func (ts *Tailscaled) WaitPeers(timeout time.Duration, hostnames ...string) error {
	return WaitFor(timeout, func() error {
		st, err := ts.Status()
		if err != nil {
			return err
		}
		var missing []string
		for _, h := range hostnames {
			if p := st.PeerByHostName(h); p == nil || !p.Online || (p.Relay == "" && len(p.Addrs) == 0) {
				missing = append(missing, fmt.Sprintf("%s (%v)", h, p))
			}
		}
		if len(missing) > 0 {
			return fmt.Errorf("%s does not see %s", ts.opts.Hostname, strings.Join(missing, ", "))
		}
		return nil
	})
}
