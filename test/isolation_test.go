package test

import (
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/sluicehq/sluice/messages"
	"github.com/sluicehq/sluice/services/config"
	"github.com/sluicehq/sluice/services/dispatcher"
	"github.com/sluicehq/sluice/services/fakeprovider"
	"github.com/sluicehq/sluice/services/gateway"
)

// isolationCounter sums the samples of counter name whose labels include
// every pair of want.
func isolationCounter(t *testing.T, reg *prometheus.Registry, name string, want map[string]string) float64 {
	t.Helper()
	families, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	sum := 0.0
	for _, f := range families {
		if f.GetName() != name {
			continue
		}
	samples:
		for _, m := range f.GetMetric() {
			have := map[string]string{}
			for _, l := range m.GetLabel() {
				have[l.GetName()] = l.GetValue()
			}
			for k, v := range want {
				if have[k] != v {
					continue samples
				}
			}
			sum += m.GetCounter().GetValue()
		}
	}
	return sum
}

// attemptReports records the attempt reports sent to one dispatcher.
type attemptReports struct {
	mu      sync.Mutex
	byCall  map[string][]messages.AttemptDone
	arrived chan struct{}
}

func watchAttemptReports(t *testing.T, nc *nats.Conn, dispatcherID string) *attemptReports {
	t.Helper()
	r := &attemptReports{byCall: map[string][]messages.AttemptDone{}, arrived: make(chan struct{}, 1)}
	sub, err := nc.Subscribe(messages.DoneSubject(dispatcherID), func(m *nats.Msg) {
		var d messages.AttemptDone
		if json.Unmarshal(m.Data, &d) != nil {
			return
		}
		r.mu.Lock()
		r.byCall[d.CallID] = append(r.byCall[d.CallID], d)
		r.mu.Unlock()
		select {
		case r.arrived <- struct{}{}:
		default:
		}
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := nc.Flush(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = sub.Unsubscribe() })
	return r
}

// waitSent waits until every call in ids had an attempt reported that
// was sent to the provider, and returns the reports of those, leaving out
// work handed back unsent (taken late, it went back through admission).
func (r *attemptReports) waitSent(t *testing.T, ids []string, timeout time.Duration) map[string][]messages.AttemptDone {
	t.Helper()
	deadline := time.After(timeout)
	for {
		r.mu.Lock()
		missing := 0
		out := map[string][]messages.AttemptDone{}
		for _, id := range ids {
			for _, d := range r.byCall[id] {
				if d.Outcome != messages.OutcomeNotSent {
					out[id] = append(out[id], d)
				}
			}
			if len(out[id]) == 0 {
				missing++
			}
		}
		r.mu.Unlock()
		if missing == 0 {
			return out
		}
		select {
		case <-r.arrived:
		case <-time.After(100 * time.Millisecond):
		case <-deadline:
			t.Fatalf("%d of %d calls have no report of an attempt sent after %s", missing, len(ids), timeout)
		}
	}
}

// announcedAfter waits for the next two state announcements of dispatcher
// id made after since (the second begun after the dispatcher had a whole
// announcement interval to take in whatever arrived before since), and
// returns the last.
func announcedAfter(t *testing.T, nc *nats.Conn, id string, since time.Time) messages.DispatcherState {
	t.Helper()
	sub, err := nc.SubscribeSync(messages.StateSubject)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = sub.Unsubscribe() }()
	seen := 0
	for {
		m, err := sub.NextMsg(30 * time.Second)
		if err != nil {
			t.Fatalf("no announcement of dispatcher %s: %v", id, err)
		}
		var st messages.DispatcherState
		if json.Unmarshal(m.Data, &st) != nil || st.Dispatcher != id || !st.At.After(since) {
			continue
		}
		if seen++; seen == 2 {
			return st
		}
	}
}

// One team's calls with a deadline shorter than the provider takes are
// cut by their own deadline: that says nothing about the provider, so no
// breaker opens, and another team's calls go where they went before, at
// once. (Twelve such calls used to open the breakers of the deployment
// and of its whole region for every team.)
func TestClientDeadlinesOpenNoBreaker(t *testing.T) {
	deps := []dep{
		{id: "us-1", region: "us-east", rpm: 6000, tpm: 1_000_000},
		{id: "eu-1", region: "eu-west", rpm: 6000, tpm: 1_000_000},
	}
	// Default circuit settings: at least 10 of the last 20 attempts failing
	// open a breaker for 10 s.
	s := startStack(t, stackOptions{yaml: poolYAML(deps, layout{teams: "  noisy: {}\n"})})
	reg := prometheus.NewRegistry()
	startDispatcher(t, s, "d1", func(c *dispatcher.Config) { c.Registerer = reg })
	startExecutors(t, s)
	nc := connect(t, s)
	js, _ := jetstream.New(nc)
	demo := watchResults(t, nc, "demo")
	noisy := watchResults(t, nc, "noisy")
	reports := watchAttemptReports(t, nc, "d1")

	// Team demo prefers us-east, and is served there.
	demoCalls := func(round string) map[string]messages.Result {
		t.Helper()
		var ids []string
		for i := range 3 {
			id := fmt.Sprintf("demo-%s-%d", round, i)
			ids = append(ids, id)
			if err := publishCall(t.Context(), js, "demo", "standard", id, chatCall(id, "m", 5, `,"prefer_regions":["us-east"],"timeout_ms":30000`)); err != nil {
				t.Fatal(err)
			}
		}
		// Restricted to us-east, with a deadline shorter than a breaker
		// stays open: it is served only if us-east takes calls now.
		id := "demo-" + round + "-us-only"
		ids = append(ids, id)
		if err := publishCall(t.Context(), js, "demo", "standard", id, chatCall(id, "m", 5, `,"regions":["us-east"],"timeout_ms":5000`)); err != nil {
			t.Fatal(err)
		}
		demo.waitFor(t, ids, 30*time.Second)
		out := map[string]messages.Result{}
		for _, id := range ids {
			out[id] = demo.one(t, id)
		}
		return out
	}
	for id, r := range demoCalls("before") {
		if r.Status != messages.StatusOK || r.Deployment != "us-1" || r.Attempts != 1 {
			t.Fatalf("before: call %s ended %s on %s (%s) after %d attempts; want ok on us-1", id, r.Outcome(), r.Deployment, r.Region, r.Attempts)
		}
	}

	// Team noisy sends 12 calls to us-east with a deadline far shorter
	// than the provider now takes to answer.
	if err := s.Fake.SetLatency(3*time.Second, 0); err != nil {
		t.Fatal(err)
	}
	received := s.Fake.Stats().Total.Received
	var noisyIDs []string
	for i := range 12 {
		id := fmt.Sprintf("noisy-%d", i)
		noisyIDs = append(noisyIDs, id)
		if err := publishCall(t.Context(), js, "noisy", "standard", id, chatCall(id, "m", 5, `,"regions":["us-east"],"timeout_ms":700`)); err != nil {
			t.Fatal(err)
		}
	}
	noisy.waitFor(t, noisyIDs, 30*time.Second)
	for _, id := range noisyIDs {
		if r := noisy.one(t, id); r.Error == nil || r.Error.Code != messages.CodeDeadlineExceeded || r.Attempts != 1 {
			t.Fatalf("noisy call %s: %+v after %d attempts; want deadline_exceeded after 1", id, r.Error, r.Attempts)
		}
	}
	// Every one of them was sent, and cut by its deadline.
	if got := s.Fake.Stats().Total.Received - received; got != 12 {
		t.Fatalf("the provider received %d of the noisy calls, want 12: the deadlines did not cut attempts", got)
	}
	for id, ds := range reports.waitSent(t, noisyIDs, 30*time.Second) {
		if len(ds) != 1 || ds[0].Outcome != messages.OutcomeDeadline || ds[0].Outcome.Failed() {
			t.Errorf("call %s reported %+v; want one attempt cut by its deadline, not a failure", id, ds)
		}
	}
	lastReport := time.Now()
	if err := s.Fake.SetLatency(0, 0); err != nil {
		t.Fatal(err)
	}

	// No breaker opened...
	if st := announcedAfter(t, nc, "d1", lastReport); len(st.Circuits) != 0 {
		t.Errorf("breakers after the noisy team's deadlines: %+v", st.Circuits)
	}
	if n := isolationCounter(t, reg, "sluice_circuit_transitions_total", nil); n != 0 {
		t.Errorf("%v circuit transitions", n)
	}
	// ...and team demo is served as before.
	for id, r := range demoCalls("after") {
		if r.Status != messages.StatusOK || r.Deployment != "us-1" || r.Attempts != 1 {
			t.Errorf("after: call %s ended %s on %s (%s) after %d attempts; want ok on us-1, as before", id, r.Outcome(), r.Deployment, r.Region, r.Attempts)
		}
	}
}

// A streamed call over NATS that meets its deadline mid-stream ends with
// one result, deadline_exceeded: its tokens are settled, the provider
// request closed, and it is no failure of the provider.
func TestStreamCutByDeadlineOverNATS(t *testing.T) {
	s := startStack(t, stackOptions{fake: fakeprovider.Config{ChunkDelay: 50 * time.Millisecond, CompletionTokens: 1000}})
	startDispatcher(t, s, "d1", nil)
	startExecutors(t, s)
	nc := connect(t, s)
	js, _ := jetstream.New(nc)
	log := watchResults(t, nc, "demo")
	reports := watchAttemptReports(t, nc, "d1")
	chunks, err := nc.SubscribeSync(messages.StreamSubject("demo", "cut"))
	if err != nil {
		t.Fatal(err)
	}
	body := `{"id":"cut","model":"gpt-4o-mini","timeout_ms":1500,"body":{"stream":true,"max_tokens":200,"messages":[{"role":"user","content":"hi"}]}}`
	if err := publishCall(t.Context(), js, "demo", "standard", "cut", body); err != nil {
		t.Fatal(err)
	}
	if _, err := chunks.NextMsg(10 * time.Second); err != nil {
		t.Fatalf("no chunk: %v", err)
	}
	log.waitFor(t, []string{"cut"}, 30*time.Second)
	r := log.one(t, "cut")
	if r.Error == nil || r.Error.Code != messages.CodeDeadlineExceeded || r.Chunks == 0 || r.Attempts != 1 {
		t.Fatalf("stream cut by its deadline: %+v after %d chunks and %d attempts; want deadline_exceeded", r.Error, r.Chunks, r.Attempts)
	}
	d := reports.waitSent(t, []string{"cut"}, 10*time.Second)["cut"]
	if len(d) != 1 || d[0].Outcome != messages.OutcomeDeadline || d[0].UsedTokens < int64(r.Chunks) || d[0].UsedTokens >= d[0].ReservedTokens {
		t.Errorf("attempt report %+v after %d chunks; want outcome deadline, settling the tokens streamed", d, r.Chunks)
	}
	waitUntil(t, "the provider request to be closed", 10*time.Second, func() bool {
		return s.Fake.Stats().Total.StreamAborts == 1
	})
	if st := s.Fake.Stats().Total; st.Received != 1 {
		t.Errorf("the provider received %d requests, want 1", st.Received)
	}
	log.exactlyOnce(t, []string{"cut"})
}

// Through the gateway, a stream that meets the deadline its client set
// ends with a deadline error event in the route's dialect, its stored
// result says deadline_exceeded, and the truncation counts as "deadline".
func TestGatewayStreamCutByDeadline(t *testing.T) {
	yaml := func(fakeURL string) string {
		return fmt.Sprintf(`pools:
  gpt:
    deployments:
      - {id: oa-1, provider: openai, base_url: %q, region: us-east, key: OA_KEY, rpm: 6000, tpm: 1000000}
  claude:
    deployments:
      - {id: an-1, provider: anthropic, base_url: %q, region: us-east, model: claude-sonnet-4, key: AN_KEY, rpm: 6000, tpm: 1000000}
teams:
  demo:
    tokens: [%q]
`, fakeURL+"/v1", fakeURL+"/v1", config.HashToken(devToken))
	}
	s := startStack(t, stackOptions{yaml: yaml, fake: fakeprovider.Config{ChunkDelay: 50 * time.Millisecond, CompletionTokens: 1000}})
	startDispatcher(t, s, "d1", nil)
	startExecutors(t, s)
	reg := prometheus.NewRegistry()
	url := startGateway(t, s, func(c *gateway.Config) { c.Registerer = reg })
	results := watchResults(t, connect(t, s), "demo")

	for _, tc := range []struct {
		name, path, body string
		headers          []string
		// errorEvent is the prefix of the stream's last event; errorType the
		// error's type in the route's dialect.
		errorEvent, errorType string
	}{
		{"openai", "/v1/chat/completions",
			`{"model":"gpt","stream":true,"max_tokens":200,"messages":[{"role":"user","content":"hi"}]}`,
			nil, "data: ", "timeout_error"},
		{"anthropic", "/v1/messages",
			`{"model":"claude","stream":true,"max_tokens":200,"messages":[{"role":"user","content":"hi"}]}`,
			[]string{"Authorization", "", "x-api-key", devToken, "anthropic-version", "2023-06-01"}, "event: error\ndata: ", "timeout_error"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			resp := gatewayPost(t.Context(), t, url, tc.path, tc.body, append([]string{"X-Sluice-Timeout", "1500ms"}, tc.headers...)...)
			id := resp.Header.Get("x-sluice-call-id")
			if resp.StatusCode != http.StatusOK || id == "" {
				t.Fatalf("status %d, call id %q: %s", resp.StatusCode, id, readAll(t, resp))
			}
			events := sseEvents(t, readAll(t, resp))
			if len(events) < 2 {
				t.Fatalf("events %q: want some chunks, then the error", events)
			}
			last := events[len(events)-1]
			if !strings.HasPrefix(last, tc.errorEvent) {
				t.Fatalf("the stream ends with %q, not an error event", last)
			}
			var e struct {
				Error struct {
					Type string `json:"type"`
					Code string `json:"code"`
				} `json:"error"`
			}
			if err := json.Unmarshal([]byte(strings.TrimPrefix(last, tc.errorEvent)), &e); err != nil {
				t.Fatalf("error event %q: %v", last, err)
			}
			if e.Error.Type != tc.errorType || (tc.name == "openai" && e.Error.Code != string(messages.CodeDeadlineExceeded)) {
				t.Errorf("error event %q: want type %s, code deadline_exceeded", last, tc.errorType)
			}
			results.waitFor(t, []string{id}, 30*time.Second)
			if r := results.one(t, id); r.Error == nil || r.Error.Code != messages.CodeDeadlineExceeded || r.Chunks == 0 {
				t.Errorf("stored result %+v after %d chunks; want deadline_exceeded", r.Error, r.Chunks)
			}
		})
	}
	if n := isolationCounter(t, reg, "sluice_gateway_streams_truncated_total", map[string]string{"reason": "deadline"}); n != 2 {
		t.Errorf("%v truncations counted as deadline, want 2", n)
	}
	if n := isolationCounter(t, reg, "sluice_gateway_streams_truncated_total", map[string]string{"reason": "error"}); n != 0 {
		t.Errorf("%v truncations counted as error, want 0", n)
	}
}
