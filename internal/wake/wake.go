// Package wake lets a background loop sleep until its next piece of work
// is due, or until something wakes it sooner.
package wake

import (
	"context"
	"time"
)

// Signal wakes one sleeper. The zero value is not usable; call New.
type Signal struct {
	ch chan struct{}
}

// New returns a signal.
func New() *Signal { return &Signal{ch: make(chan struct{}, 1)} }

// Notify wakes the sleeper, or the next one to sleep, without blocking.
func (s *Signal) Notify() {
	select {
	case s.ch <- struct{}{}:
	default:
	}
}

// Sleep waits for d, a notification, or the end of ctx.
func (s *Signal) Sleep(ctx context.Context, d time.Duration) {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
	case <-s.ch:
	case <-ctx.Done():
	}
}

// Until is how long to sleep before work due at due (if ok) at time now:
// at least a millisecond, at most limit.
func Until(due time.Time, ok bool, now time.Time, limit time.Duration) time.Duration {
	if !ok {
		return limit
	}
	return max(time.Millisecond, min(due.Sub(now), limit))
}
