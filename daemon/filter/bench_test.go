package filter

import (
	"fmt"
	"testing"

	"github.com/skeinvpn/skein/daemon/wire"
)

// headscaleLike is a rule set shaped like a Headscale policy for a mid-size tailnet: a few
// dozen rules, each from a group of hosts.
func headscaleLike() []wire.FilterRule {
	var rules []wire.FilterRule
	for i := range 30 {
		var srcs []string
		for j := range 20 {
			srcs = append(srcs, fmt.Sprintf("100.64.%d.%d", i, j+2), fmt.Sprintf("fd7a:115c:a1e0::%x:%x", i, j+2))
		}
		rules = append(rules, wire.FilterRule{
			SrcIPs:   srcs,
			DstPorts: []wire.NetPortRange{dst(self4, uint16(1000+i), uint16(1000+i)), dst(self6, uint16(1000+i), uint16(1000+i))},
		})
	}
	return rules
}

func BenchmarkIn(b *testing.B) {
	e := NewEngine()
	e.SetRules(must(Compile(headscaleLike(), testLocal)))
	e.Out(pkt(self4, "8.8.8.8", udpDgram(5353, 53)))
	cases := []struct {
		name string
		pkt  []byte
	}{
		{"tcp_ack_v4", pkt("100.64.29.21", self4, tcpSeg(1029, 40000, fACK))},
		{"tcp_syn_v4_last_rule", pkt("100.64.29.21", self4, tcpSeg(1, 1029, fSYN))},
		{"tcp_syn_v4_denied", pkt("100.64.99.1", self4, tcpSeg(1, 1029, fSYN))},
		{"tcp_syn_v6_last_rule", pkt("fd7a:115c:a1e0::1d:15", self6, tcpSeg(1, 1029, fSYN))},
		{"udp_flow_reply_v4", pkt("8.8.8.8", self4, udpDgram(53, 5353))},
		{"icmp_echo_reply_v4", pkt("8.8.8.8", self4, icmpMsg(0, 0))},
		{"not_for_us_v4", pkt("100.64.0.2", "10.1.1.1", tcpSeg(1, 22, fSYN))},
	}
	for _, c := range cases {
		b.Run(c.name, func(b *testing.B) {
			b.ReportAllocs()
			b.SetBytes(int64(len(c.pkt)))
			for b.Loop() {
				e.In(c.pkt)
			}
		})
	}
}

func BenchmarkOut(b *testing.B) {
	e := NewEngine()
	e.SetRules(must(Compile(nil, testLocal)))
	for _, c := range []struct {
		name string
		pkt  []byte
	}{
		{"udp_v4", pkt(self4, "8.8.8.8", udpDgram(5353, 53))},
		{"udp_v6", pkt(self6, "2001:4860:4860::8888", udpDgram(5353, 53))},
		{"tcp_v4", pkt(self4, "8.8.8.8", tcpSeg(40000, 443, fACK))},
	} {
		b.Run(c.name, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				e.Out(c.pkt)
			}
		})
	}
}

// BenchmarkParallel has every CPU filter UDP replies of distinct flows at once, the case where
// the flow table's locks could contend.
func BenchmarkParallel(b *testing.B) {
	e := NewEngine()
	e.SetRules(must(Compile(nil, testLocal)))
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		out := pkt(self4, "8.8.8.8", udpDgram(5353, 53))
		in := pkt("8.8.8.8", self4, udpDgram(53, 5353))
		i := 0
		for pb.Next() {
			i++
			out[20], out[21] = byte(i>>8), byte(i)
			in[22], in[23] = byte(i>>8), byte(i)
			e.Out(out)
			e.In(in)
		}
	})
}
