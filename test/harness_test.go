package test

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/sluicehq/sluice/messages"
	"github.com/sluicehq/sluice/services/devstack"
	"github.com/sluicehq/sluice/services/dispatcher"
	"github.com/sluicehq/sluice/services/executor"
	"github.com/sluicehq/sluice/services/fakeprovider"
)

// stackOptions tune a test stack.
type stackOptions struct {
	yaml func(fakeURL string) string
	fake fakeprovider.Config
	// reg receives every service's metrics; nil for none.
	reg prometheus.Registerer
}

// startStack starts an embedded NATS server and a fake provider, and
// stops them when the test ends.
func startStack(t testing.TB, o stackOptions) *devstack.Stack {
	t.Helper()
	s, err := devstack.Start(devstack.Options{
		NATSPort: -1, StoreDir: t.TempDir(), ConfigYAML: o.yaml, Fake: o.fake, Registerer: o.reg,
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(s.Close)
	return s
}

// startDispatcher starts a dispatcher and stops it when the test ends
// (unless the test stopped it).
func startDispatcher(t testing.TB, s *devstack.Stack, name string, tune func(*dispatcher.Config)) *devstack.Service {
	t.Helper()
	svc, err := s.StartDispatcher(name, tune)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { stopQuietly(svc) })
	return svc
}

func startExecutor(t testing.TB, s *devstack.Stack, region string, tune func(*executor.Config)) *devstack.Service {
	t.Helper()
	svc, err := s.StartExecutor(region, tune)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { stopQuietly(svc) })
	return svc
}

func stopQuietly(svc *devstack.Service) {
	select {
	case <-svc.Done():
	default:
		_ = svc.Stop()
	}
}

// startExecutors starts one executor per configured region.
func startExecutors(t testing.TB, s *devstack.Stack) {
	t.Helper()
	for _, r := range s.Shared.Load().Regions() {
		startExecutor(t, s, r, nil)
	}
}

func connect(t testing.TB, s *devstack.Stack) *nats.Conn {
	t.Helper()
	nc, err := s.Connect("test")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	return nc
}

// resultLog subscribes to every result of a team and records each
// delivery, so tests can assert that every call got exactly one answer.
type resultLog struct {
	mu      sync.Mutex
	byID    map[string][]messages.Result
	arrived chan struct{}
}

func watchResults(t *testing.T, nc *nats.Conn, team string) *resultLog {
	t.Helper()
	l := &resultLog{byID: map[string][]messages.Result{}, arrived: make(chan struct{}, 1)}
	sub, err := nc.Subscribe(messages.ResultSubject(team, "*"), func(m *nats.Msg) {
		var r messages.Result
		if err := json.Unmarshal(m.Data, &r); err != nil {
			t.Errorf("undecodable result on %s: %v", m.Subject, err)
			return
		}
		l.record(r)
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := nc.Flush(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = sub.Unsubscribe() })
	return l
}

// record adds one delivery of a result.
func (l *resultLog) record(r messages.Result) {
	l.mu.Lock()
	l.byID[r.ID] = append(l.byID[r.ID], r)
	l.mu.Unlock()
	select {
	case l.arrived <- struct{}{}:
	default:
	}
}

// waitFor waits until every id has at least one result, or fails.
func (l *resultLog) waitFor(t *testing.T, ids []string, timeout time.Duration) {
	t.Helper()
	deadline := time.After(timeout)
	for {
		missing := l.missing(ids)
		if len(missing) == 0 {
			return
		}
		select {
		case <-l.arrived:
		case <-time.After(100 * time.Millisecond):
		case <-deadline:
			t.Fatalf("%d of %d calls have no result after %s (e.g. %v)", len(missing), len(ids), timeout, missing[:min(3, len(missing))])
		}
	}
}

func (l *resultLog) missing(ids []string) []string {
	l.mu.Lock()
	defer l.mu.Unlock()
	var out []string
	for _, id := range ids {
		if len(l.byID[id]) == 0 {
			out = append(out, id)
		}
	}
	return out
}

// one returns the single result of id, failing if there were several.
func (l *resultLog) one(t *testing.T, id string) messages.Result {
	t.Helper()
	l.mu.Lock()
	defer l.mu.Unlock()
	rs := l.byID[id]
	if len(rs) != 1 {
		t.Fatalf("call %s has %d results, want exactly 1", id, len(rs))
	}
	return rs[0]
}

// exactlyOnce checks that each id got exactly one result, and no result
// arrived for any other id.
func (l *resultLog) exactlyOnce(t *testing.T, ids []string) map[string]messages.Result {
	t.Helper()
	l.mu.Lock()
	defer l.mu.Unlock()
	want := map[string]bool{}
	out := map[string]messages.Result{}
	for _, id := range ids {
		want[id] = true
		rs := l.byID[id]
		if len(rs) != 1 {
			t.Errorf("call %s has %d results, want exactly 1", id, len(rs))
			continue
		}
		out[id] = rs[0]
	}
	for id := range l.byID {
		if !want[id] {
			t.Errorf("result for a call nobody made: %s", id)
		}
	}
	return out
}

// publishCall publishes a call the way the README's Protocol section
// documents it: JSON on sluice.call.<team>.<tier>, Nats-Msg-Id = id.
func publishCall(ctx context.Context, js jetstream.JetStream, team, tier, id, body string) error {
	msg := &nats.Msg{Subject: "sluice.call." + team + "." + tier, Data: []byte(body), Header: nats.Header{}}
	if id != "" {
		msg.Header.Set("Nats-Msg-Id", id)
	}
	_, err := js.PublishMsg(ctx, msg)
	return err
}

// chatCall is a small chat call body for pool model.
func chatCall(id, model string, maxTokens int, extra string) string {
	return fmt.Sprintf(`{"id":%q,"model":%q,"body":{"messages":[{"role":"user","content":"hello there"}],"max_tokens":%d}%s}`, id, model, maxTokens, extra)
}

// layout adds to the configuration twoRegionYAML writes.
type layout struct {
	pools string // more pools, indented as entries of pools:
	teams string // more teams, indented as entries of teams:
	top   string // more top-level sections
}

// twoRegionYAML is a pool "m" of two regions x two keys with the given
// limits per deployment, and team "demo".
func twoRegionYAML(rpm, tpm int64, more layout) func(string) string {
	return func(fakeURL string) string {
		var b strings.Builder
		b.WriteString("pools:\n  m:\n    deployments:\n")
		for _, r := range []string{"us-east", "eu-west"} {
			for k := 1; k <= 2; k++ {
				fmt.Fprintf(&b, "      - {id: %s-%d, provider: openai, base_url: %q, region: %s, key: KEY_%s_%d, rpm: %d, tpm: %d}\n",
					r, k, fakeURL+"/v1", r, strings.ReplaceAll(strings.ToUpper(r), "-", "_"), k, rpm, tpm)
			}
		}
		b.WriteString(strings.ReplaceAll(more.pools, "${FAKE_URL}", fakeURL))
		b.WriteString("teams:\n  demo: {}\n")
		b.WriteString(more.teams)
		b.WriteString(more.top)
		return b.String()
	}
}

// silentProxy forwards to a provider but strips every rate-limit header
// from its answers, like a provider that signals nothing but 429s.
type silentProxy struct {
	URL    string
	target atomic.Pointer[fakeprovider.Server]
}

func startSilentProxy(t *testing.T) *silentProxy {
	t.Helper()
	p := &silentProxy{}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fake := p.target.Load()
		if fake == nil {
			http.Error(w, "no provider behind the proxy yet", http.StatusServiceUnavailable)
			return
		}
		fake.ServeHTTP(silentWriter{w}, r)
	}))
	t.Cleanup(srv.Close)
	p.URL = srv.URL
	return p
}

// silentWriter drops rate-limit headers as the answer's header is written.
type silentWriter struct{ http.ResponseWriter }

func (s silentWriter) WriteHeader(code int) {
	for k := range s.Header() {
		lk := strings.ToLower(k)
		if strings.HasPrefix(lk, "x-ratelimit-") || strings.HasPrefix(lk, "retry-after") || strings.HasPrefix(lk, "anthropic-ratelimit-") {
			s.Header().Del(k)
		}
	}
	s.ResponseWriter.WriteHeader(code)
}

func (s silentWriter) Write(b []byte) (int, error) { return s.ResponseWriter.Write(b) }

func (s silentWriter) Flush() {
	if f, ok := s.ResponseWriter.(http.Flusher); ok {
		f.Flush()
	}
}
