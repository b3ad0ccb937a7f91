package filter

import "encoding/binary"

// reason is why a packet was dropped; ok means it was not (yet).
type reason uint8

const (
	ok reason = iota
	reasonNoRule
	reasonNotForUs
	reasonTooShort
	reasonMalformed
	reasonMulticast
	reasonLinkLocal
	reasonMartian
	reasonUnknownProto
	numReasons
)

var reasonNames = [numReasons]string{
	ok:                 "accepted",
	reasonNoRule:       "no rule",
	reasonNotForUs:     "not for us",
	reasonTooShort:     "too short",
	reasonMalformed:    "malformed",
	reasonMulticast:    "multicast",
	reasonLinkLocal:    "link-local",
	reasonMartian:      "martian",
	reasonUnknownProto: "unknown protocol",
}

func (r reason) String() string { return reasonNames[r] }

const (
	ipv4HeaderLen = 20
	ipv6HeaderLen = 40

	// minFragOffset is the smallest fragment offset (in 8-byte units) accepted for a fragment
	// other than the first. A smaller one could overlap and rewrite the transport header of the
	// first fragment, which is the only one the filter judged. 80 bytes cover the largest IPv4
	// header plus a TCP header.
	minFragOffset = (60 + 20) / 8

	// maxExtHeaders bounds the IPv6 extension-header walk.
	maxExtHeaders = 8

	tcpHeaderLen  = 20
	udpHeaderLen  = 8
	sctpHeaderLen = 12
	icmpHeaderLen = 4
	minTSMPLen    = 7
)

// IPv6 extension headers the parser steps over.
const (
	extHopByHop = 0
	extRouting  = 43
	extFragment = 44
	extAuth     = 51
	extDestOpts = 60
)

// packet is what the filter needs from an IP packet. It is filled in place and never escapes,
// so parsing does not allocate.
type packet struct {
	v6       bool
	proto    uint8 // transport protocol after any IPv6 extension headers
	later    bool  // a fragment other than the first: there is no transport header
	moreFrag bool  // the more-fragments flag of a first fragment
	src, dst addr
	l4       []byte // transport header and payload (nil when later)
}

// parse decodes the IP header of b (IPv4 or IPv6), checks its lengths against b and finds the
// transport header. It does not look at the transport header itself.
func parse(b []byte, p *packet) reason {
	if len(b) == 0 {
		return reasonTooShort
	}
	switch b[0] >> 4 {
	case 4:
		return parse4(b, p)
	case 6:
		return parse6(b, p)
	}
	if len(b) < ipv4HeaderLen {
		return reasonTooShort
	}
	return reasonMalformed
}

func parse4(b []byte, p *packet) reason {
	if len(b) < ipv4HeaderLen {
		return reasonTooShort
	}
	hl := int(b[0]&0x0f) * 4
	total := int(binary.BigEndian.Uint16(b[2:4]))
	if hl < ipv4HeaderLen || total < hl || total > len(b) {
		return reasonMalformed
	}
	b = b[:total]
	p.v6 = false
	p.proto = b[9]
	p.src = addr{lo: uint64(binary.BigEndian.Uint32(b[12:16]))}
	p.dst = addr{lo: uint64(binary.BigEndian.Uint32(b[16:20]))}
	frag := binary.BigEndian.Uint16(b[6:8])
	if off := frag & 0x1fff; off != 0 {
		if off < minFragOffset {
			return reasonMalformed
		}
		p.later = true
		return ok
	}
	p.moreFrag = frag&0x2000 != 0
	p.l4 = b[hl:]
	return ok
}

func parse6(b []byte, p *packet) reason {
	if len(b) < ipv6HeaderLen {
		return reasonTooShort
	}
	end := ipv6HeaderLen + int(binary.BigEndian.Uint16(b[4:6]))
	if end > len(b) {
		return reasonMalformed
	}
	b = b[:end]
	p.v6 = true
	p.src = addr{binary.BigEndian.Uint64(b[8:16]), binary.BigEndian.Uint64(b[16:24])}
	p.dst = addr{binary.BigEndian.Uint64(b[24:32]), binary.BigEndian.Uint64(b[32:40])}
	next := b[6]
	off := ipv6HeaderLen
	seenFrag := false
	for range maxExtHeaders {
		var n int
		switch next {
		case extHopByHop, extRouting, extDestOpts:
			if off+8 > len(b) {
				return reasonMalformed
			}
			n = (int(b[off+1]) + 1) * 8
		case extAuth:
			if off+8 > len(b) {
				return reasonMalformed
			}
			n = (int(b[off+1]) + 2) * 4
		case extFragment:
			if off+8 > len(b) || seenFrag {
				return reasonMalformed
			}
			seenFrag = true
			fo := binary.BigEndian.Uint16(b[off+2 : off+4])
			if fo>>3 != 0 {
				if fo>>3 < minFragOffset {
					return reasonMalformed
				}
				p.proto = b[off]
				p.later = true
				return ok
			}
			p.moreFrag = fo&1 != 0
			n = 8
		default:
			p.proto = next
			p.l4 = b[off:]
			return ok
		}
		next = b[off]
		off += n
		if off > len(b) {
			return reasonMalformed
		}
	}
	return reasonMalformed
}

// checkDst drops destinations no peer may send to, whatever the rules say.
func checkDst(p *packet) reason {
	if p.v6 {
		d := p.dst
		switch {
		case d.hi>>56 == 0xff:
			return reasonMulticast
		case d.hi>>54 == 0xfe80>>6: // fe80::/10
			return reasonLinkLocal
		case d.hi == 0 && d.lo <= 1: // :: and ::1
			return reasonMartian
		}
		return ok
	}
	d := uint32(p.dst.lo)
	switch {
	case d>>28 == 0xe: // 224.0.0.0/4
		return reasonMulticast
	case d>>16 == 0xa9fe && d != 0xa9fea9fe: // 169.254.0.0/16 except 169.254.169.254 (cloud metadata/DNS)
		return reasonLinkLocal
	case d>>24 == 127 || d>>24 == 0 || d == 0xffffffff: // loopback, "this network", limited broadcast
		return reasonMartian
	}
	return ok
}
