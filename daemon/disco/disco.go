// Package disco encodes the Tailscale "disco" path-discovery messages (ping, pong,
// call-me-maybe) and the NaCl box that carries them between peers' disco keys.
//
// A packet is: magic (6) ‖ sender disco public key (32) ‖ nonce (24) ‖ box (16-byte tag ‖
// ciphertext). Inside the box: type (1) ‖ version (1) ‖ body.
package disco

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net/netip"

	"github.com/skeinvpn/skein/daemon/key"
)

// Magic starts every disco packet: "TS💬".
const Magic = "TS\xf0\x9f\x92\xac"

const (
	MagicLen = len(Magic)
	KeyLen   = 32
	NonceLen = 24
	// HeaderLen is the cleartext part: magic, sender key, nonce.
	HeaderLen = MagicLen + KeyLen + NonceLen // 62
	// Overhead is the Poly1305 tag that precedes the ciphertext.
	Overhead = 16
	// MessageHeaderLen is the type and version bytes of a plaintext message.
	MessageHeaderLen = 2
	// MinPacketLen is the smallest packet that can hold a message.
	MinPacketLen = HeaderLen + Overhead + MessageHeaderLen // 80

	// PingLen is a Ping body without padding: TxID and node key.
	PingLen = 12 + KeyLen
	// PongLen is a Pong body: TxID, 16-byte IP, port.
	PongLen = 12 + 16 + 2
	// PingPacketLen is a whole unpadded Ping packet (124). Padding adds to it one for one,
	// so an MTU probe of n bytes of UDP payload uses Padding = n - PingPacketLen.
	PingPacketLen = MinPacketLen + PingLen

	epLen = 16 + 2 // IPv4-mapped IPv6 address, BE port
)

// MessageType is the first plaintext byte.
type MessageType byte

const (
	TypePing        MessageType = 0x01
	TypePong        MessageType = 0x02
	TypeCallMeMaybe MessageType = 0x03
	// Peer-relay messages (0x04–0x09): official nodes may send them; we only recognise them.
	TypeBindUDPRelayEndpoint             MessageType = 0x04
	TypeBindUDPRelayEndpointChallenge    MessageType = 0x05
	TypeBindUDPRelayEndpointAnswer       MessageType = 0x06
	TypeCallMeMaybeVia                   MessageType = 0x07
	TypeAllocateUDPRelayEndpointRequest  MessageType = 0x08
	TypeAllocateUDPRelayEndpointResponse MessageType = 0x09
)

var (
	ErrShort       = errors.New("disco: message too short")
	ErrUnknownType = errors.New("disco: unknown message type")
	ErrNotDisco    = errors.New("disco: not a disco packet")
	ErrDecrypt     = errors.New("disco: box does not open")
)

// Message is one of *Ping, *Pong, *CallMeMaybe or *RelayMessage. Pointer receivers make a
// type switch on a value type (case Ping:) a compile error instead of a silent miss.
type Message interface {
	Type() MessageType
	appendBody(b []byte) []byte
	version() byte
}

// Ping asks the receiver to answer with a Pong to the packet's source.
type Ping struct {
	TxID [12]byte
	// NodeKey is the sender's node (WireGuard) key; zero when an old sender left it out.
	// Official nodes use it to tie a disco key shared by several nodes to one of them.
	NodeKey key.NodePublic
	// Padding is the number of bytes after the body; pings are padded for path-MTU probes.
	Padding int
}

// Pong answers a Ping; Src is the ping's source address as the responder saw it.
type Pong struct {
	TxID [12]byte
	Src  netip.AddrPort
}

// CallMeMaybe lists the sender's endpoints and asks the receiver to ping them all, which
// opens both NATs at once. Only valid over DERP.
type CallMeMaybe struct {
	MyNumber []netip.AddrPort
}

// RelayMessage is a peer-relay message (TypeBindUDPRelayEndpoint …
// TypeAllocateUDPRelayEndpointResponse). We do not implement peer relays: the body is kept
// undecoded so the caller can log and drop it.
type RelayMessage struct {
	Kind    MessageType
	Version byte
	Body    []byte
}

func (*Ping) Type() MessageType           { return TypePing }
func (*Pong) Type() MessageType           { return TypePong }
func (*CallMeMaybe) Type() MessageType    { return TypeCallMeMaybe }
func (m *RelayMessage) Type() MessageType { return m.Kind }

func (*Ping) version() byte           { return 0 }
func (*Pong) version() byte           { return 0 }
func (*CallMeMaybe) version() byte    { return 0 }
func (m *RelayMessage) version() byte { return m.Version }

func (m *Ping) appendBody(b []byte) []byte {
	b = append(b, m.TxID[:]...)
	// Always sent, zero or not: a receiver reads 32 bytes after the TxID as the key,
	// so a keyless padded ping would turn its padding into a key.
	k := m.NodeKey.Raw()
	b = append(b, k[:]...)
	if m.Padding > 0 {
		b = append(b, make([]byte, m.Padding)...)
	}
	return b
}

func (m *Pong) appendBody(b []byte) []byte {
	b = append(b, m.TxID[:]...)
	return appendAddrPort(b, m.Src)
}

func (m *CallMeMaybe) appendBody(b []byte) []byte {
	for _, ap := range m.MyNumber {
		b = appendAddrPort(b, ap)
	}
	return b
}

func (m *RelayMessage) appendBody(b []byte) []byte { return append(b, m.Body...) }

// appendAddrPort writes the 18-byte wire form; IPv4 goes as ::ffff:a.b.c.d, zones are lost.
func appendAddrPort(b []byte, ap netip.AddrPort) []byte {
	ip := ap.Addr().As16()
	b = append(b, ip[:]...)
	return binary.BigEndian.AppendUint16(b, ap.Port())
}

func parseAddrPort(b []byte) netip.AddrPort {
	return netip.AddrPortFrom(netip.AddrFrom16([16]byte(b[:16])).Unmap(), binary.BigEndian.Uint16(b[16:18]))
}

// AppendMarshal appends m's plaintext form (type, version, body) to b.
func AppendMarshal(b []byte, m Message) []byte {
	b = append(b, byte(m.Type()), m.version())
	return m.appendBody(b)
}

// Parse decodes a plaintext message. Trailing bytes are ignored (or, for a Ping, counted as
// padding), as official receivers do for forward compatibility. The result does not alias
// plain.
func Parse(plain []byte) (Message, error) {
	if len(plain) < MessageHeaderLen {
		return nil, ErrShort
	}
	t, ver, body := MessageType(plain[0]), plain[1], plain[2:]
	switch t {
	case TypePing:
		if len(body) < 12 {
			return nil, ErrShort
		}
		m := &Ping{TxID: [12]byte(body[:12])}
		body = body[12:]
		// Very old senders omit the key; anything shorter than a key is padding.
		if len(body) >= KeyLen {
			m.NodeKey = key.NodePublicFromRaw(key.Raw(body[:KeyLen]))
			body = body[KeyLen:]
		}
		m.Padding = len(body)
		return m, nil
	case TypePong:
		if len(body) < PongLen {
			return nil, ErrShort
		}
		return &Pong{TxID: [12]byte(body[:12]), Src: parseAddrPort(body[12:])}, nil
	case TypeCallMeMaybe:
		m := &CallMeMaybe{}
		// Official parsers yield an empty list, not an error, for other versions or
		// ragged lengths; an error would only differ in how it is logged.
		if ver != 0 || len(body)%epLen != 0 || len(body) == 0 {
			return m, nil
		}
		m.MyNumber = make([]netip.AddrPort, 0, len(body)/epLen)
		for ; len(body) > 0; body = body[epLen:] {
			m.MyNumber = append(m.MyNumber, parseAddrPort(body))
		}
		return m, nil
	case TypeBindUDPRelayEndpoint, TypeBindUDPRelayEndpointChallenge, TypeBindUDPRelayEndpointAnswer,
		TypeCallMeMaybeVia, TypeAllocateUDPRelayEndpointRequest, TypeAllocateUDPRelayEndpointResponse:
		return &RelayMessage{Kind: t, Version: ver, Body: append([]byte(nil), body...)}, nil
	}
	return nil, fmt.Errorf("%w 0x%02x", ErrUnknownType, byte(t))
}

// LooksLikeDisco reports whether b starts with the magic and holds the cleartext header
// (62 bytes, the same test the DERP server uses). It does not allocate.
func LooksLikeDisco(b []byte) bool {
	return len(b) >= HeaderLen && string(b[:MagicLen]) == Magic
}

// Source returns the sender's disco key from the cleartext header, so the caller can find
// the shared key before Open. Nothing is authenticated yet.
func Source(b []byte) (key.DiscoPublic, bool) {
	if !LooksLikeDisco(b) {
		return key.DiscoPublic{}, false
	}
	return key.DiscoPublicFromRaw(key.Raw(b[MagicLen : MagicLen+KeyLen])), true
}
