package lab

import (
	"errors"
	"fmt"
	"testing"
	"time"
)

// pollInterval is how often WaitFor and Eventually retry.
const pollInterval = 200 * time.Millisecond

type stopError struct{ err error }

func (e stopError) Error() string { return e.err.Error() }
func (e stopError) Unwrap() error { return e.err }

// stopWaiting wraps an error that makes WaitFor give up at once.
func stopWaiting(err error) error { return stopError{err} }

// WaitFor calls fn until it returns nil or timeout passes, and then returns
// fn's last error.
func WaitFor(timeout time.Duration, fn func() error) error {
	start := time.Now()
	deadline := start.Add(timeout)
	for {
		err := fn()
		if err == nil {
			return nil
		}
		var se stopError
		if errors.As(err, &se) {
			return se.err
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("still failing after %v: %w", time.Since(start).Round(time.Millisecond), err)
		}
		time.Sleep(pollInterval)
	}
}

// Eventually fails the test (t.Fatal, so call it from the test goroutine)
// unless fn returns nil within timeout. fn is retried every 200ms.
func Eventually(t testing.TB, timeout time.Duration, fn func() error) {
	t.Helper()
	if err := WaitFor(timeout, fn); err != nil {
		t.Fatalf("lab.Eventually: %v", err)
	}
}
