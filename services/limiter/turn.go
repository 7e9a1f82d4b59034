package limiter

import "context"

// turn is a mutex whose Lock gives up when a context ends. It serializes the
// network round trips on one key inside one process: writers in the same
// process then queue instead of conflicting with each other in the KV, and
// a caller whose deadline passes while it waits gets its error instead of
// waiting on.
type turn chan struct{}

func newTurn() turn { return make(turn, 1) }

// lock waits for the turn or for ctx to end.
func (t turn) lock(ctx context.Context) error {
	select {
	case t <- struct{}{}:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

func (t turn) unlock() { <-t }
