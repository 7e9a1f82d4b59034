// Package usage owns the figures people bring to a quota discussion: per
// team, pool and tier, how many calls were made, how they ended, the
// tokens they used (and how many of the prompt's were cached), what they
// cost, the 429s they met, and how long they waited (and how many waited
// past their tier's target_wait or failed for lack of capacity, when they
// arrived by the minute, and which regions served them: what
// services/plan needs), rolled up per hour
// in KV bucket SLUICE_USAGE so that they survive restarts (kept
// streams.usage_max_age, 90 days).
//
// Costs are the results' (messages.Result.Cost, at the configured
// prices), added up per currency, with the part estimated at
// reservations, for answers that reported no usage, kept apart.
//
// Every service that ends calls (dispatchers for the calls they refuse,
// executors for the rest) records into a Recorder, which merges its
// figures into the bucket every few seconds with compare-and-swap, one
// write per roll-up touched, whatever the traffic. Query reads them back
// over a span; QueryBy splits the span by UTC day (Daily).
package usage

import (
	"math"
	"time"

	"github.com/sluicehq/sluice/messages"
)

// Record is one team's use of one pool at one tier during one hour.
type Record struct {
	Hour time.Time     `json:"hour"`
	Team string        `json:"team"`
	Pool string        `json:"pool"`
	Tier messages.Tier `json:"tier"`
	// Calls ended, OK of them successfully; Errors by code.
	Calls  int64                   `json:"calls"`
	OK     int64                   `json:"ok"`
	Errors map[messages.Code]int64 `json:"errors,omitempty"`
	// Attempts counts the provider requests the calls made (their
	// results' attempts), including ones that may have reached the
	// provider before their executor died.
	Attempts int64 `json:"attempts"`
	// RateLimited counts the provider 429s the team's attempts met.
	RateLimited int64 `json:"provider_429s"`
	// Tokens the providers reported; CachedPromptTokens of the prompt
	// tokens were read from the providers' prompt caches.
	PromptTokens       int64 `json:"prompt_tokens"`
	CachedPromptTokens int64 `json:"cached_prompt_tokens,omitempty"`
	CompletionTokens   int64 `json:"completion_tokens"`
	TotalTokens        int64 `json:"total_tokens"`
	// Cost adds up the results' costs, per currency (one, unless
	// prices.currency changed): what the calls of priced pools cost.
	// EstimatedCost is the part of it charged at reservations, for
	// answers without usage (messages.Cost.Estimated).
	Cost          map[string]float64 `json:"cost,omitempty"`
	EstimatedCost map[string]float64 `json:"estimated_cost,omitempty"`
	// Wait is the distribution of the time calls waited for admission.
	Wait Histogram `json:"wait"`
	// Late counts the calls that waited for admission longer than their
	// tier's target (tiers.<tier>.target_wait, as configured when the
	// call ended) and were not Unserved: Late plus Unserved is the unmet
	// demand, each call counted once.
	Late int64 `json:"late,omitempty"`
	// Unserved counts the calls that failed for lack of capacity: refused
	// queue_full, past their deadline before any provider request
	// (deadline_exceeded with no attempt: they waited it out), or given
	// up on after the providers kept answering 429 (rate_limited).
	Unserved int64 `json:"unserved,omitempty"`
	// ByMinute counts the calls by the minute of the hour they arrived
	// in (their results' accepted_at), so that a plan sees the busiest
	// minute and not only the hour's average; nil when none was counted.
	ByMinute []int64 `json:"by_minute,omitempty"`
	// Regions counts the calls that made a provider request by the region
	// of the deployment of their last (a region no deployment is in is
	// config.Unknown): where the demand was served.
	Regions map[string]int64 `json:"regions,omitempty"`
}

// Minutes is the length of Record.ByMinute.
const Minutes = 60

// Unserved reports whether a result is of a call that failed for lack of
// capacity (see Record.Unserved).
func Unserved(res *messages.Result) bool {
	if res.Error == nil {
		return false
	}
	switch res.Error.Code {
	case messages.CodeQueueFull, messages.CodeRateLimited:
		return true
	case messages.CodeDeadlineExceeded:
		return res.Attempts == 0
	}
	return false
}

// Add merges o into r.
func (r *Record) Add(o *Record) {
	r.Calls += o.Calls
	r.OK += o.OK
	for code, n := range o.Errors {
		if r.Errors == nil {
			r.Errors = map[messages.Code]int64{}
		}
		r.Errors[code] += n
	}
	r.Attempts += o.Attempts
	r.RateLimited += o.RateLimited
	r.PromptTokens += o.PromptTokens
	r.CachedPromptTokens += o.CachedPromptTokens
	r.CompletionTokens += o.CompletionTokens
	r.TotalTokens += o.TotalTokens
	r.Cost = addCosts(r.Cost, o.Cost)
	r.EstimatedCost = addCosts(r.EstimatedCost, o.EstimatedCost)
	r.Wait.Add(&o.Wait)
	r.Late += o.Late
	r.Unserved += o.Unserved
	if len(o.ByMinute) > 0 {
		if len(r.ByMinute) != Minutes {
			r.ByMinute = append(r.ByMinute, make([]int64, Minutes-min(len(r.ByMinute), Minutes))...)[:Minutes]
		}
		for i, n := range o.ByMinute[:min(len(o.ByMinute), Minutes)] {
			r.ByMinute[i] += n
		}
	}
	for region, n := range o.Regions {
		if r.Regions == nil {
			r.Regions = map[string]int64{}
		}
		r.Regions[region] += n
	}
}

// AddCost counts a result's cost.
func (r *Record) AddCost(c *messages.Cost) {
	if c == nil {
		return
	}
	r.Cost = addCosts(r.Cost, map[string]float64{c.Currency: c.Total})
	if c.Estimated {
		r.EstimatedCost = addCosts(r.EstimatedCost, map[string]float64{c.Currency: c.Total})
	}
}

// addCosts adds o to to, per currency, and returns to (made if nil and
// o has something).
func addCosts(to, o map[string]float64) map[string]float64 {
	for cur, v := range o {
		if to == nil {
			to = map[string]float64{}
		}
		to[cur] += v
	}
	return to
}

// ErrorCount is the number of calls that ended in an error.
func (r *Record) ErrorCount() int64 {
	var n int64
	for _, c := range r.Errors {
		n += c
	}
	return n
}

// Histogram counts durations in buckets whose upper bounds double from
// 1 ms: bucket i holds durations below 2^i ms (the last holds the rest).
// Histograms of different services and hours add up exactly, which
// percentiles do not.
type Histogram struct {
	Counts [histogramBuckets]int64 `json:"counts"`
}

const histogramBuckets = 26 // up to 2^24 ms (4.7 hours), then the rest

// Observe counts one duration.
func (h *Histogram) Observe(d time.Duration) {
	ms := float64(d) / float64(time.Millisecond)
	i := 0
	if ms >= 1 {
		i = min(int(math.Floor(math.Log2(ms)))+1, histogramBuckets-1)
	}
	h.Counts[i]++
}

// Add merges o into h.
func (h *Histogram) Add(o *Histogram) {
	for i := range h.Counts {
		h.Counts[i] += o.Counts[i]
	}
}

// Quantile estimates the q-quantile (0 < q ≤ 1): the upper bound of the
// bucket it falls in, so it errs high by at most a factor of two.
func (h *Histogram) Quantile(q float64) time.Duration {
	var total int64
	for _, c := range h.Counts {
		total += c
	}
	if total == 0 {
		return 0
	}
	rank := int64(math.Ceil(q * float64(total)))
	var seen int64
	for i, c := range h.Counts {
		seen += c
		if seen >= rank {
			return time.Duration(math.Pow(2, float64(i))) * time.Millisecond
		}
	}
	return time.Duration(math.Pow(2, histogramBuckets-1)) * time.Millisecond
}
