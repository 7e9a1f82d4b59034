package limiter

import (
	"context"
	"sync"
	"time"
)

// Memory is a Limiter and a Scheduler that keeps its buckets and
// schedules in this process. It suits one process and tests; dispatchers
// that share limits use [KV] and [KVScheduler].
//
// It is safe for concurrent use. The zero value is not usable: call
// [NewMemory].
type Memory struct {
	clock Clock

	mu        sync.Mutex
	buckets   map[string]Bucket
	schedules map[string]Schedule
}

var (
	_ Limiter   = (*Memory)(nil)
	_ Scheduler = (*Memory)(nil)
)

// NewMemory returns an empty Memory reading time from clock (nil means
// [time.Now]).
func NewMemory(clock Clock) *Memory {
	return &Memory{clock: clock, buckets: make(map[string]Bucket), schedules: make(map[string]Schedule)}
}

// Take implements [Limiter.Take]. It never blocks on the network; ctx is
// accepted for the interface and checked only before starting.
//
// Errors: [ErrInsufficient], [ErrInvalidLimit], [ErrInvalidAmount], and
// ctx.Err().
func (m *Memory) Take(ctx context.Context, key string, limit Limit, min, max Amount) (Amount, error) {
	if err := ctx.Err(); err != nil {
		return Amount{}, err
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	b, grant, err := m.buckets[key].Take(limit, m.clock.now(), min, max)
	if err != nil {
		return Amount{}, err
	}
	m.buckets[key] = b
	return grant, nil
}

// Adjust implements [Limiter.Adjust].
//
// Errors: [ErrInvalidLimit], [ErrInvalidAmount], and ctx.Err().
func (m *Memory) Adjust(ctx context.Context, key string, limit Limit, delta Amount) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	b, err := m.buckets[key].Adjust(limit, m.clock.now(), delta)
	if err != nil {
		return err
	}
	m.buckets[key] = b
	return nil
}

// Available implements [Limiter.Available].
//
// Errors: [ErrInvalidLimit], and ctx.Err().
func (m *Memory) Available(ctx context.Context, key string, limit Limit) (Amount, error) {
	if err := ctx.Err(); err != nil {
		return Amount{}, err
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.buckets[key].Available(limit, m.clock.now())
}

// Lease implements [Scheduler.Lease].
//
// Errors: [ErrInsufficient], [ErrInvalidLimit], [ErrInvalidAmount], and
// ctx.Err().
func (m *Memory) Lease(ctx context.Context, key string, limit Limit, first, total Amount, lead, horizon time.Duration) (Stretch, error) {
	if err := ctx.Err(); err != nil {
		return Stretch{}, err
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	s, st, err := m.schedules[key].Lease(limit, m.clock.now(), first, total, lead, horizon)
	if err != nil {
		return Stretch{}, err
	}
	m.schedules[key] = s
	return st, nil
}

// Return implements [Scheduler.Return].
//
// Errors: [ErrInvalidLimit], and ctx.Err().
func (m *Memory) Return(ctx context.Context, key string, limit Limit, unused Stretch) (bool, error) {
	if err := ctx.Err(); err != nil {
		return false, err
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	s, ok, err := m.schedules[key].Return(limit, unused)
	if err != nil {
		return false, err
	}
	m.schedules[key] = s
	return ok, nil
}

// Settle implements [Scheduler.Settle].
//
// Errors: [ErrInvalidLimit], [ErrInvalidAmount], and ctx.Err().
func (m *Memory) Settle(ctx context.Context, key string, limit Limit, delta Amount) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	s, err := m.schedules[key].Settle(limit, m.clock.now(), delta)
	if err != nil {
		return err
	}
	m.schedules[key] = s
	return nil
}

// Free implements [Scheduler.Free].
//
// Errors: [ErrInvalidLimit], and ctx.Err().
func (m *Memory) Free(ctx context.Context, key string, limit Limit) (Amount, error) {
	if err := ctx.Err(); err != nil {
		return Amount{}, err
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.schedules[key].Free(limit, m.clock.now())
}
