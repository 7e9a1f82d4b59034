package limiter_test

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/sluicehq/sluice/services/limiter"
	"github.com/sluicehq/sluice/test/natstest"
)

// BenchmarkKVTake measures Take on one hot key shared by several writers,
// each a process of its own (its own connection, KV and cache), with and
// without Leases in front. The limit is out of reach, so every call is
// granted: this measures the cost of coordination, not refusals.
//
//	go test -run '^$' -bench KVTake -benchtime 3s ./services/limiter
//
// Reported: takes/s across all writers, KV operations and conflicts per
// Take, and Takes that gave up on contention (ErrContention) per Take.
func BenchmarkKVTake(b *testing.B) {
	for _, writers := range []int{1, 4, 16} {
		for _, leased := range []bool{false, true} {
			b.Run(fmt.Sprintf("writers=%d/leases=%v", writers, leased), func(b *testing.B) {
				benchmarkKVTake(b, writers, leased)
			})
		}
	}
}

func benchmarkKVTake(b *testing.B, writers int, leased bool) {
	srv := natstest.Start(b)
	createBucket(b, srv, "limits")
	lim := limiter.Limit{RPM: 1e12, TPM: 1e15, BurstRequests: 1e9, BurstTokens: 1e12}
	need := amt(1, 500)
	ctx := context.Background()

	kvs := make([]*limiter.KV, writers)
	takes := make([]func() error, writers)
	for i := range writers {
		kv := startKV(b, openBucket(b, srv, "limits"), limiter.KVOptions{})
		kvs[i] = kv
		if leased {
			ls := limiter.NewLeases(kv, limiter.LeaseOptions{})
			takes[i] = func() error { return ls.Take(ctx, "hot", lim, need) }
			b.Cleanup(func() { _ = ls.Flush(ctx) })
		} else {
			takes[i] = func() error { _, err := kv.Take(ctx, "hot", lim, need, need); return err }
		}
	}

	var next, gaveUp atomic.Int64
	var wg sync.WaitGroup
	b.ResetTimer()
	start := time.Now()
	for i := range writers {
		wg.Go(func() {
			for next.Add(1) <= int64(b.N) {
				err := takes[i]()
				switch {
				case errors.Is(err, limiter.ErrContention):
					gaveUp.Add(1)
				case err != nil:
					b.Error(err)
					return
				}
			}
		})
	}
	wg.Wait()
	elapsed := time.Since(start)
	b.StopTimer()

	var ops, conflicts uint64
	for _, kv := range kvs {
		ops += kv.Ops()
		conflicts += kv.Conflicts()
	}
	n := float64(b.N)
	b.ReportMetric(n/elapsed.Seconds(), "takes/s")
	b.ReportMetric(float64(ops)/n, "kvops/take")
	b.ReportMetric(float64(conflicts)/n, "conflicts/take")
	b.ReportMetric(float64(gaveUp.Load())/n, "gaveup/take")
}
