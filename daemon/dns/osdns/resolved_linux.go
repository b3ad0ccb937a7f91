package osdns

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/godbus/dbus/v5"
	"golang.org/x/sys/unix"
)

// systemd-resolved's D-Bus API (org.freedesktop.resolve1(5)).
const (
	resolvedName  = "org.freedesktop.resolve1"
	resolvedPath  = dbus.ObjectPath("/org/freedesktop/resolve1")
	resolvedIface = "org.freedesktop.resolve1.Manager"
	resolvedLink  = "org.freedesktop.resolve1.Link"

	busName  = "org.freedesktop.DBus"
	busPath  = dbus.ObjectPath("/org/freedesktop/DBus")
	busOwner = "NameOwnerChanged"
)

// callTimeout bounds each group of D-Bus calls, so a wedged bus cannot wedge skeind.
const callTimeout = 5 * time.Second

// linkDNS is one element of SetLinkDNS's a(iay).
type linkDNS struct {
	Family  int32
	Address []byte
}

// linkDomain is one element of SetLinkDomains's a(sb).
type linkDomain struct {
	Domain      string
	RoutingOnly bool
}

// resolvedManager implements systemd-resolved mode.
type resolvedManager struct {
	opts Options
	logf func(string, ...any)

	ctx    context.Context
	cancel context.CancelFunc
	done   chan struct{}

	mu      sync.Mutex
	conn    *dbus.Conn // nil while reconnecting
	cfg     Config     // desired
	applied bool       // cfg is fully configured on ifindex
	touched bool       // some setting of ours is on ifindex: RevertLink on close
	ifindex int32
	resyncs int
	warn    warnings
	lastErr string
}

func newResolved(opts Options, conn *dbus.Conn) (*resolvedManager, error) {
	ctx, cancel := context.WithCancel(context.Background())
	m := &resolvedManager{opts: opts, logf: opts.Logf, ctx: ctx, cancel: cancel, done: make(chan struct{})}
	sig, err := subscribe(conn)
	if err != nil {
		cancel()
		return nil, fmt.Errorf("osdns: watching %s: %w", resolvedName, err)
	}
	m.conn = conn
	go m.run(sig)
	return m, nil
}

// subscribe asks for NameOwnerChanged of resolved's name on conn.
func subscribe(conn *dbus.Conn) (chan *dbus.Signal, error) {
	ctx, cancel := context.WithTimeout(context.Background(), callTimeout)
	defer cancel()
	err := conn.AddMatchSignalContext(ctx,
		dbus.WithMatchObjectPath(busPath),
		dbus.WithMatchInterface(busName),
		dbus.WithMatchMember(busOwner),
		dbus.WithMatchArg(0, resolvedName))
	if err != nil {
		return nil, err
	}
	ch := make(chan *dbus.Signal, 16)
	conn.Signal(ch)
	return ch, nil
}

func (m *resolvedManager) set(in Config) error {
	cfg, problems := in.normalize()
	m.mu.Lock()
	defer m.mu.Unlock()
	for _, p := range problems {
		m.warn.add(p)
	}
	if cfg.IsZero() {
		m.cfg = Config{}
		if !m.touched {
			return nil
		}
		err := m.revertLocked()
		return m.note(err)
	}
	idx, err := linkIndex(m.opts.TunName)
	if err != nil {
		return m.note(err)
	}
	if m.applied && idx == m.ifindex && cfg.equal(m.cfg) {
		return nil
	}
	m.cfg = cfg
	return m.note(m.applyLocked(idx))
}

func (m *resolvedManager) note(err error) error {
	if err != nil {
		m.lastErr = err.Error()
		m.logf("dns: %v", err)
	} else {
		m.lastErr = ""
	}
	return err
}

func linkIndex(name string) (int32, error) {
	ifi, err := net.InterfaceByName(name)
	if err != nil {
		return 0, fmt.Errorf("tunnel interface %s: %w", name, err)
	}
	return int32(ifi.Index), nil
}

// applyLocked configures m.cfg on link idx.
func (m *resolvedManager) applyLocked(idx int32) error {
	if m.conn == nil {
		m.applied = false
		return errors.New("not connected to the system bus; will configure systemd-resolved when reconnected")
	}
	if m.touched && m.ifindex != idx {
		// The tunnel was re-created; resolved dropped the old link's settings with it.
		m.revertLocked()
	}
	ctx, cancel := context.WithTimeout(m.ctx, callTimeout)
	defer cancel()
	obj := m.conn.Object(resolvedName, resolvedPath)
	call := func(method string, args ...any) error {
		return obj.CallWithContext(ctx, resolvedIface+"."+method, 0, args...).Err
	}
	cfg := m.cfg

	var servers []linkDNS
	for _, a := range cfg.Nameservers {
		if a.Is4() {
			b := a.As4()
			servers = append(servers, linkDNS{Family: unix.AF_INET, Address: b[:]})
		} else {
			b := a.As16()
			servers = append(servers, linkDNS{Family: unix.AF_INET6, Address: b[:]})
		}
	}
	m.applied = false
	m.ifindex = idx
	m.touched = true
	if err := call("SetLinkDNS", idx, servers); err != nil {
		return fmt.Errorf("systemd-resolved SetLinkDNS: %w", err)
	}

	domains := resolvedDomains(cfg)
	err := call("SetLinkDomains", idx, domains)
	if err != nil && strings.Contains(err.Error(), "Argument list too long") {
		// Old resolved versions limit the argument size; reverse-lookup zones matter least.
		err = call("SetLinkDomains", idx, slices.DeleteFunc(domains, func(d linkDomain) bool {
			return strings.HasSuffix(d.Domain, ".arpa.")
		}))
	}
	if err != nil {
		return fmt.Errorf("systemd-resolved SetLinkDomains: %w", err)
	}
	if err := call("SetLinkDefaultRoute", idx, cfg.DefaultRoute); err != nil {
		if !unknownMethod(err) {
			return fmt.Errorf("systemd-resolved SetLinkDefaultRoute: %w", err)
		}
		m.logf("dns: this systemd-resolved has no SetLinkDefaultRoute; the %q routing domain still routes all queries", ".")
	}
	// Multicast protocols make no sense on the tunnel; DNSSEC and DoT towards our own server
	// only produce failures.
	for _, opt := range []string{"SetLinkLLMNR", "SetLinkMulticastDNS", "SetLinkDNSSEC", "SetLinkDNSOverTLS"} {
		if err := call(opt, idx, "no"); err != nil {
			if !unknownMethod(err) {
				m.warn.add(fmt.Sprintf("systemd-resolved %s(no) failed: %v", opt, err))
			}
			continue
		}
	}
	m.applied = true
	if err := call("FlushCaches"); err != nil && !unknownMethod(err) {
		m.warn.add(fmt.Sprintf("systemd-resolved FlushCaches failed: %v", err))
	}
	return nil
}

// resolvedDomains lists the link's domains: search domains (which resolved also routes),
// then routing-only match domains, then "." when the link takes all queries.
func resolvedDomains(cfg Config) []linkDomain {
	out := []linkDomain{}
	seen := map[string]bool{}
	for _, d := range cfg.SearchDomains {
		if !seen[d] {
			seen[d] = true
			out = append(out, linkDomain{Domain: d + ".", RoutingOnly: false})
		}
	}
	for _, d := range cfg.MatchDomains {
		if !seen[d] {
			seen[d] = true
			out = append(out, linkDomain{Domain: d + ".", RoutingOnly: true})
		}
	}
	if cfg.DefaultRoute {
		out = append(out, linkDomain{Domain: ".", RoutingOnly: true})
	}
	return out
}

func unknownMethod(err error) bool {
	var de dbus.Error
	if errors.As(err, &de) {
		return de.Name == dbus.ErrMsgUnknownMethod.Name
	}
	var dp *dbus.Error
	if errors.As(err, &dp) {
		return dp.Name == dbus.ErrMsgUnknownMethod.Name
	}
	return false
}

// revertLocked drops every setting of ours from the link.
func (m *resolvedManager) revertLocked() error {
	if m.conn == nil {
		m.applied = false
		return nil
	}
	ctx, cancel := context.WithTimeout(context.Background(), callTimeout)
	defer cancel()
	err := m.conn.Object(resolvedName, resolvedPath).CallWithContext(ctx, resolvedIface+".RevertLink", 0, m.ifindex).Err
	m.applied = false
	m.touched = false
	if err != nil {
		return fmt.Errorf("systemd-resolved RevertLink(%d): %w", m.ifindex, err)
	}
	return nil
}

// run re-applies the settings when resolved restarts and reconnects when the bus goes away.
func (m *resolvedManager) run(sig chan *dbus.Signal) {
	defer close(m.done)
	for {
		select {
		case <-m.ctx.Done():
			return
		case s, ok := <-sig:
			if !ok {
				if sig = m.reconnect(); sig == nil {
					return
				}
				continue
			}
			m.onSignal(s)
		}
	}
}

func (m *resolvedManager) onSignal(s *dbus.Signal) {
	if s.Path != busPath || s.Name != busName+"."+busOwner || len(s.Body) < 3 {
		return
	}
	if name, _ := s.Body[0].(string); name != resolvedName {
		return
	}
	newOwner, _ := s.Body[2].(string)
	now := m.opts.now().Format("15:04:05")
	m.mu.Lock()
	defer m.mu.Unlock()
	if newOwner == "" {
		// resolved is gone and with it every link setting; apply again when it is back.
		if !m.cfg.IsZero() {
			m.warn.add(fmt.Sprintf("systemd-resolved left the system bus at %s; waiting for it to come back", now))
		}
		m.applied = false
		m.touched = false
		return
	}
	if m.cfg.IsZero() || m.ctx.Err() != nil {
		return
	}
	idx, err := linkIndex(m.opts.TunName)
	if err == nil {
		err = m.applyLocked(idx)
	}
	if m.note(err) != nil {
		m.warn.add(fmt.Sprintf("systemd-resolved restarted at %s; re-applying failed: %v", now, err))
		return
	}
	m.resyncs++
	m.warn.add(fmt.Sprintf("systemd-resolved restarted at %s; re-applied the tunnel link settings", now))
	m.logf("dns: systemd-resolved restarted; re-applied")
}

// reconnect replaces a lost bus connection, backing off up to 30 s, and re-applies. It returns
// nil when the manager is closing.
func (m *resolvedManager) reconnect() chan *dbus.Signal {
	m.mu.Lock()
	if m.conn != nil {
		m.conn.Close()
		m.conn = nil
	}
	m.applied = false
	m.mu.Unlock()
	m.logf("dns: lost the system bus; reconnecting")
	delay := 250 * time.Millisecond
	for {
		select {
		case <-m.ctx.Done():
			return nil
		case <-time.After(delay):
		}
		conn, err := m.opts.Bus()
		if err == nil {
			sig, err2 := subscribe(conn)
			if err2 == nil {
				m.mu.Lock()
				m.conn = conn
				if !m.cfg.IsZero() {
					idx, err := linkIndex(m.opts.TunName)
					if err == nil {
						err = m.applyLocked(idx)
					}
					m.note(err)
				}
				m.mu.Unlock()
				return sig
			}
			conn.Close()
			err = err2
		}
		m.logf("dns: system bus reconnect: %v", err)
		delay = min(delay*2, 30*time.Second)
	}
}

func (m *resolvedManager) close() error {
	m.cancel()
	<-m.done
	m.mu.Lock()
	defer m.mu.Unlock()
	var err error
	if m.touched {
		err = m.note(m.revertLocked())
	}
	if m.conn != nil {
		m.conn.Close()
		m.conn = nil
	}
	return err
}

// resolvedServer is one DNS server as resolved reports it.
type resolvedServer struct {
	ifindex int32
	addr    netip.Addr
	port    uint16
}

func (m *resolvedManager) upstreams() []netip.AddrPort {
	m.mu.Lock()
	conn, own, cfg := m.conn, m.ifindex, m.cfg.clone()
	if !m.applied {
		own = -1
		if idx, err := linkIndex(m.opts.TunName); err == nil {
			own = idx
		}
	}
	m.mu.Unlock()
	if conn == nil {
		return nil
	}
	ctx, cancel := context.WithTimeout(context.Background(), callTimeout)
	defer cancel()
	obj := conn.Object(resolvedName, resolvedPath)

	servers := readServers(ctx, obj, "DNSEx", "DNS")
	defaultRoute := map[int32]bool{}
	var out []netip.AddrPort
	add := func(s resolvedServer) {
		if s.ifindex == own || isOurs(s.addr, cfg) || isStub(s.addr) {
			return
		}
		if s.ifindex > 0 {
			dr, ok := defaultRoute[s.ifindex]
			if !ok {
				dr = linkIsDefaultRoute(ctx, conn, obj, s.ifindex)
				defaultRoute[s.ifindex] = dr
			}
			if !dr {
				// A split-DNS-only link (another VPN's "~corp" servers) is no general upstream.
				return
			}
		}
		a := s.addr.Unmap()
		if a.Is6() && (a.IsLinkLocalUnicast() || a.IsLinkLocalMulticast()) && s.ifindex > 0 {
			zone := strconv.Itoa(int(s.ifindex))
			if ifi, err := net.InterfaceByIndex(int(s.ifindex)); err == nil {
				zone = ifi.Name
			}
			a = a.WithZone(zone)
		}
		port := s.port
		if port == 0 {
			port = 53
		}
		ap := netip.AddrPortFrom(a, port)
		if !slices.Contains(out, ap) {
			out = append(out, ap)
		}
	}
	for _, s := range servers {
		add(s)
	}
	if len(out) == 0 {
		// resolved itself falls back to these when nothing else is configured.
		for _, s := range readServers(ctx, obj, "FallbackDNSEx", "FallbackDNS") {
			add(s)
		}
	}
	return out
}

// readServers reads a server list property, preferring the Ex form (which carries ports).
func readServers(ctx context.Context, obj dbus.BusObject, exProp, plainProp string) []resolvedServer {
	var v dbus.Variant
	if err := obj.CallWithContext(ctx, "org.freedesktop.DBus.Properties.Get", 0, resolvedIface, exProp).Store(&v); err == nil {
		var rows []struct {
			Ifindex int32
			Family  int32
			Address []byte
			Port    uint16
			Name    string
		}
		if v.Store(&rows) == nil {
			var out []resolvedServer
			for _, r := range rows {
				if a, ok := netip.AddrFromSlice(r.Address); ok {
					out = append(out, resolvedServer{r.Ifindex, a, r.Port})
				}
			}
			return out
		}
	}
	if err := obj.CallWithContext(ctx, "org.freedesktop.DBus.Properties.Get", 0, resolvedIface, plainProp).Store(&v); err != nil {
		return nil
	}
	var rows []struct {
		Ifindex int32
		Family  int32
		Address []byte
	}
	if v.Store(&rows) != nil {
		return nil
	}
	var out []resolvedServer
	for _, r := range rows {
		if a, ok := netip.AddrFromSlice(r.Address); ok {
			out = append(out, resolvedServer{r.Ifindex, a, 0})
		}
	}
	return out
}

// linkIsDefaultRoute reports whether resolved sends general queries to the link's servers. If
// that cannot be determined the link is assumed to be a default route.
func linkIsDefaultRoute(ctx context.Context, conn *dbus.Conn, obj dbus.BusObject, idx int32) bool {
	var path dbus.ObjectPath
	if err := obj.CallWithContext(ctx, resolvedIface+".GetLink", 0, idx).Store(&path); err != nil {
		return true
	}
	var v dbus.Variant
	err := conn.Object(resolvedName, path).CallWithContext(ctx, "org.freedesktop.DBus.Properties.Get", 0, resolvedLink, "DefaultRoute").Store(&v)
	if err != nil {
		return true
	}
	dr, ok := v.Value().(bool)
	return !ok || dr
}

func (m *resolvedManager) status(st *Status) bool {
	if !m.mu.TryLock() {
		return false // a reconfiguration is in progress
	}
	defer m.mu.Unlock()
	st.Applied = m.applied
	st.Config = m.cfg.clone()
	st.Interface = m.opts.TunName
	st.IfIndex = int(m.ifindex)
	st.Reapplies = m.resyncs
	st.LastError = m.lastErr
	w := m.warn.snapshot()
	if m.applied && !m.cfg.DefaultRoute && len(m.cfg.MatchDomains) == 0 && len(m.cfg.SearchDomains) == 0 {
		w = append(w, "no default route, match or search domain: systemd-resolved will send no queries to the tunnel")
	}
	st.Warnings = w
	return true
}

// nameHasOwner asks the bus whether name currently has an owner.
func nameHasOwner(conn *dbus.Conn, name string) (bool, error) {
	ctx, cancel := context.WithTimeout(context.Background(), callTimeout)
	defer cancel()
	var owned bool
	err := conn.BusObject().CallWithContext(ctx, busName+".NameHasOwner", 0, name).Store(&owned)
	return owned, err
}

// cleanupResolved is the resolved half of Cleanup.
func cleanupResolved(opts Options) error {
	if opts.TunName == "" {
		return nil
	}
	idx, err := linkIndex(opts.TunName)
	if err != nil {
		return nil // link gone: resolved dropped its settings with it
	}
	conn, err := opts.Bus()
	if err != nil {
		return nil // no bus, no resolved
	}
	defer conn.Close()
	if owned, err := nameHasOwner(conn, resolvedName); err != nil || !owned {
		return nil
	}
	ctx, cancel := context.WithTimeout(context.Background(), callTimeout)
	defer cancel()
	if err := conn.Object(resolvedName, resolvedPath).CallWithContext(ctx, resolvedIface+".RevertLink", 0, idx).Err; err != nil {
		return fmt.Errorf("osdns cleanup: systemd-resolved RevertLink(%d): %w", idx, err)
	}
	opts.Logf("dns: cleanup: reverted systemd-resolved settings of %s", opts.TunName)
	return nil
}
