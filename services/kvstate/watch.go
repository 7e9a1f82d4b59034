package kvstate

import (
	"context"
	"errors"
	"fmt"

	"github.com/nats-io/nats.go/jetstream"
)

// Start runs the watcher that keeps the cache of every key's entry, and
// returns once the cache holds the entry of every existing key. ctx bounds
// only that initial load; the watcher runs until Stop. Meanwhile no read
// of the cache sees it half loaded: Cached, Get and Update wait.
//
// Errors: ctx.Err(), the KV's errors, and an error when already started.
func (s *Store[V]) Start(ctx context.Context) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.stop != nil {
		return fmt.Errorf("%s: watcher already started", s.name)
	}
	// The watcher's subscription ends with its context: give it one that
	// outlives Start.
	wctx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	w, err := s.kv.WatchAll(wctx)
	if err != nil {
		cancel()
		return fmt.Errorf("%s: watch: %w", s.name, err)
	}
	err = initial(ctx, w, func(kve jetstream.KeyValueEntry) { s.storeLocked(kve.Key(), s.entryOf(kve)) })
	if err != nil {
		cancel()
		return fmt.Errorf("%s: watch: %w", s.name, err)
	}
	s.watching = true
	done := make(chan struct{})
	s.done = done
	s.stop = func() {
		_ = w.Stop()
		cancel()
	}
	go s.watch(w, done)
	return nil
}

// Stop ends the watcher and waits for it. The cache keeps what it holds,
// and the Store stays usable: without the watcher, Get reads its key, and
// so does Update unless Options.TrustCache. Stop on a Store that is not
// started does nothing.
func (s *Store[V]) Stop() {
	s.mu.Lock()
	stop, done := s.stop, s.done
	s.stop, s.done = nil, nil
	s.mu.Unlock()
	if stop == nil {
		return
	}
	stop()
	<-done
}

// Watching reports whether the watcher runs, keeping the cache complete.
func (s *Store[V]) Watching() bool {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return s.watching
}

// All returns the entry of every key that holds a value: from the cache
// while the watcher runs, otherwise read from the KV (counted as one Get,
// and not cached). Unreadable values are entries with Err set.
//
// Errors: ctx.Err() and the KV's errors.
func (s *Store[V]) All(ctx context.Context) (map[string]Entry[V], error) {
	s.mu.RLock()
	if s.watching {
		out := make(map[string]Entry[V], len(s.cache))
		for k, e := range s.cache {
			if e.Exists {
				out[k] = e
			}
		}
		s.mu.RUnlock()
		return out, nil
	}
	s.mu.RUnlock()
	s.gets.Add(1)
	w, err := s.kv.WatchAll(ctx, jetstream.IgnoreDeletes())
	if err != nil {
		return nil, fmt.Errorf("%s: read all: %w", s.name, err)
	}
	out := make(map[string]Entry[V])
	if err := initial(ctx, w, func(kve jetstream.KeyValueEntry) { out[kve.Key()] = s.entryOf(kve) }); err != nil {
		return nil, fmt.Errorf("%s: read all: %w", s.name, err)
	}
	_ = w.Stop()
	return out, nil
}

// watch applies the watcher's updates to the cache until the watcher ends.
func (s *Store[V]) watch(w jetstream.KeyWatcher, done chan struct{}) {
	defer close(done)
	for kve := range w.Updates() {
		if kve == nil {
			continue
		}
		e := s.entryOf(kve)
		s.mu.Lock()
		s.storeLocked(kve.Key(), e)
		s.mu.Unlock()
	}
	// Without updates the cache may fall behind: stop trusting it.
	s.mu.Lock()
	s.watching = false
	s.mu.Unlock()
}

// initial passes the latest entry of every key to f, and returns when the
// watcher says it has sent them all. On error it stops the watcher.
func initial(ctx context.Context, w jetstream.KeyWatcher, f func(jetstream.KeyValueEntry)) error {
	abort := func(err error) error {
		// The watcher blocks while its channel is full: drain it until the
		// stop closes it.
		go func() {
			for range w.Updates() {
			}
		}()
		_ = w.Stop()
		return err
	}
	for {
		select {
		case kve, ok := <-w.Updates():
			if !ok {
				return abort(errors.New("closed during the initial load"))
			}
			if kve == nil {
				return nil
			}
			f(kve)
		case <-ctx.Done():
			return abort(ctx.Err())
		}
	}
}
