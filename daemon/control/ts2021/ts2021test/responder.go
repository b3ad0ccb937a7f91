// Package ts2021test is a server side of Tailscale's control transport (ts2021: a Noise IK
// handshake in an HTTP upgrade, then encrypted records) for tests: the client's own tests and
// the fake control servers. It is written from the protocol description rather than from the
// client code: HKDF is spelled out with crypto/hmac and the nonce is built byte by byte.
package ts2021test

import (
	"bufio"
	"crypto/cipher"
	"crypto/hmac"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"hash"
	"io"
	"net"
	"sync"
	"time"

	"golang.org/x/crypto/blake2s"
	"golang.org/x/crypto/chacha20poly1305"

	"github.com/skeinvpn/skein/daemon/key"
)

func blake(parts ...[]byte) [32]byte {
	h, _ := blake2s.New256(nil)
	for _, p := range parts {
		h.Write(p)
	}
	var out [32]byte
	h.Sum(out[:0])
	return out
}

func hmacBlake(k []byte, parts ...[]byte) [32]byte {
	m := hmac.New(func() hash.Hash { h, _ := blake2s.New256(nil); return h }, k)
	for _, p := range parts {
		m.Write(p)
	}
	var out [32]byte
	m.Sum(out[:0])
	return out
}

// hkdf is the two-output HKDF from the Noise spec, section 4.3.
func hkdf(ck [32]byte, ikm []byte) (a, b [32]byte) {
	prk := hmacBlake(ck[:], ikm)
	a = hmacBlake(prk[:], []byte{1})
	b = hmacBlake(prk[:], a[:], []byte{2})
	return a, b
}

func dh(priv, pub key.Raw) []byte {
	s, err := key.DH(priv, pub)
	if err != nil {
		return make([]byte, 32) // a low-order point: the handshake then fails
	}
	return s[:]
}

func aead(k [32]byte) cipher.AEAD {
	a, err := chacha20poly1305.New(k[:])
	if err != nil {
		panic(err)
	}
	return a
}

// Nonce builds 4 zero bytes followed by the big-endian counter, by hand.
func Nonce(n uint64) []byte {
	b := make([]byte, 12)
	for i := 0; i < 8; i++ {
		b[11-i] = byte(n >> (8 * i))
	}
	return b
}

// Respond runs the responder on a 101-byte initiation and returns the 51-byte
// response, the client's static key, the version and the server's rx/tx ciphers.
func Respond(serverPriv key.MachinePrivate, init []byte) (resp []byte, clientPub key.Raw, version uint16, rx, tx cipher.AEAD, err error) {
	if len(init) != 101 || init[2] != 1 || binary.BigEndian.Uint16(init[3:5]) != 96 {
		return nil, clientPub, 0, nil, nil, fmt.Errorf("bad initiation header % x", init[:min(5, len(init))])
	}
	version = binary.BigEndian.Uint16(init[0:2])
	spub := serverPriv.Public().Raw()
	zero := make([]byte, 12)

	h := blake([]byte("Noise_IK_25519_ChaChaPoly_BLAKE2s"))
	ck := h
	h = blake(h[:], []byte(fmt.Sprintf("Tailscale Control Protocol v%d", version)))
	h = blake(h[:], spub[:])

	var ce key.Raw
	copy(ce[:], init[5:37])
	h = blake(h[:], ce[:])
	ck, k := hkdf(ck, dh(serverPriv.Raw(), ce))
	cs, err := aead(k).Open(nil, zero, init[37:85], h[:])
	if err != nil {
		return nil, clientPub, 0, nil, nil, errors.New("cannot decrypt client static key")
	}
	copy(clientPub[:], cs)
	h = blake(h[:], init[37:85])
	ck, k = hkdf(ck, dh(serverPriv.Raw(), clientPub))
	if _, err := aead(k).Open(nil, zero, init[85:101], h[:]); err != nil {
		return nil, clientPub, 0, nil, nil, errors.New("bad initiation tag")
	}
	h = blake(h[:], init[85:101])

	e := key.NewMachine()
	epub := e.Public().Raw()
	resp = append([]byte{2, 0, 48}, epub[:]...)
	h = blake(h[:], epub[:])
	ck, _ = hkdf(ck, dh(e.Raw(), ce))        // ee
	ck, k = hkdf(ck, dh(e.Raw(), clientPub)) // se
	resp = aead(k).Seal(resp, zero, nil, h[:])
	k1, k2 := hkdf(ck, nil)
	return resp, clientPub, version, aead(k1), aead(k2), nil
}

// Conn is the server's view of the transport.
type Conn struct {
	NC       net.Conn
	BR       *bufio.Reader
	rx, tx   cipher.AEAD
	RxN, TxN uint64 // records received and sent
	Client   key.Raw
	Version  uint16
}

// NewConn is the server side of an established transport: the hijacked connection and its
// buffered reader, and the ciphers Respond returned.
func NewConn(nc net.Conn, br *bufio.Reader, rx, tx cipher.AEAD, client key.Raw, version uint16) *Conn {
	return &Conn{NC: nc, BR: br, rx: rx, tx: tx, Client: client, Version: version}
}

// record encrypts p as one record frame (without sending it).
func (s *Conn) Record(p []byte) []byte {
	ct := s.tx.Seal(nil, Nonce(s.TxN), p, nil)
	s.TxN++
	return append([]byte{4, byte(len(ct) >> 8), byte(len(ct))}, ct...)
}

func (s *Conn) WriteRecord(p []byte) error {
	_, err := s.NC.Write(s.Record(p))
	return err
}

// readRecord returns one record's plaintext.
func (s *Conn) ReadRecord() ([]byte, error) {
	var hdr [3]byte
	if _, err := io.ReadFull(s.BR, hdr[:]); err != nil {
		return nil, err
	}
	if hdr[0] != 4 {
		return nil, fmt.Errorf("record type %d", hdr[0])
	}
	n := int(hdr[1])<<8 | int(hdr[2])
	if n+3 > 4096 {
		return nil, fmt.Errorf("client sent a %d-byte frame", n+3)
	}
	ct := make([]byte, n)
	if _, err := io.ReadFull(s.BR, ct); err != nil {
		return nil, err
	}
	pt, err := s.rx.Open(nil, Nonce(s.RxN), ct, nil)
	if err != nil {
		return nil, fmt.Errorf("record %d: %v", s.RxN, err)
	}
	s.RxN++
	return pt, nil
}

// NetConn is the transport as a net.Conn (records of at most 4077 bytes), e.g. for http2.Server.
func (s *Conn) NetConn() net.Conn { return &netConn{s: s} }

// netConn turns the responder's transport into a net.Conn.
type netConn struct {
	s   *Conn
	buf []byte
	wmu sync.Mutex
}

func (c *netConn) Read(p []byte) (int, error) {
	for len(c.buf) == 0 {
		r, err := c.s.ReadRecord()
		if err != nil {
			return 0, err
		}
		c.buf = r
	}
	n := copy(p, c.buf)
	c.buf = c.buf[n:]
	return n, nil
}

func (c *netConn) Write(p []byte) (int, error) {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	for off := 0; off < len(p); off += 4077 {
		if err := c.s.WriteRecord(p[off:min(len(p), off+4077)]); err != nil {
			return off, err
		}
	}
	return len(p), nil
}

func (c *netConn) Close() error                       { return c.s.NC.Close() }
func (c *netConn) LocalAddr() net.Addr                { return c.s.NC.LocalAddr() }
func (c *netConn) RemoteAddr() net.Addr               { return c.s.NC.RemoteAddr() }
func (c *netConn) SetDeadline(t time.Time) error      { return c.s.NC.SetDeadline(t) }
func (c *netConn) SetReadDeadline(t time.Time) error  { return c.s.NC.SetReadDeadline(t) }
func (c *netConn) SetWriteDeadline(t time.Time) error { return c.s.NC.SetWriteDeadline(t) }

// NewChallenge returns a random node-key challenge for the early payload.
func NewChallenge() key.ChallengePublic {
	var c key.ChallengePublic
	pub := key.NewNode().Public().Raw()
	if err := c.UnmarshalText(fmt.Appendf(nil, "chalpub:%x", pub[:])); err != nil {
		panic(err)
	}
	return c
}

// EarlyPayload is the server's first record: the magic, a length and the JSON with the
// node-key challenge.
func EarlyPayload(chal key.ChallengePublic) []byte {
	j, err := json.Marshal(struct{ NodeKeyChallenge key.ChallengePublic }{chal})
	if err != nil {
		panic(err)
	}
	b := append([]byte("\xff\xff\xffTS"), 0, 0, 0, 0)
	binary.BigEndian.PutUint32(b[5:], uint32(len(j)))
	return append(b, j...)
}
