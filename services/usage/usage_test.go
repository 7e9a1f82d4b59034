package usage_test

import (
	"context"
	"math"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/sluicehq/sluice/messages"
	"github.com/sluicehq/sluice/services/config"
	"github.com/sluicehq/sluice/services/usage"
	"github.com/sluicehq/sluice/test/natstest"
)

func TestHistogramQuantiles(t *testing.T) {
	var h usage.Histogram
	for i := 0; i < 98; i++ {
		h.Observe(3 * time.Millisecond) // bucket below 4 ms
	}
	h.Observe(100 * time.Millisecond)
	h.Observe(5 * time.Second)
	if got := h.Quantile(0.5); got != 4*time.Millisecond {
		t.Errorf("p50 %v, want 4ms (the bucket bound above 3ms)", got)
	}
	if got := h.Quantile(0.99); got != 128*time.Millisecond {
		t.Errorf("p99 %v, want 128ms", got)
	}
	if got := h.Quantile(1); got != 8192*time.Millisecond {
		t.Errorf("max %v, want 8.192s", got)
	}
	var zero usage.Histogram
	zero.Observe(0)
	if zero.Quantile(0.5) != time.Millisecond {
		t.Errorf("sub-millisecond waits fall in the first bucket")
	}
}

// Several services record at once; their figures add up exactly in KV,
// and Query sums the hours asked for.
func TestRecordersMergeIntoKV(t *testing.T) {
	srv := natstest.Start(t)
	ctx := context.Background()
	js, _ := jetstream.New(natstest.Connect(t, srv))
	kv, err := js.CreateOrUpdateKeyValue(ctx, jetstream.KeyValueConfig{Bucket: messages.BucketUsage})
	if err != nil {
		t.Fatal(err)
	}
	hour := time.Date(2026, 11, 25, 10, 30, 0, 0, time.UTC)
	clock := func() time.Time { return hour }
	ok := &messages.Result{Team: "a", Model: "m", Tier: messages.TierStandard, Status: messages.StatusOK,
		Usage: &messages.Usage{PromptTokens: 7, CompletionTokens: 3, TotalTokens: 10}, Timings: messages.Timings{QueuedMS: 2}}
	failed := &messages.Result{Team: "a", Model: "m", Tier: messages.TierStandard, Status: messages.StatusError,
		Error: &messages.Error{Code: messages.CodeDeadlineExceeded}, Timings: messages.Timings{QueuedMS: 900}}

	var wg sync.WaitGroup
	for i := 0; i < 4; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			// Each recorder on its own connection, like separate services.
			kvi, err := jetstream.New(natstest.Connect(t, srv))
			if err != nil {
				t.Error(err)
				return
			}
			bucket, _ := kvi.KeyValue(ctx, messages.BucketUsage)
			r := usage.NewRecorder(bucket, usage.RecorderConfig{Shared: knowing("a", "m"), Clock: clock})
			for j := 0; j < 25; j++ {
				r.Result(ok)
				if err := r.Flush(ctx); err != nil {
					t.Error(err)
				}
			}
			r.Result(failed)
			r.Met429("a", "m", messages.TierStandard)
			if err := r.Flush(ctx); err != nil {
				t.Error(err)
			}
		}()
	}
	wg.Wait()
	totals, err := usage.Query(ctx, kv, hour.Add(-time.Hour), hour.Add(time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	if len(totals) != 1 {
		t.Fatalf("totals %+v", totals)
	}
	got := totals[0]
	if got.Calls != 104 || got.OK != 100 || got.Errors[messages.CodeDeadlineExceeded] != 4 || got.RateLimited != 4 ||
		got.TotalTokens != 1000 || got.PromptTokens != 700 || got.CompletionTokens != 300 {
		t.Fatalf("merged figures %+v", got)
	}
	if got.WaitP50MS != 4 || got.WaitP99MS != 1024 {
		t.Fatalf("wait p50 %v p99 %v", got.WaitP50MS, got.WaitP99MS)
	}
	// Hours outside the span are left out.
	if none, _ := usage.Query(ctx, kv, hour.Add(2*time.Hour), hour.Add(3*time.Hour)); len(none) != 0 {
		t.Fatalf("a later span found %+v", none)
	}
}

// Roll-ups add up the results' costs per currency, with the part
// estimated at reservations apart, and the cached prompt tokens; a query
// by day splits them by UTC day, a query of the whole span adds them up.
func TestCostsAddUpByDay(t *testing.T) {
	srv := natstest.Start(t)
	ctx := context.Background()
	js, _ := jetstream.New(natstest.Connect(t, srv))
	kv, err := js.CreateOrUpdateKeyValue(ctx, jetstream.KeyValueConfig{Bucket: messages.BucketUsage})
	if err != nil {
		t.Fatal(err)
	}
	day1 := time.Date(2026, 12, 2, 23, 10, 0, 0, time.UTC)
	day2 := time.Date(2026, 12, 3, 0, 20, 0, 0, time.UTC)
	now := day1
	r := usage.NewRecorder(kv, usage.RecorderConfig{Shared: knowing("a", "m"), Clock: func() time.Time { return now }})
	exact := &messages.Result{Team: "a", Model: "m", Tier: messages.TierStandard,
		Usage: &messages.Usage{PromptTokens: 100, CompletionTokens: 10, TotalTokens: 110, PromptTokensDetails: &messages.PromptTokensDetails{CachedTokens: 60}},
		Cost:  &messages.Cost{Currency: "USD", Total: 0.25, Input: 0.1, CachedInput: 0.05, Output: 0.1}}
	estimated := &messages.Result{Team: "a", Model: "m", Tier: messages.TierStandard,
		Cost: &messages.Cost{Currency: "USD", Total: 0.5, Estimated: true, ReservedTokens: 300}}
	unpriced := &messages.Result{Team: "a", Model: "m", Tier: messages.TierStandard, Usage: &messages.Usage{PromptTokens: 1, TotalTokens: 1}}
	for range 3 {
		r.Result(exact)
	}
	r.Result(estimated)
	r.Result(unpriced)
	if err := r.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	now = day2
	r.Result(exact)
	r.Result(&messages.Result{Team: "a", Model: "m", Tier: messages.TierStandard, Cost: &messages.Cost{Currency: "EUR", Total: 2}})
	if err := r.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	near := func(a, b float64) bool { return math.Abs(a-b) < 1e-9 }

	daily, err := usage.QueryBy(ctx, kv, day1.Add(-24*time.Hour), day2.Add(time.Hour), usage.Daily)
	if err != nil {
		t.Fatal(err)
	}
	if len(daily) != 2 || daily[0].Day != "2026-12-02" || daily[1].Day != "2026-12-03" {
		t.Fatalf("daily totals %+v, want 2026-12-02 and 2026-12-03", daily)
	}
	d1, d2 := daily[0], daily[1]
	if d1.Calls != 5 || d1.CachedPromptTokens != 180 || d1.PromptTokens != 301 || len(d1.Cost) != 1 || !near(d1.Cost["USD"], 1.25) || !near(d1.EstimatedCost["USD"], 0.5) {
		t.Errorf("day 1: %+v, want 5 calls, 180 cached of 301 prompt tokens, 1.25 USD of which 0.5 estimated", d1.Record)
	}
	if d2.Calls != 2 || !near(d2.Cost["USD"], 0.25) || !near(d2.Cost["EUR"], 2) || len(d2.EstimatedCost) != 0 {
		t.Errorf("day 2: %+v, want 0.25 USD and 2 EUR, none estimated", d2.Record)
	}
	whole, err := usage.Query(ctx, kv, day1.Add(-24*time.Hour), day2.Add(time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	if len(whole) != 1 || whole[0].Day != "" || whole[0].Calls != 7 || !near(whole[0].Cost["USD"], 1.5) || !near(whole[0].Cost["EUR"], 2) ||
		!near(whole[0].EstimatedCost["USD"], 0.5) || whole[0].CachedPromptTokens != 240 {
		t.Errorf("whole span: %+v", whole)
	}
	if _, err := usage.QueryBy(ctx, kv, day1, day2, usage.Period("week")); err == nil {
		t.Error("a query by week is not one sluice knows, yet it was answered")
	}
}

// Roll-ups count what a capacity plan needs: the calls that waited past
// their tier's target (late), those that failed for lack of capacity
// (unserved, never late too), the calls
// by the minute they arrived in, and the regions that served them.
func TestRollupsCountUnmetDemand(t *testing.T) {
	_, kv := usageBucket(t, jetstream.KeyValueConfig{Bucket: messages.BucketUsage})
	ctx := t.Context()
	hour := time.Date(2026, 12, 3, 9, 0, 0, 0, time.UTC)
	cfg := &config.Config{
		Teams: map[string]*config.Team{"a": {}},
		Pools: map[string]*config.Pool{"m": {Deployments: []*config.Deployment{{ID: "d1", Region: "r1"}}}},
	}
	cfg.Tiers.Standard.TargetWait = time.Second
	r := usage.NewRecorder(kv, usage.RecorderConfig{Shared: config.NewLive(cfg), Clock: func() time.Time { return hour.Add(40 * time.Minute) }})
	at := func(min int) messages.Timings {
		return messages.Timings{AcceptedAt: hour.Add(time.Duration(min) * time.Minute)}
	}
	call := func(waitMS float64, minute, attempts int, region string, code messages.Code) {
		res := &messages.Result{Team: "a", Model: "m", Tier: messages.TierStandard, Attempts: attempts, Region: region, Timings: at(minute)}
		res.Timings.QueuedMS = waitMS
		if code != "" {
			res.Error = &messages.Error{Code: code}
		}
		r.Result(res)
	}
	call(10, 7, 1, "r1", "")                                                    // in time
	call(2500, 7, 1, "r1", "")                                                  // waited past 1s
	call(1000, 7, 1, "elsewhere", "")                                           // exactly the target: in time
	call(0, 8, 0, "", messages.CodeQueueFull)                                   // refused: unserved
	call(30000, 8, 0, "", messages.CodeDeadlineExceeded)                        // waited out its deadline: unserved, not late
	call(10, 9, 2, "r1", messages.CodeDeadlineExceeded)                         // timed out at the provider: not for lack of capacity
	call(5, 9, 5, "r1", messages.CodeRateLimited)                               // the provider kept answering 429: unserved
	call(5, 59, 1, "r1", messages.CodeProviderError)                            // a provider error: served
	r.Result(&messages.Result{Team: "a", Model: "m", Tier: messages.TierBatch}) // no accepted_at: the clock's minute
	if err := r.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	totals, err := usage.Query(ctx, kv, hour, hour.Add(time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	if len(totals) != 2 {
		t.Fatalf("totals %+v", totals)
	}
	std, batch := totals[0], totals[1]
	if std.Calls != 8 || std.Late != 1 || std.Unserved != 3 {
		t.Errorf("late %d (want 1), unserved %d (want 3) of %d calls", std.Late, std.Unserved, std.Calls)
	}
	want := make([]int64, usage.Minutes)
	want[7], want[8], want[9], want[59] = 3, 2, 2, 1
	if len(std.ByMinute) != usage.Minutes {
		t.Fatalf("by minute %v", std.ByMinute)
	}
	for i := range want {
		if std.ByMinute[i] != want[i] {
			t.Fatalf("by minute %v, want %v", std.ByMinute, want)
		}
	}
	if len(std.Regions) != 2 || std.Regions["r1"] != 5 || std.Regions[config.Unknown] != 1 {
		t.Errorf("regions %v, want r1 5 and unknown 1 (calls that made no request have none)", std.Regions)
	}
	if batch.ByMinute[40] != 1 || batch.Late != 0 {
		t.Errorf("batch %+v", batch.Record)
	}
}
