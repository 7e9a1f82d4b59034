package concurrency

import (
	"context"
	"time"
)

// Start runs the watcher that keeps the cache of every deployment's state,
// and, unless Options.TickEvery is negative, a loop that calls Tick every
// TickEvery. It returns once the cache holds the state of every existing
// key. ctx bounds only that initial load; the watcher and the loop run
// until Stop.
//
// Errors: ctx.Err(), the KV's errors, and an error when already started.
func (s *Slots) Start(ctx context.Context) error {
	// The lock is held meanwhile so that no call is admitted from a
	// half-loaded cache, and Stop finds the loop.
	s.mu.Lock()
	defer s.mu.Unlock()
	if err := s.st.Start(ctx); err != nil {
		return err
	}
	if s.tickEvery > 0 {
		loopCtx, stopLoop := context.WithCancel(context.Background())
		loopDone := make(chan struct{})
		go s.loop(loopCtx, loopDone)
		s.stopLoop, s.loopDone = stopLoop, loopDone
	}
	return nil
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
	s.st.Stop()
	return err
}
