package executor

import "time"

// Backoff is the wait before attempt next+1 after attempt next failed:
// exponential backoff with full jitter, on top of what the provider asked
// for. Waiting at least hint honours retry-after; adding the jitter on top
// keeps a fleet that was told the same reset time from coming back at the
// same instant. rnd returns a float in [0, 1).
func Backoff(attempt int, base, maxDelay, hint time.Duration, rnd func() float64) time.Duration {
	ceiling := base
	for i := 1; i < attempt && ceiling < maxDelay; i++ {
		ceiling *= 2
	}
	ceiling = min(ceiling, maxDelay)
	return hint + time.Duration(rnd()*float64(ceiling))
}
