package plan

import (
	"fmt"
	"math"
	"sort"
	"strings"
	"time"

	"github.com/sluicehq/sluice/services/budget"
	"github.com/sluicehq/sluice/services/config"
	"github.com/sluicehq/sluice/services/usage"
)

// spends adds up what teams spent by day and month of the budgets' time
// zone: per team (every pool) and per team and pool.
type spends struct {
	loc *time.Location
	// by scope, span, then period id.
	by map[budget.Scope]map[budget.Span]map[string]*spent
}

type spent struct {
	tokens int64
	cost   float64
}

func newSpends(loc *time.Location) *spends {
	return &spends{loc: loc, by: map[budget.Scope]map[budget.Span]map[string]*spent{}}
}

// add counts an hour's roll-up in the day and month it falls in, as the
// budget ledger counts a call: in tokens the providers reported, and in
// cost.
func (s *spends) add(r *usage.Record, currency string) {
	for _, scope := range []budget.Scope{{Team: r.Team}, {Team: r.Team, Pool: r.Pool}} {
		spans := s.by[scope]
		if spans == nil {
			spans = map[budget.Span]map[string]*spent{}
			s.by[scope] = spans
		}
		for _, span := range []budget.Span{budget.Day, budget.Month} {
			id := budget.PeriodOf(span, r.Hour, s.loc).ID()
			if spans[span] == nil {
				spans[span] = map[string]*spent{}
			}
			x := spans[span][id]
			if x == nil {
				x = &spent{}
				spans[span][id] = x
			}
			x.tokens += r.TotalTokens
			x.cost += r.Cost[currency]
		}
	}
}

// against is the budget that bounds team's calls in pool, with the
// span's spend held against it; nil when there is none.
func (s *spends) against(cfg *config.Config, team, pool string) *Budget {
	t := cfg.Teams[team]
	if t == nil || t.Budget == nil {
		return nil
	}
	scope, day, month := budget.Scope{Team: team}, t.Budget.Day, t.Budget.Month
	b := &Budget{Scope: "team"}
	if pb := t.Budget.Pools[pool]; pb != nil {
		scope, day, month = budget.Scope{Team: team, Pool: pool}, pb.Day, pb.Month
		b.Scope = "pool"
	} else if day == nil && month == nil {
		return nil
	}
	b.Day = s.spend(scope, budget.Day, day)
	b.Month = s.spend(scope, budget.Month, month)
	return b
}

func (s *spends) spend(scope budget.Scope, span budget.Span, a *config.Allowance) BudgetSpend {
	out := BudgetSpend{LimitTokens: a.TokenLimit(), LimitCost: float64(a.CostLimit()) / 1e6}
	for _, x := range s.by[scope][span] {
		out.Periods++
		out.PeakTokens = max(out.PeakTokens, x.tokens)
		out.PeakCost = max(out.PeakCost, x.cost)
		if (out.LimitTokens > 0 && x.tokens > out.LimitTokens) || (out.LimitCost > 0 && x.cost > out.LimitCost) {
			out.Over++
		}
	}
	return out
}

// DraftBudget is a drafted day budget of a team over every pool: a
// quarter above the most it spent in one day of the span (tokens
// rounded up to a thousand, money to a cent).
type DraftBudget struct {
	Team       string  `json:"team"`
	DayTokens  int64   `json:"day_tokens,omitempty"`
	DayCost    float64 `json:"day_cost,omitempty"`
	PeakTokens int64   `json:"peak_tokens"`
	PeakCost   float64 `json:"peak_cost"`
	// Current is the team's day budget now, in words ("none").
	Current string `json:"current"`
}

// draftHeadroom is what a drafted budget leaves above the busiest day.
const draftHeadroom = 1.25

// drafts drafts a day budget for every team that spent anything.
func (s *spends) drafts(cfg *config.Config) []DraftBudget {
	var out []DraftBudget
	for scope, spans := range s.by {
		if scope.Pool != "" {
			continue
		}
		d := DraftBudget{Team: scope.Team, Current: "none"}
		for _, x := range spans[budget.Day] {
			d.PeakTokens = max(d.PeakTokens, x.tokens)
			d.PeakCost = max(d.PeakCost, x.cost)
		}
		if d.PeakTokens == 0 && d.PeakCost == 0 {
			continue
		}
		d.DayTokens = int64(math.Ceil(float64(d.PeakTokens)*draftHeadroom/1000)) * 1000
		d.DayCost = math.Ceil(d.PeakCost*draftHeadroom*100) / 100
		if t := cfg.Teams[scope.Team]; t != nil && t.Budget != nil && t.Budget.Day != nil {
			var now []string
			if n := t.Budget.Day.TokenLimit(); n > 0 {
				now = append(now, fmt.Sprintf("%d tokens", n))
			}
			if n := t.Budget.Day.CostLimit(); n > 0 {
				now = append(now, fmt.Sprintf("%g %s", float64(n)/1e6, cfg.Currency()))
			}
			d.Current = strings.Join(now, ", ")
		}
		out = append(out, d)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Team < out[j].Team })
	return out
}
