package test

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"math"
	"net/http"
	"net/http/httptest"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/sluicehq/sluice/messages"
	"github.com/sluicehq/sluice/services/usage"
)

// pricedProvider answers as OpenAI and Anthropic do, with the usage
// chosen by the first element of the path: /usage (OpenAI chat with
// cached prompt tokens), /nousage (an OpenAI answer without usage, as
// some compatible servers give), /anthropic (Messages, with cache
// reads and writes) and /cut (a stream that breaks off after a chunk).
func pricedProvider(t *testing.T) *httptest.Server {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.Copy(io.Discard, r.Body)
		w.Header().Set("Content-Type", "application/json")
		behaviour, _, _ := strings.Cut(strings.TrimPrefix(r.URL.Path, "/"), "/")
		switch behaviour {
		case "usage":
			_, _ = io.WriteString(w, `{"id":"c","object":"chat.completion","model":"m","choices":[{"index":0,"message":{"role":"assistant","content":"hi"},"finish_reason":"stop"}],`+
				`"usage":{"prompt_tokens":2006,"completion_tokens":300,"total_tokens":2306,"prompt_tokens_details":{"cached_tokens":1920}}}`)
		case "nousage":
			_, _ = io.WriteString(w, `{"id":"c","object":"chat.completion","model":"m","choices":[{"index":0,"message":{"role":"assistant","content":"hi"},"finish_reason":"stop"}]}`)
		case "anthropic":
			_, _ = io.WriteString(w, `{"id":"msg_1","type":"message","role":"assistant","model":"m","content":[{"type":"text","text":"hi"}],"stop_reason":"end_turn",`+
				`"usage":{"input_tokens":50,"cache_creation_input_tokens":200,"cache_read_input_tokens":1000,"output_tokens":75}}`)
		case "cut":
			w.Header().Set("Content-Type", "text/event-stream")
			_, _ = io.WriteString(w, "data: {\"id\":\"c\",\"object\":\"chat.completion.chunk\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\"hi\"}}]}\n\n")
			w.(http.Flusher).Flush()
			if conn, _, err := http.NewResponseController(w).Hijack(); err == nil {
				_ = conn.Close()
			}
		default:
			http.NotFound(w, r)
		}
	}))
	t.Cleanup(srv.Close)
	return srv
}

// reservations records the tokens admission reserved for each call, as
// its work says.
type reservations struct {
	mu     sync.Mutex
	byCall map[string]int64
}

func watchReservations(t *testing.T, nc *nats.Conn) *reservations {
	t.Helper()
	rs := &reservations{byCall: map[string]int64{}}
	sub, err := nc.Subscribe(messages.ExecSubjects, func(m *nats.Msg) {
		var w messages.Work
		if json.Unmarshal(m.Data, &w) != nil {
			return
		}
		rs.mu.Lock()
		rs.byCall[w.Call.ID] = w.ReservedTokens
		rs.mu.Unlock()
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := nc.Flush(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = sub.Unsubscribe() })
	return rs
}

func (rs *reservations) of(id string) int64 {
	rs.mu.Lock()
	defer rs.mu.Unlock()
	return rs.byCall[id]
}

// buildSluice builds the sluice command into a directory the test
// removes.
func buildSluice(t *testing.T) string {
	t.Helper()
	bin := filepath.Join(t.TempDir(), "sluice")
	cmd := exec.Command("go", "build", "-o", bin, "./cmd/sluice")
	cmd.Dir = ".." // the module's root
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("go build ./cmd/sluice: %v\n%s", err, out)
	}
	return bin
}

// Each result carries its cost at its deployment's prices: priced part by
// part from the usage OpenAI and Anthropic report (cached prompt tokens
// at the cached price, a deployment's own per-request price), and, for
// an answer without usage, its reservation at the highest price, marked
// estimated. `sluice usage --by day` shows the day's cost beside the
// tokens, and its JSON the same figures.
func TestResultsCarryTheirCost(t *testing.T) {
	provider := pricedProvider(t)
	yaml := func(string) string {
		return fmt.Sprintf(`prices: {currency: EUR}
pools:
  gpt:
    prices: {input: 2.5, cached_input: 1.25, output: 10}
    deployments:
      - {id: gpt-1, provider: openai, base_url: %q, region: us-east, key: KEY_GPT, rpm: 6000, tpm: 1000000}
  bare:
    prices: {input: 2.5, cached_input: 1.25, output: 10}
    deployments:
      - {id: bare-1, provider: openai, base_url: %q, region: us-east, key: KEY_BARE, rpm: 6000, tpm: 1000000}
  claude:
    prices: {input: 3, cached_input: 0.3, output: 15}
    deployments:
      - {id: claude-1, provider: anthropic, base_url: %q, region: us-east, key: KEY_CLAUDE, rpm: 6000, tpm: 1000000, prices: {per_request: 0.001}}
  cut:
    prices: {input: 2.5, output: 10}
    deployments:
      - {id: cut-1, provider: openai, base_url: %q, region: us-east, key: KEY_CUT, rpm: 6000, tpm: 1000000}
  free:
    deployments:
      - {id: free-1, provider: openai, base_url: %q, region: us-east, key: KEY_FREE, rpm: 6000, tpm: 1000000}
teams:
  demo: {}
`, provider.URL+"/usage/v1", provider.URL+"/nousage/v1", provider.URL+"/anthropic/v1", provider.URL+"/cut/v1", provider.URL+"/usage/v1")
	}
	s := startStack(t, stackOptions{yaml: yaml})
	startDispatcher(t, s, "d1", nil)
	startExecutors(t, s)
	nc := connect(t, s)
	js, _ := jetstream.New(nc)
	log := watchResults(t, nc, "demo")
	reserved := watchReservations(t, nc)
	calls := map[string]string{
		"openai":    chatCall("openai", "gpt", 400, ""),
		"nousage":   chatCall("nousage", "bare", 400, ""),
		"anthropic": `{"id":"anthropic","model":"claude","endpoint":"/v1/messages","body":{"max_tokens":100,"messages":[{"role":"user","content":"hi"}]}}`,
		"unpriced":  chatCall("unpriced", "free", 400, ""),
		"cut":       `{"id":"cut","model":"cut","body":{"stream":true,"max_tokens":50,"messages":[{"role":"user","content":"hi"}]}}`,
	}
	var ids []string
	for id, body := range calls {
		ids = append(ids, id)
		if err := publishCall(t.Context(), js, "demo", "standard", id, body); err != nil {
			t.Fatal(err)
		}
	}
	log.waitFor(t, ids, 30*time.Second)
	got := log.exactlyOnce(t, ids)
	near := func(a, b float64) bool { return math.Abs(a-b) <= 1e-12*math.Max(1, math.Abs(b)) }

	// OpenAI: 86 uncached and 1920 cached prompt tokens, 300 completion.
	want := (86*2.5 + 1920*1.25 + 300*10.0) / 1e6
	if c := got["openai"].Cost; c == nil || c.Currency != "EUR" || c.Estimated || !near(c.Total, want) ||
		!near(c.CachedInput, 1920*1.25/1e6) || !near(c.Input, 86*2.5/1e6) || !near(c.Output, 300*10.0/1e6) {
		t.Errorf("openai: cost %+v, want %g EUR from its usage %+v", c, want, got["openai"].Usage)
	}
	// Anthropic: 250 uncached (50 + 200 written to the cache) and 1000
	// read from it, 75 completion, and the deployment's request price.
	want = (250*3.0+1000*0.3+75*15.0)/1e6 + 0.001
	if c := got["anthropic"].Cost; c == nil || c.Estimated || !near(c.Total, want) || !near(c.Request, 0.001) {
		t.Errorf("anthropic: cost %+v, want %g EUR", c, want)
	}
	// No usage: the reservation, every token at the output price.
	r := reserved.of("nousage")
	if res := got["nousage"]; res.Status != messages.StatusOK || res.Usage != nil || r <= 400 {
		t.Fatalf("nousage: status %s usage %+v, reserved %d (want more than max_tokens, 400)", res.Status, res.Usage, r)
	}
	if c := got["nousage"].Cost; c == nil || !c.Estimated || c.ReservedTokens != r || !near(c.Total, float64(r)*10/1e6) {
		t.Errorf("nousage: cost %+v, want an estimate of the %d tokens reserved at 10 EUR a million", c, r)
	}
	// A stream cut off after a chunk: an error, yet an answer the
	// provider may charge, estimated at the reservation.
	rc := reserved.of("cut")
	if res := got["cut"]; res.Error == nil || res.Chunks != 1 || rc <= 50 {
		t.Fatalf("cut: error %+v after %d chunks, reserved %d", res.Error, res.Chunks, rc)
	}
	if c := got["cut"].Cost; c == nil || !c.Estimated || c.ReservedTokens != rc || !near(c.Total, float64(rc)*10/1e6) {
		t.Errorf("cut: cost %+v, want an estimate of the %d tokens reserved", c, rc)
	}
	if c := got["unpriced"].Cost; c != nil || got["unpriced"].Usage == nil {
		t.Errorf("unpriced: cost %+v, want none (usage %+v)", c, got["unpriced"].Usage)
	}

	// sluice usage --by day: today's row per pool, with the cost.
	bin := buildSluice(t)
	wantCost := map[string]float64{"gpt": (86*2.5 + 1920*1.25 + 300*10.0) / 1e6, "bare": float64(r) * 10 / 1e6, "claude": (250*3.0+1000*0.3+75*15.0)/1e6 + 0.001,
		"cut": float64(rc) * 10 / 1e6}
	sluiceUsage := func(args ...string) string {
		t.Helper()
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		out, err := exec.CommandContext(ctx, bin, append([]string{"usage", "--server", s.ClientURL(), "--by", "day"}, args...)...).CombinedOutput()
		if err != nil {
			t.Fatalf("sluice usage: %v\n%s", err, out)
		}
		return string(out)
	}
	var rows []usage.Total
	deadline := time.Now().Add(3 * usage.FlushEvery)
	for {
		out := sluiceUsage("--json")
		if err := json.Unmarshal([]byte(out), &rows); err != nil {
			t.Fatalf("%v: %s", err, out)
		}
		var ended int64
		for _, row := range rows {
			ended += row.Calls
		}
		if ended == int64(len(calls)) || time.Now().After(deadline) {
			break
		}
		time.Sleep(100 * time.Millisecond) // poll until the roll-ups are flushed
	}
	today := time.Now().UTC().Format(time.DateOnly)
	seen := map[string]bool{}
	for _, row := range rows {
		if row.Day != today && row.Day != time.Now().UTC().Add(-time.Hour).Format(time.DateOnly) {
			t.Errorf("a row of day %q, want %s: %+v", row.Day, today, row)
		}
		seen[row.Pool] = true
		w, priced := wantCost[row.Pool]
		switch {
		case !priced && len(row.Cost) != 0:
			t.Errorf("%s: cost %v, want none", row.Pool, row.Cost)
		case priced && (len(row.Cost) != 1 || !near(row.Cost["EUR"], w)):
			t.Errorf("%s: cost %v, want %g EUR", row.Pool, row.Cost, w)
		}
		estimated := row.Pool == "bare" || row.Pool == "cut"
		if est := row.EstimatedCost["EUR"]; estimated && !near(est, w) || !estimated && est != 0 {
			t.Errorf("%s: estimated %v", row.Pool, row.EstimatedCost)
		}
	}
	if len(seen) != len(calls) {
		t.Fatalf("rows %+v, want one per pool", rows)
	}
	table := sluiceUsage()
	for _, want := range []string{"DAY", "COST", "CACHED", today, fmt.Sprintf("%.6f EUR", wantCost["gpt"]),
		fmt.Sprintf("%.6f EUR (%.6f estimated)", wantCost["bare"], wantCost["bare"]), "1920"} {
		if !strings.Contains(table, want) {
			t.Errorf("the table has no %q:\n%s", want, table)
		}
	}
}
