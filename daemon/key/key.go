// Package key holds the Curve25519 key types of the Tailscale protocol
// (machine, node and disco keys) and their prefixed text forms.
package key

import (
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"strings"

	"golang.org/x/crypto/curve25519"
)

// Raw is a 32-byte Curve25519 key (private or public).
type Raw [32]byte

// IsZero reports whether every byte is zero.
func (r Raw) IsZero() bool { return r == Raw{} }

func newPrivate() Raw {
	var k Raw
	if _, err := rand.Read(k[:]); err != nil {
		panic("key: no randomness: " + err.Error())
	}
	clamp(&k)
	return k
}

// clamp applies the X25519 scalar clamping the protocol expects of private keys.
func clamp(k *Raw) {
	k[0] &= 248
	k[31] = (k[31] & 127) | 64
}

func public(priv Raw) Raw {
	var pub Raw
	out, err := curve25519.X25519(priv[:], curve25519.Basepoint)
	if err != nil {
		// Only a low-order result fails; the basepoint never yields one.
		panic("key: " + err.Error())
	}
	copy(pub[:], out)
	return pub
}

func appendText(prefix string, k Raw) []byte {
	b := make([]byte, 0, len(prefix)+64)
	b = append(b, prefix...)
	return hex.AppendEncode(b, k[:])
}

func parseText(prefix string, text []byte) (Raw, error) {
	var k Raw
	s := string(text)
	if !strings.HasPrefix(s, prefix) {
		return k, fmt.Errorf("key: missing prefix %q", prefix)
	}
	s = s[len(prefix):]
	if len(s) != 64 {
		return k, errors.New("key: want 64 hex digits")
	}
	if _, err := hex.Decode(k[:], []byte(s)); err != nil {
		return k, fmt.Errorf("key: %w", err)
	}
	return k, nil
}

// DH returns the X25519 shared secret of priv and pub.
func DH(priv, pub Raw) ([32]byte, error) {
	var out [32]byte
	s, err := curve25519.X25519(priv[:], pub[:])
	if err != nil {
		return out, err
	}
	copy(out[:], s)
	return out, nil
}

// lowOrderScalar is a clamped scalar (a multiple of the cofactor 8): X25519 of it and a point
// of small order is zero, which X25519 reports as an error, and never so for a real key.
var lowOrderScalar = func() Raw {
	var s Raw
	for i := range s {
		s[i] = 0x5a
	}
	clamp(&s)
	return s
}()

// LowOrder reports whether k is a point of small order (the zero key among them): a
// Diffie-Hellman with it gives a known result, so no handshake may ever use it.
func (k NodePublic) LowOrder() bool {
	_, err := curve25519.X25519(lowOrderScalar[:], k.k[:])
	return err != nil
}
