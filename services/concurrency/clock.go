package concurrency

import "time"

// Clock returns the current time. Production code passes nil (meaning
// [time.Now]); tests inject a manual clock so that every expiry is exact
// and nothing depends on how fast the machine is.
type Clock func() time.Time

// now reads c, or the wall clock when c is nil.
func (c Clock) now() time.Time {
	if c == nil {
		return time.Now()
	}
	return c()
}
