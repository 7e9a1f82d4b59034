package kvstate

import "context"

// Turn is a mutex whose Lock gives up when a context ends. Held around the
// network round trips on one key inside one process, it makes writers in
// that process queue instead of conflicting with each other in the KV, and
// a caller whose deadline passes while it waits gets its error instead of
// waiting on.
type Turn struct{ ch chan struct{} }

// NewTurn returns a Turn that nobody holds.
func NewTurn() *Turn { return &Turn{ch: make(chan struct{}, 1)} }

// Lock waits for the turn or for ctx to end.
//
// Errors: ctx.Err().
func (t *Turn) Lock(ctx context.Context) error {
	select {
	case t.ch <- struct{}{}:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// Unlock gives the turn to the next waiter.
func (t *Turn) Unlock() { <-t.ch }
