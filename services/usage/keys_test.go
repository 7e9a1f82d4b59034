package usage_test

import (
	"bytes"
	"encoding/json"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"

	"github.com/sluicehq/sluice/messages"
	"github.com/sluicehq/sluice/services/config"
	"github.com/sluicehq/sluice/services/telemetry"
	"github.com/sluicehq/sluice/services/usage"
	"github.com/sluicehq/sluice/test/natstest"
)

// oddNames are names no configuration validates, but that a result may
// carry, and the ones whose escaped form looks like another's.
var oddNames = []string{
	"", " ", "t@m", "a.b", "a_b", "a=2Eb", "a=2eb", "=", "==", ".", "..", "*", ">", "sp ace",
	"ünïcödé", "日本語", "tab\there", "slash/", strings.Repeat("x", 65), strings.Repeat("é", 300),
	strings.Repeat("é", 299) + "e",
}

func usageBucket(t *testing.T, cfg jetstream.KeyValueConfig) (jetstream.JetStream, jetstream.KeyValue) {
	t.Helper()
	srv := natstest.Start(t)
	js, err := jetstream.New(natstest.Connect(t, srv))
	if err != nil {
		t.Fatal(err)
	}
	kv, err := js.CreateOrUpdateKeyValue(t.Context(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	return js, kv
}

func keysOf(t *testing.T, kv jetstream.KeyValue) []string {
	t.Helper()
	lister, err := kv.ListKeys(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	var keys []string
	for k := range lister.Keys() {
		keys = append(keys, k)
	}
	return keys
}

// knowing is a live configuration that knows the given names as teams
// and as pools, unvalidated, as an older or hand-made one might.
func knowing(names ...string) *config.Live {
	c := &config.Config{Teams: map[string]*config.Team{}, Pools: map[string]*config.Pool{}}
	for _, n := range names {
		c.Teams[n], c.Pools[n] = &config.Team{}, &config.Pool{}
	}
	return config.NewLive(c)
}

// Whatever names a roll-up has, its key is one KV accepts, and distinct
// names make distinct roll-ups: each flush saves everything, and the
// values give the names back.
func TestEveryNameMakesAValidKey(t *testing.T) {
	_, kv := usageBucket(t, jetstream.KeyValueConfig{Bucket: messages.BucketUsage})
	ctx := t.Context()
	hour := time.Date(2026, 12, 2, 6, 0, 0, 0, time.UTC)
	r := usage.NewRecorder(kv, usage.RecorderConfig{Shared: knowing(oddNames...), Clock: func() time.Time { return hour }})
	for _, n := range oddNames {
		r.Result(&messages.Result{Team: n, Model: n, Tier: messages.TierBatch, Error: &messages.Error{Code: messages.CodeInvalidRequest}})
		r.Met429(n, n, messages.TierBatch)
	}
	if err := r.Flush(ctx); err != nil {
		t.Fatalf("flush: %v", err)
	}
	if keys := keysOf(t, kv); len(keys) != len(oddNames) {
		t.Fatalf("%d keys for %d names: %q", len(keys), len(oddNames), keys)
	}
	totals, err := usage.Query(ctx, kv, hour, hour.Add(time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]usage.Total{}
	for _, tot := range totals {
		if tot.Team != tot.Pool || tot.Tier != messages.TierBatch {
			t.Errorf("roll-up mixes names: %+v", tot.Record)
		}
		got[tot.Team] = tot
	}
	for _, n := range oddNames {
		tot, ok := got[n]
		if !ok || tot.Calls != 1 || tot.Errors[messages.CodeInvalidRequest] != 1 || tot.RateLimited != 1 {
			t.Errorf("name %q: %+v (found %v)", n, tot.Record, ok)
		}
	}
}

// Names the configuration does not know, in any place, are recorded
// under one: however many a client makes up, they add one key per hour.
func TestUnknownNamesShareOneRollup(t *testing.T) {
	_, kv := usageBucket(t, jetstream.KeyValueConfig{Bucket: messages.BucketUsage})
	ctx := t.Context()
	hour := time.Date(2026, 12, 2, 6, 0, 0, 0, time.UTC)
	r := usage.NewRecorder(kv, usage.RecorderConfig{Shared: knowing("demo", "m"), Clock: func() time.Time { return hour }})
	bad := &messages.Error{Code: messages.CodeForbidden}
	for i, n := range oddNames {
		r.Result(&messages.Result{Team: "junk" + n, Model: n, Tier: messages.Tier("tier" + n), Error: bad})
		r.Result(&messages.Result{Team: "demo", Model: n, Tier: messages.TierStandard, Error: bad})
		r.Met429(n, "m", messages.Tier(fmt.Sprint(i)))
	}
	if err := r.Flush(ctx); err != nil {
		t.Fatalf("flush: %v", err)
	}
	totals, err := usage.Query(ctx, kv, hour, hour.Add(time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	n := int64(len(oddNames))
	want := map[string]int64{ // team/pool/tier: calls (or 429s)
		"unknown/unknown/unknown": n, "demo/unknown/standard": n, "unknown/m/unknown": n,
	}
	for _, tot := range totals {
		k := tot.Team + "/" + tot.Pool + "/" + string(tot.Tier)
		if got := tot.Calls + tot.RateLimited; got != want[k] {
			t.Errorf("%s: %d calls and 429s, want %d", k, got, want[k])
		}
		delete(want, k)
	}
	if len(want) != 0 || len(keysOf(t, kv)) != 3 {
		t.Errorf("missing roll-ups %v; keys %q", want, keysOf(t, kv))
	}
}

// Roll-ups stored under the keys of older versions (names unencoded)
// add up with the ones of the same names stored now.
func TestOlderKeysStillCount(t *testing.T) {
	_, kv := usageBucket(t, jetstream.KeyValueConfig{Bucket: messages.BucketUsage})
	ctx := t.Context()
	hour := time.Date(2026, 12, 2, 6, 0, 0, 0, time.UTC)
	old, _ := json.Marshal(usage.Record{Hour: hour, Team: "demo", Pool: "gpt-4.1", Tier: messages.TierHigh, Calls: 2, OK: 2})
	if _, err := kv.Put(ctx, "h2026120206.demo.high.gpt-4.1", old); err != nil {
		t.Fatal(err)
	}
	r := usage.NewRecorder(kv, usage.RecorderConfig{Shared: knowing("demo", "gpt-4.1"), Clock: func() time.Time { return hour }})
	r.Result(&messages.Result{Team: "demo", Model: "gpt-4.1", Tier: messages.TierHigh})
	if err := r.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	totals, err := usage.Query(ctx, kv, hour, hour.Add(time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	if len(totals) != 1 || totals[0].Calls != 3 || totals[0].OK != 3 || totals[0].Pool != "gpt-4.1" {
		t.Fatalf("totals %+v, want demo/gpt-4.1/high with 3 calls", totals)
	}
	if keys := keysOf(t, kv); len(keys) != 2 {
		t.Errorf("keys %q, want the old one and h2026120206.demo.high.gpt-4=2E1", keys)
	}
}

// A roll-up KV refuses for a reason retrying cannot fix (here: a value
// over the bucket's maximum size) is logged once, counted and dropped,
// not retried every flush for ever.
func TestARefusedRollupIsDropped(t *testing.T) {
	_, kv := usageBucket(t, jetstream.KeyValueConfig{Bucket: "SMALL", MaxValueSize: 16})
	var logs syncBuffer
	log := slog.New(slog.NewTextHandler(&logs, nil))
	metrics := telemetry.New(prometheus.NewRegistry())
	r := usage.NewRecorder(kv, usage.RecorderConfig{Shared: knowing("a", "m"), Metrics: metrics, Log: log})
	r.Result(&messages.Result{Team: "a", Model: "m", Tier: messages.TierStandard})
	for i := 0; i < 3; i++ {
		if err := r.Flush(t.Context()); err != nil {
			t.Errorf("flush %d: %v, want nil: the refused roll-up is dropped, not kept", i+1, err)
		}
	}
	if n := strings.Count(logs.String(), "\n"); n != 1 {
		t.Errorf("%d log lines, want 1:\n%s", n, logs.String())
	}
	if n := failures(metrics, "dropped"); n != 1 {
		t.Errorf("%v roll-ups counted as dropped, want 1", n)
	}
	// Another figure for the same roll-up is tried again, and counted,
	// but not logged again within the hour.
	r.Result(&messages.Result{Team: "a", Model: "m", Tier: messages.TierStandard})
	if err := r.Flush(t.Context()); err != nil {
		t.Errorf("flush: %v", err)
	}
	if n := failures(metrics, "dropped"); n != 2 {
		t.Errorf("%v roll-ups counted as dropped, want 2", n)
	}
	if n := strings.Count(logs.String(), "\n"); n != 1 {
		t.Errorf("%d log lines, want 1:\n%s", n, logs.String())
	}
	if n := failures(metrics, "retried"); n != 0 {
		t.Errorf("%v roll-ups counted as retried, want 0", n)
	}
}

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

// failures is sluice_usage_merge_failures_total{fate}.
func failures(m *telemetry.Metrics, fate string) float64 {
	var d dto.Metric
	if err := m.UsageMergeFailures.WithLabelValues(fate).Write(&d); err != nil {
		panic(err)
	}
	return d.GetCounter().GetValue()
}
