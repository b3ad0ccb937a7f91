package filter

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/skeinvpn/skein/daemon/wire"
)

// fuzzRuleSets are the rule sets FuzzIn picks from by its second argument.
var fuzzRuleSets = func() []*Rules {
	allowAll := []wire.FilterRule{{SrcIPs: []string{"*"}, DstPorts: []wire.NetPortRange{dst("*", 0, 65535)}}}
	odd := []wire.FilterRule{
		{SrcIPs: []string{"0.0.0.0/0", "::/0"}, DstPorts: []wire.NetPortRange{dst("0.0.0.0-255.255.255.255", 0, 0)}, IPProto: []int{0, 255, 6, 17, 132, 99}},
		{SrcIPs: []string{"::-ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff"}, DstPorts: []wire.NetPortRange{dst("::/0", 0, 65535)}, IPProto: []int{47, 50, 58, 1}},
	}
	return []*Rules{
		nil,
		must(Compile(nil, testLocal)),
		must(Compile(testRules, testLocal)),
		must(Compile(allowAll, pfxs("0.0.0.0/0", "::/0"))),
		must(Compile(odd, pfxs("0.0.0.0/0", "::/0", self4+"/32"))),
	}
}()

// fuzzSeeds are the seed inputs; TestWriteFuzzSeeds stores them under testdata.
func fuzzSeeds() map[string][]byte {
	return map[string][]byte{
		"tcp_syn_v4":          pkt("100.64.0.2", self4, tcpSeg(40000, 22, fSYN)),
		"tcp_syn_v6":          pkt("fd7a:115c:a1e0::2", self6, tcpSeg(40000, 443, fSYN)),
		"tcp_ack_v4":          pkt("100.64.0.7", self4, tcpSeg(22, 40000, fACK)),
		"udp_v4":              pkt("8.8.8.8", self4, udpDgram(53, 5353, 1, 2, 3, 4)),
		"udp_v6":              pkt("2001:4860:4860::8888", self6, udpDgram(53, 6000)),
		"icmp_echo_v4":        pkt("100.64.0.2", self4, icmpMsg(8, 0)),
		"icmp_echo_reply_v6":  pkt("2001:db8::1", self6, icmpMsg(129, 0)),
		"sctp_v4":             pkt("100.64.0.5", self4, sctpPkt(1, 9)),
		"tsmp_v4":             pkt("100.64.0.99", self4, rawL4(protoTSMP, 'p', 1, 2, 3, 4, 5, 6, 7, 8)),
		"gre_v4":              pkt("100.64.0.3", "192.168.1.5", rawL4(47, 0, 0, 8, 0)),
		"frag_later_v4":       frag4("100.64.0.99", self4, rawL4(protoTCP, make([]byte, 16)...), 185, true),
		"frag_first_v6":       pkt("2001:db8::1", self6, tcpSeg(1, 443, fSYN), fragHdr(0, true, 7)),
		"ext_chain_v6":        pkt("2001:db8::1", self6, udpDgram(53, 6000), hopByHop(), routingHdr(), destOpts()),
		"truncated_tcp_v4":    pkt("100.64.0.2", self4, tcpSeg(40000, 22, fSYN))[:30],
		"truncated_header_v6": pkt("fd7a:115c:a1e0::2", self6, tcpSeg(1, 443, fSYN))[:33],
		"empty":               {},
	}
}

func FuzzIn(f *testing.F) {
	// The seeds also live in testdata/fuzz/FuzzIn; adding them here keeps them in sync.
	i := 0
	for _, b := range fuzzSeeds() {
		f.Add(b, uint8(i))
		i++
	}
	f.Fuzz(func(t *testing.T, b []byte, set uint8) {
		// A small table keeps iterations fast; the logic is the same as NewEngine's.
		e := newEngine(64, time.Minute, newClock().now)
		rules := fuzzRuleSets[int(set)%len(fuzzRuleSets)]
		e.SetRules(rules)
		e.SetPeerAPIPorts(40000, 40001)
		e.SetSelfAddrs(pfxs(self4+"/32", self6+"/128"))
		orig := string(b)
		first := e.In(b)
		// Record the packet as outbound, then see its mirror image; neither may panic.
		e.Out(b)
		if e.In(b) != first && !isUDPish(b) {
			t.Fatalf("verdict changed after Out for a non-UDP packet %x", b)
		}
		if string(b) != orig {
			t.Fatal("filter modified the packet")
		}
		st := e.Stats()
		if st.Accepted+st.Dropped != 2 {
			t.Fatalf("counters %+v after two packets", st)
		}
		if rules == nil && st.Accepted != 0 {
			t.Fatalf("engine without rules accepted %x", b)
		}
		// Whatever passed was addressed to a local network and not to a group.
		var p packet
		if first && (parse(b, &p) != ok || checkDst(&p) != ok || !rules.fam(p.V6).local.contains(p.dst)) {
			t.Fatalf("accepted %x: not a packet for a local network", b)
		}
	})
}

func isUDPish(b []byte) bool {
	var p packet
	return parse(b, &p) == ok && (p.Proto == protoUDP || p.Proto == protoSCTP)
}

// TestWriteFuzzSeeds regenerates testdata/fuzz/FuzzIn when SKEIN_WRITE_FUZZ_SEEDS=1.
func TestWriteFuzzSeeds(t *testing.T) {
	if os.Getenv("SKEIN_WRITE_FUZZ_SEEDS") != "1" {
		t.Skip("set SKEIN_WRITE_FUZZ_SEEDS=1 to rewrite the seed corpus")
	}
	dir := filepath.Join("testdata", "fuzz", "FuzzIn")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	sets := map[string]uint8{"tcp_syn_v4": 2, "tcp_syn_v6": 2, "udp_v4": 1, "gre_v4": 2, "ext_chain_v6": 4, "empty": 0}
	for name, b := range fuzzSeeds() {
		set, found := sets[name]
		if !found {
			set = 3
		}
		body := fmt.Sprintf("go test fuzz v1\n[]byte(%q)\nbyte(%q)\n", b, set)
		if err := os.WriteFile(filepath.Join(dir, name), []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
	}
}

// FuzzCompile compiles packet filter rules as control sends them (JSON) and runs packets
// through the result (issue 14, S22): no panic, the same rules always give the same verdicts,
// and a rule set never lets in more than allow-all does.
func FuzzCompile(f *testing.F) {
	f.Add([]byte(`[{"SrcIPs":["*"],"DstPorts":[{"IP":"*","Ports":{"First":0,"Last":65535}}]}]`), fuzzSeeds()["tcp_syn_v4"])
	f.Add([]byte(`[{"SrcIPs":["100.64.0.0/10","fd7a:115c:a1e0::/48","bad","100.64.0.1-100.64.0.9"],"DstPorts":[{"IP":"100.64.0.1/32","Ports":{"First":22,"Last":22}},{"IP":"autogroup:internet","Ports":{"First":1,"Last":0}}],"IPProto":[6,17,-1,300]}]`), fuzzSeeds()["udp_v6"])
	f.Add([]byte(`[{"SrcIPs":["*"],"CapGrant":[{"Dsts":["100.64.0.1/32"],"Caps":["x"]}]}]`), fuzzSeeds()["icmp_echo_v4"])
	f.Fuzz(func(t *testing.T, rulesJSON, pktBytes []byte) {
		var rules []wire.FilterRule
		if json.Unmarshal(rulesJSON, &rules) != nil {
			return
		}
		local := pfxs(self4+"/32", self6+"/128")
		r1, _ := Compile(rules, local)
		r2, _ := Compile(rules, local)
		all, _ := Compile([]wire.FilterRule{{SrcIPs: []string{"*"}, DstPorts: []wire.NetPortRange{dst("*", 0, 65535)}, IPProto: everyProto}}, local)
		verdict := func(r *Rules) bool {
			e := newEngine(64, time.Minute, newClock().now)
			e.SetRules(r)
			return e.In(append([]byte(nil), pktBytes...))
		}
		v1, v2 := verdict(r1), verdict(r2)
		if v1 != v2 {
			t.Fatalf("the same rules gave %v then %v", v1, v2)
		}
		if v1 && !verdict(all) {
			t.Fatalf("rules %s let in a packet allow-all refuses", rulesJSON)
		}
	})
}

var everyProto = func() []int {
	p := make([]int, 256)
	for i := range p {
		p[i] = i
	}
	return p
}()
