package osdns

import (
	"fmt"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/godbus/dbus/v5"
	"golang.org/x/sys/unix"
)

// fakeResolved owns org.freedesktop.resolve1 on a private bus and records the calls it gets.
type fakeResolved struct {
	conn *dbus.Conn

	mu    sync.Mutex
	calls []string
	times []time.Time
}

type dnsExRow struct {
	Ifindex int32
	Family  int32
	Address []byte
	Port    uint16
	Name    string
}

func addrRow(idx int32, s string, port uint16) dnsExRow {
	a := netip.MustParseAddr(s)
	if a.Is4() {
		b := a.As4()
		return dnsExRow{idx, unix.AF_INET, b[:], port, ""}
	}
	b := a.As16()
	return dnsExRow{idx, unix.AF_INET6, b[:], port, ""}
}

// fakeServers is what the fake reports in its DNSEx property. Link 3 is routing-only.
var fakeServers = []dnsExRow{
	addrRow(0, "9.9.9.9", 0),
	addrRow(0, "127.0.0.53", 0),
	addrRow(1, "100.100.100.100", 0), // our link ("lo" in tests)
	addrRow(2, "192.168.1.1", 0),
	addrRow(2, "fe80::1", 0),
	addrRow(2, "192.168.1.2", 5353),
	addrRow(3, "10.8.0.1", 0),
	addrRow(0, "100.100.100.100", 0),
}

// startFake connects to addr and takes the name. Methods listed in missing are not exported.
func startFake(t *testing.T, addr string, missing ...string) *fakeResolved {
	t.Helper()
	conn, err := dbus.Connect(addr)
	if err != nil {
		t.Fatal(err)
	}
	f := &fakeResolved{conn: conn}
	t.Cleanup(func() { conn.Close() })

	methods := map[string]any{
		"SetLinkDNS": func(idx int32, servers []linkDNS) *dbus.Error {
			var parts []string
			for _, s := range servers {
				a, _ := netip.AddrFromSlice(s.Address)
				parts = append(parts, fmt.Sprintf("%d:%s", s.Family, a))
			}
			f.record("SetLinkDNS %d %s", idx, strings.Join(parts, " "))
			return nil
		},
		"SetLinkDomains": func(idx int32, doms []linkDomain) *dbus.Error {
			var parts []string
			for _, d := range doms {
				parts = append(parts, fmt.Sprintf("%s:%v", d.Domain, d.RoutingOnly))
			}
			f.record("SetLinkDomains %d %s", idx, strings.Join(parts, " "))
			return nil
		},
		"SetLinkDefaultRoute": func(idx int32, on bool) *dbus.Error {
			f.record("SetLinkDefaultRoute %d %v", idx, on)
			return nil
		},
		"FlushCaches": func() *dbus.Error { f.record("FlushCaches"); return nil },
		"RevertLink":  func(idx int32) *dbus.Error { f.record("RevertLink %d", idx); return nil },
		"GetLink": func(idx int32) (dbus.ObjectPath, *dbus.Error) {
			return dbus.ObjectPath(fmt.Sprintf("/org/freedesktop/resolve1/link/_3%d", idx)), nil
		},
	}
	for _, name := range []string{"SetLinkLLMNR", "SetLinkMulticastDNS", "SetLinkDNSSEC", "SetLinkDNSOverTLS"} {
		methods[name] = func(idx int32, v string) *dbus.Error {
			f.record("%s %d %s", name, idx, v)
			return nil
		}
	}
	for _, name := range missing {
		delete(methods, name)
	}
	if err := conn.ExportMethodTable(methods, resolvedPath, resolvedIface); err != nil {
		t.Fatal(err)
	}
	props := map[string]any{
		"Get": func(iface, name string) (dbus.Variant, *dbus.Error) {
			if iface == resolvedIface && name == "DNSEx" {
				return dbus.MakeVariant(fakeServers), nil
			}
			return dbus.Variant{}, dbus.NewError("org.freedesktop.DBus.Error.UnknownProperty", []any{name})
		},
	}
	if err := conn.ExportMethodTable(props, resolvedPath, "org.freedesktop.DBus.Properties"); err != nil {
		t.Fatal(err)
	}
	for _, idx := range []int32{1, 2, 3} {
		defRoute := idx != 3
		linkProps := map[string]any{
			"Get": func(iface, name string) (dbus.Variant, *dbus.Error) {
				if iface == resolvedLink && name == "DefaultRoute" {
					return dbus.MakeVariant(defRoute), nil
				}
				return dbus.Variant{}, dbus.NewError("org.freedesktop.DBus.Error.UnknownProperty", []any{name})
			},
		}
		p := dbus.ObjectPath(fmt.Sprintf("/org/freedesktop/resolve1/link/_3%d", idx))
		if err := conn.ExportMethodTable(linkProps, p, "org.freedesktop.DBus.Properties"); err != nil {
			t.Fatal(err)
		}
	}
	reply, err := conn.RequestName(resolvedName, dbus.NameFlagDoNotQueue)
	if err != nil || reply != dbus.RequestNameReplyPrimaryOwner {
		t.Fatalf("RequestName = %v, %v", reply, err)
	}
	return f
}

func (f *fakeResolved) record(format string, args ...any) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.calls = append(f.calls, fmt.Sprintf(format, args...))
	f.times = append(f.times, time.Now())
}

// take returns and forgets the calls so far.
func (f *fakeResolved) take() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	c := f.calls
	f.calls, f.times = nil, nil
	return c
}

func (f *fakeResolved) count() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return len(f.calls)
}

func (f *fakeResolved) firstCallAt() time.Time {
	f.mu.Lock()
	defer f.mu.Unlock()
	if len(f.times) == 0 {
		return time.Time{}
	}
	return f.times[0]
}

func resolvedOptions(t *testing.T, addr string) Options {
	t.Helper()
	dir := t.TempDir()
	rc := filepath.Join(dir, "resolv.conf")
	if err := os.WriteFile(rc, []byte("# managed by systemd-resolved\nnameserver 127.0.0.53\noptions edns0 trust-ad\nsearch lan\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	return Options{
		TunName:    "lo",
		StateDir:   filepath.Join(dir, "state"),
		ResolvConf: rc,
		Logf:       t.Logf,
		Bus:        func() (*dbus.Conn, error) { return dbus.Connect(addr) },
	}
}

func lo(t *testing.T) int {
	ifi, err := net.InterfaceByName("lo")
	if err != nil {
		t.Skip("no lo interface")
	}
	return ifi.Index
}

func wantCalls(idx int, search, match []string, defaultRoute bool) []string {
	var doms []string
	for _, d := range search {
		doms = append(doms, d+".:false")
	}
	for _, d := range match {
		doms = append(doms, d+".:true")
	}
	if defaultRoute {
		doms = append(doms, ".:true")
	}
	return []string{
		fmt.Sprintf("SetLinkDNS %d 2:100.100.100.100 10:fd7a:115c:a1e0::53", idx),
		fmt.Sprintf("SetLinkDomains %d %s", idx, strings.Join(doms, " ")),
		fmt.Sprintf("SetLinkDefaultRoute %d %v", idx, defaultRoute),
		fmt.Sprintf("SetLinkLLMNR %d no", idx),
		fmt.Sprintf("SetLinkMulticastDNS %d no", idx),
		fmt.Sprintf("SetLinkDNSSEC %d no", idx),
		fmt.Sprintf("SetLinkDNSOverTLS %d no", idx),
		"FlushCaches",
	}
}

func TestResolvedMode(t *testing.T) {
	addr := startBus(t)
	idx := lo(t)
	fake := startFake(t, addr)
	opts := resolvedOptions(t, addr)
	origRC := readFile(t, opts.ResolvConf)

	m, err := New(opts)
	if err != nil {
		t.Fatal(err)
	}
	if m.Mode() != ModeResolved {
		t.Fatalf("mode = %q (%s)", m.Mode(), m.Status().Reason)
	}
	if r := m.Status().Reason; !strings.Contains(r, "127.0.0.53") {
		t.Errorf("reason = %q", r)
	}

	// Split DNS: not the default route.
	split := Config{
		Nameservers:   []netip.Addr{v4, v6},
		SearchDomains: []string{"tail1234.ts.net"},
		MatchDomains:  []string{"~corp.example", "tail1234.ts.net"},
	}
	if err := m.Set(split); err != nil {
		t.Fatal(err)
	}
	want := wantCalls(idx, []string{"tail1234.ts.net"}, []string{"corp.example"}, false)
	if got := fake.take(); !slices.Equal(got, want) {
		t.Fatalf("calls:\n got %q\nwant %q", got, want)
	}
	// Idempotent.
	if err := m.Set(split); err != nil {
		t.Fatal(err)
	}
	if got := fake.take(); len(got) != 0 {
		t.Errorf("repeated Set made calls: %q", got)
	}
	// Full tunnel: default route plus the "." routing domain.
	full := Config{Nameservers: []netip.Addr{v4, v6}, SearchDomains: []string{"tail1234.ts.net"}, DefaultRoute: true}
	if err := m.Set(full); err != nil {
		t.Fatal(err)
	}
	want = wantCalls(idx, []string{"tail1234.ts.net"}, nil, true)
	if got := fake.take(); !slices.Equal(got, want) {
		t.Fatalf("calls:\n got %q\nwant %q", got, want)
	}
	st := m.Status()
	if !st.Applied || st.IfIndex != idx || st.Interface != "lo" {
		t.Errorf("status = %+v", st)
	}

	// Upstreams: resolved's servers minus our link, ours, the stub and routing-only links.
	zone := "2"
	if ifi, err := net.InterfaceByIndex(2); err == nil {
		zone = ifi.Name
	}
	wantUp := addrPorts("9.9.9.9:53", "192.168.1.1:53", "[fe80::1%"+zone+"]:53", "192.168.1.2:5353")
	if got := m.Upstreams(); !slices.Equal(got, wantUp) {
		t.Errorf("Upstreams = %v, want %v", got, wantUp)
	}

	// resolved restarts: the old owner goes away, a new one takes the name.
	fake.conn.Close()
	fake2 := startFake(t, addr)
	taken := time.Now()
	waitFor(t, 2*time.Second, "re-apply to the new resolved", func() bool { return fake2.count() >= len(want) })
	if d := fake2.firstCallAt().Sub(taken); d > time.Second {
		t.Errorf("re-applied %v after the restart, want within 1s", d)
	}
	if got := fake2.take(); !slices.Equal(got, want) {
		t.Fatalf("re-applied calls:\n got %q\nwant %q", got, want)
	}
	st = settledStatus(t, m)
	if st.Reapplies != 1 || !hasWarning(st, "systemd-resolved restarted", "re-applied") {
		t.Errorf("status after restart: %d, %q", st.Reapplies, st.Warnings)
	}

	if err := m.Close(); err != nil {
		t.Fatal(err)
	}
	if got := fake2.take(); !slices.Equal(got, []string{"RevertLink " + strconv.Itoa(idx)}) {
		t.Fatalf("Close calls = %q", got)
	}
	if readFile(t, opts.ResolvConf) != origRC {
		t.Fatal("resolved mode touched resolv.conf")
	}
	if _, err := os.Stat(opts.StateDir); err == nil {
		if ents, _ := os.ReadDir(opts.StateDir); len(ents) != 0 {
			t.Errorf("resolved mode wrote state: %v", ents)
		}
	}
}

// TestResolvedOptionalMethods: an older resolved without the optional methods still works.
func TestResolvedOptionalMethods(t *testing.T) {
	addr := startBus(t)
	idx := lo(t)
	fake := startFake(t, addr, "SetLinkDefaultRoute", "SetLinkDNSSEC", "SetLinkDNSOverTLS")
	m, err := New(resolvedOptions(t, addr))
	if err != nil {
		t.Fatal(err)
	}
	if err := m.Set(Config{Nameservers: []netip.Addr{v4}, DefaultRoute: true}); err != nil {
		t.Fatal(err)
	}
	want := []string{
		fmt.Sprintf("SetLinkDNS %d 2:100.100.100.100", idx),
		fmt.Sprintf("SetLinkDomains %d .:true", idx),
		fmt.Sprintf("SetLinkLLMNR %d no", idx),
		fmt.Sprintf("SetLinkMulticastDNS %d no", idx),
		"FlushCaches",
	}
	if got := fake.take(); !slices.Equal(got, want) {
		t.Fatalf("calls:\n got %q\nwant %q", got, want)
	}
	if st := m.Status(); len(st.Warnings) != 0 || st.LastError != "" {
		t.Errorf("unknown optional methods reported: %q %q", st.Warnings, st.LastError)
	}
	// Empty config reverts the link.
	if err := m.Set(Config{}); err != nil {
		t.Fatal(err)
	}
	if got := fake.take(); !slices.Equal(got, []string{fmt.Sprintf("RevertLink %d", idx)}) {
		t.Fatalf("calls = %q", got)
	}
	if err := m.Close(); err != nil {
		t.Fatal(err)
	}
	if got := fake.take(); len(got) != 0 {
		t.Errorf("Close after revert made calls: %q", got)
	}
}

// TestResolvedRequiredMethodFails: a failing SetLinkDNS is an error, and Close still reverts.
func TestResolvedRequiredMethodFails(t *testing.T) {
	addr := startBus(t)
	idx := lo(t)
	fake := startFake(t, addr, "SetLinkDomains")
	m, err := New(resolvedOptions(t, addr))
	if err != nil {
		t.Fatal(err)
	}
	if err := m.Set(Config{Nameservers: []netip.Addr{v4}, DefaultRoute: true}); err == nil {
		t.Fatal("Set succeeded without SetLinkDomains")
	}
	if st := m.Status(); st.Applied || !strings.Contains(st.LastError, "SetLinkDomains") {
		t.Errorf("status = %+v", st)
	}
	fake.take()
	if err := m.Close(); err != nil {
		t.Fatal(err)
	}
	if got := fake.take(); !slices.Equal(got, []string{fmt.Sprintf("RevertLink %d", idx)}) {
		t.Fatalf("Close calls = %q", got)
	}
}

// TestDetectWithBus: resolved must both own its name and be what resolv.conf points at.
func TestDetectWithBus(t *testing.T) {
	addr := startBus(t)
	lo(t)

	// resolv.conf points at the stub but nobody owns the name.
	opts := resolvedOptions(t, addr)
	m, err := New(opts)
	if err != nil {
		t.Fatal(err)
	}
	if m.Mode() != ModeResolvConf || !strings.Contains(m.Status().Reason, "not on the system bus") {
		t.Errorf("no owner: mode %q, reason %q", m.Mode(), m.Status().Reason)
	}
	m.Close()

	// The name is owned but resolv.conf points elsewhere.
	startFake(t, addr)
	os.WriteFile(opts.ResolvConf, []byte("nameserver 192.168.1.1\n"), 0o644)
	m, err = New(opts)
	if err != nil {
		t.Fatal(err)
	}
	if m.Mode() != ModeResolvConf || !strings.Contains(m.Status().Reason, "running but") {
		t.Errorf("not pointing at it: mode %q, reason %q", m.Mode(), m.Status().Reason)
	}
	m.Close()

	// A symlink into /run/systemd/resolve.
	os.Remove(opts.ResolvConf)
	os.Symlink("/run/systemd/resolve/stub-resolv.conf", opts.ResolvConf)
	m, err = New(opts)
	if err != nil {
		t.Fatal(err)
	}
	if m.Mode() != ModeResolved || !strings.Contains(m.Status().Reason, "symlink") {
		t.Errorf("symlink: mode %q, reason %q", m.Mode(), m.Status().Reason)
	}
	m.Close()
}

// TestCleanupResolved: Cleanup reverts the link if it still exists, and ignores a missing one.
func TestCleanupResolved(t *testing.T) {
	addr := startBus(t)
	idx := lo(t)
	fake := startFake(t, addr)
	opts := resolvedOptions(t, addr)
	if err := Cleanup(opts); err != nil {
		t.Fatal(err)
	}
	if got := fake.take(); !slices.Equal(got, []string{fmt.Sprintf("RevertLink %d", idx)}) {
		t.Fatalf("calls = %q", got)
	}
	opts.TunName = "skein-gone0"
	if err := Cleanup(opts); err != nil {
		t.Fatal(err)
	}
	if got := fake.take(); len(got) != 0 {
		t.Fatalf("calls for a missing link = %q", got)
	}
}

// TestResolvedReconnect: when the bus connection is lost, the manager reconnects and re-applies.
func TestResolvedReconnect(t *testing.T) {
	addr := startBus(t)
	idx := lo(t)
	fake := startFake(t, addr)
	var mu sync.Mutex
	var conns []*dbus.Conn
	opts := resolvedOptions(t, addr)
	opts.Bus = func() (*dbus.Conn, error) {
		c, err := dbus.Connect(addr)
		if err == nil {
			mu.Lock()
			conns = append(conns, c)
			mu.Unlock()
		}
		return c, err
	}
	m, err := New(opts)
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	cfg := Config{Nameservers: []netip.Addr{v4}, DefaultRoute: true}
	if err := m.Set(cfg); err != nil {
		t.Fatal(err)
	}
	fake.take()
	mu.Lock()
	conns[len(conns)-1].Close() // the manager's connection dies
	mu.Unlock()
	waitFor(t, 3*time.Second, "re-apply after reconnect", func() bool { return fake.count() >= 5 })
	if got := fake.take(); got[0] != fmt.Sprintf("SetLinkDNS %d 2:100.100.100.100", idx) {
		t.Errorf("calls after reconnect = %q", got)
	}
}
