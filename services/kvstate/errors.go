package kvstate

import (
	"errors"
	"fmt"
)

var (
	// ErrContention means a key was changed by other writers on every
	// attempt to update it, so the update gave up and wrote nothing. It is
	// transient: retrying later, or having fewer writers, helps. Update
	// returns it as a *ContentionError.
	ErrContention = errors.New("kvstate: too much contention on a key")

	// ErrUnreadable means a stored value cannot be decoded. Deleting the key
	// (or replacing its value) ends it. It comes as a *DecodeError.
	ErrUnreadable = errors.New("kvstate: unreadable value")
)

// ContentionError is the error of an Update that lost every attempt to
// other writers. It matches ErrContention, and Options.Contention.
type ContentionError struct {
	Key      string
	Attempts int

	sentinel error // Options.Contention, or nil
}

func (e *ContentionError) Error() string {
	return fmt.Sprintf("%v: key %q changed on each of %d attempts", or(e.sentinel, ErrContention), e.Key, e.Attempts)
}

// Is makes errors.Is(err, ErrContention) true, and errors.Is(err,
// Options.Contention).
func (e *ContentionError) Is(target error) bool {
	return target == ErrContention || (e.sentinel != nil && target == e.sentinel)
}

// DecodeError says that the value of Key at revision Rev cannot be
// decoded, and why (Err, which it wraps). It matches ErrUnreadable, and
// Options.Unreadable.
type DecodeError struct {
	Key string
	Rev uint64
	Err error

	sentinel error // Options.Unreadable, or nil
}

func (e *DecodeError) Error() string {
	return fmt.Sprintf("%v: key %q revision %d: %v", or(e.sentinel, ErrUnreadable), e.Key, e.Rev, e.Err)
}

// Is makes errors.Is(err, ErrUnreadable) true, and errors.Is(err,
// Options.Unreadable).
func (e *DecodeError) Is(target error) bool {
	return target == ErrUnreadable || (e.sentinel != nil && target == e.sentinel)
}

// Unwrap returns the codec's error.
func (e *DecodeError) Unwrap() error { return e.Err }

// or returns err, or def when err is nil.
func or(err, def error) error {
	if err != nil {
		return err
	}
	return def
}
