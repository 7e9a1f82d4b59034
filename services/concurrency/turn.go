package concurrency

import "context"

// turn is a mutex whose lock gives up when a context ends. It serializes
// the KV writes of one deployment inside one process, so that callers that
// all need a bigger block wait for the one already growing it instead of
// conflicting with each other in the KV.
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
