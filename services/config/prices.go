package config

import (
	"math"
	"slices"

	"github.com/sluicehq/sluice/messages"
)

// Prices sets what is common to every price in the configuration.
type Prices struct {
	// Currency is the ISO 4217 code (three capitals, such as USD or EUR)
	// of every price in the configuration, and so of every cost.
	// Default USD, the currency providers bill in.
	Currency string `yaml:"currency,omitempty"`
}

// DefaultCurrency is the currency of prices when prices.currency is left
// out.
const DefaultCurrency = "USD"

// Price is a price table: what a deployment's provider charges, in
// prices.currency. A pool's table sets input and output (cached_input
// and per_request are optional); a deployment's table overrides the
// entries it sets, and one of a pool without a table must set input and
// output itself. A price left out (nil) is inherited; one written as 0
// is free.
type Price struct {
	// Input is the price of a million prompt tokens not read from the
	// provider's cache (Anthropic's cache writes among them).
	Input *float64 `yaml:"input,omitempty"`
	// CachedInput is the price of a million prompt tokens read from the
	// provider's cache. Default: Input.
	CachedInput *float64 `yaml:"cached_input,omitempty"`
	// Output is the price of a million completion tokens.
	Output *float64 `yaml:"output,omitempty"`
	// PerRequest is the price of each provider request that answered.
	// Default 0.
	PerRequest *float64 `yaml:"per_request,omitempty"`
}

// Rates are a deployment's prices in effect: its pool's table with the
// deployment's overrides, every default filled.
type Rates struct {
	Currency string
	// Input, CachedInput and Output are per million tokens.
	Input, CachedInput, Output float64
	PerRequest                 float64
}

// Rates returns the prices in effect for the deployment, and false when
// the configuration prices neither its pool nor it. Set by validation.
func (d *Deployment) Rates() (Rates, bool) {
	if d.rates == nil {
		return Rates{}, false
	}
	return *d.rates, true
}

// Currency is the currency of every price: prices.currency, or
// DefaultCurrency.
func (c *Config) Currency() string {
	if c.Prices.Currency == "" {
		return DefaultCurrency
	}
	return c.Prices.Currency
}

// perMillion is the unit of token prices.
const perMillion = 1e6

// Cost prices what the provider reported: prompt tokens not read from
// cache at Input, those read from it at CachedInput, completion tokens
// at Output, and one request at PerRequest.
func (r Rates) Cost(u messages.Usage) *messages.Cost {
	cached := min(max(u.CachedTokens(), 0), u.PromptTokens)
	c := &messages.Cost{
		Currency:    r.Currency,
		Input:       float64(u.PromptTokens-cached) * r.Input / perMillion,
		CachedInput: float64(cached) * r.CachedInput / perMillion,
		Output:      float64(u.CompletionTokens) * r.Output / perMillion,
		Request:     r.PerRequest,
	}
	c.Total = c.Input + c.CachedInput + c.Output + c.Request
	return c
}

// Estimate prices a provider answer that reported no usage at its
// worst case: every reserved token (the prompt estimate plus max_tokens)
// at the highest of the token prices, and one request. It is marked
// Estimated.
func (r Rates) Estimate(reserved int64) *messages.Cost {
	reserved = max(reserved, 0)
	highest := max(r.Input, r.CachedInput, r.Output)
	return &messages.Cost{
		Currency:       r.Currency,
		Total:          float64(reserved)*highest/perMillion + r.PerRequest,
		Request:        r.PerRequest,
		Estimated:      true,
		ReservedTokens: reserved,
	}
}

// Free is the cost of a request the provider does not charge (token
// counting, fetching or deleting a stored response): 0.
func (r Rates) Free() *messages.Cost { return &messages.Cost{Currency: r.Currency} }

// validatePrices checks prices.currency.
func (c *Config) validatePrices(v *validator) {
	cur := c.Prices.Currency
	switch {
	case cur == "" && v.written["prices.currency"]:
		v.addKind(ErrUnknownCurrency, "prices.currency", "must not be empty: leave it out for the default, %s", DefaultCurrency)
	case cur == "":
	case !slices.Contains(currencies, cur):
		v.addKind(ErrUnknownCurrency, "prices.currency", "unknown currency %q: give the ISO 4217 code of a currency in capitals, such as USD, EUR or GBP", cur)
	}
}

// validateRates checks the price table of deployment d (field df) of
// pool p, and sets what d's prices are in effect.
func (c *Config) validateRates(v *validator, p *Pool, df string, d *Deployment) {
	d.rates = nil
	if p.Prices == nil && d.Prices == nil {
		return
	}
	r := Rates{Currency: c.Currency()}
	var in, cached, out, req *float64
	if p.Prices != nil {
		in, cached, out, req = p.Prices.Input, p.Prices.CachedInput, p.Prices.Output, p.Prices.PerRequest
	}
	if d.Prices != nil {
		checkPrices(v, df+".prices", d.Prices)
		in, cached, out, req = or(d.Prices.Input, in), or(d.Prices.CachedInput, cached), or(d.Prices.Output, out), or(d.Prices.PerRequest, req)
		if p.Prices == nil {
			// The pool has no table for the deployment to override: its
			// own must be whole. (A pool's table is checked once, by the
			// pool.)
			for _, m := range []struct {
				name string
				p    *float64
			}{{"input", d.Prices.Input}, {"output", d.Prices.Output}} {
				if m.p == nil {
					v.addKind(ErrMissingPrice, df+".prices."+m.name, "is required: pool %s has no prices for it to override", p.name)
				}
			}
		}
	}
	r.Input, r.Output, r.PerRequest = deref(in), deref(out), deref(req)
	r.CachedInput = deref(or(cached, in))
	d.rates = &r
}

// validatePoolPrices checks a pool's price table.
func validatePoolPrices(v *validator, pf string, p *Pool) {
	if p.Prices == nil {
		return
	}
	checkPrices(v, pf+".prices", p.Prices)
	if p.Prices.Input == nil {
		v.addKind(ErrMissingPrice, pf+".prices.input", "is required: the price of a million input tokens (0 if they are free)")
	}
	if p.Prices.Output == nil {
		v.addKind(ErrMissingPrice, pf+".prices.output", "is required: the price of a million output tokens (0 if they are free)")
	}
}

// MaxPrice bounds every price, so that no count of tokens a provider may
// report makes a cost that JSON cannot hold: a billion of any currency
// per million tokens or per request.
const MaxPrice = 1e9

// checkPrices refuses the prices of a table that no provider charges:
// negative ones, ones above MaxPrice, and ones that are not numbers
// (.nan, .inf).
func checkPrices(v *validator, field string, p *Price) {
	for _, e := range []struct {
		name string
		p    *float64
	}{{"input", p.Input}, {"cached_input", p.CachedInput}, {"output", p.Output}, {"per_request", p.PerRequest}} {
		switch {
		case e.p == nil:
		case math.IsNaN(*e.p) || math.IsInf(*e.p, 0):
			v.addKind(ErrInvalidPrice, field+"."+e.name, "must be a number, not %v", *e.p)
		case *e.p < 0:
			v.addKind(ErrInvalidPrice, field+"."+e.name, "must not be negative (0 if it is free)")
		case *e.p > MaxPrice:
			v.addKind(ErrInvalidPrice, field+"."+e.name, "must be at most %g (prices are per million tokens, or per request)", float64(MaxPrice))
		}
	}
}

func or(a, b *float64) *float64 {
	if a != nil {
		return a
	}
	return b
}

func deref(p *float64) float64 {
	if p == nil {
		return 0
	}
	return *p
}

// currencies are the codes of ISO 4217's current currencies (its list
// one), without those of precious metals (XAU, XAG, XPD, XPT), bond
// units (XBA to XBD), testing (XTS) and no currency (XXX), which no
// provider bills in.
var currencies = []string{
	"AED", "AFN", "ALL", "AMD", "ANG", "AOA", "ARS", "AUD", "AWG", "AZN",
	"BAM", "BBD", "BDT", "BGN", "BHD", "BIF", "BMD", "BND", "BOB", "BOV", "BRL", "BSD", "BTN", "BWP", "BYN", "BZD",
	"CAD", "CDF", "CHE", "CHF", "CHW", "CLF", "CLP", "CNY", "COP", "COU", "CRC", "CUP", "CVE", "CZK",
	"DJF", "DKK", "DOP", "DZD",
	"EGP", "ERN", "ETB", "EUR",
	"FJD", "FKP",
	"GBP", "GEL", "GHS", "GIP", "GMD", "GNF", "GTQ", "GYD",
	"HKD", "HNL", "HTG", "HUF",
	"IDR", "ILS", "INR", "IQD", "IRR", "ISK",
	"JMD", "JOD", "JPY",
	"KES", "KGS", "KHR", "KMF", "KPW", "KRW", "KWD", "KYD", "KZT",
	"LAK", "LBP", "LKR", "LRD", "LSL", "LYD",
	"MAD", "MDL", "MGA", "MKD", "MMK", "MNT", "MOP", "MRU", "MUR", "MVR", "MWK", "MXN", "MXV", "MYR", "MZN",
	"NAD", "NGN", "NIO", "NOK", "NPR", "NZD",
	"OMR",
	"PAB", "PEN", "PGK", "PHP", "PKR", "PLN", "PYG",
	"QAR",
	"RON", "RSD", "RUB", "RWF",
	"SAR", "SBD", "SCR", "SDG", "SEK", "SGD", "SHP", "SLE", "SOS", "SRD", "SSP", "STN", "SVC", "SYP", "SZL",
	"THB", "TJS", "TMT", "TND", "TOP", "TRY", "TTD", "TWD", "TZS",
	"UAH", "UGX", "USD", "USN", "UYI", "UYU", "UYW", "UZS",
	"VED", "VES", "VND", "VUV",
	"WST",
	"XAF", "XCD", "XCG", "XDR", "XOF", "XPF", "XSU", "XUA",
	"YER",
	"ZAR", "ZMW", "ZWG",
}
