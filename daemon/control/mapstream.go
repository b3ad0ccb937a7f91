package control

import (
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"

	"github.com/klauspost/compress/zstd"

	"github.com/skeinvpn/skein/daemon/wire"
)

// maxMapMessage bounds one framed map message (compressed size) and its decompressed size, so a
// hostile or broken server cannot make us allocate without limit.
const maxMapMessage = 64 << 20

// mapDecoder reads the map stream: repeated little-endian uint32 size, then that many bytes of
// zstd (or raw JSON when compression is off) holding one MapResponse.
type mapDecoder struct {
	r        io.Reader
	compress bool
	zd       *zstd.Decoder
	buf      []byte
	plain    []byte
}

func newMapDecoder(r io.Reader, compress bool) (*mapDecoder, error) {
	d := &mapDecoder{r: r, compress: compress}
	if compress {
		zd, err := zstd.NewReader(nil,
			zstd.WithDecoderConcurrency(1),
			zstd.WithDecoderMaxMemory(maxMapMessage),
			zstd.WithDecoderMaxWindow(maxMapMessage))
		if err != nil {
			return nil, err
		}
		d.zd = zd
	}
	return d, nil
}

func (d *mapDecoder) Close() {
	if d.zd != nil {
		d.zd.Close()
	}
}

var errMessageTooLarge = errors.New("map message too large")

// Next returns the next response. io.EOF means the server ended the stream cleanly.
func (d *mapDecoder) Next() (*wire.MapResponse, error) {
	var hdr [4]byte
	if _, err := io.ReadFull(d.r, hdr[:]); err != nil {
		if errors.Is(err, io.ErrUnexpectedEOF) {
			return nil, fmt.Errorf("map stream: truncated size: %w", err)
		}
		return nil, err
	}
	n := binary.LittleEndian.Uint32(hdr[:])
	if n > maxMapMessage {
		return nil, fmt.Errorf("map stream: %w (%d bytes)", errMessageTooLarge, n)
	}
	if cap(d.buf) < int(n) {
		d.buf = make([]byte, n)
	}
	d.buf = d.buf[:n]
	if _, err := io.ReadFull(d.r, d.buf); err != nil {
		if errors.Is(err, io.EOF) {
			err = io.ErrUnexpectedEOF
		}
		return nil, fmt.Errorf("map stream: truncated message: %w", err)
	}
	return d.decode(d.buf)
}

func (d *mapDecoder) decode(msg []byte) (*wire.MapResponse, error) {
	body := msg
	if d.compress {
		var err error
		d.plain, err = d.zd.DecodeAll(msg, d.plain[:0])
		if err != nil {
			return nil, fmt.Errorf("map stream: zstd: %w", err)
		}
		body = d.plain
	}
	resp := new(wire.MapResponse)
	if err := json.Unmarshal(body, resp); err != nil {
		return nil, fmt.Errorf("map stream: bad JSON: %w", err)
	}
	return resp, nil
}
