package ts2021

import (
	"crypto/cipher"
	"encoding/binary"
	"errors"
	"fmt"
	"hash"
	"io"
	"strconv"

	"github.com/skeinvpn/skein/daemon/key"
	"golang.org/x/crypto/blake2s"
	"golang.org/x/crypto/chacha20poly1305"
	"golang.org/x/crypto/hkdf"
)

const protocolName = "Noise_IK_25519_ChaChaPoly_BLAKE2s"

func prologue(version uint16) []byte {
	return []byte("Tailscale Control Protocol v" + strconv.Itoa(int(version)))
}

func newBLAKE2s() hash.Hash {
	h, err := blake2s.New256(nil) // nil key: plain hash, as HMAC needs
	if err != nil {
		panic(err) // only fails for an over-long key
	}
	return h
}

// symmetricState is the Noise SymmetricState. Every cipher key it derives is
// used for exactly one message, so the handshake nonce is always zero.
type symmetricState struct {
	h  [32]byte
	ck [32]byte
}

func (s *symmetricState) init(version uint16, serverStatic key.Raw) {
	s.h = blake2s.Sum256([]byte(protocolName)) // name is > 32 bytes, so hashed
	s.ck = s.h
	s.mixHash(prologue(version))
	s.mixHash(serverStatic[:]) // pre-message: <- s
}

func (s *symmetricState) mixHash(data []byte) {
	h := newBLAKE2s()
	h.Write(s.h[:])
	h.Write(data)
	h.Sum(s.h[:0])
}

// mixDH mixes X25519(priv, pub) into ck and returns the new cipher key.
func (s *symmetricState) mixDH(priv, pub key.Raw) ([32]byte, error) {
	var k [32]byte
	dh, err := key.DH(priv, pub)
	if err != nil {
		return k, err
	}
	s.ck, k = hkdf2(s.ck, dh[:])
	return k, nil
}

func (s *symmetricState) encryptAndHash(k [32]byte, dst, plaintext []byte) []byte {
	var nonce [chacha20poly1305.NonceSize]byte
	out := newAEAD(k).Seal(dst, nonce[:], plaintext, s.h[:])
	s.mixHash(out[len(dst):])
	return out
}

func (s *symmetricState) decryptAndHash(k [32]byte, ciphertext []byte) ([]byte, error) {
	var nonce [chacha20poly1305.NonceSize]byte
	pt, err := newAEAD(k).Open(nil, nonce[:], ciphertext, s.h[:])
	if err != nil {
		return nil, err
	}
	s.mixHash(ciphertext)
	return pt, nil
}

func (s *symmetricState) split() (k1, k2 [32]byte) {
	return hkdf2(s.ck, nil)
}

// hkdf2 is the Noise HKDF with two outputs (RFC 5869 with empty info).
func hkdf2(ck [32]byte, ikm []byte) (a, b [32]byte) {
	r := hkdf.New(newBLAKE2s, ikm, ck[:], nil)
	if _, err := io.ReadFull(r, a[:]); err != nil {
		panic(err) // 64 bytes is far below HKDF's limit
	}
	if _, err := io.ReadFull(r, b[:]); err != nil {
		panic(err)
	}
	return a, b
}

func newAEAD(k [32]byte) cipher.AEAD {
	a, err := chacha20poly1305.New(k[:])
	if err != nil {
		panic(err) // key size is fixed
	}
	return a
}

// clientHandshake is the initiator side of IK between sending message 1 and
// receiving message 2. Kept network-free so it can be tested directly.
type clientHandshake struct {
	s         symmetricState
	static    key.MachinePrivate
	ephemeral key.MachinePrivate
}

// startHandshake builds the 101-byte initiation: -> e, es, s, ss.
func startHandshake(static key.MachinePrivate, server key.MachinePublic, version uint16) (*clientHandshake, [initiationLen]byte, error) {
	var msg [initiationLen]byte
	if static.IsZero() {
		return nil, msg, errors.New("zero machine key")
	}
	if server.IsZero() {
		return nil, msg, errors.New("zero server key")
	}
	hs := &clientHandshake{static: static, ephemeral: key.NewMachine()}
	hs.s.init(version, server.Raw())

	binary.BigEndian.PutUint16(msg[0:2], version)
	msg[2] = msgTypeInitiation
	binary.BigEndian.PutUint16(msg[3:5], initiationLen-5)

	epub := hs.ephemeral.Public().Raw()
	copy(msg[5:37], epub[:])
	hs.s.mixHash(epub[:])
	k, err := hs.s.mixDH(hs.ephemeral.Raw(), server.Raw()) // es
	if err != nil {
		return nil, msg, fmt.Errorf("computing es: %w", err)
	}
	spub := static.Public().Raw()
	hs.s.encryptAndHash(k, msg[37:37], spub[:])
	k, err = hs.s.mixDH(static.Raw(), server.Raw()) // ss
	if err != nil {
		return nil, msg, fmt.Errorf("computing ss: %w", err)
	}
	hs.s.encryptAndHash(k, msg[85:85], nil)
	return hs, msg, nil
}

// finish processes the 48-byte response payload (<- e, ee, se) and returns
// the transport ciphers: tx for client→server, rx for server→client.
func (hs *clientHandshake) finish(payload []byte) (tx, rx cipher.AEAD, err error) {
	if len(payload) != responsePayLen {
		return nil, nil, fmt.Errorf("handshake response payload is %d bytes, want %d", len(payload), responsePayLen)
	}
	var re key.Raw
	copy(re[:], payload[:32])
	hs.s.mixHash(re[:])
	if _, err := hs.s.mixDH(hs.ephemeral.Raw(), re); err != nil { // ee
		return nil, nil, fmt.Errorf("computing ee: %w", err)
	}
	k, err := hs.s.mixDH(hs.static.Raw(), re) // se
	if err != nil {
		return nil, nil, fmt.Errorf("computing se: %w", err)
	}
	if _, err := hs.s.decryptAndHash(k, payload[32:]); err != nil {
		return nil, nil, errors.New("handshake response failed authentication (wrong server key?)")
	}
	k1, k2 := hs.s.split()
	hs.ephemeral = key.MachinePrivate{} // forward secrecy: drop it as soon as we can
	return newAEAD(k1), newAEAD(k2), nil
}
