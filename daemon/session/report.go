package session

import (
	"context"
	"sync"
	"time"
)

// Timings of the reporter. Headscale v0.27 turns each report into a change that its batcher
// sends to the peers at its next tick (800 ms by default), and that batcher can lose a change
// that arrives while it flushes (pendingChanges is read, appended and stored without a lock,
// and deleted after the flush). The confirmation lands after that window, so a lost change is
// repaired within a second or two instead of staying lost until our network next changes.
const (
	reportTimeout = 5 * time.Second
	reportRetry   = 250 * time.Millisecond
	reportBackoff = 5 * time.Second
	reportConfirm = 1500 * time.Millisecond
)

// reporter sends control this node's network facts (home DERP, endpoints, NetInfo, Hostinfo)
// as lite map requests: each change goes out at once, changes that come while a request is in
// flight are coalesced into the next one (which carries the newest facts), a failed request is
// retried until it succeeds or the session ends, and each successful report is repeated once
// after reportConfirm.
type reporter struct {
	send func(ctx context.Context) error // builds the request from the newest facts and sends it
	logf func(string, ...any)

	retryMin, retryMax, confirm time.Duration

	wake chan struct{}
	stop chan struct{}
	done chan struct{}

	mu    sync.Mutex
	count int // successful requests, for tests and logs
}

func newReporter(send func(context.Context) error, logf func(string, ...any)) *reporter {
	r := &reporter{
		send: send, logf: logf,
		retryMin: reportRetry, retryMax: reportBackoff, confirm: reportConfirm,
		wake: make(chan struct{}, 1),
		stop: make(chan struct{}),
		done: make(chan struct{}),
	}
	return r
}

func (r *reporter) start() { go r.run() }

// changed says the facts changed; it never blocks.
func (r *reporter) changed() {
	select {
	case r.wake <- struct{}{}:
	default:
	}
}

// close ends the reporter and waits for it; a request in flight is cancelled.
func (r *reporter) close() {
	close(r.stop)
	<-r.done
}

func (r *reporter) sent() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.count
}

func (r *reporter) run() {
	defer close(r.done)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go func() {
		<-r.stop
		cancel()
	}()
	for {
		select {
		case <-r.wake:
		case <-r.stop:
			return
		}
		if !r.sendUntilOK(ctx) {
			return
		}
		t := time.NewTimer(r.confirm)
		select {
		case <-r.stop:
			t.Stop()
			return
		case <-r.wake:
			// A newer change: report it (it gets its own confirmation).
			t.Stop()
			r.changed()
			continue
		case <-t.C:
		}
		if !r.sendUntilOK(ctx) {
			return
		}
	}
}

// sendUntilOK sends one report, retrying with backoff; false when the reporter is stopping.
func (r *reporter) sendUntilOK(ctx context.Context) bool {
	backoff := r.retryMin
	for {
		// A change that came in while we were waiting is covered by this request.
		select {
		case <-r.wake:
		default:
		}
		sctx, cancel := context.WithTimeout(ctx, reportTimeout)
		err := r.send(sctx)
		cancel()
		if ctx.Err() != nil {
			return false
		}
		if err == nil {
			r.mu.Lock()
			r.count++
			r.mu.Unlock()
			return true
		}
		r.logf("control: reporting our endpoints: %v (retrying in %v)", err, backoff)
		t := time.NewTimer(jitter(backoff))
		select {
		case <-r.stop:
			t.Stop()
			return false
		case <-t.C:
		}
		backoff = min(2*backoff, r.retryMax)
	}
}
