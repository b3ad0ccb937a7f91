package taildrop

import (
	"bufio"
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/skeinvpn/skein/ipc"
)

func TestPutAndInbox(t *testing.T) {
	f := newFixture(t)
	changed := f.in.Changed()
	var arrived []ipc.WaitingFile
	var mu sync.Mutex
	f.in.OnArrive(func(w ipc.WaitingFile) { mu.Lock(); arrived = append(arrived, w); mu.Unlock() })

	data := pattern(300_000, 1)
	r := f.put("127.0.0.1", "héllo wörld.txt", data)
	if r.code != 200 || r.body != "{}\n" {
		t.Fatalf("PUT = %d %q %v", r.code, r.body, r.err)
	}
	select {
	case <-changed:
	default:
		t.Error("Changed not signalled")
	}
	if got := f.files(); !slices.Equal(got, []string{"héllo wörld.txt"}) {
		t.Fatalf("inbox = %q", got)
	}
	st, _ := os.Stat(filepath.Join(f.dir, "héllo wörld.txt"))
	if st.Mode().Perm() != 0o600 {
		t.Errorf("file mode %v", st.Mode())
	}
	dst, _ := os.Stat(f.dir)
	if dst.Mode().Perm() != 0o700 {
		t.Errorf("dir mode %v", dst.Mode())
	}
	w := f.in.Waiting()
	if len(w) != 1 || w[0].Name != "héllo wörld.txt" || w[0].Size != int64(len(data)) ||
		w[0].From != alice.Name || w[0].FromID != alice.StableID || time.Since(w[0].Received) > time.Minute {
		t.Fatalf("Waiting = %+v", w)
	}
	mu.Lock()
	if len(arrived) != 1 || arrived[0].Name != w[0].Name || arrived[0].FromID != alice.StableID {
		t.Errorf("OnArrive got %+v", arrived)
	}
	mu.Unlock()

	rf, size, err := f.in.Open("héllo wörld.txt")
	if err != nil || size != int64(len(data)) {
		t.Fatal(size, err)
	}
	got, _ := io.ReadAll(rf)
	rf.Close()
	if !bytes.Equal(got, data) {
		t.Error("content differs")
	}

	changed = f.in.Changed()
	if err := f.in.Delete("héllo wörld.txt"); err != nil {
		t.Fatal(err)
	}
	select {
	case <-changed:
	default:
		t.Error("Changed not signalled on delete")
	}
	if len(f.in.Waiting()) != 0 || len(f.files()) != 0 {
		t.Error("file not deleted")
	}
	if _, _, err := f.in.Open("héllo wörld.txt"); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("Open after delete: %v", err)
	}
	if err := f.in.Delete("../x"); !errors.Is(err, ErrInvalidName) {
		t.Errorf("Delete(../x) = %v", err)
	}

	// Empty file, and unknown length (chunked).
	if r := f.put("127.0.0.1", "empty", nil); r.code != 200 {
		t.Fatalf("empty PUT = %+v", r)
	}
	r = f.do("127.0.0.1", "PUT", "/v0/put/chunked.bin", io.MultiReader(bytes.NewReader(data)), -1)
	if r.code != 200 {
		t.Fatalf("chunked PUT = %+v", r)
	}
	if b, _ := os.ReadFile(filepath.Join(f.dir, "chunked.bin")); !bytes.Equal(b, data) {
		t.Error("chunked content differs")
	}
	w = f.in.Waiting()
	if len(w) != 2 || w[0].Name != "empty" || w[1].Name != "chunked.bin" {
		t.Errorf("Waiting order = %+v", w)
	}
}

func TestBadNames(t *testing.T) {
	f := newFixture(t)
	parent := filepath.Dir(f.dir)
	before, _ := os.ReadDir(parent)
	for _, raw := range []string{
		"..%2F..%2Fetc%2Fpasswd", "foo%2F..%2F..%2F..%2F..%2F..%2Fetc%2Fpasswd", "../../etc/passwd",
		"a%2Fb", "a/b", ".", "%2E", "..", "%2E%2E", "%2E%2E%2F", ".%2Fx",
		"foo%00bar", "%00", "foo%01", "%7F", "%0Afoo", "nul%3A", "a%5Cb", "a%2A",
		"%20foo", "foo%20", "%FF", "%E2%80%AEevil", "x.partial", "x.deleted", "x.PARTIAL",
		"y.nALICE1CNTRL.partial", ".hidden", "%2Ebashrc", strings.Repeat("a", 256),
		strings.Repeat("a", 10_000), "",
	} {
		r := f.do("127.0.0.1", "PUT", "/v0/put/"+raw, strings.NewReader("evil"), 4)
		if r.code != http.StatusBadRequest || !strings.Contains(r.body, "invalid filename") {
			t.Errorf("PUT %q = %d %q %v", raw, r.code, r.body, r.err)
		}
		if raw != "" {
			r = f.do("127.0.0.1", "GET", "/v0/put/"+raw, nil, 0)
			if r.code != http.StatusBadRequest {
				t.Errorf("GET %q = %d %q", raw, r.code, r.body)
			}
		}
	}
	// Escapes the Go client would not send.
	for _, raw := range []string{"%ZZ", "a%2", "%C0%AE%C0%AE%2Fx"} {
		c2 := f.dial("127.0.0.1")
		io.WriteString(c2, "PUT /v0/put/"+raw+" HTTP/1.1\r\nHost: peer\r\nContent-Length: 4\r\n\r\nevil")
		resp, err := http.ReadResponse(bufio.NewReader(c2), nil)
		if err != nil || resp.StatusCode != 400 {
			t.Errorf("raw %q: %v %v", raw, resp, err)
		}
	}
	if got := f.files(); len(got) != 0 {
		t.Errorf("inbox not empty: %q", got)
	}
	after, _ := os.ReadDir(parent)
	if len(before) != len(after) {
		t.Errorf("inbox parent changed: %v -> %v", before, after)
	}
	if _, err := os.Stat("/etc/passwd.nALICE1CNTRL.partial"); err == nil {
		t.Error("wrote outside the inbox")
	}
}

func TestAuthorization(t *testing.T) {
	f := newFixture(t)
	for _, src := range []string{"127.0.0.3", "127.0.0.4"} {
		r := f.put(src, "x.txt", []byte("nope"))
		if r.code != http.StatusForbidden || !strings.Contains(r.body, "not allowed") {
			t.Errorf("PUT from %s = %d %q", src, r.code, r.body)
		}
		for _, p := range []string{"/v0/put/", "/v0/put/x.txt"} {
			if r := f.do(src, "GET", p, nil, 0); r.code != http.StatusForbidden {
				t.Errorf("GET %s from %s = %d", p, src, r.code)
			}
		}
	}
	if got := f.files(); len(got) != 0 {
		t.Errorf("files written: %q", got)
	}

	// Unknown source: NewServer closes the connection before any HTTP.
	r := f.put(unknownSrc, "x.txt", []byte("nope"))
	if r.err == nil {
		t.Errorf("PUT from unknown address = %d %q, want a closed connection", r.code, r.body)
	}
	// And the handler alone refuses it too.
	rec := httptest.NewRecorder()
	req := httptest.NewRequest("PUT", "/v0/put/x.txt", strings.NewReader("nope"))
	req.Host, req.RemoteAddr = "peer", unknownSrc+":1234"
	f.h.ServeHTTP(rec, req)
	if rec.Code != http.StatusForbidden {
		t.Errorf("handler, unknown address: %d", rec.Code)
	}

	// No inbox or no Allow: Taildrop disabled.
	for _, h := range []*Handler{{Lookup: f.h.Lookup, Allow: f.h.Allow}, {Lookup: f.h.Lookup, Inbox: f.in}} {
		rec := httptest.NewRecorder()
		req := httptest.NewRequest("PUT", "/v0/put/x.txt", strings.NewReader("nope"))
		req.Host, req.RemoteAddr = "peer", "127.0.0.1:1234"
		h.ServeHTTP(rec, req)
		if rec.Code != http.StatusForbidden || !strings.Contains(rec.Body.String(), "Taildrop disabled") {
			t.Errorf("disabled: %d %q", rec.Code, rec.Body.String())
		}
	}
	if got := f.files(); len(got) != 0 {
		t.Errorf("files written: %q", got)
	}
}

func TestRequestValidation(t *testing.T) {
	f := newFixture(t)
	for _, tc := range []struct {
		hdr  []string
		want int
	}{
		{[]string{"Host", "peer"}, 200},
		{[]string{"Host", "100.64.0.1:41641"}, 200},
		{[]string{"Host", "[fd7a:115c:a1e0::1]:41641"}, 200},
		{[]string{"Host", "100.64.0.2:41641"}, 403},
		{[]string{"Host", "100.64.0.1"}, 403},
		{[]string{"Host", "attacker.example"}, 403},
		{[]string{"Host", "attacker.example:41641"}, 403},
		{[]string{"Host", "peer", "Origin", "http://attacker.example"}, 403},
		{[]string{"Host", "peer", "Referer", "http://attacker.example/"}, 403},
	} {
		r := f.do("127.0.0.1", "GET", "/v0/put/", nil, 0, tc.hdr...)
		if r.code != tc.want {
			t.Errorf("%v: %d %q, want %d", tc.hdr, r.code, r.body, tc.want)
		}
		if tc.want == 403 && !strings.Contains(r.body, "invalid peerapi request") {
			t.Errorf("%v: body %q", tc.hdr, r.body)
		}
		if tc.want == 403 {
			r = f.put("127.0.0.1", "rebound.txt", []byte("x"), tc.hdr...)
			if r.code != 403 {
				t.Errorf("PUT %v: %d", tc.hdr, r.code)
			}
		}
	}
	if got := f.files(); len(got) != 0 {
		t.Errorf("files written: %q", got)
	}
}

func TestMethodsAndPaths(t *testing.T) {
	f := newFixture(t)
	for _, tc := range []struct {
		method, path string
		want         int
	}{
		{"POST", "/v0/put/x.txt", 405},
		{"DELETE", "/v0/put/x.txt", 405},
		{"HEAD", "/v0/put/x.txt", 405},
		{"PATCH", "/v0/put/", 405},
		{"GET", "/", 404},
		{"GET", "/v0/env", 404},
		{"GET", "/v0/goroutines", 404},
		{"PUT", "/v0/put", 404},
		{"PUT", "/v1/put/x.txt", 404},
	} {
		r := f.do("127.0.0.1", tc.method, tc.path, strings.NewReader("x"), 1)
		if r.code != tc.want {
			t.Errorf("%s %s = %d %q, want %d", tc.method, tc.path, r.code, r.body, tc.want)
		}
		if tc.want == 405 && tc.method != "HEAD" && !strings.Contains(r.body, "expected method GET or PUT") {
			t.Errorf("%s %s: body %q", tc.method, tc.path, r.body)
		}
	}
	if got := f.files(); len(got) != 0 {
		t.Errorf("files written: %q", got)
	}
}

// interrupt sends the first n bytes of data as a PUT of name declaring the full length, then
// closes the connection, and waits until the receiver gave up.
func (f *fixture) interrupt(src, name string, data []byte, n int) {
	f.t.Helper()
	c, _ := f.rawPut(src, name, strconv.Itoa(len(data)))
	f.waitActive(testPeer[src], name)
	if _, err := c.Write(data[:n]); err != nil {
		f.t.Fatal(err)
	}
	c.Close()
	f.waitIdle()
}

func hashLines(t *testing.T, body string) []blockHash {
	t.Helper()
	var out []blockHash
	dec := json.NewDecoder(strings.NewReader(body))
	for dec.More() {
		var bh blockHash
		if err := dec.Decode(&bh); err != nil {
			t.Fatalf("bad hash stream %q: %v", body, err)
		}
		out = append(out, bh)
	}
	return out
}

func TestPartialListAndHashes(t *testing.T) {
	f := newFixture(t)
	if r := f.do("127.0.0.1", "GET", "/v0/put/", nil, 0); r.code != 200 || r.body != "null\n" {
		t.Errorf("empty list = %d %q", r.code, r.body)
	}
	if r := f.do("127.0.0.1", "GET", "/v0/put/x.bin", nil, 0); r.code != 200 || r.body != "" {
		t.Errorf("no partial: %d %q", r.code, r.body)
	}

	data := pattern(200_000, 2)
	f.interrupt("127.0.0.1", "x.bin", data, 150_000)
	if got := f.files(); !slices.Equal(got, []string{"x.bin.nALICE1CNTRL.partial"}) {
		t.Fatalf("inbox = %q", got)
	}
	if w := f.in.Waiting(); len(w) != 0 {
		t.Errorf("partial listed as waiting: %+v", w)
	}
	r := f.do("127.0.0.1", "GET", "/v0/put/", nil, 0)
	if r.code != 200 || r.body != "[\"x.bin.nALICE1CNTRL.partial\"]\n" {
		t.Errorf("list = %d %q", r.code, r.body)
	}
	if r := f.do("127.0.0.2", "GET", "/v0/put/", nil, 0); r.body != "null\n" {
		t.Errorf("other device sees %q", r.body)
	}
	if r := f.do("127.0.0.2", "GET", "/v0/put/x.bin", nil, 0); r.body != "" {
		t.Errorf("other device gets hashes %q", r.body)
	}

	r = f.do("127.0.0.1", "GET", "/v0/put/x.bin", nil, 0)
	hs := hashLines(t, r.body)
	sizes := []int64{65536, 65536, 150_000 - 2*65536}
	if r.code != 200 || len(hs) != len(sizes) {
		t.Fatalf("hashes = %d %q", r.code, r.body)
	}
	for i, h := range hs {
		end := int64(i)*65536 + h.Size
		sum := sha256.Sum256(data[int64(i)*65536 : end])
		if h.Algo != "sha256" || h.Size != sizes[i] || h.Checksum != hex.EncodeToString(sum[:]) {
			t.Errorf("block %d = %+v", i, h)
		}
	}
	// The exact wire format of the official receiver.
	first := strings.SplitN(r.body, "\n", 2)[0]
	sum := sha256.Sum256(data[:65536])
	if want := `{"checksum":"` + hex.EncodeToString(sum[:]) + `","algo":"sha256","size":65536}`; first != want {
		t.Errorf("line = %s\nwant   %s", first, want)
	}
}

func TestShortBodyKeepsPartial(t *testing.T) {
	f := newFixture(t)
	data := pattern(100_000, 3)
	c, br := f.rawPut("127.0.0.1", "short.bin", "100000")
	c.Write(data[:40_000])
	c.(interface{ CloseWrite() error }).CloseWrite()
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != 500 || !strings.Contains(string(body), "shorter than Content-Length") {
		t.Errorf("short body = %d %q", resp.StatusCode, body)
	}
	f.waitIdle()
	if got := f.files(); !slices.Equal(got, []string{"short.bin.nALICE1CNTRL.partial"}) {
		t.Fatalf("inbox = %q", got)
	}
	if st, _ := os.Stat(filepath.Join(f.dir, "short.bin.nALICE1CNTRL.partial")); st.Size() != 40_000 {
		t.Errorf("partial size %d", st.Size())
	}
	if len(f.in.Waiting()) != 0 {
		t.Error("short file looks complete")
	}
}

func TestRangeErrors(t *testing.T) {
	f := newFixture(t)
	for _, rh := range []string{"bytes=0-10", "bytes=-5", "bytes=1-,2-", "items=0-", "bytes=x-"} {
		if r := f.put("127.0.0.1", "r.bin", []byte("x"), "Range", rh); r.code != 400 || !strings.Contains(r.body, "invalid Range header") {
			t.Errorf("Range %q = %d %q", rh, r.code, r.body)
		}
	}
	// Resume without a partial.
	if r := f.put("127.0.0.1", "r.bin", []byte("x"), "Range", "bytes=5-"); r.code != 416 {
		t.Errorf("resume without partial = %d %q", r.code, r.body)
	}
	if got := f.files(); len(got) != 0 {
		t.Errorf("inbox = %q", got)
	}
	// Resume beyond the partial.
	data := pattern(10_000, 4)
	f.interrupt("127.0.0.1", "r.bin", data, 3000)
	if r := f.put("127.0.0.1", "r.bin", data[5000:], "Range", "bytes=5000-"); r.code != 416 {
		t.Errorf("resume beyond partial = %d %q", r.code, r.body)
	}
	pp := filepath.Join(f.dir, "r.bin.nALICE1CNTRL.partial")
	if st, err := os.Stat(pp); err != nil || st.Size() != 3000 {
		t.Errorf("partial changed: %v %v", st, err)
	}
	// A correct resume completes the file; a resume that cuts the partial shorter also works.
	if r := f.put("127.0.0.1", "r.bin", data[2000:], "Range", "bytes=2000-"); r.code != 200 {
		t.Fatalf("resume = %d %q", r.code, r.body)
	}
	if b, _ := os.ReadFile(filepath.Join(f.dir, "r.bin")); !bytes.Equal(b, data) {
		t.Error("resumed content differs")
	}
	// A fresh PUT (no Range) over a longer stale partial starts from 0.
	f.interrupt("127.0.0.1", "s.bin", data, 9000)
	if r := f.put("127.0.0.1", "s.bin", data[:100]); r.code != 200 {
		t.Fatalf("fresh put = %d", r.code)
	}
	if b, _ := os.ReadFile(filepath.Join(f.dir, "s.bin")); !bytes.Equal(b, data[:100]) {
		t.Errorf("fresh put over stale partial: %d bytes", len(b))
	}
}

func TestConcurrentSameName(t *testing.T) {
	f := newFixture(t)
	a := pattern(500_000, 5)
	pr, pw := io.Pipe()
	done := make(chan result, 1)
	go func() {
		done <- f.do("127.0.0.1", "PUT", "/v0/put/same.txt", pr, int64(len(a)))
	}()
	pw.Write(a[:1000])
	f.waitActive(alice, "same.txt")

	if r := f.put("127.0.0.1", "same.txt", []byte("second")); r.code != http.StatusConflict || !strings.Contains(r.body, "file already exists") {
		t.Errorf("concurrent PUT = %d %q", r.code, r.body)
	}
	// The hash query and a resume must not disturb the running transfer either.
	if r := f.put("127.0.0.1", "same.txt", []byte("x"), "Range", "bytes=0-"); r.code != http.StatusConflict {
		t.Errorf("concurrent resume = %d %q", r.code, r.body)
	}
	// Another device of the same user may send the same name meanwhile.
	if r := f.put("127.0.0.2", "same.txt", []byte("from the phone")); r.code != 200 {
		t.Errorf("other peer = %d %q", r.code, r.body)
	}
	pw.Write(a[1000:])
	pw.Close()
	if r := <-done; r.code != 200 {
		t.Fatalf("first PUT = %+v", r)
	}
	if got := f.files(); !slices.Equal(got, []string{"same (1).txt", "same.txt"}) {
		t.Fatalf("inbox = %q", got)
	}
	if b, _ := os.ReadFile(filepath.Join(f.dir, "same (1).txt")); !bytes.Equal(b, a) {
		t.Error("content of the renamed file differs")
	}
}

func TestCollisionsAndDuplicates(t *testing.T) {
	f := newFixture(t)
	want := []string{"a.tar.gz"}
	for i := 1; i <= 10; i++ {
		want = append(want, "a ("+strconv.Itoa(i)+").tar.gz")
	}
	for i := range 11 {
		if r := f.put("127.0.0.1", "a.tar.gz", pattern(1000, byte(i))); r.code != 200 {
			t.Fatalf("put %d = %+v", i, r)
		}
	}
	got := f.files()
	slices.Sort(want)
	if !slices.Equal(got, want) {
		t.Fatalf("inbox = %q", got)
	}
	r := f.put("127.0.0.1", "a.tar.gz", pattern(1000, 99))
	if r.code != 500 || !strings.Contains(r.body, "too many") {
		t.Errorf("12th = %d %q", r.code, r.body)
	}
	if got := f.files(); !slices.Equal(got, want) {
		t.Fatalf("after the 12th: %q", got)
	}
	// Identical re-sends are absorbed, whichever copy they match.
	arrivals := 0
	f.in.OnArrive(func(ipc.WaitingFile) { arrivals++ })
	for _, i := range []int{0, 7} {
		if r := f.put("127.0.0.1", "a.tar.gz", pattern(1000, byte(i))); r.code != 200 {
			t.Fatalf("re-send %d = %+v", i, r)
		}
	}
	if got := f.files(); len(got) != 11 || slices.ContainsFunc(got, func(s string) bool { return strings.HasSuffix(s, ".partial") }) {
		t.Errorf("after identical re-sends: %q", got)
	}
	if arrivals != 2 {
		t.Errorf("OnArrive calls for duplicates = %d", arrivals)
	}
	if n := len(f.in.Waiting()); n != 11 {
		t.Errorf("Waiting = %d", n)
	}
}

func TestSymlinksAndPlantedFiles(t *testing.T) {
	f := newFixture(t)
	outside := filepath.Join(t.TempDir(), "secret")
	os.WriteFile(outside, []byte("secret"), 0o600)
	check := func() {
		t.Helper()
		if b, err := os.ReadFile(outside); err != nil || string(b) != "secret" {
			t.Fatalf("outside file changed: %q %v", b, err)
		}
	}
	// Final name planted as a symlink: the new file gets another name.
	os.Symlink(outside, filepath.Join(f.dir, "x.txt"))
	if r := f.put("127.0.0.1", "x.txt", []byte("payload")); r.code != 200 {
		t.Fatalf("put = %+v", r)
	}
	check()
	if l, err := os.Readlink(filepath.Join(f.dir, "x.txt")); err != nil || l != outside {
		t.Error("planted symlink replaced")
	}
	if b, _ := os.ReadFile(filepath.Join(f.dir, "x (1).txt")); string(b) != "payload" {
		t.Errorf("x (1).txt = %q", b)
	}
	// Same bytes as the symlink's target: still not "identical" through the link.
	if r := f.put("127.0.0.1", "x.txt", []byte("secret")); r.code != 200 {
		t.Fatalf("put = %+v", r)
	}
	if b, _ := os.ReadFile(filepath.Join(f.dir, "x (2).txt")); string(b) != "secret" {
		t.Errorf("x (2).txt = %q", b)
	}
	check()

	// Partial name planted as a symlink: refused, not followed for writing nor hashing.
	pl := filepath.Join(f.dir, "y.txt.nALICE1CNTRL.partial")
	os.Symlink(outside, pl)
	for _, rh := range []string{"", "bytes=0-", "bytes=3-"} {
		var hdr []string
		if rh != "" {
			hdr = []string{"Range", rh}
		}
		if r := f.put("127.0.0.1", "y.txt", []byte("overwrite"), hdr...); r.code != 500 {
			t.Errorf("put via symlinked partial (Range %q) = %d %q", rh, r.code, r.body)
		}
	}
	if r := f.do("127.0.0.1", "GET", "/v0/put/y.txt", nil, 0); r.code != 500 || strings.Contains(r.body, "checksum") {
		t.Errorf("hashes via symlinked partial = %d %q", r.code, r.body)
	}
	check()
	if l, err := os.Readlink(pl); err != nil || l != outside {
		t.Error("planted partial symlink replaced")
	}
	// Partial planted as a hard link to a file elsewhere on the same file system.
	hl := filepath.Join(filepath.Dir(f.dir), "hardtarget")
	os.WriteFile(hl, []byte("hard target"), 0o600)
	os.Link(hl, filepath.Join(f.dir, "z.txt.nALICE1CNTRL.partial"))
	if r := f.put("127.0.0.1", "z.txt", []byte("overwrite")); r.code != 500 {
		t.Errorf("put via hard-linked partial = %d %q", r.code, r.body)
	}
	if b, _ := os.ReadFile(hl); string(b) != "hard target" {
		t.Errorf("hard link target changed: %q", b)
	}
	// A FIFO under a final name is skipped, and opening it does not block.
	syscall.Mkfifo(filepath.Join(f.dir, "fifo"), 0o600)
	if r := f.put("127.0.0.1", "fifo", []byte("data")); r.code != 200 {
		t.Errorf("put over fifo = %+v", r)
	}

	// The inbox API never follows or lists any of these.
	for _, w := range f.in.Waiting() {
		if w.Name == "x.txt" || w.Name == "fifo" {
			t.Errorf("Waiting lists %q", w.Name)
		}
	}
	for _, n := range []string{"x.txt", "fifo"} {
		if _, _, err := f.in.Open(n); err == nil {
			t.Errorf("Open(%q) succeeded", n)
		}
		if err := f.in.Delete(n); err == nil {
			t.Errorf("Delete(%q) succeeded", n)
		}
	}
	if _, err := os.Lstat(filepath.Join(f.dir, "x.txt")); err != nil {
		t.Error("Delete removed the symlink")
	}
	check()

	// An inbox path that is a symlink is refused.
	link := filepath.Join(t.TempDir(), "link")
	os.Symlink(t.TempDir(), link)
	if in, err := OpenInbox(link, nil); err == nil {
		in.Close()
		t.Error("OpenInbox followed a symlink")
	}
	if _, err := OpenInbox("relative/dir", nil); err == nil {
		t.Error("OpenInbox accepted a relative path")
	}
}

func TestOpenInboxFixesMode(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "a", "b")
	os.MkdirAll(dir, 0o777)
	os.Chmod(dir, 0o777)
	in, err := OpenInbox(dir, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer in.Close()
	if st, _ := os.Stat(dir); st.Mode().Perm() != 0o700 {
		t.Errorf("mode %v", st.Mode())
	}
	if os.Geteuid() == 0 {
		other := filepath.Join(t.TempDir(), "other")
		os.Mkdir(other, 0o700)
		os.Chown(other, 1234, 1234)
		if in, err := OpenInbox(other, nil); err == nil {
			in.Close()
			t.Error("OpenInbox accepted a directory owned by another user")
		}
	}
}

func TestStalePartials(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "inbox")
	os.Mkdir(dir, 0o700)
	old := time.Now().Add(-2 * time.Hour)
	for _, n := range []string{"old.nA.partial", "fresh.nA.partial", "complete.txt", "busy.nA.partial"} {
		p := filepath.Join(dir, n)
		os.WriteFile(p, []byte("x"), 0o600)
		if n != "fresh.nA.partial" {
			os.Chtimes(p, old, old)
		}
	}
	os.Symlink("/etc/hostname", filepath.Join(dir, "link.nA.partial"))
	in, err := OpenInbox(dir, nil) // cleans at once, but "busy" is not active yet
	if err != nil {
		t.Fatal(err)
	}
	defer in.Close()
	left := func() []string {
		e, _ := os.ReadDir(dir)
		var s []string
		for _, x := range e {
			s = append(s, x.Name())
		}
		return s
	}
	if got := left(); !slices.Equal(got, []string{"complete.txt", "fresh.nA.partial", "link.nA.partial"}) {
		t.Fatalf("after open: %q", got)
	}
	// An active transfer's partial is kept however old; others go when they turn stale.
	os.WriteFile(filepath.Join(dir, "busy.nA.partial"), []byte("x"), 0o600)
	in.mu.Lock()
	in.active["busy.nA.partial"] = true
	in.mu.Unlock()
	in.now = func() time.Time { return time.Now().Add(3 * time.Hour) }
	in.cleanStale()
	if got := left(); !slices.Equal(got, []string{"busy.nA.partial", "complete.txt", "link.nA.partial"}) {
		t.Fatalf("after an hour: %q", got)
	}
}

func TestListen(t *testing.T) {
	a := netip.MustParseAddr("127.0.0.1")
	ln, err := Listen(t.Context(), a)
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	if got := ln.Addr().(*net.TCPAddr).Port; got != int(PeerAPIPort(a, 0)) {
		t.Logf("port %d (preferred %d taken?)", got, PeerAPIPort(a, 0))
	}
	// The preferred port is taken now: the next one is used.
	ln2, err := Listen(t.Context(), a)
	if err != nil {
		t.Fatal(err)
	}
	defer ln2.Close()
	if ln2.Addr().String() == ln.Addr().String() {
		t.Error("same port twice")
	}
}
