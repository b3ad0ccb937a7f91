// Package stun builds and parses the STUN Binding messages (RFC 5389) used to learn the
// public address of the WireGuard UDP socket (netcheck), and a minimal server side for tests.
package stun

import (
	"crypto/rand"
	"encoding/binary"
	"errors"
	"hash/crc32"
	"net/netip"
)

// TxID is a STUN transaction ID.
type TxID [12]byte

const (
	// HeaderLen is the fixed STUN header size.
	HeaderLen = 20
	// MagicCookie sits at header bytes 4..8 of every RFC 5389 message.
	MagicCookie = 0x2112a442
	// RequestLen is the size of the packet Request builds.
	RequestLen = HeaderLen + 4 + len(software) + fingerprintAttrLen
)

const (
	typeBindingRequest = 0x0001
	typeBindingSuccess = 0x0101

	attrMappedAddress    = 0x0001
	attrXorMappedAddress = 0x0020
	// Some servers put XOR-MAPPED-ADDRESS in the comprehension-optional range; accept it too.
	attrXorMappedAddressAlt = 0x8020
	attrSoftware            = 0x8022
	attrFingerprint         = 0x8028

	// Tailscale's and Headscale's STUN servers ignore requests without exactly this SOFTWARE.
	// Its 8 bytes need no attribute padding.
	software           = "tailnode"
	fingerprintAttrLen = 8
	fingerprintXOR     = 0x5354554e

	familyIPv4 = 0x01
	familyIPv6 = 0x02
)

var (
	ErrNotSTUN            = errors.New("stun: not a STUN binding message")
	ErrNotSuccessResponse = errors.New("stun: not a binding success response")
	ErrNotBindingRequest  = errors.New("stun: not a binding request")
	ErrMalformedAttrs     = errors.New("stun: malformed attributes")
	ErrNoAddress          = errors.New("stun: response has no mapped address")
	ErrWrongSoftware      = errors.New("stun: request SOFTWARE is not tailnode")
	ErrNoFingerprint      = errors.New("stun: request does not end in FINGERPRINT")
	ErrWrongFingerprint   = errors.New("stun: bad FINGERPRINT")
)

// NewTxID returns a random transaction ID.
func NewTxID() TxID {
	var t TxID
	if _, err := rand.Read(t[:]); err != nil {
		panic("stun: no randomness: " + err.Error())
	}
	return t
}

// Request returns a binding request carrying SOFTWARE and FINGERPRINT.
func Request(txid TxID) []byte {
	return AppendRequest(make([]byte, 0, RequestLen), txid)
}

// AppendRequest appends a binding request to b. SOFTWARE="tailnode" and a trailing
// FINGERPRINT are mandatory for Tailscale/Headscale STUN servers.
func AppendRequest(b []byte, txid TxID) []byte {
	start := len(b)
	b = appendHeader(b, typeBindingRequest, RequestLen-HeaderLen, txid)
	b = binary.BigEndian.AppendUint16(b, attrSoftware)
	b = binary.BigEndian.AppendUint16(b, uint16(len(software)))
	b = append(b, software...)
	fp := fingerprint(b[start:])
	b = binary.BigEndian.AppendUint16(b, attrFingerprint)
	b = binary.BigEndian.AppendUint16(b, 4)
	return binary.BigEndian.AppendUint32(b, fp)
}

// Response returns a binding success response with XOR-MAPPED-ADDRESS = addr, or nil if
// addr is invalid. IPv4-mapped IPv6 addresses are reported as IPv4, which is what a
// dual-stack server socket would otherwise get wrong.
func Response(txid TxID, addr netip.AddrPort) []byte {
	ip := addr.Addr().Unmap()
	if !ip.IsValid() {
		return nil
	}
	n := ip.BitLen() / 8
	b := make([]byte, 0, HeaderLen+4+4+n)
	b = appendHeader(b, typeBindingSuccess, 4+4+n, txid)
	b = binary.BigEndian.AppendUint16(b, attrXorMappedAddress)
	b = binary.BigEndian.AppendUint16(b, uint16(4+n))
	fam := byte(familyIPv4)
	if n == 16 {
		fam = familyIPv6
	}
	b = append(b, 0, fam)
	b = binary.BigEndian.AppendUint16(b, addr.Port()^(MagicCookie>>16))
	raw := ip.AsSlice()
	x := xorKey(txid)
	for i := range raw {
		raw[i] ^= x[i]
	}
	return append(b, raw...)
}

func appendHeader(b []byte, typ uint16, bodyLen int, txid TxID) []byte {
	b = binary.BigEndian.AppendUint16(b, typ)
	b = binary.BigEndian.AppendUint16(b, uint16(bodyLen))
	b = binary.BigEndian.AppendUint32(b, MagicCookie)
	return append(b, txid[:]...)
}

func fingerprint(b []byte) uint32 { return crc32.ChecksumIEEE(b) ^ fingerprintXOR }

// xorKey is what XOR-MAPPED-ADDRESS XORs the address with: cookie, then (IPv6) the TxID.
func xorKey(txid TxID) [16]byte {
	var k [16]byte
	binary.BigEndian.PutUint32(k[:4], MagicCookie)
	copy(k[4:], txid[:])
	return k
}

// Is reports whether b looks like a STUN Binding message (request, indication, success or
// error response) that fits in b. It never matches WireGuard (byte 1 is 0 there) or disco
// (byte 0 is 'T'), so the receive path can use it alone. It does not allocate.
func Is(b []byte) bool {
	return len(b) >= HeaderLen &&
		b[0]&0xfe == 0 && // top bits zero; no method bits above the Binding method
		b[1]&0xef == 0x01 && // method Binding, either class bit
		b[3]&0x03 == 0 && // body length is a multiple of 4...
		int(binary.BigEndian.Uint16(b[2:4])) <= len(b)-HeaderLen && // ...and present
		binary.BigEndian.Uint32(b[4:8]) == MagicCookie
}

// message returns the header-declared message (dropping trailing datagram bytes), its
// type and TxID.
func message(b []byte) (msg []byte, typ uint16, txid TxID, ok bool) {
	if !Is(b) {
		return nil, 0, txid, false
	}
	copy(txid[:], b[8:HeaderLen])
	n := int(binary.BigEndian.Uint16(b[2:4]))
	return b[:HeaderLen+n], binary.BigEndian.Uint16(b[0:2]), txid, true
}

// attrs walks the attributes of msg. fn gets each value (without padding) and its offset in
// msg. It stops at the first error.
func attrs(msg []byte, fn func(typ uint16, off int, val []byte) error) error {
	off := HeaderLen
	for off < len(msg) {
		if len(msg)-off < 4 {
			return ErrMalformedAttrs
		}
		typ := binary.BigEndian.Uint16(msg[off:])
		n := int(binary.BigEndian.Uint16(msg[off+2:]))
		padded := (n + 3) &^ 3
		if padded > len(msg)-off-4 {
			return ErrMalformedAttrs
		}
		if err := fn(typ, off, msg[off+4:off+4+n]); err != nil {
			return err
		}
		off += 4 + padded
	}
	return nil
}

// checkFingerprint verifies a FINGERPRINT attribute at offset off: it must be the last
// attribute and hold the CRC of everything before it.
func checkFingerprint(msg []byte, off int, val []byte) error {
	if len(val) != 4 || off+fingerprintAttrLen != len(msg) {
		return ErrWrongFingerprint
	}
	if binary.BigEndian.Uint32(val) != fingerprint(msg[:off]) {
		return ErrWrongFingerprint
	}
	return nil
}

// ParseResponse parses a binding success response. The address comes from
// XOR-MAPPED-ADDRESS, else MAPPED-ADDRESS; IPv4-mapped IPv6 is unmapped. A FINGERPRINT, if
// present, must be valid. The TxID is returned whenever b has a STUN header, so a caller
// can match even a failed response to its request.
func ParseResponse(b []byte) (TxID, netip.AddrPort, error) {
	msg, typ, txid, ok := message(b)
	if !ok {
		return TxID{}, netip.AddrPort{}, ErrNotSTUN
	}
	if typ != typeBindingSuccess {
		return txid, netip.AddrPort{}, ErrNotSuccessResponse
	}
	var xored, plain netip.AddrPort
	err := attrs(msg, func(typ uint16, off int, val []byte) error {
		switch typ {
		case attrXorMappedAddress, attrXorMappedAddressAlt:
			if xored.IsValid() {
				return nil // RFC 5389: only the first occurrence counts
			}
			ap, err := parseAddress(val, txid, true)
			xored = ap
			return err
		case attrMappedAddress:
			if plain.IsValid() {
				return nil
			}
			ap, err := parseAddress(val, txid, false)
			plain = ap
			return err
		case attrFingerprint:
			return checkFingerprint(msg, off, val)
		}
		return nil
	})
	switch {
	case err != nil:
		return txid, netip.AddrPort{}, err
	case xored.IsValid():
		return txid, xored, nil
	case plain.IsValid():
		return txid, plain, nil
	}
	return txid, netip.AddrPort{}, ErrNoAddress
}

// parseAddress decodes a (XOR-)MAPPED-ADDRESS value: reserved byte, family, port, address.
func parseAddress(val []byte, txid TxID, xor bool) (netip.AddrPort, error) {
	if len(val) < 4 {
		return netip.AddrPort{}, ErrMalformedAttrs
	}
	var n int
	switch val[1] {
	case familyIPv4:
		n = 4
	case familyIPv6:
		n = 16
	default:
		return netip.AddrPort{}, ErrMalformedAttrs
	}
	// Longer values are tolerated: only the prefix is defined.
	if len(val) < 4+n {
		return netip.AddrPort{}, ErrMalformedAttrs
	}
	port := binary.BigEndian.Uint16(val[2:4])
	var raw [16]byte
	copy(raw[:], val[4:4+n])
	if xor {
		port ^= MagicCookie >> 16
		k := xorKey(txid)
		for i := range n {
			raw[i] ^= k[i]
		}
	}
	var ip netip.Addr
	if n == 4 {
		ip = netip.AddrFrom4([4]byte(raw[:4]))
	} else {
		ip = netip.AddrFrom16(raw).Unmap()
	}
	return netip.AddrPortFrom(ip, port), nil
}

// ParseBindingRequest parses a binding request the way Tailscale's and Headscale's STUN
// servers do: SOFTWARE must be "tailnode" and a valid FINGERPRINT must come last. A test
// server built on it therefore rejects what those servers would ignore.
func ParseBindingRequest(b []byte) (TxID, error) {
	msg, typ, txid, ok := message(b)
	if !ok {
		return TxID{}, ErrNotSTUN
	}
	if typ != typeBindingRequest {
		return TxID{}, ErrNotBindingRequest
	}
	var softwareSeen, softwareOK, fpSeen bool
	err := attrs(msg, func(typ uint16, off int, val []byte) error {
		switch typ {
		case attrSoftware:
			if !softwareSeen {
				softwareSeen, softwareOK = true, string(val) == software
			}
		case attrFingerprint:
			fpSeen = true
			return checkFingerprint(msg, off, val)
		}
		return nil
	})
	switch {
	case err != nil:
		return TxID{}, err
	case !softwareOK:
		return TxID{}, ErrWrongSoftware
	case !fpSeen:
		return TxID{}, ErrNoFingerprint
	}
	return txid, nil
}
