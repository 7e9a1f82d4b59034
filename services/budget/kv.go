package budget

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/sluicehq/sluice/services/kvstate"
)

// Keys: one per scope, holding its day and its month (State), rather
// than one per scope and period. A reservation then costs one
// compare-and-swap per scope, not two, and a scope's day and month
// change together or not at all, so that no reader sees a call counted
// in its day and not yet in its month. Keys stay bounded by the scopes
// the configuration has (and expire 40 days after their last change,
// streams.BudgetMaxAge), not by the periods that go by. The price is
// that a team's key is written by each of its calls in every pool: a hot
// key under a busy team (see DESIGN.md's measures); per-period keys
// would not change that.

// ErrContention is matched by the errors of a Ledger whose update of a
// scope lost to other writers every time (a kvstate.ContentionError).
var ErrContention = errors.New("budget: too much contention on a scope")

// ErrUnreadable is matched by the errors of a Ledger that finds a
// scope's stored count it cannot decode (a kvstate.DecodeError).
// Deleting the key ends it, and forgets the scope's count.
var ErrUnreadable = errors.New("budget: unreadable count")

// Options configures a Ledger.
type Options struct {
	// Location returns the time zone whose days and months budgets count
	// (config.Config.BudgetLocation of the live configuration). Nil:
	// UTC.
	Location func() *time.Location
	// Clock returns the time. Nil: time.Now. Tests pass a manual clock.
	Clock func() time.Time
	// Store tunes the compare-and-swap loop (kvstate.Options); its Name,
	// Contention and Unreadable are the Ledger's.
	Store kvstate.Options
}

// Ledger keeps the budget counts of every scope in a KV bucket
// (SLUICE_BUDGET, streams.Ensure), shared by every dispatcher. Each
// change of a scope is one compare-and-swap of its key, retried on fresh
// state when another dispatcher changed it first: the check against the
// budget and the charge are one atomic step. It is safe for concurrent
// use.
type Ledger struct {
	store *kvstate.Store[State]
	// fresh is a store of the same bucket that never watches: each of
	// its updates reads the key first. A refusal writes nothing, so no
	// revision check would catch one made on a stale cache; Reserve
	// confirms the refusals of the watched store with it.
	fresh *kvstate.Store[State]
	loc   func() *time.Location
	clock func() time.Time
}

// codec stores a State as JSON.
var codec = kvstate.Codec[State]{
	Encode: func(s State) ([]byte, error) { return json.Marshal(s) },
	Decode: func(data []byte) (State, error) {
		var s State
		err := json.Unmarshal(data, &s)
		return s, err
	},
}

// NewLedger returns a Ledger over kv. Start runs its watcher (optional:
// without it, every change reads its key first).
func NewLedger(kv jetstream.KeyValue, opts Options) *Ledger {
	so := opts.Store
	so.Name, so.Contention, so.Unreadable = "budget", ErrContention, ErrUnreadable
	l := &Ledger{store: kvstate.New(kv, codec, so), fresh: kvstate.New(kv, codec, so), loc: opts.Location, clock: opts.Clock}
	if l.loc == nil {
		l.loc = func() *time.Location { return time.UTC }
	}
	if l.clock == nil {
		l.clock = time.Now
	}
	return l
}

// Start runs the watcher that keeps every scope's count cached, so that
// a change starts from it instead of reading the key.
//
// Errors: kvstate.Store.Start's.
func (l *Ledger) Start(ctx context.Context) error { return l.store.Start(ctx) }

// Stop ends the watcher.
func (l *Ledger) Stop() { l.store.Stop() }

// Charge is one scope's part of a call: the scope, its budgets and its
// soft thresholds (config.Config.WarnAt), from the configuration in
// effect at admission.
type Charge struct {
	Scope  Scope     `json:"scope"`
	Limits Limits    `json:"limits"`
	WarnAt []float64 `json:"warn_at,omitempty"`
}

// Held is one scope's reservation of a call.
type Held struct {
	Charge
	Reservation Reservation `json:"reservation"`
}

// Hold is what Reserve holds for a call, in each of its scopes: what
// Settle or Release takes back. It is plain data (JSON), so that the
// one who settles need not be the one who reserved.
type Hold struct {
	Scopes []Held `json:"scopes,omitempty"`
}

// State returns the count of scope, rolled over to now: what `sluice
// status` shows. While the watcher runs it is read from the cache, which
// may be a moment behind other dispatchers' changes (never behind this
// Ledger's own); without it, from the KV.
//
// Errors: ErrUnreadable, the KV's, and ctx's.
func (l *Ledger) State(ctx context.Context, scope Scope) (State, error) {
	e, err := l.store.Get(ctx, scope.Key())
	if err != nil {
		return State{}, err
	}
	if e.Err != nil {
		return State{}, e.Err
	}
	return e.Value.At(l.clock(), l.loc()), nil
}

// States returns the count of every scope in the bucket, rolled over to
// now, for `sluice status`: from the watched cache while the watcher
// runs, else read from the KV. Keys that are no scope's are left out;
// a count that cannot be decoded is an error naming its key, with the
// others returned.
//
// Errors: ErrUnreadable (joined, one per key), the KV's, and ctx's.
func (l *Ledger) States(ctx context.Context) (map[Scope]State, error) {
	all, err := l.store.All(ctx)
	if err != nil {
		return nil, err
	}
	now, loc := l.clock(), l.loc()
	out := make(map[Scope]State, len(all))
	var errs []error
	for key, e := range all {
		scope, ok := ScopeOfKey(key)
		switch {
		case !ok:
		case e.Err != nil:
			errs = append(errs, e.Err)
		default:
			out[scope] = e.Value.At(now, loc)
		}
	}
	return out, errors.Join(errs...)
}

// Reserve reserves need (a call's worst case: its tokens, and its money
// at the highest price it may cost) in each scope of charges, in their
// order, all or nothing: when a scope refuses, or its update fails, the
// scopes already reserved are released before Reserve returns. Until
// then (one compare-and-swap per scope) other dispatchers see those
// reservations, and may refuse a call that would have fitted: a window
// of a few milliseconds in which a budget looks fuller than it is,
// never emptier.
//
// Errors: a *Refusal (matching ErrExhausted) naming the scope, the
// period, the limit, what is spent and reserved and when it resets;
// ErrContention; ErrUnreadable; the KV's and ctx's. When releasing the
// scopes already reserved fails too, the error joins both, and what
// they held stays reserved until their periods end.
func (l *Ledger) Reserve(ctx context.Context, charges []Charge, need Amount) (Hold, error) {
	return l.ReserveUntil(ctx, charges, need, time.Time{})
}

// ReserveUntil is Reserve for a hold that expires unsettled at the first
// hour that starts at or after until (State.ReserveUntil): admission
// passes the call's deadline and a margin, so that the hold of a call
// whose settlement never comes (its dispatcher died) is charged at its
// worst case then, rather than held until the month ends. A zero until
// never expires.
//
// Errors: as Reserve's.
func (l *Ledger) ReserveUntil(ctx context.Context, charges []Charge, need Amount, until time.Time) (Hold, error) {
	var h Hold
	for _, c := range charges {
		res, err := l.reserve(ctx, c, need, until)
		if err != nil {
			var r *Refusal
			if errors.As(err, &r) {
				r.Scope = c.Scope
			}
			// Release even when ctx ended, within releaseTimeout.
			rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), releaseTimeout)
			rerr := l.Release(rctx, h)
			cancel()
			if rerr != nil {
				return Hold{}, errors.Join(err, rerr)
			}
			return Hold{}, err
		}
		h.Scopes = append(h.Scopes, Held{Charge: c, Reservation: res})
	}
	return h, nil
}

// releaseTimeout bounds the release of what a refused Reserve had
// reserved in its first scopes.
const releaseTimeout = 5 * time.Second

// reserve reserves need in one scope. A refusal made on the watched
// cache, which may be a moment behind, is made again on the stored
// count: a budget never looks fuller than it is for want of a read.
func (l *Ledger) reserve(ctx context.Context, c Charge, need Amount, until time.Time) (Reservation, error) {
	var res Reservation
	f := func(s State) (State, error) {
		next, r, err := s.ReserveUntil(l.clock(), l.loc(), c.Limits, need, until)
		res = r
		return next, err
	}
	err := l.update(ctx, l.store, c.Scope, f)
	if errors.Is(err, ErrExhausted) && l.store.Watching() {
		err = l.update(ctx, l.fresh, c.Scope, f)
	}
	return res, err
}

// ScopeSettled is what a settlement did in one scope.
type ScopeSettled struct {
	Scope Scope
	Settled
}

// Settlement is what Settle did in each scope of a hold.
type Settlement struct {
	Scopes []ScopeSettled
}

// Crossed lists the soft thresholds crossed, in every scope, each with
// its scope.
func (s Settlement) Crossed() []Crossing {
	var out []Crossing
	for _, sc := range s.Scopes {
		for _, c := range sc.Crossed {
			c.Scope = sc.Scope
			out = append(out, c)
		}
	}
	return out
}

// Settle takes back h in every scope and charges what the call spent:
// actual, or the reservation when the provider reported no usage (nil).
// What it spent beyond the reservation is charged in full, and reported
// (ScopeSettled.Over). A scope whose update fails keeps its reservation
// until its period ends; the others settle all the same.
//
// Errors: ErrContention, ErrUnreadable, the KV's and ctx's, joined, one
// per scope that failed; the Settlement holds the scopes that settled.
func (l *Ledger) Settle(ctx context.Context, h Hold, actual *Amount) (Settlement, error) {
	var out Settlement
	var errs []error
	for _, held := range h.Scopes {
		var st Settled
		err := l.update(ctx, l.store, held.Scope, func(s State) (State, error) {
			next, x := s.Settle(l.clock(), l.loc(), held.Reservation, actual, held.Limits, held.WarnAt)
			st = x
			return next, nil
		})
		if err != nil {
			errs = append(errs, err)
			continue
		}
		out.Scopes = append(out.Scopes, ScopeSettled{Scope: held.Scope, Settled: st})
	}
	return out, errors.Join(errs...)
}

// Release takes back h in every scope, charging nothing: for a call
// that was never sent.
//
// Errors: as Settle's.
func (l *Ledger) Release(ctx context.Context, h Hold) error {
	var errs []error
	for _, held := range h.Scopes {
		err := l.update(ctx, l.store, held.Scope, func(s State) (State, error) {
			next, _ := s.Release(l.clock(), l.loc(), held.Reservation)
			return next, nil
		})
		if err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// update changes scope's count with f in store, in one compare-and-swap (retried
// on fresh state), holding the scope's turn so that this process's
// changes of one scope queue rather than conflict.
func (l *Ledger) update(ctx context.Context, store *kvstate.Store[State], scope Scope, f func(State) (State, error)) error {
	key := scope.Key()
	turn := l.store.Turn(key) // one turn per key, whichever the store
	if err := turn.Lock(ctx); err != nil {
		return err
	}
	defer turn.Unlock()
	_, err := store.Update(ctx, key, func(cur State) (State, bool, error) {
		next, err := f(cur)
		if err != nil {
			return State{}, false, err
		}
		return next, true, nil
	})
	if err != nil && !errors.Is(err, ErrExhausted) {
		return fmt.Errorf("budget: %s: %w", scope, err)
	}
	return err
}
