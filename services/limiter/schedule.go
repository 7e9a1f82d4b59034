package limiter

import (
	"fmt"
	"math"
	"time"
)

// Schedule is the shared state of one deployment's send schedule: per
// dimension, the instant from which its virtual time is not yet leased
// (the "theoretical arrival time" of GCRA, the generic cell rate
// algorithm). The zero Schedule has never been used: all of it is free.
//
// # The model
//
// A Limit gives each dimension a rate r (per minute) and a capacity C. A
// call that needs c of a dimension occupies an interval of that
// dimension's virtual time, of length c/r, that no other call occupies,
// and is sent at a time s no earlier than the end of its interval minus
// C/r and no later than its start:
//
//	v + c/r - C/r <= s <= v
//
// (for a call larger than C, at its start: it waits until the schedule
// has been idle long enough, (c-C)/r, before it). Sending then bounds
// what reaches the provider: if each send arrives within J after its
// scheduled time, any window of length T receives at most
//
//	C + r*(T + J)
//
// of the dimension, whatever the order in which dispatchers hand out the
// intervals and whatever the sizes of the calls (see the README for the
// proof). [Fit] chooses r and C so that this is inside every window a
// provider enforces.
//
// Virtual time is handed out in stretches: [Schedule.Lease] reserves a
// stretch starting where the schedule is free (never before now), and a
// [Pacer] places calls in the stretches its process holds. Each
// dimension has its own virtual time; a call's send time satisfies the
// rule above in both.
//
// Schedule's methods are pure functions of the state, the limit and the
// time they are given, shared by every [Scheduler] implementation.
type Schedule struct {
	// Requests and Tokens are the instants, in Unix nanoseconds, from
	// which each dimension's schedule is free; 0 when never used. Any
	// instant at or before now means the same: free from now.
	Requests, Tokens int64
}

// Span is a stretch of one dimension's virtual time, [From, To), in Unix
// nanoseconds. The zero Span is the span of an unlimited dimension.
type Span struct {
	From, To int64
}

// Stretch is a leased part of a deployment's schedule, per dimension.
type Stretch struct {
	Requests, Tokens Span
	// At is the earliest send time the lease allowed its calls, in Unix
	// nanoseconds: its time plus its lead.
	At int64
}

// dim returns dimension i of s.
func (s Schedule) dim(i int) int64 {
	if i == 0 {
		return s.Requests
	}
	return s.Tokens
}

func (s *Schedule) setDim(i int, v int64) {
	if i == 0 {
		s.Requests = v
	} else {
		s.Tokens = v
	}
}

// dim returns the span of dimension i (0 requests, 1 tokens).
func (st Stretch) dim(i int) Span {
	if i == 0 {
		return st.Requests
	}
	return st.Tokens
}

func (st *Stretch) setDim(i int, v Span) {
	if i == 0 {
		st.Requests = v
	} else {
		st.Tokens = v
	}
}

// Lease reserves, as of now, a stretch of the schedule for total of each
// limited dimension, and returns the schedule after it with the stretch.
// A stretch's span runs, in each dimension, from where the schedule was
// free (0 for one never used) to one end for all dimensions: total
// after the first call's send time (or after the free instant, if later)
// in the dimension that takes longest. The part before now is idle time,
// which cannot hold calls any more but lets a call larger than the
// capacity go sooner (see Schedule). first is
// the first call the stretch is for: the lease is refused unless that
// call could be sent within horizon from now. No call of the stretch is
// sent sooner than lead from now: the time its work takes to reach the
// executor, so that it is sent when the schedule says rather than late.
// In an unlimited dimension the stretch's span is the zero Span.
//
// When the first call could not go within horizon, nothing is reserved
// and the error is an *[InsufficientError] whose RetryAfter is how much
// later it could be leased.
//
// Errors: [ErrInsufficient], [ErrInvalidLimit], [ErrInvalidAmount].
func (s Schedule) Lease(limit Limit, now time.Time, first, total Amount, lead, horizon time.Duration) (Schedule, Stretch, error) {
	if err := limit.Validate(); err != nil {
		return s, Stretch{}, err
	}
	if err := validateRange(first, total); err != nil || math.IsInf(total.Requests, 0) || math.IsInf(total.Tokens, 0) {
		return s, Stretch{}, fmt.Errorf("%w: first %v, total %v", ErrInvalidAmount, first, total)
	}
	if horizon < 0 || lead < 0 || lead > horizon {
		return s, Stretch{}, fmt.Errorf("%w: lead %v, horizon %v", ErrInvalidAmount, lead, horizon)
	}
	t := now.UnixNano()
	var free [dims]int64
	for i := range dims {
		free[i] = s.dim(i)
	}
	floor := t + int64(lead)
	send := earliestSend(limit, floor, free, first)
	if late := send - (t + int64(horizon)); late > 0 {
		return s, Stretch{}, &InsufficientError{RetryAfter: time.Duration(late)}
	}
	// A stretch for more than one call has one end for every dimension:
	// a call's intervals start no earlier than its send time in each, so
	// the dimension that paces the calls decides how long the stretch
	// lasts in all of them. A stretch for one call ends in each dimension
	// where the call's interval does: nothing more is placed in it, and
	// a dimension that does not pace the call (requests, when tokens do)
	// is not held idle to the other's end, so that a refund of the tokens
	// the call did not use (Settle) lets the next call go that much
	// sooner rather than waiting for the request schedule.
	var ends [dims]int64
	var end int64
	for i := range dims {
		if limit.limited(i) {
			ends[i] = addNanos(max(free[i], send), limit.nanosFor(i, total.dim(i)))
			end = max(end, ends[i])
		}
	}
	single := true
	for i := range dims {
		if limit.limited(i) && first.dim(i) > 0 && total.dim(i) >= 2*first.dim(i) {
			single = false
		}
	}
	st := Stretch{At: floor}
	for i := range dims {
		if limit.limited(i) {
			if !single {
				ends[i] = end
			}
			st.setDim(i, Span{From: free[i], To: ends[i]})
			s.setDim(i, ends[i])
		}
	}
	return s, st, nil
}

// Return gives back the unused end of a stretch this schedule leased: in
// each limited dimension whose schedule is still free exactly from the
// end of unused (nothing was leased after it), the schedule becomes free
// from the start of unused again. It returns the schedule and whether
// anything was given back.
//
// Errors: [ErrInvalidLimit].
func (s Schedule) Return(limit Limit, unused Stretch) (Schedule, bool, error) {
	if err := limit.Validate(); err != nil {
		return s, false, err
	}
	returned := false
	for i := range dims {
		sp := unused.dim(i)
		if !limit.limited(i) || sp.From >= sp.To || s.dim(i) != sp.To {
			continue
		}
		s.setDim(i, sp.From)
		returned = true
	}
	return s, returned, nil
}

// Settle corrects the schedule as of now by delta in each limited
// dimension: a positive delta gives back what a call reserved and did not
// use (the schedule is free that much earlier), a negative one charges
// what it used beyond its reservation (free that much later, counting
// from now at the earliest).
//
// A refund makes room at once, so it is safe only while every window
// that counted the call is still open: the caller decides when (see
// [Pacer.Settle]).
//
// Errors: [ErrInvalidLimit], [ErrInvalidAmount].
func (s Schedule) Settle(limit Limit, now time.Time, delta Amount) (Schedule, error) {
	if err := limit.Validate(); err != nil {
		return s, err
	}
	if !finite(delta.Requests) || !finite(delta.Tokens) {
		return s, fmt.Errorf("%w: delta %v", ErrInvalidAmount, delta)
	}
	t := now.UnixNano()
	for i := range dims {
		d := delta.dim(i)
		if !limit.limited(i) || d == 0 {
			continue
		}
		if d > 0 {
			s.setDim(i, max(s.dim(i)-limit.nanosFor(i, d), 0))
		} else {
			s.setDim(i, addNanos(max(s.dim(i), t), limit.nanosFor(i, -d)))
		}
	}
	return s, nil
}

// Free returns what each dimension could send at once as of now, as a
// token bucket's level would say: the capacity when the schedule is free
// from now, less what is leased ahead of now (so negative when more than
// the capacity is), and +Inf in an unlimited dimension. Routing uses it
// as headroom.
//
// Errors: [ErrInvalidLimit].
func (s Schedule) Free(limit Limit, now time.Time) (Amount, error) {
	if err := limit.Validate(); err != nil {
		return Amount{}, err
	}
	t := now.UnixNano()
	var out Amount
	for i := range dims {
		if !limit.limited(i) {
			out.setDim(i, math.Inf(1))
			continue
		}
		ahead := max(s.dim(i)-t, 0)
		out.setDim(i, limit.Capacity().dim(i)-limit.ratePerMinute(i)*float64(ahead)/60e9)
	}
	return out, nil
}

// earliestSend is the earliest send time, in Unix nanoseconds and no
// earlier than now, of a call needing need on a schedule free from free
// (per limited dimension): the free instant plus the call's length less
// the capacity's.
func earliestSend(limit Limit, now int64, free [dims]int64, need Amount) int64 {
	send := now
	for i := range dims {
		if !limit.limited(i) {
			continue
		}
		slack := need.dim(i) - limit.Capacity().dim(i)
		var at int64
		if slack >= 0 {
			at = addNanos(free[i], limit.nanosFor(i, slack))
		} else {
			at = free[i] - limit.nanosFloor(i, -slack)
		}
		send = max(send, at)
	}
	return send
}

// nanosFor is how long dimension i's rate takes for amount, in
// nanoseconds, rounded up so that intervals never overlap by rounding;
// saturating for absurd amounts.
func (l Limit) nanosFor(i int, amount float64) int64 {
	if amount <= 0 {
		return 0
	}
	ns := math.Ceil(amount * 60e9 / l.ratePerMinute(i))
	if ns >= math.MaxInt64/4 {
		return math.MaxInt64 / 4
	}
	return int64(ns)
}

// nanosFloor is nanosFor rounded down: for an allowance, which must
// never come out larger than exact.
func (l Limit) nanosFloor(i int, amount float64) int64 {
	if amount <= 0 {
		return 0
	}
	return int64(math.Min(math.Floor(amount*60e9/l.ratePerMinute(i)), math.MaxInt64/4))
}

// addNanos adds without overflowing.
func addNanos(a, b int64) int64 {
	if b > 0 && a > math.MaxInt64-b {
		return math.MaxInt64
	}
	return a + b
}
