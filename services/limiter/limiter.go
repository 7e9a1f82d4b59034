package limiter

import (
	"context"
	"errors"
	"fmt"
	"time"
)

// Limiter is shared rate-limit state: one bucket per key.
//
// All implementations share the semantics of [Bucket]; the contract suite in
// package limitertest holds them to it.
type Limiter interface {
	// Take debits the bucket of key by an amount g with min <= g <= max in
	// each dimension, and returns g: as much as the bucket holds, up to max.
	// In a dimension whose rate is 0 (unlimited), g is max.
	//
	// If the bucket holds less than min in some limited dimension, nothing is
	// debited and the error is an *[InsufficientError] (matching
	// [ErrInsufficient]) that says when min could be granted. A min larger
	// than the capacity is granted only when the bucket is full, and leaves
	// it in debt.
	//
	// Errors: [ErrInsufficient], [ErrInvalidLimit], [ErrInvalidAmount], and
	// for shared implementations the errors of their store and
	// [ErrContention].
	Take(ctx context.Context, key string, limit Limit, min, max Amount) (Amount, error)

	// Adjust adds delta to the bucket of key: positive to refund what was
	// taken but not used, negative to charge what was used beyond what was
	// taken. The level never exceeds the capacity and may go negative.
	//
	// Errors: [ErrInvalidLimit], [ErrInvalidAmount], and for shared
	// implementations the errors of their store and [ErrContention].
	Adjust(ctx context.Context, key string, limit Limit, delta Amount) error

	// Available returns the bucket's current level per dimension refilled to
	// now: negative when the bucket is in debt, +Inf in an unlimited
	// dimension. It is a hint for routing, not a promise: another process
	// may take it first.
	//
	// Errors: [ErrInvalidLimit], and for shared implementations the errors
	// of their store.
	Available(ctx context.Context, key string, limit Limit) (Amount, error)
}

var (
	// ErrInsufficient means the bucket cannot grant the minimum now. The
	// error is always an *InsufficientError, which says for how long.
	ErrInsufficient = errors.New("limiter: insufficient capacity")

	// ErrInvalidLimit means a Limit has a negative or non-finite rate or
	// burst, or a rate without a burst.
	ErrInvalidLimit = errors.New("limiter: invalid limit")

	// ErrInvalidAmount means an amount is negative (for min and max) or not
	// finite, or min exceeds max.
	ErrInvalidAmount = errors.New("limiter: invalid amount")

	// ErrContention means a shared bucket was changed by other writers on
	// every attempt to update it, so the update gave up. Nothing was
	// debited. It is transient: retrying later, or leasing (see Leases) to
	// have fewer writers, helps. KV's contention errors match
	// kvstate.ErrContention too.
	ErrContention = errors.New("limiter: too much contention on a shared bucket")

	// ErrBadState means the stored state of a shared bucket cannot be read.
	// An operator can delete the key to reset the bucket to full. KV's
	// such errors match kvstate.ErrUnreadable too.
	ErrBadState = errors.New("limiter: unreadable bucket state")
)

// InsufficientError is returned by Take when the bucket cannot grant min;
// errors.Is(err, ErrInsufficient) is true.
type InsufficientError struct {
	// RetryAfter is how long until min could be granted at the current
	// refill rate, if nobody else takes or refunds in the meantime.
	RetryAfter time.Duration
}

func (e *InsufficientError) Error() string {
	return fmt.Sprintf("%v: retry after %v", ErrInsufficient, e.RetryAfter)
}

// Is makes errors.Is(err, ErrInsufficient) true.
func (e *InsufficientError) Is(target error) bool { return target == ErrInsufficient }
