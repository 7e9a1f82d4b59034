package limiter

import (
	"context"
	"fmt"
	"math"
	"sync"
	"time"

	"github.com/sluicehq/sluice/services/kvstate"
)

// PacerOptions configures a Pacer.
type PacerOptions struct {
	// Clock reads the time; nil means time.Now.
	Clock Clock
	// Horizon is how far ahead of its send time a call may be admitted,
	// and so how far ahead this process may hold a schedule: the longer,
	// the more a lease may cover and the longer work waits at an executor
	// before it is sent. Default 100ms.
	Horizon time.Duration
	// MaxShare is the largest part of a horizon's worth of a schedule one
	// lease takes beyond the call it is for, so that one process cannot
	// book a schedule that others need. Default 0.5; at most 1.
	MaxShare float64
}

// Pacer sits in front of a shared Scheduler inside one process and gives
// each admitted call its send time.
//
// It holds stretches of each key's schedule (see [Schedule]) and places
// calls in them: a call's send time follows the schedule's rule in every
// dimension, so what all processes send through their Pacers over one
// shared schedule stays inside C + r*(T + jitter) in any window T. When no
// stretch it holds can place a call within the horizon, it leases one
// from the shared schedule for the call plus the calls the caller expects
// to place soon (Admit's ahead), so a queue costs one shared operation per
// lease rather than per call, and an idle process leases exactly what
// each call needs, wasting nothing.
//
// A stretch's part that time passes unused is lost; Release gives back
// the unused end of what it holds where nothing was leased after it, for
// a process that will not use it soon (and Flush at shutdown). A process
// that dies holding stretches loses them: capacity is lost, never spent
// twice.
//
// It is safe for concurrent use.
type Pacer struct {
	shared   Scheduler
	clock    Clock
	horizon  time.Duration
	maxShare float64

	mu   sync.Mutex
	keys map[string]*paced
}

// paced is what this process holds of one key's schedule.
type paced struct {
	// turn serializes leases for the key inside this process.
	turn *kvstate.Turn

	mu    sync.Mutex
	limit Limit
	held  []*holding // oldest first
}

// holding is one leased stretch and how far calls have filled it.
type holding struct {
	st Stretch
	// next is, per dimension, where the next call's interval may start.
	next [dims]int64
}

// NewPacer returns a Pacer in front of shared.
func NewPacer(shared Scheduler, opts PacerOptions) *Pacer {
	if opts.Horizon <= 0 {
		opts.Horizon = 100 * time.Millisecond
	}
	if opts.MaxShare <= 0 {
		opts.MaxShare = 0.5
	}
	return &Pacer{
		shared:   shared,
		clock:    opts.Clock,
		horizon:  opts.Horizon,
		maxShare: math.Min(opts.MaxShare, 1),
		keys:     make(map[string]*paced),
	}
}

// Horizon returns how far ahead of its send time a call may be admitted.
func (p *Pacer) Horizon() time.Duration { return p.horizon }

// Admit places a call needing need on key's schedule and returns the time
// it may be sent: no earlier than now + lead (its work's way to the
// executor, at most the horizon), no later than now + the horizon. ahead
// is how many more calls like this one the caller expects to place on key
// soon; a lease covers them too, up to MaxShare of a horizon.
//
// When the schedule cannot take the call within the horizon, nothing is
// placed and the error is an *[InsufficientError] (matching
// [ErrInsufficient]) saying how much later it could be.
//
// Errors: [ErrInsufficient], [ErrInvalidLimit], [ErrInvalidAmount],
// ctx.Err(), and the shared Scheduler's errors.
func (p *Pacer) Admit(ctx context.Context, key string, limit Limit, need Amount, ahead int, lead time.Duration) (time.Time, error) {
	if err := limit.Validate(); err != nil {
		return time.Time{}, err
	}
	if !finite(need.Requests) || !finite(need.Tokens) || need.Requests < 0 || need.Tokens < 0 {
		return time.Time{}, fmt.Errorf("%w: need %v", ErrInvalidAmount, need)
	}
	if err := ctx.Err(); err != nil {
		return time.Time{}, err
	}
	lead = min(max(lead, 0), p.horizon)
	ps := p.paced(key)
	if at, ok := p.placeLocal(ps, limit, need, lead); ok {
		return at, nil
	}

	if err := ps.turn.Lock(ctx); err != nil {
		return time.Time{}, err
	}
	defer ps.turn.Unlock()
	// Another caller may have leased meanwhile.
	if at, ok := p.placeLocal(ps, limit, need, lead); ok {
		return at, nil
	}
	st, err := p.shared.Lease(ctx, key, limit, need, p.leaseFor(limit, need, ahead), lead, p.horizon)
	if err != nil {
		return time.Time{}, err
	}
	ps.mu.Lock()
	defer ps.mu.Unlock()
	h := ps.adopt(limit, st)
	// Placed as of the lease, which checked the call fits then: since, the
	// lease's round trip has passed, and at a fast rate the stretch may
	// already have begun. The send time is then that much in the past,
	// and the call that much late, which admission's jitter allows for.
	at, ok := h.place(limit, st.At, need, math.MaxInt64)
	if !ok {
		return time.Time{}, fmt.Errorf("limiter: a lease of %q does not hold the call it was taken for", key)
	}
	return time.Unix(0, at), nil
}

// Held returns, per dimension, how much this process can still place on
// key's schedule from what it holds, with no shared operation. Routing
// uses it as headroom. It makes no network call.
func (p *Pacer) Held(key string) Amount {
	p.mu.Lock()
	ps, ok := p.keys[key]
	p.mu.Unlock()
	if !ok {
		return Amount{}
	}
	now := p.clock.now().UnixNano()
	ps.mu.Lock()
	defer ps.mu.Unlock()
	var out Amount
	for _, h := range ps.held {
		for i := range dims {
			if !ps.limit.limited(i) {
				continue
			}
			left := h.st.dim(i).To - max(h.next[i], now)
			if left > 0 {
				out.setDim(i, out.dim(i)+ps.limit.ratePerMinute(i)*float64(left)/60e9)
			}
		}
	}
	return out
}

// Release gives back what this process holds of key's schedule and has
// not placed calls in, where nothing was leased after it (elsewhere it is
// lost), and holds nothing of key after.
//
// Errors: ctx.Err() and the shared Scheduler's errors.
func (p *Pacer) Release(ctx context.Context, key string) error {
	p.mu.Lock()
	ps, ok := p.keys[key]
	p.mu.Unlock()
	if !ok {
		return nil
	}
	if err := ps.turn.Lock(ctx); err != nil {
		return err
	}
	defer ps.turn.Unlock()
	now := p.clock.now().UnixNano()
	ps.mu.Lock()
	held, limit := ps.held, ps.limit
	ps.held = nil
	ps.mu.Unlock()
	// Newest first: each returned tail may make the one before it the
	// schedule's tail.
	for k := len(held) - 1; k >= 0; k-- {
		h := held[k]
		var unused Stretch
		for i := range dims {
			if limit.limited(i) {
				sp := h.st.dim(i)
				unused.setDim(i, Span{From: max(h.next[i], now, sp.From), To: sp.To})
			}
		}
		if _, err := p.shared.Return(ctx, key, limit, unused); err != nil {
			return fmt.Errorf("limiter: give back the schedule of %q: %w", key, err)
		}
	}
	return nil
}

// Flush releases every key: call it at shutdown.
//
// Errors: ctx.Err() and the shared Scheduler's errors, joined.
func (p *Pacer) Flush(ctx context.Context) error {
	p.mu.Lock()
	keys := make([]string, 0, len(p.keys))
	for k := range p.keys {
		keys = append(keys, k)
	}
	p.mu.Unlock()
	var first error
	for _, k := range keys {
		if err := p.Release(ctx, k); err != nil && first == nil {
			first = err
		}
	}
	return first
}

// leaseFor is what to lease for a call needing need with ahead more
// expected: the call, and as many whole calls more as MaxShare of a
// horizon holds in every dimension (a part of a call would be wasted).
func (p *Pacer) leaseFor(limit Limit, need Amount, ahead int) Amount {
	extra := float64(max(ahead, 0))
	for i := range dims {
		if limit.limited(i) && need.dim(i) > 0 {
			room := p.maxShare * limit.ratePerMinute(i) / 60 * p.horizon.Seconds()
			extra = math.Min(extra, math.Floor(room/need.dim(i)))
		}
	}
	total := need.Add(scale(need, extra))
	// Each call's interval is rounded up to the nanosecond, the lease's
	// once: leave room for the calls' roundings.
	for i := range dims {
		if limit.limited(i) && need.dim(i) > 0 {
			total.setDim(i, total.dim(i)+(extra+1)*2*limit.ratePerMinute(i)/60e9)
		}
	}
	return total
}

// paced returns the state of key, creating it.
func (p *Pacer) paced(key string) *paced {
	p.mu.Lock()
	defer p.mu.Unlock()
	ps, ok := p.keys[key]
	if !ok {
		ps = &paced{turn: kvstate.NewTurn()}
		p.keys[key] = ps
	}
	return ps
}

// placeLocal tries to place the call, no sooner than lead from now, in
// what ps holds.
func (p *Pacer) placeLocal(ps *paced, limit Limit, need Amount, lead time.Duration) (time.Time, bool) {
	now := p.clock.now().UnixNano()
	ps.mu.Lock()
	defer ps.mu.Unlock()
	ps.setLimit(limit)
	ps.dropPast(now)
	for _, h := range ps.held {
		if at, ok := h.place(limit, now+int64(lead), need, now+int64(p.horizon)); ok {
			return time.Unix(0, at), true
		}
	}
	return time.Time{}, false
}

// adopt adds a newly leased stretch, joined to the last one held when it
// continues it, and returns the holding to place in.
func (ps *paced) adopt(limit Limit, st Stretch) *holding {
	ps.setLimit(limit)
	if n := len(ps.held); n > 0 {
		last := ps.held[n-1]
		joined := true
		for i := range dims {
			if limit.limited(i) && last.st.dim(i).To != st.dim(i).From {
				joined = false
			}
		}
		if joined {
			for i := range dims {
				if limit.limited(i) {
					sp := last.st.dim(i)
					sp.To = st.dim(i).To
					last.st.setDim(i, sp)
				}
			}
			return last
		}
	}
	h := &holding{st: st}
	for i := range dims {
		h.next[i] = st.dim(i).From
	}
	ps.held = append(ps.held, h)
	return h
}

// setLimit makes limit the one calls are placed at. What ps holds stays
// usable at a changed limit (a learned limit climbing back changes it at
// every call): a stretch is virtual time this process leased alone, and
// each call placed in it takes an interval of the length its own limit
// gives, so intervals stay disjoint and the schedule's bound holds with
// the largest rate and capacity among them, as it does for dispatchers
// that lease one schedule at limits a moment apart. Dropping what is held
// would lose it, and cost a lease per call. A limit that limits other
// dimensions drops it: its spans do not measure those.
func (ps *paced) setLimit(limit Limit) {
	if ps.limit == limit {
		return
	}
	for i := range dims {
		if ps.limit.limited(i) != limit.limited(i) {
			ps.held = nil
			break
		}
	}
	ps.limit = limit
}

// dropPast forgets stretches that no call can be placed in any more.
func (ps *paced) dropPast(now int64) {
	live := ps.held[:0]
	for _, h := range ps.held {
		alive := true
		for i := range dims {
			if ps.limit.limited(i) && h.st.dim(i).To <= now {
				alive = false
			}
		}
		if alive {
			live = append(live, h)
		}
	}
	clear(ps.held[len(live):])
	ps.held = live
}

// place puts a call needing need into h at the earliest send time the
// schedule's rule allows no sooner than floor, if that is no later than
// latest and the call's intervals fit in the stretch, and returns the send
// time.
func (h *holding) place(limit Limit, floor int64, need Amount, latest int64) (int64, bool) {
	send := earliestSend(limit, floor, h.next, need)
	if send > latest {
		return 0, false
	}
	var ends [dims]int64
	for i := range dims {
		if !limit.limited(i) {
			continue
		}
		start := max(h.next[i], send)
		ends[i] = addNanos(start, limit.nanosFor(i, need.dim(i)))
		if ends[i] > h.st.dim(i).To {
			return 0, false
		}
	}
	for i := range dims {
		if limit.limited(i) {
			h.next[i] = ends[i]
		}
	}
	return send, true
}
