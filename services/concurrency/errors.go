package concurrency

import "errors"

var (
	// ErrFull means the deployment has no free slot: the calls in flight on
	// it, across all holders, reach its maximum (or the blocks other holders
	// lease do). Nothing was taken. It is transient: slots come back as
	// calls end, as idle holders shrink their blocks, and as the blocks of
	// dead holders expire.
	ErrFull = errors.New("concurrency: no free slot")

	// ErrInvalidArgument means an argument is unusable: an empty holder,
	// deployment or call id, a negative maximum, or a lease that does not
	// end after now.
	ErrInvalidArgument = errors.New("concurrency: invalid argument")

	// ErrContention means the deployment's key was changed by other writers
	// on every attempt to update it, so the update gave up. Nothing was
	// taken. It is transient. When it comes from a compare-and-swap that
	// lost every attempt, it matches kvstate.ErrContention too.
	ErrContention = errors.New("concurrency: too much contention on a shared key")

	// ErrBadState means the stored state of a deployment cannot be read. An
	// operator can delete the key: the holders then write it again, and the
	// blocks it held are forgotten (calls in flight are not, see Slots).
	// It matches kvstate.ErrUnreadable too.
	ErrBadState = errors.New("concurrency: unreadable slot state")
)
