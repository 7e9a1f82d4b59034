package test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/sluicehq/sluice/messages"
	"github.com/sluicehq/sluice/services/config"
	"github.com/sluicehq/sluice/services/devstack"
	"github.com/sluicehq/sluice/services/executor"
	"github.com/sluicehq/sluice/services/fakeprovider"
	"github.com/sluicehq/sluice/services/health"
)

// End-to-end tests of how executors treat what providers answer: which
// answers are retried, which end the call at once, how deadlines cut
// retries short, that secrets stay with the executors, and that a crashed
// executor's call is still answered once.

// publishExecCalls publishes n calls named prefix-<i> on demo.standard and
// returns their ids.
func publishExecCalls(t *testing.T, js jetstream.JetStream, prefix string, n int, body func(id string) string) []string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	ids := make([]string, n)
	for i := range ids {
		ids[i] = fmt.Sprintf("%s-%02d", prefix, i)
		if err := publishCall(ctx, js, "demo", "standard", ids[i], body(ids[i])); err != nil {
			t.Fatalf("publish %s: %v", ids[i], err)
		}
	}
	return ids
}

// setPoolKeys gives every key of pool's deployments kc at the fake.
func setPoolKeys(t *testing.T, s *devstack.Stack, pool string, kc fakeprovider.KeyConfig) {
	t.Helper()
	cfg := s.Shared.Load()
	secrets := devstack.DevSecrets(cfg)
	for _, dep := range cfg.Pools[pool].Deployments {
		if err := s.Fake.SetKey(secrets[dep.Key], kc); err != nil {
			t.Fatal(err)
		}
	}
}

// waitFakeStats polls the fake's counters until ok holds, and returns the
// last snapshot either way (the caller asserts on it).
func waitFakeStats(s *devstack.Stack, timeout time.Duration, ok func(fakeprovider.Counters) bool) fakeprovider.Counters {
	deadline := time.Now().Add(timeout)
	for {
		st := s.Fake.Stats().Total
		if ok(st) || time.Now().After(deadline) {
			return st
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// retryCounter records the retries executors hand back, per call.
type retryCounter struct {
	mu     sync.Mutex
	byCall map[string][]int // attempts the retries are for
}

func countRetries(t *testing.T, nc *nats.Conn) *retryCounter {
	t.Helper()
	rc := &retryCounter{byCall: map[string][]int{}}
	sub, err := nc.Subscribe(messages.RetrySubjects, func(m *nats.Msg) {
		var r messages.Retry
		if err := json.Unmarshal(m.Data, &r); err != nil {
			t.Errorf("undecodable retry: %v", err)
			return
		}
		if r.Late {
			// Not a retry: work an executor took too late, admitted again.
			return
		}
		rc.mu.Lock()
		rc.byCall[r.Call.ID] = append(rc.byCall[r.Call.ID], r.Attempt)
		rc.mu.Unlock()
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := nc.Flush(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = sub.Unsubscribe() })
	return rc
}

func (rc *retryCounter) total() int {
	rc.mu.Lock()
	defer rc.mu.Unlock()
	n := 0
	for _, as := range rc.byCall {
		n += len(as)
	}
	return n
}

// calls counts the ids that have had at least one retry.
func (rc *retryCounter) calls(ids []string) int {
	rc.mu.Lock()
	defer rc.mu.Unlock()
	n := 0
	for _, id := range ids {
		if len(rc.byCall[id]) > 0 {
			n++
		}
	}
	return n
}

// providerError checks that r is a provider_error result carrying the
// provider's status and answer.
func providerError(t *testing.T, r messages.Result) bool {
	t.Helper()
	if r.Status != messages.StatusError || r.Error == nil || r.Error.Code != messages.CodeProviderError {
		t.Errorf("call %s: want a provider_error result, got status %s error %+v", r.ID, r.Status, r.Error)
		return false
	}
	return true
}

// 5xx answers are retried up to max_attempts; then the call ends with the
// provider's status, and the provider saw exactly max_attempts requests.
func TestExecutorGivesUpAfterRepeated5xx(t *testing.T) {
	const calls = 4
	s := startStack(t, stackOptions{
		yaml: twoRegionYAML(600, 100000, layout{top: "retry: {max_attempts: 3, base_delay: 50ms, max_delay: 200ms}\n"}),
	})
	if err := s.Fake.SetErrorRate(1); err != nil {
		t.Fatal(err)
	}
	startDispatcher(t, s, "d1", nil)
	startExecutors(t, s)
	nc := connect(t, s)
	js, _ := jetstream.New(nc)
	log := watchResults(t, nc, "demo")
	retries := countRetries(t, nc)

	ids := publishExecCalls(t, js, "fivexx", calls, func(id string) string { return chatCall(id, "m", 10, "") })
	log.waitFor(t, ids, 30*time.Second)
	for id, r := range log.exactlyOnce(t, ids) {
		if !providerError(t, r) {
			continue
		}
		if r.Attempts != 3 {
			t.Errorf("call %s: %d attempts, want 3", id, r.Attempts)
		}
		if ps := r.Error.ProviderStatus; ps < 500 || ps > 599 || r.HTTPStatus != ps {
			t.Errorf("call %s: provider_status %d, http_status %d; want the same 5xx", id, ps, r.HTTPStatus)
		}
		if !strings.Contains(r.Error.Message, "gave up after 3 attempts") {
			t.Errorf("call %s: message %q should say it gave up after 3 attempts", id, r.Error.Message)
		}
		if !strings.Contains(string(r.Body), `"server_error"`) {
			t.Errorf("call %s: the provider's error body should be passed through, got %s", id, r.Body)
		}
	}
	// A result is published only after the provider answered, so the
	// counters are final.
	st := s.Fake.Stats().Total
	if st.Received != 3*calls || st.InjectedErrors != 3*calls || st.Served != 0 {
		t.Errorf("provider received %d, injected %d errors, served %d; want %d, %d, 0",
			st.Received, st.InjectedErrors, st.Served, 3*calls, 3*calls)
	}
	if n := retries.total(); n != 2*calls {
		t.Errorf("%d retries handed back, want %d (two per call)", n, 2*calls)
	}
}

// 5xx answers stop while retries are pending: every call ends ok, after
// more than one attempt, and the provider's counters match the attempts
// the results report.
func TestExecutor5xxRecovers(t *testing.T) {
	const calls = 6
	s := startStack(t, stackOptions{
		yaml: twoRegionYAML(600, 100000, layout{top: "retry: {max_attempts: 10, base_delay: 100ms, max_delay: 400ms}\n"}),
	})
	if err := s.Fake.SetErrorRate(1); err != nil {
		t.Fatal(err)
	}
	startDispatcher(t, s, "d1", nil)
	startExecutors(t, s)
	nc := connect(t, s)
	js, _ := jetstream.New(nc)
	log := watchResults(t, nc, "demo")
	retries := countRetries(t, nc)

	ids := publishExecCalls(t, js, "recover", calls, func(id string) string { return chatCall(id, "m", 10, "") })
	// Once every call has failed at least once, the provider recovers.
	deadline := time.Now().Add(20 * time.Second)
	for retries.calls(ids) < calls {
		if time.Now().After(deadline) {
			t.Fatalf("only %d of %d calls were handed back for a retry", retries.calls(ids), calls)
		}
		time.Sleep(5 * time.Millisecond)
	}
	if err := s.Fake.SetErrorRate(0); err != nil {
		t.Fatal(err)
	}
	log.waitFor(t, ids, 30*time.Second)
	attempts := 0
	for id, r := range log.exactlyOnce(t, ids) {
		attempts += r.Attempts
		if r.Status != messages.StatusOK || r.Error != nil {
			t.Errorf("call %s: want ok after the provider recovered, got %+v", id, r.Error)
			continue
		}
		if r.Attempts < 2 || r.Attempts > 10 {
			t.Errorf("call %s: %d attempts; its first failed, so want 2..10", id, r.Attempts)
		}
		if r.HTTPStatus != 200 || r.Usage == nil || r.Usage.TotalTokens == 0 {
			t.Errorf("call %s: http_status %d usage %+v", id, r.HTTPStatus, r.Usage)
		}
	}
	st := s.Fake.Stats().Total
	if st.Served != calls || st.Received != int64(attempts) || st.InjectedErrors != int64(attempts-calls) {
		t.Errorf("provider served %d, received %d, injected %d errors; the results report %d attempts for %d calls",
			st.Served, st.Received, st.InjectedErrors, attempts, calls)
	}
	t.Logf("%d attempts for %d calls", attempts, calls)
}

// A provider that never answers: each attempt times out after
// attempt_timeout, is retried, and the call ends provider_error.
func TestExecutorRetriesTimeouts(t *testing.T) {
	const calls = 3
	s := startStack(t, stackOptions{
		yaml: twoRegionYAML(600, 100000, layout{top: "retry: {attempt_timeout: 200ms, max_attempts: 2, base_delay: 50ms, max_delay: 100ms}\n"}),
		fake: fakeprovider.Config{TimeoutRate: 1},
	})
	startDispatcher(t, s, "d1", nil)
	startExecutors(t, s)
	nc := connect(t, s)
	js, _ := jetstream.New(nc)
	log := watchResults(t, nc, "demo")

	ids := publishExecCalls(t, js, "timeout", calls, func(id string) string { return chatCall(id, "m", 10, "") })
	log.waitFor(t, ids, 30*time.Second)
	for id, r := range log.exactlyOnce(t, ids) {
		if !providerError(t, r) {
			continue
		}
		if r.Attempts != 2 {
			t.Errorf("call %s: %d attempts, want 2", id, r.Attempts)
		}
		if !strings.Contains(r.Error.Message, "timeout") || !strings.Contains(r.Error.Message, "gave up after 2 attempts") {
			t.Errorf("call %s: message %q should say it gave up after 2 timeouts", id, r.Error.Message)
		}
		if r.Error.ProviderStatus != 0 || r.HTTPStatus != 0 {
			t.Errorf("call %s: no provider answered, yet provider_status %d http_status %d", id, r.Error.ProviderStatus, r.HTTPStatus)
		}
	}
	// The fake counts a timeout when it notices the client went away,
	// which may come just after the result.
	st := waitFakeStats(s, 10*time.Second, func(c fakeprovider.Counters) bool { return c.Timeouts >= 2*calls })
	if st.Timeouts != 2*calls || st.Received != 2*calls || st.Served != 0 {
		t.Errorf("provider received %d, timed out %d, served %d; want %d, %d, 0", st.Received, st.Timeouts, st.Served, 2*calls, 2*calls)
	}
}

// A 429 insufficient_quota means the billing quota of the key is spent:
// the key goes out of rotation, and the call moves to another key of the
// pool, never back to a spent one. When every key is spent, calls end at
// once with the provider's answer, without looping.
func TestExecutorDoesNotRetryInsufficientQuota(t *testing.T) {
	const calls, keys = 4, 4
	s := startStack(t, stackOptions{
		yaml: twoRegionYAML(600, 100000, layout{top: "retry: {max_attempts: 8, base_delay: 50ms, max_delay: 200ms, budget: 10}\n"}),
	})
	setPoolKeys(t, s, "m", fakeprovider.KeyConfig{RPM: 600, TPM: 100000, InsufficientQuota: true})
	startDispatcher(t, s, "d1", nil)
	startExecutors(t, s)
	nc := connect(t, s)
	js, _ := jetstream.New(nc)
	log := watchResults(t, nc, "demo")

	ids := publishExecCalls(t, js, "quota", calls, func(id string) string { return chatCall(id, "m", 10, "") })
	log.waitFor(t, ids, 30*time.Second)
	for id, r := range log.exactlyOnce(t, ids) {
		if !providerError(t, r) {
			continue
		}
		if !strings.Contains(r.Error.Message, "insufficient_quota") {
			t.Errorf("call %s: message %q should name insufficient_quota", id, r.Error.Message)
		}
		if r.Attempts > keys {
			t.Errorf("call %s made %d attempts; it may try each of the %d keys at most once", id, r.Attempts, keys)
		}
		if r.HTTPStatus == 429 && !strings.Contains(string(r.Body), `"insufficient_quota"`) {
			t.Errorf("call %s: the provider's body should be passed through, got %s", id, r.Body)
		}
	}
	st := s.Fake.Stats()
	if st.Total.Served != 0 || st.Total.InsufficientQuota < keys || st.Total.InsufficientQuota > keys*calls {
		t.Errorf("provider answered %d insufficient_quota; want every key once, and no key again after", st.Total.InsufficientQuota)
	}
	secrets := devstack.DevSecrets(s.Shared.Load())
	for _, d := range s.Shared.Load().Pools["m"].Deployments {
		if n := st.Keys[secrets[d.Key]].InsufficientQuota; n < 1 || n > calls {
			t.Errorf("key of %s answered insufficient_quota %d times", d.ID, n)
		}
	}
	// Once every key is out of rotation, a new call ends at once, at the
	// dispatcher, without reaching the provider.
	before := st.Total.Received
	late := publishExecCalls(t, js, "late", 1, func(id string) string { return chatCall(id, "m", 10, "") })
	log.waitFor(t, late, 30*time.Second)
	if r := log.one(t, late[0]); r.Error == nil || r.Error.Code != messages.CodeProviderError || r.Attempts != 0 || !strings.Contains(r.Error.Message, "out of rotation") {
		t.Errorf("a call to a pool whose keys are all spent: %+v (attempts %d)", r.Error, r.Attempts)
	}
	if got := s.Fake.Stats().Total.Received; got != before {
		t.Errorf("the provider received %d more requests for a pool out of rotation", got-before)
	}
}

// Other 4xx answers are the request's fault: no retry, and the provider's
// error body reaches the client.
func TestExecutorDoesNotRetryOther4xx(t *testing.T) {
	const calls = 3
	s := startStack(t, stackOptions{
		yaml: twoRegionYAML(600, 100000, layout{
			// Pool "known" is served under a model name the fake knows.
			pools: "  known:\n    deployments:\n" +
				`      - {id: known-1, provider: openai, base_url: "${FAKE_URL}/v1", region: us-east, model: something-else, key: KEY_US_EAST_1, rpm: 600, tpm: 100000}` + "\n",
			top: "retry: {max_attempts: 5, base_delay: 50ms, max_delay: 200ms}\n",
		}),
		fake: fakeprovider.Config{Models: []string{"something-else"}},
	})
	startDispatcher(t, s, "d1", nil)
	startExecutors(t, s)
	nc := connect(t, s)
	js, _ := jetstream.New(nc)
	log := watchResults(t, nc, "demo")
	retries := countRetries(t, nc)

	// Pool m's deployments name model "m", which the fake does not serve:
	// 404 model_not_found.
	notFound := publishExecCalls(t, js, "notfound", calls, func(id string) string { return chatCall(id, "m", 10, "") })
	// A message without a role passes sluice's validation (it only
	// estimates tokens) but the fake refuses it: 400.
	badRequest := publishExecCalls(t, js, "badreq", calls, func(id string) string {
		return fmt.Sprintf(`{"id":%q,"model":"known","body":{"messages":[{"content":"hello there"}],"max_tokens":10}}`, id)
	})
	all := append(append([]string(nil), notFound...), badRequest...)
	log.waitFor(t, all, 30*time.Second)
	got := log.exactlyOnce(t, all)
	check := func(ids []string, status int, code string) {
		for _, id := range ids {
			r, ok := got[id]
			if !ok || !providerError(t, r) {
				continue
			}
			if r.Attempts != 1 || r.Error.ProviderStatus != status || r.HTTPStatus != status {
				t.Errorf("call %s: %d attempts, provider_status %d, http_status %d; want 1, %d, %d", id, r.Attempts, r.Error.ProviderStatus, r.HTTPStatus, status, status)
			}
			var body struct {
				Error struct {
					Type string `json:"type"`
					Code string `json:"code"`
				} `json:"error"`
			}
			if err := json.Unmarshal(r.Body, &body); err != nil || body.Error.Code != code || body.Error.Type != "invalid_request_error" {
				t.Errorf("call %s: want the provider's %s body passed through, got %s", id, code, r.Body)
			}
		}
	}
	check(notFound, 404, "model_not_found")
	check(badRequest, 400, "missing_required_parameter")
	st := s.Fake.Stats().Total
	if st.Received != 2*calls || st.InvalidRequests != 2*calls {
		t.Errorf("provider received %d, %d invalid; want %d and %d", st.Received, st.InvalidRequests, 2*calls, 2*calls)
	}
	if n := retries.total(); n != 0 {
		t.Errorf("%d retries handed back for 4xx answers, want none", n)
	}
}

// The provider keeps answering 429 and asks to wait far longer than the
// calls may: they end deadline_exceeded by their deadline instead of
// waiting out a backoff that cannot help, and are not rate_limited.
func TestExecutorDeadlineCutsBackoffShort(t *testing.T) {
	const (
		calls   = 8
		timeout = 1500 * time.Millisecond
		margin  = time.Second
	)
	s := startStack(t, stackOptions{
		yaml: twoRegionYAML(600, 100000, layout{top: "retry: {max_attempts: 5, base_delay: 5s, max_delay: 10s}\n"}),
	})
	// Each key takes one request, then refills one a minute: the 429s ask
	// for up to a minute's wait.
	setPoolKeys(t, s, "m", fakeprovider.KeyConfig{RPM: 1})
	startDispatcher(t, s, "d1", nil)
	startExecutors(t, s)
	nc := connect(t, s)
	js, _ := jetstream.New(nc)
	log := watchResults(t, nc, "demo")

	ids := publishExecCalls(t, js, "deadline", calls, func(id string) string {
		return chatCall(id, "m", 10, fmt.Sprintf(`,"timeout_ms":%d`, timeout.Milliseconds()))
	})
	log.waitFor(t, ids, 10*time.Second)
	ok, late := 0, 0
	for id, r := range log.exactlyOnce(t, ids) {
		if took := r.Timings.FinishedAt.Sub(r.Timings.AcceptedAt); took > timeout+margin {
			t.Errorf("call %s ended %s after acceptance; its deadline was %s", id, took, timeout)
		}
		switch {
		case r.Status == messages.StatusOK:
			ok++
		case r.Error != nil && r.Error.Code == messages.CodeDeadlineExceeded:
			late++
			if r.Attempts != 1 || r.Error.ProviderStatus != 429 {
				t.Errorf("call %s: %d attempts, provider_status %d; want 1 attempt answered 429", id, r.Attempts, r.Error.ProviderStatus)
			}
		default:
			t.Errorf("call %s: want ok or deadline_exceeded, got %s %+v", id, r.Status, r.Error)
		}
	}
	st := s.Fake.Stats().Total
	if late == 0 {
		t.Errorf("four keys of one request each served %d calls: some should have met a 429", ok)
	}
	if st.Served != int64(ok) || st.RateLimitedRequests != int64(late) || st.Received != calls {
		t.Errorf("provider served %d, refused %d of %d received; results say %d ok and %d deadline_exceeded",
			st.Served, st.RateLimitedRequests, st.Received, ok, late)
	}
}

// subjectPrefix is the first two tokens of a subject.
func subjectPrefix(subject string) string {
	tokens := strings.SplitN(subject, ".", 3)
	return strings.Join(tokens[:min(2, len(tokens))], ".")
}

// syncBuffer is a bytes.Buffer safe for the concurrent writes of many
// services' loggers.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.String()
}

// startObservedStack is startStack with every service (and the fake)
// logging into logs at debug level, and registering its metrics on reg.
func startObservedStack(t *testing.T, o stackOptions, logs *syncBuffer, reg prometheus.Registerer) *devstack.Stack {
	t.Helper()
	s, err := devstack.Start(devstack.Options{
		NATSPort: -1, StoreDir: t.TempDir(), ConfigYAML: o.yaml, Fake: o.fake,
		Logger:     slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug})),
		Registerer: reg,
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(s.Close)
	return s
}

// Provider secrets never appear in a NATS message (payload or header), a
// KV entry, a stored message, a log line or a metric label, whether calls
// succeed or fail in any of the ways providers fail.
func TestExecutorSecretsNeverTravel(t *testing.T) {
	logs := &syncBuffer{}
	reg := prometheus.NewRegistry()
	s := startObservedStack(t, stackOptions{
		yaml: twoRegionYAML(600, 100000, layout{top: "retry: {max_attempts: 2, base_delay: 20ms, max_delay: 50ms}\n"}),
	}, logs, reg)
	cfg := s.Shared.Load()
	secrets := devstack.DevSecrets(cfg)
	if len(secrets) == 0 {
		t.Fatal("no secrets to look for")
	}
	leaks := func(where string, data []byte) {
		t.Helper()
		for name, secret := range secrets {
			if bytes.Contains(data, []byte(secret)) {
				t.Errorf("the secret of %s appears in %s: %.300q", name, where, data)
			}
		}
	}
	leaksHeader := func(where string, h nats.Header) {
		t.Helper()
		for k, vs := range h {
			leaks(where+" header name", []byte(k))
			for _, v := range vs {
				leaks(where+" header "+k, []byte(v))
			}
		}
	}

	// Everything that crosses NATS during the run, including JetStream's
	// own API, acknowledgements and KV traffic.
	spy, err := s.Connect("spy")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(spy.Close)
	var seenMu sync.Mutex
	seen := map[string]int{}
	for _, subj := range []string{">", "$JS.>", "$KV.>"} {
		sub, err := spy.Subscribe(subj, func(m *nats.Msg) {
			leaks("message on "+m.Subject, m.Data)
			leaksHeader("message on "+m.Subject, m.Header)
			seenMu.Lock()
			seen[subjectPrefix(m.Subject)]++
			seenMu.Unlock()
		})
		if err != nil {
			t.Fatal(err)
		}
		_ = sub.SetPendingLimits(-1, -1)
	}
	if err := spy.Flush(); err != nil {
		t.Fatal(err)
	}

	startDispatcher(t, s, "d1", nil)
	startExecutors(t, s)
	nc := connect(t, s)
	js, _ := jetstream.New(nc)
	log := watchResults(t, nc, "demo")
	body := func(id string) string { return chatCall(id, "m", 10, `,"metadata":{"k":"v"}`) }

	// Successes, 5xx give-ups, spent quota, revoked keys (401) and a bad
	// call, one phase after another.
	var all []string
	phase := func(name string, n int, want string) {
		t.Helper()
		ids := publishExecCalls(t, js, name, n, body)
		log.waitFor(t, ids, 30*time.Second)
		all = append(all, ids...)
		got := log.exactlyOnce(t, all)
		for _, id := range ids {
			r := got[id]
			if r.Outcome() != want {
				t.Errorf("phase %s: call %s ended %s, want %s", name, id, r.Outcome(), want)
			}
		}
	}
	phase("ok", 4, "ok")
	if err := s.Fake.SetErrorRate(1); err != nil {
		t.Fatal(err)
	}
	phase("fivexx", 3, string(messages.CodeProviderError))
	if err := s.Fake.SetErrorRate(0); err != nil {
		t.Fatal(err)
	}
	setPoolKeys(t, s, "m", fakeprovider.KeyConfig{RPM: 600, InsufficientQuota: true})
	phase("quota", 3, string(messages.CodeProviderError))
	// The operator puts the spent keys back in rotation, and then they are
	// revoked.
	enableAll(t, js, cfg.Pools["m"].Deployments)
	for _, dep := range cfg.Pools["m"].Deployments {
		s.Fake.RemoveKey(secrets[dep.Key])
	}
	phase("revoked", 3, string(messages.CodeProviderError))
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := publishCall(ctx, js, "demo", "standard", "bad", `{"id":"bad","model":"m","body":{"messages":"hi"}}`); err != nil {
		t.Fatal(err)
	}
	log.waitFor(t, []string{"bad"}, 30*time.Second)
	if r := log.exactlyOnce(t, append(all, "bad"))["bad"]; r.Outcome() != string(messages.CodeInvalidRequest) {
		t.Errorf("bad call ended %s, want invalid_request", r.Outcome())
	}
	// The secrets were in use: the fake was called with them.
	if st := s.Fake.Stats(); len(st.Keys) == 0 || st.Total.Served == 0 || st.Total.Unauthorized == 0 {
		t.Fatalf("the run should have used the secrets and met a 401: %+v", st.Total)
	}
	if err := spy.Flush(); err != nil {
		t.Fatal(err)
	}

	// Every KV entry, with its history.
	for _, bucket := range []string{messages.BucketLimiter, messages.BucketConfig} {
		kv, err := js.KeyValue(ctx, bucket)
		if err != nil {
			t.Fatalf("bucket %s: %v", bucket, err)
		}
		lister, err := kv.ListKeys(ctx)
		if err != nil {
			t.Fatalf("bucket %s: %v", bucket, err)
		}
		keys := 0
		for key := range lister.Keys() {
			keys++
			leaks("KV key of "+bucket, []byte(key))
			hist, err := kv.History(ctx, key)
			if err != nil && !errors.Is(err, jetstream.ErrKeyNotFound) {
				t.Fatalf("bucket %s key %s: %v", bucket, key, err)
			}
			for _, e := range hist {
				leaks("KV "+bucket+"/"+key, e.Value())
			}
		}
		if bucket == messages.BucketLimiter && keys == 0 {
			t.Errorf("the limiter bucket is empty: the check proves nothing")
		}
		t.Logf("bucket %s: %d keys", bucket, keys)
	}

	// Every message still stored in every stream (KV buckets included).
	stored := 0
	for name := range js.StreamNames(ctx).Name() {
		str, err := js.Stream(ctx, name)
		if err != nil {
			t.Fatalf("stream %s: %v", name, err)
		}
		info, err := str.Info(ctx)
		if err != nil {
			t.Fatalf("stream %s: %v", name, err)
		}
		for seq := info.State.FirstSeq; seq > 0 && seq <= info.State.LastSeq; seq++ {
			m, err := str.GetMsg(ctx, seq)
			if errors.Is(err, jetstream.ErrMsgNotFound) {
				continue
			}
			if err != nil {
				t.Fatalf("stream %s seq %d: %v", name, seq, err)
			}
			stored++
			leaks(fmt.Sprintf("stream %s seq %d", name, seq), m.Data)
			leaksHeader(fmt.Sprintf("stream %s seq %d", name, seq), m.Header)
		}
	}
	if stored == 0 {
		t.Error("no stored message was read: the check proves nothing")
	}

	// Log lines and metric labels.
	text := logs.String()
	leaks("the logs", []byte(text))
	if !strings.Contains(text, "executor started") || !strings.Contains(text, "fakeprovider call") {
		t.Errorf("the logs lack the services' records: the check proves nothing:\n%.2000s", text)
	}
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	labels := 0
	for _, mf := range mfs {
		for _, m := range mf.GetMetric() {
			for _, lp := range m.GetLabel() {
				labels++
				leaks("metric "+mf.GetName()+" label "+lp.GetName(), []byte(lp.GetValue()))
			}
		}
	}
	if labels == 0 {
		t.Error("no metric labels were gathered: the check proves nothing")
	}

	seenMu.Lock()
	t.Logf("NATS messages seen, by subject prefix: %v; %d stored messages, %d metric labels, %d bytes of logs", seen, stored, labels, len(text))
	if seen["sluice.exec"] == 0 || seen["sluice.result"] == 0 || seen["sluice.retry"] == 0 {
		t.Errorf("the spy missed sluice's own traffic: %v", seen)
	}
	seenMu.Unlock()
}

// An executor dies while the provider works on its call; another executor
// of the region takes the call over after AckWait, and the call gets one
// result.
func TestExecutorCrashMidCall(t *testing.T) {
	s := startStack(t, stackOptions{
		yaml: twoRegionYAML(600, 100000, layout{}),
		fake: fakeprovider.Config{Latency: 2 * time.Second},
	})
	shortAckWait := func(c *executor.Config) { c.AckWait = time.Second }
	startDispatcher(t, s, "d1", nil)
	first := startExecutor(t, s, "us-east", shortAckWait)
	nc := connect(t, s)
	js, _ := jetstream.New(nc)
	log := watchResults(t, nc, "demo")

	ids := publishExecCalls(t, js, "crash", 1, func(id string) string {
		return chatCall(id, "m", 10, `,"regions":["us-east"]`)
	})
	if st := waitFakeStats(s, 10*time.Second, func(c fakeprovider.Counters) bool { return c.Received >= 1 }); st.Received != 1 {
		t.Fatalf("the provider received %d requests, want the first executor's one", st.Received)
	}
	first.Kill()
	if got := log.missing(ids); len(got) != 1 {
		t.Fatal("the killed executor published a result")
	}
	startExecutor(t, s, "us-east", shortAckWait)

	log.waitFor(t, ids, 20*time.Second)
	// Let a duplicate show up, if there were to be one.
	time.Sleep(300 * time.Millisecond)
	r := log.exactlyOnce(t, ids)[ids[0]]
	if r.Status != messages.StatusOK || r.Error != nil || r.Region != "us-east" {
		t.Fatalf("want ok from us-east, got %s %+v in %s", r.Status, r.Error, r.Region)
	}
	// The dead executor's request completed at the provider but its
	// answer was lost with it; the new executor asked again.
	st := s.Fake.Stats().Total
	if st.Received != 2 || st.Served != 2 {
		t.Errorf("provider received %d and served %d requests, want 2 and 2", st.Received, st.Served)
	}
	t.Logf("result reports %d attempts for 2 provider requests", r.Attempts)
}

// enableAll puts deployments disabled by insufficient_quota back in
// rotation, as an operator would.
func enableAll(t *testing.T, js jetstream.JetStream, deps []*config.Deployment) {
	t.Helper()
	kv, err := js.KeyValue(t.Context(), messages.BucketHealth)
	if err != nil {
		t.Fatal(err)
	}
	store := health.NewStore(kv)
	if err := store.Start(t.Context()); err != nil {
		t.Fatal(err)
	}
	defer store.Stop()
	for _, d := range deps {
		if err := store.Enable(t.Context(), d.ID); err != nil {
			t.Fatal(err)
		}
	}
	// The dispatchers' watches deliver the change within milliseconds.
	time.Sleep(200 * time.Millisecond)
}
