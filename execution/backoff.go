package execution

import "time"

// backoff returns the wait before retry number attempt (1 for the first)
// after a transient failure: min doubled for each earlier attempt, capped
// at max, then scaled into the upper half by jitter, a number in [0, 1).
// It cannot overflow however large attempt is.
func backoff(attempt int, min, max time.Duration, jitter float64) time.Duration {
	d := min
	for i := 1; i < attempt && d < max; i++ {
		if d > max/2 {
			d = max
			break
		}
		d *= 2
	}
	d = clampDuration(d, min, max)
	return d/2 + time.Duration(jitter*float64(d/2))
}

func clampDuration(d, lo, hi time.Duration) time.Duration {
	return max(lo, min(d, hi))
}
