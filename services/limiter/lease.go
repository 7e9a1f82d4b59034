package limiter

import (
	"context"
	"errors"
	"fmt"
	"math"
	"slices"
	"sync"
	"time"

	"github.com/sluicehq/sluice/services/kvstate"
)

// LeaseOptions configures Leases.
type LeaseOptions struct {
	// Clock reads the time; nil means time.Now.
	Clock Clock
	// TTL is how long leased capacity may be spent. Default 100ms. A longer
	// TTL means fewer shared operations and a looser bound (see Leases).
	TTL time.Duration
	// MaxShare is the largest fraction of a bucket's capacity one lease may
	// take, so that one process cannot hoard a bucket that others need.
	// Default 0.5; values above 1 are treated as 1.
	MaxShare float64
	// DemandWindow is the time constant of the moving average of this
	// process's demand per key, which sizes the leases. Default 10*TTL.
	DemandWindow time.Duration
}

// Leases sits in front of a shared Limiter inside one process, so that most
// admissions need no operation on the shared state.
//
// When this process's unexpired allowance for a key covers a call, Take
// spends it locally. Otherwise it takes from the shared Limiter what is
// missing, plus a chunk sized to this process's recent demand on the key (a
// moving average of what it took per second, times the TTL), capped at
// MaxShare of the capacity. Each grant may be spent for TTL after it was
// taken; what is left then is returned to the shared bucket with Adjust, on
// the next Take for the key, on Expire, or on Flush. The owner calls Expire
// periodically and Flush at shutdown; no goroutine is needed.
//
// # The bound
//
// Across all processes sharing a Limiter through Leases, what is sent (spent
// from leases) over any window of length T is at most
//
//	capacity + rate*(T + TTL)
//
// (plus one oversized grant): capacity sent in the window was granted by the
// shared bucket at most TTL before, and the shared bucket bounds its grants.
//
// Returning leftovers naively would break this. While a lease is held, the
// shared bucket, lowered by it, refills; had the capacity never been taken,
// that refill would have been lost to the bucket being full. Returned at full
// value, the leftover banks that refill, and processes that keep leasing and
// returning can accumulate far more than the capacity. So a return is
// discounted by what the bucket refilled while the lease was held
// (rate*held, per dimension); that keeps the shared bucket never above one
// in which only what was sent had ever been taken, and the bound holds. A
// lease held to its expiry at a steady demand has little left and returns
// nothing; a lease returned early by Flush returns almost all of it. The
// price is paid when demand drops: leases sized to the old demand lapse
// mostly unspent, and their capacity is lost for up to a TTL.
//
// A process that dies holding leases returns nothing: its capacity is lost,
// never double-spent.
//
// It is safe for concurrent use.
type Leases struct {
	shared   Limiter
	clock    Clock
	ttl      time.Duration
	maxShare float64
	window   time.Duration

	mu   sync.Mutex
	keys map[string]*lease
}

// lease is this process's allowance and demand for one key.
type lease struct {
	// turn serializes the shared takes for the key: callers that find the
	// allowance short wait for the one already topping it up, rather than
	// each taking a chunk.
	turn *kvstate.Turn

	mu       sync.Mutex
	limit    Limit      // the latest limit seen for the key; returns use it
	tranches []*tranche // unexpired grants with capacity left, oldest first
	expired  []*tranche // expired grants not yet returned
	demand   Amount     // moving average of what was admitted, per second, as of seen
	seen     time.Time  // when demand was last updated
}

// tranche is what is left of one grant from the shared Limiter.
type tranche struct {
	left    Amount
	granted time.Time // before the shared take began, so never later than the debit
	expires time.Time
}

// piece is an amount spent from a tranche, kept to put it back when the
// take it was spent for fails.
type piece struct {
	t      *tranche
	amount Amount
}

// NewLeases returns Leases in front of the shared Limiter l.
func NewLeases(l Limiter, opts LeaseOptions) *Leases {
	if opts.TTL <= 0 {
		opts.TTL = 100 * time.Millisecond
	}
	if opts.MaxShare <= 0 {
		opts.MaxShare = 0.5
	}
	if opts.DemandWindow <= 0 {
		opts.DemandWindow = 10 * opts.TTL
	}
	return &Leases{
		shared:   l,
		clock:    opts.Clock,
		ttl:      opts.TTL,
		maxShare: math.Min(opts.MaxShare, 1),
		window:   opts.DemandWindow,
		keys:     make(map[string]*lease),
	}
}

// Take admits a call that needs need from the bucket of key. If this
// process's unexpired allowance covers need, it is spent locally with no
// call to the shared Limiter. Otherwise Take takes from the shared Limiter
// at least what the allowance lacks and at most a chunk sized to recent
// demand, adds the grant to the allowance, and spends need.
//
// When the shared Limiter cannot grant, nothing is spent and its error is
// returned: an *[InsufficientError] (matching [ErrInsufficient]) with the
// shared bucket's RetryAfter.
//
// Errors: [ErrInsufficient], [ErrInvalidLimit], [ErrInvalidAmount],
// ctx.Err(), and the shared Limiter's errors.
func (l *Leases) Take(ctx context.Context, key string, limit Limit, need Amount) error {
	if err := limit.Validate(); err != nil {
		return err
	}
	if !finite(need.Requests) || !finite(need.Tokens) || need.Requests < 0 || need.Tokens < 0 {
		return fmt.Errorf("%w: need %v", ErrInvalidAmount, need)
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	ls := l.lease(key)

	// The local path: no network, unless leftovers have expired.
	now := l.clock.now()
	ls.mu.Lock()
	ls.limit = limit
	ls.expireLocked(now)
	covered := ls.coversLocked(limit, need)
	if covered {
		ls.spendLocked(limit, need)
		ls.noteDemandLocked(now, need, l.window)
	}
	ls.mu.Unlock()
	// A failed return is kept and retried later, so it does not fail the
	// call, which is admitted or not regardless.
	_ = l.giveBack(ctx, key, ls)
	if covered {
		return nil
	}

	if err := ls.turn.Lock(ctx); err != nil {
		return err
	}
	defer ls.turn.Unlock()
	// Another caller may have topped the allowance up meanwhile.
	now = l.clock.now()
	ls.mu.Lock()
	ls.expireLocked(now)
	spent := ls.spendLocked(limit, need)
	// Demand counts what is admitted, not what is asked for: when capacity
	// is scarce and calls are refused, bigger leases would only hoard it.
	demand := ls.demandLocked(now, l.window).Add(scale(need, 1/l.window.Seconds()))
	var min, max Amount
	for i := range dims {
		if !limit.limited(i) {
			continue
		}
		short := need.dim(i)
		for _, p := range spent {
			short -= p.amount.dim(i)
		}
		short = math.Max(short, 0)
		chunk := demand.dim(i) * l.ttl.Seconds()
		chunk = math.Min(chunk, l.maxShare*limit.Capacity().dim(i))
		min.setDim(i, short)
		max.setDim(i, math.Max(short, chunk))
	}
	if min.IsZero() {
		ls.noteDemandLocked(now, need, l.window)
		ls.mu.Unlock()
		return nil
	}
	ls.mu.Unlock()

	grant, err := l.shared.Take(ctx, key, limit, min, max)

	ls.mu.Lock()
	defer ls.mu.Unlock()
	if err != nil {
		ls.unspendLocked(spent, l.clock.now())
		return err
	}
	var left Amount
	for i := range dims {
		if limit.limited(i) {
			left.setDim(i, math.Max(grant.dim(i)-min.dim(i), 0))
		}
	}
	if !left.IsZero() {
		ls.tranches = append(ls.tranches, &tranche{left: left, granted: now, expires: now.Add(l.ttl)})
	}
	ls.noteDemandLocked(now, need, l.window)
	return nil
}

// Held returns what this process holds unspent and unexpired for key: how
// much it can admit with no shared operation. Routing uses it as headroom.
// Held makes no network call.
func (l *Leases) Held(key string) Amount {
	l.mu.Lock()
	ls, ok := l.keys[key]
	l.mu.Unlock()
	if !ok {
		return Amount{}
	}
	now := l.clock.now()
	ls.mu.Lock()
	defer ls.mu.Unlock()
	var held Amount
	for _, t := range ls.tranches {
		if now.Before(t.expires) {
			held = held.Add(t.left)
		}
	}
	return held
}

// Expire returns the expired leftovers of every key to the shared Limiter.
// Take does this for its own key; the owner calls Expire periodically so
// that leftovers of keys no longer taken from go back too. A return that
// fails is kept and retried by the next Take, Expire or Flush.
//
// Errors: ctx.Err() and the shared Limiter's errors, joined.
func (l *Leases) Expire(ctx context.Context) error {
	return l.each(ctx, func(ls *lease, now time.Time) { ls.expireLocked(now) })
}

// Flush returns everything this process holds, expired or not, to the
// shared Limiter: call it at shutdown. Takes after Flush work as before.
//
// Errors: ctx.Err() and the shared Limiter's errors, joined.
func (l *Leases) Flush(ctx context.Context) error {
	return l.each(ctx, func(ls *lease, _ time.Time) {
		ls.expired = append(ls.expired, ls.tranches...)
		ls.tranches = nil
	})
}

// Release returns everything this process holds for key to the shared
// Limiter at once, as Flush does for every key: for a process that will not
// spend it soon and knows another needs it. A return that fails is kept and
// retried by the next Take, Expire or Flush.
//
// Errors: ctx.Err() and the shared Limiter's errors.
func (l *Leases) Release(ctx context.Context, key string) error {
	l.mu.Lock()
	ls, ok := l.keys[key]
	l.mu.Unlock()
	if !ok {
		return nil
	}
	ls.mu.Lock()
	ls.expired = append(ls.expired, ls.tranches...)
	ls.tranches = nil
	ls.mu.Unlock()
	return l.giveBack(ctx, key, ls)
}

// each applies f to every lease under its lock, then returns its expired
// leftovers.
func (l *Leases) each(ctx context.Context, f func(*lease, time.Time)) error {
	l.mu.Lock()
	keys := make(map[string]*lease, len(l.keys))
	for k, ls := range l.keys {
		keys[k] = ls
	}
	l.mu.Unlock()
	var errs []error
	for key, ls := range keys {
		now := l.clock.now()
		ls.mu.Lock()
		f(ls, now)
		ls.mu.Unlock()
		if err := l.giveBack(ctx, key, ls); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// giveBack returns the expired leftovers of ls to the shared bucket,
// discounted by what the bucket refilled while they were held (see the
// bound on Leases). On failure they are kept for the next attempt, when the
// discount is larger: returning late is always safe.
func (l *Leases) giveBack(ctx context.Context, key string, ls *lease) error {
	ls.mu.Lock()
	pending, limit := ls.expired, ls.limit
	ls.expired = nil
	ls.mu.Unlock()
	if len(pending) == 0 {
		return nil
	}
	now := l.clock.now()
	var refund Amount
	for i := range dims {
		if !limit.limited(i) {
			continue
		}
		var sum float64
		for _, t := range pending {
			held := max(int64(now.Sub(t.granted)), 0)
			sum += math.Max(t.left.dim(i)-limit.refillOver(i, held), 0)
		}
		// Rounding dust is not worth a write.
		if sum > 1e-9*limit.Capacity().dim(i) {
			refund.setDim(i, sum)
		}
	}
	if refund.IsZero() {
		return nil
	}
	if err := l.shared.Adjust(ctx, key, limit, refund); err != nil {
		ls.mu.Lock()
		ls.expired = append(ls.expired, pending...)
		ls.mu.Unlock()
		return fmt.Errorf("limiter: return leased %v of %q: %w", refund, key, err)
	}
	return nil
}

// lease returns the lease of key, creating it.
func (l *Leases) lease(key string) *lease {
	l.mu.Lock()
	defer l.mu.Unlock()
	ls, ok := l.keys[key]
	if !ok {
		ls = &lease{turn: kvstate.NewTurn()}
		l.keys[key] = ls
	}
	return ls
}

// expireLocked moves the tranches that expired by now to the expired list.
func (ls *lease) expireLocked(now time.Time) {
	live := ls.tranches[:0]
	for _, t := range ls.tranches {
		if now.Before(t.expires) {
			live = append(live, t)
		} else {
			ls.expired = append(ls.expired, t)
		}
	}
	clear(ls.tranches[len(live):])
	ls.tranches = live
}

// demandLocked returns the moving average of demand per second as of now:
// it decays by e^(-elapsed/window).
func (ls *lease) demandLocked(now time.Time, window time.Duration) Amount {
	if ls.seen.IsZero() {
		return Amount{}
	}
	return scale(ls.demand, math.Exp(-max(now.Sub(ls.seen), 0).Seconds()/window.Seconds()))
}

// noteDemandLocked adds an admitted need to the moving average: each
// admission adds need/window, so a steady demand of x per second converges
// to x.
func (ls *lease) noteDemandLocked(now time.Time, need Amount, window time.Duration) {
	ls.demand = ls.demandLocked(now, window).Add(scale(need, 1/window.Seconds()))
	if now.After(ls.seen) {
		ls.seen = now
	}
}

// scale returns a*f per dimension.
func scale(a Amount, f float64) Amount {
	return Amount{Requests: a.Requests * f, Tokens: a.Tokens * f}
}

// coversLocked reports whether the live tranches cover need in every
// limited dimension.
func (ls *lease) coversLocked(limit Limit, need Amount) bool {
	for i := range dims {
		if !limit.limited(i) || need.dim(i) == 0 {
			continue
		}
		var held float64
		for _, t := range ls.tranches {
			held += t.left.dim(i)
		}
		if held < need.dim(i) {
			return false
		}
	}
	return true
}

// spendLocked spends up to need from the live tranches, oldest first, in
// every limited dimension, drops tranches left empty, and returns what it
// spent from each.
func (ls *lease) spendLocked(limit Limit, need Amount) []piece {
	rest := need
	var spent []piece
	for _, t := range ls.tranches {
		var p Amount
		for i := range dims {
			if limit.limited(i) {
				p.setDim(i, math.Min(math.Max(rest.dim(i), 0), math.Max(t.left.dim(i), 0)))
			}
		}
		if !p.IsZero() {
			t.left = t.left.Sub(p)
			rest = rest.Sub(p)
			spent = append(spent, piece{t: t, amount: p})
		}
	}
	live := ls.tranches[:0]
	for _, t := range ls.tranches {
		if t.left.Requests > 0 || t.left.Tokens > 0 {
			live = append(live, t)
		}
	}
	clear(ls.tranches[len(live):])
	ls.tranches = live
	return spent
}

// unspendLocked puts back what spendLocked spent. Each piece goes back as a
// tranche of its own with its original grant time and expiry: its old
// tranche may have been dropped or returned meanwhile, and must not be
// returned twice.
func (ls *lease) unspendLocked(spent []piece, now time.Time) {
	for _, p := range spent {
		t := &tranche{left: p.amount, granted: p.t.granted, expires: p.t.expires}
		if !now.Before(t.expires) {
			ls.expired = append(ls.expired, t)
			continue
		}
		i := len(ls.tranches)
		for i > 0 && ls.tranches[i-1].granted.After(t.granted) {
			i--
		}
		ls.tranches = slices.Insert(ls.tranches, i, t)
	}
}
