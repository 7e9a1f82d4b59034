package fakeprovider

import (
	"fmt"
	"slices"
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
	// admission), whatever the enforcement model. Tests use them to prove
	// that what reached the provider stayed within a limit; MaxRequestsIn
	// answers for other spans.
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

// tally is Counters plus the sliding windows behind its Max fields and
// MaxRequestsIn: one per counted span.
type tally struct {
	c       Counters
	windows []window // by span, shortest first
}

func newTally(spans []time.Duration) *tally {
	t := &tally{windows: make([]window, len(spans))}
	for i, s := range spans {
		t.windows[i].span = s
	}
	return t
}

func (t *tally) admitted(at time.Time, tokens int64) {
	for i := range t.windows {
		w := &t.windows[i]
		w.add(at, tokens)
		switch w.span {
		case time.Second:
			t.c.MaxRequests1s, t.c.MaxTokens1s = w.maxCount, w.maxSum
		case time.Minute:
			t.c.MaxRequests60s, t.c.MaxTokens60s = w.maxCount, w.maxSum
		}
	}
}

// maxRequestsIn is the most calls admitted in any window of span; ok is
// false for a span that is not counted.
func (t *tally) maxRequestsIn(span time.Duration) (n int64, ok bool) {
	i, ok := slices.BinarySearchFunc(t.windows, span, func(w window, s time.Duration) int { return int(w.span - s) })
	if !ok {
		return 0, false
	}
	return t.windows[i].maxCount, true
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
	spans []time.Duration // counted, sorted, each once; fixed at New
	total *tally
	keys  map[string]*tally
}

func newRecorder(spans []time.Duration) *recorder {
	return &recorder{spans: spans, total: newTally(spans), keys: make(map[string]*tally)}
}

// countedSpans are the spans whose most requests are counted: 1s and 60s
// (the Counters' Max fields), Config.CountSpans, and the spans of every
// window the Config names, sorted and each once.
func countedSpans(c Config) []time.Duration {
	spans := append([]time.Duration{time.Second, time.Minute}, c.CountSpans...)
	add := func(ws []Window) {
		for _, w := range ws {
			spans = append(spans, w.Span)
		}
	}
	add(c.Windows)
	add(c.DefaultKey.Windows)
	for _, kc := range c.Keys {
		add(kc.Windows)
	}
	slices.Sort(spans)
	return slices.Compact(spans)
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
		t = newTally(r.spans)
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
	r.total = newTally(r.spans)
	r.keys = make(map[string]*tally)
}

// maxRequestsIn is the most calls admitted to key ("" for all keys
// together) in any window (t-span, t] ending at an admission.
func (r *recorder) maxRequestsIn(key string, span time.Duration) (int64, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	n, ok := r.total.maxRequestsIn(span) // every tally counts the same spans
	if !ok {
		return 0, fmt.Errorf("fakeprovider: the most requests in %v are not counted (counted: %v); add it to Config.CountSpans", span, r.spans)
	}
	if key != "" {
		n = 0 // a key that had no call yet
		if t := r.keys[key]; t != nil {
			n, _ = t.maxRequestsIn(span)
		}
	}
	return n, nil
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
