package limiter_test

import (
	"context"
	"errors"
	"fmt"
	"sync/atomic"
	"testing"
	"time"

	"github.com/sluicehq/sluice/services/limiter"
	"github.com/sluicehq/sluice/services/limiter/limitertest"
	"github.com/sluicehq/sluice/test/natstest"
)

func TestKVSchedulerContract(t *testing.T) {
	srv := natstest.Start(t)
	var buckets atomic.Int64
	limitertest.RunScheduler(t, func(t *testing.T, clock limiter.Clock) func() limiter.Scheduler {
		bucket := fmt.Sprintf("schedules_%d", buckets.Add(1))
		createBucket(t, srv, bucket)
		// Each instance is a dispatcher: its own connection, cache and
		// watcher, over the same KV bucket.
		return func() limiter.Scheduler {
			s := limiter.NewKVScheduler(openBucket(t, srv, bucket), limiter.KVOptions{Clock: clock})
			if err := s.Start(context.Background()); err != nil {
				t.Fatalf("start KV scheduler: %v", err)
			}
			t.Cleanup(s.Stop)
			return s
		}
	})
}

// A lease the cached state refuses costs no KV operation, and one that
// succeeds costs one.
func TestKVSchedulerOps(t *testing.T) {
	srv := natstest.Start(t)
	createBucket(t, srv, "schedules")
	clock := limitertest.NewManualClock()
	s := limiter.NewKVScheduler(openBucket(t, srv, "schedules"), limiter.KVOptions{Clock: clock.Now})
	if err := s.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	defer s.Stop()
	lim := limiter.Limit{RPM: 60, BurstRequests: 1}
	one := limiter.Amount{Requests: 1}
	if _, err := s.Lease(context.Background(), "dep", lim, one, one, 0, 0); err != nil {
		t.Fatal(err)
	}
	if got := s.Ops(); got != 1 {
		t.Fatalf("a lease cost %d KV operations, want 1", got)
	}
	if _, err := s.Lease(context.Background(), "dep", lim, one, one, 0, 0); !errors.Is(err, limiter.ErrInsufficient) {
		t.Fatalf("second lease within a second: %v", err)
	}
	if got := s.Ops(); got != 1 {
		t.Fatalf("a refused lease cost %d KV operations, want 0", got-1)
	}
	clock.Advance(time.Second)
}

// An unreadable stored schedule is reported, not read as a fresh one.
func TestKVSchedulerBadState(t *testing.T) {
	srv := natstest.Start(t)
	kv := createBucket(t, srv, "schedules")
	if _, err := kv.Put(context.Background(), "dep", []byte(`{"r":1}`)); err != nil {
		t.Fatal(err)
	}
	s := limiter.NewKVScheduler(openBucket(t, srv, "schedules"), limiter.KVOptions{})
	lim := limiter.Limit{RPM: 60, BurstRequests: 1}
	one := limiter.Amount{Requests: 1}
	if _, err := s.Lease(context.Background(), "dep", lim, one, one, 0, 0); !errors.Is(err, limiter.ErrBadState) {
		t.Fatalf("Lease on a bad state: %v, want ErrBadState", err)
	}
}
