package derp

import (
	"bufio"
	"bytes"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"testing"

	"golang.org/x/crypto/nacl/box"

	"github.com/skeinvpn/skein/daemon/key"
	"github.com/skeinvpn/skein/daemon/wire"
)

// testServer is just enough of a DERP server for the client tests. Its framing is written
// independently of frame.go so that a codec bug is not mirrored on both sides.
type testServer struct {
	t    testing.TB
	priv key.NodePrivate
	pub  key.NodePublic
	hs   *httptest.Server
	// admit, when set, decides whether a client key may connect.
	admit func(key.NodePublic) bool

	mu         sync.Mutex
	clients    map[key.NodePublic]*serverConn
	all        map[*serverConn]bool
	accepted   int
	preferred  map[key.NodePublic][]bool // NotePreferred values, in order
	infos      []string                  // client info JSON, in order
	fastStarts int
	pongs      chan [8]byte
}

type serverConn struct {
	s        *testServer
	nc       net.Conn
	br       *bufio.Reader
	key      key.NodePublic
	wmu      sync.Mutex
	sentFrom map[key.NodePublic]bool // guarded by s.mu
}

func newTestServer(t testing.TB) *testServer {
	s := newTestServerUnstarted(t)
	s.hs.StartTLS()
	t.Cleanup(s.close)
	return s
}

func newTestServerUnstarted(t testing.TB) *testServer {
	priv := key.NewNode()
	s := &testServer{
		t:         t,
		priv:      priv,
		pub:       priv.Public(),
		clients:   map[key.NodePublic]*serverConn{},
		all:       map[*serverConn]bool{},
		preferred: map[key.NodePublic][]bool{},
		pongs:     make(chan [8]byte, 16),
	}
	s.hs = httptest.NewUnstartedServer(http.HandlerFunc(s.serveHTTP))
	s.hs.Config.ErrorLog = log.New(io.Discard, "", 0) // handshake failures are expected
	return s
}

func (s *testServer) close() {
	s.dropAll()
	s.hs.Close()
}

// node describes the server as a DERP map entry (by IP, port from the listener).
func (s *testServer) node() *wire.DERPNode {
	u, _ := url.Parse(s.hs.URL)
	port, _ := strconv.Atoi(u.Port())
	return &wire.DERPNode{Name: "t1", RegionID: 900, HostName: u.Hostname(), DERPPort: port}
}

func (s *testServer) tlsConfig() *tls.Config {
	pool := x509.NewCertPool()
	pool.AddCert(s.hs.Certificate())
	return &tls.Config{RootCAs: pool}
}

func (s *testServer) serveHTTP(w http.ResponseWriter, r *http.Request) {
	if r.URL.Path != "/derp" || !strings.EqualFold(r.Header.Get("Upgrade"), "derp") ||
		!strings.Contains(strings.ToLower(r.Header.Get("Connection")), "upgrade") {
		http.Error(w, "DERP requires connection upgrade", http.StatusUpgradeRequired)
		return
	}
	nc, brw, err := w.(http.Hijacker).Hijack()
	if err != nil {
		return
	}
	if r.Header.Get("Derp-Fast-Start") == "1" {
		s.mu.Lock()
		s.fastStarts++
		s.mu.Unlock()
	} else {
		fmt.Fprintf(nc, "HTTP/1.1 101 Switching Protocols\r\nUpgrade: DERP\r\nConnection: Upgrade\r\n"+
			"Derp-Version: 2\r\nDerp-Public-Key: %x\r\n\r\n", s.pub.Raw())
	}
	sc := &serverConn{s: s, nc: nc, br: brw.Reader, sentFrom: map[key.NodePublic]bool{}}
	sc.serve()
}

func (sc *serverConn) writeFrame(t byte, parts ...[]byte) error {
	var buf bytes.Buffer
	n := 0
	for _, p := range parts {
		n += len(p)
	}
	buf.WriteByte(t)
	binary.Write(&buf, binary.BigEndian, uint32(n))
	for _, p := range parts {
		buf.Write(p)
	}
	sc.wmu.Lock()
	defer sc.wmu.Unlock()
	_, err := sc.nc.Write(buf.Bytes())
	return err
}

func (sc *serverConn) readFrame() (byte, []byte, error) {
	var hdr [5]byte
	if _, err := io.ReadFull(sc.br, hdr[:]); err != nil {
		return 0, nil, err
	}
	n := binary.BigEndian.Uint32(hdr[1:])
	if n > 256<<10 {
		return 0, nil, errors.New("frame too large")
	}
	b := make([]byte, n)
	_, err := io.ReadFull(sc.br, b)
	return hdr[0], b, err
}

func (sc *serverConn) serve() {
	s := sc.s
	defer sc.nc.Close()
	spub := s.pub.Raw()
	if sc.writeFrame(0x01, []byte(magic), spub[:]) != nil {
		return
	}
	t, b, err := sc.readFrame()
	if err != nil || t != 0x02 || len(b) < 32+24 {
		s.t.Logf("test server: bad client info frame: type %#x len %d err %v", t, len(b), err)
		return
	}
	var ck [32]byte
	copy(ck[:], b[:32])
	var n24 [24]byte
	copy(n24[:], b[32:56])
	spriv := s.priv.Raw()
	msg, ok := box.Open(nil, b[56:], &n24, &ck, (*[32]byte)(&spriv))
	if !ok {
		s.t.Logf("test server: cannot open client info")
		return
	}
	sc.key = key.NodePublicFromRaw(ck)
	if s.admit != nil && !s.admit(sc.key) {
		return
	}
	s.mu.Lock()
	s.infos = append(s.infos, string(msg))
	s.mu.Unlock()

	// Registered before ServerInfo so tests can inject frames as soon as Dial returns.
	s.mu.Lock()
	s.accepted++
	s.clients[sc.key] = sc
	s.all[sc] = true
	s.mu.Unlock()
	defer s.remove(sc)

	var out [24]byte
	rand.Read(out[:])
	info, _ := json.Marshal(map[string]int{"version": 2})
	sealed := box.Seal(out[:], info, &out, &ck, (*[32]byte)(&spriv))
	if sc.writeFrame(0x03, sealed) != nil {
		return
	}

	for {
		t, b, err := sc.readFrame()
		if err != nil {
			return
		}
		switch t {
		case 0x04: // SendPacket
			if len(b) < 32 {
				return
			}
			dst := key.NodePublicFromRaw(key.Raw(b[:32]))
			s.mu.Lock()
			peer := s.clients[dst]
			if peer != nil {
				peer.sentFrom[sc.key] = true
			}
			s.mu.Unlock()
			src := sc.key.Raw()
			switch {
			case peer != nil:
				peer.writeFrame(0x05, src[:], b[32:])
			case looksLikeDisco(b[32:]):
				sc.writeFrame(0x08, b[:32], []byte{0x01})
			}
		case 0x07:
			s.mu.Lock()
			s.preferred[sc.key] = append(s.preferred[sc.key], len(b) > 0 && b[0] != 0)
			s.mu.Unlock()
		case 0x12: // Ping
			if len(b) >= 8 {
				sc.writeFrame(0x13, b[:8])
			}
		case 0x13: // Pong
			var p [8]byte
			copy(p[:], b)
			select {
			case s.pongs <- p:
			default:
			}
		}
	}
}

func looksLikeDisco(b []byte) bool {
	return len(b) >= 62 && string(b[:6]) == "TS\xf0\x9f\x92\xac"
}

func (s *testServer) remove(sc *serverConn) {
	s.mu.Lock()
	delete(s.all, sc)
	if s.clients[sc.key] != sc {
		s.mu.Unlock()
		return
	}
	delete(s.clients, sc.key)
	var notify []*serverConn
	for _, other := range s.clients {
		if other.sentFrom[sc.key] {
			delete(other.sentFrom, sc.key)
			notify = append(notify, other)
		}
	}
	s.mu.Unlock()
	k := sc.key.Raw()
	for _, o := range notify {
		o.writeFrame(0x08, k[:], []byte{0x00})
	}
}

// dropAll closes every client connection, as a server restart would.
func (s *testServer) dropAll() {
	s.mu.Lock()
	defer s.mu.Unlock()
	for sc := range s.all {
		sc.nc.Close()
	}
}

// inject writes a raw frame to the client with key k.
func (s *testServer) inject(k key.NodePublic, t byte, payload []byte) error {
	s.mu.Lock()
	sc := s.clients[k]
	s.mu.Unlock()
	if sc == nil {
		return fmt.Errorf("no client %v", k.ShortString())
	}
	return sc.writeFrame(t, payload)
}

func (s *testServer) stats() (accepted int, preferred map[key.NodePublic][]bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	p := map[key.NodePublic][]bool{}
	for k, v := range s.preferred {
		p[k] = append([]bool(nil), v...)
	}
	return s.accepted, p
}

func (s *testServer) connected(k key.NodePublic) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.clients[k] != nil
}
