package osdns

import (
	"bytes"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"
)

// reapplyWindow is the period over which Options.MaxReapplies is counted.
const reapplyWindow = time.Minute

// debounce lets a writer that truncates and then writes finish before the file is judged.
const debounce = 100 * time.Millisecond

// maxSettle bounds how long a continuously changing file can postpone a check.
const maxSettle = time.Second

// rcManager implements resolv.conf mode.
type rcManager struct {
	opts   Options
	logf   func(string, ...any)
	path   string
	backup string
	w      *fileWriter

	mu         sync.Mutex
	closed     bool
	cfg        Config   // desired; zero when nothing should be applied
	want       []byte   // what we last wrote; nil when not applied
	jr         *journal // non-nil while the file is changed (or a crash left it changed)
	reapplies  []time.Time
	total      int
	backingOff bool
	warn       warnings
	lastErr    string

	stop chan struct{} // closes the watcher; nil when not running
	done chan struct{}
}

func newResolvConf(opts Options) (*rcManager, error) {
	if opts.StateDir == "" {
		return nil, errors.New("osdns: StateDir is required in resolv.conf mode")
	}
	if err := os.MkdirAll(opts.StateDir, 0o700); err != nil {
		return nil, fmt.Errorf("osdns: %w", err)
	}
	m := &rcManager{
		opts:   opts,
		logf:   opts.Logf,
		path:   opts.ResolvConf,
		backup: filepath.Join(opts.StateDir, backupName),
	}
	m.w = &fileWriter{path: m.path, rename: opts.rename, logf: opts.Logf}
	return m, nil
}

func (m *rcManager) set(in Config) error {
	cfg, problems := in.normalize()
	m.mu.Lock()
	defer m.mu.Unlock()
	for _, p := range problems {
		m.warn.add(p)
	}
	if cfg.IsZero() {
		err := m.restoreLocked()
		if err == nil {
			m.cfg = Config{}
		}
		return m.note(err)
	}
	changed := !cfg.equal(m.cfg)
	m.cfg = cfg
	// resolv.conf cannot route by domain: every query comes to us and MagicDNS forwards what
	// is not the tailnet's. That is how this mode works, not a problem to report.
	if err := m.ensureJournalLocked(); err != nil {
		return m.note(err)
	}
	cur, err := takeSnapshot(m.path)
	if err != nil {
		return m.note(err)
	}
	if m.want != nil && cur.Kind == kindFile && bytes.Equal(cur.Data, m.want) && !changed {
		return nil // already in place
	}
	if !changed && m.backingOff {
		// The watcher decides when the re-apply budget allows another write.
		return nil
	}
	m.adoptLocked(cur)
	if err := m.writeOursLocked(); err != nil {
		return m.note(err)
	}
	m.lastErr = ""
	m.startWatchLocked()
	return nil
}

// note records err for Status and returns it.
func (m *rcManager) note(err error) error {
	if err != nil {
		m.lastErr = err.Error()
		m.logf("dns: %v", err)
	} else {
		m.lastErr = ""
	}
	return err
}

// ensureJournalLocked makes sure the original is saved before anything is written.
func (m *rcManager) ensureJournalLocked() error {
	if m.jr != nil {
		return nil
	}
	cur, err := takeSnapshot(m.path)
	if err != nil {
		return fmt.Errorf("reading %s: %w", m.path, err)
	}
	old, err := loadJournal(m.opts.StateDir)
	if err != nil {
		m.logf("dns: ignoring unreadable journal: %v", err)
		old = nil
	}
	if old != nil && old.Path == m.path {
		if orig, err := old.original(); err == nil && needsRestore(cur, orig, m.cfg) {
			// A previous run changed the file and did not get to put it back: its saved
			// original is still the original.
			m.logf("dns: resuming with the original of %s saved at %v", m.path, old.Since.Format(time.RFC3339))
			m.jr = old
			m.w.inPlace = old.InPlace
			return nil
		}
	}
	orig := cur
	if hasMarker(cur.Data) {
		// Our own file with no usable journal: the real original is gone. Never save our
		// own file as the original; rebuild one from what our file recorded.
		b, ok := rebuildFromMarker(cur.Data)
		if !ok {
			return fmt.Errorf("%s was written by skeind but its original is lost and no nameservers were recorded; run skeind --cleanup after fixing it by hand", m.path)
		}
		m.warn.add(fmt.Sprintf("the saved original of %s was lost; it will be rebuilt from the recorded nameservers", m.path))
		orig = snapshot{Kind: kindFile, Mode: cur.Mode, UID: cur.UID, GID: cur.GID, Data: b, SHA256: sum(b)}
	}
	j := &journal{Version: 1, Path: m.path, Backup: m.backup, Since: m.opts.now().UTC(), Original: orig}
	if err := saveJournal(m.opts.StateDir, j); err != nil {
		return err
	}
	m.jr = j
	return nil
}

// adoptLocked makes cur the new original if another program wrote a working configuration
// over ours (typically a DHCP client after a network change). Close then restores that, the
// host's latest configuration, rather than a stale one.
func (m *rcManager) adoptLocked(cur snapshot) {
	if m.jr == nil || cur.same(m.jr.Original) || !foreignWorking(cur, m.cfg) {
		return
	}
	j := *m.jr
	j.Original = cur
	j.Since = m.opts.now().UTC()
	if err := saveJournal(m.opts.StateDir, &j); err != nil {
		m.logf("dns: could not save the new original of %s: %v", m.path, err)
		return
	}
	m.jr = &j
	m.logf("dns: %s was rewritten by another program; its new content is now the original", m.path)
}

func (m *rcManager) writeOursLocked() error {
	data := renderOurs(m.cfg, parseResolvConf(m.jr.Original.Data), m.backup)
	mode, uid, gid := os.FileMode(0o644), -1, -1
	if o := m.jr.Original; o.Kind == kindFile {
		mode, uid, gid = o.Mode|0o444, o.UID, o.GID
	}
	if err := m.w.writeFile(data, mode, uid, gid); err != nil {
		return fmt.Errorf("writing %s: %w", m.path, err)
	}
	if m.w.inPlace != m.jr.InPlace {
		m.jr.InPlace = m.w.inPlace
		saveJournal(m.opts.StateDir, m.jr)
	}
	m.want = data
	return nil
}

// restoreLocked puts the original back if we changed the file, and forgets the journal.
func (m *rcManager) restoreLocked() error {
	if m.jr == nil {
		return nil
	}
	if err := restoreJournal(m.w, m.jr, m.cfg, m.logf); err != nil {
		return err
	}
	m.jr = nil
	m.want = nil
	return removeJournal(m.opts.StateDir)
}

// restoreJournal restores j's original at w.path unless someone else has since put a working
// configuration there.
func restoreJournal(w *fileWriter, j *journal, cfg Config, logf func(string, ...any)) error {
	cur, err := takeSnapshot(j.Path)
	if err != nil {
		return fmt.Errorf("reading %s: %w", j.Path, err)
	}
	orig, err := j.original()
	if err != nil {
		return err
	}
	if !needsRestore(cur, orig, cfg) {
		if !cur.same(orig) {
			logf("dns: leaving %s alone: another program has written a working configuration since", j.Path)
		}
		return nil
	}
	w.inPlace = w.inPlace || j.InPlace
	if err := w.restoreSnapshot(orig); err != nil {
		return err
	}
	logf("dns: restored the original %s", j.Path)
	return nil
}

func (m *rcManager) close() error {
	m.mu.Lock()
	m.closed = true
	stop, done := m.stop, m.done
	m.stop = nil
	m.mu.Unlock()
	if stop != nil {
		close(stop)
		<-done
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.note(m.restoreLocked())
}

// abandon stops watching without restoring anything, as a crash would (tests only).
func (m *rcManager) abandon() {
	m.mu.Lock()
	m.closed = true
	stop, done := m.stop, m.done
	m.stop = nil
	m.mu.Unlock()
	if stop != nil {
		close(stop)
		<-done
	}
}

func (m *rcManager) upstreams() []netip.AddrPort {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.upstreamsLocked()
}

func (m *rcManager) upstreamsLocked() []netip.AddrPort {
	var data []byte
	cur, err := takeSnapshot(m.path)
	switch {
	case err == nil && (m.jr == nil || foreignWorking(cur, m.cfg)):
		// Unchanged by us, or another program's working config that the watcher has not
		// adopted yet: the file itself is the freshest truth.
		data = cur.Data
	case m.jr != nil:
		data = m.jr.Original.Data
	default:
		return nil
	}
	var ns []netip.Addr
	if hasMarker(data) {
		ns = recordedNameservers(data)
	} else {
		ns = parseResolvConf(data).Nameservers
	}
	return upstreamsFrom(ns, m.cfg)
}

func (m *rcManager) status(st *Status) bool {
	if !m.mu.TryLock() {
		return false // a reconfiguration is in progress
	}
	defer m.mu.Unlock()
	st.Path = m.path
	st.Applied = m.want != nil && !m.backingOff
	st.Config = m.cfg.clone()
	st.InPlace = m.w.inPlace
	st.Reapplies = m.total
	st.BackingOff = m.backingOff
	st.LastError = m.lastErr
	if m.jr != nil {
		st.BackupPath = m.backup
	}
	w := m.warn.snapshot()
	if m.want != nil {
		ups := m.upstreamsLocked()
		if len(ups) == 0 {
			w = append(w, "the original resolv.conf has no usable nameserver; names outside the tailnet will not resolve")
		}
		for _, u := range ups {
			if u.Addr().IsLoopback() {
				w = append(w, fmt.Sprintf("upstream %s is a local resolver; if it reads %s it would forward back to skeind (loop)", u.Addr(), m.path))
			}
		}
	}
	st.Warnings = w
	return true
}

// startWatchLocked starts the goroutine that notices other programs rewriting the file. The
// inotify watch exists before it returns, so no change after Set can go unnoticed.
func (m *rcManager) startWatchLocked() {
	if m.stop != nil || m.closed {
		return
	}
	m.stop = make(chan struct{})
	m.done = make(chan struct{})
	events := make(chan struct{}, 1)
	iw, err := newInotify(m.path, events)
	if err != nil {
		m.logf("dns: inotify unavailable (%v); polling %s every %v", err, m.path, m.opts.PollInterval)
		iw = nil
	}
	go m.watch(iw, events, m.stop, m.done)
}

func (m *rcManager) watch(iw *inotifyWatch, events <-chan struct{}, stop <-chan struct{}, done chan<- struct{}) {
	defer close(done)
	if iw != nil {
		defer iw.close()
	}
	tick := time.NewTicker(m.opts.PollInterval)
	defer tick.Stop()
	var (
		settle      <-chan time.Time
		settleSince time.Time
	)
	for {
		select {
		case <-stop:
			return
		case <-events:
			if settle == nil {
				settleSince = time.Now()
			}
			settle = time.After(debounce)
		case <-settle:
			settle = nil
			m.check()
		case <-tick.C:
			// While a writer is busy, wait for it; but a file that never stops changing
			// is still looked at, at the poll rate.
			if settle == nil || time.Since(settleSince) > maxSettle {
				settle = nil
				m.check()
			}
		}
	}
}

// check compares the file with what we wrote and reacts when someone else changed it.
func (m *rcManager) check() {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.closed || m.want == nil || m.jr == nil {
		return
	}
	cur, err := takeSnapshot(m.path)
	if err != nil {
		m.logf("dns: reading %s: %v", m.path, err)
		return
	}
	if cur.Kind == kindFile && bytes.Equal(cur.Data, m.want) {
		return
	}
	now := m.opts.now()
	who := m.writerName(cur)
	if !m.backingOff {
		m.logf("dns: %s rewrote %s", who, m.path)
	}
	m.adoptLocked(cur)

	kept := m.reapplies[:0]
	for _, t := range m.reapplies {
		if now.Sub(t) < reapplyWindow {
			kept = append(kept, t)
		}
	}
	m.reapplies = kept
	if len(m.reapplies) >= m.opts.MaxReapplies {
		if !m.backingOff {
			m.backingOff = true
			msg := fmt.Sprintf("%s keeps rewriting %s (%d times within a minute, last at %s); not re-applying for now to avoid a fight, so tailnet names may not resolve",
				who, m.path, len(m.reapplies)+1, now.Format("15:04:05"))
			m.warn.add(msg + m.fixHint(who))
			m.logf("dns: %s", msg)
		}
		return
	}
	if err := m.writeOursLocked(); err != nil {
		m.note(err)
		return
	}
	m.reapplies = append(m.reapplies, now)
	m.total++
	m.backingOff = false
	m.lastErr = ""
	m.warn.add(fmt.Sprintf("%s rewrote %s at %s; re-applied", who, m.path, now.Format("15:04:05")) + m.fixHint(who))
}

// writerName guesses who wrote cur, from its header and from what is running.
func (m *rcManager) writerName(cur snapshot) string {
	switch {
	case cur.Kind == kindMissing:
		return "another program (file deleted)"
	case hasMarker(cur.Data):
		return "another program (edited skeind's file)"
	}
	header := strings.ToLower(string(cur.Data[:min(len(cur.Data), 512)]))
	switch {
	case strings.Contains(header, "networkmanager"):
		return "NetworkManager"
	case m.opts.nmRunning():
		return "NetworkManager"
	case strings.Contains(header, "resolvconf"):
		return "resolvconf"
	case strings.Contains(header, "dhcpcd"):
		return "dhcpcd"
	case strings.Contains(header, "dhclient"):
		return "dhclient"
	case strings.Contains(header, "netconfig"):
		return "netconfig"
	case strings.Contains(header, "systemd-resolved"):
		return "systemd-resolved"
	}
	return "another program"
}

func (m *rcManager) fixHint(who string) string {
	switch who {
	case "NetworkManager":
		return ". To stop NetworkManager from rewriting it, set dns=none in the [main] section of a file in /etc/NetworkManager/conf.d/ and run `nmcli general reload` (or `systemctl reload NetworkManager`), or let NetworkManager use systemd-resolved (dns=systemd-resolved) so skeind configures the tunnel link over D-Bus instead"
	case "resolvconf":
		return ". resolvconf manages this file; prefer systemd-resolved, or stop resolvconf from updating it"
	}
	return ""
}

// cleanupResolvConf is the resolv.conf half of Cleanup.
func cleanupResolvConf(opts Options) error {
	if opts.StateDir == "" {
		return nil
	}
	removeStrays(opts.ResolvConf, opts.StateDir)
	j, err := loadJournal(opts.StateDir)
	if err != nil {
		return fmt.Errorf("osdns cleanup: %w", err)
	}
	if j == nil {
		// No journal. If the file is still ours the state was lost; rebuild a working file.
		cur, err := takeSnapshot(opts.ResolvConf)
		if err != nil || !hasMarker(cur.Data) {
			return nil
		}
		b, ok := rebuildFromMarker(cur.Data)
		if !ok {
			return fmt.Errorf("osdns cleanup: %s was written by skeind, its original is lost and no nameservers were recorded", opts.ResolvConf)
		}
		w := &fileWriter{path: opts.ResolvConf, rename: opts.rename, logf: opts.Logf}
		if err := w.writeFile(b, cur.Mode|0o444, cur.UID, cur.GID); err != nil {
			return fmt.Errorf("osdns cleanup: %w", err)
		}
		opts.Logf("dns: cleanup: rebuilt %s from the nameservers skeind had recorded", opts.ResolvConf)
		return nil
	}
	w := &fileWriter{path: j.Path, rename: opts.rename, logf: opts.Logf, inPlace: j.InPlace}
	if err := restoreJournal(w, j, Config{}, opts.Logf); err != nil {
		return fmt.Errorf("osdns cleanup: %w", err)
	}
	return removeJournal(opts.StateDir)
}

// removeStrays deletes temporary files a crash may have left next to resolv.conf or in the
// state directory.
func removeStrays(path, stateDir string) {
	pats := []string{
		filepath.Join(filepath.Dir(path), "."+filepath.Base(path)+".skeind-*"),
		filepath.Join(stateDir, ".*.tmp-*"),
	}
	for _, pat := range pats {
		names, _ := filepath.Glob(pat)
		for _, n := range names {
			os.Remove(n)
		}
	}
}
