package limiter

import (
	"context"
	"sync"
)

// Memory is a Limiter that keeps its buckets in this process. It suits one
// process (`sluice dev`) and tests; dispatchers that share limits use [KV].
//
// It is safe for concurrent use. The zero value is not usable: call
// [NewMemory].
type Memory struct {
	clock Clock

	mu      sync.Mutex
	buckets map[string]Bucket
}

var _ Limiter = (*Memory)(nil)

// NewMemory returns an empty Memory reading time from clock (nil means
// [time.Now]).
func NewMemory(clock Clock) *Memory {
	return &Memory{clock: clock, buckets: make(map[string]Bucket)}
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
