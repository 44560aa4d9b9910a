package wake

import (
	"context"
	"testing"
	"testing/synctest"
	"time"
)

func TestUntil(t *testing.T) {
	t.Parallel()
	now := time.Unix(1000, 0)
	for _, tt := range []struct {
		due  time.Time
		ok   bool
		want time.Duration
	}{
		{now.Add(3 * time.Second), true, 3 * time.Second},
		{now.Add(time.Hour), true, 10 * time.Second},
		{now.Add(-time.Hour), true, time.Millisecond},
		{time.Time{}, false, 10 * time.Second},
	} {
		if got := Until(tt.due, tt.ok, now, 10*time.Second); got != tt.want {
			t.Errorf("Until(%v, %v) = %s, want %s", tt.due, tt.ok, got, tt.want)
		}
	}
}

func TestSleepEndsAtTheFirstOfTimeNotifyAndContext(t *testing.T) {
	t.Parallel()
	synctest.Test(t, func(t *testing.T) {
		s := New()
		start := time.Now()
		s.Sleep(context.Background(), time.Minute)
		if d := time.Since(start); d != time.Minute {
			t.Fatalf("slept %s, want 1m", d)
		}

		s.Notify()
		s.Notify() // a second notification is not queued twice
		start = time.Now()
		s.Sleep(context.Background(), time.Minute)
		if d := time.Since(start); d != 0 {
			t.Fatalf("notified sleep took %s", d)
		}
		start = time.Now()
		s.Sleep(context.Background(), time.Minute)
		if d := time.Since(start); d != time.Minute {
			t.Fatalf("a spent notification woke a later sleep after %s", d)
		}

		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		start = time.Now()
		s.Sleep(ctx, time.Minute)
		if d := time.Since(start); d != time.Second {
			t.Fatalf("ctx-bounded sleep took %s", d)
		}
	})
}
