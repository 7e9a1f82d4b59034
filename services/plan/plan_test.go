package plan_test

import (
	"math"
	"testing"
	"time"

	"go.yaml.in/yaml/v3"

	"github.com/sluicehq/sluice/messages"
	"github.com/sluicehq/sluice/services/config"
	"github.com/sluicehq/sluice/services/plan"
	"github.com/sluicehq/sluice/services/usage"
)

const planConfig = `
teams:
  a:
    pools:
      m: {weight: 3, guaranteed_rpm: 5, cap_rpm: 20}
  b:
    pools: [m]
pools:
  m:
    deployments:
      - {id: d1, provider: openai, base_url: "http://127.0.0.1:1/v1", region: us, key: K1, rpm: 10, tpm: 1000}
      - {id: d2, provider: openai, base_url: "http://127.0.0.1:1/v1", region: eu, key: K2, rpm: 20, tpm: 2000}
tiers:
  high: {target_wait: 2s}
`

var (
	day1 = time.Date(2026, 12, 1, 0, 0, 0, 0, time.UTC)
	day2 = day1.Add(24 * time.Hour)
)

func minutes(pairs ...int64) []int64 {
	m := make([]int64, usage.Minutes)
	for i := 0; i < len(pairs); i += 2 {
		m[pairs[i]] = pairs[i+1]
	}
	return m
}

// history is two days of a pool of 30 RPM and 3000 TPM (10 and 1000 in
// us, 20 and 2000 in eu): a burst at 10:00 on day 1 that left 30 calls
// unmet, a quiet 10:00 on day 2, and 10 calls refused at 14:00 on day 2.
func history() []usage.Record {
	return []usage.Record{
		{Hour: day1.Add(10 * time.Hour), Team: "a", Pool: "m", Tier: messages.TierStandard, Calls: 600, Attempts: 620, OK: 590,
			Late: 20, Unserved: 10, RateLimited: 15, TotalTokens: 59000, ByMinute: minutes(5, 100, 6, 500),
			Regions: map[string]int64{"us": 200, "eu": 400}, Cost: map[string]float64{"USD": 1.5}},
		{Hour: day1.Add(10 * time.Hour), Team: "b", Pool: "m", Tier: messages.TierBatch, Calls: 60, Attempts: 60, OK: 60,
			TotalTokens: 6000, ByMinute: minutes(5, 20, 30, 40), Regions: map[string]int64{"eu": 60}},
		{Hour: day2.Add(10 * time.Hour), Team: "a", Pool: "m", Tier: messages.TierStandard, Calls: 300, Attempts: 300, OK: 300,
			TotalTokens: 30000, ByMinute: minutes(0, 300), Regions: map[string]int64{"us": 160, "eu": 140}, Cost: map[string]float64{"USD": 0.5}},
		{Hour: day2.Add(14 * time.Hour), Team: "b", Pool: "m", Tier: messages.TierStandard, Calls: 120, Attempts: 120, OK: 110,
			Unserved: 10, TotalTokens: 11000, ByMinute: minutes(1, 60, 2, 60), Regions: map[string]int64{"eu": 120}},
		// Outside the span, and in a pool the configuration does not have.
		{Hour: day2.Add(24 * time.Hour), Team: "a", Pool: "m", Tier: messages.TierStandard, Calls: 1000, Late: 1000},
		{Hour: day1.Add(3 * time.Hour), Team: "a", Pool: config.Unknown, Tier: messages.TierStandard, Calls: 7},
	}
}

func build(t *testing.T) *plan.Plan {
	t.Helper()
	cfg, err := config.Parse([]byte(planConfig))
	if err != nil {
		t.Fatal(err)
	}
	return plan.Build(history(), cfg, day1.Add(30*time.Minute), day1.Add(48*time.Hour))
}

func near(a, b float64) bool { return math.Abs(a-b) < 1e-9 }

func TestPoolFigures(t *testing.T) {
	p := build(t)
	if p.Hours != 48 || !p.Since.Equal(day1) || p.Unplanned != 7 || p.Currency != "USD" {
		t.Fatalf("span %v+%dh, unplanned %d, currency %s", p.Since, p.Hours, p.Unplanned, p.Currency)
	}
	if p.TargetWaitsMS[messages.TierHigh] != 2000 || p.TargetWaitsMS[messages.TierStandard] != 30000 || p.TargetWaitsMS[messages.TierBatch] != 3600000 {
		t.Errorf("target waits %v", p.TargetWaitsMS)
	}
	if len(p.Pools) != 1 {
		t.Fatalf("pools %+v", p.Pools)
	}
	pl := p.Pools[0]
	want := plan.Figures{Calls: 1080, Attempts: 1100, OK: 1060, Late: 20, Unserved: 20, Unmet: 40, Provider429s: 15, Tokens: 106000}
	if pl.Name != "m" || pl.RPM != 30 || pl.TPM != 3000 || pl.Figures != want || pl.PeakRPM != 500 {
		t.Errorf("pool %s %d RPM %d TPM, peak %d, %+v; want %+v", pl.Name, pl.RPM, pl.TPM, pl.PeakRPM, pl.Figures, want)
	}
	if len(pl.HoursOfDay) != 24 {
		t.Fatalf("%d hours of day", len(pl.HoursOfDay))
	}
	ten := pl.HoursOfDay[10]
	if ten.Hour != 10 || ten.Hours != 2 || ten.Calls != 960 || ten.Attempts != 980 || ten.Unmet != 30 || ten.Provider429s != 15 ||
		ten.CapacityCalls != 3600 || ten.CapacityTokens != 360000 || ten.PeakRPM != 500 || !near(ten.OfferedRPM, 8) ||
		!near(ten.RPMUtilization, 980.0/3600) || !near(ten.TPMUtilization, 95000.0/360000) {
		t.Errorf("10:00 %+v", ten)
	}
	fourteen := pl.HoursOfDay[14]
	if fourteen.Calls != 120 || fourteen.Unserved != 10 || fourteen.Late != 0 || fourteen.PeakRPM != 60 || !near(fourteen.OfferedRPM, 1) {
		t.Errorf("14:00 %+v", fourteen)
	}
	if quiet := pl.HoursOfDay[3]; quiet.Calls != 0 || quiet.Hours != 2 || quiet.CapacityCalls != 3600 || quiet.RPMUtilization != 0 {
		t.Errorf("03:00 %+v (the unknown pool's calls are no pool's)", quiet)
	}
}

// Day 1's 10:00 needed the most: 30 calls unmet, the busiest minute 500
// arrivals, so 30 more than its 30 RPM (the unmet, had they come in one
// minute); 14:00 on day 2 needed 10 more. At 100 tokens a call, 60 RPM is
// 6000 TPM. Had day 1's 30 unmet standard calls come at once, serving
// them within standard's 30s would have needed 60 more: 90 RPM at most.
// us served a third of the calls, eu two thirds.
func TestNeed(t *testing.T) {
	pl := build(t).Pools[0]
	n := pl.Need
	if n.RPM != 60 || n.ExtraRPM != 30 || n.TPM != 6000 || n.ExtraTPM != 3000 || !near(n.TokensPerCall, 100) || !n.Hour.Equal(day1.Add(10*time.Hour)) ||
		n.UpToRPM != 90 || n.UpToTPM != 9000 {
		t.Errorf("need %+v", n)
	}
	want := []plan.Region{
		{Name: "eu", RPM: 20, TPM: 2000, Calls: 720, ExtraRPM: 20, ExtraTPM: 2000},
		{Name: "us", RPM: 10, TPM: 1000, Calls: 360, ExtraRPM: 10, ExtraTPM: 1000},
	}
	if len(pl.Regions) != 2 || pl.Regions[0] != want[0] || pl.Regions[1] != want[1] {
		t.Errorf("regions %+v, want %+v", pl.Regions, want)
	}
}

// A pool whose demand was all met needs nothing more.
func TestNoUnmetDemandNeedsNothing(t *testing.T) {
	cfg, err := config.Parse([]byte(planConfig))
	if err != nil {
		t.Fatal(err)
	}
	h := history()[2:3]
	p := plan.Build(h, cfg, day2, day2.Add(24*time.Hour))
	n := p.Pools[0].Need
	if n.RPM != 30 || n.TPM != 3000 || n.ExtraRPM != 0 || n.ExtraTPM != 0 || !n.Hour.IsZero() || n.UpToRPM != 30 || n.UpToTPM != 3000 {
		t.Errorf("need %+v, want the configured 30 RPM and 3000 TPM", n)
	}
	for _, r := range p.Pools[0].Regions {
		if r.ExtraRPM != 0 || r.ExtraTPM != 0 {
			t.Errorf("region %+v", r)
		}
	}
}

func TestTeamsAgainstEntitlement(t *testing.T) {
	p := build(t)
	if len(p.Teams) != 2 {
		t.Fatalf("teams %+v", p.Teams)
	}
	a, b := p.Teams[0], p.Teams[1]
	if a.Team != "a" || a.Pool != "m" || a.Calls != 900 || a.Attempts != 920 || a.Tokens != 89000 || a.Unmet != 30 ||
		!near(a.Share, 920.0/1100) || !near(a.TokenShare, 89000.0/106000) || !near(a.AvgRPM, 920.0/2880) || !near(a.Cost["USD"], 2) || a.PeakRPM != 500 {
		t.Errorf("team a %+v", a)
	}
	if e := a.Entitlement; !e.Allowed || e.Weight != 3 || !near(e.WeightShare, 0.75) || e.GuaranteedRPM != 5 || e.CapRPM != 20 {
		t.Errorf("team a's entitlement %+v", e)
	}
	if b.Team != "b" || b.Calls != 180 || b.PeakRPM != 60 || b.Entitlement.Weight != 1 || !near(b.Entitlement.WeightShare, 0.25) || b.Budget != nil || b.Cost != nil {
		t.Errorf("team b %+v", b)
	}
	want := []plan.DraftWeight{{Team: "a", Pool: "m", Weight: 5, Current: 3}, {Team: "b", Pool: "m", Weight: 1, Current: 1}}
	if len(p.Draft) != 2 || p.Draft[0] != want[0] || p.Draft[1] != want[1] {
		t.Errorf("draft %+v, want %+v", p.Draft, want)
	}
}

// A team's budget is held against what it spent in each day and month
// of budgets.time_zone: at 23:00 UTC on day 1 it is already day 2 in
// Paris, so that hour counts in day 2 there.
func TestTeamsAgainstTheirBudgets(t *testing.T) {
	p := budgetPlan(t)
	byTeam := map[string]plan.Team{}
	for _, tm := range p.Teams {
		byTeam[tm.Team] = tm
	}
	a := byTeam["a"].Budget
	if a == nil || a.Scope != "team" || a.Day.LimitTokens != 50000 || a.Day.PeakTokens != 60000 || a.Day.Over != 1 || a.Day.Periods != 2 ||
		!near(a.Month.LimitCost, 10) || !near(a.Month.PeakCost, 6) || a.Month.Over != 0 || a.Month.Periods != 1 {
		t.Errorf("team a's budget %+v", a)
	}
	b := byTeam["b"].Budget
	if b == nil || b.Scope != "pool" || !near(b.Day.LimitCost, 1) || !near(b.Day.PeakCost, 1.5) || b.Day.Over != 1 || b.Month.LimitCost != 0 {
		t.Errorf("team b's budget %+v", b)
	}
	// Drafts: a quarter above the busiest day, tokens to the thousand
	// above, money to the cent.
	want := []plan.DraftBudget{
		{Team: "a", DayTokens: 75000, DayCost: 5, PeakTokens: 60000, PeakCost: 4, Current: "50000 tokens"},
		{Team: "b", DayTokens: 1000, DayCost: 1.88, PeakTokens: 10, PeakCost: 1.5, Current: "none"},
	}
	if len(p.DraftBudgets) != 2 || p.DraftBudgets[0] != want[0] || p.DraftBudgets[1] != want[1] {
		t.Errorf("draft budgets %+v, want %+v", p.DraftBudgets, want)
	}
	// The draft is YAML with each team once, its weights and its budget
	// together.
	var draft struct {
		Teams map[string]struct {
			Pools  map[string]struct{ Weight float64 }
			Budget struct{ Day struct{ Tokens int64 } }
		}
	}
	if err := yaml.Unmarshal([]byte(p.DraftYAML()), &draft); err != nil {
		t.Fatalf("the draft is no YAML: %v\n%s", err, p.DraftYAML())
	}
	if a := draft.Teams["a"]; a.Pools["m"].Weight == 0 || a.Budget.Day.Tokens != 75000 {
		t.Errorf("team a in the draft: %+v\n%s", a, p.DraftYAML())
	}
}

// budgetPlan is the plan of two days of teams with budgets, in Paris.
func budgetPlan(t *testing.T) *plan.Plan {
	t.Helper()
	cfg, err := config.Parse([]byte(`
prices: {currency: USD}
budgets: {time_zone: Europe/Paris}
teams:
  a:
    pools: [m]
    budget:
      day: {tokens: 50000}
      month: {cost: 10}
  b:
    pools: [m]
    budget:
      pools:
        m: {day: {cost: 1}}
pools:
  m:
    default_max_tokens: 100
    prices: {input: 1, output: 1}
    deployments:
      - {id: d1, provider: openai, base_url: "http://127.0.0.1:1/v1", region: us, key: K1, rpm: 10, tpm: 100000}
`))
	if err != nil {
		t.Fatal(err)
	}
	records := []usage.Record{
		{Hour: day1.Add(10 * time.Hour), Team: "a", Pool: "m", Tier: messages.TierStandard, Calls: 10, TotalTokens: 40000, Cost: map[string]float64{"USD": 2}},
		// 23:00 UTC on day 1 is 00:00 on day 2 in Paris.
		{Hour: day1.Add(23 * time.Hour), Team: "a", Pool: "m", Tier: messages.TierStandard, Calls: 10, TotalTokens: 30000, Cost: map[string]float64{"USD": 3}},
		{Hour: day2.Add(10 * time.Hour), Team: "a", Pool: "m", Tier: messages.TierStandard, Calls: 10, TotalTokens: 30000, Cost: map[string]float64{"USD": 1}},
		{Hour: day2.Add(11 * time.Hour), Team: "b", Pool: "m", Tier: messages.TierStandard, Calls: 1, TotalTokens: 10, Cost: map[string]float64{"USD": 1.5}},
	}
	return plan.Build(records, cfg, day1, day2.Add(24*time.Hour))
}
