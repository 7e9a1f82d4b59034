package fakeprovider

import (
	"sync"
	"time"
)

// Counters is what the fake served and refused, for one key or in total.
// Every call that reaches a metered endpoint is Received once and ends in
// exactly one of the outcome counters, so that once calls are finished
//
//	Received == Served + Refused() + InvalidRequests + Unauthorized +
//	            InjectedErrors + Overloaded + Timeouts + Canceled + StreamAborts
type Counters struct {
	Received int64 `json:"received"`
	// Served counts calls answered 2xx to the end.
	Served int64 `json:"served"`
	// RateLimitedRequests and RateLimitedTokens count 429
	// rate_limit_exceeded by the bucket that refused.
	RateLimitedRequests int64 `json:"rate_limited_requests"`
	RateLimitedTokens   int64 `json:"rate_limited_tokens"`
	// InsufficientQuota counts 429 insufficient_quota.
	InsufficientQuota int64 `json:"insufficient_quota"`
	// InvalidRequests counts 400s (including a missing api-version or
	// anthropic-version) and 404s for unknown models.
	InvalidRequests int64 `json:"invalid_requests"`
	// Unauthorized counts 401s. Only in the totals: an unknown key is not
	// given counters of its own.
	Unauthorized int64 `json:"unauthorized"`
	// InjectedErrors, Timeouts: admitted calls that ErrorRate and
	// TimeoutRate picked.
	InjectedErrors int64 `json:"injected_errors"`
	Timeouts       int64 `json:"timeouts"`
	// Overloaded counts admitted calls that OverloadRate picked (529
	// overloaded_error for Anthropic, 503 for the OpenAI dialects).
	Overloaded int64 `json:"overloaded"`
	// Canceled counts admitted calls whose client went away before the
	// answer (during Latency).
	Canceled int64 `json:"canceled"`
	// StreamAborts counts streams whose client went away mid-stream.
	StreamAborts int64 `json:"stream_aborted"`

	// Tokens of served calls, as reported in their usage.
	PromptTokens     int64 `json:"prompt_tokens"`
	CompletionTokens int64 `json:"completion_tokens"`
	TotalTokens      int64 `json:"total_tokens"`

	// FirstServed and LastServed are the clock's readings at the admission
	// of the first and last served calls, so that utilization over the
	// run can be computed.
	FirstServed time.Time `json:"first_served,omitzero"`
	LastServed  time.Time `json:"last_served,omitzero"`

	// The most calls admitted, and tokens charged at admission, in any
	// sliding window of 1s and of 60s (a window (t-w, t] ending at an
	// admission). Tests use them to prove that what reached the provider
	// stayed within a limit.
	MaxRequests1s  int64 `json:"max_requests_1s"`
	MaxRequests60s int64 `json:"max_requests_60s"`
	MaxTokens1s    int64 `json:"max_tokens_1s"`
	MaxTokens60s   int64 `json:"max_tokens_60s"`
}

// Refused is the number of 429s of every kind.
func (c Counters) Refused() int64 {
	return c.RateLimitedRequests + c.RateLimitedTokens + c.InsufficientQuota
}

// Finished is the number of calls that reached an outcome; it equals
// Received when no call is in flight.
func (c Counters) Finished() int64 {
	return c.Served + c.Refused() + c.InvalidRequests + c.Unauthorized +
		c.InjectedErrors + c.Overloaded + c.Timeouts + c.Canceled + c.StreamAborts
}

// Stats is a snapshot of the counters.
type Stats struct {
	Total Counters            `json:"total"`
	Keys  map[string]Counters `json:"keys"`
}

// outcome is how a call ended.
type outcome int

const (
	outServed outcome = iota
	outRateLimitedRequests
	outRateLimitedTokens
	outInsufficientQuota
	outInvalid
	outUnauthorized
	outInjectedError
	outTimeout
	outCanceled
	outStreamAborted
	outOverloaded
)

// tally is Counters plus the sliding windows behind its Max fields.
type tally struct {
	c        Counters
	sec, min window
}

func newTally() *tally {
	return &tally{sec: window{span: time.Second}, min: window{span: time.Minute}}
}

func (t *tally) admitted(at time.Time, tokens int64) {
	t.sec.add(at, tokens)
	t.min.add(at, tokens)
	t.c.MaxRequests1s, t.c.MaxTokens1s = t.sec.maxCount, t.sec.maxSum
	t.c.MaxRequests60s, t.c.MaxTokens60s = t.min.maxCount, t.min.maxSum
}

func (t *tally) end(o outcome, admittedAt time.Time, u usage) {
	c := &t.c
	switch o {
	case outServed:
		c.Served++
		c.PromptTokens += u.PromptTokens
		c.CompletionTokens += u.CompletionTokens
		c.TotalTokens += u.TotalTokens
		if c.FirstServed.IsZero() || admittedAt.Before(c.FirstServed) {
			c.FirstServed = admittedAt
		}
		if admittedAt.After(c.LastServed) {
			c.LastServed = admittedAt
		}
	case outRateLimitedRequests:
		c.RateLimitedRequests++
	case outRateLimitedTokens:
		c.RateLimitedTokens++
	case outInsufficientQuota:
		c.InsufficientQuota++
	case outInvalid:
		c.InvalidRequests++
	case outUnauthorized:
		c.Unauthorized++
	case outInjectedError:
		c.InjectedErrors++
	case outTimeout:
		c.Timeouts++
	case outCanceled:
		c.Canceled++
	case outStreamAborted:
		c.StreamAborts++
	case outOverloaded:
		c.Overloaded++
	}
}

// recorder keeps the counters. One mutex for all of them makes a Stats
// snapshot consistent across keys and the total.
type recorder struct {
	mu    sync.Mutex
	total *tally
	keys  map[string]*tally
}

func newRecorder() *recorder {
	return &recorder{total: newTally(), keys: make(map[string]*tally)}
}

// tallies calls f on the total and, when key is not empty, on the key's
// tally, under the lock.
func (r *recorder) tallies(key string, f func(*tally)) {
	r.mu.Lock()
	defer r.mu.Unlock()
	f(r.total)
	if key == "" {
		return
	}
	t, ok := r.keys[key]
	if !ok {
		t = newTally()
		r.keys[key] = t
	}
	f(t)
}

func (r *recorder) received(key string) {
	r.tallies(key, func(t *tally) { t.c.Received++ })
}

func (r *recorder) admitted(key string, at time.Time, tokens int64) {
	r.tallies(key, func(t *tally) { t.admitted(at, tokens) })
}

func (r *recorder) end(key string, o outcome, admittedAt time.Time, u usage) {
	r.tallies(key, func(t *tally) { t.end(o, admittedAt, u) })
}

func (r *recorder) snapshot() Stats {
	r.mu.Lock()
	defer r.mu.Unlock()
	s := Stats{Total: r.total.c, Keys: make(map[string]Counters, len(r.keys))}
	for k, t := range r.keys {
		s.Keys[k] = t.c
	}
	return s
}

func (r *recorder) reset() {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.total = newTally()
	r.keys = make(map[string]*tally)
}

// window tracks the largest count and sum of events in any interval
// (t-span, t] ending at an event. It keeps the events of the last span in
// a queue, so each event is added and dropped once. Events exactly span
// apart fall in different windows: 60 RPM admitted one per second is 1 per
// second, not 2.
type window struct {
	span     time.Duration
	events   []event
	head     int // events[head:] are inside the current window
	count    int64
	sum      int64
	last     time.Time
	maxCount int64
	maxSum   int64
}

type event struct {
	at time.Time
	n  int64
}

func (w *window) add(at time.Time, n int64) {
	// A clock that steps back would break the queue's order; count the
	// event at the latest time seen instead.
	if at.Before(w.last) {
		at = w.last
	}
	w.last = at
	w.events = append(w.events, event{at, n})
	w.count++
	w.sum += n
	cutoff := at.Add(-w.span)
	for w.head < len(w.events) && !w.events[w.head].at.After(cutoff) {
		w.count--
		w.sum -= w.events[w.head].n
		w.head++
	}
	w.maxCount = max(w.maxCount, w.count)
	w.maxSum = max(w.maxSum, w.sum)
	// Reclaim the dropped prefix once it is most of the slice.
	if w.head > 1024 && w.head*2 > len(w.events) {
		w.events = append(w.events[:0:0], w.events[w.head:]...)
		w.head = 0
	}
}

var outcomeNames = [...]string{
	outServed:              "served",
	outRateLimitedRequests: "rate_limited_requests",
	outRateLimitedTokens:   "rate_limited_tokens",
	outInsufficientQuota:   "insufficient_quota",
	outInvalid:             "invalid_request",
	outUnauthorized:        "unauthorized",
	outInjectedError:       "injected_error",
	outTimeout:             "timeout",
	outCanceled:            "canceled",
	outStreamAborted:       "stream_aborted",
	outOverloaded:          "overloaded",
}

func (o outcome) String() string { return outcomeNames[o] }
