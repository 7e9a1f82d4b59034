package concurrency

import (
	"context"
	"errors"
	"time"
)

// Tick does the periodic work of every deployment this holder has used:
// it frees the slots of calls whose lease passed, and writes its block
// when
//
//   - the block is due for renewal (BlockTTL/3 after it was last written):
//     its expiry moves on, and it shrinks to its peak of calls in flight
//     since the last renewal plus the spare (see Options.Spare), or to
//     nothing when it was idle, so that other holders can use the rest;
//   - the block is bigger than the maximum leaves it (the maximum of the
//     latest Acquire shrank, or is 0): it shrinks to what the other
//     holders leave, but never below the calls in flight;
//   - other holders wait for slots and the block is above this holder's
//     fair share (see the package documentation): it shrinks to the share,
//     but never below the calls in flight.
//
// A renewal also writes this holder's demand since the previous one, so
// that a holder refused a slot keeps saying so while it is refused, and
// stops when it no longer is.
//
// The loop started by Start calls Tick every Options.TickEvery; an owner
// that runs no loop calls it as often. Tick makes no KV operation when no
// block needs writing. A write that fails is retried by the next Tick.
//
// Errors: ctx.Err(), [ErrContention], [ErrBadState], and the KV's errors,
// joined.
func (s *Slots) Tick(ctx context.Context) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	var errs []error
	for key, ds := range s.deployments() {
		if err := s.tick(ctx, key, ds); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// tick is Tick for one deployment.
func (s *Slots) tick(ctx context.Context, key string, ds *deployment) error {
	// Decide on the cache whether there is anything to write, so that a
	// Tick with nothing to do costs no KV operation even without the
	// watcher: this holder's own writes are always cached.
	now := s.clock.now()
	s.mu.Lock()
	ds.expireLocked(now)
	adopted, maxv, due := ds.adopted, ds.max, !now.Before(ds.renewAt)
	e, _ := s.st.Cached(key)
	own := e.Value.own(s.holder, now)
	over := maxv == 0 || e.Value.others(s.holder, now, s.skew)+own.n > maxv
	if share, contested := e.Value.fairShare(s.holder, max(ds.peak, len(ds.calls)), maxv, now, s.skew); contested && own.n > share {
		over = true
	}
	s.mu.Unlock()
	if !adopted || own.exp == 0 || (!due && !over) {
		return nil
	}

	if err := ds.turn.Lock(ctx); err != nil {
		return err
	}
	defer ds.turn.Unlock()
	renewed := false
	err := s.update(ctx, key, ds, func(cur state, now time.Time) (state, bool, error) {
		s.mu.Lock()
		ds.expireLocked(now)
		live, maxv, span := len(ds.calls), ds.max, ds.span
		demand := max(ds.peak, live)
		latest := ds.latestLocked()
		due := !now.Before(ds.renewAt)
		s.mu.Unlock()
		renewed = false
		own := cur.own(s.holder, now)
		if own.exp == 0 {
			return cur, false, nil
		}
		target := own.n
		if maxv == 0 {
			// No bound: a block means nothing.
			target, demand = 0, 0
		} else {
			others := cur.others(s.holder, now, s.skew)
			if due {
				keep := 0
				if demand > 0 {
					keep = demand + s.spareWithin(demand, maxv-others-demand)
				}
				target = min(target, max(keep, live))
			}
			if others+target > maxv {
				target = min(target, max(live, maxv-others))
			}
			if share, contested := cur.fairShare(s.holder, demand, maxv, now, s.skew); contested && target > share {
				target = min(target, max(live, share))
			}
		}
		if target == own.n && !due {
			return cur, false, nil
		}
		renewed = due
		exp := s.expiry(now, span, latest)
		if target == 0 {
			// A block of no slots only carries a want: it need not cover
			// leases.
			exp = now.Add(s.ttl)
		}
		return cur.withBlock(s.holder, block{n: target, exp: exp.UnixNano(), want: demand}, now, s.skew), true, nil
	})
	if err == nil && renewed {
		// The next renewal window starts from the calls in flight now.
		s.mu.Lock()
		ds.peak = len(ds.calls)
		s.mu.Unlock()
	}
	return err
}

// returnBlocks shrinks every block of this holder to the calls it has in
// flight, with an expiry at the end of their latest lease, and removes the
// blocks of deployments with none.
func (s *Slots) returnBlocks(ctx context.Context) error {
	var errs []error
	for key, ds := range s.deployments() {
		if err := s.returnBlock(ctx, key, ds); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// returnBlock is returnBlocks for one deployment.
func (s *Slots) returnBlock(ctx context.Context, key string, ds *deployment) error {
	now := s.clock.now()
	s.mu.Lock()
	adopted := ds.adopted
	s.mu.Unlock()
	e, _ := s.st.Cached(key)
	if own := e.Value.own(s.holder, now); !adopted || own.exp == 0 {
		return nil
	}
	if err := ds.turn.Lock(ctx); err != nil {
		return err
	}
	defer ds.turn.Unlock()
	return s.update(ctx, key, ds, func(cur state, now time.Time) (state, bool, error) {
		s.mu.Lock()
		ds.expireLocked(now)
		live := len(ds.calls)
		latest := ds.latestLocked()
		s.mu.Unlock()
		own := cur.own(s.holder, now)
		if own.exp == 0 || (own.n == live && own.exp == latest.UnixNano() && own.want == 0) {
			return cur, false, nil
		}
		return cur.withBlock(s.holder, block{n: live, exp: latest.UnixNano()}, now, s.skew), true, nil
	})
}

// deployments returns the deployments this holder has used.
func (s *Slots) deployments() map[string]*deployment {
	s.mu.Lock()
	defer s.mu.Unlock()
	deps := make(map[string]*deployment, len(s.deps))
	for k, ds := range s.deps {
		deps[k] = ds
	}
	return deps
}
