package limiter

import (
	"fmt"
	"math"
	"time"
)

// Bucket is the state of one token bucket: its level per dimension as of a
// time. The zero Bucket has never been used, and is full.
//
// Bucket's methods are pure functions of the state, the limit and the time
// they are given: every Limiter implementation stores Buckets and calls them,
// so that the implementations cannot disagree about the math.
//
// The limit is not part of the state: callers pass the current one on every
// call, so that a changed limit applies at once. A level above a capacity
// that shrank is clamped on the next call.
type Bucket struct {
	// Level is what the bucket holds per dimension; it is negative when the
	// bucket is in debt after an oversized grant or a charge. In an
	// unlimited dimension it is meaningless and left alone.
	Level Amount
	// At is when Level was computed. Zero means the bucket was never used.
	At time.Time
}

// Refill returns the bucket as of now: in each limited dimension the level
// grows by rate*elapsed, up to the capacity. The limit must be valid.
//
// Clocks of different machines disagree a little, so a bucket may be stamped
// later than a reader's now. Elapsed time is then 0, and At stays where it
// is: moving it backwards would let the same interval be refilled twice.
func (b Bucket) Refill(limit Limit, now time.Time) Bucket {
	if b.At.IsZero() {
		return Bucket{Level: limit.Capacity(), At: now}
	}
	var elapsed int64
	if now.After(b.At) {
		elapsed = int64(now.Sub(b.At))
	}
	out := Bucket{Level: b.Level, At: b.At}
	if now.After(b.At) {
		out.At = now
	}
	capacity := limit.Capacity()
	for i := range dims {
		if !limit.limited(i) {
			continue
		}
		level := b.Level.dim(i) + limit.refillOver(i, elapsed)
		out.Level.setDim(i, math.Min(capacity.dim(i), level))
	}
	return out
}

// Available returns the level as of now per dimension, +Inf in an
// unlimited dimension.
//
// Errors: [ErrInvalidLimit].
func (b Bucket) Available(limit Limit, now time.Time) (Amount, error) {
	if err := limit.Validate(); err != nil {
		return Amount{}, err
	}
	level := b.Refill(limit, now).Level
	for i := range dims {
		if !limit.limited(i) {
			level.setDim(i, math.Inf(1))
		}
	}
	return level, nil
}

// Take grants an amount g with min <= g <= max per dimension as of now and
// returns the bucket after the debit along with g.
//
// In a limited dimension, the grant is as much as the level holds up to max,
// and the dimension fails if the level is below min. A min larger than the
// capacity fails unless the bucket is full, and is then granted in full,
// leaving the level negative (debt that refill repays); otherwise a call
// larger than the whole burst could never be admitted. A min of 0 never
// fails: a dimension the caller does not need cannot block it, even in debt.
// In an unlimited dimension, the grant is max.
//
// If any dimension fails, nothing is debited: Take returns the refilled
// bucket and an *[InsufficientError] whose RetryAfter is the longest, over the
// failing dimensions, of the time to refill what is missing.
//
// Errors: [ErrInsufficient], [ErrInvalidLimit], [ErrInvalidAmount].
func (b Bucket) Take(limit Limit, now time.Time, min, max Amount) (Bucket, Amount, error) {
	if err := limit.Validate(); err != nil {
		return b, Amount{}, err
	}
	if err := validateRange(min, max); err != nil {
		return b, Amount{}, err
	}
	b = b.Refill(limit, now)
	capacity := limit.Capacity()
	var grant Amount
	var wait float64 // nanoseconds
	failed := false
	for i := range dims {
		lo, hi := min.dim(i), max.dim(i)
		if !limit.limited(i) {
			grant.setDim(i, hi)
			continue
		}
		level, c := b.Level.dim(i), capacity.dim(i)
		ok := lo == 0 || level >= lo
		if lo > c {
			ok = level >= c
		}
		if !ok {
			failed = true
			wait = math.Max(wait, limit.timeToRefill(i, math.Min(lo, c)-level))
			continue
		}
		grant.setDim(i, math.Max(lo, math.Min(hi, level)))
	}
	if failed {
		return b, Amount{}, &InsufficientError{RetryAfter: durationOf(wait)}
	}
	for i := range dims {
		if limit.limited(i) {
			b.Level.setDim(i, b.Level.dim(i)-grant.dim(i))
		}
	}
	return b, grant, nil
}

// Adjust returns the bucket as of now with delta added in each limited
// dimension: a positive delta refunds, a negative one charges. The level
// never exceeds the capacity and may go negative.
//
// Errors: [ErrInvalidLimit], [ErrInvalidAmount].
func (b Bucket) Adjust(limit Limit, now time.Time, delta Amount) (Bucket, error) {
	if err := limit.Validate(); err != nil {
		return b, err
	}
	if !finite(delta.Requests) || !finite(delta.Tokens) {
		return b, fmt.Errorf("%w: delta %v", ErrInvalidAmount, delta)
	}
	b = b.Refill(limit, now)
	capacity := limit.Capacity()
	for i := range dims {
		if limit.limited(i) {
			b.Level.setDim(i, math.Min(capacity.dim(i), b.Level.dim(i)+delta.dim(i)))
		}
	}
	return b, nil
}

// validateRange checks the min and max of a Take: min finite and >= 0, max
// >= min (max may be +Inf: "as much as there is").
func validateRange(min, max Amount) error {
	for i := range dims {
		lo, hi := min.dim(i), max.dim(i)
		if !finite(lo) || lo < 0 || math.IsNaN(hi) || hi < lo {
			return fmt.Errorf("%w: min %v, max %v", ErrInvalidAmount, min, max)
		}
	}
	return nil
}

// durationOf converts nanoseconds to a Duration, saturating instead of
// overflowing for absurdly slow rates.
func durationOf(ns float64) time.Duration {
	if ns >= math.MaxInt64 {
		return math.MaxInt64
	}
	return time.Duration(ns)
}
