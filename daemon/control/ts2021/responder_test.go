package ts2021

// An independent server side of the handshake and transport, written from the
// protocol description rather than from the client code: HKDF is spelled out
// with crypto/hmac and the nonce is built byte by byte.

import (
	"bufio"
	"crypto/cipher"
	"crypto/hmac"
	"encoding/base64"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"hash"
	"io"
	"log"
	"net"
	"net/http"
	"net/http/httptest"
	"sync"
	"testing"

	"github.com/skeinvpn/skein/daemon/key"
	"golang.org/x/crypto/blake2s"
	"golang.org/x/crypto/chacha20poly1305"
)

func tBlake(parts ...[]byte) [32]byte {
	h, _ := blake2s.New256(nil)
	for _, p := range parts {
		h.Write(p)
	}
	var out [32]byte
	h.Sum(out[:0])
	return out
}

func tHMAC(k []byte, parts ...[]byte) [32]byte {
	m := hmac.New(func() hash.Hash { h, _ := blake2s.New256(nil); return h }, k)
	for _, p := range parts {
		m.Write(p)
	}
	var out [32]byte
	m.Sum(out[:0])
	return out
}

// tHKDF is the two-output HKDF from the Noise spec, section 4.3.
func tHKDF(ck [32]byte, ikm []byte) (a, b [32]byte) {
	prk := tHMAC(ck[:], ikm)
	a = tHMAC(prk[:], []byte{1})
	b = tHMAC(prk[:], a[:], []byte{2})
	return a, b
}

func tDH(t testing.TB, priv, pub key.Raw) []byte {
	s, err := key.DH(priv, pub)
	if err != nil {
		t.Errorf("responder DH: %v", err)
	}
	return s[:]
}

func tAEAD(k [32]byte) cipher.AEAD {
	a, err := chacha20poly1305.New(k[:])
	if err != nil {
		panic(err)
	}
	return a
}

// tNonce builds 4 zero bytes followed by the big-endian counter, by hand.
func tNonce(n uint64) []byte {
	b := make([]byte, 12)
	for i := 0; i < 8; i++ {
		b[11-i] = byte(n >> (8 * i))
	}
	return b
}

// respond runs the responder on a 101-byte initiation and returns the 51-byte
// response, the client's static key, the version and the server's rx/tx ciphers.
func respond(t testing.TB, serverPriv key.MachinePrivate, init []byte) (resp []byte, clientPub key.Raw, version uint16, rx, tx cipher.AEAD, err error) {
	if len(init) != 101 || init[2] != 1 || binary.BigEndian.Uint16(init[3:5]) != 96 {
		return nil, clientPub, 0, nil, nil, fmt.Errorf("bad initiation header % x", init[:min(5, len(init))])
	}
	version = binary.BigEndian.Uint16(init[0:2])
	spub := serverPriv.Public().Raw()
	zero := make([]byte, 12)

	h := tBlake([]byte("Noise_IK_25519_ChaChaPoly_BLAKE2s"))
	ck := h
	h = tBlake(h[:], []byte(fmt.Sprintf("Tailscale Control Protocol v%d", version)))
	h = tBlake(h[:], spub[:])

	var ce key.Raw
	copy(ce[:], init[5:37])
	h = tBlake(h[:], ce[:])
	ck, k := tHKDF(ck, tDH(t, serverPriv.Raw(), ce))
	cs, err := tAEAD(k).Open(nil, zero, init[37:85], h[:])
	if err != nil {
		return nil, clientPub, 0, nil, nil, errors.New("cannot decrypt client static key")
	}
	copy(clientPub[:], cs)
	h = tBlake(h[:], init[37:85])
	ck, k = tHKDF(ck, tDH(t, serverPriv.Raw(), clientPub))
	if _, err := tAEAD(k).Open(nil, zero, init[85:101], h[:]); err != nil {
		return nil, clientPub, 0, nil, nil, errors.New("bad initiation tag")
	}
	h = tBlake(h[:], init[85:101])

	e := key.NewMachine()
	epub := e.Public().Raw()
	resp = append([]byte{2, 0, 48}, epub[:]...)
	h = tBlake(h[:], epub[:])
	ck, _ = tHKDF(ck, tDH(t, e.Raw(), ce))        // ee
	ck, k = tHKDF(ck, tDH(t, e.Raw(), clientPub)) // se
	resp = tAEAD(k).Seal(resp, zero, nil, h[:])
	k1, k2 := tHKDF(ck, nil)
	return resp, clientPub, version, tAEAD(k1), tAEAD(k2), nil
}

// srvConn is the server's view of the transport.
type srvConn struct {
	t        testing.TB
	nc       net.Conn
	br       *bufio.Reader
	rx, tx   cipher.AEAD
	rxN, txN uint64
	client   key.Raw
	version  uint16
}

// record encrypts p as one record frame (without sending it).
func (s *srvConn) record(p []byte) []byte {
	ct := s.tx.Seal(nil, tNonce(s.txN), p, nil)
	s.txN++
	return append([]byte{4, byte(len(ct) >> 8), byte(len(ct))}, ct...)
}

func (s *srvConn) writeRecord(p []byte) error {
	_, err := s.nc.Write(s.record(p))
	return err
}

// readRecord returns one record's plaintext.
func (s *srvConn) readRecord() ([]byte, error) {
	var hdr [3]byte
	if _, err := io.ReadFull(s.br, hdr[:]); err != nil {
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
	if _, err := io.ReadFull(s.br, ct); err != nil {
		return nil, err
	}
	pt, err := s.rx.Open(nil, tNonce(s.rxN), ct, nil)
	if err != nil {
		return nil, fmt.Errorf("record %d: %v", s.rxN, err)
	}
	s.rxN++
	return pt, nil
}

type srvOpts struct {
	head            string   // replaces the 101 head, e.g. a 404
	errMsg          string   // send a type-0x03 frame instead of the response
	corruptResponse bool     // flip a bit in the response tag
	early           [][]byte // plaintext records sent right after the response; nil = standard early payload
	noHandshake     bool     // hijack and then say nothing
	run             func(s *srvConn)
}

type testServer struct {
	*httptest.Server
	priv key.MachinePrivate
	chal key.ChallengePublic
	wg   sync.WaitGroup // hijacked handlers, which httptest does not wait for
}

func mustChallenge(t testing.TB) key.ChallengePublic {
	var c key.ChallengePublic
	pub := key.NewNode().Public().Raw()
	if err := c.UnmarshalText(fmt.Appendf(nil, "chalpub:%x", pub[:])); err != nil {
		t.Fatal(err)
	}
	return c
}

func earlyPayloadBytes(t testing.TB, chal key.ChallengePublic) []byte {
	j, err := json.Marshal(EarlyNoise{NodeKeyChallenge: chal})
	if err != nil {
		t.Fatal(err)
	}
	b := append([]byte("\xff\xff\xffTS"), 0, 0, 0, 0)
	binary.BigEndian.PutUint32(b[5:], uint32(len(j)))
	return append(b, j...)
}

func newTestServer(t *testing.T, tlsOn bool, o srvOpts) *testServer {
	ts := &testServer{priv: key.NewMachine(), chal: mustChallenge(t)}
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		ts.wg.Add(1)
		defer ts.wg.Done()
		if r.Method != "POST" || r.URL.Path != "/ts2021" || r.URL.RawQuery != "" {
			t.Errorf("request %s %s", r.Method, r.URL)
		}
		if r.Header.Get("Upgrade") != "tailscale-control-protocol" || r.Header.Get("Connection") != "upgrade" {
			t.Errorf("upgrade headers: %q", r.Header)
		}
		init, err := base64.StdEncoding.DecodeString(r.Header.Get("X-Tailscale-Handshake"))
		if err != nil {
			t.Errorf("handshake header: %v", err)
		}
		nc, brw, err := w.(http.Hijacker).Hijack()
		if err != nil {
			t.Errorf("hijack: %v", err)
			return
		}
		defer nc.Close()
		if o.noHandshake {
			io.Copy(io.Discard, nc) // until the client gives up
			return
		}
		out := []byte("HTTP/1.1 101 Switching Protocols\r\nUpgrade: tailscale-control-protocol\r\nConnection: upgrade\r\n\r\n")
		if o.head != "" {
			out = []byte(o.head)
		}
		resp, client, version, rx, tx, err := respond(t, ts.priv, init)
		if err != nil {
			nc.Write(out) // like a server that upgrades and then hangs up
			return
		}
		s := &srvConn{t: t, nc: nc, br: brw.Reader, rx: rx, tx: tx, client: client, version: version}
		switch {
		case o.errMsg != "":
			out = append(out, 3, byte(len(o.errMsg)>>8), byte(len(o.errMsg)))
			out = append(out, o.errMsg...)
		case o.corruptResponse:
			resp[len(resp)-1] ^= 1
			out = append(out, resp...)
		default:
			out = append(out, resp...)
			early := o.early
			if early == nil {
				early = [][]byte{earlyPayloadBytes(t, ts.chal)}
			}
			for _, p := range early {
				out = append(out, s.record(p)...)
			}
		}
		// One write, so the Noise bytes ride in the same segment as the 101.
		if _, err := nc.Write(out); err != nil {
			return
		}
		if o.run != nil {
			o.run(s)
		}
	})
	ts.Server = httptest.NewUnstartedServer(h)
	ts.Config.ErrorLog = log.New(io.Discard, "", 0) // TLS failures are expected in some tests
	if tlsOn {
		ts.StartTLS()
	} else {
		ts.Start()
	}
	t.Cleanup(func() { ts.Close(); ts.wg.Wait() })
	return ts
}

func (ts *testServer) opts() DialOptions {
	return DialOptions{ServerURL: ts.URL, MachineKey: key.NewMachine(), ServerKey: ts.priv.Public()}
}
