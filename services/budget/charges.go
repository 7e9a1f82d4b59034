package budget

import "github.com/sluicehq/sluice/services/config"

// Charges returns the charges of a call of team in pool under cfg: the
// team's own budget (day and month, every pool), then the team's budget
// in pool; none when the team has neither. Unknown teams have none.
func Charges(cfg *config.Config, team, pool string) []Charge {
	t := cfg.Teams[team]
	if t == nil || t.Budget == nil {
		return nil
	}
	b := t.Budget
	var out []Charge
	if b.Day != nil || b.Month != nil {
		out = append(out, Charge{Scope: Scope{Team: team}, Limits: limitsOf(b.Day, b.Month), WarnAt: cfg.WarnAt()})
	}
	if pb := b.Pools[pool]; pb != nil {
		out = append(out, Charge{Scope: Scope{Team: team, Pool: pool}, Limits: limitsOf(pb.Day, pb.Month), WarnAt: cfg.WarnAt()})
	}
	return out
}

func limitsOf(day, month *config.Allowance) Limits {
	return Limits{
		Day:   Amount{Tokens: day.TokenLimit(), Micros: day.CostLimit()},
		Month: Amount{Tokens: month.TokenLimit(), Micros: month.CostLimit()},
	}
}

// Need is the worst case of a call that reserves reserved tokens in
// pool: those tokens, and what they may cost at the highest price of
// the pool's deployments (config.Pool.WorstCost; 0 where the pool has no
// prices, which validation allows only without money budgets).
func Need(cfg *config.Config, pool string, reserved int64) Amount {
	need := Amount{Tokens: max(reserved, 0)}
	if p, ok := cfg.Pool(pool); ok {
		if cost, ok := p.WorstCost(need.Tokens); ok {
			need.Micros = config.CostMicros(cost)
		}
	}
	return need
}

// Spent is what a call really spent, for Settle: the provider's total
// tokens and the result's cost (messages.Cost.Total), or nil when the
// provider reported no usage, so that the reservation is charged.
func Spent(totalTokens int64, cost float64, reported bool) *Amount {
	if !reported {
		return nil
	}
	return &Amount{Tokens: max(totalTokens, 0), Micros: max(config.CostMicros(cost), 0)}
}

// Unbounded is c counted without its limits: for a call that c's
// budget could not hold and that its fallback (config.Fallback: batch,
// or another pool) moved on. Its spend still counts in c's scope,
// beyond the limit, where `sluice status` shows it.
func (c Charge) Unbounded() Charge {
	c.Limits = Limits{}
	return c
}
