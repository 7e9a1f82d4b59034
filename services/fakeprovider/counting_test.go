package fakeprovider

import (
	"maps"
	"net/http"
	"strings"
	"testing"
	"time"
)

func TestRequestsByCallID(t *testing.T) {
	h := newHarness(t, Config{Keys: map[string]KeyConfig{"sk-a": {RPM: 60}}}) // one a second
	chat := func(key, id, body string) int {
		r := h.send("/v1/chat/completions", map[string]string{"Authorization": "Bearer " + key, ClientRequestIDHeader: id}, body)
		return r.status
	}
	// Every outcome counts: served, refused, unauthorized, invalid.
	for _, c := range []struct {
		key, id, body string
		status        int
	}{
		{"sk-a", "call-1", helloChat(""), 200},
		{"sk-a", "call-1", helloChat(""), 429},
		{"sk-a", "call-1", helloChat(""), 429},
		{"sk-nobody", "call-2", helloChat(""), 401},
		{"sk-a", "call-2", `{"model":"m"}`, 400},
		{"sk-a", "", helloChat(""), 429}, // no header: not counted
	} {
		if got := chat(c.key, c.id, c.body); got != c.status {
			t.Fatalf("%+v: status %d", c, got)
		}
	}
	// Other dialects count in the same place.
	h.send("/v1/messages", map[string]string{"x-api-key": "sk-a", "anthropic-version": "2023-06-01", ClientRequestIDHeader: "call-3"}, `{}`)
	h.send("/openai/deployments/m/embeddings?api-version=1", map[string]string{"api-key": "sk-a", ClientRequestIDHeader: "call-3"}, `{}`)

	want := map[string]int64{"call-1": 3, "call-2": 2, "call-3": 2}
	got := h.fake.RequestsByCallID()
	if !maps.Equal(got, want) {
		t.Errorf("RequestsByCallID = %v, want %v", got, want)
	}
	got["call-1"] = 100 // a copy
	var fromJSON CallCounts
	r, err := h.do(t.Context(), http.MethodGet, "/fake/calls", "", "")
	if err != nil || r.status != http.StatusOK {
		t.Fatalf("GET /fake/calls: %v %d", err, r.status)
	}
	r.decode(t, &fromJSON)
	if !maps.Equal(fromJSON.Requests, want) || fromJSON.Overflow != 0 {
		t.Errorf("GET /fake/calls = %+v, want %v", fromJSON, want)
	}
	// Received counts each of them once, and one without the header.
	if st := h.fake.Stats(); st.Total.Received != 8 {
		t.Errorf("received %d, want 8", st.Total.Received)
	}

	h.fake.Reset()
	if got := h.fake.RequestsByCallID(); len(got) != 0 {
		t.Errorf("after Reset: %v", got)
	}
	chat("sk-a", "call-4", helloChat(""))
	if r, err := h.do(t.Context(), http.MethodPost, "/fake/reset", "", ""); err != nil || r.status != http.StatusNoContent {
		t.Fatalf("POST /fake/reset: %v", err)
	}
	if got := h.fake.CallCounts(); len(got.Requests) != 0 || got.Overflow != 0 {
		t.Errorf("after POST /fake/reset: %+v", got)
	}
}

func TestCallCounterBounds(t *testing.T) {
	c := newCallCounter(2, 8)
	for _, id := range []string{"a", "b", "a", "c", "b", "123456789", "", "c"} {
		c.count(id)
	}
	got := c.snapshot()
	if want := map[string]int64{"a": 2, "b": 2}; !maps.Equal(got.Requests, want) || got.Overflow != 3 {
		t.Errorf("counts %+v, want %v and 3 overflowing (c twice, one too long)", got, want)
	}
	c.reset()
	c.count("c")
	if got := c.snapshot(); !maps.Equal(got.Requests, map[string]int64{"c": 1}) || got.Overflow != 0 {
		t.Errorf("after reset %+v", got)
	}
}

func TestMaxRequestsIn(t *testing.T) {
	h := newHarness(t, Config{
		CountSpans: []time.Duration{100 * time.Millisecond},
		Keys: map[string]KeyConfig{
			"sk-a": {},
			"sk-b": {},
			// A key's own windows are counted too.
			"sk-w": {Enforce: EnforceWindows, Windows: []Window{{Span: 250 * time.Millisecond, Requests: 100}}},
			"sk-0": {},
		},
	})
	// sk-a admitted at +0, +50, +100, +150, +160ms and +1s: in 100ms,
	// (60, 160] holds 3; +0 and +100 are not in one window.
	var last time.Duration
	for _, d := range []time.Duration{0, 50, 100, 150, 160, 1000} {
		h.clock.Advance(d*time.Millisecond - last)
		last = d * time.Millisecond
		if r := h.chat("sk-a", helloChat("")); r.status != http.StatusOK {
			t.Fatalf("at +%dms: %d", d, r.status)
		}
		if d == 160 {
			h.chat("sk-b", helloChat(""))
		}
	}
	for _, tt := range []struct {
		key  string
		span time.Duration
		want int64
	}{
		{"sk-a", 100 * time.Millisecond, 3},
		{"sk-a", 250 * time.Millisecond, 5},
		{"sk-a", time.Second, 5}, // (0, 1s] does not hold +0
		{"sk-a", time.Minute, 6},
		{"sk-b", 100 * time.Millisecond, 1},
		{"", 100 * time.Millisecond, 4}, // every key: +100, +150, +160 twice
		{"sk-0", time.Second, 0},        // no call yet
		{"sk-unknown", time.Minute, 0},
	} {
		got, err := h.fake.MaxRequestsIn(tt.key, tt.span)
		if err != nil || got != tt.want {
			t.Errorf("MaxRequestsIn(%q, %v) = %d, %v; want %d", tt.key, tt.span, got, err, tt.want)
		}
	}
	// They agree with the Counters for the spans both count.
	c := h.fake.Stats().Keys["sk-a"]
	if n, _ := h.fake.MaxRequestsIn("sk-a", time.Second); n != c.MaxRequests1s {
		t.Errorf("1s: %d and %d", n, c.MaxRequests1s)
	}
	if _, err := h.fake.MaxRequestsIn("sk-a", 200*time.Millisecond); err == nil || !strings.Contains(err.Error(), "CountSpans") {
		t.Errorf("a span not counted: %v, want an error naming CountSpans", err)
	}
	h.fake.Reset()
	if n, err := h.fake.MaxRequestsIn("sk-a", 100*time.Millisecond); n != 0 || err != nil {
		t.Errorf("after Reset: %d, %v", n, err)
	}
}
