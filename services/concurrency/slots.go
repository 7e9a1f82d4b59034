package concurrency

import (
	"context"
	"fmt"
	"log/slog"
	"math"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/sluicehq/sluice/services/kvstate"
)

// Options configures Slots.
type Options struct {
	// Clock reads the time; nil means time.Now.
	Clock Clock
	// BlockTTL is how long a block outlives its last write, beyond the
	// lease duration of the latest call (see the package documentation):
	// with the lease time, it bounds how long the slots of a dead holder
	// stay taken. A holder renews its block every BlockTTL/3 while it holds
	// one. Default 10s.
	BlockTTL time.Duration
	// ClockSkew is how far apart the holders' clocks may be. Another
	// holder's block counts until its expiry plus ClockSkew, so that a clock
	// running ahead does not take a live holder's slots. Default 1s;
	// negative means 0.
	ClockSkew time.Duration
	// Spare sizes the slack of a block: a block grows to the calls in
	// flight plus ceil(Spare × calls in flight), and keeps that many beyond
	// its recent peak when it shrinks, so that a steady load needs no write
	// per call; but the slack never takes more than half of the slots the
	// other holders leave free. Default 0.25; negative means no slack.
	Spare float64
	// TickEvery is how often the loop started by Start calls Tick. Default
	// BlockTTL/6; negative means Start runs no loop, and the owner calls
	// Tick itself.
	TickEvery time.Duration
	// MaxAttempts bounds the compare-and-swap attempts of one write before
	// it gives up with ErrContention. Default 32.
	MaxAttempts int
	// Backoff scales the random pause between attempts, as in
	// limiter.KVOptions. Default 1ms; negative means no pause.
	Backoff time.Duration
	// Logger receives the errors of the loop's Ticks; nil means none.
	Logger *slog.Logger
}

// Slots bounds the calls in flight on each deployment across all the
// holders (dispatchers) sharing one KV bucket. See the package
// documentation for the model.
//
// The cache of the deployments' keys, the compare-and-swap writes and the
// turns are a [kvstate.Store]; its contention errors match both
// [ErrContention] and [kvstate.ErrContention], and its unreadable states
// both [ErrBadState] and [kvstate.ErrUnreadable].
//
// It is safe for concurrent use.
type Slots struct {
	st        *kvstate.Store[state]
	holder    string
	clock     Clock
	ttl       time.Duration
	skew      time.Duration
	spare     float64
	tickEvery time.Duration
	log       *slog.Logger

	mu   sync.Mutex
	deps map[string]*deployment
	// stopLoop ends the loop, which closes loopDone; nil when no loop
	// runs.
	stopLoop func()
	loopDone chan struct{}
}

// deployment is what this holder knows of its own calls on one deployment.
// All fields but turn are guarded by Slots.mu.
type deployment struct {
	// turn serializes this holder's writes of the deployment's key, so
	// that callers that all need a bigger block wait for the one already
	// growing it instead of conflicting with each other in the KV.
	turn *kvstate.Turn
	// calls maps the id of each call holding a slot to the end of its
	// lease.
	calls map[string]time.Time
	// next is the earliest lease end in calls, or a time before it; zero
	// when calls is empty.
	next time.Time
	// adopted is set once a block this holder had before this Slots
	// existed (an earlier process with the same holder id) was counted as
	// calls in flight: until then, no call is admitted from the cache.
	adopted bool
	// max is the maximum of the latest Acquire.
	max int
	// span is the lease duration of the latest Acquire: a block is kept
	// long enough to cover such leases of calls admitted before its next
	// renewal.
	span time.Duration
	// peak is this holder's demand since the last renewal: the most calls
	// it had in flight, or tried to have (a refused call counting as one
	// more).
	peak int
	// renewAt is when the block is next due for renewal.
	renewAt time.Time
}

// adoptedPrefix starts the ids of the calls standing for an adopted block.
// No id that Acquire accepts from a caller is likely to start with a NUL.
const adoptedPrefix = "\x00adopted-"

// New returns Slots for holder (the dispatcher id, unique among the
// processes sharing kv) over the KV bucket kv, which the caller created (a
// history of 1 suffices). Call Start to run the watcher and the renewal
// loop.
//
// Errors: [ErrInvalidArgument] for an empty holder.
func New(kv jetstream.KeyValue, holder string, opts Options) (*Slots, error) {
	if holder == "" {
		return nil, fmt.Errorf("%w: empty holder", ErrInvalidArgument)
	}
	if opts.BlockTTL <= 0 {
		opts.BlockTTL = 10 * time.Second
	}
	if opts.ClockSkew == 0 {
		opts.ClockSkew = time.Second
	}
	if opts.Spare == 0 {
		opts.Spare = 0.25
	}
	if opts.TickEvery == 0 {
		opts.TickEvery = opts.BlockTTL / 6
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	return &Slots{
		st: kvstate.New(kv, stateCodec, kvstate.Options{
			Name:        "concurrency",
			MaxAttempts: opts.MaxAttempts,
			Backoff:     opts.Backoff,
			Contention:  ErrContention,
			Unreadable:  ErrBadState,
		}),
		holder:    holder,
		clock:     opts.Clock,
		ttl:       opts.BlockTTL,
		skew:      max(opts.ClockSkew, 0),
		spare:     max(opts.Spare, 0),
		tickEvery: opts.TickEvery,
		log:       opts.Logger,
		deps:      make(map[string]*deployment),
	}, nil
}

// Holder returns the holder id this Slots writes its blocks under.
func (s *Slots) Holder() string { return s.holder }

// Ops returns how many KV operations (Get, Create and Update, successful or
// not, and the reads of Snapshot) this Slots has made. The watcher's
// deliveries are not operations: they are pushed to it.
func (s *Slots) Ops() uint64 { return s.st.Ops() }

// Conflicts returns how many writes failed because another holder changed
// the key first.
func (s *Slots) Conflicts() uint64 { return s.st.Conflicts() }

// Acquire takes a slot on deployment for the call callID until leaseUntil,
// when at most maxInFlight calls may be in flight on deployment across all
// holders. maxInFlight 0 means no bound: Acquire then always succeeds, with
// no KV operation.
//
// The slot comes from this holder's block when the block has one free,
// with no KV operation. Otherwise Acquire grows the block, by what is
// missing plus a spare (see Options.Spare), never beyond what the other
// holders leave free. When even one more slot is not free, nothing is
// taken and the error matches [ErrFull]; the first such refusal at a given
// number of calls in flight writes this holder's demand to the KV, so that
// holders above their fair share give slots back (see the package
// documentation). While other holders wait, a holder admits no call beyond
// its fair share.
//
// The slot is freed by Release, or at leaseUntil, whichever comes first:
// choose a lease that outlasts the call (for example the attempt timeout
// plus a margin), since a call still running past its lease no longer
// counts. callID names the slot: acquiring an id that holds a slot on the
// deployment keeps that one slot and extends its lease to leaseUntil if it
// is later. Give each attempt of a call its own id (for example
// messages.ExecMsgID) if attempts may overlap.
//
// A maxInFlight lower than the calls in flight (a live configuration
// change) admits nothing until enough of them end; the calls already
// admitted carry on.
//
// deployment must be a valid KV key (deployment ids are).
//
// Errors: [ErrFull], [ErrInvalidArgument], [ErrContention], [ErrBadState],
// ctx.Err(), and the KV's errors (for example [jetstream.ErrInvalidKey]).
func (s *Slots) Acquire(ctx context.Context, deployment string, maxInFlight int, callID string, leaseUntil time.Time) error {
	if deployment == "" || callID == "" || maxInFlight < 0 {
		return fmt.Errorf("%w: deployment %q, call %q, max %d", ErrInvalidArgument, deployment, callID, maxInFlight)
	}
	// A refusal or admission from the cache needs no network: check ctx
	// first so that a cancelled caller always learns it.
	if err := ctx.Err(); err != nil {
		return err
	}
	now := s.clock.now()
	if !leaseUntil.After(now) {
		return fmt.Errorf("%w: lease ends at %v, not after now (%v)", ErrInvalidArgument, leaseUntil, now)
	}
	s.mu.Lock()
	ds := s.deploymentLocked(deployment)
	ds.max = maxInFlight
	ds.span = leaseUntil.Sub(now)
	admitted := s.admitLocked(deployment, ds, maxInFlight, callID, leaseUntil, now)
	s.mu.Unlock()
	if admitted {
		return nil
	}
	return s.acquireSlow(ctx, deployment, ds, maxInFlight, callID, leaseUntil)
}

// admitLocked admits the call from the cached state of the deployment's
// key if it can, and reports whether it did.
func (s *Slots) admitLocked(key string, ds *deployment, maxInFlight int, callID string, lease, now time.Time) bool {
	ds.expireLocked(now)
	cur, dup := ds.calls[callID]
	if dup && !lease.After(cur) {
		return true
	}
	if maxInFlight == 0 {
		ds.addLocked(callID, lease)
		return true
	}
	if !ds.adopted {
		return false
	}
	e, _ := s.st.Cached(key)
	if e.Err != nil {
		return false
	}
	own := e.Value.own(s.holder, now)
	// The block must outlive the lease: if this holder dies, its block is
	// what keeps the call's slot taken.
	if lease.UnixNano() > own.exp {
		return false
	}
	// A block bigger than what the others leave (the maximum shrank) admits
	// nothing until it has been shrunk.
	if e.Value.others(s.holder, now, s.skew)+own.n > maxInFlight {
		return false
	}
	need := len(ds.calls)
	if !dup {
		need++
	}
	if need > own.n {
		return false
	}
	// While other holders wait for slots, a holder keeps to its fair share.
	if share, contested := e.Value.fairShare(s.holder, max(ds.peak, need), maxInFlight, now, s.skew); contested && need > share {
		return false
	}
	ds.addLocked(callID, lease)
	return true
}

// acquireSlow writes a block that admits the call, then admits it.
func (s *Slots) acquireSlow(ctx context.Context, key string, ds *deployment, maxInFlight int, callID string, lease time.Time) error {
	if err := ds.turn.Lock(ctx); err != nil {
		return err
	}
	defer ds.turn.Unlock()
	if err := s.adopt(ctx, key, ds); err != nil {
		return err
	}
	for attempt := 1; ; attempt++ {
		// Another caller may have grown the block meanwhile; and after a
		// write, the block admits the call unless callers admitted from
		// the cache took the new slots first.
		s.mu.Lock()
		admitted := s.admitLocked(key, ds, maxInFlight, callID, lease, s.clock.now())
		s.mu.Unlock()
		if admitted {
			return nil
		}
		if attempt > s.st.MaxAttempts() {
			return fmt.Errorf("%w: key %q: the slots of %d blocks written were taken by other callers", ErrContention, key, attempt-1)
		}
		refused := false
		err := s.update(ctx, key, ds, func(cur state, now time.Time) (state, bool, error) {
			s.mu.Lock()
			ds.expireLocked(now)
			_, dup := ds.calls[callID]
			live := len(ds.calls)
			peak := ds.peak
			latest := ds.latestLocked()
			s.mu.Unlock()
			need := live
			if !dup {
				need++
			}
			demand := max(peak, need)
			others := cur.others(s.holder, now, s.skew)
			own := cur.own(s.holder, now)
			limit := maxInFlight - others
			share, contested := cur.fairShare(s.holder, demand, maxInFlight, now, s.skew)
			if contested {
				limit = min(limit, share)
			}
			refused = need > limit
			if refused {
				if own.want >= need {
					return cur, false, nil
				}
				// Tell the others that this holder wants more, so that
				// those above their fair share shrink; and give up what is
				// above it here.
				b := block{n: min(own.n, max(live, limit)), exp: max(own.exp, now.Add(s.ttl).UnixNano()), want: need}
				return cur.withBlock(s.holder, b, now, s.skew), true, nil
			}
			n := own.n
			if need > n || n > limit {
				n = need + s.spareWithin(need, limit-need)
			}
			// The span covers the lease of this call too.
			exp := s.expiry(now, lease.Sub(now), latest)
			return cur.withBlock(s.holder, block{n: n, exp: exp.UnixNano(), want: demand}, now, s.skew), true, nil
		})
		if err != nil {
			return err
		}
		if refused {
			s.mu.Lock()
			live := len(ds.calls)
			ds.peak = max(ds.peak, live+1)
			s.mu.Unlock()
			return fmt.Errorf("%w: deployment %q: at most %d in flight, %d here", ErrFull, key, maxInFlight, live)
		}
	}
}

// adopt counts a block that this holder had in the KV before this Slots
// first wrote the deployment's key (left by an earlier process with the
// same holder id, whose calls may still run) as calls in flight until the
// block's expiry. Called with the turn held.
func (s *Slots) adopt(ctx context.Context, key string, ds *deployment) error {
	s.mu.Lock()
	adopted := ds.adopted
	s.mu.Unlock()
	if adopted {
		return nil
	}
	e, err := s.st.Get(ctx, key)
	if err != nil {
		return err
	}
	if e.Err != nil {
		return e.Err
	}
	now := s.clock.now()
	own := e.Value.own(s.holder, now)
	s.mu.Lock()
	defer s.mu.Unlock()
	for i := range own.n {
		ds.addLocked(fmt.Sprintf("%s%d", adoptedPrefix, i), time.Unix(0, own.exp))
	}
	ds.adopted = true
	return nil
}

// update runs the compare-and-swap loop on key, the key of ds: f computes
// the new state from the latest known one and says whether it must be
// written. f may run more than once, and must leave the local state as it
// found it. A write puts off the block's next renewal. Called with ds's
// turn held.
func (s *Slots) update(ctx context.Context, key string, ds *deployment, f func(cur state, now time.Time) (state, bool, error)) error {
	var at time.Time
	wrote, err := s.st.Update(ctx, key, func(cur state) (state, bool, error) {
		at = s.clock.now()
		return f(cur, at)
	})
	if wrote {
		s.mu.Lock()
		ds.renewAt = at.Add(s.ttl / 3)
		s.mu.Unlock()
	}
	return err
}

// Release frees the slot of callID on deployment, when the call's attempt
// has ended, and reports whether it held one (false when it was never
// acquired, already released, or its lease had passed). It makes no KV
// operation: the slot stays in this holder's block for its next call, and
// goes back to the others when the block shrinks (see Tick).
func (s *Slots) Release(deployment, callID string) bool {
	now := s.clock.now()
	s.mu.Lock()
	defer s.mu.Unlock()
	ds, ok := s.deps[deployment]
	if !ok {
		return false
	}
	ds.expireLocked(now)
	if _, ok := ds.calls[callID]; !ok {
		return false
	}
	delete(ds.calls, callID)
	if len(ds.calls) == 0 {
		ds.next = time.Time{}
	}
	return true
}

// InFlight returns how many calls hold a slot of this holder on deployment
// now: acquired, not released, lease not passed. It includes the calls of
// an adopted block (see the package documentation). It makes no network
// call.
func (s *Slots) InFlight(deployment string) int {
	now := s.clock.now()
	s.mu.Lock()
	defer s.mu.Unlock()
	ds, ok := s.deps[deployment]
	if !ok {
		return 0
	}
	ds.expireLocked(now)
	return len(ds.calls)
}

// Held returns the size of this holder's unexpired block on deployment, as
// last seen (written by this holder, or delivered by the watcher). It makes
// no network call.
func (s *Slots) Held(deployment string) int {
	now := s.clock.now()
	e, _ := s.st.Cached(deployment)
	return e.Value.own(s.holder, now).n
}

// deploymentLocked returns the local state of key, creating it.
func (s *Slots) deploymentLocked(key string) *deployment {
	ds, ok := s.deps[key]
	if !ok {
		ds = &deployment{turn: s.st.Turn(key), calls: make(map[string]time.Time)}
		s.deps[key] = ds
	}
	return ds
}

// spareWithin returns the slack of a block for n calls in flight, when
// free slots are left beyond them: ceil(Spare*n), but at most half of the
// free slots, so that the spare of one holder never takes the last free
// slots from the others.
func (s *Slots) spareWithin(n, free int) int {
	return max(min(int(math.Ceil(float64(n)*s.spare)), free/2), 0)
}

// expiry returns the expiry of a block written now: BlockTTL after now,
// plus span so that calls admitted before the next renewal with leases as
// long as the latest are covered, and never before latest, the end of the
// latest lease of the calls in flight.
func (s *Slots) expiry(now time.Time, span time.Duration, latest time.Time) time.Time {
	exp := now.Add(s.ttl + max(span, 0))
	if latest.After(exp) {
		exp = latest
	}
	return exp
}

// expireLocked frees the slots of the calls whose lease has passed.
func (ds *deployment) expireLocked(now time.Time) {
	if ds.next.IsZero() || now.Before(ds.next) {
		return
	}
	var next time.Time
	for id, lease := range ds.calls {
		if !now.Before(lease) {
			delete(ds.calls, id)
		} else if next.IsZero() || lease.Before(next) {
			next = lease
		}
	}
	ds.next = next
}

// addLocked gives callID a slot until lease.
func (ds *deployment) addLocked(callID string, lease time.Time) {
	ds.calls[callID] = lease
	if ds.next.IsZero() || lease.Before(ds.next) {
		ds.next = lease
	}
	ds.peak = max(ds.peak, len(ds.calls))
}

// latestLocked returns the end of the latest lease in flight, or the zero
// time.
func (ds *deployment) latestLocked() time.Time {
	var latest time.Time
	for _, lease := range ds.calls {
		if lease.After(latest) {
			latest = lease
		}
	}
	return latest
}
