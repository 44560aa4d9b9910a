// Package backoff computes capped exponential backoff with jitter.
package backoff

import (
	"net/http"
	"strconv"
	"strings"
	"time"
)

// Delay returns the wait before retry number attempt (1 for the first):
// lo doubled for each earlier attempt, capped at hi, then scaled into its
// upper half by jitter, a number in [0, 1). It cannot overflow however
// large attempt or hi are.
func Delay(attempt int, lo, hi time.Duration, jitter float64) time.Duration {
	d := lo
	for i := 1; i < attempt && d < hi; i++ {
		if d > hi/2 {
			d = hi
			break
		}
		d *= 2
	}
	d = Clamp(d, lo, hi)
	return d/2 + time.Duration(jitter*float64(d/2))
}

// Clamp returns d bounded to [lo, hi].
func Clamp(d, lo, hi time.Duration) time.Duration {
	return max(lo, min(d, hi))
}

// RetryAfter reads a Retry-After header, whole seconds or an HTTP date,
// as a wait from now of at most limit. It is zero when the header is
// absent, unreadable, zero or in the past.
func RetryAfter(v string, now time.Time, limit time.Duration) time.Duration {
	v = strings.TrimSpace(v)
	if v == "" {
		return 0
	}
	if strings.Trim(v, "0123456789") == "" {
		if len(v) > 9 { // more seconds than any limit
			return limit
		}
		n, _ := strconv.Atoi(v)
		return min(time.Duration(n)*time.Second, limit)
	}
	if t, err := http.ParseTime(v); err == nil && t.After(now) {
		return min(t.Sub(now), limit)
	}
	return 0
}
