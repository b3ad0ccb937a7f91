package dns

import (
	"net/netip"
	"slices"
	"strings"
	"sync"
	"testing"

	mdns "github.com/miekg/dns"
)

// mapNames is a Names over two maps, changed while the server runs.
type mapNames struct {
	mu  sync.Mutex
	fwd map[string][]netip.Addr
}

func (m *mapNames) Lookup(name string) ([]netip.Addr, bool) {
	m.mu.Lock()
	defer m.mu.Unlock()
	a, ok := m.fwd[name]
	return a, ok
}

func (m *mapNames) Reverse(a netip.Addr) (string, bool) {
	m.mu.Lock()
	defer m.mu.Unlock()
	for n, as := range m.fwd {
		if slices.Contains(as, a) {
			return n, true
		}
	}
	return "", false
}

func (m *mapNames) set(name string, a ...netip.Addr) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if a == nil {
		delete(m.fwd, name)
	} else {
		m.fwd[name] = a
	}
}

// Peers answered through Names: forward, PTR (v4 and v6), short names in search order, merged
// with compiled records of the same name, and a change is visible at the next query without
// a new config.
func TestNamesSource(t *testing.T) {
	names := &mapNames{fwd: map[string][]netip.Addr{
		"peer1." + suffix: addrs("100.64.5.1", "fd7a:115c:a1e0::51"),
	}}
	cfg := testConfig()
	cfg.Names = names
	cfg.Hosts["merged."+suffix] = addrs("100.64.9.9")
	names.set("merged."+suffix, mustAddr("100.64.9.10"))
	s := NewServer(Options{Logf: testLogf(t)})
	s.SetConfig(cfg)

	answers := func(name string, qtype uint16) (int, []string) {
		t.Helper()
		r := ask(t, s, question(name, qtype), true)
		return r.Rcode, rrStrings(r.Answer)
	}
	if rc, got := answers("PEER1."+suffix, mdns.TypeA); rc != mdns.RcodeSuccess || len(got) != 1 || !strings.Contains(got[0], "100.64.5.1") {
		t.Errorf("A peer1: %d %v", rc, got)
	}
	if _, got := answers("peer1."+suffix, mdns.TypeAAAA); len(got) != 1 || !strings.Contains(got[0], "fd7a:115c:a1e0::51") {
		t.Errorf("AAAA peer1: %v", got)
	}
	if _, got := answers("1.5.64.100.in-addr.arpa.", mdns.TypePTR); len(got) != 1 || !strings.Contains(got[0], "peer1."+suffix) {
		t.Errorf("PTR v4: %v", got)
	}
	rev6, _ := mdns.ReverseAddr("fd7a:115c:a1e0::51")
	if _, got := answers(rev6, mdns.TypePTR); len(got) != 1 {
		t.Errorf("PTR v6 %s: %v", rev6, got)
	}
	if _, got := answers("peer1.", mdns.TypeA); len(got) != 1 {
		t.Errorf("short name through the search domain: %v", got)
	}
	if _, got := answers("merged."+suffix, mdns.TypeA); len(got) != 2 {
		t.Errorf("compiled and dynamic addresses merged: %v", got)
	}
	// Unknown names in the tailnet's zones are still NXDOMAIN, not forwarded.
	if rc, _ := answers("nobody."+suffix, mdns.TypeA); rc != mdns.RcodeNameError {
		t.Errorf("unknown peer: rcode %d", rc)
	}
	if rc, _ := answers("77.77.64.100.in-addr.arpa.", mdns.TypePTR); rc != mdns.RcodeNameError {
		t.Errorf("unknown address: rcode %d", rc)
	}
	// A peer that comes and goes, without SetConfig.
	names.set("peer2."+suffix, mustAddr("100.64.5.2"))
	if _, got := answers("peer2."+suffix, mdns.TypeA); len(got) != 1 {
		t.Errorf("new peer not answered: %v", got)
	}
	names.set("peer2." + suffix)
	if rc, _ := answers("peer2."+suffix, mdns.TypeA); rc != mdns.RcodeNameError {
		t.Errorf("removed peer still answered: rcode %d", rc)
	}
}

func TestReverseName(t *testing.T) {
	for _, a := range []string{"100.64.0.1", "0.0.0.0", "255.255.255.255", "fd7a:115c:a1e0::53", "::1", "2001:db8::abcd:ef01"} {
		rev, err := mdns.ReverseAddr(a)
		if err != nil {
			t.Fatal(err)
		}
		got, ok := reverseName(strings.ToLower(rev))
		if !ok || got != netip.MustParseAddr(a) {
			t.Errorf("reverseName(%s) = %v, %v; want %s", rev, got, ok, a)
		}
	}
	for _, bad := range []string{"1.2.3.in-addr.arpa.", "01.2.3.4.in-addr.arpa.", "256.2.3.4.in-addr.arpa.", "x.2.3.4.in-addr.arpa.",
		"1.2.ip6.arpa.", strings.Repeat("g.", 32) + "ip6.arpa.", "example.com.", "in-addr.arpa."} {
		if a, ok := reverseName(bad); ok {
			t.Errorf("reverseName(%q) = %v", bad, a)
		}
	}
}

func FuzzReverseName(f *testing.F) {
	f.Add("4.3.2.1.in-addr.arpa.")
	f.Add("1.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.ip6.arpa.")
	f.Fuzz(func(t *testing.T, s string) {
		a, ok := reverseName(s)
		if !ok {
			return
		}
		// What parses names its address exactly.
		rev, err := mdns.ReverseAddr(a.String())
		if err != nil || rev != s {
			t.Fatalf("reverseName(%q) = %v, which reverses to %q", s, a, rev)
		}
	})
}
