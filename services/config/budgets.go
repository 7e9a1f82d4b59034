package config

import (
	"fmt"
	"math"
	"slices"
	"strings"
	"time"

	// Time zones are read from the binary's own copy of the IANA
	// database, so that budgets.time_zone works on a machine (a slim
	// container) without /usr/share/zoneinfo.
	_ "time/tzdata"

	"github.com/sluicehq/sluice/messages"
	"github.com/sluicehq/sluice/services/tokens"
)

// Budgets sets what is common to every team's budget.
type Budgets struct {
	// TimeZone is the IANA name (such as Europe/Paris) of the time zone
	// whose calendar days and months budgets count: a day budget resets
	// at its midnight, a month budget at midnight of the first. Default
	// UTC.
	TimeZone string `yaml:"time_zone,omitempty"`
	// WarnAt are the soft thresholds, fractions of a budget in ascending
	// order, whose crossing (by what was spent) is reported: a metric
	// and `sluice status` show it. Default [0.8]; [] reports none.
	WarnAt *[]float64 `yaml:"warn_at,omitempty"`

	loc *time.Location
}

// DefaultWarnAt are the soft thresholds of budgets.warn_at left out.
var DefaultWarnAt = []float64{0.8}

// MaxWarnAt bounds the soft thresholds.
const MaxWarnAt = 8

// MaxBudgetCost bounds a money budget, so that it holds in micro-units
// of the currency (CostMicros) in an int64 with room to spare: a
// trillion.
const MaxBudgetCost = 1e12

// TeamBudget is what a team may spend: in all its pools together (Day,
// Month), and in some of them (Pools). Each is counted across every
// dispatcher, by calendar day and month in budgets.time_zone.
type TeamBudget struct {
	// Day and Month bound what the team spends in a calendar day and
	// month, all pools together. Nil: no bound.
	Day   *Allowance `yaml:"day,omitempty"`
	Month *Allowance `yaml:"month,omitempty"`
	// Pools bound what the team spends in one pool, by pool name.
	Pools map[string]*PoolBudget `yaml:"pools,omitempty"`
	// AtLimit is what happens to a call that one of the team's budgets
	// cannot hold (a pool's budget may say otherwise): AtLimitRefuse
	// (the default) answers budget_exhausted; AtLimitBatch moves the call
	// to the batch tier, and "pool:<name>" to that pool (a cheaper
	// model). A moved call is no longer bounded by the budget that
	// could not hold it (its spend still counts there, beyond the limit,
	// and is shown as such); every other budget still bounds it.
	AtLimit string `yaml:"at_limit,omitempty"`

	fallback Fallback
}

// PoolBudget bounds what a team spends in one pool.
type PoolBudget struct {
	Day   *Allowance `yaml:"day,omitempty"`
	Month *Allowance `yaml:"month,omitempty"`
	// AtLimit is what happens when this budget cannot hold a call, as
	// TeamBudget.AtLimit. Default: the team's at_limit.
	AtLimit string `yaml:"at_limit,omitempty"`

	fallback Fallback
}

// Allowance is one budget: tokens (prompt and completion, as the
// provider counts them), money (in prices.currency), or both. Nil: no
// bound of that kind.
type Allowance struct {
	Tokens *int64   `yaml:"tokens,omitempty"`
	Cost   *float64 `yaml:"cost,omitempty"`
}

// TokenLimit is the token budget, 0 when there is none.
func (a *Allowance) TokenLimit() int64 {
	if a == nil || a.Tokens == nil {
		return 0
	}
	return *a.Tokens
}

// CostLimit is the money budget in micro-units of the currency
// (CostMicros), 0 when there is none.
func (a *Allowance) CostLimit() int64 {
	if a == nil || a.Cost == nil {
		return 0
	}
	return CostMicros(*a.Cost)
}

// The values of at_limit, but for "pool:<name>".
const (
	AtLimitRefuse = "refuse"
	AtLimitBatch  = "batch"
	// AtLimitPoolPrefix starts an at_limit that moves the call to
	// another pool: pool:gpt-4o-mini.
	AtLimitPoolPrefix = "pool:"
)

// FallbackKind is what happens to a call a budget cannot hold.
type FallbackKind int

// The fallbacks.
const (
	// FallbackRefuse answers the call budget_exhausted.
	FallbackRefuse FallbackKind = iota
	// FallbackBatch moves the call to the batch tier.
	FallbackBatch
	// FallbackPool moves the call to Fallback.Pool.
	FallbackPool
)

// Fallback is what happens to a call a budget cannot hold: an at_limit,
// parsed.
type Fallback struct {
	Kind FallbackKind
	// Pool is the pool a FallbackPool moves the call to.
	Pool string
}

// Fallback is what happens to the team's calls that its own day or
// month budget cannot hold.
func (b *TeamBudget) Fallback() Fallback { return b.fallback }

// PoolFallback is what happens to the team's calls in pool that the
// team's budget in that pool cannot hold: the pool budget's at_limit, or
// the team's.
func (b *TeamBudget) PoolFallback(pool string) Fallback {
	if pb := b.Pools[pool]; pb != nil && pb.AtLimit != "" {
		return pb.fallback
	}
	return b.fallback
}

// CostMicros is cost in micro-units of its currency, rounded to the
// nearest: budgets count money in integers, so that adding up a million
// calls' costs does not drift.
func CostMicros(cost float64) int64 { return int64(math.Round(cost * 1e6)) }

// BudgetLocation is the time zone whose calendar budgets count:
// budgets.time_zone, or UTC. Set by validation.
func (c *Config) BudgetLocation() *time.Location {
	if c.Budgets.loc == nil {
		return time.UTC
	}
	return c.Budgets.loc
}

// WarnAt is budgets.warn_at, or DefaultWarnAt: the soft thresholds,
// ascending. Callers must not change it.
func (c *Config) WarnAt() []float64 {
	if c.Budgets.WarnAt == nil {
		return DefaultWarnAt
	}
	return *c.Budgets.WarnAt
}

// DefaultReservation is the fewest tokens a chat call reserves in the
// pool when it leaves max_tokens to default_max_tokens: one empty
// message and the default. A budget below it would refuse every such
// call.
func (p *Pool) DefaultReservation() int64 {
	est, err := tokens.Of(messages.EndpointChatCompletions, []byte(`{"messages":[{"content":""}]}`), p.DefaultMaxTokens)
	if err != nil {
		return p.DefaultMaxTokens
	}
	return est.Total()
}

// WorstCost is the most a call reserving reserved tokens may cost in the
// pool, before a deployment is chosen: the highest of its deployments'
// Rates.Estimate. It is false when a deployment of the pool has no
// prices, so that no money budget can bound its calls.
func (p *Pool) WorstCost(reserved int64) (float64, bool) {
	worst := 0.0
	for _, d := range p.Deployments {
		if d == nil {
			continue
		}
		r, ok := d.Rates()
		if !ok {
			return 0, false
		}
		worst = max(worst, r.Estimate(reserved).Total)
	}
	return worst, len(p.Deployments) > 0
}

// unpriced lists the pool's deployments that have no prices.
func (p *Pool) unpriced() []string {
	var ids []string
	for _, d := range p.Deployments {
		if d == nil {
			continue
		}
		if _, ok := d.Rates(); !ok {
			ids = append(ids, d.ID)
		}
	}
	return ids
}

// validateBudgets checks budgets and every team's budget. It runs after
// the pools (whose rates it needs) and the teams.
func (c *Config) validateBudgets(v *validator) {
	b := &c.Budgets
	b.loc = time.UTC
	switch tz := b.TimeZone; {
	case tz == "" && v.written["budgets.time_zone"]:
		v.addKind(ErrUnknownTimeZone, "budgets.time_zone", "must not be empty: leave it out for the default, UTC")
	case tz == "":
	case tz == "Local":
		v.addKind(ErrUnknownTimeZone, "budgets.time_zone", "Local is each machine's own time zone, which dispatchers may not share: name one, such as Europe/Paris or UTC")
	default:
		loc, err := time.LoadLocation(tz)
		if err != nil {
			v.addKind(ErrUnknownTimeZone, "budgets.time_zone", "unknown time zone %q: give an IANA name such as Europe/Paris, America/New_York or UTC", tz)
		} else {
			b.loc = loc
		}
	}
	if b.WarnAt != nil {
		ws := *b.WarnAt
		if len(ws) > MaxWarnAt {
			v.addKind(ErrInvalidBudget, "budgets.warn_at", "at most %d thresholds", MaxWarnAt)
		}
		for i, w := range ws {
			f := fmt.Sprintf("budgets.warn_at[%d]", i)
			switch {
			case math.IsNaN(w) || w <= 0 || w > 1:
				v.addKind(ErrInvalidBudget, f, "must be a fraction of the budget above 0 and at most 1, such as 0.8")
			case i > 0 && w <= ws[i-1]:
				v.addKind(ErrInvalidBudget, f, "thresholds must be in ascending order, each once")
			}
		}
	}
	for _, name := range c.TeamNames() {
		if t := c.Teams[name]; t != nil && t.Budget != nil {
			c.validateTeamBudget(v, name, t)
		}
	}
}

// validateTeamBudget checks team's budget.
func (c *Config) validateTeamBudget(v *validator, name string, t *Team) {
	b := t.Budget
	f := "teams." + name + ".budget"
	switch {
	case b.Pools != nil && len(b.Pools) == 0:
		v.addKind(ErrInvalidBudget, f+".pools", "is empty: give a pool's budget, or leave pools out")
	case b.Day == nil && b.Month == nil && len(b.Pools) == 0:
		v.addKind(ErrInvalidBudget, f, "sets no budget: give day, month or pools (or leave budget out)")
	}
	// The pools the team's own budget bounds: every pool it may use.
	var pools []string
	for _, p := range sortedKeys(c.Pools) {
		if c.Pools[p] != nil && t.AllowsPool(p) {
			pools = append(pools, p)
		}
	}
	c.checkAllowance(v, f+".day", b.Day, pools)
	c.checkAllowance(v, f+".month", b.Month, pools)
	b.fallback = c.parseAtLimit(v, f+".at_limit", b.AtLimit, t)
	for _, p := range sortedKeys(b.Pools) {
		pf := f + ".pools." + p
		pb := b.Pools[p]
		switch {
		case c.Pools[p] == nil:
			v.addKind(ErrInvalidBudget, pf, "unknown pool %q", p)
			continue
		case !t.AllowsPool(p):
			v.addKind(ErrInvalidBudget, pf, "team %s may not use pool %s (teams.%s.pools)", name, p, name)
			continue
		case pb == nil || pb.Day == nil && pb.Month == nil:
			v.addKind(ErrInvalidBudget, pf, "sets no budget: give day or month")
			if pb == nil {
				continue
			}
		}
		c.checkAllowance(v, pf+".day", pb.Day, []string{p})
		c.checkAllowance(v, pf+".month", pb.Month, []string{p})
		pb.fallback = b.fallback
		if pb.AtLimit != "" || v.written[pf+".at_limit"] {
			pb.fallback = c.parseAtLimit(v, pf+".at_limit", pb.AtLimit, t)
		}
	}
	c.checkFallbackLoops(v, f, b)
}

// checkAllowance checks one allowance (field f) that bounds the calls
// of pools.
func (c *Config) checkAllowance(v *validator, f string, a *Allowance, pools []string) {
	if a == nil {
		return
	}
	if a.Tokens == nil && a.Cost == nil {
		v.addKind(ErrInvalidBudget, f, "sets neither tokens nor cost")
		return
	}
	if a.Tokens != nil {
		switch n := *a.Tokens; {
		case n <= 0:
			v.addKind(ErrInvalidBudget, f+".tokens", "must be greater than 0: leave it out for no token budget")
		default:
			for _, p := range pools {
				if min := c.Pools[p].DefaultReservation(); n < min {
					v.addKind(ErrBudgetTooSmall, f+".tokens", "%d tokens is less than one call in pool %s reserves (%d: a one-message chat call with the pool's default_max_tokens): every such call would be refused", n, p, min)
					break
				}
			}
		}
	}
	if a.Cost != nil {
		switch x := *a.Cost; {
		case math.IsNaN(x) || math.IsInf(x, 0):
			v.addKind(ErrInvalidBudget, f+".cost", "must be a number, not %v", x)
		case x <= 0:
			v.addKind(ErrInvalidBudget, f+".cost", "must be greater than 0: leave it out for no money budget")
		case x > MaxBudgetCost:
			v.addKind(ErrInvalidBudget, f+".cost", "must be at most %g", float64(MaxBudgetCost))
		default:
			for _, p := range pools {
				pool := c.Pools[p]
				if ids := pool.unpriced(); len(ids) > 0 {
					v.addKind(ErrMissingPrice, f+".cost", "a money budget needs the prices of every deployment it bounds; pool %s's %s %s none (give the pool prices, 0 if free)", p, strings.Join(ids, ", "), map[bool]string{true: "has", false: "have"}[len(ids) == 1])
					break
				}
				worst, _ := pool.WorstCost(pool.DefaultReservation())
				if CostMicros(x) < CostMicros(worst) {
					v.addKind(ErrBudgetTooSmall, f+".cost", "%g is less than one call in pool %s may cost (%g: %d reserved tokens at its highest price): every such call would be refused", x, p, worst, pool.DefaultReservation())
					break
				}
			}
		}
	}
}

// parseAtLimit checks an at_limit (field f) of team t and parses it.
func (c *Config) parseAtLimit(v *validator, f, s string, t *Team) Fallback {
	switch {
	case s == "" && v.written[f]:
		v.addKind(ErrInvalidFallback, f, "must not be empty: leave it out for the default, %s", AtLimitRefuse)
	case s == "" || s == AtLimitRefuse:
	case s == AtLimitBatch:
		if !t.AllowsTier(messages.TierBatch) {
			v.addKind(ErrInvalidFallback, f, "moves calls to the batch tier, which the team may not use (its tiers)")
		}
		return Fallback{Kind: FallbackBatch}
	case strings.HasPrefix(s, AtLimitPoolPrefix):
		p := strings.TrimPrefix(s, AtLimitPoolPrefix)
		switch {
		case c.Pools[p] == nil:
			v.addKind(ErrInvalidFallback, f, "unknown pool %q", p)
		case !t.AllowsPool(p):
			v.addKind(ErrInvalidFallback, f, "moves calls to pool %s, which the team may not use", p)
		}
		return Fallback{Kind: FallbackPool, Pool: p}
	default:
		v.addKind(ErrInvalidFallback, f, "must be %s, %s or %s<pool>, not %q", AtLimitRefuse, AtLimitBatch, AtLimitPoolPrefix, s)
	}
	return Fallback{Kind: FallbackRefuse}
}

// checkFallbackLoops refuses fallbacks that lead a call back to a pool
// whose budget already could not hold it: from the team's budget, or a
// pool's, follow the pools calls move to; a pool with a budget of its
// own passes them on by its fallback. Visiting a pool twice is a loop.
func (c *Config) checkFallbackLoops(v *validator, f string, b *TeamBudget) {
	starts := []struct {
		field string
		fb    Fallback
		from  string // the pool whose budget moved the call; "" for the team's
	}{{f + ".at_limit", b.fallback, ""}}
	for _, p := range sortedKeys(b.Pools) {
		if b.Pools[p] != nil {
			starts = append(starts, struct {
				field string
				fb    Fallback
				from  string
			}{f + ".pools." + p + ".at_limit", b.Pools[p].fallback, p})
		}
	}
	for _, s := range starts {
		var seen []string
		if s.from != "" {
			seen = append(seen, s.from)
		}
		fb := s.fb
		for fb.Kind == FallbackPool {
			if slices.Contains(seen, fb.Pool) {
				v.addKind(ErrFallbackLoop, s.field, "calls its budgets cannot hold move in a loop, %s -> %s: end it with at_limit %s or %s on one of these pools' budgets", strings.Join(seen, " -> "), fb.Pool, AtLimitRefuse, AtLimitBatch)
				break
			}
			seen = append(seen, fb.Pool)
			pb := b.Pools[fb.Pool]
			if pb == nil {
				break // no budget of its own: the call stays there
			}
			fb = pb.fallback
		}
	}
}
