package executor

import (
	"github.com/sluicehq/sluice/messages"
	"github.com/sluicehq/sluice/services/config"
)

// costOf is what an answer from deployment dep to work w cost, at the
// deployment's prices (nil when it has none): the usage the provider
// reported, priced; or, when it reported none (nil), the worst case of
// the reservation, marked estimated, so that an answer is never free
// for want of a count. Token counting and stored-response fetches and
// deletes, which providers do not charge, cost 0.
//
// Only answers are priced: a request the provider refused, answered 429
// or 5xx, or did not answer in time gets no cost from the executor.
func costOf(dep *config.Deployment, w *messages.Work, u *messages.Usage) *messages.Cost {
	r, ok := dep.Rates()
	if !ok {
		return nil
	}
	switch w.Call.Endpoint {
	case messages.EndpointCountTokens, messages.EndpointResponseGet, messages.EndpointResponseDelete:
		return r.Free()
	}
	if u != nil {
		return r.Cost(*u)
	}
	return r.Estimate(w.ReservedTokens)
}

// costReported is what an attempt's report tells the admitting
// dispatcher it cost: its result's cost; nil when it has no result (it
// is retried) or no cost.
func costReported(o outcome) *messages.Cost {
	if o.result == nil {
		return nil
	}
	return o.result.Cost
}
