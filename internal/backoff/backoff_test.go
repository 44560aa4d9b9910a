package backoff

import (
	"math"
	"net/http"
	"testing"
	"time"
)

func TestBackoff(t *testing.T) {
	t.Parallel()
	const lo, hi = time.Second, 10 * time.Minute
	tests := []struct {
		attempt int
		jitter  float64
		want    time.Duration
	}{
		{1, 0, 500 * time.Millisecond},
		{1, 0.5, 750 * time.Millisecond},
		{2, 0, time.Second},
		{3, 0.999, 3998 * time.Millisecond},
		{10, 0, 256 * time.Second},
		{11, 0, 5 * time.Minute}, // 1024s is capped at 600s, halved by jitter 0
		{math.MaxInt, 0, 5 * time.Minute},
	}
	for _, tt := range tests {
		if got := Delay(tt.attempt, lo, hi, tt.jitter); got != tt.want {
			t.Errorf("Delay(%d, jitter %v) = %s, want %s", tt.attempt, tt.jitter, got, tt.want)
		}
	}
	// Bounds near the top of the duration range do not overflow.
	huge := time.Duration(math.MaxInt64 / 3 * 2)
	if got := Delay(100, time.Hour, huge, 0.5); got <= 0 || got > huge {
		t.Errorf("backoff with a huge cap = %s", got)
	}
}

func TestRetryAfter(t *testing.T) {
	t.Parallel()
	now := time.Date(2026, 5, 30, 12, 0, 0, 0, time.UTC)
	const limit = 10 * time.Minute
	for _, tt := range []struct {
		v    string
		want time.Duration
	}{
		{"", 0},
		{"120", 2 * time.Minute},
		{" 7 ", 7 * time.Second},
		{"18446744074", limit},
		{"99999999999999999999", limit},
		{"-5", 0},
		{"soon", 0},
		{now.Add(3 * time.Minute).Format(http.TimeFormat), 3 * time.Minute},
		{now.Add(time.Hour).Format(http.TimeFormat), limit},
		{now.Add(-time.Minute).Format(http.TimeFormat), 0},
	} {
		if got := RetryAfter(tt.v, now, limit); got != tt.want {
			t.Errorf("RetryAfter(%q) = %s, want %s", tt.v, got, tt.want)
		}
	}
}
