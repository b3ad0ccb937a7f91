package portmap

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net/netip"
)

// NAT-PMP (RFC 6886) on udp/5351 of the gateway. Every message starts with a
// version byte (0) and an opcode; responses set the opcode's top bit.

const (
	pmpVersion         = 0
	pmpOpExternalAddr  = 0
	pmpOpMapUDP        = 1
	pmpResponseBit     = 0x80
	pmpExternalRespLen = 12
	pmpMapReqLen       = 12
	pmpMapRespLen      = 16
)

// pmpResult is a NAT-PMP result code (RFC 6886 section 3.5).
type pmpResult uint16

const (
	pmpSuccess            pmpResult = 0
	pmpUnsupportedVersion pmpResult = 1
	pmpNotAuthorized      pmpResult = 2 // mapping switched off on the router
	pmpNetworkFailure     pmpResult = 3 // e.g. no usable external address
	pmpOutOfResources     pmpResult = 4
	pmpUnsupportedOpcode  pmpResult = 5
)

func (r pmpResult) String() string {
	switch r {
	case pmpSuccess:
		return "success"
	case pmpUnsupportedVersion:
		return "unsupported version"
	case pmpNotAuthorized:
		return "not authorized/refused"
	case pmpNetworkFailure:
		return "network failure"
	case pmpOutOfResources:
		return "out of resources"
	case pmpUnsupportedOpcode:
		return "unsupported opcode"
	}
	return fmt.Sprintf("result %d", uint16(r))
}

// pmpExternalAddrRequest asks for the router's external address; the answer
// also carries its epoch, which is all a probe needs.
func pmpExternalAddrRequest() []byte { return []byte{pmpVersion, pmpOpExternalAddr} }

// pmpMapRequest asks for (lifetime > 0) or deletes (lifetime 0, external 0)
// a UDP mapping of internalPort. external is only a suggestion.
func pmpMapRequest(internalPort, external uint16, lifetimeSec uint32) []byte {
	b := make([]byte, pmpMapReqLen)
	b[0], b[1] = pmpVersion, pmpOpMapUDP
	binary.BigEndian.PutUint16(b[4:], internalPort)
	binary.BigEndian.PutUint16(b[6:], external)
	binary.BigEndian.PutUint32(b[8:], lifetimeSec)
	return b
}

// pmpResponse is a decoded NAT-PMP response of either kind.
type pmpResponse struct {
	Op       byte // opcode without the response bit
	Result   pmpResult
	Epoch    uint32     // seconds since the router's mapping table was (re)started
	External netip.Addr // external-address responses
	Internal uint16     // map responses
	Mapped   uint16     // map responses: the external port granted
	Lifetime uint32     // map responses, seconds
}

var errNotPMP = errors.New("not a NAT-PMP response")

// parsePMPResponse decodes a NAT-PMP response. Error responses may be short
// (only the 8-byte header), and the router may answer a newer version's
// request with version 0 and result 1.
func parsePMPResponse(b []byte) (pmpResponse, error) {
	var r pmpResponse
	if len(b) < 8 || b[0] != pmpVersion || b[1]&pmpResponseBit == 0 {
		return r, errNotPMP
	}
	r.Op = b[1] &^ pmpResponseBit
	r.Result = pmpResult(binary.BigEndian.Uint16(b[2:]))
	r.Epoch = binary.BigEndian.Uint32(b[4:])
	if r.Result != pmpSuccess {
		return r, nil
	}
	switch r.Op {
	case pmpOpExternalAddr:
		if len(b) < pmpExternalRespLen {
			return r, fmt.Errorf("NAT-PMP external address response: %d bytes", len(b))
		}
		r.External = netip.AddrFrom4([4]byte(b[8:12]))
	case pmpOpMapUDP, 2: // 2: TCP, decoded for completeness
		if len(b) < pmpMapRespLen {
			return r, fmt.Errorf("NAT-PMP map response: %d bytes", len(b))
		}
		r.Internal = binary.BigEndian.Uint16(b[8:])
		r.Mapped = binary.BigEndian.Uint16(b[10:])
		r.Lifetime = binary.BigEndian.Uint32(b[12:])
	default:
		return r, fmt.Errorf("NAT-PMP: unknown opcode %d", r.Op)
	}
	return r, nil
}

// marshal encodes r as a router would (the fake routers in tests and the
// round-trip fuzzer use it).
func (r pmpResponse) marshal() []byte {
	n := 8
	switch {
	case r.Result != pmpSuccess:
	case r.Op == pmpOpExternalAddr:
		n = pmpExternalRespLen
	default:
		n = pmpMapRespLen
	}
	b := make([]byte, n)
	b[0], b[1] = pmpVersion, r.Op|pmpResponseBit
	binary.BigEndian.PutUint16(b[2:], uint16(r.Result))
	binary.BigEndian.PutUint32(b[4:], r.Epoch)
	switch n {
	case pmpExternalRespLen:
		a := r.External.As4()
		copy(b[8:], a[:])
	case pmpMapRespLen:
		binary.BigEndian.PutUint16(b[8:], r.Internal)
		binary.BigEndian.PutUint16(b[10:], r.Mapped)
		binary.BigEndian.PutUint32(b[12:], r.Lifetime)
	}
	return b
}

// pmpRequest is a decoded NAT-PMP request (for the fake routers in tests).
type pmpRequest struct {
	Op       byte
	Internal uint16
	External uint16
	Lifetime uint32
}

func parsePMPRequest(b []byte) (pmpRequest, error) {
	var q pmpRequest
	if len(b) < 2 || b[0] != pmpVersion || b[1]&pmpResponseBit != 0 {
		return q, errNotPMP
	}
	q.Op = b[1]
	if q.Op == pmpOpExternalAddr {
		return q, nil
	}
	if len(b) < pmpMapReqLen {
		return q, fmt.Errorf("NAT-PMP map request: %d bytes", len(b))
	}
	q.Internal = binary.BigEndian.Uint16(b[4:])
	q.External = binary.BigEndian.Uint16(b[6:])
	q.Lifetime = binary.BigEndian.Uint32(b[8:])
	return q, nil
}
