package plan

import (
	"encoding/json"
	"fmt"
	"html/template"
	"io"
	"sort"
	"strings"
)

// WriteHTML writes the plan as one self-contained HTML page: its styles
// inline, its charts inline SVG, no script, font or image from anywhere,
// so that it opens in any browser with no network. Each chart's marks
// carry the figures they draw in data- attributes (data-calls,
// data-unmet, data-capacity, data-share, ...), the same figures as the
// JSON's, and the page embeds the plan's JSON in a
// <script type="application/json" id="plan"> element, which browsers
// do not run.
func WriteHTML(w io.Writer, p *Plan) error {
	data, err := json.MarshalIndent(p, "", "  ")
	if err != nil {
		return err
	}
	v := view{Plan: p, DraftYAML: p.DraftYAML(), JSON: template.JS(strings.ReplaceAll(string(data), "</", `<\/`))}
	for i := range p.Pools {
		v.Days = append(v.Days, dayChart(&p.Pools[i]))
	}
	for _, pool := range poolNames(p) {
		v.Shares = append(v.Shares, shareChart(p, pool))
	}
	if c := budgetChart(p); len(c.Bars) > 0 {
		v.Budgets = &c
	}
	return page.Execute(w, v)
}

type view struct {
	*Plan
	DraftYAML string
	JSON      template.JS
	Days      []chart
	Shares    []chart
	// Budgets is nil when no team has a budget.
	Budgets *chart
}

// chart is one SVG chart, laid out: its marks are in pixels.
type chart struct {
	Pool          string
	Width, Height int
	Bars          []bar
	Ticks         []tick
	Max           float64
	Currency      string
}

type bar struct {
	// Label is the hour (00..23) or the team.
	Label    string
	X, W, X2 float64
	// Served and unmet parts of the demand (day chart), or the share and
	// the entitlement (share chart), in pixels from the baseline.
	Y1, H1, Y2, H2 float64
	// Cap is the capacity (or weight share) marker's height.
	CapY float64
	// The figures, for data- attributes and titles.
	Hour, Calls, Unmet, Capacity, Attempts int64
	Share, WeightShare, Cost               float64
	HasCost                                bool
	Team                                   string
	// A budget chart's bar: its pool, period ("day", "month"), unit
	// ("tokens" or the currency), the most spent in one such period and
	// the limit.
	Pool, Period, Unit string
	Peak, Limit        float64
}

type tick struct {
	Y     float64
	Label string
}

const (
	chartW, chartH, chartTop, chartBottom, chartLeft = 760, 240, 10, 30, 60
)

// dayChart draws a pool's demand over the hours of the day: per hour, the
// calls offered (met in blue, unmet in red) and the capacity of those
// hours (a black mark), on one scale.
func dayChart(pl *Pool) chart {
	c := chart{Pool: pl.Name, Width: chartW, Height: chartH}
	for _, h := range pl.HoursOfDay {
		c.Max = max(c.Max, float64(h.Calls), float64(h.CapacityCalls))
	}
	if c.Max == 0 {
		c.Max = 1
	}
	plotH := float64(chartH - chartTop - chartBottom)
	base := float64(chartH - chartBottom)
	slot := float64(chartW-chartLeft-10) / 24
	scale := func(n int64) float64 { return float64(n) / c.Max * plotH }
	for _, h := range pl.HoursOfDay {
		met := h.Calls - min(h.Unmet, h.Calls)
		b := bar{Label: fmt.Sprintf("%02d", h.Hour), X: chartLeft + float64(h.Hour)*slot + 2, W: slot - 4,
			Hour: int64(h.Hour), Calls: h.Calls, Unmet: h.Unmet, Capacity: h.CapacityCalls, Attempts: h.Attempts}
		b.H1 = scale(met)
		b.Y1 = base - b.H1
		b.H2 = scale(h.Calls) - b.H1
		b.Y2 = b.Y1 - b.H2
		b.CapY = base - scale(h.CapacityCalls)
		b.X2 = b.X + b.W
		c.Bars = append(c.Bars, b)
	}
	c.Ticks = ticks(c.Max, base, plotH, func(v float64) string { return fmt.Sprintf("%.0f", v) })
	return c
}

// shareChart draws each team's share of a pool's attempts (a bar) against
// the share its weight gives it (a black mark), with its cost.
func shareChart(p *Plan, pool string) chart {
	c := chart{Pool: pool, Width: chartW, Height: chartH, Max: 1, Currency: p.Currency}
	var teams []Team
	for _, t := range p.Teams {
		if t.Pool == pool {
			teams = append(teams, t)
		}
	}
	plotH := float64(chartH - chartTop - chartBottom)
	base := float64(chartH - chartBottom)
	slot := float64(chartW-chartLeft-10) / float64(max(len(teams), 1))
	for i, t := range teams {
		b := bar{Label: t.Team, Team: t.Team, X: chartLeft + float64(i)*slot + slot/4, W: slot / 2,
			Share: t.Share, WeightShare: t.Entitlement.WeightShare, Calls: t.Calls, Unmet: t.Unmet, Attempts: t.Attempts}
		if cost, ok := t.Cost[p.Currency]; ok {
			b.Cost, b.HasCost = cost, true
		}
		b.H1 = min(t.Share, 1) * plotH
		b.Y1 = base - b.H1
		b.CapY = base - min(t.Entitlement.WeightShare, 1)*plotH
		b.X2 = b.X + b.W
		c.Bars = append(c.Bars, b)
	}
	c.Ticks = ticks(1, base, plotH, func(v float64) string { return fmt.Sprintf("%.0f%%", v*100) })
	return c
}

// budgetMax is the top of the budget chart's scale: a period that spent
// more than one and a half times its budget is drawn at the top.
const budgetMax = 1.5

// budgetChart draws, for each team and pool with a budget, the most it
// spent in one day and in one month of the span against that budget (a
// bar, in money where the budget has a money limit, else in tokens), the
// black mark at the whole budget.
func budgetChart(p *Plan) chart {
	c := chart{Width: chartW, Height: chartH, Max: budgetMax, Currency: p.Currency}
	var bars []bar
	for _, t := range p.Teams {
		if t.Budget == nil {
			continue
		}
		for _, per := range []struct {
			name string
			s    BudgetSpend
		}{{"day", t.Budget.Day}, {"month", t.Budget.Month}} {
			b := bar{Team: t.Team, Pool: t.Pool, Period: per.name, Label: t.Team + " " + t.Pool + " " + per.name}
			switch {
			case per.s.LimitCost > 0:
				b.Unit, b.Peak, b.Limit = p.Currency, per.s.PeakCost, per.s.LimitCost
			case per.s.LimitTokens > 0:
				b.Unit, b.Peak, b.Limit = "tokens", float64(per.s.PeakTokens), float64(per.s.LimitTokens)
			default:
				continue
			}
			bars = append(bars, b)
		}
	}
	plotH := float64(chartH - chartTop - chartBottom)
	base := float64(chartH - chartBottom)
	slot := float64(chartW-chartLeft-10) / float64(max(len(bars), 1))
	for i, b := range bars {
		b.X, b.W = chartLeft+float64(i)*slot+slot/4, slot/2
		b.H1 = min(b.Peak/b.Limit, budgetMax) / budgetMax * plotH
		b.Y1 = base - b.H1
		b.CapY = base - plotH/budgetMax
		b.X2 = b.X + b.W
		c.Bars = append(c.Bars, b)
	}
	c.Ticks = ticks(budgetMax, base, plotH, func(v float64) string { return fmt.Sprintf("%.0f%%", v*100) })
	return c
}

// BudgetSummary is a Team's budget in a few words: for the day and the
// month, the most spent in one against the limit, and how many passed
// it; "-" for none.
func BudgetSummary(b *Budget, currency string) string {
	if b == nil {
		return "-"
	}
	var parts []string
	for _, per := range []struct {
		name string
		s    BudgetSpend
	}{{"day", b.Day}, {"month", b.Month}} {
		if per.s.LimitTokens > 0 {
			parts = append(parts, fmt.Sprintf("%s %d/%d tokens", per.name, per.s.PeakTokens, per.s.LimitTokens))
		}
		if per.s.LimitCost > 0 {
			parts = append(parts, fmt.Sprintf("%s %.2f/%.2f %s", per.name, per.s.PeakCost, per.s.LimitCost, currency))
		}
		if (per.s.LimitTokens > 0 || per.s.LimitCost > 0) && per.s.Over > 0 {
			parts[len(parts)-1] += fmt.Sprintf(" (%d of %d over)", per.s.Over, per.s.Periods)
		}
	}
	out := strings.Join(parts, ", ")
	if b.Scope == "team" {
		out += " (the team's, every pool)"
	}
	return out
}

func ticks(top, base, plotH float64, label func(float64) string) []tick {
	var out []tick
	for i := 0; i <= 4; i++ {
		v := top * float64(i) / 4
		out = append(out, tick{Y: base - float64(i)/4*plotH, Label: label(v)})
	}
	return out
}

func poolNames(p *Plan) []string {
	seen := map[string]bool{}
	var out []string
	for _, t := range p.Teams {
		if !seen[t.Pool] {
			seen[t.Pool] = true
			out = append(out, t.Pool)
		}
	}
	sort.Strings(out)
	return out
}

var page = template.Must(template.New("plan").Funcs(template.FuncMap{
	"pct": func(f float64) string { return fmt.Sprintf("%.1f%%", f*100) },
	"f1":  func(f float64) string { return fmt.Sprintf("%.1f", f) },
	"px":  func(f float64) string { return fmt.Sprintf("%.2f", f) },
	"g":   func(f float64) string { return fmt.Sprintf("%g", f) },
	"cost": func(m map[string]float64) string {
		if len(m) == 0 {
			return "-"
		}
		var parts []string
		for _, cur := range sortedKeys(m) {
			parts = append(parts, fmt.Sprintf("%.6f %s", m[cur], cur))
		}
		return strings.Join(parts, ", ")
	},
	"budget": BudgetSummary,
	"orDash": func(n int64) string {
		if n == 0 {
			return "-"
		}
		return fmt.Sprint(n)
	},
}).Parse(`<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>sluice capacity plan {{.Since.Format "2006-01-02 15:04"}} to {{.Until.Format "2006-01-02 15:04"}} UTC</title>
<style>
body { font: 14px/1.4 system-ui, sans-serif; margin: 2em; color: #222; }
table { border-collapse: collapse; margin: 0.5em 0 1.5em; }
th, td { border: 1px solid #ccc; padding: 2px 6px; text-align: right; }
th:first-child, td:first-child { text-align: left; }
svg { display: block; margin: 0.5em 0 1.5em; }
.met { fill: #4a78b5; } .unmet { fill: #c94a3a; } .cap { stroke: #000; stroke-width: 2; }
.share { fill: #5a9e6f; } .axis { stroke: #888; } text { font-size: 11px; fill: #444; }
</style>
</head>
<body>
<h1>Capacity plan</h1>
<p>{{.Hours}} hours, {{.Since.Format "2006-01-02 15:04"}} to {{.Until.Format "2006-01-02 15:04"}} UTC. Hours of day are UTC.
Target waits: {{range $t, $ms := .TargetWaitsMS}}{{$t}} {{g $ms}} ms; {{end}}
{{if .Unplanned}}{{.Unplanned}} calls were for pools the configuration does not have.{{end}}</p>
{{range $i, $p := .Pools}}
<h2>Pool {{$p.Name}}</h2>
<p>Capacity {{$p.RPM}} RPM, {{$p.TPM}} TPM. {{$p.Calls}} calls offered, {{$p.Unmet}} unmet ({{$p.Late}} late, {{$p.Unserved}} unserved), {{$p.Provider429s}} provider 429s, busiest minute {{$p.PeakRPM}} calls.
To serve all of it within target: <strong>{{$p.Need.RPM}} RPM (+{{$p.Need.ExtraRPM}}), {{$p.Need.TPM}} TPM (+{{$p.Need.ExtraTPM}})</strong>{{if not $p.Need.Hour.IsZero}}, needed at {{$p.Need.Hour.Format "2006-01-02 15:00"}} UTC; up to {{$p.Need.UpToRPM}} RPM and {{$p.Need.UpToTPM}} TPM if the unmet calls came in bursts shorter than a minute{{end}}.</p>
<p>Calls offered by UTC hour of day over the span: <span style="color:#4a78b5">met</span>, <span style="color:#c94a3a">unmet</span>; the black mark is the capacity of those hours.</p>
{{with index $.Days $i}}
<svg class="day" data-pool="{{.Pool}}" xmlns="http://www.w3.org/2000/svg" width="{{.Width}}" height="{{.Height}}" viewBox="0 0 {{.Width}} {{.Height}}" role="img" aria-label="calls offered against capacity by hour of day, pool {{.Pool}}">
{{range .Ticks}}<line class="axis" x1="55" x2="750" y1="{{px .Y}}" y2="{{px .Y}}" stroke-opacity="0.3"/><text x="50" y="{{px .Y}}" text-anchor="end">{{.Label}}</text>
{{end}}{{range .Bars}}<g class="hour" data-hour="{{.Hour}}" data-calls="{{.Calls}}" data-unmet="{{.Unmet}}" data-capacity="{{.Capacity}}" data-attempts="{{.Attempts}}"><title>{{.Label}}:00 UTC: {{.Calls}} calls, {{.Unmet}} unmet, capacity {{.Capacity}}</title>
<rect class="met" x="{{px .X}}" y="{{px .Y1}}" width="{{px .W}}" height="{{px .H1}}"/><rect class="unmet" x="{{px .X}}" y="{{px .Y2}}" width="{{px .W}}" height="{{px .H2}}"/><line class="cap" x1="{{px .X}}" y1="{{px .CapY}}" x2="{{px .X2}}" y2="{{px .CapY}}"/>
<text x="{{px .X}}" y="225">{{.Label}}</text></g>
{{end}}</svg>
{{end}}
<table class="hours">
<tr><th>hour (UTC)</th><th>calls</th><th>capacity</th><th>RPM use</th><th>TPM use</th><th>avg RPM</th><th>peak RPM</th><th>late</th><th>unserved</th><th>429s</th></tr>
{{range $p.HoursOfDay}}{{if or .Calls .Provider429s}}<tr><td>{{printf "%02d" .Hour}}:00</td><td>{{.Calls}}</td><td>{{.CapacityCalls}}</td><td>{{pct .RPMUtilization}}</td><td>{{pct .TPMUtilization}}</td><td>{{f1 .OfferedRPM}}</td><td>{{.PeakRPM}}</td><td>{{.Late}}</td><td>{{.Unserved}}</td><td>{{.Provider429s}}</td></tr>
{{end}}{{end}}</table>
<table class="regions">
<tr><th>region</th><th>RPM</th><th>TPM</th><th>calls served</th><th>extra RPM</th><th>extra TPM</th></tr>
{{range $p.Regions}}<tr><td>{{.Name}}</td><td>{{.RPM}}</td><td>{{.TPM}}</td><td>{{.Calls}}</td><td>{{.ExtraRPM}}</td><td>{{.ExtraTPM}}</td></tr>
{{end}}</table>
{{end}}
<h2>Teams</h2>
{{range .Shares}}
<h3>Pool {{.Pool}}: each team's share of the provider requests (green) against the share its weight gives it (black mark), with its cost</h3>
<svg class="shares" data-pool="{{.Pool}}" xmlns="http://www.w3.org/2000/svg" width="{{.Width}}" height="{{.Height}}" viewBox="0 0 {{.Width}} {{.Height}}" role="img" aria-label="each team's share against its entitlement, pool {{.Pool}}">
{{range .Ticks}}<line class="axis" x1="55" x2="750" y1="{{px .Y}}" y2="{{px .Y}}" stroke-opacity="0.3"/><text x="50" y="{{px .Y}}" text-anchor="end">{{.Label}}</text>
{{end}}{{$cur := .Currency}}{{range .Bars}}<g class="team" data-team="{{.Team}}" data-share="{{g .Share}}" data-weight-share="{{g .WeightShare}}" data-calls="{{.Calls}}"{{if .HasCost}} data-cost="{{g .Cost}}"{{end}}><title>{{.Team}}: {{pct .Share}} of attempts, entitled by weight to {{pct .WeightShare}}{{if .HasCost}}, {{g .Cost}} {{$cur}}{{end}}</title>
<rect class="share" x="{{px .X}}" y="{{px .Y1}}" width="{{px .W}}" height="{{px .H1}}"/><line class="cap" x1="{{px .X}}" y1="{{px .CapY}}" x2="{{px .X2}}" y2="{{px .CapY}}"/>
<text x="{{px .X}}" y="225">{{.Team}}{{if .HasCost}} ({{g .Cost}} {{$cur}}){{end}}</text></g>
{{end}}</svg>
{{end}}
<table class="teams">
<tr><th>team</th><th>pool</th><th>calls</th><th>unmet</th><th>tokens</th><th>peak RPM</th><th>share</th><th>weight</th><th>weight share</th><th>guaranteed RPM</th><th>cap RPM</th><th>guaranteed TPM</th><th>cap TPM</th><th>cost</th><th>budget</th></tr>
{{range .Teams}}<tr><td>{{.Team}}</td><td>{{.Pool}}</td><td>{{.Calls}}</td><td>{{.Unmet}}</td><td>{{.Tokens}}</td><td>{{.PeakRPM}}</td><td>{{pct .Share}}</td><td>{{g .Entitlement.Weight}}</td><td>{{pct .Entitlement.WeightShare}}</td><td>{{orDash .Entitlement.GuaranteedRPM}}</td><td>{{orDash .Entitlement.CapRPM}}</td><td>{{orDash .Entitlement.GuaranteedTPM}}</td><td>{{orDash .Entitlement.CapTPM}}</td><td>{{cost .Cost}}</td><td>{{budget .Budget $.Currency}}</td></tr>
{{end}}</table>
{{with .Budgets}}<h3>Spend against budget: the most each team spent in one day and one month of the span (bar), against its budget (black mark at 100%)</h3>
<svg class="budgets" xmlns="http://www.w3.org/2000/svg" width="{{.Width}}" height="{{.Height}}" viewBox="0 0 {{.Width}} {{.Height}}" role="img" aria-label="each team's spend against its budget">
{{range .Ticks}}<line class="axis" x1="55" x2="750" y1="{{px .Y}}" y2="{{px .Y}}" stroke-opacity="0.3"/><text x="50" y="{{px .Y}}" text-anchor="end">{{.Label}}</text>
{{end}}{{range .Bars}}<g class="budget" data-team="{{.Team}}" data-pool="{{.Pool}}" data-period="{{.Period}}" data-unit="{{.Unit}}" data-peak="{{g .Peak}}" data-limit="{{g .Limit}}"><title>{{.Label}}: at most {{g .Peak}} of {{g .Limit}} {{.Unit}}</title>
<rect class="{{if gt .Peak .Limit}}unmet{{else}}share{{end}}" x="{{px .X}}" y="{{px .Y1}}" width="{{px .W}}" height="{{px .H1}}"/><line class="cap" x1="{{px .X}}" y1="{{px .CapY}}" x2="{{px .X2}}" y2="{{px .CapY}}"/>
<text x="{{px .X}}" y="225">{{.Label}}</text></g>
{{end}}</svg>
{{end}}
{{with .DraftYAML}}<h2>Draft weights</h2>
<pre class="draft">{{.}}</pre>{{end}}
<script type="application/json" id="plan">{{.JSON}}</script>
</body>
</html>
`))
