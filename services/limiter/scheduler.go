package limiter

import (
	"context"
	"time"
)

// Scheduler is shared send-schedule state: one [Schedule] per key. All
// implementations share Schedule's semantics; the contract suite in
// package limitertest (RunScheduler) holds them to it.
type Scheduler interface {
	// Lease reserves a stretch of key's schedule for total, starting
	// where the schedule is free and never before now, and returns it;
	// first is the first call the stretch is for, which must be able to
	// go within horizon, and none of its calls sooner than lead (see
	// [Schedule.Lease]).
	//
	// Errors: [ErrInsufficient] (an *[InsufficientError] saying how much
	// later the lease could be had), [ErrInvalidLimit], [ErrInvalidAmount],
	// and for shared implementations the errors of their store and
	// [ErrContention].
	Lease(ctx context.Context, key string, limit Limit, first, total Amount, lead, horizon time.Duration) (Stretch, error)

	// Return gives back the unused end of a stretch leased from key, in
	// the dimensions where nothing was leased after it, and reports
	// whether anything was given back (see [Schedule.Return]).
	//
	// Errors: [ErrInvalidLimit], and for shared implementations the
	// errors of their store and [ErrContention].
	Return(ctx context.Context, key string, limit Limit, unused Stretch) (bool, error)

	// Settle corrects key's schedule by delta: positive to give back what
	// a call reserved and did not use, negative to charge what it used
	// beyond (see [Schedule.Settle]).
	//
	// Errors: [ErrInvalidLimit], [ErrInvalidAmount], and for shared
	// implementations the errors of their store and [ErrContention].
	Settle(ctx context.Context, key string, limit Limit, delta Amount) error

	// Free returns what key's schedule could send at once as of now (see
	// [Schedule.Free]). It is a hint for routing, not a promise.
	//
	// Errors: [ErrInvalidLimit], and for shared implementations the
	// errors of their store.
	Free(ctx context.Context, key string, limit Limit) (Amount, error)
}
