package ts2021

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"io"

	"github.com/skeinvpn/skein/daemon/key"
)

// EarlyNoise is the JSON the server may send first inside the Noise stream.
type EarlyNoise struct {
	// NodeKeyChallenge is a per-connection key the server wants node keys proven against.
	NodeKeyChallenge key.ChallengePublic `json:"nodeKeyChallenge"`
}

const (
	earlyMagic     = "\xff\xff\xffTS"
	earlyHeaderLen = 9 // magic + BE uint32; same size as an HTTP/2 frame header
	maxEarlyLen    = 10 << 20
)

// readEarlyPayload reads the optional early payload at the start of r. If the
// stream does not start with the magic, it returns the bytes it consumed in
// replay (backed by hdr) so the caller can hand them to the next reader.
func readEarlyPayload(r io.Reader, hdr *[earlyHeaderLen]byte) (early *EarlyNoise, replay []byte, err error) {
	if _, err := io.ReadFull(r, hdr[:]); err != nil {
		return nil, nil, fmt.Errorf("reading early payload header: %w", err)
	}
	if !bytes.HasPrefix(hdr[:], []byte(earlyMagic)) {
		return nil, hdr[:], nil
	}
	n := binary.BigEndian.Uint32(hdr[len(earlyMagic):])
	if n > maxEarlyLen {
		return nil, nil, fmt.Errorf("early payload of %d bytes exceeds 10 MiB", n)
	}
	// ReadAll grows as data arrives, so a lying length costs no big allocation up front.
	body, err := io.ReadAll(io.LimitReader(r, int64(n)))
	if err != nil {
		return nil, nil, fmt.Errorf("reading early payload: %w", err)
	}
	if len(body) != int(n) {
		return nil, nil, fmt.Errorf("reading early payload: %w", io.ErrUnexpectedEOF)
	}
	early = new(EarlyNoise)
	if err := json.Unmarshal(body, early); err != nil {
		return nil, nil, fmt.Errorf("parsing early payload: %w", err)
	}
	return early, nil, nil
}
