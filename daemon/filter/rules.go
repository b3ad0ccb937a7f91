package filter

import (
	"encoding/binary"
	"fmt"
	"net/netip"
	"slices"
	"strings"

	"github.com/skeinvpn/skein/daemon/wire"

	ippkt "github.com/skeinvpn/skein/daemon/packet"
)

// IP protocol numbers the filter treats specially.
const (
	protoICMPv4 = ippkt.ICMP
	protoTCP    = ippkt.TCP
	protoUDP    = ippkt.UDP
	protoICMPv6 = ippkt.ICMPv6
	protoTSMP   = 99 // Tailscale's own control messages inside the tunnel
	protoSCTP   = ippkt.SCTP
)

// addr is an IP address as a 128-bit number; IPv4 addresses use only the low 32 bits. The
// family is always kept next to it (rules, sets and flows are split per family), so an IPv4
// address and the IPv6 address ::a.b.c.d never meet.
type addr struct{ hi, lo uint64 }

func (a addr) less(b addr) bool { return a.hi < b.hi || (a.hi == b.hi && a.lo < b.lo) }

func (a addr) lessEq(b addr) bool { return !b.less(a) }

// next returns a+1 and whether it did not wrap around.
func (a addr) next() (addr, bool) {
	lo := a.lo + 1
	hi := a.hi
	if lo == 0 {
		hi++
		if hi == 0 {
			return addr{}, false
		}
	}
	return addr{hi, lo}, true
}

func addrFrom(ip netip.Addr) addr {
	if ip.Is4() {
		b := ip.As4()
		return addr{lo: uint64(binary.BigEndian.Uint32(b[:]))}
	}
	b := ip.As16()
	return addr{binary.BigEndian.Uint64(b[:8]), binary.BigEndian.Uint64(b[8:])}
}

// span is an inclusive address range.
type span struct{ lo, hi addr }

func (s span) has(a addr) bool { return s.lo.lessEq(a) && a.lessEq(s.hi) }

// spanOfPrefix returns the addresses covered by p (which must be valid).
func spanOfPrefix(p netip.Prefix) span {
	p = p.Masked()
	lo := addrFrom(p.Addr())
	host := p.Addr().BitLen() - p.Bits() // number of host bits
	hi := lo
	switch {
	case p.Addr().Is4():
		hi.lo |= (uint64(1)<<host - 1)
	case host >= 64:
		hi.lo = ^uint64(0)
		if host == 128 {
			hi.hi = ^uint64(0)
		} else {
			hi.hi |= uint64(1)<<(host-64) - 1
		}
	default:
		hi.lo |= uint64(1)<<host - 1
	}
	return span{lo, hi}
}

// addrSet is a sorted list of disjoint, non-adjacent spans.
type addrSet []span

// makeSet sorts and merges spans.
func makeSet(spans []span) addrSet {
	if len(spans) == 0 {
		return nil
	}
	spans = slices.Clone(spans)
	slices.SortFunc(spans, func(a, b span) int {
		if a.lo == b.lo {
			return 0
		}
		if a.lo.less(b.lo) {
			return -1
		}
		return 1
	})
	out := spans[:1]
	for _, s := range spans[1:] {
		last := &out[len(out)-1]
		nx, ok := last.hi.next()
		if !ok || s.lo.lessEq(nx) { // overlaps or touches the previous span
			if last.hi.less(s.hi) {
				last.hi = s.hi
			}
			continue
		}
		out = append(out, s)
	}
	return slices.Clip(out)
}

func (s addrSet) contains(a addr) bool {
	// Binary search for the first span whose upper end is >= a.
	lo, hi := 0, len(s)
	for lo < hi {
		m := int(uint(lo+hi) >> 1)
		if s[m].hi.less(a) {
			lo = m + 1
		} else {
			hi = m
		}
	}
	return lo < len(s) && s[lo].lo.lessEq(a)
}

// protoSet is a bitmap of IP protocol numbers.
type protoSet [4]uint64

func (p *protoSet) add(n uint8)      { p[n>>6] |= 1 << (n & 63) }
func (p *protoSet) has(n uint8) bool { return p[n>>6]&(1<<(n&63)) != 0 }

// dstPorts is one destination of a rule: an address span and an inclusive port range.
type dstPorts struct {
	span
	first, last uint16
}

func (d *dstPorts) allPorts() bool { return d.first == 0 && d.last == 0xffff }

// rule is one compiled filter rule restricted to one address family.
type rule struct {
	protos protoSet
	srcs   addrSet
	dsts   []dstPorts
}

// family is the part of a rule set for IPv4 or for IPv6.
type family struct {
	local addrSet
	rules []rule
	// ports has a bit for every port some rule's destination names: a packet to any other port
	// (typically a reply to an ephemeral port) skips the rule scan.
	ports *portSet
	// jailed are the sources of peers control jailed (Node.IsJailed): no rule lets them open
	// anything here; replies to what we opened still pass, as under the official client's
	// "shields up" filter for such peers.
	jailed addrSet
}

// Jail returns a copy of r in which packets from srcs (the allowed IPs of jailed peers) match
// no rule. Call it before SetRules: installed rules are never changed.
func (r *Rules) Jail(srcs []netip.Prefix) *Rules {
	var v4, v6 []span
	for _, p := range srcs {
		if !p.IsValid() {
			continue
		}
		if p.Addr().Is4In6() && p.Bits() >= 96 {
			p = netip.PrefixFrom(p.Addr().Unmap(), p.Bits()-96)
		}
		if p.Addr().Is4() {
			v4 = append(v4, spanOfPrefix(p))
		} else {
			v6 = append(v6, spanOfPrefix(p))
		}
	}
	out := *r
	out.v4.jailed, out.v6.jailed = makeSet(v4), makeSet(v6)
	return &out
}

// free reports whether src may be let in by a rule (it is not a jailed peer's).
func (f *family) free(src addr) bool { return len(f.jailed) == 0 || !f.jailed.contains(src) }

// portSet is a bitmap of the 65536 ports.
type portSet [1024]uint64

func (p *portSet) has(port uint16) bool { return p[port>>6]&(1<<(port&63)) != 0 }

// addRange sets the bits first..last (inclusive, first <= last).
func (p *portSet) addRange(first, last uint16) {
	for w := first >> 6; w <= last>>6; w++ {
		m := ^uint64(0)
		if w == first>>6 {
			m &= ^uint64(0) << (first & 63)
		}
		if w == last>>6 {
			m &= ^uint64(0) >> (63 - last&63)
		}
		p[w] |= m
		if w == 1023 {
			break
		}
	}
}

func (f *family) index() {
	if len(f.rules) == 0 {
		return
	}
	f.ports = new(portSet)
	for _, r := range f.rules {
		for _, d := range r.dsts {
			f.ports.addRange(d.first, d.last)
		}
	}
}

// The matchers test protocol, then destination and port (few per rule, and the selective part
// of most policies), and only then the source set, which can be long.

// match reports whether a rule allows proto from src to dst:port.
func (f *family) match(proto uint8, src, dst addr, port uint16) bool {
	if f.ports == nil || !f.ports.has(port) {
		return false
	}
	for i := range f.rules {
		r := &f.rules[i]
		if !r.protos.has(proto) {
			continue
		}
		for j := range r.dsts {
			d := &r.dsts[j]
			if d.first <= port && port <= d.last && d.has(dst) {
				if r.srcs.contains(src) {
					return true
				}
				break
			}
		}
	}
	return false
}

// matchAddrs reports whether any rule, whatever its protocols and ports, lets src reach dst.
func (f *family) matchAddrs(src, dst addr) bool {
	for i := range f.rules {
		r := &f.rules[i]
		for j := range r.dsts {
			if r.dsts[j].has(dst) {
				if r.srcs.contains(src) {
					return true
				}
				break
			}
		}
	}
	return false
}

// matchAllPorts reports whether a rule naming proto lets src reach dst on every port; this is
// how port-less protocols (GRE, ESP, ...) are allowed.
func (f *family) matchAllPorts(proto uint8, src, dst addr) bool {
	for i := range f.rules {
		r := &f.rules[i]
		if !r.protos.has(proto) {
			continue
		}
		for j := range r.dsts {
			d := &r.dsts[j]
			if d.allPorts() && d.has(dst) {
				if r.srcs.contains(src) {
					return true
				}
				break
			}
		}
	}
	return false
}

// Rules is a compiled packet filter: the destinations this node accepts traffic for and the
// control server's rules, split by address family. It is immutable once built.
type Rules struct {
	v4, v6 family
	n      int
}

// Len is the number of input rules that can match packets (a rule whose every source or every
// destination was skipped does not count).
func (r *Rules) Len() int {
	if r == nil {
		return 0
	}
	return r.n
}

func (r *Rules) fam(v6 bool) *family {
	if v6 {
		return &r.v6
	}
	return &r.v4
}

// defaultProtos are the protocols of a rule with an empty IPProto.
var defaultProtos = func() (p protoSet) {
	for _, n := range []uint8{protoTCP, protoUDP, protoICMPv4, protoICMPv6} {
		p.add(n)
	}
	return p
}()

// Compile turns the netmap's rules into a matcher. localNets are the destinations this node
// accepts traffic for (its own addresses, plus routes it serves as subnet router, and 0.0.0.0/0
// and ::/0 as exit node). Bad rule entries are skipped and reported in the returned warnings;
// the rest of the rule still applies. Compile(nil, localNets) is the official "empty filter":
// replies and established TCP pass, nothing new does.
func Compile(rules []wire.FilterRule, localNets []netip.Prefix) (*Rules, []string) {
	var warns []string
	warnf := func(format string, args ...any) { warns = append(warns, fmt.Sprintf(format, args...)) }

	var local4, local6 []span
	for _, p := range localNets {
		if !p.IsValid() || p.Addr().Zone() != "" {
			warnf("local network %v is not a valid prefix; skipped", p)
			continue
		}
		if p.Addr().Is4In6() {
			// 4in6 prefixes never match IPv4 packets; treat them as the IPv4 prefix they mean.
			if p.Bits() < 96 {
				warnf("local network %v mixes IPv4-mapped and IPv6 space; skipped", p)
				continue
			}
			p = netip.PrefixFrom(p.Addr().Unmap(), p.Bits()-96)
		}
		if p.Addr().Is4() {
			local4 = append(local4, spanOfPrefix(p))
		} else {
			local6 = append(local6, spanOfPrefix(p))
		}
	}
	out := &Rules{v4: family{local: makeSet(local4)}, v6: family{local: makeSet(local6)}}

	for i, fr := range rules {
		var protos protoSet
		if len(fr.IPProto) == 0 {
			protos = defaultProtos
		} else {
			for _, n := range fr.IPProto {
				if n < 0 || n > 0xff {
					warnf("rule %d: IPProto %d is not an IP protocol number; ignored", i, n)
					continue
				}
				protos.add(uint8(n))
			}
		}

		var src4, src6 []span
		for _, s := range fr.SrcIPs {
			if c, ok := strings.CutPrefix(s, "cap:"); ok {
				warnf("rule %d: source capability %q is not supported; ignored", i, c)
				continue
			}
			spans, err := parseAddrs(s)
			if err != nil {
				warnf("rule %d: source %q: %v; skipped", i, s, err)
				continue
			}
			src4, src6 = splitFamilies(spans, src4, src6)
		}

		var dst4, dst6 []dstPorts
		for _, d := range fr.DstPorts {
			if strings.HasPrefix(d.IP, "cap:") {
				warnf("rule %d: destination %q: capabilities are not allowed in destinations; skipped", i, d.IP)
				continue
			}
			if d.Ports.First > d.Ports.Last {
				warnf("rule %d: destination %q: empty port range %d-%d; skipped", i, d.IP, d.Ports.First, d.Ports.Last)
				continue
			}
			spans, err := parseAddrs(d.IP)
			if err != nil {
				warnf("rule %d: destination %q: %v; skipped", i, d.IP, err)
				continue
			}
			for _, sp := range spans {
				dp := dstPorts{span: sp.span, first: d.Ports.First, last: d.Ports.Last}
				if sp.v6 {
					dst6 = append(dst6, dp)
				} else {
					dst4 = append(dst4, dp)
				}
			}
		}
		if len(fr.CapGrant) > 0 {
			warnf("rule %d: capability grants are not supported; ignored", i)
		}

		used := false
		if len(src4) > 0 && len(dst4) > 0 {
			out.v4.rules = append(out.v4.rules, rule{protos: protos, srcs: makeSet(src4), dsts: dst4})
			used = true
		}
		if len(src6) > 0 && len(dst6) > 0 {
			out.v6.rules = append(out.v6.rules, rule{protos: protos, srcs: makeSet(src6), dsts: dst6})
			used = true
		}
		if used {
			out.n++
		}
	}
	out.v4.index()
	out.v6.index()
	return out, warns
}

// famSpan is a span tagged with its address family.
type famSpan struct {
	span
	v6 bool
}

func splitFamilies(in []famSpan, v4, v6 []span) ([]span, []span) {
	for _, s := range in {
		if s.v6 {
			v6 = append(v6, s.span)
		} else {
			v4 = append(v4, s.span)
		}
	}
	return v4, v6
}

var (
	all4 = famSpan{span: span{addr{}, addr{lo: 0xffffffff}}}
	all6 = famSpan{span: span{addr{}, addr{^uint64(0), ^uint64(0)}}, v6: true}
)

// parseAddrs parses the address syntax of filter rules: "*" (every IPv4 and IPv6 address), a
// single address, a CIDR prefix with no host bits set, or an inclusive range "a-b" within one
// family.
func parseAddrs(s string) ([]famSpan, error) {
	if s == "*" {
		return []famSpan{all4, all6}, nil
	}
	if strings.Contains(s, "/") {
		p, err := netip.ParsePrefix(s)
		if err != nil {
			return nil, err
		}
		if p != p.Masked() {
			return nil, fmt.Errorf("host bits set (want %v)", p.Masked())
		}
		return []famSpan{{spanOfPrefix(p), p.Addr().Is6()}}, nil
	}
	if a, b, ok := strings.Cut(s, "-"); ok {
		lo, err := parseHost(a)
		if err != nil {
			return nil, err
		}
		hi, err := parseHost(b)
		if err != nil {
			return nil, err
		}
		if lo.Is4() != hi.Is4() {
			return nil, fmt.Errorf("range mixes IPv4 and IPv6")
		}
		if hi.Less(lo) {
			return nil, fmt.Errorf("range end before its start")
		}
		return []famSpan{{span{addrFrom(lo), addrFrom(hi)}, lo.Is6()}}, nil
	}
	ip, err := parseHost(s)
	if err != nil {
		return nil, err
	}
	a := addrFrom(ip)
	return []famSpan{{span{a, a}, ip.Is6()}}, nil
}

// parseHost parses one address; zones make no sense in a tailnet-wide rule.
func parseHost(s string) (netip.Addr, error) {
	ip, err := netip.ParseAddr(s)
	if err != nil {
		return netip.Addr{}, fmt.Errorf("not an IP address")
	}
	if ip.Zone() != "" {
		return netip.Addr{}, fmt.Errorf("address has a zone")
	}
	return ip, nil
}
