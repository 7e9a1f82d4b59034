package config

import (
	"errors"
	"strings"
	"testing"
	"time"
)

// budgeted is a configuration with two priced pools, big and small (a
// one-message call without max_tokens reserves 6+256 = 262 tokens in
// each; in big it may cost 262 tokens at 10 per million, in small at 1),
// an unpriced pool free, and team t, which may use big and small at any
// tier, with budget (YAML, indented for t's fields) and top added at the
// top level.
func budgeted(budget, top string) string {
	return `
pools:
  big:
    prices: {input: 5, output: 10}
    deployments:
      - {id: b1, provider: openai, base_url: "http://127.0.0.1:1/v1", region: r1, key: K1, rpm: 60, tpm: 100000}
      - {id: b2, provider: openai, base_url: "http://127.0.0.1:1/v1", region: r1, key: K2, rpm: 60, tpm: 100000, prices: {per_request: 0.01}}
  small:
    prices: {input: 0.5, output: 1}
    deployments:
      - {id: s1, provider: openai, base_url: "http://127.0.0.1:1/v1", region: r1, key: K3, rpm: 60, tpm: 100000}
  free:
    deployments:
      - {id: f1, provider: openai, base_url: "http://127.0.0.1:1/v1", region: r1, key: K4, rpm: 60, tpm: 100000}
teams:
  other: {}
  t:
    pools: [big, small]
    budget:
` + budget + top
}

// A budget as written is what the accessors give, with its defaults:
// UTC, warn at 0.8, refuse at the limit.
func TestBudgetsInEffect(t *testing.T) {
	cfg, err := Parse([]byte(budgeted(`      day: {tokens: 2000000, cost: 50}
      month: {cost: 1000.25}
      pools:
        big: {day: {cost: 20}, at_limit: "pool:small"}
        small: {month: {tokens: 100000}}
`, "")))
	if err != nil {
		t.Fatal(err)
	}
	if cfg.BudgetLocation() != time.UTC || len(cfg.WarnAt()) != 1 || cfg.WarnAt()[0] != 0.8 {
		t.Errorf("defaults: location %v, warn_at %v", cfg.BudgetLocation(), cfg.WarnAt())
	}
	b := cfg.Teams["t"].Budget
	if b.Day.TokenLimit() != 2_000_000 || b.Day.CostLimit() != 50_000_000 || b.Month.TokenLimit() != 0 || b.Month.CostLimit() != 1_000_250_000 {
		t.Errorf("team budget: day %d tokens %d micros, month %d tokens %d micros", b.Day.TokenLimit(), b.Day.CostLimit(), b.Month.TokenLimit(), b.Month.CostLimit())
	}
	if b.Fallback() != (Fallback{Kind: FallbackRefuse}) {
		t.Errorf("the team's fallback %+v, want refuse", b.Fallback())
	}
	if fb := b.PoolFallback("big"); fb != (Fallback{Kind: FallbackPool, Pool: "small"}) {
		t.Errorf("big's fallback %+v", fb)
	}
	if fb := b.PoolFallback("small"); fb != (Fallback{Kind: FallbackRefuse}) {
		t.Errorf("small's fallback %+v, want the team's", fb)
	}
	// The worst case of a call in big: its reservation at the highest
	// price of its priciest deployment, b2, with its per-request price.
	big := cfg.Pools["big"]
	if got := big.DefaultReservation(); got != 262 {
		t.Errorf("default reservation %d, want 262", got)
	}
	if w, ok := big.WorstCost(1000); !ok || CostMicros(w) != 20_000 {
		t.Errorf("worst cost of 1000 tokens in big: %v %v, want 0.02", w, ok)
	}
	if _, ok := cfg.Pools["free"].WorstCost(1000); ok {
		t.Error("an unpriced pool has a worst cost")
	}
	// Marshal and Parse keep the budgets.
	data, err := cfg.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	if again, err := Parse(data); err != nil || !Same(cfg, again) || again.Teams["t"].Budget.PoolFallback("big") != b.PoolFallback("big") {
		t.Fatalf("round trip: %v\n%s", err, data)
	}

	cfg, err = Parse([]byte(budgeted("      day: {tokens: 1000}\n      at_limit: batch\n",
		"budgets: {time_zone: Europe/Paris, warn_at: [0.5, 0.8, 1]}\n")))
	if err != nil {
		t.Fatal(err)
	}
	if cfg.BudgetLocation().String() != "Europe/Paris" || len(cfg.WarnAt()) != 3 {
		t.Errorf("location %v, warn_at %v", cfg.BudgetLocation(), cfg.WarnAt())
	}
	if fb := cfg.Teams["t"].Budget.PoolFallback("big"); fb.Kind != FallbackBatch {
		t.Errorf("big inherits the team's batch: %+v", fb)
	}
	// warn_at: [] holds: no soft thresholds.
	cfg, err = Parse([]byte(budgeted("      day: {tokens: 1000}\n", "budgets: {warn_at: []}\n")))
	if err != nil || len(cfg.WarnAt()) != 0 {
		t.Fatalf("warn_at []: %v %v", err, cfg.WarnAt())
	}
	// Marshal and Parse keep it all, [] included.
	data, err = cfg.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	again, err := Parse(data)
	if err != nil || !Same(cfg, again) || len(again.WarnAt()) != 0 {
		t.Fatalf("round trip: %v\n%s", err, data)
	}
}

// Every bad budget is refused by the field it is in, with a kind that
// errors.Is tells.
func TestBadBudgetsNameTheirField(t *testing.T) {
	for _, tc := range []struct {
		name, budget, top string
		field             string
		kind              error
	}{
		{"negative tokens", "      day: {tokens: -5}\n", "", "teams.t.budget.day.tokens", ErrInvalidBudget},
		{"zero tokens", "      day: {tokens: 0}\n", "", "teams.t.budget.day.tokens", ErrInvalidBudget},
		{"negative cost", "      month: {cost: -1}\n", "", "teams.t.budget.month.cost", ErrInvalidBudget},
		{"cost not a number", "      month: {cost: .nan}\n", "", "teams.t.budget.month.cost", ErrInvalidBudget},
		{"cost infinite", "      month: {cost: .inf}\n", "", "teams.t.budget.month.cost", ErrInvalidBudget},
		{"cost absurd", "      month: {cost: 1e15}\n", "", "teams.t.budget.month.cost", ErrInvalidBudget},
		{"an allowance of nothing", "      day: {}\n", "", "teams.t.budget.day", ErrInvalidBudget},
		{"a budget of nothing", "      at_limit: refuse\n", "", "teams.t.budget", ErrInvalidBudget},
		{"a pool's negative budget", "      pools: {big: {day: {tokens: -1}}}\n", "", "teams.t.budget.pools.big.day.tokens", ErrInvalidBudget},
		{"an unknown pool", "      pools: {huge: {day: {tokens: 1000}}}\n", "", "teams.t.budget.pools.huge", ErrInvalidBudget},
		{"a pool the team may not use", "      pools: {free: {day: {tokens: 1000}}}\n", "", "teams.t.budget.pools.free", ErrInvalidBudget},
		{"a pool budget of nothing", "      pools: {big: {at_limit: batch}}\n", "", "teams.t.budget.pools.big", ErrInvalidBudget},
		// 262 tokens is the least a call reserves in big and small.
		{"tokens below one call", "      day: {tokens: 261}\n", "", "teams.t.budget.day.tokens", ErrBudgetTooSmall},
		{"a pool's tokens below one call", "      pools: {small: {month: {tokens: 100}}}\n", "", "teams.t.budget.pools.small.month.tokens", ErrBudgetTooSmall},
		// 262 tokens at big's 10 per million, plus b2's 0.01 a request.
		{"cost below one call", "      day: {cost: 0.0126}\n", "", "teams.t.budget.day.cost", ErrBudgetTooSmall},
		{"a pool's cost below one call", "      pools: {big: {day: {cost: 0.01}}}\n", "", "teams.t.budget.pools.big.day.cost", ErrBudgetTooSmall},
		{"money for an unpriced pool", "      day: {cost: 10}\n", "", "teams.u.budget.day.cost", ErrMissingPrice},
		{"unknown time zone", "      day: {tokens: 1000}\n", "budgets: {time_zone: Europe/Pariss}\n", "budgets.time_zone", ErrUnknownTimeZone},
		{"an offset is no time zone", "      day: {tokens: 1000}\n", "budgets: {time_zone: \"+02:00\"}\n", "budgets.time_zone", ErrUnknownTimeZone},
		{"the machine's time zone", "      day: {tokens: 1000}\n", "budgets: {time_zone: Local}\n", "budgets.time_zone", ErrUnknownTimeZone},
		{"empty time zone", "      day: {tokens: 1000}\n", "budgets: {time_zone: \"\"}\n", "budgets.time_zone", ErrUnknownTimeZone},
		{"a threshold above 1", "      day: {tokens: 1000}\n", "budgets: {warn_at: [0.8, 1.5]}\n", "budgets.warn_at[1]", ErrInvalidBudget},
		{"a threshold of 0", "      day: {tokens: 1000}\n", "budgets: {warn_at: [0]}\n", "budgets.warn_at[0]", ErrInvalidBudget},
		{"thresholds out of order", "      day: {tokens: 1000}\n", "budgets: {warn_at: [0.9, 0.8]}\n", "budgets.warn_at[1]", ErrInvalidBudget},
		{"a threshold twice", "      day: {tokens: 1000}\n", "budgets: {warn_at: [0.8, 0.8]}\n", "budgets.warn_at[1]", ErrInvalidBudget},
		{"an unknown at_limit", "      day: {tokens: 1000}\n      at_limit: wait\n", "", "teams.t.budget.at_limit", ErrInvalidFallback},
		{"an empty at_limit", "      day: {tokens: 1000}\n      at_limit: \"\"\n", "", "teams.t.budget.at_limit", ErrInvalidFallback},
		{"a fallback to no pool", "      day: {tokens: 1000}\n      at_limit: \"pool:tiny\"\n", "", "teams.t.budget.at_limit", ErrInvalidFallback},
		{"a fallback to a forbidden pool", "      day: {tokens: 1000}\n      at_limit: \"pool:free\"\n", "", "teams.t.budget.at_limit", ErrInvalidFallback},
		{"a pool's fallback to no pool", "      pools: {big: {day: {tokens: 1000}, at_limit: \"pool:\"}}\n", "", "teams.t.budget.pools.big.at_limit", ErrInvalidFallback},
		{"batch for a team without it", "      day: {tokens: 1000}\n      at_limit: batch\n", "", "teams.v.budget.at_limit", ErrInvalidFallback},
		{"two pools falling back on each other", "      pools:\n        big: {day: {tokens: 1000}, at_limit: \"pool:small\"}\n        small: {day: {tokens: 1000}, at_limit: \"pool:big\"}\n", "",
			"teams.t.budget.pools.big.at_limit", ErrFallbackLoop},
		{"a pool falling back on itself", "      pools: {big: {day: {tokens: 1000}, at_limit: \"pool:big\"}}\n", "", "teams.t.budget.pools.big.at_limit", ErrFallbackLoop},
		// The team's budget moves calls to small, whose own budget
		// inherits that fallback: small -> small.
		{"the team's fallback into a pool that inherits it", "      day: {tokens: 1000}\n      at_limit: \"pool:small\"\n      pools: {small: {day: {tokens: 500}}}\n", "",
			"teams.t.budget.at_limit", ErrFallbackLoop},
		{"an unknown budget field", "      day: {tokens: 1000, requests: 5}\n", "", "", nil},
		{"an unknown budgets setting", "      day: {tokens: 1000}\n", "budgets: {reset: monthly}\n", "", nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			y := budgeted(tc.budget, tc.top)
			switch {
			case strings.HasPrefix(tc.field, "teams.u."): // a team that may use the unpriced pool
				y = strings.Replace(y, "  other: {}\n", "  other: {}\n  u:\n    budget:\n"+tc.budget, 1)
			case strings.HasPrefix(tc.field, "teams.v."): // a team without batch
				y = strings.Replace(y, "  other: {}\n", "  other: {}\n  v:\n    tiers: [standard]\n    pools: [big]\n    budget:\n"+tc.budget, 1)
			}
			_, err := Parse([]byte(y))
			if !errors.Is(err, ErrInvalid) {
				t.Fatalf("want a refusal, got %v", err)
			}
			if tc.field == "" { // the YAML decoder refuses it, with its line
				if !strings.Contains(err.Error(), "line") {
					t.Fatalf("want the YAML error's line: %v", err)
				}
				return
			}
			if !errors.Is(err, tc.kind) {
				t.Errorf("errors.Is(%v, %v) is false", err, tc.kind)
			}
			var verr *ValidationError
			if !errors.As(err, &verr) {
				t.Fatalf("want a ValidationError, got %v", err)
			}
			for _, p := range verr.Problems {
				if p.Field == tc.field && errors.Is(p, tc.kind) {
					return
				}
			}
			t.Fatalf("no problem names %s: %v", tc.field, err)
		})
	}
}

// A budget just large enough for one call holds; fallbacks that end
// hold: a chain of pools that ends at a pool without a budget of its
// own, or at refuse or batch.
func TestBudgetsThatHold(t *testing.T) {
	for _, tc := range []struct{ name, budget string }{
		{"tokens of exactly one call", "      day: {tokens: 262}\n"},
		{"money of exactly one call", "      day: {cost: 0.01262}\n"},
		{"a fallback to a pool without a budget", "      pools: {big: {day: {cost: 1}, at_limit: \"pool:small\"}}\n"},
		{"a chain that ends in refuse", "      at_limit: \"pool:big\"\n      day: {cost: 5}\n      pools:\n        big: {day: {cost: 1}, at_limit: \"pool:small\"}\n        small: {day: {cost: 1}, at_limit: refuse}\n"},
		{"a chain that ends in batch", "      pools:\n        big: {day: {cost: 1}, at_limit: \"pool:small\"}\n        small: {day: {cost: 1}, at_limit: batch}\n"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if _, err := Parse([]byte(budgeted(tc.budget, ""))); err != nil {
				t.Fatal(err)
			}
		})
	}
}
