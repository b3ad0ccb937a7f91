package ts2021

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"testing/iotest"
	"time"

	"github.com/skeinvpn/skein/daemon/control/ts2021/ts2021test"
	"github.com/skeinvpn/skein/daemon/key"
)

func dial(t *testing.T, o DialOptions) *Conn {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, err := Dial(ctx, o)
	if err != nil {
		t.Fatalf("Dial: %v", err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

func dialErr(t *testing.T, o DialOptions) error {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, err := Dial(ctx, o)
	if err == nil {
		c.Close()
		t.Fatal("Dial succeeded, want error")
	}
	t.Logf("Dial error: %v", err)
	return err
}

func TestNonceIsBigEndian(t *testing.T) {
	var n [12]byte
	for _, ctr := range []uint64{0, 1, 255, 256, 1 << 32, 1<<64 - 2} {
		setNonce(&n, ctr)
		if !bytes.Equal(n[:], ts2021test.Nonce(ctr)) {
			t.Errorf("nonce(%d) = % x, want % x", ctr, n, ts2021test.Nonce(ctr))
		}
	}
	setNonce(&n, 256)
	if want := []byte{0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0}; !bytes.Equal(n[:], want) {
		t.Errorf("nonce(256) = % x", n)
	}
}

// echo sends back everything it receives, re-chunked into records of at most
// 4077 bytes with an empty record now and then, and reports what it saw.
type echoStats struct {
	clientRecords, serverRecords uint64
	maxRecord                    int
	err                          error
}

func echo(done chan<- echoStats) func(s *srvConn) {
	return func(s *srvConn) {
		var st echoStats
		defer func() {
			st.clientRecords, st.serverRecords = s.RxN, s.TxN
			done <- st
		}()
		var pending []byte
		for {
			p, err := s.ReadRecord()
			if err != nil {
				if err != io.EOF {
					st.err = err
				}
				return
			}
			st.maxRecord = max(st.maxRecord, len(p))
			pending = append(pending, p...)
			for len(pending) >= 4077 || (len(pending) > 0 && s.RxN%7 == 0) {
				n := min(len(pending), 4077)
				if err := s.WriteRecord(pending[:n]); err != nil {
					st.err = err
					return
				}
				pending = pending[n:]
			}
			if s.RxN%5 == 0 {
				if err := s.WriteRecord(nil); err != nil { // zero-length records are legal
					st.err = err
					return
				}
			}
			if len(pending) > 0 && s.BR.Buffered() == 0 {
				// Flush before the client would wait on us.
				if err := s.WriteRecord(pending); err != nil {
					st.err = err
					return
				}
				pending = nil
			}
		}
	}
}

func TestRoundTrip(t *testing.T) {
	for _, tlsOn := range []bool{false, true} {
		t.Run(fmt.Sprintf("tls=%v", tlsOn), func(t *testing.T) {
			done := make(chan echoStats, 1)
			ts := newTestServer(t, tlsOn, srvOpts{run: echo(done)})
			o := ts.opts()
			if tlsOn {
				pool := x509.NewCertPool()
				pool.AddCert(ts.Certificate())
				o.TLSConfig = &tls.Config{RootCAs: pool, NextProtos: []string{"h2"}} // NextProtos must be ignored
			}
			c := dial(t, o)
			if c.ProtocolVersion() != CapabilityVersion {
				t.Errorf("ProtocolVersion = %d", c.ProtocolVersion())
			}
			ep := c.EarlyPayload()
			if ep == nil {
				t.Fatal("no early payload")
			}
			if ep.NodeKeyChallenge != ts.chal {
				t.Errorf("challenge = %v, want %v", ep.NodeKeyChallenge, ts.chal)
			}

			// ~1.3 MB: over 300 records each way, so counters pass 255 → 256.
			data := make([]byte, 1_300_000)
			rand.Read(data)
			sizes := []int{10000, 4077, 4078, 1, 0, 8154, 300000}
			werr := make(chan error, 1)
			go func() {
				p := data
				for i := 0; len(p) > 0; i++ {
					n := len(p)
					if i < len(sizes) {
						n = min(n, sizes[i])
					}
					if _, err := c.Write(p[:n]); err != nil {
						werr <- err
						return
					}
					p = p[n:]
				}
				werr <- nil
			}()
			got := make([]byte, len(data))
			// Odd read sizes so reads straddle record boundaries.
			for off := 0; off < len(got); {
				n, err := c.Read(got[off:min(len(got), off+3333)])
				if err != nil {
					t.Fatalf("Read at %d: %v", off, err)
				}
				off += n
			}
			if err := <-werr; err != nil {
				t.Fatalf("Write: %v", err)
			}
			if !bytes.Equal(got, data) {
				t.Fatal("echoed data differs")
			}
			c.Close()
			st := <-done
			if st.err != nil {
				t.Fatalf("server: %v", st.err)
			}
			if st.maxRecord > 4077 {
				t.Errorf("client sent a record of %d plaintext bytes", st.maxRecord)
			}
			if st.clientRecords < 300 || st.serverRecords < 300 {
				t.Errorf("only %d client / %d server records; want > 256 each", st.clientRecords, st.serverRecords)
			}
			t.Logf("records: client %d, server %d", st.clientRecords, st.serverRecords)
		})
	}
}

// Whole Writes from different goroutines must not interleave on the wire.
func TestConcurrentWrites(t *testing.T) {
	done := make(chan echoStats, 1)
	ts := newTestServer(t, false, srvOpts{run: echo(done)})
	c := dial(t, ts.opts())
	const writers, perWriter, size = 4, 20, 9000
	var wg sync.WaitGroup
	for w := range writers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			block := bytes.Repeat([]byte{byte('a' + w)}, size)
			for range perWriter {
				if _, err := c.Write(block); err != nil {
					t.Errorf("Write: %v", err)
					return
				}
			}
		}()
	}
	got := make([]byte, writers*perWriter*size)
	if _, err := io.ReadFull(c, got); err != nil {
		t.Fatal(err)
	}
	wg.Wait()
	for i := 0; i < len(got); i += size {
		b := got[i : i+size]
		if bytes.Count(b, b[:1]) != size {
			t.Fatalf("block at %d is interleaved", i)
		}
	}
}

func TestEarlyPayloadAbsent(t *testing.T) {
	// An HTTP/2 SETTINGS frame header, split over two records, then more data.
	stream := []byte("\x00\x00\x06\x04\x00\x00\x00\x00\x00rest of the stream")
	ts := newTestServer(t, false, srvOpts{
		early: [][]byte{stream[:4], stream[4:12], stream[12:]},
		run:   func(s *srvConn) { s.ReadRecord() },
	})
	c := dial(t, ts.opts())
	if c.EarlyPayload() != nil {
		t.Fatal("EarlyPayload should be nil")
	}
	got := make([]byte, len(stream))
	// Reads of 2 bytes: the replayed header must come back in pieces too.
	for off := 0; off < len(got); {
		n, err := c.Read(got[off:min(len(got), off+2)])
		if err != nil {
			t.Fatal(err)
		}
		off += n
	}
	if !bytes.Equal(got, stream) {
		t.Fatalf("got %q, want %q", got, stream)
	}
}

func TestEarlyPayloadThenData(t *testing.T) {
	chal := mustChallenge(t)
	ep := earlyPayloadBytes(t, chal)
	srv := newTestServer(t, false, srvOpts{
		// Early payload and the first data in the same record.
		early: [][]byte{append(ep, "hello"...)},
		run:   func(s *srvConn) { s.ReadRecord() },
	})
	c := dial(t, srv.opts())
	if e := c.EarlyPayload(); e == nil || e.NodeKeyChallenge != chal {
		t.Fatalf("early payload %+v", e)
	}
	got := make([]byte, 5)
	if _, err := io.ReadFull(c, got); err != nil || string(got) != "hello" {
		t.Fatalf("got %q, %v", got, err)
	}
}

func TestEarlyPayloadTooLarge(t *testing.T) {
	ts := newTestServer(t, false, srvOpts{
		early: [][]byte{[]byte("\xff\xff\xffTS\x00\xa0\x00\x01")}, // 10 MiB + 1
		run:   func(s *srvConn) { s.ReadRecord() },
	})
	err := dialErr(t, ts.opts())
	if !strings.Contains(err.Error(), "exceeds 10 MiB") {
		t.Errorf("error %q does not mention the limit", err)
	}
}

func TestServerErrorMessage(t *testing.T) {
	ts := newTestServer(t, false, srvOpts{errMsg: "machine key not allowed"})
	err := dialErr(t, ts.opts())
	if !strings.Contains(err.Error(), "machine key not allowed") {
		t.Errorf("error %q lacks the server's text", err)
	}
}

func TestBadUpgradeResponse(t *testing.T) {
	body := strings.Repeat("x", 300)
	tests := []struct{ name, head, want string }{
		{"wrong upgrade", "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: upgrade\r\n\r\n", `"websocket"`},
		{"no upgrade", "HTTP/1.1 101 Switching Protocols\r\nConnection: upgrade\r\n\r\n", `"HTTP/1.1 101 Switching Protocols"`},
		{"500", "HTTP/1.1 500 Internal Server Error\r\nContent-Length: 300\r\n\r\n" + body, `"HTTP/1.1 500 Internal Server Error"`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ts := newTestServer(t, false, srvOpts{head: tt.head})
			err := dialErr(t, ts.opts())
			if !strings.Contains(err.Error(), tt.want) {
				t.Errorf("error %q lacks %s", err, tt.want)
			}
			if strings.Contains(err.Error(), strings.Repeat("x", 201)) {
				t.Error("error quotes more than 200 bytes of body")
			}
			if tt.name == "500" && !strings.Contains(err.Error(), strings.Repeat("x", 200)) {
				t.Error("error should quote 200 bytes of body")
			}
		})
	}
}

func TestCorruptHandshakeResponse(t *testing.T) {
	ts := newTestServer(t, false, srvOpts{corruptResponse: true})
	err := dialErr(t, ts.opts())
	if !strings.Contains(err.Error(), "authentication") {
		t.Errorf("unexpected error %q", err)
	}
}

func TestWrongServerKey(t *testing.T) {
	ts := newTestServer(t, false, srvOpts{})
	o := ts.opts()
	o.ServerKey = key.NewMachine().Public() // server cannot decrypt and hangs up after the 101
	dialErr(t, o)
}

func TestTruncatedRecord(t *testing.T) {
	ts := newTestServer(t, false, srvOpts{run: func(s *srvConn) {
		r := s.Record([]byte("hello, world"))
		s.NC.Write(r[:len(r)-5])
		// and hang up
	}})
	c := dial(t, ts.opts())
	_, err := c.Read(make([]byte, 100))
	if !errors.Is(err, io.ErrUnexpectedEOF) {
		t.Fatalf("Read error %v, want ErrUnexpectedEOF", err)
	}
}

func TestCleanEOF(t *testing.T) {
	ts := newTestServer(t, false, srvOpts{run: func(s *srvConn) { s.WriteRecord([]byte("bye")) }})
	c := dial(t, ts.opts())
	b, err := io.ReadAll(c)
	if err != nil || string(b) != "bye" {
		t.Fatalf("ReadAll = %q, %v", b, err)
	}
}

func TestOversizedRecord(t *testing.T) {
	ts := newTestServer(t, false, srvOpts{run: func(s *srvConn) {
		s.NC.Write(append([]byte{4, 0x0f, 0xfe}, make([]byte, 4094)...)) // 4097 in total
		s.ReadRecord()
	}})
	c := dial(t, ts.opts())
	_, err := c.Read(make([]byte, 100))
	if !errors.Is(err, errFrameTooLarge) {
		t.Fatalf("Read error %v, want errFrameTooLarge", err)
	}
}

func TestTamperedRecord(t *testing.T) {
	ts := newTestServer(t, false, srvOpts{run: func(s *srvConn) {
		s.WriteRecord([]byte("first"))
		r := s.Record([]byte("second"))
		r[5] ^= 0x40
		s.NC.Write(r)
		s.WriteRecord([]byte("third"))
		s.ReadRecord()
	}})
	c := dial(t, ts.opts())
	b := make([]byte, 100)
	n, err := c.Read(b)
	if err != nil || string(b[:n]) != "first" {
		t.Fatalf("first Read = %q, %v", b[:n], err)
	}
	_, err = c.Read(b)
	if err == nil || !strings.Contains(err.Error(), "authentication") {
		t.Fatalf("tampered Read error = %v", err)
	}
	// The stream is out of sync for good: the valid "third" must not come through.
	if _, err2 := c.Read(b); err2 != err {
		t.Fatalf("second Read error = %v, want sticky %v", err2, err)
	}
}

func TestUnexpectedFrameTypeAfterHandshake(t *testing.T) {
	ts := newTestServer(t, false, srvOpts{run: func(s *srvConn) {
		s.NC.Write([]byte{3, 0, 2, 'n', 'o'})
		s.ReadRecord()
	}})
	c := dial(t, ts.opts())
	if _, err := c.Read(make([]byte, 10)); err == nil {
		t.Fatal("Read accepted an error frame in transport")
	}
}

// A read deadline that fires mid-frame must not lose the bytes already read.
func TestReadTimeoutResumes(t *testing.T) {
	release := make(chan struct{})
	ts := newTestServer(t, false, srvOpts{run: func(s *srvConn) {
		r := s.Record([]byte("split across a timeout"))
		s.NC.Write(r[:7])
		<-release
		s.NC.Write(r[7:])
		s.ReadRecord()
	}})
	c := dial(t, ts.opts())
	c.SetReadDeadline(time.Now().Add(100 * time.Millisecond))
	b := make([]byte, 100)
	_, err := c.Read(b)
	var ne net.Error
	if !errors.As(err, &ne) || !ne.Timeout() {
		t.Fatalf("Read error %v, want timeout", err)
	}
	c.SetReadDeadline(time.Time{})
	close(release)
	n, err := c.Read(b)
	if err != nil || string(b[:n]) != "split across a timeout" {
		t.Fatalf("Read after timeout = %q, %v", b[:n], err)
	}
}

func TestDialTimeout(t *testing.T) {
	ts := newTestServer(t, false, srvOpts{noHandshake: true})
	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	start := time.Now()
	_, err := Dial(ctx, ts.opts())
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Dial error %v, want DeadlineExceeded", err)
	}
	if d := time.Since(start); d > 3*time.Second {
		t.Errorf("Dial took %v", d)
	}
	t.Log(err)
}

func TestDialCancel(t *testing.T) {
	ts := newTestServer(t, false, srvOpts{noHandshake: true})
	ctx, cancel := context.WithCancel(context.Background())
	time.AfterFunc(100*time.Millisecond, cancel)
	_, err := Dial(ctx, ts.opts())
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("Dial error %v, want Canceled", err)
	}
}

func TestDialTLSVerifyFails(t *testing.T) {
	ts := newTestServer(t, true, srvOpts{})
	err := dialErr(t, ts.opts()) // system roots don't know httptest's CA
	var cve *tls.CertificateVerificationError
	if !errors.As(err, &cve) {
		t.Fatalf("error %v is not a *tls.CertificateVerificationError", err)
	}
}

func TestDialCustomDialer(t *testing.T) {
	ts := newTestServer(t, false, srvOpts{run: func(s *srvConn) { s.ReadRecord() }})
	o := ts.opts()
	real := strings.TrimPrefix(ts.URL, "http://")
	var gotAddr string
	o.ServerURL = "http://control.example:8080"
	o.DialContext = func(ctx context.Context, network, addr string) (net.Conn, error) {
		gotAddr = addr
		var d net.Dialer
		return d.DialContext(ctx, network, real)
	}
	dial(t, o)
	if gotAddr != "control.example:8080" {
		t.Errorf("dialed %q", gotAddr)
	}
}

func TestDialDefaultPorts(t *testing.T) {
	for url, want := range map[string]string{
		"http://h.example":       "h.example:80",
		"https://h.example":      "h.example:443",
		"https://h.example:8443": "h.example:8443",
		"http://[::1]":           "[::1]:80",
	} {
		o := DialOptions{ServerURL: url, MachineKey: key.NewMachine(), ServerKey: key.NewMachine().Public()}
		var got string
		o.DialContext = func(ctx context.Context, network, addr string) (net.Conn, error) {
			got = addr
			return nil, errors.New("no")
		}
		Dial(context.Background(), o)
		if got != want {
			t.Errorf("%s dialed %q, want %q", url, got, want)
		}
	}
}

func TestDialBadOptions(t *testing.T) {
	good := DialOptions{ServerURL: "http://h.example", MachineKey: key.NewMachine(), ServerKey: key.NewMachine().Public()}
	for name, mod := range map[string]func(*DialOptions){
		"scheme":      func(o *DialOptions) { o.ServerURL = "ftp://h.example" },
		"no host":     func(o *DialOptions) { o.ServerURL = "http://" },
		"zero mkey":   func(o *DialOptions) { o.MachineKey = key.MachinePrivate{} },
		"zero srvkey": func(o *DialOptions) { o.ServerKey = key.MachinePublic{} },
	} {
		o := good
		mod(&o)
		o.DialContext = func(context.Context, string, string) (net.Conn, error) {
			t.Errorf("%s: dialed", name)
			return nil, errors.New("no")
		}
		if _, err := Dial(context.Background(), o); err == nil {
			t.Errorf("%s: no error", name)
		}
	}
}

// --- frame reader ---

func TestFrameReader(t *testing.T) {
	max := append([]byte{4, 0x0f, 0xfd}, bytes.Repeat([]byte{7}, 4093)...)
	tests := []struct {
		name    string
		in      []byte
		typ     byte
		payLen  int
		wantErr error
	}{
		{"record", []byte{4, 0, 3, 'a', 'b', 'c'}, 4, 3, nil},
		{"empty record", []byte{4, 0, 0}, 4, 0, nil},
		{"response", append([]byte{2, 0, 48}, make([]byte, 48)...), 2, 48, nil},
		{"error", []byte{3, 0, 2, 'h', 'i'}, 3, 2, nil},
		{"max size", max, 4, 4093, nil},
		{"too large", append([]byte{4, 0x0f, 0xfe}, make([]byte, 4094)...), 0, 0, errFrameTooLarge},
		{"way too large", []byte{4, 0xff, 0xff}, 0, 0, errFrameTooLarge},
		{"initiation type", []byte{1, 0, 0}, 0, 0, errUnknownFrameTyp},
		{"unknown type", []byte{9, 0, 0}, 0, 0, errUnknownFrameTyp},
		{"empty", nil, 0, 0, io.EOF},
		{"short header", []byte{4, 0}, 0, 0, io.ErrUnexpectedEOF},
		{"truncated payload", []byte{4, 0, 10, 1, 2, 3}, 0, 0, io.ErrUnexpectedEOF},
	}
	for _, tt := range tests {
		for _, oneByte := range []bool{false, true} {
			var r io.Reader = bytes.NewReader(tt.in)
			if oneByte {
				r = iotest.OneByteReader(r)
			}
			fr := &frameReader{r: r}
			typ, p, err := fr.next()
			if !errors.Is(err, tt.wantErr) {
				t.Errorf("%s: err = %v, want %v", tt.name, err, tt.wantErr)
				continue
			}
			if err == nil && (typ != tt.typ || len(p) != tt.payLen) {
				t.Errorf("%s: got type %d len %d", tt.name, typ, len(p))
			}
		}
	}
}

func TestFrameReaderSequence(t *testing.T) {
	in := []byte{4, 0, 1, 'x', 4, 0, 0, 2, 0, 2, 'y', 'z'}
	fr := &frameReader{r: bytes.NewReader(in)}
	var got []string
	for {
		typ, p, err := fr.next()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		got = append(got, fmt.Sprintf("%d:%s", typ, p))
	}
	if want := "[4:x 4: 2:yz]"; fmt.Sprint(got) != want {
		t.Errorf("got %v, want %s", got, want)
	}
}

// --- early payload parser ---

func TestReadEarlyPayload(t *testing.T) {
	chal := mustChallenge(t)
	good := earlyPayloadBytes(t, chal)
	var hdr [earlyHeaderLen]byte

	e, replay, err := readEarlyPayload(bytes.NewReader(append(good, "next"...)), &hdr)
	if err != nil || e == nil || replay != nil || e.NodeKeyChallenge != chal {
		t.Fatalf("good: %+v %q %v", e, replay, err)
	}

	r := bytes.NewReader([]byte("\x00\x00\x00\x04\x00\x00\x00\x00\x00more"))
	e, replay, err = readEarlyPayload(r, &hdr)
	if err != nil || e != nil || string(replay) != "\x00\x00\x00\x04\x00\x00\x00\x00\x00" || r.Len() != 4 {
		t.Fatalf("absent: %+v %q %v (left %d)", e, replay, err, r.Len())
	}

	// Nearly the magic is still not the magic.
	_, replay, err = readEarlyPayload(bytes.NewReader([]byte("\xff\xff\xffTT\x00\x00\x00\x00")), &hdr)
	if err != nil || len(replay) != 9 {
		t.Fatalf("near-magic: %q %v", replay, err)
	}

	for name, in := range map[string][]byte{
		"short header":      []byte("\xff\xff\xffTS\x00"),
		"empty":             nil,
		"too large":         []byte("\xff\xff\xffTS\x00\xa0\x00\x01{}"),
		"huge":              []byte("\xff\xff\xffTS\xff\xff\xff\xff"),
		"truncated body":    good[:len(good)-1],
		"at limit, no body": []byte("\xff\xff\xffTS\x00\xa0\x00\x00"),
		"not json":          []byte("\xff\xff\xffTS\x00\x00\x00\x03abc"),
		"zero length":       []byte("\xff\xff\xffTS\x00\x00\x00\x00"),
		"bad key":           []byte("\xff\xff\xffTS\x00\x00\x00\x1a{\"nodeKeyChallenge\":\"x:1\"}"),
	} {
		if e, _, err := readEarlyPayload(bytes.NewReader(in), &hdr); err == nil {
			t.Errorf("%s: no error (%+v)", name, e)
		}
	}
}

// --- FetchServerKey ---

func TestFetchServerKey(t *testing.T) {
	srvKey := key.NewMachine().Public()
	mkey, _ := srvKey.MarshalText()
	zeroKey, _ := key.MachinePublic{}.MarshalText()
	goodJSON := fmt.Sprintf(`{"legacyPublicKey":%q,"publicKey":%q}`, zeroKey, mkey)
	exact := goodJSON + strings.Repeat(" ", 64<<10-len(goodJSON))

	tests := []struct {
		name, body string
		status     int
		wantErr    string
	}{
		{"good", goodJSON, 200, ""},
		{"exactly 64 KiB", exact, 200, ""},
		{"zero key", fmt.Sprintf(`{"publicKey":%q}`, zeroKey), 200, "too old"},
		{"missing key", `{}`, 200, "too old"},
		{"empty 200", "", 200, "bad response"},
		{"not 200", "capability version must be set", 400, "400 Bad Request"},
		{"garbage", "<html>hello</html>", 200, "bad response"},
		{"bad key text", `{"publicKey":"nodekey:00"}`, 200, "bad response"},
		{"too big", exact + " ", 200, "64 KiB"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				if r.URL.Path != "/key" || r.URL.Query().Get("v") != "123" {
					t.Errorf("request %s", r.URL)
				}
				w.WriteHeader(tt.status)
				io.WriteString(w, tt.body)
			}))
			defer srv.Close()
			k, err := FetchServerKey(context.Background(), srv.Client(), srv.URL+"/")
			if tt.wantErr == "" {
				if err != nil || k != srvKey {
					t.Fatalf("got %v, %v", k, err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Fatalf("err = %v, want it to mention %q", err, tt.wantErr)
			}
			if strings.Contains(err.Error(), "\n") {
				t.Errorf("error is not one line: %q", err)
			}
		})
	}
}

func TestFetchServerKeyTLSError(t *testing.T) {
	srv := httptest.NewUnstartedServer(http.NotFoundHandler())
	srv.Config.ErrorLog = log.New(io.Discard, "", 0)
	srv.StartTLS()
	defer srv.Close()
	_, err := FetchServerKey(context.Background(), &http.Client{}, srv.URL)
	var cve *tls.CertificateVerificationError
	var uae x509.UnknownAuthorityError
	if !errors.As(err, &cve) || !errors.As(err, &uae) {
		t.Fatalf("error %v does not unwrap to the TLS/x509 error", err)
	}
	t.Log(err)
}

func TestFetchServerKeyConnRefused(t *testing.T) {
	ln, _ := net.Listen("tcp", "127.0.0.1:0")
	addr := ln.Addr().String()
	ln.Close()
	_, err := FetchServerKey(context.Background(), nil, "http://"+addr)
	var oe *net.OpError
	if !errors.As(err, &oe) {
		t.Fatalf("error %v does not unwrap to *net.OpError", err)
	}
}
