package disco

import (
	"crypto/rand"

	"golang.org/x/crypto/nacl/box"

	"github.com/skeinvpn/skein/daemon/key"
)

// SharedKey is the NaCl box key of one (peer, self) disco key pair. Computing it costs an
// X25519 multiplication, so callers keep one per peer rather than per packet.
type SharedKey struct{ k [32]byte }

// weakShared is what box.Precompute yields for a low-order peer key: a constant anyone can
// compute, so such a key would let third parties forge and read that peer's messages.
var weakShared = func() (k [32]byte) {
	var zero [32]byte
	box.Precompute(&k, &zero, &zero)
	return k
}()

// Precompute returns the shared key for talking to peer with our key mine, or nil if
// peer is a low-order (or zero) point and must not be used.
func Precompute(peer key.DiscoPublic, mine key.DiscoPrivate) *SharedKey {
	pub, priv := [32]byte(peer.Raw()), [32]byte(mine.Raw())
	s := new(SharedKey)
	box.Precompute(&s.k, &pub, &priv)
	if s.k == weakShared {
		return nil
	}
	return s
}

// Seal appends to dst the whole packet carrying m from self, boxed under shared with a
// random nonce. With a nil shared key it returns dst unchanged.
func Seal(dst []byte, self key.DiscoPublic, shared *SharedKey, m Message) []byte {
	if shared == nil {
		return dst
	}
	var nonce [NonceLen]byte
	if _, err := rand.Read(nonce[:]); err != nil {
		panic("disco: no randomness: " + err.Error())
	}
	var buf [128]byte // pings and pongs fit; padded pings and long lists grow it
	plain := AppendMarshal(buf[:0], m)
	dst = append(dst, Magic...)
	k := self.Raw()
	dst = append(dst, k[:]...)
	dst = append(dst, nonce[:]...)
	return box.SealAfterPrecomputation(dst, plain, &nonce, &shared.k)
}

// Open authenticates and decrypts pkt (as from Seal) and parses the message. It does not
// check that the sender key in the header belongs to shared: a box under another key
// fails to open. The result does not alias pkt.
func Open(pkt []byte, shared *SharedKey) (Message, error) {
	if !LooksLikeDisco(pkt) {
		return nil, ErrNotDisco
	}
	if shared == nil || len(pkt) < HeaderLen+Overhead {
		return nil, ErrDecrypt
	}
	nonce := [NonceLen]byte(pkt[MagicLen+KeyLen : HeaderLen])
	var buf [128]byte
	plain, ok := box.OpenAfterPrecomputation(buf[:0], pkt[HeaderLen:], &nonce, &shared.k)
	if !ok {
		return nil, ErrDecrypt
	}
	return Parse(plain)
}
