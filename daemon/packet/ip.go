// Package packet parses the IP layer of packets from the tunnel — once, for the packet filter
// and the MagicDNS intercept alike. It checks every length against the buffer, walks IPv6
// extension headers, and refuses fragment layouts that could rewrite a transport header a
// first fragment was judged by. Parsing neither allocates nor copies.
package packet

import (
	"encoding/binary"
	"net/netip"
)

// Result says whether Parse accepted a packet.
type Result uint8

const (
	OK Result = iota
	// TooShort: shorter than the smallest header of its version.
	TooShort
	// Malformed: lengths that disagree with the buffer, an unknown version, an overlapping
	// fragment, or too many extension headers.
	Malformed
)

// Transport protocols.
const (
	ICMP   = 1
	TCP    = 6
	UDP    = 17
	ICMPv6 = 58
	SCTP   = 132
)

const (
	ipv4HeaderLen = 20
	ipv6HeaderLen = 40

	// MinFragOffset is the smallest fragment offset (in 8-byte units) accepted for a fragment
	// other than the first. A smaller one could overlap and rewrite the transport header of the
	// first fragment, which is the only one a filter judges. 80 bytes cover the largest IPv4
	// header plus a TCP header.
	MinFragOffset = (60 + 20) / 8

	// maxExtHeaders bounds the IPv6 extension-header walk.
	maxExtHeaders = 8
)

// IPv6 extension headers Parse steps over.
const (
	extHopByHop = 0
	extRouting  = 43
	extFragment = 44
	extAuth     = 51
	extDestOpts = 60
)

// IP is a packet's network layer: the packet cut to its IP length and where its parts are.
// It is small and flat so that parsing a packet per call costs a few nanoseconds.
type IP struct {
	b  []byte
	hl int // the IPv4 header (options included) or IPv6 fixed header length
	l4 int // where the transport header starts (0 when Later)
	V6 bool
	// Proto is the transport protocol, after any IPv6 extension headers.
	Proto uint8
	// Later: a fragment other than the first, which has no transport header.
	Later bool
	// MoreFrag: the more-fragments flag of a first fragment.
	MoreFrag bool
}

// Parse decodes the IP header of b (IPv4 or IPv6) into p. It does not look at the transport
// header itself.
func Parse(b []byte, p *IP) Result {
	*p = IP{}
	if len(b) == 0 {
		return TooShort
	}
	switch b[0] >> 4 {
	case 4:
		return parse4(b, p)
	case 6:
		return parse6(b, p)
	}
	if len(b) < ipv4HeaderLen {
		return TooShort
	}
	return Malformed
}

func parse4(b []byte, p *IP) Result {
	if len(b) < ipv4HeaderLen {
		return TooShort
	}
	hl := int(b[0]&0x0f) * 4
	total := int(binary.BigEndian.Uint16(b[2:4]))
	if hl < ipv4HeaderLen || total < hl || total > len(b) {
		return Malformed
	}
	p.b, p.hl = b[:total], hl
	p.Proto = b[9]
	frag := binary.BigEndian.Uint16(b[6:8])
	if off := frag & 0x1fff; off != 0 {
		if off < MinFragOffset {
			return Malformed
		}
		p.Later = true
		return OK
	}
	p.MoreFrag = frag&0x2000 != 0
	p.l4 = hl
	return OK
}

func parse6(b []byte, p *IP) Result {
	if len(b) < ipv6HeaderLen {
		return TooShort
	}
	end := ipv6HeaderLen + int(binary.BigEndian.Uint16(b[4:6]))
	if end > len(b) {
		return Malformed
	}
	b = b[:end]
	p.b, p.hl, p.V6 = b, ipv6HeaderLen, true
	next := b[6]
	off := ipv6HeaderLen
	seenFrag := false
	for range maxExtHeaders {
		var n int
		switch next {
		case extHopByHop, extRouting, extDestOpts:
			if off+8 > len(b) {
				return Malformed
			}
			n = (int(b[off+1]) + 1) * 8
		case extAuth:
			if off+8 > len(b) {
				return Malformed
			}
			n = (int(b[off+1]) + 2) * 4
		case extFragment:
			if off+8 > len(b) || seenFrag {
				return Malformed
			}
			seenFrag = true
			fo := binary.BigEndian.Uint16(b[off+2 : off+4])
			if fo>>3 != 0 {
				if fo>>3 < MinFragOffset {
					return Malformed
				}
				p.Proto = b[off]
				p.Later = true
				return OK
			}
			p.MoreFrag = fo&1 != 0
			n = 8
		default:
			p.Proto = next
			p.l4 = off
			return OK
		}
		next = b[off]
		off += n
		if off > len(b) {
			return Malformed
		}
	}
	return Malformed
}

// Fragmented reports whether p is part of a fragmented packet (first or later fragment).
func (p *IP) Fragmented() bool { return p.Later || p.MoreFrag }

// Src and Dst are the addresses' 4 or 16 bytes, within the packet.
func (p *IP) Src() []byte {
	if p.V6 {
		return p.b[8:24]
	}
	return p.b[12:16]
}

func (p *IP) Dst() []byte {
	if p.V6 {
		return p.b[24:40]
	}
	return p.b[16:20]
}

// Header is the IPv4 header (options included), or the IPv6 fixed header.
func (p *IP) Header() []byte { return p.b[:p.hl] }

// L4 is the transport header and payload, cut to the length the IP header gives (nil for a
// later fragment).
func (p *IP) L4() []byte {
	if p.l4 == 0 {
		return nil
	}
	return p.b[p.l4:]
}

// SrcAddr and DstAddr are the addresses as netip values.
func (p *IP) SrcAddr() netip.Addr { return addrOf(p.Src()) }
func (p *IP) DstAddr() netip.Addr { return addrOf(p.Dst()) }

func addrOf(b []byte) netip.Addr {
	if len(b) == 4 {
		return netip.AddrFrom4([4]byte(b))
	}
	return netip.AddrFrom16([16]byte(b))
}

// IPv4HeaderChecksumOK verifies an IPv4 header's checksum (IPv6 has none: true).
func (p *IP) IPv4HeaderChecksumOK() bool {
	if p.V6 {
		return true
	}
	var s uint32
	h := p.Header()
	for i := 0; i+1 < len(h); i += 2 {
		s += uint32(h[i])<<8 | uint32(h[i+1])
	}
	for s>>16 != 0 {
		s = s&0xffff + s>>16
	}
	return s == 0xffff
}
