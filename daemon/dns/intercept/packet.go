package intercept

import (
	"encoding/binary"
	"net/netip"

	ippkt "github.com/skeinvpn/skein/daemon/packet"
)

const (
	protoICMP   = ippkt.ICMP
	protoTCP    = ippkt.TCP
	protoUDP    = ippkt.UDP
	protoICMPv6 = ippkt.ICMPv6
)

// ipPacket is a parsed IPv4 or IPv6 packet. payload aliases the packet.
type ipPacket struct {
	v6       bool
	src, dst netip.Addr
	proto    uint8
	payload  []byte // transport header and data, cut to the length the IP header gives
}

// parseIP parses the IP layer of pkt with the tunnel's one parser (daemon/packet) and adds this
// responder's own limits: no fragments (a DNS query or an echo request fits in one packet),
// and with verify, a correct IPv4 header checksum.
func parseIP(pkt []byte, verify bool) (p ipPacket, ok bool) {
	var ip ippkt.IP
	if ippkt.Parse(pkt, &ip) != ippkt.OK || ip.Fragmented() {
		return p, false
	}
	if verify && !ip.IPv4HeaderChecksumOK() {
		return p, false
	}
	return ipPacket{v6: ip.V6, src: ip.SrcAddr(), dst: ip.DstAddr(), proto: ip.Proto, payload: ip.L4()}, true
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
