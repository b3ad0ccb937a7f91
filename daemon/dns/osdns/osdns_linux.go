package osdns

import (
	"errors"
	"fmt"
	"net/netip"
	"os"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/godbus/dbus/v5"

	"github.com/skeinvpn/skein/internal/tsaddr"
)

// Mode names, as returned by Manager.Mode.
const (
	ModeResolved   = "systemd-resolved"
	ModeResolvConf = "resolv.conf"
)

// DefaultResolvConf is the file managed in resolv.conf mode unless Options says otherwise.
const DefaultResolvConf = "/etc/resolv.conf"

// The MagicDNS service addresses. They are never reported as upstreams, whatever the system's
// files say, because forwarding to them would be forwarding to ourselves.
var (
	MagicDNSv4 = tsaddr.MagicDNSv4
	MagicDNSv6 = tsaddr.MagicDNSv6
)

// resolvedStubs are the addresses systemd-resolved listens on. See Manager.Upstreams for why they
// are never upstreams.
var resolvedStubs = []netip.Addr{
	netip.MustParseAddr("127.0.0.53"),
	netip.MustParseAddr("127.0.0.54"),
}

// Config is what the host resolver should use while connected.
type Config struct {
	// Nameservers are the tunnel resolvers, normally MagicDNSv4 (and MagicDNSv6).
	Nameservers []netip.Addr
	// SearchDomains are appended to single-label names, e.g. the tailnet suffix. No trailing dot.
	SearchDomains []string
	// MatchDomains are routing-only domains for split DNS. A leading "~" is accepted and ignored.
	// resolv.conf cannot route by domain, so that mode sends everything to Nameservers.
	MatchDomains []string
	// DefaultRoute makes the tunnel resolver take all queries. In resolv.conf mode it is
	// always in effect.
	DefaultRoute bool
}

// IsZero reports whether c asks for no DNS change at all (no nameservers).
func (c Config) IsZero() bool { return len(c.Nameservers) == 0 }

func (c Config) equal(o Config) bool {
	return slices.Equal(c.Nameservers, o.Nameservers) &&
		slices.Equal(c.SearchDomains, o.SearchDomains) &&
		slices.Equal(c.MatchDomains, o.MatchDomains) &&
		c.DefaultRoute == o.DefaultRoute
}

func (c Config) clone() Config {
	return Config{
		Nameservers:   slices.Clone(c.Nameservers),
		SearchDomains: slices.Clone(c.SearchDomains),
		MatchDomains:  slices.Clone(c.MatchDomains),
		DefaultRoute:  c.DefaultRoute,
	}
}

// normalize returns c with invalid entries dropped (reported in problems), IPv4-mapped
// addresses unmapped, domains lower-cased without a trailing dot, and duplicates removed.
// Domains are checked strictly because they end up in a file that other programs parse: a
// newline in a name pushed by the control server must never become a "nameserver" line.
func (c Config) normalize() (out Config, problems []string) {
	out.DefaultRoute = c.DefaultRoute
	for _, a := range c.Nameservers {
		if !a.IsValid() || a.IsUnspecified() {
			problems = append(problems, fmt.Sprintf("ignored invalid nameserver %q", a))
			continue
		}
		a = a.Unmap()
		if !slices.Contains(out.Nameservers, a) {
			out.Nameservers = append(out.Nameservers, a)
		}
	}
	for _, d := range c.SearchDomains {
		n, ok := cleanDomain(d)
		if !ok || n == "" {
			problems = append(problems, fmt.Sprintf("ignored invalid search domain %q", d))
			continue
		}
		if !slices.Contains(out.SearchDomains, n) {
			out.SearchDomains = append(out.SearchDomains, n)
		}
	}
	for _, d := range c.MatchDomains {
		n, ok := cleanDomain(strings.TrimPrefix(d, "~"))
		if !ok {
			problems = append(problems, fmt.Sprintf("ignored invalid match domain %q", d))
			continue
		}
		if n == "" {
			// "~." is resolved's spelling of "everything".
			out.DefaultRoute = true
			continue
		}
		if !slices.Contains(out.MatchDomains, n) {
			out.MatchDomains = append(out.MatchDomains, n)
		}
	}
	return out, problems
}

// cleanDomain lower-cases d and strips one trailing dot. The root ("." or "") yields "". It
// accepts letters, digits, '-' and '_' in labels of at most 63 bytes, 253 bytes in all.
func cleanDomain(d string) (string, bool) {
	d = strings.ToLower(strings.TrimSuffix(strings.TrimSpace(d), "."))
	if d == "" {
		return "", true
	}
	if len(d) > 253 {
		return "", false
	}
	for _, label := range strings.Split(d, ".") {
		if label == "" || len(label) > 63 {
			return "", false
		}
		for i := 0; i < len(label); i++ {
			ch := label[i]
			switch {
			case ch >= 'a' && ch <= 'z', ch >= '0' && ch <= '9', ch == '-', ch == '_':
			default:
				return "", false
			}
		}
	}
	return d, true
}

// Options configures New and Cleanup.
type Options struct {
	// TunName is the tunnel interface; resolved settings are made on this link.
	TunName string
	// StateDir holds the resolv.conf backup and journal. Required in resolv.conf mode.
	StateDir string
	// Logf logs; nil discards.
	Logf func(format string, args ...any)
	// ResolvConf is the file to manage; default DefaultResolvConf.
	ResolvConf string
	// Bus opens a private connection to the system bus; default dbus.ConnectSystemBus. The
	// Manager closes the connections it opens.
	Bus func() (*dbus.Conn, error)
	// Mode forces ModeResolved or ModeResolvConf instead of detecting.
	Mode string
	// PollInterval is how often resolv.conf is compared with what was written, in addition to
	// inotify; default 2 s.
	PollInterval time.Duration
	// MaxReapplies caps how often, per minute, resolv.conf is re-written after someone else
	// changed it; default 3. Beyond that skeind backs off instead of fighting.
	MaxReapplies int

	// Test hooks.
	rename    func(oldpath, newpath string) error
	nmRunning func() bool
	now       func() time.Time
}

func (o *Options) setDefaults() {
	if o.Logf == nil {
		o.Logf = func(string, ...any) {}
	}
	if o.ResolvConf == "" {
		o.ResolvConf = DefaultResolvConf
	}
	if o.Bus == nil {
		o.Bus = func() (*dbus.Conn, error) { return dbus.ConnectSystemBus() }
	}
	if o.PollInterval <= 0 {
		o.PollInterval = 2 * time.Second
	}
	if o.MaxReapplies <= 0 {
		o.MaxReapplies = 3
	}
	if o.rename == nil {
		o.rename = os.Rename
	}
	if o.now == nil {
		o.now = time.Now
	}
	if o.nmRunning == nil {
		bus := o.Bus
		o.nmRunning = func() bool { return networkManagerRunning(bus) }
	}
}

// Status describes what the Manager has done and why.
type Status struct {
	Mode   string
	Reason string // why this mode was chosen
	// Applied reports whether Config is currently in effect on the host.
	Applied bool
	Config  Config
	// Interface and IfIndex are the link configured in resolved mode.
	Interface string
	IfIndex   int
	// Path is the managed resolv.conf; BackupPath holds its original while Applied.
	Path       string
	BackupPath string
	// InPlace reports that Path is a mount point (e.g. under `ip netns exec`) and is therefore
	// rewritten in place instead of being replaced by rename.
	InPlace bool
	// Reapplies counts re-applications after someone else changed the settings.
	Reapplies int
	// BackingOff reports that the re-apply limit was hit and skeind is not fighting back.
	BackingOff bool
	Warnings   []string
	LastError  string
}

// backend is one of the two ways of configuring the host.
type backend interface {
	set(Config) error
	close() error
	upstreams() []netip.AddrPort
	// status fills st; false when a reconfiguration holds the lock right now.
	status(*Status) bool
}

// Manager configures the host resolver. Its methods are safe for concurrent use.
type Manager struct {
	opts   Options
	mode   string
	reason string
	be     backend

	mu     sync.Mutex
	closed bool
	// last is the newest status, served while a reconfiguration holds the backend's lock.
	last atomic.Pointer[Status]
}

// New picks a mode and returns a Manager that has not changed anything yet.
func New(opts Options) (*Manager, error) {
	opts.setDefaults()
	m := &Manager{opts: opts}

	var conn *dbus.Conn
	switch opts.Mode {
	case ModeResolved:
		c, err := opts.Bus()
		if err != nil {
			return nil, fmt.Errorf("osdns: system bus: %w", err)
		}
		conn, m.mode, m.reason = c, ModeResolved, "forced by configuration"
	case ModeResolvConf:
		m.mode, m.reason = ModeResolvConf, "forced by configuration"
	case "":
		conn, m.mode, m.reason = detect(opts)
	default:
		return nil, fmt.Errorf("osdns: unknown mode %q", opts.Mode)
	}
	opts.Logf("dns: using %s mode: %s", m.mode, m.reason)

	switch m.mode {
	case ModeResolved:
		if opts.TunName == "" {
			conn.Close()
			return nil, errors.New("osdns: TunName is required in systemd-resolved mode")
		}
		be, err := newResolved(opts, conn)
		if err != nil {
			conn.Close()
			return nil, err
		}
		m.be = be
	default:
		be, err := newResolvConf(opts)
		if err != nil {
			return nil, err
		}
		m.be = be
	}
	return m, nil
}

// detect decides the mode. It returns an open bus connection only for resolved mode.
func detect(opts Options) (*dbus.Conn, string, string) {
	ok, why := pointsAtResolved(opts.ResolvConf)
	conn, err := opts.Bus()
	if err != nil {
		return nil, ModeResolvConf, fmt.Sprintf("no system bus (%v); %s", err, why)
	}
	owned, err := nameHasOwner(conn, resolvedName)
	switch {
	case err != nil:
		conn.Close()
		return nil, ModeResolvConf, fmt.Sprintf("cannot ask the bus about %s (%v); %s", resolvedName, err, why)
	case !owned:
		conn.Close()
		return nil, ModeResolvConf, fmt.Sprintf("systemd-resolved is not on the system bus; %s", why)
	case !ok:
		conn.Close()
		return nil, ModeResolvConf, fmt.Sprintf("systemd-resolved is running but %s, so programs would not see its settings", why)
	}
	return conn, ModeResolved, fmt.Sprintf("systemd-resolved is on the system bus and %s", why)
}

// Mode returns ModeResolved or ModeResolvConf.
func (m *Manager) Mode() string { return m.mode }

// Set makes cfg the host's DNS configuration. Calling it again with the same cfg changes
// nothing. A cfg without nameservers reverts to the original configuration, like Close, but
// leaves the Manager usable.
func (m *Manager) Set(cfg Config) error {
	m.mu.Lock()
	closed := m.closed
	m.mu.Unlock()
	if closed {
		return errors.New("osdns: manager closed")
	}
	return m.be.set(cfg)
}

// Close reverts everything Set did. In resolv.conf mode the original file comes back byte for
// byte even if the file skeind wrote was edited meanwhile; only a file that another program has
// since written, and that has working nameservers of its own, is left alone.
func (m *Manager) Close() error {
	m.mu.Lock()
	if m.closed {
		m.mu.Unlock()
		return nil
	}
	m.closed = true
	m.mu.Unlock()
	return m.be.close()
}

// Upstreams returns the resolvers the system used before skeind changed it, for the MagicDNS
// server to forward non-tailnet names to. Our own service addresses are never included.
//
// In resolv.conf mode they come from the saved original (or the current file while nothing has
// been changed).
//
// In resolved mode they are the global and per-link servers resolved currently knows, minus our
// link's. resolved's stub (127.0.0.53/54) is never returned: our link is configured as a DNS
// route in resolved, with "~." when DefaultRoute is set, so resolved would hand the forwarded
// query straight back to 100.100.100.100 and the query would loop until it timed out, burning
// CPU on both sides (a known failure of the official client). The same holds in resolv.conf
// mode: a running resolved reads a foreign /etc/resolv.conf as its own upstream list and would
// forward to us. Other loopback resolvers (dnsmasq on 127.0.0.1) are returned, with a warning
// in Status, since they are commonly genuine.
func (m *Manager) Upstreams() []netip.AddrPort { return m.be.upstreams() }

// Status reports the mode, the configuration in effect, and warnings.
//
// It never waits for a reconfiguration in progress (a D-Bus call or a file write): it then
// returns the status as of the last one.
func (m *Manager) Status() Status {
	st := Status{Mode: m.mode, Reason: m.reason}
	if !m.be.status(&st) {
		if last := m.last.Load(); last != nil {
			return *last
		}
		return st
	}
	m.last.Store(&st)
	return st
}

// Cleanup undoes what a previous skeind left behind, e.g. after a crash or power loss. It is
// meant to run at start, before New, and from `skeind --cleanup`.
//
// resolv.conf: when the journal in StateDir says the file was changed and the current file is
// still ours (it carries our marker, points at our nameservers, or has none), the saved original
// is restored byte for byte; a file another program has written since is left alone. If the
// journal was lost but the file still carries our marker, a working file is rebuilt from the
// original nameservers recorded in it.
//
// resolved: settings die with the link, but if the tunnel link still exists it is reverted.
func Cleanup(opts Options) error {
	opts.setDefaults()
	var errs []error
	if err := cleanupResolvConf(opts); err != nil {
		errs = append(errs, err)
	}
	if err := cleanupResolved(opts); err != nil {
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}

// networkManagerRunning reports whether NetworkManager appears to be running.
func networkManagerRunning(bus func() (*dbus.Conn, error)) bool {
	if conn, err := bus(); err == nil {
		owned, err := nameHasOwner(conn, "org.freedesktop.NetworkManager")
		conn.Close()
		if err == nil && owned {
			return true
		}
	}
	_, err := os.Stat("/run/NetworkManager")
	return err == nil
}

// warnings is a short list of recent messages, newest last, without repeats.
type warnings struct {
	list []string
}

const maxWarnings = 8

func (w *warnings) add(s string) {
	w.list = slices.DeleteFunc(w.list, func(x string) bool { return x == s })
	w.list = append(w.list, s)
	if len(w.list) > maxWarnings {
		w.list = slices.Delete(w.list, 0, len(w.list)-maxWarnings)
	}
}

func (w *warnings) snapshot() []string { return slices.Clone(w.list) }

// isOurs reports whether a is one of the addresses that reach skeind itself.
func isOurs(a netip.Addr, cfg Config) bool {
	a = a.Unmap().WithZone("")
	return a == MagicDNSv4 || a == MagicDNSv6 || slices.Contains(cfg.Nameservers, a)
}

func isStub(a netip.Addr) bool { return slices.Contains(resolvedStubs, a.Unmap()) }
