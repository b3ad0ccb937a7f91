package filter

import (
	"encoding/binary"

	ippkt "github.com/skeinvpn/skein/daemon/packet"
)

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
	tcpHeaderLen  = 20
	udpHeaderLen  = 8
	sctpHeaderLen = 12
	icmpHeaderLen = 4
	minTSMPLen    = 7
)

// packet is what the filter needs from an IP packet: the shared parse (daemon/packet) plus the
// addresses in the filter's own form. It is filled in place and never escapes, so filtering
// does not allocate.
type packet struct {
	ippkt.IP
	src, dst addr
	l4       []byte // transport header and payload (nil for a later fragment)
}

// parse decodes the IP header of b (IPv4 or IPv6), checks its lengths against b and finds the
// transport header. It does not look at the transport header itself.
func parse(b []byte, p *packet) reason {
	switch ippkt.Parse(b, &p.IP) {
	case ippkt.TooShort:
		return reasonTooShort
	case ippkt.Malformed:
		return reasonMalformed
	}
	p.l4 = p.L4()
	p.src, p.dst = addrOfBytes(p.Src()), addrOfBytes(p.Dst())
	return ok
}

// addrOfBytes converts an address's 4 or 16 bytes.
func addrOfBytes(b []byte) addr {
	if len(b) == 4 {
		return addr{lo: uint64(binary.BigEndian.Uint32(b))}
	}
	return addr{binary.BigEndian.Uint64(b[:8]), binary.BigEndian.Uint64(b[8:16])}
}

// checkDst drops destinations no peer may send to, whatever the rules say.
func checkDst(p *packet) reason {
	if p.V6 {
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
