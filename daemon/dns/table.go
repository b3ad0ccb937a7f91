package dns

import (
	"net"
	"net/netip"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"

	mdns "github.com/miekg/dns"
)

// nameRec holds everything answerable for one owner name. A record with no
// data at all marks a name that exists without records of any type (a zone
// apex or an empty non-terminal): queries for it get NODATA, not NXDOMAIN.
type nameRec struct {
	a    []net.IP // 4-byte form
	aaaa []net.IP // 16-byte form
	ptr  []string // PTR targets, lower-case FQDNs
}

type zoneKind uint8

const (
	zoneLocal zoneKind = iota + 1 // authoritative: unknown names are NXDOMAIN
	zoneRoute                     // forwarded to the zone's upstreams
)

type zone struct {
	kind zoneKind
	ups  *upstreamSet // zoneRoute only
}

// upstreamSet is a list of upstreams with a remembered preferred entry, so
// that one dead resolver at the head of the list does not cost every query
// a full try timeout.
type upstreamSet struct {
	name   string   // for log lines: the route suffix or "default"
	addrs  []string // "ip:port"
	pref   atomic.Uint32
	logged atomic.Bool // the "no usable upstream" line was printed
}

// table is the compiled, immutable form of a Config.
type table struct {
	gen   uint64
	names map[string]*nameRec // lower-case FQDN → data (hosts, reverse names, short names, ENTs)
	zones map[string]*zone    // lower-case suffix → local or routed
	def   *upstreamSet        // default upstreams
	// dyn answers names looked up per query; search are the search
	// domains (canonical, in order) for its single-label names.
	dyn    Names
	search []string
}

// lookup finds what is answerable for name: the compiled records, then the
// dynamic source (forward, PTR, short names through the search domains).
func (t *table) lookup(name string) (*nameRec, bool) {
	rec, ok := t.names[name]
	if t.dyn == nil {
		return rec, ok
	}
	if dr, dok := t.dynamic(name); dok {
		if !ok {
			return dr, true
		}
		merged := *rec
		merged.a = append(slices.Clone(rec.a), dr.a...)
		merged.aaaa = append(slices.Clone(rec.aaaa), dr.aaaa...)
		merged.ptr = append(slices.Clone(rec.ptr), dr.ptr...)
		return &merged, true
	}
	return rec, ok
}

func (t *table) dynamic(name string) (*nameRec, bool) {
	if addrs, ok := t.dyn.Lookup(name); ok {
		return addrRec(addrs), true
	}
	if a, ok := reverseName(name); ok {
		if n, ok := t.dyn.Reverse(a); ok {
			return &nameRec{ptr: []string{n}}, true
		}
		return nil, false
	}
	if p, ok := parentName(name); ok && p == "." && len(name) > 1 {
		for _, d := range t.search {
			if addrs, ok := t.dyn.Lookup(name[:len(name)-1] + "." + d); ok {
				return addrRec(addrs), true
			}
		}
	}
	return nil, false
}

func addrRec(addrs []netip.Addr) *nameRec {
	rec := &nameRec{}
	for _, a := range addrs {
		a = a.Unmap()
		if a.Is4() {
			b := a.As4()
			rec.a = append(rec.a, net.IP(b[:]))
		} else {
			b := a.As16()
			rec.aaaa = append(rec.aaaa, net.IP(b[:]))
		}
	}
	return rec
}

// reverseName parses an in-addr.arpa or ip6.arpa owner name (lower case,
// trailing dot) into the address it names.
func reverseName(name string) (netip.Addr, bool) {
	if v4, ok := strings.CutSuffix(name, ".in-addr.arpa."); ok {
		parts := strings.Split(v4, ".")
		if len(parts) != 4 {
			return netip.Addr{}, false
		}
		var b [4]byte
		for i, p := range parts {
			n, err := strconv.ParseUint(p, 10, 8)
			if err != nil || (len(p) > 1 && p[0] == '0') {
				return netip.Addr{}, false
			}
			b[3-i] = byte(n)
		}
		return netip.AddrFrom4(b), true
	}
	if v6, ok := strings.CutSuffix(name, ".ip6.arpa."); ok {
		if len(v6) != 63 { // 32 nibbles and 31 dots
			return netip.Addr{}, false
		}
		var b [16]byte
		for i := range 32 {
			c := v6[2*i]
			if i < 31 && v6[2*i+1] != '.' {
				return netip.Addr{}, false
			}
			var nib byte
			switch {
			case c >= '0' && c <= '9':
				nib = c - '0'
			case c >= 'a' && c <= 'f':
				nib = c - 'a' + 10
			default:
				return netip.Addr{}, false
			}
			pos := 31 - i // the first label is the last nibble
			if pos%2 == 0 {
				b[pos/2] |= nib << 4
			} else {
				b[pos/2] |= nib
			}
		}
		return netip.AddrFrom16(b), true
	}
	return netip.Addr{}, false
}

// specialLocal are special-use domains that are never sent to unicast
// upstreams unless a route explicitly covers them.
//
// "local." and the link-local reverse zones belong to multicast DNS
// (RFC 6762 §3 and §22.1). Resolvers that see them are asked to return
// NXDOMAIN immediately rather than query the DNS: upstreams usually do not
// know these names either, and a slow or unreachable upstream turns every
// mDNS-style lookup that leaks to us (browsers, printers, nss fallbacks)
// into a multi-second stall until the forwarding timeout. Networks that
// really use a unicast ".local" domain (some Active Directory setups) need a
// split-DNS route for it, which takes precedence.
//
// "onion." must never be resolved through the DNS (RFC 7686 §2).
var specialLocal = []string{
	"local.",
	"254.169.in-addr.arpa.",
	"8.e.f.ip6.arpa.",
	"9.e.f.ip6.arpa.",
	"a.e.f.ip6.arpa.",
	"b.e.f.ip6.arpa.",
	"onion.",
}

// canonName lower-cases s and adds the trailing dot. It reports false for
// names that cannot be put on the wire.
func canonName(s string) (string, bool) {
	s = strings.TrimSpace(s)
	if s == "" {
		return "", false
	}
	s = lowerASCII(mdns.Fqdn(s))
	if _, ok := mdns.IsDomainName(s); !ok {
		return "", false
	}
	return s, true
}

// lowerASCII returns s with A-Z folded to a-z, without allocating when s
// is already lower-case. DNS case-insensitivity covers ASCII letters only.
func lowerASCII(s string) string {
	for i := 0; i < len(s); i++ {
		if c := s[i]; 'A' <= c && c <= 'Z' {
			b := []byte(s)
			for j := i; j < len(b); j++ {
				if c := b[j]; 'A' <= c && c <= 'Z' {
					b[j] = c + ('a' - 'A')
				}
			}
			return string(b)
		}
	}
	return s
}

// parentName returns the name without its first label ("a.b." → "b.",
// "b." → ".") and false for the root. It honours presentation-format
// escapes, so an escaped dot inside a label is not a separator.
func parentName(s string) (string, bool) {
	for i := 0; i < len(s); i++ {
		switch s[i] {
		case '\\':
			i++
		case '.':
			if i == 0 { // the root itself
				return "", false
			}
			if i+1 == len(s) {
				return ".", true
			}
			return s[i+1:], true
		}
	}
	return "", false
}

// zoneFor returns the zone with the longest suffix matching name, or nil.
func (t *table) zoneFor(name string) *zone {
	for s := name; ; {
		if z, ok := t.zones[s]; ok {
			return z
		}
		p, ok := parentName(s)
		if !ok {
			return nil
		}
		s = p
	}
}

func (s *Server) isLoop(ap netip.AddrPort, stubLoops bool) bool {
	a := ap.Addr().Unmap()
	if slices.Contains(s.selfAddrs, a) {
		return true
	}
	return stubLoops && a == netip.AddrFrom4([4]byte{127, 0, 0, 53})
}

// newUpstreamSet filters out invalid and self-pointing upstreams.
func (s *Server) newUpstreamSet(name string, ups []Upstream, stubLoops bool) *upstreamSet {
	set := &upstreamSet{name: name}
	for _, u := range ups {
		ap := u.Addr
		if !ap.Addr().IsValid() {
			s.logf("dns: route %s: ignoring invalid upstream %v", name, ap)
			continue
		}
		if s.isLoop(ap, stubLoops) {
			s.logf("dns: route %s: refusing upstream %v: it points back at this resolver (forwarding loop)", name, ap)
			continue
		}
		port := ap.Port()
		if port == 0 {
			port = 53
		}
		a := netip.AddrPortFrom(ap.Addr().Unmap(), port).String()
		if !slices.Contains(set.addrs, a) {
			set.addrs = append(set.addrs, a)
		}
	}
	return set
}

func (s *Server) compile(cfg Config) *table {
	stubLoops := s.stubLoops.Load()
	t := &table{
		gen:   s.gen.Add(1),
		names: make(map[string]*nameRec, 2*len(cfg.Hosts)+16),
		zones: make(map[string]*zone, len(cfg.LocalDomains)+len(cfg.Routes)+len(specialLocal)),
	}
	t.def = s.newUpstreamSet("default", cfg.Upstreams, stubLoops)
	t.dyn = cfg.Names

	// Zones. Routes first, then local domains (an explicit local domain
	// overrides a route for the very same suffix), then the special-use
	// domains where nothing else was configured.
	for suffix, ups := range cfg.Routes {
		n, ok := canonName(suffix)
		if !ok {
			s.logf("dns: ignoring route for invalid suffix %q", suffix)
			continue
		}
		if len(ups) == 0 {
			t.zones[n] = &zone{kind: zoneLocal}
			continue
		}
		t.zones[n] = &zone{kind: zoneRoute, ups: s.newUpstreamSet(n, ups, stubLoops)}
	}
	for _, d := range cfg.LocalDomains {
		n, ok := canonName(d)
		if !ok {
			s.logf("dns: ignoring invalid local domain %q", d)
			continue
		}
		t.zones[n] = &zone{kind: zoneLocal}
	}
	for _, n := range specialLocal {
		if _, ok := t.zones[n]; !ok {
			t.zones[n] = &zone{kind: zoneLocal}
		}
	}

	// Forward records, sorted so that answers and PTR targets are
	// deterministic whatever the map order.
	hostNames := make([]string, 0, len(cfg.Hosts))
	canon := make(map[string][]netip.Addr, len(cfg.Hosts))
	for name, addrs := range cfg.Hosts {
		n, ok := canonName(name)
		if !ok {
			s.logf("dns: ignoring host with invalid name %q", name)
			continue
		}
		if _, dup := canon[n]; !dup {
			hostNames = append(hostNames, n)
		}
		canon[n] = append(canon[n], addrs...)
	}
	slices.Sort(hostNames)
	for _, n := range hostNames {
		rec := &nameRec{}
		seen := make(map[netip.Addr]bool, len(canon[n]))
		for _, a := range canon[n] {
			a = a.Unmap().WithZone("")
			if !a.IsValid() || seen[a] {
				continue
			}
			seen[a] = true
			if a.Is4() {
				b := a.As4()
				rec.a = append(rec.a, net.IP(b[:]))
			} else {
				b := a.As16()
				rec.aaaa = append(rec.aaaa, net.IP(b[:]))
			}
			rev, err := mdns.ReverseAddr(a.String())
			if err != nil {
				continue
			}
			pr := t.names[rev]
			if pr == nil {
				pr = &nameRec{}
				t.names[rev] = pr
			}
			if !slices.Contains(pr.ptr, n) {
				pr.ptr = append(pr.ptr, n) // hostNames is sorted, so targets are too
			}
		}
		if old := t.names[n]; old != nil {
			// A host whose name is also a reverse name: keep both.
			old.a, old.aaaa = rec.a, rec.aaaa
		} else {
			t.names[n] = rec
		}
	}

	// Empty non-terminals and apexes of local zones exist (NODATA). Walk up
	// from every owner name while still inside a local zone.
	ents := make(map[string]bool)
	for n := range t.names {
		for p, ok := parentName(n); ok; p, ok = parentName(p) {
			if z := t.zoneFor(p); z == nil || z.kind != zoneLocal || ents[p] {
				break
			}
			ents[p] = true
		}
	}
	for n, z := range t.zones {
		if z.kind == zoneLocal {
			ents[n] = true
		}
	}
	for n := range ents {
		if _, ok := t.names[n]; !ok {
			t.names[n] = &nameRec{}
		}
	}

	// Single-label names via search domains, first domain wins. Added last
	// so they never shadow a real owner name.
	search := make(map[string]int, len(cfg.SearchDomains))
	for i, d := range cfg.SearchDomains {
		n, ok := canonName(d)
		if !ok || n == "." {
			s.logf("dns: ignoring invalid search domain %q", d)
			continue
		}
		if _, dup := search[n]; !dup {
			search[n] = i
			t.search = append(t.search, n)
		}
	}
	if len(search) > 0 {
		type best struct {
			idx int
			rec *nameRec
		}
		short := make(map[string]best)
		for _, n := range hostNames {
			p, ok := parentName(n)
			if !ok || p == "." {
				continue
			}
			idx, ok := search[p]
			if !ok {
				continue
			}
			label := n[:len(n)-len(p)]
			if b, ok := short[label]; !ok || idx < b.idx {
				short[label] = best{idx, t.names[n]}
			}
		}
		for label, b := range short {
			if _, ok := t.names[label]; !ok {
				t.names[label] = b.rec
			}
		}
	}
	return t
}
