package budget

import (
	"errors"
	"fmt"
	"slices"
	"time"
)

// Amount is a quantity of tokens and of money.
type Amount struct {
	Tokens int64 `json:"tokens,omitempty"`
	// Micros is money in millionths of the currency (config.CostMicros).
	Micros int64 `json:"micros,omitempty"`
}

// Add returns a+b.
func (a Amount) Add(b Amount) Amount { return Amount{a.Tokens + b.Tokens, a.Micros + b.Micros} }

// Sub returns a-b.
func (a Amount) Sub(b Amount) Amount { return Amount{a.Tokens - b.Tokens, a.Micros - b.Micros} }

// IsZero reports whether a is nothing.
func (a Amount) IsZero() bool { return a == Amount{} }

// excess returns, per component, how much a is above b (0 where it is
// not).
func (a Amount) excess(b Amount) Amount {
	return Amount{max(a.Tokens-b.Tokens, 0), max(a.Micros-b.Micros, 0)}
}

// floor returns a with no component below 0.
func (a Amount) floor() Amount { return Amount{max(a.Tokens, 0), max(a.Micros, 0)} }

// Limits are one scope's budgets: per day and per month. A component at
// 0 is no bound (config.Allowance.TokenLimit and CostLimit).
type Limits struct {
	Day   Amount `json:"day"`
	Month Amount `json:"month"`
}

// of returns the limit of span.
func (l Limits) of(s Span) Amount {
	if s == Month {
		return l.Month
	}
	return l.Day
}

// Counter is what one scope spent and holds reserved in one period.
type Counter struct {
	// Period is the ID of the period counted (Period.ID); "" before the
	// first operation.
	Period string `json:"period,omitempty"`
	// Spent is what settled calls spent, their excess included.
	Spent Amount `json:"spent,omitzero"`
	// Reserved is the worst case of the calls admitted and not settled.
	Reserved Amount `json:"reserved,omitzero"`
	// Over is what settled calls spent beyond their reservations: part
	// of Spent, counted apart because it is the one way a budget can be
	// overspent (a provider that charged more than the worst case).
	Over Amount `json:"over,omitzero"`
	// Warned is the highest soft threshold that Spent has crossed and
	// that a Crossing reported; 0 for none.
	Warned float64 `json:"warned,omitempty"`
	// Expiring is the part of Reserved that expires unsettled, by the
	// hour it expires at (ReserveUntil), soonest first.
	Expiring []Expiring `json:"expiring,omitempty"`
	// Expired is what reservations that expired unsettled were charged,
	// at their worst case (their call's settlement never came, as when
	// its dispatcher died): part of Spent, until a late settlement puts
	// the real spend in its place.
	Expired Amount `json:"expired,omitzero"`
	// Admitted counts the reservations of the period. (Refusals write
	// nothing, so that a flood of them costs no KV writes: metrics count
	// them.)
	Admitted int64 `json:"admitted,omitempty"`
}

// Expiring is what a counter holds reserved until an hour: Hour is in
// hours since the Unix epoch, the first hour at whose start it expires.
type Expiring struct {
	Hour   int64  `json:"hour"`
	Amount Amount `json:"amount"`
}

// expiryHour is the hour (since the Unix epoch) at whose start a
// reservation held until until expires: the first at or after it.
func expiryHour(until time.Time) int64 {
	const h = int64(time.Hour / time.Second)
	u := until.Unix()
	return (u + h - 1) / h
}

// hold adds a to the reservations expiring at hour.
func (c *Counter) hold(hour int64, a Amount) {
	for i := range c.Expiring {
		if c.Expiring[i].Hour == hour {
			c.Expiring[i].Amount = c.Expiring[i].Amount.Add(a)
			return
		}
	}
	c.Expiring = append(c.Expiring, Expiring{Hour: hour, Amount: a})
	slices.SortFunc(c.Expiring, func(x, y Expiring) int { return int(x.Hour - y.Hour) })
}

// unhold takes a back from the reservations expiring at hour, and
// reports whether they were still held (not expired).
func (c *Counter) unhold(hour int64, a Amount) bool {
	for i := range c.Expiring {
		if c.Expiring[i].Hour == hour {
			left := c.Expiring[i].Amount.Sub(a).floor()
			if left.IsZero() {
				c.Expiring = slices.Delete(c.Expiring, i, i+1)
			} else {
				c.Expiring[i].Amount = left
			}
			return true
		}
	}
	return false
}

// expire charges the reservations that expired by now at their worst
// case.
func (c *Counter) expire(now time.Time) {
	hour := now.Unix() / int64(time.Hour/time.Second)
	n := 0
	for _, e := range c.Expiring {
		if e.Hour > hour {
			break
		}
		c.Reserved = c.Reserved.Sub(e.Amount).floor()
		c.Spent = c.Spent.Add(e.Amount)
		c.Expired = c.Expired.Add(e.Amount)
		n++
	}
	if n > 0 {
		c.Expiring = slices.Delete(c.Expiring, 0, n)
		if len(c.Expiring) == 0 {
			c.Expiring = nil
		}
	}
}

// Committed is what the period holds: spent and reserved.
func (c Counter) Committed() Amount { return c.Spent.Add(c.Reserved) }

// Fraction is the largest part of a bound of limit that Spent takes (1
// is the whole budget); 0 when limit bounds nothing.
func (c Counter) Fraction(limit Amount) float64 {
	f := 0.0
	if limit.Tokens > 0 {
		f = max(f, float64(c.Spent.Tokens)/float64(limit.Tokens))
	}
	if limit.Micros > 0 {
		f = max(f, float64(c.Spent.Micros)/float64(limit.Micros))
	}
	return f
}

// State is one scope's count: the current day and month, and the ones
// before them (for calls reserved before a reset and settled after it,
// and to show yesterday's and last month's totals). The zero State is a
// scope that has spent nothing.
type State struct {
	Day       Counter `json:"day,omitzero"`
	Month     Counter `json:"month,omitzero"`
	PrevDay   Counter `json:"prev_day,omitzero"`
	PrevMonth Counter `json:"prev_month,omitzero"`
}

// counters returns the current and previous counters of span.
func (s *State) counters(span Span) (cur, prev *Counter) {
	if span == Month {
		return &s.Month, &s.PrevMonth
	}
	return &s.Day, &s.PrevDay
}

// spans are the spans a state counts, in the order it checks them.
var spans = [...]Span{Day, Month}

// At returns the state rolled over to the periods that contain now in
// loc: a counter of an earlier period becomes the previous one (or is
// dropped, when it is older still), and the period starts at zero; and
// reservations whose hour of expiry has come are charged (Expired).
// A counter of a later period than now's (written by a dispatcher whose
// clock is ahead, across a reset) stays current: time never goes back
// for a scope, and now counts in that later period.
func (s State) At(now time.Time, loc *time.Location) State {
	for _, span := range spans {
		cur, prev := s.counters(span)
		p := PeriodOf(span, now, loc)
		id := p.ID()
		switch {
		case cur.Period == id:
		case cur.Period > id:
		case cur.Period != "" && cur.Period == p.Previous().ID():
			*prev = *cur
			*cur = Counter{Period: id}
		default:
			*prev = Counter{}
			*cur = Counter{Period: id}
		}
		// Expiring lists are the counters' own: copy before changing,
		// as s shares them with the value it was passed as.
		for _, c := range []*Counter{cur, prev} {
			c.Expiring = slices.Clone(c.Expiring)
			c.expire(now)
		}
	}
	return s
}

// period returns the current period of span in a rolled-over state.
func (s *State) period(span Span, now time.Time, loc *time.Location) Period {
	cur, _ := s.counters(span)
	p := PeriodOf(span, now, loc)
	if cur.Period > p.ID() {
		if q, err := ParsePeriod(span, cur.Period, loc); err == nil {
			return q
		}
	}
	return p
}

// Reservation is what Reserve charged a scope: the worst case, and the
// periods it is counted in. Settle and Release take it back.
type Reservation struct {
	Amount Amount `json:"amount"`
	Day    string `json:"day"`
	Month  string `json:"month"`
	// Until is the hour it expires at (Expiring.Hour); 0 for one held
	// until settled or released, or its periods end.
	Until int64 `json:"until,omitempty"`
}

// of returns the period ID of span.
func (r Reservation) of(s Span) string {
	if s == Month {
		return r.Month
	}
	return r.Day
}

// ErrExhausted is matched by every *Refusal: a budget cannot hold a
// call.
var ErrExhausted = errors.New("budget exhausted")

// Refusal says why a budget cannot hold a call: the bound (a scope, a
// span, tokens or money), what the period has spent and holds reserved,
// the limit, and when it resets. It matches ErrExhausted.
type Refusal struct {
	// Scope is the scope whose budget refused (set by Ledger; "" from
	// State.Reserve).
	Scope Scope
	// Period is the day or month whose budget cannot hold the call.
	Period Period
	// Money is true when the money budget refused, false for tokens.
	Money bool
	// Limit, Spent and Reserved are the period's, and Need the call's
	// worst case: Spent + Reserved + Need is above Limit in tokens
	// (Money false) or in money (Money true).
	Limit, Spent, Reserved, Need Amount
}

// ResetsAt is when the budget that refused starts again from zero.
func (r *Refusal) ResetsAt() time.Time { return r.Period.End }

func (r *Refusal) Error() string {
	what, limit, spent, reserved, need := "tokens", r.Limit.Tokens, r.Spent.Tokens, r.Reserved.Tokens, r.Need.Tokens
	unit := func(n int64) string { return fmt.Sprint(n) }
	if r.Money {
		what, limit, spent, reserved, need = "cost", r.Limit.Micros, r.Spent.Micros, r.Reserved.Micros, r.Need.Micros
		unit = func(n int64) string { return fmt.Sprintf("%.6f", float64(n)/1e6) }
	}
	scope := ""
	if r.Scope != (Scope{}) {
		scope = r.Scope.String() + "'s "
	}
	return fmt.Sprintf("%v: %s%s budget for %s %s is %s, of which %s is spent and %s reserved, and the call needs %s; it resets at %s",
		ErrExhausted, scope, what, r.Period.Span, r.Period.ID(), unit(limit), unit(spent), unit(reserved), unit(need), r.Period.End.Format(time.RFC3339))
}

// Is makes errors.Is(err, ErrExhausted) true.
func (r *Refusal) Is(target error) bool { return target == ErrExhausted }

// Reserve admits a call whose worst case is need, at now in loc, if
// every bound of limits holds it: in each of the day and the month,
// spent + reserved + need is at most the limit, in tokens and in money
// (a 0 limit bounds nothing). It returns the state with need reserved
// in both periods, and the Reservation to settle or release; or the
// state (rolled over) and a *Refusal for the first
// bound that cannot hold it (the day's before the month's, tokens
// before money). need is held to 0 and above.
//
// The reservation is held until it is settled or released, or its
// periods end; ReserveUntil bounds it.
func (s State) Reserve(now time.Time, loc *time.Location, limits Limits, need Amount) (State, Reservation, error) {
	return s.ReserveUntil(now, loc, limits, need, time.Time{})
}

// ReserveUntil is Reserve for a reservation that expires, unless it is
// settled or released before, at the first hour that starts at or after
// until (the call's deadline and some margin, say): it is then charged
// at its worst case, as a call without usage is (Counter.Expired), so
// that a call whose settlement never comes (its dispatcher died) holds
// its part of the budget for hours, not for the rest of the month. A
// zero until never expires.
func (s State) ReserveUntil(now time.Time, loc *time.Location, limits Limits, need Amount, until time.Time) (State, Reservation, error) {
	s = s.At(now, loc)
	need = need.floor()
	for _, span := range spans {
		cur, _ := s.counters(span)
		lim := limits.of(span)
		after := cur.Committed().Add(need)
		tokens := lim.Tokens > 0 && after.Tokens > lim.Tokens
		money := lim.Micros > 0 && after.Micros > lim.Micros
		if tokens || money {
			r := &Refusal{Period: s.period(span, now, loc), Money: !tokens, Limit: lim, Spent: cur.Spent, Reserved: cur.Reserved, Need: need}
			return s, Reservation{}, r
		}
	}
	var hour int64
	if !until.IsZero() && !need.IsZero() {
		// An hour still to come, even for an until already past: an
		// hour that has come never gets a reservation again, so that
		// one settled after it expired is told from those held.
		hour = max(expiryHour(until), now.Unix()/int64(time.Hour/time.Second)+1)
	}
	for _, span := range spans {
		cur, _ := s.counters(span)
		cur.Reserved = cur.Reserved.Add(need)
		cur.Admitted++
		if hour != 0 {
			cur.hold(hour, need)
		}
	}
	return s, Reservation{Amount: need, Day: s.Day.Period, Month: s.Month.Period, Until: hour}, nil
}

// Crossing reports a soft threshold that a scope's spend crossed.
type Crossing struct {
	// Scope is set by Ledger; "" from State.Settle.
	Scope Scope
	Span  Span
	// Period is the ID of the period.
	Period string
	// Threshold is the fraction crossed (one of WarnAt), Fraction the
	// part of the budget now spent.
	Threshold, Fraction float64
	Spent, Limit        Amount
}

// Settled is what a settlement did to a scope.
type Settled struct {
	// Charged is what was added to the spend: the actual amount, or the
	// reservation when there was none.
	Charged Amount
	// Over is the part of Charged above the reservation.
	Over Amount
	// Estimated is true when no actual amount was known: the
	// reservation was charged.
	Estimated bool
	// Unrecorded lists the spans whose period the reservation was
	// counted in is gone (more than one period ago): Charged was not
	// added there, and is shown here instead.
	Unrecorded []Span
	// Crossed are the soft thresholds the spend crossed, each reported
	// once per period.
	Crossed []Crossing
}

// Settle takes back res, reserved at an earlier Reserve, and adds what
// the call spent (actual; nil when the provider reported no usage, which
// charges the reservation) to the periods res was counted in, if they
// are the current or the previous one at now. A component of actual
// above the reservation is added in full and counted in Over too.
// Thresholds of warnAt (ascending fractions) that the spend crosses
// against limits are reported once per period.
func (s State) Settle(now time.Time, loc *time.Location, res Reservation, actual *Amount, limits Limits, warnAt []float64) (State, Settled) {
	s = s.At(now, loc)
	var out Settled
	charge := res.Amount
	if actual != nil {
		charge = actual.floor()
	} else {
		out.Estimated = true
	}
	out.Charged = charge
	out.Over = charge.excess(res.Amount)
	for _, span := range spans {
		c := s.find(span, res.of(span))
		if c == nil {
			out.Unrecorded = append(out.Unrecorded, span)
			continue
		}
		if c.release(res) {
			c.Spent = c.Spent.Add(charge)
		} else {
			// It expired, charged at its worst case: the real spend
			// takes that charge's place.
			c.Spent = c.Spent.Sub(res.Amount).Add(charge).floor()
			c.Expired = c.Expired.Sub(res.Amount).floor()
		}
		c.Over = c.Over.Add(out.Over)
		lim := limits.of(span)
		f := c.Fraction(lim)
		for _, w := range warnAt {
			if w > c.Warned && w <= f {
				out.Crossed = append(out.Crossed, Crossing{Span: span, Period: c.Period, Threshold: w, Fraction: f, Spent: c.Spent, Limit: lim})
			}
		}
		for _, w := range warnAt {
			if w <= f {
				c.Warned = max(c.Warned, w)
			}
		}
	}
	return s, out
}

// Release takes back res for a call that spent nothing (it was never
// sent, or another scope refused it). It reports the spans whose
// period is gone, where there was nothing left to release.
func (s State) Release(now time.Time, loc *time.Location, res Reservation) (State, []Span) {
	s = s.At(now, loc)
	var gone []Span
	for _, span := range spans {
		c := s.find(span, res.of(span))
		if c == nil {
			gone = append(gone, span)
			continue
		}
		if !c.release(res) {
			// It expired, charged at its worst case: take that back.
			c.Spent = c.Spent.Sub(res.Amount).floor()
			c.Expired = c.Expired.Sub(res.Amount).floor()
		}
	}
	return s, gone
}

// release takes res back from what c holds reserved, and reports
// whether it was still held: false when it had expired.
func (c *Counter) release(res Reservation) bool {
	if res.Until != 0 && !c.unhold(res.Until, res.Amount) {
		return false
	}
	c.Reserved = c.Reserved.Sub(res.Amount).floor()
	return true
}

// find returns the counter of span counting period id: the current or
// the previous one; nil when neither does.
func (s *State) find(span Span, id string) *Counter {
	cur, prev := s.counters(span)
	switch {
	case id == "":
		return nil
	case cur.Period == id:
		return cur
	case prev.Period == id:
		return prev
	}
	return nil
}
