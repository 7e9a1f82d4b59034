package limiter

import (
	"context"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/sluicehq/sluice/services/kvstate"
)

// kvBacked is what KV and KVScheduler share: a [kvstate.Store] of their
// per-key state (its cache, compare-and-swap loop and turns) and the
// clock they read.
type kvBacked[T any] struct {
	st    *kvstate.Store[T]
	clock Clock
}

// newKVBacked returns the state of one KV bucket, named name in errors.
func newKVBacked[T any](kv jetstream.KeyValue, name string, codec kvstate.Codec[T], opts KVOptions) kvBacked[T] {
	return kvBacked[T]{
		st: kvstate.New(kv, codec, kvstate.Options{
			Name:        name,
			MaxAttempts: opts.MaxAttempts,
			Backoff:     opts.Backoff,
			Contention:  ErrContention,
			Unreadable:  ErrBadState,
		}),
		clock: opts.Clock,
	}
}

// Start runs the watcher that keeps the cache of every key's state, and
// returns once the cache holds the state of every existing key. ctx bounds
// only that initial load; the watcher runs until Stop.
//
// Errors: ctx.Err(), the KV's errors, and an error when already started.
func (k *kvBacked[T]) Start(ctx context.Context) error { return k.st.Start(ctx) }

// Stop ends the watcher and waits for it. The state stays usable: without
// the watcher, every operation reads its key first. Stop before Start does
// nothing.
func (k *kvBacked[T]) Stop() { k.st.Stop() }

// Ops returns how many KV operations (Get, Create and Update, successful or
// not) have been made. The watcher's deliveries are not operations: they
// are pushed to it.
func (k *kvBacked[T]) Ops() uint64 { return k.st.Ops() }

// Conflicts returns how many writes failed because another writer changed
// the key first.
func (k *kvBacked[T]) Conflicts() uint64 { return k.st.Conflicts() }
