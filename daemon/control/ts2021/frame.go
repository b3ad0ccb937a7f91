package ts2021

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
)

// Frame types after the initiation (which only the client sends, with its own 5-byte header).
const (
	msgTypeInitiation = 0x01
	msgTypeResponse   = 0x02
	msgTypeError      = 0x03
	msgTypeRecord     = 0x04
)

const (
	headerLen      = 3    // type + BE uint16 length
	maxFrameSize   = 4096 // whole frame, header included
	maxCiphertext  = maxFrameSize - headerLen
	tagLen         = 16
	maxPlaintext   = maxCiphertext - tagLen // 4077
	initiationLen  = 101
	responseLen    = 51
	responsePayLen = responseLen - headerLen
)

var (
	errFrameTooLarge   = errors.New("frame larger than 4096 bytes")
	errUnknownFrameTyp = errors.New("unknown frame type")
)

// frameReader splits a stream into frames. It keeps a partial frame across
// errors, so a read that times out (deadline) can be retried without losing sync.
type frameReader struct {
	r   io.Reader
	n   int // bytes of the current frame already in buf
	buf [maxFrameSize]byte
}

// next returns the next frame's type and payload. The payload aliases the
// reader's buffer and is valid until the next call; callers may modify it.
func (fr *frameReader) next() (typ byte, payload []byte, err error) {
	if fr.n < headerLen {
		if err := fr.fill(headerLen); err != nil {
			return 0, nil, err
		}
	}
	typ = fr.buf[0]
	switch typ {
	case msgTypeResponse, msgTypeError, msgTypeRecord:
	default:
		return 0, nil, fmt.Errorf("%w 0x%02x", errUnknownFrameTyp, typ)
	}
	total := headerLen + int(binary.BigEndian.Uint16(fr.buf[1:headerLen]))
	if total > maxFrameSize {
		return 0, nil, fmt.Errorf("%w (header says %d)", errFrameTooLarge, total)
	}
	if err := fr.fill(total); err != nil {
		return 0, nil, err
	}
	fr.n = 0
	return typ, fr.buf[headerLen:total], nil
}

// fill reads until buf holds want bytes of the current frame.
func (fr *frameReader) fill(want int) error {
	if fr.n >= want {
		return nil
	}
	k, err := io.ReadFull(fr.r, fr.buf[fr.n:want])
	fr.n += k
	if err == io.EOF && fr.n > 0 {
		// Clean EOF only between frames; mid-frame it is truncation.
		err = io.ErrUnexpectedEOF
	}
	return err
}
