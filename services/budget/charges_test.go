package budget_test

import (
	"errors"
	"testing"
	"time"

	"github.com/sluicehq/sluice/services/budget"
	"github.com/sluicehq/sluice/services/config"
)

const fallbacks = `
budgets: {time_zone: Europe/Paris, warn_at: [0.5, 0.9]}
pools:
  big:
    prices: {input: 5, output: 10}
    deployments:
      - {id: b1, provider: openai, base_url: "http://127.0.0.1:1/v1", region: r1, key: K1, rpm: 60, tpm: 100000}
  small:
    prices: {input: 0.5, output: 1}
    deployments:
      - {id: s1, provider: openai, base_url: "http://127.0.0.1:1/v1", region: r1, key: K2, rpm: 60, tpm: 100000}
teams:
  search:
    budget:
      day: {cost: 1}
      at_limit: batch
      pools:
        big: {day: {tokens: 2000}, at_limit: "pool:small"}
  free: {}
`

// A sequence of scope counts, kept in memory, to play admission's part
// as the wiring will.
type counts map[budget.Scope]budget.State

// reserveAll reserves need in every charge, all or nothing, as Ledger
// does in the KV.
func (cs counts) reserveAll(now time.Time, loc *time.Location, charges []budget.Charge, need budget.Amount) error {
	next := counts{}
	for _, c := range charges {
		s, _, err := cs[c.Scope].Reserve(now, loc, c.Limits, need)
		if err != nil {
			var r *budget.Refusal
			if errors.As(err, &r) {
				r.Scope = c.Scope
			}
			return err
		}
		next[c.Scope] = s
	}
	for k, v := range next {
		cs[k] = v
	}
	return nil
}

// The configuration gives each call its charges (the team's budget,
// then the team's in the pool), the worst case at the pool's highest
// price, and what happens at the limit: in big, the pool's budget moves
// calls to small; when the team's own budget is spent, calls move to
// batch, no longer bounded by it but still counted in it.
func TestChargesAndFallbacksFromTheConfiguration(t *testing.T) {
	cfg, err := config.Parse([]byte(fallbacks))
	if err != nil {
		t.Fatal(err)
	}
	loc := cfg.BudgetLocation()
	if budget.Charges(cfg, "free", "big") != nil || budget.Charges(cfg, "nobody", "big") != nil {
		t.Fatal("charges for a team without a budget")
	}
	big := budget.Charges(cfg, "search", "big")
	if len(big) != 2 || big[0].Scope != (budget.Scope{Team: "search"}) || big[0].Limits.Day.Micros != 1_000_000 ||
		big[1].Scope != (budget.Scope{Team: "search", Pool: "big"}) || big[1].Limits.Day.Tokens != 2000 || len(big[1].WarnAt) != 2 {
		t.Fatalf("charges in big: %+v", big)
	}
	small := budget.Charges(cfg, "search", "small")
	if len(small) != 1 || small[0].Scope.Pool != "" {
		t.Fatalf("charges in small: %+v", small)
	}
	// 1000 tokens in big may cost 1000 at 10 per million: 0.01.
	need := budget.Need(cfg, "big", 1000)
	if need != (budget.Amount{Tokens: 1000, Micros: 10_000}) {
		t.Fatalf("need in big %+v", need)
	}
	now := time.Date(2026, 12, 4, 10, 0, 0, 0, loc)
	cs := counts{}
	for range 2 {
		if err := cs.reserveAll(now, loc, big, need); err != nil {
			t.Fatal(err)
		}
	}
	// The third does not fit big's 2000 tokens: big's fallback is small.
	err = cs.reserveAll(now, loc, big, need)
	var r *budget.Refusal
	if !errors.As(err, &r) || r.Scope != big[1].Scope {
		t.Fatalf("a third call in big: %v", err)
	}
	fb := cfg.Teams["search"].Budget.PoolFallback(r.Scope.Pool)
	if fb.Kind != config.FallbackPool || fb.Pool != "small" {
		t.Fatalf("big's fallback %+v", fb)
	}
	if err := cs.reserveAll(now, loc, budget.Charges(cfg, "search", fb.Pool), budget.Need(cfg, fb.Pool, 1000)); err != nil {
		t.Fatalf("moved to small: %v", err)
	}
	// The team's own budget, 1 a day: a call that may cost 2 does not
	// fit; the team's fallback is batch, which charges it unbounded.
	huge := budget.Need(cfg, "small", 2_000_000)
	err = cs.reserveAll(now, loc, small, huge)
	if !errors.As(err, &r) || r.Scope != small[0].Scope || !r.Money {
		t.Fatalf("a call beyond the team's day: %v", err)
	}
	if fb := cfg.Teams["search"].Budget.Fallback(); fb.Kind != config.FallbackBatch {
		t.Fatalf("the team's fallback %+v", fb)
	}
	if err := cs.reserveAll(now, loc, []budget.Charge{small[0].Unbounded()}, huge); err != nil {
		t.Fatalf("moved to batch: %v", err)
	}
	if got := cs[small[0].Scope].Day.Committed().Micros; got <= small[0].Limits.Day.Micros {
		t.Fatalf("the team's count %d: the batch call counts, beyond the limit", got)
	}
	// What a result says it spent: its tokens and cost, or, with no
	// usage, nothing known (the reservation is charged).
	if s := budget.Spent(1200, 0.0123, true); s == nil || *s != (budget.Amount{Tokens: 1200, Micros: 12_300}) {
		t.Fatalf("spent %+v", s)
	}
	if budget.Spent(0, 0, false) != nil {
		t.Fatal("no usage is not nothing spent")
	}
}
