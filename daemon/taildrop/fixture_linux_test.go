package taildrop

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// Test peers, told apart by their loopback source address.
var (
	alice    = Peer{StableID: "nALICE1CNTRL", Name: "alice-laptop", UserID: 1}
	alice2   = Peer{StableID: "nALICE2CNTRL", Name: "alice-phone", UserID: 1}
	mallory  = Peer{StableID: "nMALLORYCNTRL", Name: "mallory", UserID: 2}
	tagged   = Peer{StableID: "nTAGCNTRL", Name: "server", UserID: 1, Tagged: true}
	testPeer = map[string]Peer{
		"127.0.0.1": alice, "127.0.0.2": alice2, "127.0.0.3": mallory, "127.0.0.4": tagged,
	}
	selfAddrs = []netip.Addr{netip.MustParseAddr("100.64.0.1"), netip.MustParseAddr("fd7a:115c:a1e0::1")}
)

const unknownSrc = "127.0.0.9"

type fixture struct {
	t    *testing.T
	dir  string
	in   *Inbox
	h    *Handler
	srv  *httptest.Server
	wire atomic.Int64 // bytes the server read from all connections

	logMu sync.Mutex
	logs  []string
}

type fixtureOpt func(*Handler)

func newFixture(t *testing.T, opts ...fixtureOpt) *fixture {
	t.Helper()
	return newFixtureAt(t, filepath.Join(t.TempDir(), "inbox"), opts...)
}

// newFixtureAt serves an inbox at dir.
func newFixtureAt(t *testing.T, dir string, opts ...fixtureOpt) *fixture {
	t.Helper()
	f := &fixture{t: t, dir: dir}
	in, err := OpenInbox(f.dir, f.logf)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { in.Close() })
	f.in = in
	f.h = &Handler{
		Inbox: in,
		Lookup: func(a netip.Addr) (Peer, bool) {
			p, ok := testPeer[a.String()]
			return p, ok
		},
		SelfAddrs: func() []netip.Addr { return selfAddrs },
		Allow: func(p Peer) error {
			if p.Tagged || p.UserID != 1 {
				return errors.New("Taildrop disabled; not allowed from this peer")
			}
			return nil
		},
		Reserve: -1,
		Logf:    f.logf,
	}
	for _, o := range opts {
		o(f.h)
	}
	f.srv = httptest.NewUnstartedServer(nil)
	f.srv.Config = NewServer(f.h)
	f.srv.Listener = &countingListener{Listener: f.srv.Listener, n: &f.wire}
	f.srv.Start()
	t.Cleanup(f.srv.Close)
	return f
}

func (f *fixture) logf(format string, args ...any) {
	f.logMu.Lock()
	f.logs = append(f.logs, fmt.Sprintf(format, args...))
	f.logMu.Unlock()
}

func (f *fixture) base() string { return f.srv.URL }

// client returns an HTTP client whose connections come from the loopback address src.
func (f *fixture) client(src string) *http.Client {
	d := &net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(src)}}
	return &http.Client{Transport: &http.Transport{DialContext: d.DialContext, DisableCompression: true}}
}

// dial opens a raw connection from src.
func (f *fixture) dial(src string) net.Conn {
	f.t.Helper()
	d := &net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(src)}}
	c, err := d.Dial("tcp", f.srv.Listener.Addr().String())
	if err != nil {
		f.t.Fatal(err)
	}
	f.t.Cleanup(func() { c.Close() })
	return c
}

type result struct {
	code int
	body string
	err  error
}

// do sends method rawPath from src with Host "peer" and the given body (nil: none; length -1:
// chunked) and extra headers.
func (f *fixture) do(src, method, rawPath string, body io.Reader, length int64, hdr ...string) result {
	f.t.Helper()
	req, err := http.NewRequest(method, f.base()+rawPath, body)
	if err != nil {
		f.t.Fatal(err)
	}
	req.Host = "peer"
	if body != nil {
		req.ContentLength = length
	}
	for i := 0; i+1 < len(hdr); i += 2 {
		if strings.EqualFold(hdr[i], "Host") {
			req.Host = hdr[i+1]
		} else {
			req.Header.Set(hdr[i], hdr[i+1])
		}
	}
	c := f.client(src)
	// A fresh client per request: its idle connection would count against the peer's share.
	defer c.CloseIdleConnections()
	resp, err := c.Do(req)
	if err != nil {
		return result{err: err}
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return result{code: resp.StatusCode, body: string(b)}
}

func (f *fixture) put(src, name string, data []byte, hdr ...string) result {
	f.t.Helper()
	return f.do(src, "PUT", "/v0/put/"+escape(name), strings.NewReader(string(data)), int64(len(data)), hdr...)
}

// escape escapes name as the official sender does (url.PathEscape), but also a literal "/".
func escape(name string) string {
	var b strings.Builder
	for i := 0; i < len(name); i++ {
		c := name[i]
		if c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || strings.IndexByte("-_.~", c) >= 0 {
			b.WriteByte(c)
		} else {
			fmt.Fprintf(&b, "%%%02X", c)
		}
	}
	return b.String()
}

// files lists the inbox.
func (f *fixture) files() []string {
	f.t.Helper()
	ents, err := os.ReadDir(f.dir)
	if err != nil {
		f.t.Fatal(err)
	}
	var names []string
	for _, e := range ents {
		names = append(names, e.Name())
	}
	slices.Sort(names)
	return names
}

// waitIdle waits until no transfer is in progress.
func (f *fixture) waitIdle() {
	f.t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		f.in.mu.Lock()
		n := len(f.in.active)
		f.in.mu.Unlock()
		if n == 0 && f.h.transfers.Load() == 0 {
			return
		}
		time.Sleep(5 * time.Millisecond)
	}
	f.t.Fatal("transfers still active")
}

// waitActive waits until a transfer of name from p is in progress.
func (f *fixture) waitActive(p Peer, name string) {
	f.t.Helper()
	pn := partialName(name, clientID(p.StableID))
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		f.in.mu.Lock()
		ok := f.in.active[pn]
		f.in.mu.Unlock()
		if ok {
			return
		}
		time.Sleep(2 * time.Millisecond)
	}
	f.t.Fatalf("transfer of %q never started", name)
}

// rawPut starts a PUT on a raw connection with the given Content-Length header value ("" for
// none) and returns the connection and a reader of its answer.
func (f *fixture) rawPut(src, name, contentLength string, extra ...string) (net.Conn, *bufio.Reader) {
	f.t.Helper()
	c := f.dial(src)
	req := "PUT /v0/put/" + escape(name) + " HTTP/1.1\r\nHost: peer\r\n"
	if contentLength != "" {
		req += "Content-Length: " + contentLength + "\r\n"
	}
	for _, h := range extra {
		req += h + "\r\n"
	}
	if _, err := io.WriteString(c, req+"\r\n"); err != nil {
		f.t.Fatal(err)
	}
	return c, bufio.NewReader(c)
}

type countingListener struct {
	net.Listener
	n *atomic.Int64
}

func (l *countingListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	return &countingConn{Conn: c, n: l.n}, nil
}

type countingConn struct {
	net.Conn
	n *atomic.Int64
}

func (c *countingConn) Read(p []byte) (int, error) {
	n, err := c.Conn.Read(p)
	c.n.Add(int64(n))
	return n, err
}

// pattern returns n bytes of content that differs with seed.
func pattern(n int, seed byte) []byte {
	b := make([]byte, n)
	x := uint32(seed)*2654435761 + 1
	for i := range b {
		x ^= x << 13
		x ^= x >> 17
		x ^= x << 5
		b[i] = byte(x)
	}
	return b
}

func withContext(t *testing.T, d time.Duration) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	t.Cleanup(cancel)
	return ctx
}
