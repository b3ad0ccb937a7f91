package taildrop

import (
	"bufio"
	"bytes"
	"io"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"
)

// TestInboxQuota (hole 4): what waits in the inbox is bounded in bytes and files, and one
// sender can use only its share, whatever the free space.
func TestInboxQuota(t *testing.T) {
	f := newFixture(t)
	f.in.SetLimits(Limits{MaxBytes: 1 << 20, PeerBytes: 600 << 10, MaxFiles: 5, PeerFiles: 3})
	kb := func(n int) []byte { return bytes.Repeat([]byte{'x'}, n<<10) }

	if r := f.put("127.0.0.1", "a1", kb(500)); r.code != 200 {
		t.Fatalf("first file: %+v", r)
	}
	// Alice's share is 600 KiB: 200 more do not fit, with a message that says why.
	r := f.put("127.0.0.1", "a2", kb(200))
	if r.code != http.StatusInsufficientStorage || !strings.Contains(r.body, "this sender's files") {
		t.Errorf("over alice's share: %d %q", r.code, r.body)
	}
	// Unknown length: cut off at the share, the partial removed.
	r = f.do("127.0.0.1", "PUT", "/v0/put/a3", io.MultiReader(bytes.NewReader(kb(300))), -1)
	if r.code != http.StatusInsufficientStorage {
		t.Errorf("chunked over alice's share: %d %q", r.code, r.body)
	}
	f.waitIdle()
	// Her other device is another sender: it may use its own share, up to the inbox's total.
	if r := f.put("127.0.0.2", "b1", kb(400)); r.code != 200 {
		t.Fatalf("alice2: %+v", r)
	}
	r = f.put("127.0.0.2", "b2", kb(200))
	if r.code != http.StatusInsufficientStorage || !strings.Contains(r.body, "inbox is full") {
		t.Errorf("over the inbox total: %d %q", r.code, r.body)
	}
	if got := f.files(); len(got) != 2 {
		t.Errorf("inbox holds %q, want a1 and b1 only", got)
	}

	// Files: small ones, up to the sender's count and then the inbox's.
	f.in.SetLimits(Limits{MaxBytes: 1 << 30, MaxFiles: 5, PeerFiles: 3})
	for _, n := range []string{"a4", "a5"} {
		if r := f.put("127.0.0.1", n, []byte("x")); r.code != 200 {
			t.Fatalf("%s: %+v", n, r)
		}
	}
	if r := f.put("127.0.0.1", "a6", []byte("x")); r.code != http.StatusInsufficientStorage || !strings.Contains(r.body, "files from this sender") {
		t.Errorf("alice's fourth file: %d %q", r.code, r.body)
	}
	if r := f.put("127.0.0.2", "b3", []byte("x")); r.code != 200 {
		t.Fatalf("b3: %+v", r)
	}
	if r := f.put("127.0.0.2", "b4", []byte("x")); r.code != http.StatusInsufficientStorage || !strings.Contains(r.body, "inbox is full") {
		t.Errorf("sixth file: %d %q", r.code, r.body)
	}
	// Taking a file makes room.
	if err := f.in.Delete("a1"); err != nil {
		t.Fatal(err)
	}
	if r := f.put("127.0.0.2", "b4", []byte("x")); r.code != 200 {
		t.Errorf("after a file was taken: %+v", r)
	}
}

// TestInboxExpiry (hole 4): a file nobody takes is removed after the expiry, and its listing
// says when.
func TestInboxExpiry(t *testing.T) {
	f := newFixture(t)
	if r := f.put("127.0.0.1", "old.txt", []byte("hello")); r.code != 200 {
		t.Fatal(r)
	}
	w := f.in.Waiting()
	if len(w) != 1 || !w[0].Expires.Equal(w[0].Received.Add(DefaultExpiry)) {
		t.Fatalf("waiting %+v, want Expires = Received + %v", w, DefaultExpiry)
	}
	f.in.cleanExpired()
	if len(f.in.Waiting()) != 1 {
		t.Fatal("a fresh file was removed")
	}
	f.in.now = func() time.Time { return time.Now().Add(DefaultExpiry + time.Minute) }
	changed := f.in.Changed()
	f.in.cleanExpired()
	if got := f.files(); len(got) != 0 {
		t.Errorf("after the expiry the inbox holds %q", got)
	}
	select {
	case <-changed:
	default:
		t.Error("waiters not told of the removal")
	}
}

// TestRefusedPeersHoldNoSlots (hole 4): connections from a peer that may not send files are
// answered (403) on their own budget and never take the slots of those who may; one allowed
// peer holds at most its share.
func TestRefusedPeersHoldNoSlots(t *testing.T) {
	f := newFixture(t, func(h *Handler) { h.MaxConns, h.HeaderTimeout = 40, 300*time.Millisecond })
	// Mallory (another user) opens many connections that send nothing.
	for range 60 {
		f.dial("127.0.0.3")
	}
	// Alice's other device holds idle connections too, more than its share.
	for range DefaultMaxConnsPerPeer + 5 {
		f.dial("127.0.0.2")
	}
	time.Sleep(100 * time.Millisecond)
	if r := f.put("127.0.0.1", "ok.txt", []byte("hello")); r.code != 200 {
		t.Fatalf("alice while mallory and alice2 hold connections: %+v", r)
	}
	// Mallory still learns why, when it sends a request (on a connection it gets).
	c := f.dialAfterRefusals("127.0.0.3")
	if c == nil {
		t.Fatal("the budget for refused peers never freed up")
	}
	io.WriteString(c, "PUT /v0/put/x HTTP/1.1\r\nHost: peer\r\nContent-Length: 1\r\n\r\nx")
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil || resp.StatusCode != http.StatusForbidden {
		t.Fatalf("mallory's request: %v %v", resp, err)
	}
	if b, _ := io.ReadAll(resp.Body); !strings.Contains(string(b), "not allowed") {
		t.Errorf("mallory is not told why: %q", b)
	}
}

// dialAfterRefusals dials from src once the refused connections of the test have been answered
// or closed; nil when the budget for refused peers stays full.
func (f *fixture) dialAfterRefusals(src string) interface {
	io.Writer
	io.Reader
} {
	deadline := time.Now().Add(5 * time.Second)
	for time.Now().Before(deadline) {
		if f.h.refused.Load() < maxRefused {
			return f.dial(src)
		}
		time.Sleep(20 * time.Millisecond)
	}
	return nil
}

// TestTransfersPerPeer (hole 4): one peer runs at most its share of the concurrent transfers.
func TestTransfersPerPeer(t *testing.T) {
	f := newFixture(t)
	release := make(chan struct{})
	var wg sync.WaitGroup
	codes := make(chan int, DefaultMaxTransfersPerPeer+1)
	for i := range DefaultMaxTransfersPerPeer {
		wg.Add(1)
		go func() {
			defer wg.Done()
			pr, pw := io.Pipe()
			go func() { pw.Write([]byte("x")); <-release; pw.Close() }()
			r := f.do("127.0.0.1", "PUT", "/v0/put/slow"+string(rune('a'+i)), pr, -1)
			codes <- r.code
		}()
	}
	deadline := time.Now().Add(5 * time.Second)
	for f.h.transfers.Load() < DefaultMaxTransfersPerPeer && time.Now().Before(deadline) {
		time.Sleep(5 * time.Millisecond)
	}
	r := f.put("127.0.0.1", "one-more", []byte("x"))
	if r.code != http.StatusServiceUnavailable || !strings.Contains(r.body, "from this node") {
		t.Errorf("alice's extra transfer: %d %q", r.code, r.body)
	}
	if r := f.put("127.0.0.2", "other-device", []byte("x")); r.code != 200 {
		t.Errorf("alice2 while alice uses her share: %+v", r)
	}
	close(release)
	wg.Wait()
	close(codes)
	for c := range codes {
		if c != 200 {
			t.Errorf("slow transfer ended %d", c)
		}
	}
}
