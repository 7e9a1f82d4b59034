package fakeprovider

import (
	"net/http"
	"reflect"
	"sync"
	"testing"
	"time"
)

func TestConcurrentCounters(t *testing.T) {
	// The clock stands still, so each key admits exactly its burst of 10
	// however the calls interleave.
	keys := map[string]KeyConfig{"sk-a": {RPM: 600}, "sk-b": {RPM: 600, TPM: 600_000}, "sk-c": {RPM: 600}}
	h := newHarness(t, Config{Keys: keys})
	const workers, calls = 24, 25
	var wg sync.WaitGroup
	for w := range workers {
		wg.Go(func() {
			for i := range calls {
				key := []string{"sk-a", "sk-b", "sk-c", "sk-nobody"}[(w+i)%4]
				body := helloChat(`,"max_tokens":4`)
				if i%7 == 0 {
					body = `{"model":"m"}` // invalid
				}
				r, err := h.do(t.Context(), http.MethodPost, "/v1/chat/completions", key, body)
				if err != nil {
					t.Error(err)
					return
				}
				if r.status != 200 && r.status != 429 && r.status != 400 && r.status != 401 {
					t.Errorf("status %d", r.status)
				}
			}
		})
	}
	wg.Wait()

	st := h.fake.Stats()
	tot := st.Total
	if tot.Received != workers*calls || tot.Finished() != tot.Received {
		t.Errorf("total received %d, finished %d, want %d", tot.Received, tot.Finished(), workers*calls)
	}
	if tot.Served+tot.Refused()+tot.InvalidRequests+tot.Unauthorized != tot.Received {
		t.Errorf("served %d + refused %d + invalid %d + unauthorized %d != received %d",
			tot.Served, tot.Refused(), tot.InvalidRequests, tot.Unauthorized, tot.Received)
	}
	if tot.Served != 30 || tot.MaxRequests1s != 30 {
		t.Errorf("served %d, max in 1s %d; want 10 per key", tot.Served, tot.MaxRequests1s)
	}
	var sum Counters
	for k, c := range st.Keys {
		if c.Served != 10 || c.MaxRequests1s != 10 || c.MaxRequests60s != 10 {
			t.Errorf("%s served %d, max %d/%d; want 10", k, c.Served, c.MaxRequests1s, c.MaxRequests60s)
		}
		if c.Served+c.Refused()+c.InvalidRequests != c.Received {
			t.Errorf("%s: counters do not add up: %+v", k, c)
		}
		sum.Received += c.Received
		sum.TotalTokens += c.TotalTokens
	}
	if sum.Received+tot.Unauthorized != tot.Received || sum.TotalTokens != tot.TotalTokens {
		t.Errorf("keys add up to %+v, total %+v", sum, tot)
	}
	if tot.TotalTokens != 30*(helloPrompt+4) {
		t.Errorf("total tokens %d, want %d", tot.TotalTokens, 30*(helloPrompt+4))
	}
}

func TestWindow(t *testing.T) {
	t0 := time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC)
	tests := []struct {
		name      string
		span      time.Duration
		at        []time.Duration // offsets from t0
		wantCount int64
	}{
		{"one per second is one per second", time.Second, []time.Duration{0, time.Second, 2 * time.Second}, 1},
		{"just under a second apart", time.Second, []time.Duration{0, time.Second - 1, 2 * time.Second}, 2},
		{"a burst", time.Second, []time.Duration{0, 0, 0, 3 * time.Second}, 3},
		{"burst at a boundary", time.Second, []time.Duration{900 * time.Millisecond, 950 * time.Millisecond, 1000 * time.Millisecond, 1100 * time.Millisecond, 1950 * time.Millisecond}, 4},
		{"a clock stepping back counts at the latest time", time.Second, []time.Duration{5 * time.Second, 0, 6 * time.Second}, 2},
		{"minute", time.Minute, []time.Duration{0, 30 * time.Second, 59 * time.Second, 60 * time.Second, 61 * time.Second}, 4},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			w := window{span: tt.span}
			for i, d := range tt.at {
				w.add(t0.Add(d), int64(i+1))
			}
			if w.maxCount != tt.wantCount {
				t.Errorf("max count %d, want %d", w.maxCount, tt.wantCount)
			}
		})
	}
	// Sums and compaction over many events.
	w := window{span: time.Second}
	for i := range 10_000 {
		w.add(t0.Add(time.Duration(i)*time.Millisecond), 2)
	}
	if w.maxCount != 1000 || w.maxSum != 2000 || len(w.events)-w.head != 1000 || len(w.events) > 4000 {
		t.Errorf("count %d sum %d live %d stored %d", w.maxCount, w.maxSum, len(w.events)-w.head, len(w.events))
	}
}

func TestMaxObserved(t *testing.T) {
	// 120 RPM over a minute: a bucket of 120, refilled at 2 per second.
	h := newHarness(t, Config{Quantum: time.Minute, Keys: map[string]KeyConfig{"sk-a": {RPM: 120}}})
	body := helloChat(`,"max_tokens":1`) // 10 tokens each
	burst := func() (n int64) {
		for h.chat("sk-a", body).status == http.StatusOK {
			n++
		}
		return n
	}
	steps := []struct {
		advance      time.Duration
		admitted     int64
		max1s, max60 int64
	}{
		{0, 120, 120, 120},
		{30 * time.Second, 60, 120, 180},
		{31 * time.Second, 62, 120, 180}, // the first 120 left the window
		{59 * time.Second, 118, 120, 180},
	}
	for i, s := range steps {
		h.clock.Advance(s.advance)
		if n := burst(); n != s.admitted {
			t.Fatalf("step %d: admitted %d, want %d", i, n, s.admitted)
		}
		c := h.fake.Stats().Keys["sk-a"]
		if c.MaxRequests1s != s.max1s || c.MaxRequests60s != s.max60 ||
			c.MaxTokens1s != 10*s.max1s || c.MaxTokens60s != 10*s.max60 {
			t.Errorf("step %d: max 1s %d/%d tokens, 60s %d/%d tokens; want %d, %d",
				i, c.MaxRequests1s, c.MaxTokens1s, c.MaxRequests60s, c.MaxTokens60s, s.max1s, s.max60)
		}
	}
}

func TestStatsEndpointAndReset(t *testing.T) {
	h := newHarness(t, Config{Keys: map[string]KeyConfig{"sk-a": {RPM: 60}}})
	start := h.clock.Now()
	h.chat("sk-a", helloChat(""))
	h.clock.Advance(5 * time.Second)
	h.chat("sk-a", helloChat(""))
	h.chat("sk-a", helloChat("")) // refused
	h.chat("sk-x", helloChat("")) // unauthorized

	r, err := h.do(t.Context(), http.MethodGet, "/fake/stats", "", "")
	if err != nil || r.status != http.StatusOK {
		t.Fatalf("GET /fake/stats: %v %d", err, r.status)
	}
	var fromJSON Stats
	r.decode(t, &fromJSON)
	if want := h.fake.Stats(); !reflect.DeepEqual(fromJSON, want) {
		t.Errorf("JSON stats\n%+v\nwant\n%+v", fromJSON, want)
	}
	var raw map[string]map[string]any
	r.decode(t, &raw)
	for _, field := range []string{"received", "served", "rate_limited_requests", "rate_limited_tokens",
		"insufficient_quota", "injected_errors", "timeouts", "stream_aborted", "prompt_tokens",
		"completion_tokens", "total_tokens", "first_served", "last_served", "max_requests_1s", "max_requests_60s"} {
		if _, ok := raw["total"][field]; !ok {
			t.Errorf("JSON total has no %q", field)
		}
	}
	c := fromJSON.Keys["sk-a"]
	if c.Received != 3 || c.Served != 2 || c.RateLimitedRequests != 1 || fromJSON.Total.Unauthorized != 1 || fromJSON.Total.Received != 4 {
		t.Errorf("counters %+v, total %+v", c, fromJSON.Total)
	}
	if !c.FirstServed.Equal(start) || !c.LastServed.Equal(start.Add(5*time.Second)) {
		t.Errorf("served from %v to %v, want %v to %v", c.FirstServed, c.LastServed, start, start.Add(5*time.Second))
	}

	r, err = h.do(t.Context(), http.MethodPost, "/fake/reset", "", "")
	if err != nil || r.status != http.StatusNoContent {
		t.Fatalf("POST /fake/reset: %v %d", err, r.status)
	}
	if st := h.fake.Stats(); !reflect.DeepEqual(st, Stats{Keys: map[string]Counters{}}) {
		t.Errorf("after reset %+v", st)
	}
	// The buckets are full again.
	if r := h.chat("sk-a", helloChat("")); r.status != http.StatusOK {
		t.Errorf("after reset: %d", r.status)
	}
	if r := h.chat("sk-a", helloChat("")); r.status != http.StatusTooManyRequests {
		t.Errorf("after reset, past the burst: %d", r.status)
	}
}
