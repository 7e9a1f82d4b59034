package limiter

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/sluicehq/sluice/services/kvstate"
)

// KVScheduler is a Scheduler whose schedules live in a JetStream KV
// bucket, one key per schedule, shared by any number of processes. The
// caller's keys must be valid KV keys (deployment ids).
//
// A value is small JSON, {"r":unix_nanos,"t":unix_nanos}: where each
// dimension's schedule is free from. A missing key is a schedule never
// used.
//
// It works as [KV] does: compare-and-swap updates from a watched cache, so
// that a Lease is one KV operation and Free is none, with writers of one
// key inside one process taking turns. Its contention errors match
// [ErrContention] and [kvstate.ErrContention], its unreadable states
// [ErrBadState] and [kvstate.ErrUnreadable].
//
// It is safe for concurrent use.
type KVScheduler struct {
	kvBacked[Schedule]
}

var _ Scheduler = (*KVScheduler)(nil)

// NewKVScheduler returns a KVScheduler over the KV bucket kv, which the
// caller created (a history of 1 suffices) and uses for nothing else. Call
// Start to run the watcher.
func NewKVScheduler(kv jetstream.KeyValue, opts KVOptions) *KVScheduler {
	return &KVScheduler{newKVBacked(kv, "limiter: schedule", kvstate.Codec[Schedule]{Encode: encodeSchedule, Decode: decodeSchedule}, opts)}
}

// Lease implements [Scheduler.Lease]. A lease refused on the cached
// state costs no KV operation.
//
// Errors: [ErrInsufficient], [ErrInvalidLimit], [ErrInvalidAmount],
// [ErrContention], [ErrBadState], ctx.Err(), and the KV's errors.
func (k *KVScheduler) Lease(ctx context.Context, key string, limit Limit, first, total Amount, lead, horizon time.Duration) (Stretch, error) {
	var st Stretch
	err := k.modify(ctx, key, func(s Schedule, now time.Time) (Schedule, bool, error) {
		ns, got, err := s.Lease(limit, now, first, total, lead, horizon)
		st = got
		return ns, true, err
	})
	if err != nil {
		return Stretch{}, err
	}
	return st, nil
}

// Return implements [Scheduler.Return]. Nothing to give back writes
// nothing.
//
// Errors: [ErrInvalidLimit], [ErrContention], [ErrBadState], ctx.Err(),
// and the KV's errors.
func (k *KVScheduler) Return(ctx context.Context, key string, limit Limit, unused Stretch) (bool, error) {
	returned := false
	err := k.modify(ctx, key, func(s Schedule, _ time.Time) (Schedule, bool, error) {
		ns, ok, err := s.Return(limit, unused)
		returned = ok
		return ns, ok, err
	})
	return returned && err == nil, err
}

// Settle implements [Scheduler.Settle].
//
// Errors: [ErrInvalidLimit], [ErrInvalidAmount], [ErrContention],
// [ErrBadState], ctx.Err(), and the KV's errors.
func (k *KVScheduler) Settle(ctx context.Context, key string, limit Limit, delta Amount) error {
	return k.modify(ctx, key, func(s Schedule, now time.Time) (Schedule, bool, error) {
		ns, err := s.Settle(limit, now, delta)
		return ns, err == nil && ns != s, err
	})
}

// Free implements [Scheduler.Free] from the cache while the watcher runs.
//
// Errors: [ErrInvalidLimit], [ErrBadState], ctx.Err(), and the KV's
// errors.
func (k *KVScheduler) Free(ctx context.Context, key string, limit Limit) (Amount, error) {
	if err := limit.Validate(); err != nil {
		return Amount{}, err
	}
	if err := ctx.Err(); err != nil {
		return Amount{}, err
	}
	e, err := k.st.Get(ctx, key)
	if err != nil {
		return Amount{}, err
	}
	if e.Err != nil {
		return Amount{}, e.Err
	}
	return e.Value.Free(limit, k.clock.now())
}

// modify runs the compare-and-swap loop on key in key's turn.
func (k *KVScheduler) modify(ctx context.Context, key string, f func(Schedule, time.Time) (Schedule, bool, error)) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	t := k.st.Turn(key)
	if err := t.Lock(ctx); err != nil {
		return err
	}
	defer t.Unlock()
	_, err := k.st.Update(ctx, key, func(s Schedule) (Schedule, bool, error) {
		return f(s, k.clock.now())
	})
	return err
}

// wireSchedule is the JSON form of a Schedule; pointers, so that a value
// missing a field is refused rather than read as a fresh schedule.
type wireSchedule struct {
	Requests *int64 `json:"r"`
	Tokens   *int64 `json:"t"`
}

func encodeSchedule(s Schedule) ([]byte, error) {
	return json.Marshal(wireSchedule{Requests: &s.Requests, Tokens: &s.Tokens})
}

func decodeSchedule(data []byte) (Schedule, error) {
	var w wireSchedule
	if err := json.Unmarshal(data, &w); err != nil {
		return Schedule{}, err
	}
	if w.Requests == nil || w.Tokens == nil {
		return Schedule{}, errors.New(`missing "r" or "t"`)
	}
	if *w.Requests < 0 || *w.Tokens < 0 {
		return Schedule{}, fmt.Errorf("negative instants in %s", data)
	}
	return Schedule{Requests: *w.Requests, Tokens: *w.Tokens}, nil
}
