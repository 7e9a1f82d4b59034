package streams

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/sluicehq/sluice/messages"
)

// ErrNotCreated is what Open returns while a stream or bucket is missing:
// no dispatcher (nor `sluice config apply`) has created sluice's
// resources yet.
var ErrNotCreated = errors.New("streams: sluice's streams and buckets are not created yet")

// Open returns the streams and buckets Ensure made, without creating or
// changing any: what a service whose NATS user may only use them (an
// executor) calls. It returns an error matching ErrNotCreated when one is
// missing.
func Open(ctx context.Context, js jetstream.JetStream) (*Resources, error) {
	var r Resources
	for _, s := range []struct {
		name string
		into *jetstream.Stream
	}{
		{messages.StreamCalls, &r.Calls},
		{messages.StreamExec, &r.Exec},
		{messages.StreamResults, &r.Results},
		{messages.StreamDeadLetters, &r.DeadLetters},
		{messages.StreamAttempts, &r.Attempts},
	} {
		st, err := js.Stream(ctx, s.name)
		if errors.Is(err, jetstream.ErrStreamNotFound) {
			return nil, fmt.Errorf("%w: stream %s: %w", ErrNotCreated, s.name, err)
		}
		if err != nil {
			return nil, fmt.Errorf("streams: open stream %s: %w", s.name, err)
		}
		*s.into = st
	}
	for _, b := range []struct {
		name string
		into *jetstream.KeyValue
	}{
		{messages.BucketLimiter, &r.Limiter},
		{messages.BucketConfig, &r.Config},
		{messages.BucketHealth, &r.Health},
		{messages.BucketConcurrency, &r.Concurrency},
		{messages.BucketUsage, &r.Usage},
	} {
		kv, err := js.KeyValue(ctx, b.name)
		if errors.Is(err, jetstream.ErrBucketNotFound) {
			return nil, fmt.Errorf("%w: bucket %s: %w", ErrNotCreated, b.name, err)
		}
		if err != nil {
			return nil, fmt.Errorf("streams: open bucket %s: %w", b.name, err)
		}
		*b.into = kv
	}
	return &r, nil
}

// Await calls open until it succeeds, every half second: for a service
// that waits for resources others create (Open's, or one bucket). Each
// time it is still waiting after every (and the first time), it calls
// waiting with the reason. It returns ctx's error when ctx ends first.
func Await[T any](ctx context.Context, every time.Duration, waiting func(reason error), open func(context.Context) (T, error)) (T, error) {
	var saidAt time.Time
	for {
		v, err := open(ctx)
		if err == nil {
			return v, nil
		}
		if ctx.Err() == nil && time.Since(saidAt) >= every {
			waiting(err)
			saidAt = time.Now()
		}
		select {
		case <-ctx.Done():
			var zero T
			return zero, ctx.Err()
		case <-time.After(500 * time.Millisecond):
		}
	}
}
