package filter

import (
	"sync/atomic"
	"time"
)

// clockTick is the resolution of the flow table's clock. Flow expiry is measured in minutes,
// so a reading up to a tick old is fine.
const clockTick = time.Second

// coarseClock is a monotonic clock that is cheap to read on every packet: a timer refreshes an
// atomic every tick while the clock is in use, and stops itself after an idle tick, so an idle
// daemon takes no wake-ups. The first read after that refreshes it directly. (Reading the
// system clock costs tens of nanoseconds, more on virtual machines with a paravirtual clock.)
//
// The timer references only the clock, so an abandoned Engine is collected after its clock
// has parked.
type coarseClock struct {
	start  time.Time
	tick   time.Duration
	now    atomic.Int64 // nanoseconds since start, plus 1 so that it is never 0
	used   atomic.Bool  // read since the last tick
	parked atomic.Bool  // timer stopped
	timer  *time.Timer
}

func newCoarseClock(tick time.Duration) *coarseClock {
	c := &coarseClock{start: time.Now(), tick: tick}
	c.now.Store(1)
	c.parked.Store(true)
	c.timer = time.AfterFunc(time.Hour, c.fire)
	c.timer.Stop()
	return c
}

func (c *coarseClock) real() int64 { return int64(time.Since(c.start)) + 1 }

func (c *coarseClock) read() int64 {
	if !c.used.Load() {
		c.used.Store(true)
	}
	if c.parked.Load() && c.parked.CompareAndSwap(true, false) {
		c.now.Store(c.real())
		c.timer.Reset(c.tick)
	}
	return c.now.Load()
}

func (c *coarseClock) fire() {
	c.now.Store(c.real())
	if c.used.Swap(false) {
		c.timer.Reset(c.tick)
		return
	}
	c.parked.Store(true)
}
