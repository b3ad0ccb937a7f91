package taildrop

import (
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

func TestSendFresh(t *testing.T) {
	f := newFixture(t)
	data := pattern(1_000_000, 10)
	var last int64
	off, err := Send(withContext(t, 30*time.Second), f.client("127.0.0.1"), f.base(), "fresh copy.bin", int64(len(data)), bytes.NewReader(data), func(n int64) { last = n })
	if err != nil || off != 0 {
		t.Fatal(off, err)
	}
	if last != int64(len(data)) {
		t.Errorf("progress ended at %d", last)
	}
	if b, _ := os.ReadFile(filepath.Join(f.dir, "fresh copy.bin")); !bytes.Equal(b, data) {
		t.Error("content differs")
	}
	// Unknown size.
	if _, err := Send(withContext(t, 30*time.Second), f.client("127.0.0.1"), f.base(), "unknown.bin", -1, bytes.NewReader(data), nil); err != nil {
		t.Fatal(err)
	}
	if b, _ := os.ReadFile(filepath.Join(f.dir, "unknown.bin")); !bytes.Equal(b, data) {
		t.Error("content differs")
	}
	// Only size bytes are taken from a longer body.
	if _, err := Send(withContext(t, 30*time.Second), f.client("127.0.0.1"), f.base(), "cut.bin", 1000, bytes.NewReader(data), nil); err != nil {
		t.Fatal(err)
	}
	if b, _ := os.ReadFile(filepath.Join(f.dir, "cut.bin")); !bytes.Equal(b, data[:1000]) {
		t.Error("content differs")
	}
}

func TestSendResume(t *testing.T) {
	f := newFixture(t)
	const size = 8 << 20
	data := pattern(size, 11)
	f.interrupt("127.0.0.1", "big.iso", data, 5_000_123)
	st, err := os.Stat(filepath.Join(f.dir, "big.iso.nALICE1CNTRL.partial"))
	if err != nil {
		t.Fatal(err)
	}
	have := st.Size()
	if have == 0 || have > 5_000_123 {
		t.Fatalf("partial has %d bytes", have)
	}

	before := f.wire.Load()
	var progress []int64
	off, err := Send(withContext(t, 30*time.Second), f.client("127.0.0.1"), f.base(), "big.iso", size, bytes.NewReader(data), func(n int64) { progress = append(progress, n) })
	if err != nil {
		t.Fatal(err)
	}
	wire := f.wire.Load() - before
	if off != have {
		t.Errorf("resumed at %d, partial had %d", off, have)
	}
	rest := size - off
	if wire < rest || wire > rest+4096 {
		t.Errorf("sent %d bytes on the wire for %d remaining", wire, rest)
	}
	t.Logf("partial %d bytes; resumed at %d; %d bytes on the wire for the rest (%d)", have, off, wire, rest)
	if b, _ := os.ReadFile(filepath.Join(f.dir, "big.iso")); !bytes.Equal(b, data) {
		t.Error("resumed content differs")
	}
	if progress[len(progress)-1] != size {
		t.Errorf("progress ended at %d", progress[len(progress)-1])
	}
	for i := 1; i < len(progress); i++ {
		if progress[i] < progress[i-1] {
			t.Fatal("progress went backwards")
		}
	}
	if f.files()[0] != "big.iso" || len(f.files()) != 1 {
		t.Errorf("inbox = %q", f.files())
	}
}

func TestSendResumeMismatch(t *testing.T) {
	f := newFixture(t)
	data := pattern(1_000_000, 12)
	f.interrupt("127.0.0.1", "m.bin", data, 600_000)
	changed := bytes.Clone(data)
	changed[3*65536+5] ^= 0xff // the fourth block differs
	off, err := Send(withContext(t, 30*time.Second), f.client("127.0.0.1"), f.base(), "m.bin", int64(len(changed)), bytes.NewReader(changed), nil)
	if err != nil {
		t.Fatal(err)
	}
	if off != 3*65536 {
		t.Errorf("resumed at %d, want %d", off, 3*65536)
	}
	if b, _ := os.ReadFile(filepath.Join(f.dir, "m.bin")); !bytes.Equal(b, changed) {
		t.Error("content differs")
	}

	// A complete partial (crash before the rename): nothing left to send.
	f.interrupt("127.0.0.1", "whole.bin", append(bytes.Clone(data), 0), len(data))
	before := f.wire.Load()
	off, err = Send(withContext(t, 30*time.Second), f.client("127.0.0.1"), f.base(), "whole.bin", int64(len(data)), bytes.NewReader(data), nil)
	if err != nil || off != int64(len(data)) {
		t.Fatalf("complete partial: %d %v", off, err)
	}
	if w := f.wire.Load() - before; w > 4096 {
		t.Errorf("sent %d bytes for nothing", w)
	}
	if b, _ := os.ReadFile(filepath.Join(f.dir, "whole.bin")); !bytes.Equal(b, data) {
		t.Error("content differs")
	}
}

// TestSendPeers checks the sender against peers that do not resume or misbehave.
func TestSendPeers(t *testing.T) {
	data := pattern(200_000, 13)
	for _, tc := range []struct {
		name    string
		get     func(w http.ResponseWriter)
		wantOff int64
	}{
		{"405", func(w http.ResponseWriter) { http.Error(w, "expected method PUT", 405) }, 0},
		{"404", func(w http.ResponseWriter) { http.Error(w, "nope", 404) }, 0},
		{"garbage", func(w http.ResponseWriter) { io.WriteString(w, "not json\n") }, 0},
		{"bad algo", func(w http.ResponseWriter) {
			io.WriteString(w, `{"checksum":"`+strings.Repeat("0", 64)+`","algo":"md5","size":65536}`+"\n")
		}, 0},
		{"huge line", func(w http.ResponseWriter) { io.WriteString(w, strings.Repeat("x", 1<<20)) }, 0},
		{"oversized block", func(w http.ResponseWriter) {
			io.WriteString(w, `{"checksum":"`+strings.Repeat("0", 64)+`","algo":"sha256","size":1000000}`+"\n")
		}, 0},
		{"no newline at end", func(w http.ResponseWriter) {
			io.WriteString(w, hashLine(data[:65536])+"\n"+hashLine(data[65536:100000]))
		}, 100000},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var got []byte
			var rangeHdr, host string
			srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				if r.Method == "GET" {
					tc.get(w)
					return
				}
				rangeHdr, host = r.Header.Get("Range"), r.Host
				got, _ = io.ReadAll(r.Body)
				io.WriteString(w, "{}\n")
			}))
			defer srv.Close()
			off, err := Send(context.Background(), srv.Client(), srv.URL, "f.bin", int64(len(data)), bytes.NewReader(data), nil)
			if err != nil || off != tc.wantOff {
				t.Fatalf("Send = %d, %v", off, err)
			}
			if !bytes.Equal(got, data[off:]) || host != "peer" {
				t.Errorf("peer got %d bytes, Host %q", len(got), host)
			}
			if (off > 0) != (rangeHdr != "") || (off > 0 && rangeHdr != "bytes=100000-") {
				t.Errorf("Range %q at offset %d", rangeHdr, off)
			}
		})
	}
}

func hashLine(b []byte) string {
	sum := sha256.Sum256(b)
	return fmt.Sprintf(`{"checksum":"%x","algo":"sha256","size":%d}`, sum, len(b))
}

func TestSendErrors(t *testing.T) {
	f := newFixture(t)
	ctx := withContext(t, 30*time.Second)
	_, err := Send(ctx, f.client("127.0.0.3"), f.base(), "x.txt", 3, strings.NewReader("abc"), nil)
	if err == nil || !strings.Contains(err.Error(), "403 Forbidden") || !strings.Contains(err.Error(), "not allowed") {
		t.Errorf("other user: %v", err)
	}
	_, err = Send(ctx, f.client("127.0.0.1"), f.base(), ".hidden", 3, strings.NewReader("abc"), nil)
	if err == nil || !strings.Contains(err.Error(), "400 Bad Request") || !strings.Contains(err.Error(), "invalid filename") {
		t.Errorf("hidden name: %v", err)
	}
	if _, err = Send(ctx, f.client("127.0.0.1"), f.base(), "a/b", 3, strings.NewReader("abc"), nil); !errors.Is(err, ErrInvalidName) {
		t.Errorf("a/b: %v", err)
	}
	// A body shorter than the declared size.
	_, err = Send(ctx, f.client("127.0.0.1"), f.base(), "short.txt", 100, strings.NewReader("abc"), nil)
	if err == nil {
		t.Error("short body: no error")
	}
	// A failing body.
	boom := errors.New("disk on fire")
	_, err = Send(ctx, f.client("127.0.0.1"), f.base(), "boom.txt", 1<<20, io.MultiReader(bytes.NewReader(make([]byte, 100_000)), errReader{boom}), nil)
	if !errors.Is(err, boom) {
		t.Errorf("failing body: %v", err)
	}
	f.waitIdle()
	for _, n := range f.files() {
		if !strings.HasSuffix(n, ".partial") {
			t.Errorf("incomplete transfer produced %q", n)
		}
	}
	// Cancelled context.
	cctx, cancel := context.WithCancel(ctx)
	cancel()
	if _, err := Send(cctx, f.client("127.0.0.1"), f.base(), "c.txt", 3, strings.NewReader("abc"), nil); !errors.Is(err, context.Canceled) {
		t.Errorf("cancelled: %v", err)
	}
}

type errReader struct{ err error }

func (e errReader) Read([]byte) (int, error) { return 0, e.err }

func TestNoSpace(t *testing.T) {
	f := newFixture(t, func(h *Handler) { h.Reserve = 4 << 20 })
	// The file system is 24 MiB and holds only the inbox.
	const capacity = 24 << 20
	var used atomic.Int64
	f.in.avail = func() (int64, error) {
		var n int64
		ents, _ := os.ReadDir(f.dir)
		for _, e := range ents {
			if i, err := e.Info(); err == nil {
				n += i.Size()
			}
		}
		used.Store(n)
		return capacity - n, nil
	}

	// Known length beyond free space minus the reserve: refused before the body is read.
	before := f.wire.Load()
	_, err := Send(withContext(t, 30*time.Second), f.client("127.0.0.1"), f.base(), "huge.bin", 21<<20, bytes.NewReader(make([]byte, 21<<20)), nil)
	if err == nil || !strings.Contains(err.Error(), "507") || !strings.Contains(err.Error(), "insufficient storage") {
		t.Errorf("huge: %v", err)
	}
	t.Logf("huge: %v; %d bytes read by the server", err, f.wire.Load()-before)
	if got := f.files(); len(got) != 0 {
		t.Errorf("inbox = %q", got)
	}
	// Just fits.
	if r := f.put("127.0.0.1", "fits.bin", make([]byte, 20<<20)); r.code != 200 {
		t.Fatalf("fits = %d %q", r.code, r.body)
	}
	os.Remove(filepath.Join(f.dir, "fits.bin"))

	// Unknown length: stopped when the reserve is reached, partial removed.
	r := f.do("127.0.0.1", "PUT", "/v0/put/stream.bin", io.LimitReader(zeroReader{}, 64<<20), -1)
	if r.err == nil && (r.code != 507 || !strings.Contains(r.body, "insufficient storage")) {
		t.Errorf("stream = %d %q", r.code, r.body)
	}
	t.Logf("stream: %d %q %v", r.code, strings.TrimSpace(r.body), r.err)
	f.waitIdle()
	if got := f.files(); len(got) != 0 {
		t.Errorf("inbox = %q", got)
	}
	if u := used.Load(); u > capacity-(4<<20)+copyBufSize {
		t.Errorf("wrote %d bytes into the reserve", u)
	}

	// Promised space counts: while one 12 MiB transfer runs, a second one does not fit.
	pr, pw := io.Pipe()
	done := make(chan result, 1)
	go func() { done <- f.do("127.0.0.1", "PUT", "/v0/put/one.bin", pr, 12<<20) }()
	pw.Write(make([]byte, 1<<20))
	f.waitActive(alice, "one.bin")
	if r := f.put("127.0.0.2", "two.bin", make([]byte, 12<<20)); r.code != 507 && r.err == nil {
		t.Errorf("second = %d %q", r.code, r.body)
	}
	pw.Write(make([]byte, 11<<20))
	pw.Close()
	if r := <-done; r.code != 200 {
		t.Errorf("first = %+v", r)
	}
}

type zeroReader struct{}

func (zeroReader) Read(p []byte) (int, error) { clear(p); return len(p), nil }

func TestSlowLoris(t *testing.T) {
	f := newFixture(t, func(h *Handler) {
		h.RateWindow = 300 * time.Millisecond
		h.MinBodyRate = 16 << 10
		h.HeaderTimeout = 300 * time.Millisecond
	})
	// 1 byte every 50 ms (20 B/s).
	c, _ := f.rawPut("127.0.0.1", "slow.bin", "100000")
	start := time.Now()
	var err error
	for time.Since(start) < 5*time.Second {
		if _, err = c.Write([]byte{'x'}); err != nil {
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	if err == nil {
		t.Fatal("slow body not cut off after 5 s")
	}
	t.Logf("slow body cut off after %v", time.Since(start).Round(time.Millisecond))
	f.waitIdle()
	if len(f.in.Waiting()) != 0 {
		t.Error("slow body completed")
	}

	// A body that stops after the headers.
	c, br := f.rawPut("127.0.0.1", "stall.bin", "100000")
	start = time.Now()
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	resp, err := http.ReadResponse(br, nil)
	if err == nil {
		t.Logf("stalled body answered %s after %v", resp.Status, time.Since(start).Round(time.Millisecond))
		if resp.StatusCode != http.StatusRequestTimeout {
			t.Errorf("stall: %s", resp.Status)
		}
	} else if time.Since(start) > 4*time.Second {
		t.Errorf("stalled body not cut off: %v", err)
	}

	// Headers that never end.
	c = f.dial("127.0.0.1")
	start = time.Now()
	io.WriteString(c, "PUT /v0/put/h.bin HTTP/1.1\r\nHost: peer\r\n")
	for time.Since(start) < 5*time.Second {
		if _, err = io.WriteString(c, "X-A: b\r\n"); err != nil {
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	if err == nil {
		t.Fatal("slow headers not cut off")
	}
	t.Logf("slow headers cut off after %v", time.Since(start).Round(time.Millisecond))

	// A sender that keeps the minimum rate finishes.
	pr, pw := io.Pipe()
	go func() {
		for range 10 {
			pw.Write(make([]byte, 8<<10))
			time.Sleep(100 * time.Millisecond) // ~80 KiB/s
		}
		pw.Close()
	}()
	if r := f.do("127.0.0.1", "PUT", "/v0/put/steady.bin", pr, 80<<10); r.code != 200 {
		t.Errorf("steady sender: %+v", r)
	}
}

func TestLimits(t *testing.T) {
	f := newFixture(t, func(h *Handler) { h.MaxTransfers = 1; h.MaxConns = 3 })
	pr, pw := io.Pipe()
	done := make(chan result, 1)
	go func() { done <- f.do("127.0.0.1", "PUT", "/v0/put/a.bin", pr, 10) }()
	pw.Write([]byte("12345"))
	f.waitActive(alice, "a.bin")
	if r := f.put("127.0.0.2", "b.bin", []byte("x")); r.code != http.StatusServiceUnavailable {
		t.Errorf("second transfer = %+v", r)
	}
	// Connections beyond MaxConns are closed at once.
	var closed int
	for range 4 {
		c := f.dial("127.0.0.1")
		c.SetReadDeadline(time.Now().Add(200 * time.Millisecond))
		if _, err := c.Read(make([]byte, 1)); err == io.EOF {
			closed++
		}
	}
	if closed == 0 {
		t.Error("no connection refused beyond MaxConns")
	}
	pw.Write([]byte("67890"))
	pw.Close()
	if r := <-done; r.code != 200 {
		t.Errorf("first = %+v", r)
	}
}

func TestLongName(t *testing.T) {
	f := newFixture(t)
	name := strings.Repeat("ü", 125) + ".pdf" // 254 bytes
	data := pattern(300_000, 14)
	f.interrupt("127.0.0.1", name, data, 100_000)
	r := f.do("127.0.0.1", "GET", "/v0/put/", nil, 0)
	if !strings.Contains(r.body, ".nALICE1CNTRL.partial") {
		t.Errorf("list = %q", r.body)
	}
	off, err := Send(withContext(t, 30*time.Second), f.client("127.0.0.1"), f.base(), name, int64(len(data)), bytes.NewReader(data), nil)
	if err != nil || off != 100_000 {
		t.Fatalf("Send = %d %v", off, err)
	}
	// Its collision name still fits.
	if _, err := Send(withContext(t, 30*time.Second), f.client("127.0.0.1"), f.base(), name, 3, strings.NewReader("abc"), nil); err != nil {
		t.Fatal(err)
	}
	if n := len(f.in.Waiting()); n != 2 {
		t.Errorf("Waiting = %d", n)
	}
}
