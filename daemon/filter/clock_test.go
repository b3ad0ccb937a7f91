package filter

import (
	"testing"
	"time"
)

func TestCoarseClock(t *testing.T) {
	const tick = 5 * time.Millisecond
	c := newCoarseClock(tick)
	if !c.parked.Load() {
		t.Fatal("new clock is running")
	}
	r0 := c.read()
	if c.parked.Load() || r0 <= 0 {
		t.Fatalf("read did not start the clock (%d)", r0)
	}
	// While read, it follows real time within about a tick.
	deadline := time.Now().Add(2 * time.Second)
	for c.read() == r0 {
		if time.Now().After(deadline) {
			t.Fatal("clock does not advance while in use")
		}
		time.Sleep(tick / 2)
	}
	if lag := c.real() - c.read(); lag < 0 || lag > int64(time.Second) {
		t.Errorf("clock lags %v", time.Duration(lag))
	}
	// Unread, it parks after an idle tick.
	for !c.parked.Load() {
		if time.Now().After(deadline) {
			t.Fatal("idle clock does not park")
		}
		time.Sleep(tick)
	}
	before := c.now.Load()
	time.Sleep(3 * tick)
	if c.now.Load() != before {
		t.Fatal("parked clock still ticking")
	}
	// The first read after parking is current.
	if got, real := c.read(), c.real(); real-got > int64(tick) || got <= before {
		t.Errorf("read after parking = %d, real %d, before %d", got, real, before)
	}
}
