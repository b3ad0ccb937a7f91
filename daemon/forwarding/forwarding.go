// Package forwarding makes the host able to act as an exit node or subnet
// router: it turns on kernel IP forwarding and installs an nftables table
// of its own ("inet skein") that limits what tailnet peers may reach
// through the host and masquerades what they send.
//
// Every change is recorded in a journal in the state directory before it
// is made, so that Cleanup, run at the next start, can undo what a crashed
// (kill -9) process left behind.
//
// /proc/sys/net and netlink sockets act on the network namespace of the
// calling OS thread. skeind lives in a single namespace; tests lock their
// goroutine to a thread in a namespace of their own.
package forwarding

import (
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"sync"
)

// SysctlDir is where Persist writes its sysctl.d drop-in.
var SysctlDir = "/etc/sysctl.d"

// PersistFileName is the drop-in written in SysctlDir when Persist is set.
const PersistFileName = "99-skein-forwarding.conf"

// Config is the forwarding state skeind wants. The zero Config means
// nothing installed.
type Config struct {
	// TunName is the tailnet interface, e.g. "skein0". Required when any
	// other field is set.
	TunName string
	// Forward turns on IPv4 forwarding (and IPv6 forwarding when IPv6 is
	// also set).
	Forward bool
	IPv6    bool
	// Masquerade rewrites the source of tailnet traffic forwarded out of
	// any interface other than TunName to that interface's address.
	Masquerade bool
	// Routes are the destinations tailnet traffic may be forwarded to: the
	// advertised subnet routes, plus 0.0.0.0/0 and ::/0 for an exit node.
	// Anything else arriving on TunName is not forwarded, and loopback,
	// link-local, multicast and "this host" addresses never are.
	Routes []netip.Prefix
	// Deny are destinations never forwarded although a route covers them: an
	// exit node's own LANs, so that exit-node users get the internet but not
	// the LAN behind it unless that LAN is advertised as a subnet route.
	Deny []netip.Prefix
	// Persist records the user's consent to keep forwarding on: the
	// sysctl.d drop-in is written, and the runtime values are left on when
	// the Manager is closed. Only meaningful with Forward.
	Persist bool
	// Stateful drops connections that other interfaces open towards the
	// tailnet through this host; replies to flows the tailnet started pass.
	Stateful bool
	// SpoofGuard drops packets that claim a tailnet source address
	// (100.64.0.0/10, fd7a:115c:a1e0::/48) but arrive on an interface other
	// than TunName or lo. ChromeOS container addresses (100.115.92.0/23)
	// are exempt. Leave it off on networks whose ISP uses the CGNAT range.
	SpoofGuard bool
}

// normalize validates c and returns it in canonical form: routes masked,
// sorted and de-duplicated.
func (c Config) normalize() (Config, error) {
	n := c
	n.Routes = nil
	for _, p := range c.Routes {
		if !p.IsValid() {
			return Config{}, fmt.Errorf("invalid route %v", p)
		}
		if p.Addr().Is4In6() || p.Addr().Zone() != "" {
			return Config{}, fmt.Errorf("route %v: use a plain IPv4 or IPv6 prefix", p)
		}
		n.Routes = append(n.Routes, p.Masked())
	}
	slices.SortFunc(n.Routes, func(a, b netip.Prefix) int {
		if c := a.Addr().Compare(b.Addr()); c != 0 {
			return c
		}
		return a.Bits() - b.Bits()
	})
	// Drop routes inside another one (everything is inside a /0): each
	// remaining prefix is one rule.
	var kept []netip.Prefix
	for _, p := range n.Routes {
		if !slices.ContainsFunc(kept, func(q netip.Prefix) bool { return q.Bits() <= p.Bits() && q.Contains(p.Addr()) }) {
			kept = append(kept, p)
		}
	}
	n.Routes = kept
	n.Deny = nil
	for _, p := range c.Deny {
		if !p.IsValid() || p.Addr().Is4In6() || p.Addr().Zone() != "" {
			return Config{}, fmt.Errorf("invalid deny prefix %v", p)
		}
		if p = p.Masked(); !slices.Contains(n.Deny, p) {
			n.Deny = append(n.Deny, p)
		}
	}
	slices.SortFunc(n.Deny, func(a, b netip.Prefix) int {
		if c := a.Addr().Compare(b.Addr()); c != 0 {
			return c
		}
		return a.Bits() - b.Bits()
	})
	if n.TunName == "" {
		if n.Forward || n.IPv6 || n.Masquerade || len(n.Routes) > 0 || n.Persist || n.Stateful || n.SpoofGuard {
			return Config{}, errors.New("TunName is required")
		}
		return Config{}, nil
	}
	if err := checkIfName(n.TunName); err != nil {
		return Config{}, err
	}
	if !n.Forward {
		n.IPv6, n.Persist = false, false
	}
	return n, nil
}

func checkIfName(s string) error {
	if len(s) >= 16 || s == "." || s == ".." || strings.ContainsAny(s, "/: \t\n\x00") {
		return fmt.Errorf("invalid interface name %q", s)
	}
	return nil
}

func (c Config) isZero() bool { return c.TunName == "" }

// wantTable: the forward chain is installed whenever the config is not
// zero, so a host whose forwarding is on for other reasons (Docker) still
// forwards nothing from the tailnet beyond Routes.
func (c Config) wantTable() bool { return !c.isZero() }

// Manager owns the host changes. Its methods are safe for concurrent use
// but must run in the network namespace it manages.
type Manager struct {
	stateDir string
	logf     func(string, ...any)

	mu      sync.Mutex
	j       journal
	cfg     Config // last Set, normalized
	tableOK bool   // our table was installed for cfg
}

// New returns a Manager that records its journal in stateDir. It changes
// nothing on the host. A journal left by a crashed process is adopted, so
// the values recorded then remain the ones restored.
func New(stateDir string, logf func(string, ...any)) *Manager {
	if logf == nil {
		logf = func(string, ...any) {}
	}
	m := &Manager{stateDir: stateDir, logf: logf}
	j, err := loadJournal(stateDir)
	if err != nil {
		logf("forwarding: ignoring unreadable journal: %v", err)
	}
	m.j = j
	return m
}

func (m *Manager) save() error {
	if err := saveJournal(m.stateDir, &m.j); err != nil {
		return fmt.Errorf("forwarding journal: %w", err)
	}
	return nil
}

// Set makes the host match cfg. It is idempotent and only changes what
// differs. Filtering rules go in before forwarding is turned on, and
// forwarding goes off before they are removed. If the rules cannot be
// installed, forwarding is not turned on.
func (m *Manager) Set(cfg Config) error {
	n, err := cfg.normalize()
	if err != nil {
		return err
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	m.cfg = n

	var errs []error
	rulesOK := true
	if n.wantTable() {
		if err := m.ensureTable(n); err != nil {
			errs = append(errs, err)
			rulesOK = false
		}
	}
	if err := m.setForwarding(famV4, n.Forward && rulesOK); err != nil {
		errs = append(errs, err)
	}
	if err := m.setForwarding(famV6, n.Forward && n.IPv6 && rulesOK); err != nil {
		errs = append(errs, err)
	}
	if rulesOK {
		// A failure to install the rules says nothing about the user's
		// consent: leave the drop-in alone then.
		if err := m.setPersist(n.Persist, n.IPv6); err != nil {
			errs = append(errs, err)
		}
	}
	if !n.wantTable() {
		if err := m.removeTable(); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

func (m *Manager) ensureTable(n Config) error {
	want := plan(n)
	if m.tableOK && len(verifyTable(want)) == 0 {
		return nil
	}
	if m.j.Table == "" {
		m.j.Table = "inet " + TableName
		if err := m.save(); err != nil {
			m.j.Table = ""
			return err
		}
	}
	m.tableOK = false
	if err := installTable(want); err != nil {
		return err
	}
	m.tableOK = true
	m.logf("forwarding: installed nftables table inet %s (%d routes, masquerade=%v)", TableName, len(n.Routes), n.Masquerade)
	return nil
}

// removeTable deletes our table, also one that a previous process left
// without a journal.
func (m *Manager) removeTable() error {
	m.tableOK = false
	removed, err := deleteTable()
	if err != nil {
		return err
	}
	if removed {
		m.logf("forwarding: removed nftables table inet %s", TableName)
	}
	if m.j.Table == "" {
		return nil
	}
	m.j.Table = ""
	return m.save()
}

// setForwarding turns fam's global forwarding on, recording the previous
// values first, or puts the recorded values back.
func (m *Manager) setForwarding(fam string, on bool) error {
	rec, recorded := m.j.Sysctls[fam]
	if !on {
		if !recorded {
			return nil
		}
		if err := restoreForwarding(rec); err != nil {
			return err
		}
		m.logf("forwarding: restored %s=%s", dotted(rec[0].Key), rec[0].Value)
		delete(m.j.Sysctls, fam)
		return m.save()
	}
	if !familyPresent(fam) {
		return nil // reported by Warnings
	}
	key := forwardKey(fam)
	cur, err := readSysctl(key)
	if err != nil {
		return err
	}
	if cur == "1" {
		return nil
	}
	if !recorded {
		vals, err := snapshotForwarding(fam)
		if err != nil {
			return err
		}
		if m.j.Sysctls == nil {
			m.j.Sysctls = map[string][]sysctlValue{}
		}
		m.j.Sysctls[fam] = vals
		if err := m.save(); err != nil {
			delete(m.j.Sysctls, fam)
			return err
		}
	}
	if err := writeSysctl(key, "1"); err != nil {
		return err
	}
	m.logf("forwarding: set %s=1 (was %s)", dotted(key), cur)
	return nil
}

// Close undoes everything: forwarding goes back to the recorded values
// (unless persisted), then the table is deleted and the journal removed.
func (m *Manager) Close() error {
	m.mu.Lock()
	defer m.mu.Unlock()
	err := undo(&m.j, m.stateDir, m.logf)
	m.cfg = Config{}
	m.tableOK = false
	return err
}

// undo reverts what j records (and our table, present or not) and
// rewrites or removes the journal accordingly.
func undo(j *journal, stateDir string, logf func(string, ...any)) error {
	var errs []error
	if j.Persisted {
		if len(j.Sysctls) > 0 {
			logf("forwarding: leaving forwarding on (persisted in %s)", persistPath())
		}
		j.Sysctls = nil
		j.Persisted = false
	}
	for _, fam := range []string{famV6, famV4} {
		rec, ok := j.Sysctls[fam]
		if !ok {
			continue
		}
		if err := restoreForwarding(rec); err != nil {
			errs = append(errs, err)
			continue
		}
		logf("forwarding: restored %s=%s", dotted(rec[0].Key), rec[0].Value)
		delete(j.Sysctls, fam)
	}
	removed, err := deleteTable()
	if err != nil {
		errs = append(errs, err)
	} else {
		if removed {
			logf("forwarding: removed nftables table inet %s", TableName)
		}
		j.Table = ""
	}
	if err := saveJournal(stateDir, j); err != nil {
		errs = append(errs, fmt.Errorf("forwarding journal: %w", err))
	}
	return errors.Join(errs...)
}

// Cleanup undoes what a previous process left behind according to its
// journal, and deletes our nftables table if present. skeind runs it at
// start, before creating a Manager.
func Cleanup(stateDir string, logf func(string, ...any)) error {
	if logf == nil {
		logf = func(string, ...any) {}
	}
	j, err := loadJournal(stateDir)
	if err != nil {
		// Unusable: still remove the table; the sysctls are unknown.
		logf("forwarding: cleanup: %v", err)
		j = journal{}
		if _, derr := deleteTable(); derr != nil {
			return errors.Join(err, derr)
		}
		return saveJournal(stateDir, &journal{})
	}
	return undo(&j, stateDir, logf)
}

// Check reports what is missing compared with the last Set: our table or
// rules deleted by someone else, forwarding switched off behind our back,
// the persisted drop-in gone. Calling Set again restores them.
func (m *Manager) Check() []string {
	m.mu.Lock()
	defer m.mu.Unlock()
	n := m.cfg
	if n.isZero() {
		return nil
	}
	var out []string
	if n.wantTable() {
		out = append(out, verifyTable(plan(n))...)
	}
	check := func(fam string) {
		if !familyPresent(fam) {
			return
		}
		if v, err := readSysctl(forwardKey(fam)); err != nil || v != "1" {
			out = append(out, fmt.Sprintf("%s is %s, want 1", dotted(forwardKey(fam)), v))
		}
	}
	if n.Forward {
		check(famV4)
		if n.IPv6 {
			check(famV6)
		}
	}
	if n.Persist && !persistCurrent(n.IPv6) {
		out = append(out, fmt.Sprintf("%s is missing or changed", persistPath()))
	}
	return out
}
