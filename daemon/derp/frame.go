package derp

import (
	"bufio"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"time"

	"github.com/skeinvpn/skein/daemon/key"
)

// ProtocolVersion is the DERP protocol version Skein speaks (v2: RecvPacket carries the source key).
const ProtocolVersion = 2

// MaxPacketSize is the largest packet Send accepts (servers refuse larger SendPacket payloads).
const MaxPacketSize = 64 << 10

const (
	// maxFrameSize bounds incoming frames; anything larger means a broken or hostile server.
	maxFrameSize   = 1 << 20
	frameHeaderLen = 1 + 4
	keyLen         = 32
	nonceLen       = 24
	magic          = "DERP\xf0\x9f\x94\x91" // "DERP🔑"
)

type frameType byte

const (
	frameServerKey     frameType = 0x01
	frameClientInfo    frameType = 0x02
	frameServerInfo    frameType = 0x03
	frameSendPacket    frameType = 0x04
	frameRecvPacket    frameType = 0x05
	frameKeepAlive     frameType = 0x06
	frameNotePreferred frameType = 0x07
	framePeerGone      frameType = 0x08
	framePeerPresent   frameType = 0x09 // mesh watchers only; skipped
	framePing          frameType = 0x12
	framePong          frameType = 0x13
	frameHealth        frameType = 0x14
	frameRestarting    frameType = 0x15
)

// ErrFrameTooLarge is returned when the server announces a frame over 1 MiB.
var ErrFrameTooLarge = errors.New("derp: frame too large")

// frameReader reads frames from a stream. The payload returned by next is valid until the
// following call; its buffer only grows as bytes actually arrive, so a lying length header
// cannot make it allocate more than the stream delivers.
type frameReader struct {
	r   *bufio.Reader
	hdr [frameHeaderLen]byte
	buf []byte
}

func newFrameReader(r *bufio.Reader) *frameReader { return &frameReader{r: r} }

// next reads one frame. Errors are fatal for the stream: after a truncated or oversized
// frame the framing is lost.
func (fr *frameReader) next() (frameType, []byte, error) {
	if _, err := io.ReadFull(fr.r, fr.hdr[:]); err != nil {
		return 0, nil, err
	}
	t := frameType(fr.hdr[0])
	n := binary.BigEndian.Uint32(fr.hdr[1:])
	if n > maxFrameSize {
		return 0, nil, fmt.Errorf("%w: type %#x, %d bytes", ErrFrameTooLarge, byte(t), n)
	}
	b, err := fr.readPayload(int(n))
	if err == io.EOF {
		err = io.ErrUnexpectedEOF
	}
	return t, b, err
}

func (fr *frameReader) readPayload(n int) ([]byte, error) {
	if n <= cap(fr.buf) {
		fr.buf = fr.buf[:n]
		_, err := io.ReadFull(fr.r, fr.buf)
		return fr.buf, err
	}
	// Grow in steps, reading as we go.
	b := fr.buf[:0]
	for len(b) < n {
		if len(b) == cap(b) {
			nb := make([]byte, len(b), min(n, max(2*cap(b), 4096)))
			copy(nb, b)
			b = nb
		}
		m, err := io.ReadFull(fr.r, b[len(b):cap(b)])
		b = b[:len(b)+m]
		if err != nil {
			fr.buf = b[:0]
			return nil, err
		}
	}
	fr.buf = b
	return b, nil
}

// appendFrame appends a complete frame (header and payload parts) to dst.
func appendFrame(dst []byte, t frameType, parts ...[]byte) []byte {
	n := 0
	for _, p := range parts {
		n += len(p)
	}
	dst = append(dst, byte(t))
	dst = binary.BigEndian.AppendUint32(dst, uint32(n))
	for _, p := range parts {
		dst = append(dst, p...)
	}
	return dst
}

// parseServerKey checks a ServerKey payload: magic, then the key; extra bytes are allowed.
func parseServerKey(b []byte) (key.NodePublic, error) {
	if len(b) < len(magic)+keyLen || string(b[:len(magic)]) != magic {
		return key.NodePublic{}, errors.New("derp: invalid server greeting")
	}
	return key.NodePublicFromRaw(key.Raw(b[len(magic) : len(magic)+keyLen])), nil
}

// errMalformed marks a known frame type with a bad payload. Such frames are dropped (and
// logged) without ending the connection, as the reference client does.
var errMalformed = errors.New("derp: malformed frame")

// parseFrame turns a server→client frame into a Message. It returns (nil, nil) for frames the
// client ignores (unknown types, mesh-only frames, a repeated ServerKey). ServerInfo needs the
// keys and is handled by the Client. A *ReceivedPacket result is pkt, with Data aliasing b.
func parseFrame(t frameType, b []byte, pkt *ReceivedPacket) (Message, error) {
	switch t {
	case frameRecvPacket:
		if len(b) < keyLen {
			return nil, fmt.Errorf("%w: short RecvPacket (%d bytes)", errMalformed, len(b))
		}
		pkt.Source = key.NodePublicFromRaw(key.Raw(b[:keyLen]))
		pkt.Data = b[keyLen:]
		return pkt, nil
	case frameKeepAlive:
		return KeepAliveMessage{}, nil
	case framePeerGone:
		if len(b) < keyLen {
			return nil, fmt.Errorf("%w: short PeerGone", errMalformed)
		}
		m := PeerGone{Peer: key.NodePublicFromRaw(key.Raw(b[:keyLen])), Reason: PeerGoneDisconnected}
		if len(b) > keyLen {
			m.Reason = PeerGoneReason(b[keyLen])
		}
		return m, nil
	case framePing:
		if len(b) < 8 {
			return nil, fmt.Errorf("%w: short Ping", errMalformed)
		}
		return PingMessage(b[:8]), nil
	case framePong:
		if len(b) < 8 {
			return nil, fmt.Errorf("%w: short Pong", errMalformed)
		}
		return PongMessage(b[:8]), nil
	case frameHealth:
		return HealthMessage{Problem: string(b)}, nil
	case frameRestarting:
		if len(b) < 8 {
			return nil, fmt.Errorf("%w: short Restarting", errMalformed)
		}
		return ServerRestartingMessage{
			ReconnectIn: time.Duration(binary.BigEndian.Uint32(b[0:4])) * time.Millisecond,
			TryFor:      time.Duration(binary.BigEndian.Uint32(b[4:8])) * time.Millisecond,
		}, nil
	}
	// Unknown types are skipped for forward compatibility (protocol.md 5.2).
	return nil, nil
}
