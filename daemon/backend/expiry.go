package backend

import (
	"fmt"
	"time"

	"github.com/skeinvpn/skein/ipc"
)

// Node key expiry: a health issue from 7 days before this device's key expires, and an event
// to watchers when it crosses 7 days, 1 day and the expiry itself, so that front ends warn in
// time without polling. Times are the control server's (the netmap's ControlTime), which is what
// decides the expiry.

// Thresholds of the key expiry warning (vars for tests).
var (
	keyWarnBefore   = 7 * 24 * time.Hour
	keyUrgentBefore = 24 * time.Hour
)

// keyExpiryIssueLocked is the warning for this device's key, nil when it is far from expiring
// (or never expires, or has expired: then a login is needed, which the state says).
func (b *Backend) keyExpiryIssueLocked(now time.Time) *ipc.Issue {
	if b.nm == nil || b.nm.Self == nil || b.nm.Self.KeyExpiry.IsZero() {
		return nil
	}
	left := b.nm.Self.KeyExpiry.Sub(b.nm.ServerNow(now))
	if left <= 0 || left > keyWarnBefore {
		return nil
	}
	// In our clock, for front ends that count down.
	at := now.Add(left).UTC()
	return &ipc.Issue{
		Code:    ipc.IssueKeyExpiring,
		Message: fmt.Sprintf("this device's key expires in %s (%s); log in again to keep it connected", roughDuration(left), at.Format(time.RFC3339)),
		Fix:     "skein up --force-reauth",
		Data:    map[string]string{"expiry": at.Format(time.RFC3339)},
	}
}

// roughDuration is "3 days", "5 hours", "12 minutes" or "less than a minute".
func roughDuration(d time.Duration) string {
	plural := func(n int, unit string) string {
		if n == 1 {
			return "1 " + unit
		}
		return fmt.Sprintf("%d %ss", n, unit)
	}
	round := func(unit time.Duration) int { return int((d + unit/2) / unit) }
	switch {
	case d >= 47*time.Hour+30*time.Minute:
		return plural(round(24*time.Hour), "day")
	case d >= 119*time.Minute+30*time.Second:
		return plural(round(time.Hour), "hour")
	case d >= time.Minute:
		return plural(round(time.Minute), "minute")
	}
	return "less than a minute"
}

// scheduleExpiryLocked arms a timer for the next threshold the key's expiry crosses.
func (b *Backend) scheduleExpiryLocked() {
	if b.expiryTimer != nil {
		b.expiryTimer.Stop()
		b.expiryTimer = nil
	}
	if b.closed || b.nm == nil || b.nm.Self == nil || b.nm.Self.KeyExpiry.IsZero() {
		return
	}
	left := b.nm.Self.KeyExpiry.Sub(b.nm.ServerNow(time.Now()))
	for _, before := range []time.Duration{keyWarnBefore, keyUrgentBefore, 0} {
		if left > before {
			nm := b.nm
			b.expiryTimer = time.AfterFunc(left-before, func() {
				b.mu.Lock()
				defer b.mu.Unlock()
				if b.closed || b.nm != nm {
					return
				}
				b.notifyLocked(ipc.EventNetmap, nil)
				b.scheduleExpiryLocked()
			})
			return
		}
	}
}
