package filter

import (
	"testing"

	"github.com/skeinvpn/skein/daemon/wire"
)

// TestJailedPeer (issue 14, S20): a peer control marks jailed (Node.IsJailed) cannot open
// anything here even where a rule lets everyone in, over IPv4 or IPv6, TCP, UDP, ICMP or another
// protocol; replies to what we opened still reach us; unjailed (new rules without it), it may
// open connections again. A peer that is not jailed is not affected meanwhile.
func TestJailedPeer(t *testing.T) {
	all := []wire.FilterRule{{SrcIPs: []string{"*"}, DstPorts: []wire.NetPortRange{{IP: "*", Ports: wire.PortRange{First: 0, Last: 65535}}}, IPProto: []int{6, 17, 1, 58, 132, 47}}}
	free := must(Compile(all, testLocal))
	e := NewEngine()
	e.SetRules(free.Jail(pfxs("100.64.0.66/32", "fd7a:115c:a1e0::66/128", "10.9.0.0/24")))

	const jailed4, jailed6, other4 = "100.64.0.66", "fd7a:115c:a1e0::66", "100.64.0.2"
	opens := map[string][]byte{
		"TCP SYN":            pkt(jailed4, self4, tcpSeg(1000, 22, fSYN)),
		"TCP SYN over IPv6":  pkt(jailed6, self6, tcpSeg(1000, 22, fSYN)),
		"UDP":                pkt(jailed4, self4, udpDgram(1000, 53)),
		"ICMP echo":          pkt(jailed4, self4, icmpMsg(8, 0)),
		"GRE":                pkt(jailed4, self4, rawL4(47, 0, 0, 0, 0)),
		"from its subnet":    pkt("10.9.0.5", "192.168.1.5", tcpSeg(1000, 80, fSYN)),
		"UDP to another LAN": pkt(jailed4, "192.168.1.5", udpDgram(1000, 53)),
	}
	for name, p := range opens {
		if e.In(p) {
			t.Errorf("jailed peer: %s let in", name)
		}
		if q := pkt(other4, self4, tcpSeg(1000, 22, fSYN)); !e.In(q) {
			t.Fatalf("a peer that is not jailed was refused too")
		}
	}
	// What we opened to the jailed peer still answers.
	e.Out(pkt(self4, jailed4, udpDgram(7000, 53)))
	replies := map[string][]byte{
		"UDP reply":        pkt(jailed4, self4, udpDgram(53, 7000)),
		"TCP segment":      pkt(jailed4, self4, tcpSeg(443, 50000, fSYN|fACK)),
		"ICMP echo reply":  pkt(jailed4, self4, icmpMsg(0, 0)),
		"ICMP unreachable": pkt(jailed4, self4, icmpMsg(3, 1)),
	}
	for name, p := range replies {
		if !e.In(p) {
			t.Errorf("jailed peer: %s dropped", name)
		}
	}
	// Unjailed: the rules apply again.
	e.SetRules(free)
	for name, p := range opens {
		if !e.In(p) {
			t.Errorf("after unjailing: %s still refused", name)
		}
	}
}
