package fakeprovider

import (
	"context"
	"errors"
	"net/http"
	"strings"
	"testing"
	"time"
)

// statuses sends n sequential chat calls and returns their statuses.
func statuses(t *testing.T, h *harness, n int) []int {
	t.Helper()
	out := make([]int, n)
	for i := range out {
		r := h.chat("sk-a", helloChat(""))
		out[i] = r.status
		if r.status >= 500 {
			e := r.apiErr(t)
			if e.Type != "server_error" || !strings.HasPrefix(e.Message, "The server had an error") {
				t.Errorf("injected error body %s", r.body)
			}
			if r.header.Get("x-ratelimit-remaining-tokens") == "" {
				t.Error("injected error without rate-limit headers")
			}
		}
	}
	return out
}

func TestErrorRateSeeded(t *testing.T) {
	cfg := func(seed uint64) Config {
		return Config{Keys: map[string]KeyConfig{"sk-a": {TPM: 6_000_000}}, ErrorRate: 0.3, Seed: seed}
	}
	h := newHarness(t, cfg(7))
	first := statuses(t, h, 100)

	var errs []int
	for _, s := range first {
		switch s {
		case http.StatusOK:
		case http.StatusInternalServerError, http.StatusServiceUnavailable:
			errs = append(errs, s)
		default:
			t.Fatalf("status %d", s)
		}
	}
	if len(errs) == 0 || len(errs) == 100 {
		t.Fatalf("%d injected errors of 100 at rate 0.3", len(errs))
	}
	for i, s := range errs {
		if want := []int{500, 503}[i%2]; s != want {
			t.Errorf("injected error %d is %d, want %d: 500 and 503 alternate", i, s, want)
		}
	}
	c := h.fake.Stats().Keys["sk-a"]
	if c.InjectedErrors != int64(len(errs)) || c.Served+c.InjectedErrors != 100 || c.Received != 100 {
		t.Errorf("counters %+v", c)
	}
	// Tokens of failed calls are refunded: only served calls used any.
	if err := h.fake.SetErrorRate(0); err != nil {
		t.Fatal(err)
	}
	left := h.chat("sk-a", helloChat(`,"max_tokens":0`))
	if got, want := left.intHeader(t, "x-ratelimit-remaining-tokens"), 100_000-c.TotalTokens-helloPrompt; got != want {
		t.Errorf("%d tokens left, want %d", got, want)
	}

	// The same seed replays the same faults; another seed does not.
	if again := statuses(t, newHarness(t, cfg(7)), 100); !equalInts(first, again) {
		t.Error("the same seed gave different faults")
	}
	if other := statuses(t, newHarness(t, cfg(8)), 100); equalInts(first, other) {
		t.Error("another seed gave the same faults")
	}
}

func equalInts(a, b []int) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

func TestErrorRateAtRuntime(t *testing.T) {
	h := newHarness(t, Config{Keys: map[string]KeyConfig{"sk-a": {TPM: 6_000_000}}, ErrorStatus: 502})
	for _, step := range []struct {
		rate float64
		want int
	}{{0, 200}, {1, 502}, {0, 200}} {
		if err := h.fake.SetErrorRate(step.rate); err != nil {
			t.Fatal(err)
		}
		for _, s := range statuses(t, h, 5) {
			if s != step.want {
				t.Errorf("rate %v: status %d, want %d", step.rate, s, step.want)
			}
		}
	}
	if err := h.fake.SetErrorStatus(0); err != nil {
		t.Fatal(err)
	}
	if err := h.fake.SetErrorRate(1); err != nil {
		t.Fatal(err)
	}
	if got := statuses(t, h, 3); !equalInts(got, []int{500, 503, 500}) {
		t.Errorf("alternating statuses %v", got)
	}
}

func TestSettersValidate(t *testing.T) {
	h := newHarness(t, Config{Keys: map[string]KeyConfig{"sk-a": {}}})
	bad := map[string]error{
		"error rate 2":       h.fake.SetErrorRate(2),
		"error rate NaN":     h.fake.SetErrorRate(nan()),
		"error status 200":   h.fake.SetErrorStatus(200),
		"timeout rate -1":    h.fake.SetTimeoutRate(-1),
		"negative latency":   h.fake.SetLatency(-time.Second, 0),
		"negative jitter":    h.fake.SetLatency(0, -time.Second),
		"negative delay":     h.fake.SetChunkDelay(-1),
		"empty key":          h.fake.SetKey("", KeyConfig{}),
		"negative key limit": h.fake.SetKey("sk-b", KeyConfig{RPM: -1}),
	}
	for name, err := range bad {
		if err == nil {
			t.Errorf("%s accepted", name)
		}
	}
	// A refused setter changes nothing.
	if r := h.chat("sk-a", helloChat("")); r.status != http.StatusOK {
		t.Errorf("after refused setters: %d", r.status)
	}
	if r := h.chat("sk-b", helloChat("")); r.status != http.StatusUnauthorized {
		t.Errorf("a refused SetKey added the key: %d", r.status)
	}
	// Keys come and go at runtime.
	if err := h.fake.SetKey("sk-b", KeyConfig{RPM: 60}); err != nil {
		t.Fatal(err)
	}
	if r := h.chat("sk-b", helloChat("")); r.status != http.StatusOK {
		t.Errorf("added key: %d", r.status)
	}
	h.fake.RemoveKey("sk-b")
	if r := h.chat("sk-b", helloChat("")); r.status != http.StatusUnauthorized {
		t.Errorf("removed key: %d", r.status)
	}
}

func nan() float64 {
	var zero float64
	return zero / zero
}

func TestTimeouts(t *testing.T) {
	h := newHarness(t, Config{Keys: map[string]KeyConfig{"sk-a": {RPM: 600, TPM: 60_000}}, TimeoutRate: 1})
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error, 1)
	go func() {
		_, err := h.do(ctx, http.MethodPost, "/v1/chat/completions", "sk-a", helloChat(""))
		done <- err
	}()
	// The client gives up once the call is admitted and hanging.
	waitFor(t, "admission", func() bool { return h.fake.Stats().Total.MaxRequests1s == 1 })
	cancel()
	if err := <-done; !errors.Is(err, context.Canceled) {
		t.Errorf("client error %v, want canceled", err)
	}
	waitFor(t, "the timeout to be counted", func() bool { return h.fake.Stats().Total.Timeouts == 1 })

	// The request stays charged, the tokens are refunded.
	if err := h.fake.SetTimeoutRate(0); err != nil {
		t.Fatal(err)
	}
	r := h.chat("sk-a", helloChat(`,"max_tokens":0`))
	if r.status != http.StatusOK || r.header.Get("x-ratelimit-remaining-requests") != "8" ||
		r.header.Get("x-ratelimit-remaining-tokens") != itoa(1000-helloPrompt) {
		t.Errorf("after a timeout: %d, %s requests and %s tokens left", r.status,
			r.header.Get("x-ratelimit-remaining-requests"), r.header.Get("x-ratelimit-remaining-tokens"))
	}
}

func TestCloseReleasesHungCalls(t *testing.T) {
	h := newHarness(t, Config{Keys: map[string]KeyConfig{"sk-a": {}}, TimeoutRate: 1})
	done := make(chan reply, 1)
	go func() {
		r, err := h.do(context.Background(), http.MethodPost, "/v1/chat/completions", "sk-a", helloChat(""))
		if err != nil {
			t.Error(err)
		}
		done <- r
	}()
	waitFor(t, "admission", func() bool { return h.fake.Stats().Total.MaxRequests1s == 1 })
	if err := h.fake.Close(); err != nil {
		t.Fatal(err)
	}
	if r := <-done; r.status != http.StatusServiceUnavailable {
		t.Errorf("hung call released with %d, want 503", r.status)
	}
	if c := h.fake.Stats().Total; c.Timeouts != 1 || c.Finished() != c.Received {
		t.Errorf("counters %+v", c)
	}
}

func TestLatencyClientGivesUp(t *testing.T) {
	h := newHarness(t, Config{Keys: map[string]KeyConfig{"sk-a": {TPM: 60_000}}, Latency: time.Hour})
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error, 1)
	go func() {
		_, err := h.do(ctx, http.MethodPost, "/v1/chat/completions", "sk-a", helloChat(""))
		done <- err
	}()
	waitFor(t, "admission", func() bool { return h.fake.Stats().Total.MaxRequests1s == 1 })
	cancel()
	<-done
	waitFor(t, "the cancellation to be counted", func() bool { return h.fake.Stats().Total.Canceled == 1 })
	if err := h.fake.SetLatency(0, time.Millisecond); err != nil {
		t.Fatal(err)
	}
	r := h.chat("sk-a", helloChat(`,"max_tokens":0`))
	if r.status != http.StatusOK || r.header.Get("x-ratelimit-remaining-tokens") != itoa(1000-helloPrompt) {
		t.Errorf("after a canceled call: %d, %s tokens left", r.status, r.header.Get("x-ratelimit-remaining-tokens"))
	}
}
