package portmap

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net/netip"
)

// PCP (RFC 6887) shares udp/5351 with NAT-PMP; its version byte is 2. We use
// two opcodes: ANNOUNCE (a probe: the answer carries the epoch) and MAP.

const (
	pcpVersion     = 2
	pcpOpAnnounce  = 0
	pcpOpMap       = 1
	pcpResponseBit = 0x80
	pcpHeaderLen   = 24
	pcpMapLen      = 36 // MAP opcode data after the header
	pcpNonceLen    = 12
	protoUDP       = 17
)

// pcpResult is a PCP result code (RFC 6887 section 7.4).
type pcpResult byte

const (
	pcpSuccess               pcpResult = 0
	pcpUnsuppVersion         pcpResult = 1
	pcpNotAuthorized         pcpResult = 2
	pcpMalformedRequest      pcpResult = 3
	pcpUnsuppOpcode          pcpResult = 4
	pcpUnsuppOption          pcpResult = 5
	pcpMalformedOption       pcpResult = 6
	pcpNetworkFailure        pcpResult = 7
	pcpNoResources           pcpResult = 8
	pcpUnsuppProtocol        pcpResult = 9
	pcpUserExQuota           pcpResult = 10
	pcpCannotProvideExternal pcpResult = 11
	pcpAddressMismatch       pcpResult = 12
	pcpExcessiveRemotePeers  pcpResult = 13
)

var pcpResultNames = [...]string{
	"success", "unsupported version", "not authorized", "malformed request",
	"unsupported opcode", "unsupported option", "malformed option", "network failure",
	"no resources", "unsupported protocol", "user exceeded quota",
	"cannot provide external", "address mismatch", "excessive remote peers",
}

func (r pcpResult) String() string {
	if int(r) < len(pcpResultNames) {
		return pcpResultNames[r]
	}
	return fmt.Sprintf("result %d", byte(r))
}

// pcpNonce ties a MAP renewal and deletion to the request that created the
// mapping: the router refuses to touch a mapping with another nonce.
type pcpNonce [pcpNonceLen]byte

// pcpAddr16 is an address in PCP's 16-byte form (IPv4 as ::ffff:a.b.c.d).
func pcpAddr16(a netip.Addr) [16]byte {
	if !a.IsValid() {
		return netip.IPv6Unspecified().As16()
	}
	return a.As16() // IPv4 comes out v4-mapped
}

func pcpAddrFrom16(b []byte) netip.Addr { return netip.AddrFrom16([16]byte(b)).Unmap() }

func pcpHeader(op byte, lifetime uint32, client netip.Addr, extra int) []byte {
	b := make([]byte, pcpHeaderLen+extra)
	b[0], b[1] = pcpVersion, op
	binary.BigEndian.PutUint32(b[4:], lifetime)
	c := pcpAddr16(client)
	copy(b[8:24], c[:])
	return b
}

// pcpAnnounceRequest is a probe; client must be our source address toward
// the router, or it answers ADDRESS_MISMATCH.
func pcpAnnounceRequest(client netip.Addr) []byte { return pcpHeader(pcpOpAnnounce, 0, client, 0) }

// pcpMapRequest asks for a UDP mapping of internalPort (lifetime 0 deletes
// the mapping made with the same nonce). suggested is a hint, as is
// suggestedIP (zero: any).
func pcpMapRequest(client netip.Addr, nonce pcpNonce, internalPort, suggested uint16, suggestedIP netip.Addr, lifetime uint32) []byte {
	b := pcpHeader(pcpOpMap, lifetime, client, pcpMapLen)
	m := b[pcpHeaderLen:]
	copy(m[0:12], nonce[:])
	m[12] = protoUDP
	binary.BigEndian.PutUint16(m[16:], internalPort)
	binary.BigEndian.PutUint16(m[18:], suggested)
	if !suggestedIP.IsValid() {
		suggestedIP = netip.IPv4Unspecified()
	}
	ip := pcpAddr16(suggestedIP)
	copy(m[20:36], ip[:])
	return b
}

// pcpResponse is a decoded PCP response (ANNOUNCE or MAP).
type pcpResponse struct {
	Op       byte
	Result   pcpResult
	Lifetime uint32
	Epoch    uint32
	// MAP only:
	Nonce    pcpNonce
	Protocol byte
	Internal uint16
	External netip.AddrPort
}

var errNotPCP = errors.New("not a PCP response")

// errPCPVersion: a NAT-PMP-only router answers a PCP request with a NAT-PMP
// header carrying "unsupported version" (RFC 6887 section 9).
var errPCPVersion = errors.New("router speaks NAT-PMP, not PCP")

// parsePCPResponse decodes a PCP response. Options after the opcode data
// are ignored.
func parsePCPResponse(b []byte) (pcpResponse, error) {
	var r pcpResponse
	if len(b) >= 4 && b[0] == pmpVersion && b[1]&pmpResponseBit != 0 &&
		pmpResult(binary.BigEndian.Uint16(b[2:])) == pmpUnsupportedVersion {
		return r, errPCPVersion
	}
	if len(b) < pcpHeaderLen || b[0] != pcpVersion || b[1]&pcpResponseBit == 0 {
		return r, errNotPCP
	}
	if len(b)%4 != 0 || len(b) > 1100 {
		return r, fmt.Errorf("PCP response of %d bytes", len(b))
	}
	r.Op = b[1] &^ pcpResponseBit
	r.Result = pcpResult(b[3])
	r.Lifetime = binary.BigEndian.Uint32(b[4:])
	r.Epoch = binary.BigEndian.Uint32(b[8:])
	if r.Op != pcpOpMap {
		return r, nil
	}
	if len(b) < pcpHeaderLen+pcpMapLen {
		if r.Result != pcpSuccess {
			return r, nil // an error answer may omit the opcode data
		}
		return r, fmt.Errorf("PCP MAP response: %d bytes", len(b))
	}
	m := b[pcpHeaderLen:]
	copy(r.Nonce[:], m[0:12])
	r.Protocol = m[12]
	r.Internal = binary.BigEndian.Uint16(m[16:])
	r.External = netip.AddrPortFrom(pcpAddrFrom16(m[20:36]), binary.BigEndian.Uint16(m[18:]))
	return r, nil
}

// marshal encodes r as a router would (fake routers, fuzz round trips).
func (r pcpResponse) marshal() []byte {
	n := pcpHeaderLen
	if r.Op == pcpOpMap {
		n += pcpMapLen
	}
	b := make([]byte, n)
	b[0], b[1], b[3] = pcpVersion, r.Op|pcpResponseBit, byte(r.Result)
	binary.BigEndian.PutUint32(b[4:], r.Lifetime)
	binary.BigEndian.PutUint32(b[8:], r.Epoch)
	if r.Op == pcpOpMap {
		m := b[pcpHeaderLen:]
		copy(m[0:12], r.Nonce[:])
		m[12] = r.Protocol
		binary.BigEndian.PutUint16(m[16:], r.Internal)
		binary.BigEndian.PutUint16(m[18:], r.External.Port())
		ip := pcpAddr16(r.External.Addr())
		copy(m[20:36], ip[:])
	}
	return b
}

// pcpRequest is a decoded PCP request (for the fake routers in tests).
type pcpRequest struct {
	Op          byte
	Lifetime    uint32
	Client      netip.Addr
	Nonce       pcpNonce
	Protocol    byte
	Internal    uint16
	Suggested   uint16
	SuggestedIP netip.Addr
}

func parsePCPRequest(b []byte) (pcpRequest, error) {
	var q pcpRequest
	if len(b) < pcpHeaderLen || b[0] != pcpVersion || b[1]&pcpResponseBit != 0 {
		return q, errNotPCP
	}
	q.Op = b[1]
	q.Lifetime = binary.BigEndian.Uint32(b[4:])
	q.Client = pcpAddrFrom16(b[8:24])
	if q.Op != pcpOpMap {
		return q, nil
	}
	if len(b) < pcpHeaderLen+pcpMapLen {
		return q, fmt.Errorf("PCP MAP request: %d bytes", len(b))
	}
	m := b[pcpHeaderLen:]
	copy(q.Nonce[:], m[0:12])
	q.Protocol = m[12]
	q.Internal = binary.BigEndian.Uint16(m[16:])
	q.Suggested = binary.BigEndian.Uint16(m[18:])
	q.SuggestedIP = pcpAddrFrom16(m[20:36])
	return q, nil
}
