package dispatcher

// Teams' budgets (config.TeamBudget, counted by package budget): a call
// of a team with a budget reserves its worst case when it is read, before
// it waits, so that what waits is counted too and concurrent calls on any
// number of dispatchers never overspend; its attempt settles the real
// cost when the executor reports it; a call answered without being sent
// gives its reservation back. The reservation is a compare-and-swap in
// SLUICE_BUDGET made on the intake goroutine, never on the scheduler's.

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"time"

	"github.com/sluicehq/sluice/messages"
	"github.com/sluicehq/sluice/services/budget"
	"github.com/sluicehq/sluice/services/config"
	"github.com/sluicehq/sluice/services/tokens"
)

// budgetHoldMargin is how long after a call's deadline its reservation
// may stay unsettled before the ledger charges it at its worst case (see
// budget.Ledger.ReserveUntil): what a dispatcher that died while holding
// it never gave back. Later than any report of its attempt can come.
const budgetHoldMargin = 10 * time.Minute

// budgetTimeout bounds one reservation, settlement or release.
const budgetTimeout = 5 * time.Second

// errBudgetUnknown: the ledger could not be read or written; the call is
// handed back to JetStream and read again later, rather than answered
// for a failure that is not the client's.
var errBudgetUnknown = errors.New("budget count unavailable")

// holdBudget reserves t's worst case against its team's budgets. When a
// budget cannot hold it, the budget's at_limit decides: refuse (the
// error to answer with), or move the call to the batch tier or to
// another pool (t is changed, est with it), counting it in the budget
// that refused without that budget's limits. It returns nil when the
// team has no budget. Errors: a budget_exhausted or, after a move, a
// validation error to answer with; errBudgetUnknown.
func (d *Dispatcher) holdBudget(cfg *config.Config, t *messages.Ticket, est *tokens.Estimate) (*budget.Hold, *messages.Error, error) {
	if d.ledger == nil {
		return nil, nil, nil
	}
	var unbounded []budget.Scope
	// Validation refuses fallbacks that loop, so a call moves at most
	// once per pool and once to batch.
	for moves := 0; moves <= len(cfg.Pools)+1; moves++ {
		pool := t.Call.Model
		charges := budget.Charges(cfg, t.Team, pool)
		if len(charges) == 0 {
			return nil, nil, nil
		}
		for i, c := range charges {
			if slices.Contains(unbounded, c.Scope) {
				charges[i] = c.Unbounded()
			}
		}
		ctx, cancel := context.WithTimeout(context.Background(), budgetTimeout)
		hold, err := d.ledger.ReserveUntil(ctx, charges, budget.Need(cfg, pool, est.Total()), t.Deadline.Add(budgetHoldMargin))
		cancel()
		if err == nil {
			return &hold, nil, nil
		}
		var r *budget.Refusal
		if !errors.As(err, &r) {
			d.log.Warn("budget: reserve", "team", t.Team, "pool", pool, "err", err)
			return nil, nil, fmt.Errorf("%w: %v", errBudgetUnknown, err)
		}
		tb := cfg.Teams[t.Team].Budget
		fb := tb.Fallback()
		if r.Scope.Pool != "" {
			fb = tb.PoolFallback(r.Scope.Pool)
		}
		unbounded = append(unbounded, r.Scope)
		switch fb.Kind {
		case config.FallbackBatch:
			d.countBudgetRefusal(cfg, r, "batch")
			t.Tier = messages.TierBatch
		case config.FallbackPool:
			d.countBudgetRefusal(cfg, r, "pool")
			t.Call.Model = fb.Pool
			moved, bad := d.check(cfg, t)
			if bad != nil {
				bad.Message = fmt.Sprintf("moved to pool %s, as its team's budget at_limit says (%s): %s", fb.Pool, r.Error(), bad.Message)
				return nil, bad, nil
			}
			*est = moved
		default:
			d.countBudgetRefusal(cfg, r, "refused")
			return nil, exhausted(cfg, t.Team, r, d.cfg.Clock()), nil
		}
	}
	return nil, messages.Errorf(messages.CodeInternal, "the team's budgets moved the call from pool to pool without end"), nil
}

// exhausted is the answer to a call that r refused.
func exhausted(cfg *config.Config, team string, r *budget.Refusal, now time.Time) *messages.Error {
	b := &messages.BudgetExhausted{
		Team: team, Pool: r.Scope.Pool, Period: r.Period.Span.String(), PeriodID: r.Period.ID(), Unit: "tokens",
		Limit: float64(r.Limit.Tokens), Spent: float64(r.Spent.Tokens), Reserved: float64(r.Reserved.Tokens), Need: float64(r.Need.Tokens),
		ResetsAt: r.ResetsAt(),
	}
	if r.Money {
		b.Unit = cfg.Currency()
		b.Limit, b.Spent, b.Reserved, b.Need = money(r.Limit), money(r.Spent), money(r.Reserved), money(r.Need)
	}
	whose := "team " + team + "'s"
	field := "teams." + team + ".budget." + b.Period
	if b.Pool != "" {
		whose += " budget in pool " + b.Pool + ","
		field = "teams." + team + ".budget.pools." + b.Pool + "." + b.Period
	}
	amount := func(v float64) string {
		if r.Money {
			return strconv.FormatFloat(v, 'f', -1, 64) + " " + b.Unit
		}
		return strconv.FormatFloat(v, 'f', 0, 64) + " tokens"
	}
	return &messages.Error{
		Code: messages.CodeBudgetExhausted,
		Message: fmt.Sprintf("%s %s budget (%s) for %s is %s: %s spent and %s reserved by calls under way leave less than this call's worst case, %s; it resets at %s",
			whose, b.Period, field, b.PeriodID, amount(b.Limit), amount(b.Spent), amount(b.Reserved), amount(b.Need), b.ResetsAt.Format(time.RFC3339)),
		RetryAfterMS: max(b.ResetsAt.Sub(now).Milliseconds(), 0),
		Budget:       b,
	}
}

func money(a budget.Amount) float64 { return float64(a.Micros) / 1e6 }

// countBudgetRefusal counts a call r refused, and what became of it.
func (d *Dispatcher) countBudgetRefusal(cfg *config.Config, r *budget.Refusal, action string) {
	d.metrics.BudgetRefused.WithLabelValues(cfg.TeamLabel(r.Scope.Team), r.Scope.Pool, r.Period.Span.String(), action).Inc()
}

// releaseBudget gives back a hold whose call was not sent, off the
// caller's goroutine.
func (d *Dispatcher) releaseBudget(h *budget.Hold) {
	if h == nil || d.ledger == nil {
		return
	}
	d.inflight.Add(1)
	go func() {
		defer d.inflight.Done()
		ctx, cancel := context.WithTimeout(context.Background(), budgetTimeout)
		defer cancel()
		if err := d.ledger.Release(ctx, *h); err != nil {
			// Held until its expiry, then charged at its worst case.
			d.log.Warn("budget: release", "err", err)
		}
	}()
}

// settleBudget charges what an attempt spent to its hold, off the
// caller's goroutine: the cost its executor reported; its reservation
// when the provider answered (or may have: a timeout, a transport
// failure, a cut) without a count; nothing when the provider refused it
// or never saw it.
func (d *Dispatcher) settleBudget(h *budget.Hold, done messages.AttemptDone) {
	if h == nil || d.ledger == nil {
		return
	}
	var actual *budget.Amount
	switch {
	case done.Cost != nil:
		used := done.UsedTokens
		if used < 0 || done.Cost.Estimated {
			used = done.ReservedTokens
		}
		actual = budget.Spent(used, done.Cost.Total, true)
	case done.Outcome == messages.OutcomeNotSent, done.Outcome == messages.OutcomeRateLimited, done.Outcome == messages.OutcomeQuota,
		done.Outcome == messages.OutcomeUnavailable, done.Outcome == messages.OutcomeRejected:
		// Refused, or never sent: providers charge nothing. (A transport
		// failure or a timeout may have reached the provider, and may
		// be billed: charged the reservation, below.)
		d.releaseBudget(h)
		return
	case done.UsedTokens >= 0 && d.unpriced(done.Deployment):
		actual = budget.Spent(done.UsedTokens, 0, true)
	}
	d.inflight.Add(1)
	go func() {
		defer d.inflight.Done()
		ctx, cancel := context.WithTimeout(context.Background(), budgetTimeout)
		defer cancel()
		s, err := d.ledger.Settle(ctx, *h, actual)
		if err != nil {
			d.log.Warn("budget: settle", "call", done.CallID, "err", err)
		}
		d.noteSettled(*h, s)
	}()
}

// unpriced reports whether deployment id has no prices: its calls cost
// nothing in money, and their tokens are what the provider counted.
func (d *Dispatcher) unpriced(id string) bool {
	dep, ok := d.cfg.Shared.Load().Deployment(id)
	if !ok {
		return false
	}
	_, priced := dep.Rates()
	return !priced
}

// noteSettled sets the budgets' gauges from what a settlement left, and
// logs and counts the soft thresholds it crossed.
func (d *Dispatcher) noteSettled(h budget.Hold, s budget.Settlement) {
	cfg := d.cfg.Shared.Load()
	ctx, cancel := context.WithTimeout(context.Background(), budgetTimeout)
	defer cancel()
	for _, held := range h.Scopes {
		st, err := d.ledger.State(ctx, held.Scope)
		if err != nil {
			continue
		}
		team := cfg.TeamLabel(held.Scope.Team)
		for _, p := range []struct {
			span  string
			c     budget.Counter
			limit budget.Amount
		}{{"day", st.Day, held.Limits.Day}, {"month", st.Month, held.Limits.Month}} {
			if p.limit.Tokens > 0 {
				d.metrics.BudgetUsed.WithLabelValues(team, held.Scope.Pool, p.span, "tokens").Set(float64(p.c.Spent.Tokens) / float64(p.limit.Tokens))
			}
			if p.limit.Micros > 0 {
				d.metrics.BudgetUsed.WithLabelValues(team, held.Scope.Pool, p.span, "cost").Set(float64(p.c.Spent.Micros) / float64(p.limit.Micros))
			}
		}
	}
	for _, c := range s.Crossed() {
		threshold := strconv.FormatFloat(c.Threshold, 'f', -1, 64)
		d.metrics.BudgetThresholds.WithLabelValues(cfg.TeamLabel(c.Scope.Team), c.Scope.Pool, c.Span.String(), threshold).Inc()
		d.log.Warn("budget threshold crossed", "budget", c.Scope.String(), "period", c.Period, "threshold", threshold, "used", c.Fraction)
	}
}
