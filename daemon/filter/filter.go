// Package filter enforces the control server's packet filter (the tailnet ACLs) on packets that
// arrive from peers, with the official client's semantics (protocol.md 4.8):
//
//   - The destination must be one of the node's local networks (its addresses, and the routes
//     it serves as subnet router or exit node). Multicast, link-local (except 169.254.169.254),
//     loopback, unspecified and broadcast destinations are always dropped.
//   - TCP: only a bare SYN (SYN without ACK) opens a connection and needs a rule; every other
//     segment belongs to a connection and passes.
//   - UDP and SCTP: replies to a flow this node sent recently pass; anything else needs a rule.
//   - ICMP: echo replies and errors pass; other ICMP passes if any rule lets the source reach
//     the destination address.
//   - TSMP (IP protocol 99) passes.
//   - Any other protocol needs a rule naming it with all ports.
//   - Fragments after the first carry no transport header and pass once their destination is
//     checked: the kernel cannot reassemble them without the first fragment, which was judged.
//
// Outbound packets are never dropped; UDP and SCTP ones are recorded so their replies pass.
//
// Rules are compiled once per netmap (Compile) and swapped atomically (Engine.SetRules); the
// per-packet path takes no lock on the rules and does not allocate.
package filter

import (
	"encoding/binary"
	"math/rand/v2"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"
)

const (
	tcpSYN = 0x02
	tcpACK = 0x10
)

// Engine filters one TUN device's traffic. It holds the current rules and the UDP flow state.
// All methods are safe for concurrent use.
type Engine struct {
	rules   atomic.Pointer[Rules]
	peerAPI atomic.Pointer[peerAPIConf]
	mu      sync.Mutex // serializes updates of peerAPI
	flows   *flowTable

	accepted atomic.Uint64
	_        [56]byte // keep the hot accept counter on its own cache line
	dropped  [numReasons]atomic.Uint64
}

// peerAPIConf says which TCP SYNs skip the rules because the peer API checks access itself.
type peerAPIConf struct {
	port4, port6 uint16
	self4, self6 []addr
}

// NewEngine returns an engine with no rules: every inbound packet is dropped until SetRules.
func NewEngine() *Engine {
	return newEngine(DefaultFlows, DefaultFlowTTL, newCoarseClock(clockTick).read)
}

func newEngine(flows int, ttl time.Duration, now func() int64) *Engine {
	e := &Engine{flows: newFlowTable(flows, ttl, rand.Uint64(), now)}
	e.peerAPI.Store(&peerAPIConf{})
	return e
}

// SetRules installs a new rule set; flows recorded so far are kept. nil means no rules at all
// (drop everything inbound), as before the first netmap.
func (e *Engine) SetRules(r *Rules) { e.rules.Store(r) }

// SetPeerAPIPorts sets the peer API's TCP ports on the node's IPv4 and IPv6 address (0 = none).
// A SYN to one of the node's own addresses (SetSelfAddrs) at that port passes without a rule.
func (e *Engine) SetPeerAPIPorts(v4, v6 uint16) {
	e.mu.Lock()
	defer e.mu.Unlock()
	c := *e.peerAPI.Load()
	c.port4, c.port6 = v4, v6
	e.peerAPI.Store(&c)
}

// SetSelfAddrs sets the node's own addresses (the single addresses of its Addresses, not routes
// it serves), the only destinations where the peer API bypass applies.
func (e *Engine) SetSelfAddrs(addrs []netip.Prefix) {
	e.mu.Lock()
	defer e.mu.Unlock()
	c := *e.peerAPI.Load()
	c.self4, c.self6 = nil, nil
	for _, p := range addrs {
		a := p.Addr().Unmap()
		switch {
		case a.Is4():
			c.self4 = append(c.self4, addrFrom(a))
		case a.Is6():
			c.self6 = append(c.self6, addrFrom(a))
		}
	}
	e.peerAPI.Store(&c)
}

func (e *Engine) peerAPIAllows(p *packet, port uint16) bool {
	c := e.peerAPI.Load()
	want, self := c.port4, c.self4
	if p.V6 {
		want, self = c.port6, c.self6
	}
	if want == 0 || port != want {
		return false
	}
	for _, a := range self {
		if a == p.dst {
			return true
		}
	}
	return false
}

// In reports whether a packet from a peer (decrypted, about to be written to the TUN) may pass.
func (e *Engine) In(pkt []byte) bool {
	r := e.verdict(pkt)
	if r == ok {
		e.accepted.Add(1)
		return true
	}
	e.dropped[r].Add(1)
	return false
}

func (e *Engine) verdict(b []byte) reason {
	var p packet
	if r := parse(b, &p); r != ok {
		return r
	}
	if r := checkDst(&p); r != ok {
		return r
	}
	rs := e.rules.Load()
	if rs == nil {
		return reasonNoRule
	}
	f := rs.fam(p.V6)
	if !f.local.contains(p.dst) {
		return reasonNotForUs
	}
	if p.Later {
		return ok
	}
	l4 := p.l4
	switch {
	case p.Proto == protoTCP:
		if len(l4) < tcpHeaderLen {
			return reasonMalformed
		}
		if l4[13]&(tcpSYN|tcpACK) != tcpSYN {
			return ok
		}
		port := binary.BigEndian.Uint16(l4[2:4])
		if (f.free(p.src) && f.match(protoTCP, p.src, p.dst, port)) || e.peerAPIAllows(&p, port) {
			return ok
		}
		return reasonNoRule

	case p.Proto == protoUDP || p.Proto == protoSCTP:
		if len(l4) < udpHeaderLen || (p.Proto == protoSCTP && len(l4) < sctpHeaderLen) {
			return reasonMalformed
		}
		k := flowKey{
			src: p.src, dst: p.dst,
			sport: binary.BigEndian.Uint16(l4[0:2]), dport: binary.BigEndian.Uint16(l4[2:4]),
			proto: p.Proto, v6: p.V6,
		}
		// Rules first: they need no lock.
		if (f.free(p.src) && f.match(p.Proto, p.src, p.dst, k.dport)) || e.flows.hit(&k) {
			return ok
		}
		return reasonNoRule

	case p.Proto == protoICMPv4 && !p.V6, p.Proto == protoICMPv6 && p.V6:
		if len(l4) < icmpHeaderLen {
			return reasonMalformed
		}
		if len(l4) >= 8 && icmpReplyOrError(p.V6, l4[0], l4[1]) {
			return ok
		}
		if f.free(p.src) && f.matchAddrs(p.src, p.dst) {
			return ok
		}
		return reasonNoRule

	case p.Proto == protoTSMP:
		if len(l4) < minTSMPLen || p.MoreFrag {
			return reasonMalformed
		}
		return ok
	}
	if f.free(p.src) && f.matchAllPorts(p.Proto, p.src, p.dst) {
		return ok
	}
	return reasonUnknownProto
}

// icmpReplyOrError reports whether an ICMP message answers something this node sent: an echo
// reply or an error report.
func icmpReplyOrError(v6 bool, typ, code uint8) bool {
	if v6 {
		switch typ {
		case 129: // echo reply
			return code == 0
		case 1, 2, 3, 4: // destination unreachable, packet too big, time exceeded, parameter problem
			return true
		}
		return false
	}
	switch typ {
	case 0: // echo reply
		return code == 0
	case 3, 11, 12: // destination unreachable, time exceeded, parameter problem
		return true
	}
	return false
}

// Out sees a packet read from the TUN on its way to a peer. Nothing is dropped; UDP and SCTP
// flows are recorded so that their replies pass In.
func (e *Engine) Out(pkt []byte) {
	var p packet
	if parse(pkt, &p) != ok || p.Later || (p.Proto != protoUDP && p.Proto != protoSCTP) {
		return
	}
	if len(p.l4) < udpHeaderLen || (p.Proto == protoSCTP && len(p.l4) < sctpHeaderLen) {
		return
	}
	if checkDst(&p) == reasonMulticast {
		return // no unicast reply comes from a group address
	}
	k := flowKey{
		src: p.dst, dst: p.src,
		sport: binary.BigEndian.Uint16(p.l4[2:4]), dport: binary.BigEndian.Uint16(p.l4[0:2]),
		proto: p.Proto, v6: p.V6,
	}
	e.flows.add(&k)
}

// Stats are the filter's counters since the engine was made.
type Stats struct {
	Rules     int               // rules in the current rule set
	Accepted  uint64            // inbound packets passed
	Dropped   uint64            // inbound packets dropped
	DroppedBy map[string]uint64 // drops per reason ("no rule", "not for us", "too short", ...)
	Flows     int               // live entries in the UDP/SCTP flow table
}

// Stats returns the current counters.
func (e *Engine) Stats() Stats {
	s := Stats{Rules: e.rules.Load().Len(), Accepted: e.accepted.Load(), Flows: e.flows.live()}
	for r := ok + 1; r < numReasons; r++ {
		if n := e.dropped[r].Load(); n > 0 {
			if s.DroppedBy == nil {
				s.DroppedBy = map[string]uint64{}
			}
			s.DroppedBy[r.String()] = n
			s.Dropped += n
		}
	}
	return s
}
