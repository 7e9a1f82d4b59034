// Package plan computes a capacity plan from the usage history: per pool
// and hour of day, the demand offered against the capacity configured,
// the demand that went unmet (calls that waited longer than their tier's
// target, tiers.<tier>.target_wait, or failed for lack of capacity) and
// the provider 429s met; per team, its use of each pool against its
// entitlement (weight, guarantees, caps) and budget (the most it spent in
// a day and a month of budgets.time_zone, and how often it passed the
// budget); and
// the RPM and TPM, by region, that would have served all of the demand
// within its target waits: the numbers to bring to a provider. It drafts
// weights and day budgets from the observed demand, for people to edit;
// it applies nothing.
//
// Build is pure: usage roll-ups (usage.Record, one per hour, team, pool
// and tier, as services/usage keeps them) and a configuration in, a Plan
// out. WriteHTML renders a Plan as a self-contained page.
//
// What the roll-ups allow, and so what the figures mean:
//
//   - Demand offered is the calls that ended, by the hour they ended in;
//     their busiest minute (peak_rpm) is by the minute they arrived in.
//   - Capacity is what the pool's deployments are configured for (rpm·60
//     calls and tpm·60 tokens an hour), as configured now: a limit
//     changed during the span is not seen. Utilization is the provider
//     requests made (attempts, retries included) over the calls capacity,
//     and the tokens the providers reported over the tokens capacity.
//   - Unmet is late plus unserved (usage.Record.Late, Unserved).
//   - Need: in every hour with unmet demand, the pool needed at least its
//     RPM plus the unmet calls of the hour spread over its minutes, and,
//     up to the unmet calls, as much as its busiest minute's arrivals;
//     the plan asks for the most any hour needed. Its TPM is that RPM at
//     the pool's tokens per answered call. The extra is split between the
//     regions in proportion to the calls each served. UpToRPM bounds it
//     from above: each tier's unmet calls of an hour arriving at once,
//     to be served within the tier's target.
package plan

import (
	"fmt"
	"math"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/sluicehq/sluice/messages"
	"github.com/sluicehq/sluice/services/config"
	"github.com/sluicehq/sluice/services/usage"
)

// Plan is the capacity plan over a span of whole hours.
type Plan struct {
	Since time.Time `json:"since"`
	Until time.Time `json:"until"`
	// Hours is the number of hours in the span.
	Hours int `json:"hours"`
	// Currency is the configuration's, that of the teams' costs.
	Currency string `json:"currency"`
	// TargetWaits are the tiers' target waits, in milliseconds.
	TargetWaitsMS map[messages.Tier]float64 `json:"target_waits_ms"`
	Pools         []Pool                    `json:"pools"`
	Teams         []Team                    `json:"teams"`
	// Draft is a draft of the teams' weights, from the demand each offered
	// each pool: for people to edit; sluice applies none.
	Draft []DraftWeight `json:"draft_weights"`
	// DraftBudgets are drafts of the teams' day budgets, from the most
	// each spent in one day of the span: for people to edit too.
	DraftBudgets []DraftBudget `json:"draft_budgets,omitempty"`
	// Unplanned counts the calls of roll-ups for a pool the configuration
	// does not have (config.Unknown, or one removed since), which no
	// pool's figures include.
	Unplanned int64 `json:"unplanned_calls"`
}

// Figures are the demand of some hours, and what came of it.
type Figures struct {
	// Calls offered (ended), Attempts (provider requests) made for them.
	Calls    int64 `json:"calls"`
	Attempts int64 `json:"attempts"`
	OK       int64 `json:"ok"`
	// Late waited past their tier's target; Unserved failed for lack of
	// capacity; Unmet is their sum.
	Late     int64 `json:"late"`
	Unserved int64 `json:"unserved"`
	Unmet    int64 `json:"unmet"`
	// Provider429s met by the attempts.
	Provider429s int64 `json:"provider_429s"`
	// Tokens the providers reported.
	Tokens int64 `json:"tokens"`
}

func (f *Figures) add(r *usage.Record) {
	f.Calls += r.Calls
	f.Attempts += r.Attempts
	f.OK += r.OK
	f.Late += r.Late
	f.Unserved += r.Unserved
	f.Unmet += r.Late + r.Unserved
	f.Provider429s += r.RateLimited
	f.Tokens += r.TotalTokens
}

// Pool is one pool's demand against its capacity.
type Pool struct {
	Name string `json:"name"`
	// RPM and TPM are the pool's configured capacity (its deployments').
	RPM int64 `json:"rpm"`
	TPM int64 `json:"tpm"`
	Figures
	// PeakRPM is the most calls that arrived in one minute of the span.
	PeakRPM int64 `json:"peak_rpm"`
	// HoursOfDay are the span's figures by UTC hour of day, 0 to 23.
	HoursOfDay []HourOfDay `json:"hours_of_day"`
	Regions    []Region    `json:"regions"`
	Need       Need        `json:"need"`
}

// HourOfDay is a pool's figures for one UTC hour of the day, over every
// day of the span.
type HourOfDay struct {
	Hour int `json:"hour"`
	// Hours is how many hours of the span fall on this hour of the day.
	Hours int `json:"hours"`
	Figures
	// CapacityCalls and CapacityTokens are what the pool could serve in
	// those hours.
	CapacityCalls  int64 `json:"capacity_calls"`
	CapacityTokens int64 `json:"capacity_tokens"`
	// OfferedRPM is the calls offered per minute, on average.
	OfferedRPM float64 `json:"offered_rpm"`
	// PeakRPM is the most calls that arrived in one minute of these hours.
	PeakRPM int64 `json:"peak_rpm"`
	// RPMUtilization is attempts over CapacityCalls, TPMUtilization
	// tokens over CapacityTokens (0 when there is no capacity).
	RPMUtilization float64 `json:"rpm_utilization"`
	TPMUtilization float64 `json:"tpm_utilization"`
}

// Region is a pool's capacity and the calls it served in one region.
type Region struct {
	Name string `json:"name"`
	RPM  int64  `json:"rpm"`
	TPM  int64  `json:"tpm"`
	// Calls whose last provider request went to the region.
	Calls int64 `json:"calls"`
	// ExtraRPM and ExtraTPM are the region's part of the pool's need.
	ExtraRPM int64 `json:"extra_rpm"`
	ExtraTPM int64 `json:"extra_tpm"`
}

// Need is what would have served all of a pool's demand within target.
type Need struct {
	// RPM and TPM the pool would have needed (at least its configured).
	RPM int64 `json:"rpm"`
	TPM int64 `json:"tpm"`
	// ExtraRPM and ExtraTPM are above the configured RPM and TPM.
	ExtraRPM int64 `json:"extra_rpm"`
	ExtraTPM int64 `json:"extra_tpm"`
	// UpToRPM and UpToTPM bound the need from above: the most any hour
	// would have needed had each tier's unmet calls of the hour all
	// arrived at once, to be served within the tier's target wait. A burst shorter than a minute needs more than RPM, up to
	// this; hourly roll-ups cannot tell.
	UpToRPM int64 `json:"up_to_rpm"`
	UpToTPM int64 `json:"up_to_tpm"`
	// Hour is the hour that needed it; zero when no hour had unmet
	// demand.
	Hour time.Time `json:"hour,omitzero"`
	// TokensPerCall is the pool's tokens per answered call, which turns
	// calls into tokens.
	TokensPerCall float64 `json:"tokens_per_call"`
}

// Team is one team's use of one pool against its entitlement.
type Team struct {
	Team string `json:"team"`
	Pool string `json:"pool"`
	Figures
	// Cost is what its calls cost, per currency.
	Cost map[string]float64 `json:"cost,omitempty"`
	// Share is the team's part of the pool's attempts; TokenShare of
	// its tokens.
	Share      float64 `json:"share"`
	TokenShare float64 `json:"token_share"`
	// AvgRPM and AvgTPM are the team's attempts and tokens per minute
	// over the span; PeakRPM the most calls it offered in one minute, to
	// hold against its guarantee and cap.
	AvgRPM  float64 `json:"avg_rpm"`
	AvgTPM  float64 `json:"avg_tpm"`
	PeakRPM int64   `json:"peak_rpm"`
	// Entitlement is what the configuration gives the team in the pool.
	Entitlement Entitlement `json:"entitlement"`
	// Budget is the budget that bounds the team's calls in the pool (its
	// budget in the pool, else its own over every pool) against what it
	// spent, by day and month of budgets.time_zone; null when it has
	// none.
	Budget *Budget `json:"budget"`
}

// Budget is a team's budget and what the span shows against it.
type Budget struct {
	// Scope is "pool" for the team's budget in the pool, "team" for its
	// own budget over every pool (the figures are then the team's, all
	// pools together).
	Scope string `json:"scope"`
	// Day and Month are the budget's limits and the spend of the span's
	// days and months.
	Day   BudgetSpend `json:"day"`
	Month BudgetSpend `json:"month"`
}

// BudgetSpend is one period's budget, in tokens and money (0: none),
// and the spend over the span's periods of that length (a period the
// span covers in part counts what fell in the span).
type BudgetSpend struct {
	LimitTokens int64   `json:"limit_tokens,omitempty"`
	LimitCost   float64 `json:"limit_cost,omitempty"`
	// PeakTokens and PeakCost are the most spent in one period.
	PeakTokens int64   `json:"peak_tokens"`
	PeakCost   float64 `json:"peak_cost"`
	// Over counts the periods whose spend passed a limit.
	Over int `json:"over"`
	// Periods counts the periods the span touches.
	Periods int `json:"periods"`
}

// Entitlement is a team's quota in a pool, and the share its weight gives
// it among the teams that may use the pool.
type Entitlement struct {
	Weight        float64 `json:"weight"`
	WeightShare   float64 `json:"weight_share"`
	GuaranteedRPM int64   `json:"guaranteed_rpm"`
	GuaranteedTPM int64   `json:"guaranteed_tpm"`
	CapRPM        int64   `json:"cap_rpm"`
	CapTPM        int64   `json:"cap_tpm"`
	// Allowed is false for a team the configuration (now) keeps out of
	// the pool.
	Allowed bool `json:"allowed"`
}

// DraftWeight is a drafted weight of a team in a pool: proportional to
// the calls it offered there, the smallest offered 1.
type DraftWeight struct {
	Team   string  `json:"team"`
	Pool   string  `json:"pool"`
	Weight float64 `json:"weight"`
	// Current is the configured weight.
	Current float64 `json:"current"`
}

// Build computes the plan of the roll-ups whose hours fall in [since,
// until) (since truncated to its hour), against cfg.
func Build(records []usage.Record, cfg *config.Config, since, until time.Time) *Plan {
	first := since.UTC().Truncate(time.Hour)
	last := until.UTC()
	p := &Plan{Since: first, Until: last, Currency: config.DefaultCurrency, TargetWaitsMS: map[messages.Tier]float64{}}
	if cfg.Prices.Currency != "" {
		p.Currency = cfg.Prices.Currency
	}
	for _, tier := range messages.Tiers {
		w := cfg.Tiers.Policy(tier).TargetWait
		if w <= 0 {
			w = config.DefaultTargetWait[tier]
		}
		p.TargetWaitsMS[tier] = float64(w) / float64(time.Millisecond)
	}
	hoursOfDay := make([]int, 24)
	for h := first; h.Before(last); h = h.Add(time.Hour) {
		p.Hours++
		hoursOfDay[h.Hour()]++
	}

	type hourKey struct {
		pool string
		hour time.Time
	}
	type hourAgg struct {
		unmet    int64
		byTier   map[messages.Tier]int64
		byMinute [usage.Minutes]int64
	}
	pools := map[string]*Pool{}
	hours := map[hourKey]*hourAgg{}
	// teamMinutes are each team's arrivals by minute, per pool and hour.
	type teamHour struct {
		team, pool string
		hour       time.Time
	}
	teamMinutes := map[teamHour]*[usage.Minutes]int64{}
	teams := map[[2]string]*Team{}
	spends := newSpends(cfg.BudgetLocation())
	for _, name := range sortedKeys(cfg.Pools) {
		pools[name] = newPool(name, cfg.Pools[name], hoursOfDay)
	}
	for i := range records {
		r := &records[i]
		h := r.Hour.UTC().Truncate(time.Hour)
		if h.Before(first) || !h.Before(last) {
			continue
		}
		pl, ok := pools[r.Pool]
		if !ok {
			p.Unplanned += r.Calls
			continue
		}
		pl.add(r)
		hd := &pl.HoursOfDay[h.Hour()]
		hd.add(r)
		ha := hours[hourKey{r.Pool, h}]
		if ha == nil {
			ha = &hourAgg{}
			hours[hourKey{r.Pool, h}] = ha
		}
		ha.unmet += r.Late + r.Unserved
		if r.Late+r.Unserved > 0 {
			if ha.byTier == nil {
				ha.byTier = map[messages.Tier]int64{}
			}
			ha.byTier[r.Tier] += r.Late + r.Unserved
		}
		tm := teamMinutes[teamHour{r.Team, r.Pool, h}]
		if tm == nil {
			tm = &[usage.Minutes]int64{}
			teamMinutes[teamHour{r.Team, r.Pool, h}] = tm
		}
		for m, n := range r.ByMinute[:min(len(r.ByMinute), usage.Minutes)] {
			ha.byMinute[m] += n
			tm[m] += n
		}
		for region, n := range r.Regions {
			pl.region(region).Calls += n
		}
		t := teams[[2]string{r.Team, r.Pool}]
		if t == nil {
			t = &Team{Team: r.Team, Pool: r.Pool}
			teams[[2]string{r.Team, r.Pool}] = t
		}
		t.add(r)
		spends.add(r, p.Currency)
		for cur, v := range r.Cost {
			if t.Cost == nil {
				t.Cost = map[string]float64{}
			}
			t.Cost[cur] += v
		}
	}

	// The busiest minutes, and what each hour with unmet demand needed.
	keys := make([]hourKey, 0, len(hours))
	for k := range hours {
		keys = append(keys, k)
	}
	sort.Slice(keys, func(i, j int) bool {
		if keys[i].pool != keys[j].pool {
			return keys[i].pool < keys[j].pool
		}
		return keys[i].hour.Before(keys[j].hour)
	})
	for _, k := range keys {
		ha, pl := hours[k], pools[k.pool]
		var peak int64
		for _, n := range ha.byMinute {
			peak = max(peak, n)
		}
		pl.PeakRPM = max(pl.PeakRPM, peak)
		hd := &pl.HoursOfDay[k.hour.Hour()]
		hd.PeakRPM = max(hd.PeakRPM, peak)
		if ha.unmet == 0 {
			continue
		}
		spread := pl.RPM + ceilDiv(ha.unmet, 60)
		burst := min(peak, pl.RPM+ha.unmet)
		if need := max(spread, burst); need > pl.Need.RPM {
			pl.Need.RPM, pl.Need.Hour = need, k.hour
		}
		// At most: every tier's unmet calls arrived at once, and each
		// had to be served within its target (an hour at the longest).
		upTo := pl.RPM
		for tier, n := range ha.byTier {
			target := time.Duration(p.TargetWaitsMS[tier] * float64(time.Millisecond))
			if target <= 0 || target > time.Hour {
				target = time.Hour
			}
			upTo += ceil(float64(n) * float64(time.Minute) / float64(target))
		}
		pl.Need.UpToRPM = max(pl.Need.UpToRPM, upTo)
	}

	for _, name := range sortedKeys(pools) {
		pl := pools[name]
		pl.finish()
		p.Pools = append(p.Pools, *pl)
	}

	// Teams: every team the configuration has in every pool it may use,
	// and every team with use.
	for _, team := range sortedKeys(cfg.Teams) {
		for _, pool := range sortedKeys(cfg.Pools) {
			if _, ok := cfg.Teams[team].Quota(pool); ok {
				if teams[[2]string{team, pool}] == nil {
					teams[[2]string{team, pool}] = &Team{Team: team, Pool: pool}
				}
			}
		}
	}
	for k, tm := range teamMinutes {
		t := teams[[2]string{k.team, k.pool}]
		for _, n := range tm {
			t.PeakRPM = max(t.PeakRPM, n)
		}
	}
	minutes := float64(p.Hours) * 60
	for _, k := range sortedPairs(teams) {
		t := teams[k]
		pl := pools[t.Pool]
		if pl.Attempts > 0 {
			t.Share = float64(t.Attempts) / float64(pl.Attempts)
		}
		if pl.Tokens > 0 {
			t.TokenShare = float64(t.Tokens) / float64(pl.Tokens)
		}
		if minutes > 0 {
			t.AvgRPM = float64(t.Attempts) / minutes
			t.AvgTPM = float64(t.Tokens) / minutes
		}
		t.Entitlement = entitlement(cfg, t.Team, t.Pool)
		t.Budget = spends.against(cfg, t.Team, t.Pool)
		p.Teams = append(p.Teams, *t)
	}
	p.Draft = draft(p.Teams)
	p.DraftBudgets = spends.drafts(cfg)
	return p
}

func newPool(name string, cp *config.Pool, hoursOfDay []int) *Pool {
	pl := &Pool{Name: name, HoursOfDay: make([]HourOfDay, 24)}
	for _, d := range cp.Deployments {
		pl.RPM += d.RPM
		pl.TPM += d.TPM
		r := pl.region(d.Region)
		r.RPM += d.RPM
		r.TPM += d.TPM
	}
	for h := range pl.HoursOfDay {
		hd := &pl.HoursOfDay[h]
		hd.Hour, hd.Hours = h, hoursOfDay[h]
		hd.CapacityCalls = pl.RPM * 60 * int64(hd.Hours)
		hd.CapacityTokens = pl.TPM * 60 * int64(hd.Hours)
	}
	return pl
}

func (pl *Pool) region(name string) *Region {
	for i := range pl.Regions {
		if pl.Regions[i].Name == name {
			return &pl.Regions[i]
		}
	}
	pl.Regions = append(pl.Regions, Region{Name: name})
	sort.Slice(pl.Regions, func(i, j int) bool { return pl.Regions[i].Name < pl.Regions[j].Name })
	return pl.region(name)
}

// finish works out the utilizations and the need.
func (pl *Pool) finish() {
	for h := range pl.HoursOfDay {
		hd := &pl.HoursOfDay[h]
		if hd.Hours > 0 {
			hd.OfferedRPM = float64(hd.Calls) / float64(60*hd.Hours)
		}
		hd.RPMUtilization = ratio(hd.Attempts, hd.CapacityCalls)
		hd.TPMUtilization = ratio(hd.Tokens, hd.CapacityTokens)
	}
	if pl.OK > 0 {
		pl.Need.TokensPerCall = float64(pl.Tokens) / float64(pl.OK)
	}
	if pl.Need.RPM < pl.RPM {
		pl.Need.RPM = pl.RPM
	}
	pl.Need.TPM = max(pl.TPM, int64(math.Ceil(float64(pl.Need.RPM)*pl.Need.TokensPerCall)))
	pl.Need.UpToRPM = max(pl.Need.UpToRPM, pl.Need.RPM)
	pl.Need.UpToTPM = max(pl.Need.TPM, int64(math.Ceil(float64(pl.Need.UpToRPM)*pl.Need.TokensPerCall)))
	pl.Need.ExtraRPM = pl.Need.RPM - pl.RPM
	pl.Need.ExtraTPM = pl.Need.TPM - pl.TPM
	splitExtra(pl)
}

// splitExtra gives each region its part of the pool's extra, in
// proportion to the calls it served (to its configured RPM when none
// served any), rounding up.
func splitExtra(pl *Pool) {
	var served, rpm int64
	for _, r := range pl.Regions {
		served += r.Calls
		rpm += r.RPM
	}
	for i := range pl.Regions {
		r := &pl.Regions[i]
		var f float64
		switch {
		case served > 0:
			f = float64(r.Calls) / float64(served)
		case rpm > 0:
			f = float64(r.RPM) / float64(rpm)
		}
		r.ExtraRPM = ceil(f * float64(pl.Need.ExtraRPM))
		r.ExtraTPM = ceil(f * float64(pl.Need.ExtraTPM))
	}
}

func entitlement(cfg *config.Config, team, pool string) Entitlement {
	t, ok := cfg.Teams[team]
	if !ok {
		return Entitlement{}
	}
	q, ok := t.Quota(pool)
	if !ok {
		return Entitlement{}
	}
	e := Entitlement{Allowed: true, Weight: weightOf(q)}
	if q != nil {
		e.GuaranteedRPM, e.GuaranteedTPM, e.CapRPM, e.CapTPM = q.GuaranteedRPM, q.GuaranteedTPM, q.CapRPM, q.CapTPM
	}
	var sum float64
	for _, other := range cfg.Teams {
		if oq, ok := other.Quota(pool); ok {
			sum += weightOf(oq)
		}
	}
	if sum > 0 {
		e.WeightShare = e.Weight / sum
	}
	return e
}

func weightOf(q *config.Quota) float64 {
	if q == nil || q.Weight == 0 {
		return 1
	}
	return q.Weight
}

// draft proposes weights proportional to the calls each team offered
// each pool, the smallest (of those that offered any) 1, rounded to a
// tenth.
func draft(teams []Team) []DraftWeight {
	least := map[string]int64{}
	for _, t := range teams {
		if t.Calls > 0 && t.Entitlement.Allowed && (least[t.Pool] == 0 || t.Calls < least[t.Pool]) {
			least[t.Pool] = t.Calls
		}
	}
	var out []DraftWeight
	for _, t := range teams {
		if t.Calls == 0 || !t.Entitlement.Allowed {
			continue
		}
		w := math.Round(float64(t.Calls)/float64(least[t.Pool])*10) / 10
		out = append(out, DraftWeight{Team: t.Team, Pool: t.Pool, Weight: w, Current: t.Entitlement.Weight})
	}
	return out
}

// DraftYAML is the draft weights as the teams section of a configuration,
// each line with the weight configured now, to be edited and merged into
// the configuration by people; "" when there is no draft.
func (p *Plan) DraftYAML() string {
	if len(p.Draft) == 0 && len(p.DraftBudgets) == 0 {
		return ""
	}
	var b strings.Builder
	b.WriteString("# A draft from the demand each team offered: edit it before applying it\n")
	b.WriteString("# (sluice config apply); sluice plan applies nothing.\n")
	b.WriteString("teams:\n")
	weights := map[string][]DraftWeight{}
	budgets := map[string]DraftBudget{}
	var teams []string
	for _, d := range p.Draft {
		if weights[d.Team] == nil {
			teams = append(teams, d.Team)
		}
		weights[d.Team] = append(weights[d.Team], d)
	}
	for _, d := range p.DraftBudgets {
		if weights[d.Team] == nil {
			teams = append(teams, d.Team)
		}
		budgets[d.Team] = d
	}
	sort.Strings(teams)
	for _, team := range teams {
		fmt.Fprintf(&b, "  %s:\n", yamlKey(team))
		if ws := weights[team]; len(ws) > 0 {
			b.WriteString("    pools:\n")
			for _, d := range ws {
				fmt.Fprintf(&b, "      %s: {weight: %g}    # now %g\n", yamlKey(d.Pool), d.Weight, d.Current)
			}
		}
		if d, ok := budgets[team]; ok {
			var parts []string
			if d.DayTokens > 0 {
				parts = append(parts, fmt.Sprintf("tokens: %d", d.DayTokens))
			}
			if d.DayCost > 0 {
				parts = append(parts, fmt.Sprintf("cost: %g", d.DayCost))
			}
			fmt.Fprintf(&b, "    budget:\n      day: {%s}    # the most it spent in a day: %d tokens, %g %s; now %s\n",
				strings.Join(parts, ", "), d.PeakTokens, d.PeakCost, p.Currency, d.Current)
		}
	}
	return b.String()
}

// yamlKey quotes a name that YAML would not read back as itself.
func yamlKey(s string) string {
	for _, c := range s {
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' || c == '_' || c == '.') {
			return strconv.Quote(s)
		}
	}
	return s
}

func ratio(a, b int64) float64 {
	if b <= 0 {
		return 0
	}
	return float64(a) / float64(b)
}

// ceil rounds up, past the error of a fraction's float (a third of 30 is
// 10, not 11).
func ceil(x float64) int64 { return int64(math.Ceil(x - 1e-9)) }

func ceilDiv(a, b int64) int64 { return (a + b - 1) / b }

func sortedKeys[V any](m map[string]V) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

func sortedPairs[V any](m map[[2]string]V) [][2]string {
	out := make([][2]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	sort.Slice(out, func(i, j int) bool {
		if out[i][0] != out[j][0] {
			return out[i][0] < out[j][0]
		}
		return out[i][1] < out[j][1]
	})
	return out
}
