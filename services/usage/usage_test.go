package usage_test

import (
	"context"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/sluicehq/sluice/messages"
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
