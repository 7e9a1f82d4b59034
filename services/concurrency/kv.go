package concurrency

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

// update runs the compare-and-swap loop on key, the key of ds: f computes
// the new state from the latest known one and says whether it must be
// written. f may run more than once, and must leave the local state as it
// found it. Called with ds's turn held.
func (s *Slots) update(ctx context.Context, key string, ds *deployment, f func(cur state, now time.Time) (state, bool, error)) error {
	e, fresh := s.cached(key)
	for attempt := 1; ; attempt++ {
		if !fresh {
			var err error
			if e, err = s.fetch(ctx, key); err != nil {
				return err
			}
		}
		if e.err != nil {
			return e.err
		}
		now := s.clock.now()
		next, write, err := f(e.st, now)
		if err != nil || !write {
			return err
		}
		rev, err := s.write(ctx, key, e, encodeState(next))
		if err == nil {
			s.store(key, entry{st: next, rev: rev, exists: true})
			s.mu.Lock()
			ds.renewAt = now.Add(s.ttl / 3)
			s.mu.Unlock()
			return nil
		}
		if !isConflict(err) {
			return fmt.Errorf("concurrency: write %q: %w", key, err)
		}
		s.conflicts.Add(1)
		if attempt >= s.maxAttempts {
			return fmt.Errorf("%w: key %q changed on each of %d attempts", ErrContention, key, attempt)
		}
		if err := s.pause(ctx, attempt); err != nil {
			return err
		}
		fresh = false
	}
}

// write creates the key, or updates it at the revision in e.
func (s *Slots) write(ctx context.Context, key string, e entry, value []byte) (uint64, error) {
	if e.exists {
		s.updates.Add(1)
		return s.kv.Update(ctx, key, value, e.rev)
	}
	// Create also replaces a delete marker.
	s.creates.Add(1)
	return s.kv.Create(ctx, key, value)
}

// isConflict reports whether a write failed because the key changed: a
// revision mismatch from Update (10071, or 10164 on replicated buckets,
// both mapped by jetstream) or an existing key from Create.
func isConflict(err error) bool {
	return errors.Is(err, jetstream.ErrKeyRevisionMismatch) || errors.Is(err, jetstream.ErrKeyExists)
}

// pause waits a random time before retry attempt+1: writers that just
// collided then spread out instead of colliding again.
func (s *Slots) pause(ctx context.Context, attempt int) error {
	if s.backoff <= 0 {
		return ctx.Err()
	}
	limit := s.backoff << min(attempt-1, 5)
	timer := time.NewTimer(rand.N(limit))
	defer timer.Stop()
	select {
	case <-timer.C:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// fetch reads key from the KV and caches what it read.
func (s *Slots) fetch(ctx context.Context, key string) (entry, error) {
	s.gets.Add(1)
	kve, err := s.kv.Get(ctx, key)
	switch {
	case errors.Is(err, jetstream.ErrKeyNotFound):
		// Get hides the revision of a delete marker; Create handles it.
		e := entry{}
		s.mu.Lock()
		s.cache[key] = e
		s.mu.Unlock()
		return e, nil
	case err != nil:
		return entry{}, fmt.Errorf("concurrency: read %q: %w", key, err)
	}
	return s.store(key, entryOf(kve)), nil
}

// cached returns the cached entry of key, and whether the watcher is
// running, which makes the cache complete: a key missing from it does not
// exist.
func (s *Slots) cached(key string) (entry, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.cache[key], s.watching
}

// store caches e unless the cache already holds a later revision (the
// watcher and this holder's own writes race), and returns the entry kept.
func (s *Slots) store(key string, e entry) entry {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.storeLocked(key, e)
}

// storeLocked is store with s.mu held.
func (s *Slots) storeLocked(key string, e entry) entry {
	if cur, ok := s.cache[key]; ok && cur.rev > e.rev {
		return cur
	}
	s.cache[key] = e
	return e
}
