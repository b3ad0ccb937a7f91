package filter

import (
	"encoding/json"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/skeinvpn/skein/daemon/wire"
)

const (
	self4 = "100.64.0.1"
	self6 = "fd7a:115c:a1e0::1"
)

func pfxs(ss ...string) []netip.Prefix {
	var out []netip.Prefix
	for _, s := range ss {
		out = append(out, netip.MustParsePrefix(s))
	}
	return out
}

// testLocal is a node with both addresses that also routes 192.168.1.0/24.
var testLocal = pfxs(self4+"/32", self6+"/128", "192.168.1.0/24")

func dst(ip string, first, last uint16) wire.NetPortRange {
	return wire.NetPortRange{IP: ip, Ports: wire.PortRange{First: first, Last: last}}
}

var testRules = []wire.FilterRule{
	// 0: ssh from one host (default protocols: TCP, UDP, ICMP).
	{SrcIPs: []string{"100.64.0.2"}, DstPorts: []wire.NetPortRange{dst(self4, 22, 22)}},
	// 1: web from a range, to any destination.
	{SrcIPs: []string{"100.64.0.10-100.64.0.20"}, DstPorts: []wire.NetPortRange{dst("*", 80, 81)}},
	// 2: IPv6 https from the tailnet ULA.
	{SrcIPs: []string{"fd7a:115c:a1e0::/48"}, DstPorts: []wire.NetPortRange{dst(self6, 443, 443)}},
	// 3: GRE into the routed subnet, all ports.
	{SrcIPs: []string{"100.64.0.3"}, DstPorts: []wire.NetPortRange{dst("192.168.1.0/24", 0, 65535)}, IPProto: []int{47}},
	// 4: DNS over UDP only.
	{SrcIPs: []string{"100.64.0.4"}, DstPorts: []wire.NetPortRange{dst(self4, 53, 53)}, IPProto: []int{17}},
	// 5: SCTP discard port.
	{SrcIPs: []string{"100.64.0.5"}, DstPorts: []wire.NetPortRange{dst(self4, 9, 9)}, IPProto: []int{132}},
	// 6: ESP but not on all ports: never matches a port-less protocol.
	{SrcIPs: []string{"100.64.0.6"}, DstPorts: []wire.NetPortRange{dst(self4, 1, 100)}, IPProto: []int{50}},
}

func newTestEngine(t testing.TB, rules []wire.FilterRule, local []netip.Prefix) *Engine {
	t.Helper()
	r, warns := Compile(rules, local)
	if len(warns) > 0 {
		t.Fatalf("unexpected warnings: %q", warns)
	}
	e := NewEngine()
	e.SetRules(r)
	return e
}

func TestIn(t *testing.T) {
	setup := func() *Engine {
		e := newTestEngine(t, testRules, testLocal)
		e.SetPeerAPIPorts(40000, 40001)
		e.SetSelfAddrs(pfxs(self4+"/32", self6+"/128"))
		// Outbound flows whose replies must pass.
		e.Out(pkt(self4, "8.8.8.8", udpDgram(5353, 53)))
		e.Out(pkt(self6, "2001:4860:4860::8888", udpDgram(6000, 53)))
		e.Out(pkt(self4, "100.64.0.9", rawL4(protoSCTP, make([]byte, 12)...)))
		return e
	}
	e := setup()

	tooShort := pkt("100.64.0.2", self4, tcpSeg(1, 22, fSYN))[:10]
	badIHL := pkt("100.64.0.2", self4, tcpSeg(1, 22, fSYN))
	badIHL[0] = 0x44
	longer := pkt("100.64.0.2", self4, tcpSeg(1, 22, fSYN))
	longer[3] += 10 // total length beyond the buffer
	shortTCP := pkt("100.64.0.2", self4, rawL4(protoTCP, 0, 1, 0, 22, 0, 0, 0, 0, 0, 0, 0, 0, fSYN))
	shortUDP := pkt("100.64.0.4", self4, rawL4(protoUDP, 0, 1, 0, 53))
	shortSCTP := pkt("100.64.0.5", self4, rawL4(protoSCTP, 0, 1, 0, 9, 0, 0, 0, 0))
	shortICMP := pkt("100.64.0.2", self4, rawL4(protoICMPv4, 8, 0))
	v6Long := pkt("fd7a:115c:a1e0::2", self6, tcpSeg(1, 443, fSYN))
	v6Long[5] += 4
	ver5 := pkt("100.64.0.2", self4, tcpSeg(1, 22, fSYN))
	ver5[0] = 0x55
	trailing := append(pkt("100.64.0.2", self4, tcpSeg(1, 22, fSYN)), 0xde, 0xad)
	// A bare ICMP header (4 bytes) is neither echo reply nor error; it needs a rule.
	icmpReply4 := pkt("100.64.0.99", self4, rawL4(protoICMPv4, 0, 0, 0, 0))
	// IPv4 packet carrying ICMPv6 is just an unknown protocol.
	icmp6in4 := pkt("100.64.0.2", self4, rawL4(protoICMPv6, 128, 0, 0, 0, 0, 0, 0, 0))
	longChain := []ext{hopByHop(), destOpts(), destOpts(), destOpts(), destOpts(), destOpts(), destOpts(), destOpts(), destOpts()}
	truncExt := pkt("fd7a:115c:a1e0::2", self6, tcpSeg(1, 443, fSYN), hopByHop())
	truncExt[41] = 50 // header claims 408 bytes
	twoFrags := pkt("fd7a:115c:a1e0::2", self6, tcpSeg(1, 443, fSYN), fragHdr(0, true, 1), fragHdr(0, true, 1))

	tests := []struct {
		name string
		pkt  []byte
		want reason
	}{
		// TCP
		{"tcp syn allowed", pkt("100.64.0.2", self4, tcpSeg(40000, 22, fSYN)), ok},
		{"tcp syn wrong port", pkt("100.64.0.2", self4, tcpSeg(40000, 23, fSYN)), reasonNoRule},
		{"tcp syn wrong source", pkt("100.64.0.7", self4, tcpSeg(40000, 22, fSYN)), reasonNoRule},
		{"tcp syn+ece needs rule", pkt("100.64.0.7", self4, tcpSeg(40000, 22, fSYN|fECE)), reasonNoRule},
		{"tcp syn-ack passes", pkt("100.64.0.7", self4, tcpSeg(22, 40000, fSYN|fACK)), ok},
		{"tcp ack passes", pkt("100.64.0.7", self4, tcpSeg(22, 40000, fACK)), ok},
		{"tcp psh-ack passes", pkt("100.64.0.7", self4, tcpSeg(22, 40000, fPSH|fACK)), ok},
		{"tcp rst passes", pkt("100.64.0.7", self4, tcpSeg(22, 40000, fRST)), ok},
		{"tcp fin passes", pkt("100.64.0.7", self4, tcpSeg(22, 40000, fFIN)), ok},
		{"tcp no flags passes", pkt("100.64.0.7", self4, tcpSeg(22, 40000, 0)), ok},
		{"tcp range source low", pkt("100.64.0.10", self4, tcpSeg(1, 80, fSYN)), ok},
		{"tcp range source high", pkt("100.64.0.20", self4, tcpSeg(1, 81, fSYN)), ok},
		{"tcp range source outside", pkt("100.64.0.21", self4, tcpSeg(1, 80, fSYN)), reasonNoRule},
		{"tcp range port outside", pkt("100.64.0.15", self4, tcpSeg(1, 82, fSYN)), reasonNoRule},
		{"tcp to routed subnet", pkt("100.64.0.15", "192.168.1.5", tcpSeg(1, 80, fSYN)), ok},
		{"tcp to unserved subnet", pkt("100.64.0.15", "192.168.2.5", tcpSeg(1, 80, fSYN)), reasonNotForUs},
		{"tcp ack to unserved subnet", pkt("100.64.0.15", "10.0.0.1", tcpSeg(1, 80, fACK)), reasonNotForUs},
		{"tcp v6 syn allowed", pkt("fd7a:115c:a1e0::2", self6, tcpSeg(1, 443, fSYN)), ok},
		{"tcp v6 syn wrong source", pkt("2001:db8::1", self6, tcpSeg(1, 443, fSYN)), reasonNoRule},
		{"tcp v6 ack", pkt("2001:db8::1", self6, tcpSeg(443, 1, fACK)), ok},
		{"tcp v6 not for us", pkt("fd7a:115c:a1e0::2", "fd7a:115c:a1e0::3", tcpSeg(1, 443, fSYN)), reasonNotForUs},
		{"tcp v4 rule does not cover v6", pkt("fd7a:115c:a1e0::2", self6, tcpSeg(1, 22, fSYN)), reasonNoRule},
		{"tcp trailing bytes ignored", trailing, ok},

		// Peer API
		{"peerapi v4", pkt("100.64.0.99", self4, tcpSeg(1, 40000, fSYN)), ok},
		{"peerapi v6", pkt("2001:db8::1", self6, tcpSeg(1, 40001, fSYN)), ok},
		{"peerapi v4 port on v6", pkt("2001:db8::1", self6, tcpSeg(1, 40000, fSYN)), reasonNoRule},
		{"peerapi port on routed host", pkt("100.64.0.99", "192.168.1.5", tcpSeg(1, 40000, fSYN)), reasonNoRule},
		{"peerapi port over udp", pkt("100.64.0.99", self4, udpDgram(1, 40000)), reasonNoRule},

		// UDP and SCTP
		{"udp rule", pkt("100.64.0.4", self4, udpDgram(1, 53)), ok},
		{"udp default protos", pkt("100.64.0.2", self4, udpDgram(1, 22)), ok},
		{"udp rule wrong port", pkt("100.64.0.4", self4, udpDgram(1, 54)), reasonNoRule},
		{"udp-only rule refuses tcp", pkt("100.64.0.4", self4, tcpSeg(1, 53, fSYN)), reasonNoRule},
		{"udp reply to flow", pkt("8.8.8.8", self4, udpDgram(53, 5353)), ok},
		{"udp reply wrong port", pkt("8.8.8.8", self4, udpDgram(53, 5354)), reasonNoRule},
		{"udp reply wrong source", pkt("8.8.4.4", self4, udpDgram(53, 5353)), reasonNoRule},
		{"udp reply wrong source port", pkt("8.8.8.8", self4, udpDgram(54, 5353)), reasonNoRule},
		{"udp v6 reply to flow", pkt("2001:4860:4860::8888", self6, udpDgram(53, 6000)), ok},
		{"udp v6 unsolicited", pkt("2001:4860:4860::8888", self6, udpDgram(53, 6001)), reasonNoRule},
		{"sctp rule", pkt("100.64.0.5", self4, sctpPkt(1, 9)), ok},
		{"sctp rule wrong port", pkt("100.64.0.5", self4, sctpPkt(1, 10)), reasonNoRule},
		{"sctp not in default protos", pkt("100.64.0.2", self4, sctpPkt(1, 22)), reasonNoRule},
		{"sctp reply to flow", pkt("100.64.0.9", self4, sctpPkt(0, 0)), ok},
		{"tcp is not a udp flow", pkt("8.8.8.8", self4, tcpSeg(53, 5353, fSYN)), reasonNoRule},

		// ICMP
		{"icmp echo request allowed pair", pkt("100.64.0.2", self4, icmpMsg(8, 0)), ok},
		{"icmp echo request via udp-only rule", pkt("100.64.0.4", self4, icmpMsg(8, 0)), ok},
		{"icmp echo request to routed subnet", pkt("100.64.0.3", "192.168.1.7", icmpMsg(8, 0)), ok},
		{"icmp echo request no rule", pkt("100.64.0.99", self4, icmpMsg(8, 0)), reasonNoRule},
		{"icmp echo reply", pkt("100.64.0.99", self4, icmpMsg(0, 0)), ok},
		{"icmp echo reply odd code", pkt("100.64.0.99", self4, icmpMsg(0, 1)), reasonNoRule},
		{"icmp unreachable", pkt("100.64.0.99", self4, icmpMsg(3, 3)), ok},
		{"icmp time exceeded", pkt("100.64.0.99", self4, icmpMsg(11, 0)), ok},
		{"icmp parameter problem", pkt("100.64.0.99", self4, icmpMsg(12, 0)), ok},
		{"icmp redirect", pkt("100.64.0.99", self4, icmpMsg(5, 0)), reasonNoRule},
		{"icmp bare header reply", icmpReply4, reasonNoRule},
		{"icmp reply not for us", pkt("100.64.0.99", "100.64.0.50", icmpMsg(0, 0)), reasonNotForUs},
		{"icmpv6 echo request", pkt("fd7a:115c:a1e0::2", self6, icmpMsg(128, 0)), ok},
		{"icmpv6 echo request no rule", pkt("2001:db8::1", self6, icmpMsg(128, 0)), reasonNoRule},
		{"icmpv6 echo reply", pkt("2001:db8::1", self6, icmpMsg(129, 0)), ok},
		{"icmpv6 unreachable", pkt("2001:db8::1", self6, icmpMsg(1, 4)), ok},
		{"icmpv6 packet too big", pkt("2001:db8::1", self6, icmpMsg(2, 0)), ok},
		{"icmpv6 time exceeded", pkt("2001:db8::1", self6, icmpMsg(3, 0)), ok},
		{"icmpv6 parameter problem", pkt("2001:db8::1", self6, icmpMsg(4, 0)), ok},
		{"icmpv6 neighbor solicitation to self", pkt("2001:db8::1", self6, icmpMsg(135, 0)), reasonNoRule},
		{"icmpv6 in ipv4", icmp6in4, reasonUnknownProto},

		// TSMP and other protocols
		{"tsmp", pkt("100.64.0.99", self4, rawL4(protoTSMP, 'p', 1, 2, 3, 4, 5, 6, 7, 8)), ok},
		{"tsmp v6", pkt("2001:db8::1", self6, rawL4(protoTSMP, 'o', 1, 2, 3, 4, 5, 6, 7, 8, 0, 0)), ok},
		{"tsmp too short", pkt("100.64.0.99", self4, rawL4(protoTSMP, 'p')), reasonMalformed},
		{"tsmp not for us", pkt("100.64.0.99", "100.64.0.50", rawL4(protoTSMP, 'p', 1, 2, 3, 4, 5, 6, 7, 8)), reasonNotForUs},
		{"gre allowed", pkt("100.64.0.3", "192.168.1.5", rawL4(47, 0, 0, 0x08, 0)), ok},
		{"gre outside rule dst", pkt("100.64.0.3", self4, rawL4(47, 0, 0, 0x08, 0)), reasonUnknownProto},
		{"gre wrong source", pkt("100.64.0.2", "192.168.1.5", rawL4(47, 0, 0, 0x08, 0)), reasonUnknownProto},
		{"esp rule without all ports", pkt("100.64.0.6", self4, rawL4(50, 1, 2, 3, 4, 5, 6, 7, 8)), reasonUnknownProto},
		{"igmp", pkt("100.64.0.2", self4, rawL4(2, 0x11, 0, 0, 0, 0, 0, 0, 0)), reasonUnknownProto},

		// Destinations that are always dropped
		{"multicast v4", pkt("100.64.0.2", "224.0.0.251", udpDgram(5353, 5353)), reasonMulticast},
		{"multicast v4 high", pkt("100.64.0.2", "239.255.255.250", udpDgram(1900, 1900)), reasonMulticast},
		{"multicast v6", pkt("fd7a:115c:a1e0::2", "ff02::fb", udpDgram(5353, 5353)), reasonMulticast},
		{"link-local v4", pkt("100.64.0.2", "169.254.1.1", tcpSeg(1, 22, fACK)), reasonLinkLocal},
		{"link-local v6", pkt("fd7a:115c:a1e0::2", "fe80::1", icmpMsg(129, 0)), reasonLinkLocal},
		{"link-local v6 febf", pkt("fd7a:115c:a1e0::2", "febf::1", icmpMsg(129, 0)), reasonLinkLocal},
		{"metadata address is not link-local", pkt("100.64.0.2", "169.254.169.254", tcpSeg(1, 80, fACK)), reasonNotForUs},
		{"loopback v4", pkt("100.64.0.2", "127.0.0.1", tcpSeg(1, 22, fACK)), reasonMartian},
		{"loopback v6", pkt("fd7a:115c:a1e0::2", "::1", tcpSeg(1, 22, fACK)), reasonMartian},
		{"unspecified v4", pkt("100.64.0.2", "0.0.0.0", tcpSeg(1, 22, fACK)), reasonMartian},
		{"broadcast v4", pkt("100.64.0.2", "255.255.255.255", udpDgram(68, 67)), reasonMartian},

		// Malformed input
		{"empty", nil, reasonTooShort},
		{"too short v4", tooShort, reasonTooShort},
		{"too short v6", pkt("fd7a:115c:a1e0::2", self6, tcpSeg(1, 443, fSYN))[:39], reasonTooShort},
		{"not ip", []byte{0x00, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18, 19}, reasonMalformed},
		{"not ip short", []byte{0x00, 1, 2}, reasonTooShort},
		{"version 5", ver5, reasonMalformed},
		{"ihl below 5", badIHL, reasonMalformed},
		{"v4 total length beyond buffer", longer, reasonMalformed},
		{"v6 payload length beyond buffer", v6Long, reasonMalformed},
		{"truncated tcp", shortTCP, reasonMalformed},
		{"truncated udp", shortUDP, reasonMalformed},
		{"truncated sctp", shortSCTP, reasonMalformed},
		{"truncated icmp", shortICMP, reasonMalformed},

		// Fragments
		{"v4 later fragment", frag4("100.64.0.99", self4, rawL4(protoTCP, make([]byte, 64)...), 185, true), ok},
		{"v4 last fragment", frag4("100.64.0.99", self4, rawL4(protoUDP, make([]byte, 64)...), 185, false), ok},
		{"v4 later fragment not for us", frag4("100.64.0.99", "100.64.0.50", rawL4(protoTCP, make([]byte, 64)...), 185, true), reasonNotForUs},
		{"v4 later fragment multicast", frag4("100.64.0.99", "224.1.1.1", rawL4(protoUDP, make([]byte, 64)...), 185, true), reasonMulticast},
		{"v4 tiny fragment offset", frag4("100.64.0.99", self4, rawL4(protoTCP, make([]byte, 64)...), 1, true), reasonMalformed},
		{"v4 first fragment syn no rule", frag4("100.64.0.99", self4, tcpSeg(1, 22, fSYN), 0, true), reasonNoRule},
		{"v4 first fragment syn allowed", frag4("100.64.0.2", self4, tcpSeg(1, 22, fSYN), 0, true), ok},
		{"v4 fragmented tsmp", frag4("100.64.0.99", self4, rawL4(protoTSMP, 'p', 1, 2, 3, 4, 5, 6, 7, 8), 0, true), reasonMalformed},
		{"v6 later fragment", pkt("2001:db8::1", self6, rawL4(protoTCP, make([]byte, 64)...), fragHdr(185, true, 7)), ok},
		{"v6 later fragment not for us", pkt("2001:db8::1", "2001:db8::2", rawL4(protoTCP, make([]byte, 64)...), fragHdr(185, true, 7)), reasonNotForUs},
		{"v6 tiny fragment offset", pkt("2001:db8::1", self6, rawL4(protoTCP, make([]byte, 64)...), fragHdr(2, true, 7)), reasonMalformed},
		{"v6 first fragment syn no rule", pkt("2001:db8::1", self6, tcpSeg(1, 443, fSYN), fragHdr(0, true, 7)), reasonNoRule},
		{"v6 first fragment syn allowed", pkt("fd7a:115c:a1e0::2", self6, tcpSeg(1, 443, fSYN), fragHdr(0, true, 7)), ok},
		{"v6 atomic fragment udp reply", pkt("2001:4860:4860::8888", self6, udpDgram(53, 6000), fragHdr(0, false, 7)), ok},
		{"v6 two fragment headers", twoFrags, reasonMalformed},

		// IPv6 extension headers
		{"v6 hop-by-hop syn allowed", pkt("fd7a:115c:a1e0::2", self6, tcpSeg(1, 443, fSYN), hopByHop()), ok},
		{"v6 hop-by-hop syn no rule", pkt("2001:db8::1", self6, tcpSeg(1, 443, fSYN), hopByHop()), reasonNoRule},
		{"v6 ext chain syn no rule", pkt("2001:db8::1", self6, tcpSeg(1, 443, fSYN), hopByHop(), destOpts(), routingHdr(), fragHdr(0, true, 1), destOpts()), reasonNoRule},
		{"v6 ext chain udp reply", pkt("2001:4860:4860::8888", self6, udpDgram(53, 6000), hopByHop(), routingHdr(), destOpts()), ok},
		{"v6 auth header", pkt("fd7a:115c:a1e0::2", self6, tcpSeg(1, 443, fSYN), ext{extAuth, make([]byte, 11)}), ok},
		{"v6 ext chain too long", pkt("fd7a:115c:a1e0::2", self6, tcpSeg(1, 443, fSYN), longChain...), reasonMalformed},
		{"v6 truncated ext header", truncExt, reasonMalformed},
		{"v6 no next header", pkt("2001:db8::1", self6, rawL4(59)), reasonUnknownProto},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := e.verdict(tt.pkt); got != tt.want {
				t.Errorf("verdict = %q, want %q", got, tt.want)
			}
		})
	}

	// In agrees with verdict and counts per reason.
	e2 := setup()
	want := map[string]uint64{}
	var acc uint64
	for _, tt := range tests {
		if got := e2.In(tt.pkt); got != (tt.want == ok) {
			t.Errorf("%s: In = %v", tt.name, got)
		}
		if tt.want == ok {
			acc++
		} else {
			want[tt.want.String()]++
		}
	}
	st := e2.Stats()
	if st.Accepted != acc || st.Rules != len(testRules) {
		t.Errorf("stats %+v, want accepted %d rules %d", st, acc, len(testRules))
	}
	var total uint64
	for k, v := range want {
		total += v
		if st.DroppedBy[k] != v {
			t.Errorf("DroppedBy[%q] = %d, want %d", k, st.DroppedBy[k], v)
		}
	}
	if st.Dropped != total || len(st.DroppedBy) != len(want) {
		t.Errorf("Dropped = %d (%v), want %d (%v)", st.Dropped, st.DroppedBy, total, want)
	}
}

func TestNoRules(t *testing.T) {
	e := NewEngine()
	for _, p := range [][]byte{
		pkt("100.64.0.2", self4, tcpSeg(1, 22, fSYN)),
		pkt("100.64.0.2", self4, tcpSeg(1, 22, fACK)),
		pkt("100.64.0.2", self4, icmpMsg(0, 0)),
		pkt("100.64.0.2", self4, rawL4(protoTSMP, 'p', 1, 2, 3, 4, 5, 6, 7, 8)),
	} {
		if e.In(p) {
			t.Errorf("engine without rules accepted %x", p)
		}
	}
	if st := e.Stats(); st.Dropped != 4 || st.DroppedBy["no rule"] != 4 || st.Rules != 0 {
		t.Errorf("stats %+v", st)
	}
	// SetRules(nil) goes back to that state.
	e.SetRules(must(Compile(testRules, testLocal)))
	if !e.In(pkt("100.64.0.2", self4, tcpSeg(1, 22, fSYN))) {
		t.Fatal("rules not applied")
	}
	e.SetRules(nil)
	if e.In(pkt("100.64.0.2", self4, tcpSeg(1, 22, fSYN))) {
		t.Fatal("SetRules(nil) still accepts")
	}
}

func must(r *Rules, warns []string) *Rules {
	if len(warns) > 0 {
		panic(strings.Join(warns, "; "))
	}
	return r
}

// An empty rule list is the official empty filter: established traffic and replies pass,
// nothing new does.
func TestEmptyFilter(t *testing.T) {
	e := newTestEngine(t, nil, testLocal)
	e.Out(pkt(self4, "1.1.1.1", udpDgram(4000, 443)))
	tests := []struct {
		name string
		pkt  []byte
		want bool
	}{
		{"syn", pkt("100.64.0.2", self4, tcpSeg(1, 22, fSYN)), false},
		{"ack", pkt("100.64.0.2", self4, tcpSeg(1, 22, fACK)), true},
		{"udp", pkt("100.64.0.2", self4, udpDgram(1, 53)), false},
		{"udp reply", pkt("1.1.1.1", self4, udpDgram(443, 4000)), true},
		{"echo request", pkt("100.64.0.2", self4, icmpMsg(8, 0)), false},
		{"echo reply", pkt("100.64.0.2", self4, icmpMsg(0, 0)), true},
		{"tsmp", pkt("100.64.0.2", self4, rawL4(protoTSMP, 'p', 1, 2, 3, 4, 5, 6, 7, 8)), true},
	}
	for _, tt := range tests {
		if got := e.In(tt.pkt); got != tt.want {
			t.Errorf("%s: In = %v, want %v", tt.name, got, tt.want)
		}
	}
	if n := e.Stats().Rules; n != 0 {
		t.Errorf("Rules = %d", n)
	}
}

// Headscale without an ACL policy sends allow-all; an exit node accepts everything routed.
func TestAllowAllExitNode(t *testing.T) {
	allowAll := []wire.FilterRule{{SrcIPs: []string{"*"}, DstPorts: []wire.NetPortRange{dst("*", 0, 65535)}}}
	e := newTestEngine(t, allowAll, pfxs(self4+"/32", self6+"/128", "0.0.0.0/0", "::/0"))
	tests := []struct {
		name string
		pkt  []byte
		want reason
	}{
		{"syn to internet", pkt("100.64.0.2", "93.184.216.34", tcpSeg(1, 443, fSYN)), ok},
		{"v6 syn to internet", pkt("fd7a:115c:a1e0::2", "2606:2800:220:1::1", tcpSeg(1, 443, fSYN)), ok},
		{"udp to internet", pkt("100.64.0.2", "1.1.1.1", udpDgram(1, 53)), ok},
		{"metadata address", pkt("100.64.0.2", "169.254.169.254", tcpSeg(1, 80, fSYN)), ok},
		{"other link-local", pkt("100.64.0.2", "169.254.1.1", tcpSeg(1, 80, fSYN)), reasonLinkLocal},
		{"multicast", pkt("100.64.0.2", "224.0.0.1", icmpMsg(8, 0)), reasonMulticast},
		{"loopback", pkt("100.64.0.2", "127.0.0.53", udpDgram(1, 53)), reasonMartian},
		{"gre needs an explicit rule", pkt("100.64.0.2", "1.1.1.1", rawL4(47, 0, 0, 8, 0)), reasonUnknownProto},
	}
	for _, tt := range tests {
		if got := e.verdict(tt.pkt); got != tt.want {
			t.Errorf("%s: verdict = %q, want %q", tt.name, got, tt.want)
		}
	}
}

func TestCompileWarnings(t *testing.T) {
	rules := []wire.FilterRule{
		{ // 0: every source bad: rule is dropped
			SrcIPs:   []string{"10.0.0.1/8", "1.2.3.4-1.2.3.1", "bogus", "cap:funnel", "1.2.3.4-::1", "fe80::1%eth0"},
			DstPorts: []wire.NetPortRange{dst("*", 0, 65535)},
		},
		{ // 1: bad destinations and protocols; the good parts stay
			SrcIPs:   []string{"100.64.0.2", "10.0.0.0/8"},
			DstPorts: []wire.NetPortRange{dst("cap:x", 0, 1), dst("300.1.1.1", 1, 2), dst(self4, 10, 5), dst(self4, 22, 22)},
			IPProto:  []int{6, 300, -1},
		},
		{ // 2: capability grant only: no packet matching
			SrcIPs:   []string{"100.64.0.2"},
			CapGrant: []json.RawMessage{json.RawMessage(`{"Dsts":["100.64.0.1/32"],"CapMap":{"x":[]}}`)},
		},
	}
	r, warns := Compile(rules, append(pfxs(self4+"/32"), netip.Prefix{}))
	wantSubs := []string{
		`rule 0: source "10.0.0.1/8": host bits set`,
		`rule 0: source "1.2.3.4-1.2.3.1": range end before its start`,
		`rule 0: source "bogus": not an IP address`,
		`rule 0: source capability "funnel"`,
		`rule 0: source "1.2.3.4-::1": range mixes IPv4 and IPv6`,
		`rule 0: source "fe80::1%eth0": address has a zone`,
		`rule 1: IPProto 300`,
		`rule 1: IPProto -1`,
		`rule 1: destination "cap:x"`,
		`rule 1: destination "300.1.1.1"`,
		`rule 1: destination "100.64.0.1": empty port range 10-5`,
		`rule 2: capability grants are not supported`,
		`local network invalid Prefix`,
	}
	if len(warns) != len(wantSubs) {
		t.Errorf("got %d warnings, want %d:\n%s", len(warns), len(wantSubs), strings.Join(warns, "\n"))
	}
	for _, w := range wantSubs {
		if !slices.ContainsFunc(warns, func(s string) bool { return strings.Contains(s, w) }) {
			t.Errorf("no warning containing %q in:\n%s", w, strings.Join(warns, "\n"))
		}
	}
	if r.Len() != 1 {
		t.Errorf("Len = %d, want 1", r.Len())
	}
	e := NewEngine()
	e.SetRules(r)
	if !e.In(pkt("100.64.0.2", self4, tcpSeg(1, 22, fSYN))) || !e.In(pkt("10.1.2.3", self4, tcpSeg(1, 22, fSYN))) {
		t.Error("good parts of rule 1 dropped")
	}
	if e.In(pkt("100.64.0.2", self4, udpDgram(1, 22))) {
		t.Error("rule 1 allows UDP although IPProto lists only TCP")
	}
	if e.In(pkt("100.64.0.3", self4, tcpSeg(1, 22, fSYN))) {
		t.Error("rule 0 with only bad sources matches")
	}
}

func TestCompileSyntax(t *testing.T) {
	tests := []struct {
		src     string
		in, out []string
	}{
		{"*", []string{"0.0.0.0", "255.255.255.255", "::", "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff"}, nil},
		{"100.64.0.0/10", []string{"100.64.0.0", "100.127.255.255"}, []string{"100.63.255.255", "100.128.0.0", "::"}},
		{"0.0.0.0/0", []string{"0.0.0.0", "255.255.255.255"}, []string{"::1"}},
		{"::/0", []string{"::", "ffff::1"}, []string{"1.2.3.4"}},
		{"fd7a:115c:a1e0::/48", []string{"fd7a:115c:a1e0::", "fd7a:115c:a1e0:ffff:ffff:ffff:ffff:ffff"}, []string{"fd7a:115c:a1e1::", "fd7a:115c:a1df:ffff:ffff:ffff:ffff:ffff"}},
		{"2001:db8::/64", []string{"2001:db8::5", "2001:db8::ffff:ffff:ffff:ffff"}, []string{"2001:db8:0:1::"}},
		{"2001:db8::/96", []string{"2001:db8::ffff:ffff"}, []string{"2001:db8::1:0:0"}},
		{"2001:db8::/128", []string{"2001:db8::"}, []string{"2001:db8::1"}},
		{"10.0.0.1", []string{"10.0.0.1"}, []string{"10.0.0.0", "10.0.0.2", "::ffff:10.0.0.1"}},
		{"10.0.0.250-10.0.1.5", []string{"10.0.0.250", "10.0.0.255", "10.0.1.0", "10.0.1.5"}, []string{"10.0.0.249", "10.0.1.6"}},
		{"2001:db8::ffff:ffff:ffff:fffe-2001:db8:0:1::1", []string{"2001:db8::ffff:ffff:ffff:ffff", "2001:db8:0:1::"}, []string{"2001:db8:0:1::2"}},
	}
	for _, tt := range tests {
		sp, err := parseAddrs(tt.src)
		if err != nil {
			t.Fatalf("%s: %v", tt.src, err)
		}
		var s4, s6 []span
		s4, s6 = splitFamilies(sp, s4, s6)
		set4, set6 := makeSet(s4), makeSet(s6)
		has := func(a string) bool {
			ip := netip.MustParseAddr(a)
			if ip.Is4() {
				return set4.contains(addrFrom(ip))
			}
			return set6.contains(addrFrom(ip))
		}
		for _, a := range tt.in {
			if !has(a) {
				t.Errorf("%s does not contain %s", tt.src, a)
			}
		}
		for _, a := range tt.out {
			if has(a) {
				t.Errorf("%s contains %s", tt.src, a)
			}
		}
	}
}

func TestAddrSetMerge(t *testing.T) {
	sp := func(lo, hi uint64) span { return span{addr{lo: lo}, addr{lo: hi}} }
	s := makeSet([]span{sp(10, 20), sp(30, 40), sp(21, 25), sp(5, 12), sp(100, 100), sp(35, 50)})
	want := addrSet{sp(5, 25), sp(30, 50), sp(100, 100)}
	if !slices.Equal(s, want) {
		t.Fatalf("makeSet = %v, want %v", s, want)
	}
	for x := uint64(0); x < 120; x++ {
		in := (x >= 5 && x <= 25) || (x >= 30 && x <= 50) || x == 100
		if s.contains(addr{lo: x}) != in {
			t.Errorf("contains(%d) = %v", x, !in)
		}
	}
	all := makeSet([]span{all6.span, {addr{1, 0}, addr{2, 0}}})
	if len(all) != 1 || !all.contains(addr{^uint64(0), ^uint64(0)}) {
		t.Errorf("full range merge: %v", all)
	}
}

// SetRules swaps rules without forgetting flows.
func TestSetRulesKeepsFlows(t *testing.T) {
	e := newTestEngine(t, testRules, testLocal)
	e.Out(pkt(self4, "9.9.9.9", udpDgram(7000, 53)))
	e.Out(pkt(self6, "2620:fe::fe", udpDgram(7001, 53)))
	reply4 := pkt("9.9.9.9", self4, udpDgram(53, 7000))
	reply6 := pkt("2620:fe::fe", self6, udpDgram(53, 7001))
	ssh := pkt("100.64.0.2", self4, tcpSeg(1, 22, fSYN))
	if !e.In(reply4) || !e.In(reply6) || !e.In(ssh) {
		t.Fatal("before swap")
	}
	e.SetRules(must(Compile([]wire.FilterRule{{SrcIPs: []string{"100.64.0.9"}, DstPorts: []wire.NetPortRange{dst(self4, 1, 1)}}}, testLocal)))
	if !e.In(reply4) || !e.In(reply6) {
		t.Error("flows lost by SetRules")
	}
	if e.In(ssh) {
		t.Error("old rule still applies")
	}
	if e.Stats().Rules != 1 {
		t.Error("Rules not updated")
	}
}

type fakeClock struct{ t atomic.Int64 }

func (c *fakeClock) now() int64              { return c.t.Load() }
func (c *fakeClock) advance(d time.Duration) { c.t.Add(int64(d)) }

func newClock() *fakeClock {
	c := &fakeClock{}
	c.t.Store(1)
	return c
}

func TestFlowExpiry(t *testing.T) {
	c := newClock()
	e := newEngine(DefaultFlows, 2*time.Minute, c.now)
	e.SetRules(must(Compile(nil, testLocal)))
	out := pkt(self4, "8.8.8.8", udpDgram(5000, 53))
	reply := pkt("8.8.8.8", self4, udpDgram(53, 5000))
	e.Out(out)
	c.advance(119 * time.Second)
	if !e.In(reply) {
		t.Fatal("flow forgotten before its TTL")
	}
	// The reply refreshed it.
	c.advance(119 * time.Second)
	if !e.In(reply) {
		t.Fatal("reply did not refresh the flow")
	}
	c.advance(121 * time.Second)
	if e.In(reply) {
		t.Fatal("idle flow not forgotten")
	}
	if n := e.Stats().Flows; n != 0 {
		t.Errorf("Flows = %d after expiry", n)
	}
	// Outbound traffic brings it back.
	e.Out(out)
	if !e.In(reply) || e.Stats().Flows != 1 {
		t.Fatal("flow not re-recorded")
	}
}

func TestFlowTableBounded(t *testing.T) {
	c := newClock()
	e := newEngine(DefaultFlows, time.Hour, c.now)
	e.SetRules(must(Compile(nil, pfxs(self4+"/32"))))
	entries := len(e.flows.entries)
	if entries != DefaultFlows {
		t.Fatalf("table has %d slots, want %d", entries, DefaultFlows)
	}
	const n = 200000
	b := pkt(self4, "1.0.0.0", udpDgram(1, 53))
	for i := range n {
		c.advance(time.Microsecond)
		b[16], b[17], b[18], b[19] = 1, byte(i>>16), byte(i>>8), byte(i)
		e.Out(b)
	}
	if len(e.flows.entries) != entries {
		t.Fatal("flow table grew")
	}
	if live := e.Stats().Flows; live > DefaultFlows || live < DefaultFlows*9/10 {
		t.Errorf("live flows = %d, want close to %d", live, DefaultFlows)
	}
	// The most recent flows are kept, the oldest are gone.
	reply := pkt("1.0.0.0", self4, udpDgram(53, 1))
	recent, old := 0, 0
	for i := range 500 {
		j := n - 1 - i
		reply[12], reply[13], reply[14], reply[15] = 1, byte(j>>16), byte(j>>8), byte(j)
		if e.verdict(reply) == ok {
			recent++
		}
		reply[12], reply[13], reply[14], reply[15] = 1, byte(i>>16), byte(i>>8), byte(i)
		if e.verdict(reply) == ok {
			old++
		}
	}
	if recent != 500 || old != 0 {
		t.Errorf("recent flows kept %d/500, oldest kept %d/500", recent, old)
	}
}

// Within a set, the least recently used flow goes first and expired ones before live ones.
func TestFlowLRU(t *testing.T) {
	c := newClock()
	ft := newFlowTable(flowWays, time.Minute, 42, c.now)
	if len(ft.entries) != flowWays {
		t.Fatalf("%d slots", len(ft.entries))
	}
	key := func(i int) *flowKey {
		return &flowKey{src: addr{lo: uint64(i)}, dst: addr{lo: 1}, sport: 53, dport: 1000, proto: protoUDP}
	}
	for i := range flowWays {
		c.advance(time.Second)
		ft.add(key(i))
	}
	c.advance(time.Second)
	if !ft.hit(key(0)) { // 0 is now the most recent
		t.Fatal("flow 0 missing")
	}
	c.advance(time.Second)
	ft.add(key(100)) // evicts 1
	if ft.hit(key(1)) || !ft.hit(key(0)) || !ft.hit(key(100)) {
		t.Fatal("wrong flow evicted")
	}
	for i := 2; i < flowWays; i++ {
		if !ft.hit(key(i)) {
			t.Fatalf("flow %d missing", i)
		}
	}
	if ft.live() != flowWays {
		t.Fatalf("live = %d", ft.live())
	}
	c.advance(2 * time.Minute)
	if ft.live() != 0 {
		t.Fatalf("live = %d after TTL", ft.live())
	}
	ft.add(key(200))
	if !ft.hit(key(200)) || ft.live() != 1 {
		t.Fatal("expired slots not reused")
	}
}

func TestOutIgnores(t *testing.T) {
	e := newTestEngine(t, nil, testLocal)
	for _, p := range [][]byte{
		nil,
		{0x45},
		pkt(self4, "8.8.8.8", tcpSeg(1, 53, fSYN)),
		pkt(self4, "224.0.0.251", udpDgram(5353, 5353)),
		pkt(self4, "8.8.8.8", rawL4(protoUDP, 0, 1, 0, 53)),
		pkt(self4, "8.8.8.8", icmpMsg(8, 0)),
		frag4(self4, "8.8.8.8", rawL4(protoUDP, make([]byte, 64)...), 185, false),
	} {
		e.Out(p)
	}
	if n := e.Stats().Flows; n != 0 {
		t.Errorf("Flows = %d", n)
	}
	// The exact reply to a TCP packet is not a UDP flow.
	if e.In(pkt("8.8.8.8", self4, udpDgram(53, 1))) {
		t.Error("TCP recorded as a UDP flow")
	}
}

func TestPeerAPINeedsSelfAddrs(t *testing.T) {
	e := newTestEngine(t, nil, testLocal)
	syn := pkt("100.64.0.99", self4, tcpSeg(1, 40000, fSYN))
	e.SetPeerAPIPorts(40000, 0)
	if e.In(syn) {
		t.Fatal("bypass without self addresses")
	}
	e.SetSelfAddrs(pfxs(self4 + "/32"))
	if !e.In(syn) {
		t.Fatal("no bypass")
	}
	e.SetPeerAPIPorts(0, 0)
	if e.In(syn) {
		t.Fatal("bypass after disabling")
	}
}

func TestAllocs(t *testing.T) {
	e := newTestEngine(t, testRules, testLocal)
	out := pkt(self4, "8.8.8.8", udpDgram(5353, 53))
	pkts := [][]byte{
		pkt("100.64.0.2", self4, tcpSeg(1, 22, fSYN)),
		pkt("100.64.0.7", self4, tcpSeg(1, 22, fACK)),
		pkt("8.8.8.8", self4, udpDgram(53, 5353)),
		pkt("8.8.8.8", self4, udpDgram(53, 5354)),
		pkt("fd7a:115c:a1e0::2", self6, tcpSeg(1, 443, fSYN), hopByHop()),
		pkt("100.64.0.99", self4, icmpMsg(8, 0)),
		{1, 2, 3},
	}
	if n := testing.AllocsPerRun(1000, func() { e.Out(out) }); n != 0 {
		t.Errorf("Out allocates %v times", n)
	}
	for _, p := range pkts {
		if n := testing.AllocsPerRun(1000, func() { e.In(p) }); n != 0 {
			t.Errorf("In(%x) allocates %v times", p, n)
		}
	}
}

func TestConcurrent(t *testing.T) {
	e := newTestEngine(t, testRules, testLocal)
	var wg sync.WaitGroup
	stop := make(chan struct{})
	for g := range 4 {
		wg.Add(2)
		go func() {
			defer wg.Done()
			b := pkt(self4, "8.8.8.8", udpDgram(5000, 53))
			for i := 0; ; i++ {
				select {
				case <-stop:
					return
				default:
				}
				b[22], b[23] = byte(g), byte(i)
				e.Out(b)
			}
		}()
		go func() {
			defer wg.Done()
			b := pkt("8.8.8.8", self4, udpDgram(53, 5000))
			syn := pkt("100.64.0.2", self4, tcpSeg(1, 22, fSYN))
			for i := 0; ; i++ {
				select {
				case <-stop:
					return
				default:
				}
				b[20], b[21] = byte(g), byte(i)
				e.In(b)
				if !e.In(syn) {
					t.Error("allowed SYN dropped during updates")
					return
				}
			}
		}()
	}
	for i := range 200 {
		r := must(Compile(testRules, testLocal))
		e.SetRules(r)
		e.SetPeerAPIPorts(uint16(i), uint16(i))
		e.SetSelfAddrs(pfxs(self4 + "/32"))
		_ = e.Stats()
	}
	close(stop)
	wg.Wait()
	st := e.Stats()
	if st.Accepted == 0 {
		t.Errorf("stats %+v", st)
	}
}

func TestPortSet(t *testing.T) {
	ranges := [][2]uint16{{0, 0}, {5, 5}, {60, 70}, {127, 128}, {1000, 1100}, {65535, 65535}, {65000, 65535}}
	for _, r := range ranges {
		var p portSet
		p.addRange(r[0], r[1])
		for port := 0; port < 65536; port++ {
			want := port >= int(r[0]) && port <= int(r[1])
			if p.has(uint16(port)) != want {
				t.Fatalf("range %v: has(%d) = %v", r, port, !want)
			}
		}
	}
	var all portSet
	all.addRange(0, 65535)
	for _, w := range all {
		if w != ^uint64(0) {
			t.Fatal("full range not set")
		}
	}
}
