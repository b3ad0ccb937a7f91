package session

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"
)

// fakeControl records the reports it receives; each carries the facts' version at send time.
type fakeControl struct {
	mu      sync.Mutex
	version int   // the facts the node has now
	got     []int // versions received, in order
	at      []time.Time
	fail    int           // fail this many requests first
	block   chan struct{} // when set, a request waits for it
}

func (f *fakeControl) set(v int) {
	f.mu.Lock()
	f.version = v
	f.mu.Unlock()
}

func (f *fakeControl) send(ctx context.Context) error {
	f.mu.Lock()
	v, block := f.version, f.block
	if f.fail > 0 {
		f.fail--
		f.mu.Unlock()
		return errors.New("control: 502 bad gateway")
	}
	f.mu.Unlock()
	if block != nil {
		select {
		case <-block:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	f.mu.Lock()
	f.got = append(f.got, v)
	f.at = append(f.at, time.Now())
	f.mu.Unlock()
	return nil
}

func (f *fakeControl) received() []int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]int(nil), f.got...)
}

func waitUntil(t *testing.T, d time.Duration, what string, ok func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !ok() {
		if time.Now().After(deadline) {
			t.Fatalf("after %v: %s", d, what)
		}
		time.Sleep(time.Millisecond)
	}
}

func testReporter(f *fakeControl) *reporter {
	r := newReporter(f.send, func(string, ...any) {})
	r.retryMin, r.retryMax, r.confirm = 20*time.Millisecond, 80*time.Millisecond, 300*time.Millisecond
	r.start()
	return r
}

// A change reaches control within 250 ms, and the same facts are confirmed once afterwards.
func TestReporterSendsAtOnceAndConfirms(t *testing.T) {
	f := &fakeControl{}
	r := testReporter(f)
	defer r.close()
	f.set(1)
	start := time.Now()
	r.changed()
	waitUntil(t, 250*time.Millisecond, "the change did not reach control", func() bool { return len(f.received()) >= 1 })
	t.Logf("reached control after %v", time.Since(start))
	waitUntil(t, 2*time.Second, "no confirmation", func() bool { return len(f.received()) >= 2 })
	if got := f.received(); got[0] != 1 || got[1] != 1 {
		t.Fatalf("reports %v, want [1 1]", got)
	}
	f.mu.Lock()
	gap := f.at[1].Sub(f.at[0])
	f.mu.Unlock()
	if gap < r.confirm {
		t.Errorf("confirmation after %v, want ≥ %v (after control's batch window)", gap, r.confirm)
	}
	time.Sleep(3 * r.confirm)
	if n := len(f.received()); n != 2 {
		t.Errorf("%d reports for one change, want 2 (report and confirmation)", n)
	}
}

// Changes during a request in flight are coalesced into one more request with the newest facts;
// none is lost.
func TestReporterCoalescesWithoutLoss(t *testing.T) {
	f := &fakeControl{block: make(chan struct{})}
	r := testReporter(f)
	defer r.close()
	f.set(1)
	r.changed()
	time.Sleep(20 * time.Millisecond) // request 1 is in flight, blocked
	for v := 2; v <= 50; v++ {
		f.set(v)
		r.changed()
	}
	// Release the first request; later ones do not block.
	f.mu.Lock()
	blocked := f.block
	f.block = nil
	f.mu.Unlock()
	close(blocked)
	waitUntil(t, time.Second, "the newest facts never reached control", func() bool {
		got := f.received()
		return len(got) > 0 && got[len(got)-1] == 50
	})
	got := f.received()
	if len(got) > 4 {
		t.Errorf("49 changes during one request gave %d requests %v; want them coalesced", len(got), got)
	}
}

// A request that fails is retried until it succeeds.
func TestReporterRetriesFailures(t *testing.T) {
	f := &fakeControl{fail: 3}
	r := testReporter(f)
	defer r.close()
	f.set(7)
	r.changed()
	waitUntil(t, 2*time.Second, "a failed report was not retried", func() bool { return len(f.received()) >= 1 })
	if got := f.received(); got[0] != 7 {
		t.Fatalf("got %v", got)
	}
}

// close ends a reporter stuck in a request or a retry at once.
func TestReporterCloseCancels(t *testing.T) {
	f := &fakeControl{block: make(chan struct{})}
	r := testReporter(f)
	r.changed()
	time.Sleep(20 * time.Millisecond)
	done := make(chan struct{})
	go func() { r.close(); close(done) }()
	select {
	case <-done:
	case <-time.After(time.Second):
		t.Fatal("close waited for the request in flight")
	}
}
