package budget_test

import (
	"encoding/json"
	"errors"
	"slices"
	"testing"
	"time"

	"github.com/sluicehq/sluice/services/budget"
)

// clock is a manual clock: tests move it by hand, event by event.
type clock struct{ t time.Time }

func (c *clock) now() time.Time          { return c.t }
func (c *clock) set(t time.Time)         { c.t = t }
func (c *clock) advance(d time.Duration) { c.t = c.t.Add(d) }

func tokens(n int64) budget.Amount { return budget.Amount{Tokens: n} }
func micros(n int64) budget.Amount { return budget.Amount{Micros: n} }

// reserve reserves need on *s, which it updates, and fails the test
// unless the outcome is want (nil: admitted).
func reserve(t *testing.T, s *budget.State, c *clock, loc *time.Location, lim budget.Limits, need budget.Amount, refused bool) (budget.Reservation, *budget.Refusal) {
	t.Helper()
	next, res, err := s.Reserve(c.now(), loc, lim, need)
	*s = next
	var r *budget.Refusal
	if errors.As(err, &r) != refused || (err != nil) != refused {
		t.Fatalf("at %v, reserve %+v against %+v (day %+v, month %+v): %v, want refused %v", c.now(), need, lim, s.Day, s.Month, err, refused)
	}
	if refused && !errors.Is(err, budget.ErrExhausted) {
		t.Fatalf("a refusal that is not ErrExhausted: %v", err)
	}
	return res, r
}

// A budget admits calls while spent + reserved + the call's worst case
// fits, in tokens and in money, in the day and in the month; the
// refusal says which bound, what is spent and reserved, the limit, and
// when it resets.
func TestReserveAdmitsUpToTheLimit(t *testing.T) {
	c := &clock{time.Date(2026, 12, 4, 10, 0, 0, 0, time.UTC)}
	var s budget.State
	lim := budget.Limits{Day: budget.Amount{Tokens: 1000}, Month: budget.Amount{Micros: 5_000_000}}
	need := budget.Amount{Tokens: 300, Micros: 1_000_000}
	for range 3 {
		reserve(t, &s, c, time.UTC, lim, need, false)
	}
	if s.Day.Reserved != (budget.Amount{Tokens: 900, Micros: 3_000_000}) || s.Month.Reserved != s.Day.Reserved || s.Day.Admitted != 3 {
		t.Fatalf("after three: day %+v month %+v", s.Day, s.Month)
	}
	_, r := reserve(t, &s, c, time.UTC, lim, need, true)
	if r.Money || r.Period.Span != budget.Day || r.Period.ID() != "2026-12-04" || r.Limit.Tokens != 1000 || r.Reserved.Tokens != 900 || r.Spent.Tokens != 0 || r.Need != need ||
		!r.ResetsAt().Equal(time.Date(2026, 12, 5, 0, 0, 0, 0, time.UTC)) {
		t.Fatalf("refusal %+v", r)
	}
	t.Log(r)
	// A call that fits what is left is admitted: 100 tokens.
	reserve(t, &s, c, time.UTC, lim, budget.Amount{Tokens: 100, Micros: 1_000_000}, false)
	// The month's money is now 4 of 5: a call needing 1.000001 is
	// refused by the month, in money, resetting on the first.
	_, r = reserve(t, &s, c, time.UTC, budget.Limits{Month: lim.Month}, budget.Amount{Micros: 1_000_001}, true)
	if !r.Money || r.Period.Span != budget.Month || !r.ResetsAt().Equal(time.Date(2027, 1, 1, 0, 0, 0, 0, time.UTC)) || r.Reserved.Micros != 4_000_000 {
		t.Fatalf("refusal %+v", r)
	}
	// Exactly what is left fits.
	reserve(t, &s, c, time.UTC, budget.Limits{Month: lim.Month}, micros(1_000_000), false)
	// No limits: anything is admitted, and counted.
	reserve(t, &s, c, time.UTC, budget.Limits{}, tokens(1e12), false)
	if s.Day.Reserved.Tokens != 1000+1e12 {
		t.Fatalf("unbounded reservation not counted: %+v", s.Day)
	}
}

// Settling releases the reservation and adds the real spend: less than
// reserved frees the rest; more is added in full and its excess counted
// in Over; no usage at all charges the reservation, never zero; a
// release charges nothing.
func TestSettle(t *testing.T) {
	c := &clock{time.Date(2026, 12, 4, 10, 0, 0, 0, time.UTC)}
	var s budget.State
	lim := budget.Limits{Day: tokens(1000)}
	a, _ := reserve(t, &s, c, time.UTC, lim, budget.Amount{Tokens: 400, Micros: 40}, false)
	b, _ := reserve(t, &s, c, time.UTC, lim, budget.Amount{Tokens: 400, Micros: 40}, false)
	reserve(t, &s, c, time.UTC, lim, tokens(400), true)

	// Less than reserved.
	s, st := s.Settle(c.now(), time.UTC, a, &budget.Amount{Tokens: 100, Micros: 10}, lim, nil)
	if s.Day.Spent != (budget.Amount{Tokens: 100, Micros: 10}) || s.Day.Reserved != (budget.Amount{Tokens: 400, Micros: 40}) || !st.Over.IsZero() || st.Estimated || st.Charged.Tokens != 100 {
		t.Fatalf("settled less: %+v, %+v", s.Day, st)
	}
	c.advance(time.Minute)
	reserve(t, &s, c, time.UTC, lim, tokens(400), false) // room again: 100 + 400 + 400 <= 1000
	// More than reserved: all of it counts, and the excess shows.
	s, st = s.Settle(c.now(), time.UTC, b, &budget.Amount{Tokens: 700, Micros: 30}, lim, nil)
	if s.Day.Spent != (budget.Amount{Tokens: 800, Micros: 40}) || s.Day.Over != tokens(300) || st.Over != tokens(300) || s.Month.Over != tokens(300) {
		t.Fatalf("settled more: day %+v month %+v, %+v", s.Day, s.Month, st)
	}
	if s.Day.Committed().Tokens != 1200 {
		t.Fatalf("committed %+v: the excess is spent, above the limit, and shown", s.Day.Committed())
	}
	// Over the limit now: nothing fits.
	reserve(t, &s, c, time.UTC, lim, tokens(1), true)

	// No usage: the reservation is charged.
	var s2 budget.State
	r, _ := reserve(t, &s2, c, time.UTC, lim, budget.Amount{Tokens: 250, Micros: 25}, false)
	s2, st = s2.Settle(c.now(), time.UTC, r, nil, lim, nil)
	if !st.Estimated || st.Charged != r.Amount || s2.Day.Spent != r.Amount || !s2.Day.Reserved.IsZero() {
		t.Fatalf("settled without usage: %+v, %+v", s2.Day, st)
	}
	// A release charges nothing.
	r, _ = reserve(t, &s2, c, time.UTC, lim, tokens(700), false)
	s2, gone := s2.Release(c.now(), time.UTC, r)
	if len(gone) != 0 || s2.Day.Spent != (budget.Amount{Tokens: 250, Micros: 25}) || !s2.Day.Reserved.IsZero() {
		t.Fatalf("released: %+v, gone %v", s2.Day, gone)
	}
}

// A new day or month starts at zero, in the budget's time zone: at
// midnight of the first in Paris, while it is still the 31st in UTC, a
// month's budget that was full admits again; a reservation made before
// the reset settles in the period it was made in, never in the new one.
func TestMonthBoundaryInParis(t *testing.T) {
	paris := zone(t, "Europe/Paris")
	c := &clock{time.Date(2026, 1, 31, 22, 0, 0, 0, time.UTC)} // 23:00 in Paris
	var s budget.State
	lim := budget.Limits{Month: tokens(1000)}
	early, _ := reserve(t, &s, c, paris, lim, tokens(600), false)
	reserve(t, &s, c, paris, lim, tokens(400), false)
	c.set(time.Date(2026, 1, 31, 22, 59, 59, 999999999, time.UTC)) // 23:59:59.999999999 in Paris
	_, r := reserve(t, &s, c, paris, lim, tokens(1), true)
	if !r.ResetsAt().Equal(time.Date(2026, 1, 31, 23, 0, 0, 0, time.UTC)) || r.Period.ID() != "2026-01" {
		t.Fatalf("refusal %+v: want a reset at midnight in Paris, 23:00 UTC", r)
	}
	c.advance(time.Nanosecond) // February in Paris; January in UTC
	if c.now().UTC().Month() != time.January {
		t.Fatal("the test's clock is wrong")
	}
	late, _ := reserve(t, &s, c, paris, lim, tokens(1000), false)
	if s.Month.Period != "2026-02" || s.Month.Reserved.Tokens != 1000 || s.PrevMonth.Period != "2026-01" || s.PrevMonth.Reserved.Tokens != 1000 {
		t.Fatalf("after the reset: month %+v, previous %+v", s.Month, s.PrevMonth)
	}
	if s.Day.Period != "2026-02-01" || s.PrevDay.Period != "2026-01-31" {
		t.Fatalf("days: %+v, previous %+v", s.Day, s.PrevDay)
	}
	// January's call settles in January: February is not charged.
	s, st := s.Settle(c.now(), paris, early, &budget.Amount{Tokens: 500}, lim, nil)
	if len(st.Unrecorded) != 0 || s.PrevMonth.Spent.Tokens != 500 || s.PrevMonth.Reserved.Tokens != 400 || s.Month.Spent.Tokens != 0 || s.Month.Reserved.Tokens != 1000 {
		t.Fatalf("january's settlement: month %+v, previous %+v, %+v", s.Month, s.PrevMonth, st)
	}
	s, _ = s.Settle(c.now(), paris, late, &budget.Amount{Tokens: 10}, lim, nil)
	if s.Month.Spent.Tokens != 10 || !s.Month.Reserved.IsZero() {
		t.Fatalf("february's settlement: %+v", s.Month)
	}
	// Two days later a reservation of the 31st is gone from the day
	// count (reported, not charged to today) but still in the month.
	var s3 budget.State
	c.set(time.Date(2026, 3, 30, 12, 0, 0, 0, paris))
	old, _ := reserve(t, &s3, c, paris, budget.Limits{}, tokens(50), false)
	c.set(time.Date(2026, 4, 1, 0, 30, 0, 0, paris))
	s3, st = s3.Settle(c.now(), paris, old, &budget.Amount{Tokens: 70}, budget.Limits{}, nil)
	if !slices.Equal(st.Unrecorded, []budget.Span{budget.Day}) || s3.Day.Period != "2026-04-01" || !s3.Day.Spent.IsZero() || s3.PrevMonth.Spent.Tokens != 70 || s3.Month.Period != "2026-04" {
		t.Fatalf("a settlement two days late: %+v, state %+v", st, s3)
	}
	// A month later still, the month count is gone too.
	c.set(time.Date(2026, 6, 2, 0, 0, 0, 0, paris))
	s3 = s3.At(c.now(), paris)
	if s3.Month.Period != "2026-06" || s3.PrevMonth.Period != "" || !s3.Month.Spent.IsZero() {
		t.Fatalf("two months on: %+v", s3)
	}
}

// A dispatcher whose clock is a little behind the others', across a
// reset, counts in the later period the state is in: a scope's time
// never goes back.
func TestClockBehindCountsInTheLaterPeriod(t *testing.T) {
	c := &clock{time.Date(2026, 12, 5, 0, 0, 1, 0, time.UTC)}
	var s budget.State
	lim := budget.Limits{Day: tokens(100)}
	reserve(t, &s, c, time.UTC, lim, tokens(100), false)
	c.set(time.Date(2026, 12, 4, 23, 59, 59, 0, time.UTC))
	_, r := reserve(t, &s, c, time.UTC, lim, tokens(1), true)
	if s.Day.Period != "2026-12-05" || r.Period.ID() != "2026-12-05" || !r.ResetsAt().Equal(time.Date(2026, 12, 6, 0, 0, 0, 0, time.UTC)) {
		t.Fatalf("day %+v, refusal %+v", s.Day, r)
	}
}

// Soft thresholds are reported once each per period, when what is
// spent crosses them, several at once if a settlement jumps them; a new
// period reports them again.
func TestThresholdsCrossedOnce(t *testing.T) {
	c := &clock{time.Date(2026, 12, 4, 10, 0, 0, 0, time.UTC)}
	var s budget.State
	lim := budget.Limits{Day: tokens(1000), Month: budget.Amount{Micros: 10_000}}
	warn := []float64{0.5, 0.8, 0.95}
	spend := func(n int64, m int64) budget.Settled {
		t.Helper()
		r, _ := reserve(t, &s, c, time.UTC, budget.Limits{}, tokens(n), false)
		var st budget.Settled
		s, st = s.Settle(c.now(), time.UTC, r, &budget.Amount{Tokens: n, Micros: m}, lim, warn)
		return st
	}
	crossed := func(st budget.Settled) (out []float64) {
		for _, x := range st.Crossed {
			out = append(out, x.Threshold)
		}
		return out
	}
	if st := spend(499, 0); len(st.Crossed) != 0 {
		t.Fatalf("499 of 1000: %+v", st.Crossed)
	}
	st := spend(1, 0)
	if got := crossed(st); !slices.Equal(got, []float64{0.5}) || st.Crossed[0].Span != budget.Day || st.Crossed[0].Period != "2026-12-04" || st.Crossed[0].Fraction != 0.5 || st.Crossed[0].Spent.Tokens != 500 {
		t.Fatalf("500 of 1000: %+v", st.Crossed)
	}
	if st := spend(100, 0); len(st.Crossed) != 0 {
		t.Fatalf("600 of 1000, reported again: %+v", st.Crossed)
	}
	if got := crossed(spend(400, 0)); !slices.Equal(got, []float64{0.8, 0.95}) {
		t.Fatalf("1000 of 1000: %v", got)
	}
	// The month's money budget crosses on its own.
	st = spend(0, 9_500)
	if got := crossed(st); !slices.Equal(got, []float64{0.5, 0.8, 0.95}) || st.Crossed[0].Span != budget.Month {
		t.Fatalf("money: %+v", st.Crossed)
	}
	c.advance(24 * time.Hour)
	if got := crossed(spend(800, 0)); !slices.Equal(got, []float64{0.5, 0.8}) {
		t.Fatalf("the next day: %v", got)
	}
}

// A worst case below zero reserves nothing; an actual below zero
// charges nothing.
func TestNegativeAmountsCountAsZero(t *testing.T) {
	c := &clock{time.Date(2026, 12, 4, 10, 0, 0, 0, time.UTC)}
	var s budget.State
	r, _ := reserve(t, &s, c, time.UTC, budget.Limits{Day: tokens(10)}, tokens(-5), false)
	if !r.Amount.IsZero() || !s.Day.Reserved.IsZero() {
		t.Fatalf("reserved %+v", s.Day)
	}
	s, _ = s.Settle(c.now(), time.UTC, r, &budget.Amount{Tokens: -3, Micros: -1}, budget.Limits{}, nil)
	if !s.Day.Spent.IsZero() {
		t.Fatalf("spent %+v", s.Day)
	}
}

// A reservation that expires unsettled (its dispatcher died) is charged
// at its worst case at the start of the hour after its until, in every
// period it was counted in, and shown as expired; a settlement that
// comes after all puts the real spend in its place, and a release takes
// it back. One held without an until waits for its settlement.
func TestReservationsExpireUnsettled(t *testing.T) {
	c := &clock{time.Date(2026, 12, 4, 10, 10, 0, 0, time.UTC)}
	var s budget.State
	lim := budget.Limits{Day: tokens(1000)}
	reserveUntil := func(n int64, until time.Time) budget.Reservation {
		t.Helper()
		next, r, err := s.ReserveUntil(c.now(), time.UTC, lim, tokens(n), until)
		if err != nil {
			t.Fatal(err)
		}
		s = next
		return r
	}
	a := reserveUntil(300, c.now().Add(20*time.Minute)) // expires at 11:00
	b := reserveUntil(200, c.now().Add(30*time.Minute)) // 11:00 too
	d := reserveUntil(100, c.now().Add(-time.Hour))     // past already: 11:00 as well
	e := reserveUntil(50, c.now().Add(2*time.Hour))     // 13:00
	forever := reserveUntil(10, time.Time{})
	c.set(time.Date(2026, 12, 4, 10, 59, 59, 0, time.UTC))
	if s = s.At(c.now(), time.UTC); s.Day.Reserved.Tokens != 660 || !s.Day.Expired.IsZero() {
		t.Fatalf("before 11:00: %+v", s.Day)
	}
	c.set(time.Date(2026, 12, 4, 11, 0, 0, 0, time.UTC))
	if s = s.At(c.now(), time.UTC); s.Day.Reserved.Tokens != 60 || s.Day.Spent.Tokens != 600 || s.Day.Expired.Tokens != 600 || s.Month.Expired.Tokens != 600 || len(s.Day.Expiring) != 1 {
		t.Fatalf("at 11:00: %+v", s.Day)
	}
	// A reservation made now for 11:00 goes to 12:00: it is not one of
	// those that expired.
	f := reserveUntil(5, c.now())
	// a settles late, at 100: its 300 become 100.
	s, st := s.Settle(c.now(), time.UTC, a, &budget.Amount{Tokens: 100}, lim, nil)
	if s.Day.Spent.Tokens != 400 || s.Day.Expired.Tokens != 300 || s.Day.Reserved.Tokens != 65 || !st.Over.IsZero() {
		t.Fatalf("a settled late: %+v, %+v", s.Day, st)
	}
	// b settles late above its worst case: all of it counts, the excess too.
	s, st = s.Settle(c.now(), time.UTC, b, &budget.Amount{Tokens: 260}, lim, nil)
	if s.Day.Spent.Tokens != 460 || s.Day.Over.Tokens != 60 || st.Over.Tokens != 60 || s.Day.Expired.Tokens != 100 {
		t.Fatalf("b settled late: %+v, %+v", s.Day, st)
	}
	// d is released late: it spent nothing.
	s, _ = s.Release(c.now(), time.UTC, d)
	if s.Day.Spent.Tokens != 360 || !s.Day.Expired.IsZero() {
		t.Fatalf("d released late: %+v", s.Day)
	}
	// e and f settle in time; forever has not expired.
	s, _ = s.Settle(c.now(), time.UTC, e, &budget.Amount{Tokens: 40}, lim, nil)
	s, _ = s.Settle(c.now(), time.UTC, f, &budget.Amount{Tokens: 5}, lim, nil)
	c.set(time.Date(2026, 12, 4, 23, 0, 0, 0, time.UTC))
	if s = s.At(c.now(), time.UTC); s.Day.Reserved.Tokens != 10 || s.Day.Spent.Tokens != 405 || !s.Day.Expired.IsZero() || len(s.Day.Expiring) != 0 {
		t.Fatalf("in the evening: %+v", s.Day)
	}
	s, _ = s.Settle(c.now(), time.UTC, forever, &budget.Amount{Tokens: 10}, lim, nil)
	if !s.Day.Reserved.IsZero() || s.Day.Spent.Tokens != 415 {
		t.Fatalf("at the end: %+v", s.Day)
	}
}

// State's methods leave the value they are called on as it was, lists
// included: the KV's cache hands its values to them, and a refusal or a
// lost compare-and-swap must leave the cache unchanged.
func TestStateMethodsChangeNoSharedMemory(t *testing.T) {
	now := time.Date(2026, 12, 4, 10, 0, 0, 0, time.UTC)
	var s budget.State
	s, a, _ := s.ReserveUntil(now, time.UTC, budget.Limits{}, tokens(10), now.Add(time.Hour))
	s, _, _ = s.ReserveUntil(now, time.UTC, budget.Limits{}, tokens(20), now.Add(3*time.Hour))
	before, _ := json.Marshal(s)
	later := now.Add(90 * time.Minute)
	s.At(later, time.UTC)
	s.ReserveUntil(now, time.UTC, budget.Limits{}, tokens(5), now.Add(time.Hour))
	s.Settle(now, time.UTC, a, nil, budget.Limits{}, nil)
	s.Release(later, time.UTC, a)
	if after, _ := json.Marshal(s); string(after) != string(before) {
		t.Fatalf("changed:\n%s\n%s", before, after)
	}
}
