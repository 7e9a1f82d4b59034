package plan_test

import (
	"bytes"
	"encoding/json"
	"strconv"
	"strings"
	"testing"

	"golang.org/x/net/html"

	"github.com/sluicehq/sluice/services/plan"
)

// The page parses, loads nothing from anywhere, and its charts draw the
// plan's figures: each hour's calls, unmet calls and capacity, and each
// team's share against its weight's share, as the JSON has them.
func TestHTMLChartsDrawTheJSONsFigures(t *testing.T) {
	p := build(t)
	var buf bytes.Buffer
	if err := plan.WriteHTML(&buf, p); err != nil {
		t.Fatal(err)
	}
	doc, err := html.Parse(bytes.NewReader(buf.Bytes()))
	if err != nil {
		t.Fatal(err)
	}
	// What a machine reads: the JSON, round-tripped.
	data, err := json.Marshal(p)
	if err != nil {
		t.Fatal(err)
	}
	var fromJSON plan.Plan
	if err := json.Unmarshal(data, &fromJSON); err != nil {
		t.Fatal(err)
	}

	var hours, teams []map[string]string
	var embedded string
	var days, shares int
	var walk func(*html.Node)
	walk = func(n *html.Node) {
		if n.Type == html.ElementNode {
			a := attrs(n)
			switch n.Data {
			case "script":
				if a["type"] != "application/json" || a["src"] != "" {
					t.Errorf("a script that is not inert data: %v", a)
				}
				if n.FirstChild != nil {
					embedded = n.FirstChild.Data
				}
			case "link", "img", "iframe", "object", "embed":
				t.Errorf("the page loads a %s: %v", n.Data, a)
			case "svg":
				switch a["class"] {
				case "day":
					days++
				case "shares":
					shares++
				}
			case "g":
				switch a["class"] {
				case "hour":
					hours = append(hours, a)
					for c := n.FirstChild; c != nil; c = c.NextSibling {
						if c.Type == html.ElementNode && c.Data == "rect" {
							ca := attrs(c)
							a[ca["class"]+"-height"] = ca["height"]
						}
					}
				case "team":
					teams = append(teams, a)
				}
			}
			for k, v := range a {
				if (k == "href" || k == "src" || k == "xlink:href") && !strings.HasPrefix(v, "#") {
					t.Errorf("%s %s=%q reaches outside the page", n.Data, k, v)
				}
			}
		}
		for c := n.FirstChild; c != nil; c = c.NextSibling {
			walk(c)
		}
	}
	walk(doc)
	if bytes.Contains(buf.Bytes(), []byte("http://")) && !bytes.Contains(buf.Bytes(), []byte(`xmlns="http://www.w3.org/2000/svg"`)) ||
		bytes.Contains(buf.Bytes(), []byte("https://")) || bytes.Contains(buf.Bytes(), []byte("@import")) || bytes.Contains(buf.Bytes(), []byte("url(")) {
		t.Error("the page names an address")
	}
	if days != len(fromJSON.Pools) || shares != 1 {
		t.Fatalf("%d day charts for %d pools, %d share charts", days, len(fromJSON.Pools), shares)
	}
	var inPage plan.Plan
	if err := json.Unmarshal([]byte(embedded), &inPage); err != nil || inPage.Pools[0].Need != fromJSON.Pools[0].Need {
		t.Errorf("the embedded JSON: %v %+v", err, inPage.Pools)
	}

	pool := fromJSON.Pools[0]
	if len(hours) != 24 {
		t.Fatalf("%d hours drawn", len(hours))
	}
	for _, a := range hours {
		h := int(num(t, a["data-hour"]))
		want := pool.HoursOfDay[h]
		if num(t, a["data-calls"]) != float64(want.Calls) || num(t, a["data-unmet"]) != float64(want.Unmet) || num(t, a["data-capacity"]) != float64(want.CapacityCalls) {
			t.Errorf("hour %d drawn as %v, the JSON has %+v", h, a, want)
		}
	}
	if len(teams) != len(fromJSON.Teams) {
		t.Fatalf("%d teams drawn, %d in the JSON", len(teams), len(fromJSON.Teams))
	}
	for i, a := range teams {
		want := fromJSON.Teams[i]
		if a["data-team"] != want.Team || !near(num(t, a["data-share"]), want.Share) || !near(num(t, a["data-weight-share"]), want.Entitlement.WeightShare) {
			t.Errorf("team drawn as %v, the JSON has %+v", a, want)
		}
		if c, ok := want.Cost["USD"]; ok != (a["data-cost"] != "") || ok && !near(num(t, a["data-cost"]), c) {
			t.Errorf("team %s's cost drawn as %q, the JSON has %v", want.Team, a["data-cost"], want.Cost)
		}
	}
	// The bars' heights follow the figures: 10:00's unmet part is three
	// times 14:00's (30 unmet calls and 10), its met part 930/110 times.
	ten, fourteen := hours[10], hours[14]
	if r := num(t, ten["unmet-height"]) / num(t, fourteen["unmet-height"]); r < 2.9 || r > 3.1 {
		t.Errorf("unmet bars %s and %s high, not 3:1", ten["unmet-height"], fourteen["unmet-height"])
	}
	if r := num(t, ten["met-height"]) / num(t, fourteen["met-height"]); r < 930.0/110-0.01 || r > 930.0/110+0.01 {
		t.Errorf("met bars %s and %s high, not 930:110", ten["met-height"], fourteen["met-height"])
	}
	if !strings.Contains(buf.String(), "Draft weights") || !strings.Contains(buf.String(), "m: {weight: 5}") {
		t.Error("no draft in the page")
	}
}

func attrs(n *html.Node) map[string]string {
	m := map[string]string{}
	for _, a := range n.Attr {
		k := a.Key
		if a.Namespace != "" {
			k = a.Namespace + ":" + k
		}
		m[k] = a.Val
	}
	return m
}

func num(t *testing.T, s string) float64 {
	t.Helper()
	f, err := strconv.ParseFloat(s, 64)
	if err != nil {
		t.Fatalf("%q is not a number", s)
	}
	return f
}

// The budget chart draws, for each team's budget, the most spent in a
// day and in a month against the limit, as the JSON has them.
func TestHTMLBudgetChartDrawsTheJSONsFigures(t *testing.T) {
	p := budgetPlan(t)
	var buf bytes.Buffer
	if err := plan.WriteHTML(&buf, p); err != nil {
		t.Fatal(err)
	}
	doc, err := html.Parse(bytes.NewReader(buf.Bytes()))
	if err != nil {
		t.Fatal(err)
	}
	var drawn []map[string]string
	var walk func(*html.Node)
	walk = func(n *html.Node) {
		if n.Type == html.ElementNode && n.Data == "g" && attrs(n)["class"] == "budget" {
			drawn = append(drawn, attrs(n))
		}
		for c := n.FirstChild; c != nil; c = c.NextSibling {
			walk(c)
		}
	}
	walk(doc)
	type want struct {
		unit        string
		peak, limit float64
	}
	wants := map[string]want{}
	for _, tm := range p.Teams {
		if tm.Budget == nil {
			continue
		}
		for period, s := range map[string]plan.BudgetSpend{"day": tm.Budget.Day, "month": tm.Budget.Month} {
			switch {
			case s.LimitCost > 0:
				wants[tm.Team+" "+tm.Pool+" "+period] = want{p.Currency, s.PeakCost, s.LimitCost}
			case s.LimitTokens > 0:
				wants[tm.Team+" "+tm.Pool+" "+period] = want{"tokens", float64(s.PeakTokens), float64(s.LimitTokens)}
			}
		}
	}
	if len(drawn) != len(wants) || len(drawn) != 3 {
		t.Fatalf("%d budget bars drawn, %d in the JSON (want 3: a's day and month, b's day)", len(drawn), len(wants))
	}
	for _, a := range drawn {
		w, ok := wants[a["data-team"]+" "+a["data-pool"]+" "+a["data-period"]]
		if !ok || a["data-unit"] != w.unit || !near(num(t, a["data-peak"]), w.peak) || !near(num(t, a["data-limit"]), w.limit) {
			t.Errorf("budget drawn as %v, the JSON has %+v", a, w)
		}
	}
}
