package concurrency

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

// Start runs the watcher that keeps the cache of every deployment's state,
// and, unless Options.TickEvery is negative, a loop that calls Tick every
// TickEvery. It returns once the cache holds the state of every existing
// key. ctx bounds only that initial load; the watcher and the loop run
// until Stop.
//
// Errors: ctx.Err(), the KV's errors, and an error when already started.
func (s *Slots) Start(ctx context.Context) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.stopWatch != nil {
		return errors.New("concurrency: already started")
	}
	// The watcher's subscription ends with its context: give it one that
	// outlives Start.
	wctx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	w, err := s.kv.WatchAll(wctx)
	if err != nil {
		cancel()
		return fmt.Errorf("concurrency: watch: %w", err)
	}
	// The lock is held meanwhile so that no call is admitted from a
	// half-loaded cache.
	if err := initial(ctx, w, func(kve jetstream.KeyValueEntry) { s.storeLocked(kve.Key(), entryOf(kve)) }); err != nil {
		cancel()
		return err
	}
	s.watching = true
	watchDone := make(chan struct{})
	go s.watch(w, watchDone)
	s.stopWatch = func() {
		_ = w.Stop()
		cancel()
	}
	s.watchDone = watchDone
	if s.tickEvery > 0 {
		loopCtx, stopLoop := context.WithCancel(context.Background())
		loopDone := make(chan struct{})
		go s.loop(loopCtx, loopDone)
		s.stopLoop, s.loopDone = stopLoop, loopDone
	}
	return nil
}

// initial passes the latest value of every key to f, and returns when the
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
				return abort(errors.New("concurrency: watch: closed during the initial load"))
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

// watch applies the watcher's updates to the cache until the watcher ends.
func (s *Slots) watch(w jetstream.KeyWatcher, done chan struct{}) {
	defer close(done)
	for kve := range w.Updates() {
		if kve == nil {
			continue
		}
		s.mu.Lock()
		s.storeLocked(kve.Key(), entryOf(kve))
		s.mu.Unlock()
	}
	// Without updates the cache may fall behind: stop trusting it.
	s.mu.Lock()
	s.watching = false
	s.mu.Unlock()
}

// loop calls Tick every TickEvery until ctx ends.
func (s *Slots) loop(ctx context.Context, done chan struct{}) {
	defer close(done)
	ticker := time.NewTicker(s.tickEvery)
	defer ticker.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-ticker.C:
			tctx, cancel := context.WithTimeout(ctx, s.ttl/3)
			err := s.Tick(tctx)
			cancel()
			if err != nil && ctx.Err() == nil {
				s.log.Warn("concurrency: tick", "holder", s.holder, "err", err)
			}
		}
	}
}

// Stop ends the loop, returns this holder's blocks (see Release), and ends
// the watcher, waiting for both. A clean shutdown thus frees at once every
// slot that no call holds; the slots of calls still in flight stay taken
// until their leases end, since their executors may still be running them
// and their reports will not reach this holder.
//
// Slots stays usable: without the watcher every write reads its key
// first, and without the loop nothing renews or shrinks blocks unless the
// owner calls Tick. Stop on Slots that were not started returns the blocks
// all the same.
//
// Errors: ctx.Err() and the KV's errors, joined, from returning the blocks.
func (s *Slots) Stop(ctx context.Context) error {
	s.mu.Lock()
	stopLoop, loopDone := s.stopLoop, s.loopDone
	s.stopLoop, s.loopDone = nil, nil
	s.mu.Unlock()
	// End the loop first, so that it does not renew what is returned.
	if stopLoop != nil {
		stopLoop()
		<-loopDone
	}
	// The watcher keeps the cache fresh meanwhile, saving a read per key.
	err := s.returnBlocks(ctx)
	s.mu.Lock()
	stopWatch, watchDone := s.stopWatch, s.watchDone
	s.stopWatch, s.watchDone = nil, nil
	s.mu.Unlock()
	if stopWatch != nil {
		stopWatch()
		<-watchDone
	}
	return err
}
