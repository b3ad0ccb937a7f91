package filter

import (
	"encoding/binary"
	"net/netip"
)

// A small packet builder for the tests: real IPv4/IPv6 headers (with lengths and, for IPv4, a
// header checksum) around hand-made transport headers.

const (
	fFIN = 0x01
	fSYN = 0x02
	fRST = 0x04
	fPSH = 0x08
	fACK = 0x10
	fECE = 0x40
)

// l4 describes a transport header and payload.
type l4 struct {
	proto uint8
	b     []byte
}

func tcpSeg(sport, dport uint16, flags uint8) l4 {
	b := make([]byte, 20)
	binary.BigEndian.PutUint16(b[0:], sport)
	binary.BigEndian.PutUint16(b[2:], dport)
	binary.BigEndian.PutUint32(b[4:], 1000) // seq
	b[12] = 5 << 4                          // data offset
	b[13] = flags
	binary.BigEndian.PutUint16(b[14:], 65535) // window
	return l4{protoTCP, b}
}

func udpDgram(sport, dport uint16, payload ...byte) l4 {
	b := make([]byte, 8+len(payload))
	binary.BigEndian.PutUint16(b[0:], sport)
	binary.BigEndian.PutUint16(b[2:], dport)
	binary.BigEndian.PutUint16(b[4:], uint16(len(b)))
	copy(b[8:], payload)
	return l4{protoUDP, b}
}

func sctpPkt(sport, dport uint16) l4 {
	b := make([]byte, 12)
	binary.BigEndian.PutUint16(b[0:], sport)
	binary.BigEndian.PutUint16(b[2:], dport)
	return l4{protoSCTP, b}
}

// icmpMsg is an ICMP message; the protocol number is fixed by the IP version in pkt.
func icmpMsg(typ, code uint8) l4 {
	b := make([]byte, 8)
	b[0], b[1] = typ, code
	binary.BigEndian.PutUint16(b[4:], 0x1234) // id
	return l4{0, b}
}

func rawL4(proto uint8, b ...byte) l4 { return l4{proto, b} }

// ext is an IPv6 extension header given by type and body (the next-header byte is filled in).
type ext struct {
	typ  uint8
	body []byte
}

// IPv6 extension header numbers (RFC 8200), for building test packets.
const (
	extHopByHop = 0
	extRouting  = 43
	extFragment = 44
	extAuth     = 51
	extDestOpts = 60
)

func hopByHop() ext   { return ext{extHopByHop, make([]byte, 7)} }
func destOpts() ext   { return ext{extDestOpts, make([]byte, 15)} }
func routingHdr() ext { return ext{extRouting, make([]byte, 7)} }
func fragHdr(offset uint16, more bool, id uint32) ext {
	b := make([]byte, 7)
	fo := offset << 3
	if more {
		fo |= 1
	}
	binary.BigEndian.PutUint16(b[1:], fo)
	binary.BigEndian.PutUint32(b[3:], id)
	return ext{extFragment, b}
}

// pkt builds an IP packet from src to dst (the family follows the addresses); exts are IPv6
// extension headers.
func pkt(src, dst string, t l4, exts ...ext) []byte {
	s, d := netip.MustParseAddr(src), netip.MustParseAddr(dst)
	proto := t.proto
	if proto == 0 {
		proto = protoICMPv4
		if s.Is6() {
			proto = protoICMPv6
		}
	}
	if s.Is4() {
		return ip4(s, d, proto, t.b, 0, false)
	}
	return ip6(s, d, proto, t.b, exts...)
}

func ip4(s, d netip.Addr, proto uint8, payload []byte, fragOff uint16, more bool) []byte {
	b := make([]byte, 20+len(payload))
	b[0] = 0x45
	binary.BigEndian.PutUint16(b[2:], uint16(len(b)))
	binary.BigEndian.PutUint16(b[4:], 0x4242)
	ff := fragOff
	if more {
		ff |= 0x2000
	}
	binary.BigEndian.PutUint16(b[6:], ff)
	b[8] = 64
	b[9] = proto
	s4, d4 := s.As4(), d.As4()
	copy(b[12:], s4[:])
	copy(b[16:], d4[:])
	var sum uint32
	for i := 0; i < 20; i += 2 {
		sum += uint32(binary.BigEndian.Uint16(b[i:]))
	}
	for sum > 0xffff {
		sum = sum&0xffff + sum>>16
	}
	binary.BigEndian.PutUint16(b[10:], ^uint16(sum))
	copy(b[20:], payload)
	return b
}

func ip6(s, d netip.Addr, proto uint8, payload []byte, exts ...ext) []byte {
	var body []byte
	for i, e := range exts {
		next := proto
		if i+1 < len(exts) {
			next = exts[i+1].typ
		}
		h := append([]byte{next}, e.body...)
		switch e.typ {
		case extFragment:
		case extAuth:
			h[1] = uint8(len(h)/4 - 2)
		default:
			h[1] = uint8(len(h)/8 - 1)
		}
		body = append(body, h...)
	}
	body = append(body, payload...)
	b := make([]byte, 40+len(body))
	b[0] = 0x60
	binary.BigEndian.PutUint16(b[4:], uint16(len(body)))
	b[6] = proto
	if len(exts) > 0 {
		b[6] = exts[0].typ
	}
	b[7] = 64
	s16, d16 := s.As16(), d.As16()
	copy(b[8:], s16[:])
	copy(b[24:], d16[:])
	copy(b[40:], body)
	return b
}

// frag4 builds an IPv4 fragment.
func frag4(src, dst string, t l4, off uint16, more bool) []byte {
	return ip4(netip.MustParseAddr(src), netip.MustParseAddr(dst), t.proto, t.b, off, more)
}
