package intercept

import (
	"encoding/binary"
	"net/netip"
)

const (
	protoICMP   = 1
	protoTCP    = 6
	protoUDP    = 17
	protoICMPv6 = 58
)

// ipPacket is a parsed IPv4 or IPv6 packet. payload aliases the packet.
type ipPacket struct {
	v6       bool
	src, dst netip.Addr
	proto    uint8
	payload  []byte // transport header and data, cut to the length the IP header gives
}

// parseIP parses and validates the IP layer of pkt. Fragments, packets whose
// length fields disagree with the buffer, IPv6 packets with extension headers
// other than hop-by-hop and destination options, and (with verify) IPv4
// headers with a bad checksum are rejected.
func parseIP(pkt []byte, verify bool) (p ipPacket, ok bool) {
	if len(pkt) == 0 {
		return p, false
	}
	switch pkt[0] >> 4 {
	case 4:
		if len(pkt) < 20 {
			return p, false
		}
		hl := int(pkt[0]&0x0f) * 4
		total := int(be16(pkt[2:]))
		if hl < 20 || total < hl || total > len(pkt) {
			return p, false
		}
		if be16(pkt[6:])&0x3fff != 0 { // more fragments, or a fragment offset
			return p, false
		}
		if verify && fold(sum(pkt[:hl], 0)) != 0xffff {
			return p, false
		}
		p.proto = pkt[9]
		p.src = netip.AddrFrom4([4]byte(pkt[12:16]))
		p.dst = netip.AddrFrom4([4]byte(pkt[16:20]))
		p.payload = pkt[hl:total]
		return p, true
	case 6:
		if len(pkt) < 40 {
			return p, false
		}
		end := 40 + int(be16(pkt[4:]))
		if end > len(pkt) {
			return p, false
		}
		p.v6 = true
		p.src = netip.AddrFrom16([16]byte(pkt[8:24]))
		p.dst = netip.AddrFrom16([16]byte(pkt[24:40]))
		next, off := pkt[6], 40
		for range 8 {
			if next != 0 && next != 60 { // hop-by-hop, destination options
				break
			}
			if off+8 > end {
				return p, false
			}
			next, off = pkt[off], off+(int(pkt[off+1])+1)*8
			if off > end {
				return p, false
			}
		}
		if next == 0 || next == 60 {
			return p, false // too many extension headers
		}
		p.proto = next
		p.payload = pkt[off:end]
		return p, true
	}
	return p, false
}

// sum adds b to the running ones' complement sum s (RFC 1071), b's bytes
// taken as big-endian 16-bit words with an odd last byte padded with zero.
// The result is unfolded.
func sum(b []byte, s uint64) uint64 {
	for len(b) >= 8 {
		s += uint64(binary.BigEndian.Uint32(b)) + uint64(binary.BigEndian.Uint32(b[4:]))
		b = b[8:]
	}
	for len(b) >= 2 {
		s += uint64(be16(b))
		b = b[2:]
	}
	if len(b) == 1 {
		s += uint64(b[0]) << 8
	}
	return s
}

// fold reduces an unfolded ones' complement sum to 16 bits.
func fold(s uint64) uint16 {
	for s > 0xffff {
		s = s>>16 + s&0xffff
	}
	return uint16(s)
}

// pseudoSum is the unfolded sum of the TCP/UDP/ICMPv6 pseudo-header.
func pseudoSum(src, dst netip.Addr, proto uint8, length int) uint64 {
	s := uint64(proto) + uint64(length)
	if src.Is4() {
		a, b := src.As4(), dst.As4()
		return sum(b[:], sum(a[:], s))
	}
	a, b := src.As16(), dst.As16()
	return sum(b[:], sum(a[:], s))
}

// transportSumOK verifies the checksum of the transport segment seg of p.
func transportSumOK(p ipPacket, seg []byte) bool {
	return fold(sum(seg, pseudoSum(p.src, p.dst, p.proto, len(seg)))) == 0xffff
}

func be16(b []byte) uint16 { return binary.BigEndian.Uint16(b) }

func be32(b []byte) uint32 { return binary.BigEndian.Uint32(b) }

func put16(b []byte, v uint16) { binary.BigEndian.PutUint16(b, v) }

func put32(b []byte, v uint32) { binary.BigEndian.PutUint32(b, v) }
