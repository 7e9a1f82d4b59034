package config

import (
	"errors"
	"math"
	"strings"
	"testing"

	"github.com/sluicehq/sluice/messages"
)

// priced is minimal with a second deployment and the given price tables:
// pool is the pool's (a YAML flow mapping, "" for none), dep the second
// deployment's, and top is added at the top level.
func priced(pool, dep, top string) string {
	y := `
teams:
  t: {}
pools:
  m:
` + func() string {
		if pool == "" {
			return ""
		}
		return "    prices: " + pool + "\n"
	}() + `    deployments:
      - {id: d1, provider: openai, base_url: "http://127.0.0.1:1/v1", region: r1, key: K1, rpm: 60, tpm: 1000}
      - id: d2
        provider: azure
        base_url: "http://127.0.0.1:1"
        region: r2
        key: K2
        rpm: 60
        tpm: 1000
`
	if dep != "" {
		y += "        prices: " + dep + "\n"
	}
	return y + top
}

// A pool's table prices its deployments; a deployment's overrides the
// entries it sets; cached input defaults to the input price, per request
// to 0; the currency to USD; a written 0 holds (free).
func TestPricesInEffect(t *testing.T) {
	for _, tc := range []struct {
		name           string
		pool, dep, top string
		d1, d2         *Rates // nil: unpriced
	}{
		{"no prices", "", "", "", nil, nil},
		{"the pool's", "{input: 0.15, cached_input: 0.075, output: 0.6, per_request: 0.001}", "", "",
			&Rates{"USD", 0.15, 0.075, 0.6, 0.001}, &Rates{"USD", 0.15, 0.075, 0.6, 0.001}},
		{"cached input defaults to input", "{input: 3, output: 15}", "", "prices: {currency: EUR}\n",
			&Rates{"EUR", 3, 3, 15, 0}, &Rates{"EUR", 3, 3, 15, 0}},
		{"a deployment overrides what it sets", "{input: 0.15, cached_input: 0.075, output: 0.6}", "{output: 0.66, per_request: 0}", "",
			&Rates{"USD", 0.15, 0.075, 0.6, 0}, &Rates{"USD", 0.15, 0.075, 0.66, 0}},
		{"an overridden input is the cached default", "{input: 1, output: 2}", "{input: 1.1}", "",
			&Rates{"USD", 1, 1, 2, 0}, &Rates{"USD", 1.1, 1.1, 2, 0}},
		{"only a deployment priced", "", "{input: 0, output: 0, per_request: 0.02}", "",
			nil, &Rates{"USD", 0, 0, 0, 0.02}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg, err := Parse([]byte(priced(tc.pool, tc.dep, tc.top)))
			if err != nil {
				t.Fatal(err)
			}
			for id, want := range map[string]*Rates{"d1": tc.d1, "d2": tc.d2} {
				d, _ := cfg.Deployment(id)
				got, ok := d.Rates()
				if ok != (want != nil) || ok && got != *want {
					t.Errorf("%s: rates %+v (priced %v), want %+v", id, got, ok, want)
				}
			}
			// Marshal and Parse keep the tables, a 0 included.
			data, err := cfg.Marshal()
			if err != nil {
				t.Fatal(err)
			}
			again, err := Parse(data)
			if err != nil {
				t.Fatalf("re-parse: %v\n%s", err, data)
			}
			if !Same(cfg, again) {
				t.Fatalf("the round trip changed the configuration:\n%s", data)
			}
			for _, id := range []string{"d1", "d2"} {
				a, _ := cfg.Deployment(id)
				b, _ := again.Deployment(id)
				ra, oka := a.Rates()
				rb, okb := b.Rates()
				if ra != rb || oka != okb {
					t.Errorf("%s: rates %+v before the round trip, %+v after", id, ra, rb)
				}
			}
		})
	}
}

// Every bad price and currency is refused, each by the field it is in,
// all of them in one error, and errors.Is tells their kinds.
func TestBadPricesNameTheirField(t *testing.T) {
	for _, tc := range []struct {
		name           string
		pool, dep, top string
		field          string
		kind           error
	}{
		{"negative input", "{input: -0.15, output: 0.6}", "", "", "pools.m.prices.input", ErrInvalidPrice},
		{"negative cached input", "{input: 0.15, cached_input: -1, output: 0.6}", "", "", "pools.m.prices.cached_input", ErrInvalidPrice},
		{"negative output", "{input: 0.15, output: -0.6}", "", "", "pools.m.prices.output", ErrInvalidPrice},
		{"negative per request", "{input: 0.15, output: 0.6, per_request: -0.01}", "", "", "pools.m.prices.per_request", ErrInvalidPrice},
		{"not a number", "{input: .nan, output: 0.6}", "", "", "pools.m.prices.input", ErrInvalidPrice},
		{"infinite", "{input: 0.15, output: .inf}", "", "", "pools.m.prices.output", ErrInvalidPrice},
		{"absurd", "{input: 0.15, output: 1e300}", "", "", "pools.m.prices.output", ErrInvalidPrice},
		{"a deployment's negative override", "{input: 0.15, output: 0.6}", "{output: -0.66}", "", "pools.m.deployments[1].prices.output", ErrInvalidPrice},
		{"a deployment's negative per request", "{input: 0.15, output: 0.6}", "{per_request: -1}", "", "pools.m.deployments[1].prices.per_request", ErrInvalidPrice},
		{"a pool's table without input", "{output: 0.6}", "", "", "pools.m.prices.input", ErrMissingPrice},
		{"a pool's table without output", "{input: 0.15, cached_input: 0.1}", "", "", "pools.m.prices.output", ErrMissingPrice},
		{"an empty pool table", "{}", "", "", "pools.m.prices.input", ErrMissingPrice},
		{"a deployment's table without input, its pool none", "", "{output: 0.6}", "", "pools.m.deployments[1].prices.input", ErrMissingPrice},
		{"a deployment's table without output, its pool none", "", "{input: 0.6}", "", "pools.m.deployments[1].prices.output", ErrMissingPrice},
		{"unknown currency", "{input: 1, output: 2}", "", "prices: {currency: DOLLARS}\n", "prices.currency", ErrUnknownCurrency},
		{"made-up code", "{input: 1, output: 2}", "", "prices: {currency: ABC}\n", "prices.currency", ErrUnknownCurrency},
		{"lower case", "{input: 1, output: 2}", "", "prices: {currency: usd}\n", "prices.currency", ErrUnknownCurrency},
		{"no currency at all", "{input: 1, output: 2}", "", "prices: {currency: XXX}\n", "prices.currency", ErrUnknownCurrency},
		{"a metal", "{input: 1, output: 2}", "", "prices: {currency: XAU}\n", "prices.currency", ErrUnknownCurrency},
		{"empty currency", "{input: 1, output: 2}", "", "prices: {currency: \"\"}\n", "prices.currency", ErrUnknownCurrency},
		{"a price that is text", "{input: cheap, output: 2}", "", "", "", nil},
		{"an unknown price", "{input: 1, output: 2, reasoning: 3}", "", "", "", nil},
		{"an unknown prices setting", "{input: 1, output: 2}", "", "prices: {currency: USD, per: million}\n", "", nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Parse([]byte(priced(tc.pool, tc.dep, tc.top)))
			if !errors.Is(err, ErrInvalid) {
				t.Fatalf("want a refusal, got %v", err)
			}
			if tc.field == "" { // the YAML decoder refuses it, with its line
				if !strings.Contains(err.Error(), "line") {
					t.Fatalf("want the YAML error's line: %v", err)
				}
				return
			}
			var verr *ValidationError
			if !errors.As(err, &verr) {
				t.Fatalf("want a ValidationError, got %v", err)
			}
			if !errors.Is(err, tc.kind) {
				t.Errorf("errors.Is(%v, %v) is false", err, tc.kind)
			}
			var fe FieldError
			if !errors.As(err, &fe) {
				t.Errorf("errors.As finds no FieldError in %v", err)
			}
			for _, p := range verr.Problems {
				if p.Field == tc.field && errors.Is(p, tc.kind) {
					return
				}
			}
			t.Fatalf("no problem names %s: %v", tc.field, err)
		})
	}
	// Problems are collected: every bad price of a configuration at once.
	_, err := Parse([]byte(priced("{input: -1, output: -2}", "{per_request: -3}", "prices: {currency: EURO}\n")))
	var verr *ValidationError
	if !errors.As(err, &verr) {
		t.Fatalf("want a ValidationError, got %v", err)
	}
	var fields []string
	for _, p := range verr.Problems {
		fields = append(fields, p.Field)
	}
	got := strings.Join(fields, " ")
	for _, f := range []string{"pools.m.prices.input", "pools.m.prices.output", "pools.m.deployments[1].prices.per_request", "prices.currency"} {
		if !strings.Contains(got, f) {
			t.Errorf("%s is not among the problems %q", f, got)
		}
	}
	// Kinds are told apart: a configuration with only a bad price is no
	// currency problem.
	_, err = Parse([]byte(priced("{input: -1, output: 2}", "", "")))
	if errors.Is(err, ErrUnknownCurrency) || errors.Is(err, ErrMissingPrice) || !errors.Is(err, ErrInvalidPrice) {
		t.Errorf("a negative price matches the wrong kinds: %v", err)
	}
}

// Cost prices every part of a usage at its own rate; Estimate charges the
// reservation at the highest token rate; Free is 0. The usages are those
// the adapters read from OpenAI's and Anthropic's answers (see
// providers.TestCachedTokensInEveryShape).
func TestCostOfUsage(t *testing.T) {
	r := Rates{Currency: "USD", Input: 2.5, CachedInput: 1.25, Output: 10, PerRequest: 0.002}
	near := func(a, b float64) bool { return math.Abs(a-b) <= 1e-12*math.Max(1, math.Abs(b)) }
	for _, tc := range []struct {
		name                                  string
		usage                                 messages.Usage
		input, cached, output, request, total float64
	}{
		{"openai chat with cached tokens", messages.Usage{PromptTokens: 2006, CompletionTokens: 300, TotalTokens: 2306,
			PromptTokensDetails: &messages.PromptTokensDetails{CachedTokens: 1920}},
			86 * 2.5 / 1e6, 1920 * 1.25 / 1e6, 300 * 10.0 / 1e6, 0.002, (86*2.5+1920*1.25+300*10.0)/1e6 + 0.002},
		{"anthropic with cache reads and writes", messages.Usage{PromptTokens: 1250, CompletionTokens: 75, TotalTokens: 1325,
			PromptTokensDetails: &messages.PromptTokensDetails{CachedTokens: 1000}},
			250 * 2.5 / 1e6, 1000 * 1.25 / 1e6, 75 * 10.0 / 1e6, 0.002, (250*2.5+1000*1.25+75*10.0)/1e6 + 0.002},
		{"nothing cached", messages.Usage{PromptTokens: 1_000_000, CompletionTokens: 1_000_000, TotalTokens: 2_000_000},
			2.5, 0, 10, 0.002, 12.502},
		{"embeddings: a prompt alone", messages.Usage{PromptTokens: 400, TotalTokens: 400}, 400 * 2.5 / 1e6, 0, 0, 0.002, 400*2.5/1e6 + 0.002},
		{"a cached count above the prompt is the prompt", messages.Usage{PromptTokens: 10, CompletionTokens: 0, TotalTokens: 10,
			PromptTokensDetails: &messages.PromptTokensDetails{CachedTokens: 50}}, 0, 10 * 1.25 / 1e6, 0, 0.002, 10*1.25/1e6 + 0.002},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := r.Cost(tc.usage)
			if c.Currency != "USD" || c.Estimated || c.ReservedTokens != 0 {
				t.Errorf("cost %+v: want USD, not estimated", c)
			}
			if !near(c.Input, tc.input) || !near(c.CachedInput, tc.cached) || !near(c.Output, tc.output) || !near(c.Request, tc.request) || !near(c.Total, tc.total) {
				t.Errorf("cost %+v, want input %g cached %g output %g request %g total %g", c, tc.input, tc.cached, tc.output, tc.request, tc.total)
			}
		})
	}
	e := r.Estimate(1200)
	if !e.Estimated || e.ReservedTokens != 1200 || !near(e.Total, 1200*10.0/1e6+0.002) || e.Request != 0.002 || e.Currency != "USD" {
		t.Errorf("estimate of 1200 reserved tokens: %+v, want them all at the output price, 10, plus the request's", e)
	}
	// The highest rate is the worst case, whichever it is.
	if e := (Rates{Input: 5, CachedInput: 7, Output: 3}).Estimate(1e6); !near(e.Total, 7) {
		t.Errorf("estimate at the highest rate: %+v, want 7", e)
	}
	if e := r.Estimate(0); !e.Estimated || !near(e.Total, 0.002) {
		t.Errorf("estimate of no reserved tokens: %+v, want the request's price", e)
	}
	if f := r.Free(); f.Total != 0 || f.Currency != "USD" || f.Estimated {
		t.Errorf("free: %+v", f)
	}
}

// The currency is USD when prices.currency is left out; what is written
// is kept.
func TestCurrency(t *testing.T) {
	cfg, err := Parse([]byte(minimal))
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Currency() != "USD" {
		t.Errorf("default currency %q", cfg.Currency())
	}
	for _, code := range []string{"EUR", "GBP", "JPY", "CHF", "VES", "ZWG"} {
		cfg, err := Parse([]byte(minimal + "prices: {currency: " + code + "}\n"))
		if err != nil || cfg.Currency() != code {
			t.Errorf("currency %s: %v, %q", code, err, cfg.Currency())
		}
	}
}
