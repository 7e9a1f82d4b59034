// Package limitertest is the contract suites that every limiter.Limiter
// and limiter.Scheduler implementation passes: the same tests, run against
// each implementation (the in-memory and the KV-backed limiter, the
// KV-backed scheduler), so that they cannot drift apart.
//
// A Limiter's test calls Run with a Backend (a Scheduler's, RunScheduler
// with a SchedulerBackend):
//
//	func TestMemory(t *testing.T) {
//		limitertest.Run(t, func(t *testing.T, clock limiter.Clock) func() limiter.Limiter {
//			m := limiter.NewMemory(clock)
//			return func() limiter.Limiter { return m }
//		})
//	}
package limitertest

import (
	"context"
	"errors"
	"math"
	"sync"
	"testing"
	"time"

	"github.com/sluicehq/sluice/services/limiter"
)

// Backend creates fresh shared limiter state for one test, reading time from
// clock, and returns a function that opens one more Limiter over that state,
// like one more dispatcher process. Everything it creates must be released
// by t.Cleanup.
type Backend func(t *testing.T, clock limiter.Clock) (open func() limiter.Limiter)

// lim is the limit most tests use: 1 request and 100 tokens per second, with
// bursts of 10 requests and 1000 tokens.
func lim() limiter.Limit {
	return limiter.Limit{RPM: 60, TPM: 6000, BurstRequests: 10, BurstTokens: 1000}
}

const key = "oai-us-1"

// Run runs the contract suite against backend.
func Run(t *testing.T, backend Backend) {
	tests := []struct {
		name string
		run  func(t *testing.T, c *ManualClock, open func() limiter.Limiter)
	}{
		{"FreshBucketIsFull", testFreshBucketIsFull},
		{"TakeGrantsUpToMax", testTakeGrantsUpToMax},
		{"TakeGrantsWhatIsLeft", testTakeGrantsWhatIsLeft},
		{"InsufficientDebitsNothing", testInsufficientDebitsNothing},
		{"RetryAfterIsEnough", testRetryAfterIsEnough},
		{"Refill", testRefill},
		{"OversizedTakeNeedsFullBucket", testOversizedTakeNeedsFullBucket},
		{"ZeroMinNeverFails", testZeroMinNeverFails},
		{"UnlimitedDimension", testUnlimitedDimension},
		{"AdjustRefundIsCapped", testAdjustRefundIsCapped},
		{"AdjustChargeGoesNegative", testAdjustChargeGoesNegative},
		{"ShrinkingLimitClamps", testShrinkingLimitClamps},
		{"ClockGoingBackwardsRefillsNothing", testClockGoingBackwards},
		{"KeysAreIndependent", testKeysAreIndependent},
		{"InvalidArguments", testInvalidArguments},
		{"CancelledContext", testCancelledContext},
		{"SharedBetweenInstances", testSharedBetweenInstances},
		{"ConcurrentTakesNeverOverGrant", testConcurrentTakes},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := NewManualClock()
			open := backend(t, c.Now)
			tt.run(t, c, open)
		})
	}
}

func testFreshBucketIsFull(t *testing.T, _ *ManualClock, open func() limiter.Limiter) {
	l := open()
	wantAvailable(t, l, key, lim(), amt(10, 1000))
}

func testTakeGrantsUpToMax(t *testing.T, _ *ManualClock, open func() limiter.Limiter) {
	l := open()
	wantGrant(t, l, key, lim(), amt(1, 100), amt(3, 300), amt(3, 300))
	wantAvailable(t, l, key, lim(), amt(7, 700))
}

func testTakeGrantsWhatIsLeft(t *testing.T, _ *ManualClock, open func() limiter.Limiter) {
	l := open()
	wantGrant(t, l, key, lim(), amt(1, 1), amt(8, 900), amt(8, 900))
	wantGrant(t, l, key, lim(), amt(1, 1), amt(8, 900), amt(2, 100))
	wantAvailable(t, l, key, lim(), amt(0, 0))
}

func testInsufficientDebitsNothing(t *testing.T, _ *ManualClock, open func() limiter.Limiter) {
	l := open()
	wantGrant(t, l, key, lim(), amt(7, 950), amt(7, 950), amt(7, 950))
	// One dimension short: 2 requests missing at 1/s.
	wantInsufficient(t, l, key, lim(), amt(5, 10), 2*time.Second)
	// Both short: the longer wait wins, (400-50) tokens at 100/s.
	wantInsufficient(t, l, key, lim(), amt(4, 400), 3500*time.Millisecond)
	wantAvailable(t, l, key, lim(), amt(3, 50))
}

func testRetryAfterIsEnough(t *testing.T, c *ManualClock, open func() limiter.Limiter) {
	l := open()
	wantGrant(t, l, key, lim(), amt(10, 0), amt(10, 0), amt(10, 0))
	err := insufficient(t, l, key, lim(), amt(2, 0))
	c.Advance(err.RetryAfter - time.Millisecond)
	if e := insufficient(t, l, key, lim(), amt(2, 0)); e.RetryAfter > time.Millisecond {
		t.Fatalf("1ms before the first RetryAfter, RetryAfter = %v, want <= 1ms", e.RetryAfter)
	}
	c.Advance(time.Millisecond)
	wantGrant(t, l, key, lim(), amt(2, 0), amt(2, 0), amt(2, 0))
}

func testRefill(t *testing.T, c *ManualClock, open func() limiter.Limiter) {
	l := open()
	wantGrant(t, l, key, lim(), amt(10, 1000), amt(10, 1000), amt(10, 1000))
	wantAvailable(t, l, key, lim(), amt(0, 0))
	c.Advance(500 * time.Millisecond)
	wantAvailable(t, l, key, lim(), amt(0.5, 50))
	c.Advance(500 * time.Millisecond)
	wantAvailable(t, l, key, lim(), amt(1, 100))
	c.Advance(time.Hour)
	wantAvailable(t, l, key, lim(), amt(10, 1000))
}

func testOversizedTakeNeedsFullBucket(t *testing.T, c *ManualClock, open func() limiter.Limiter) {
	l := open()
	// Larger than the whole burst: admitted because the bucket is full,
	// leaving 5 requests of debt.
	wantGrant(t, l, key, lim(), amt(15, 0), amt(15, 0), amt(15, 0))
	wantAvailable(t, l, key, lim(), amt(-5, 1000))
	// The debt is repaid before anything else is granted.
	wantInsufficient(t, l, key, lim(), amt(1, 0), 6*time.Second)
	c.Advance(6 * time.Second)
	wantGrant(t, l, key, lim(), amt(1, 0), amt(1, 0), amt(1, 0))

	// An oversized take waits for a full bucket, not for its own size.
	c.Advance(time.Hour)
	wantGrant(t, l, key, lim(), amt(1, 0), amt(1, 0), amt(1, 0))
	wantInsufficient(t, l, key, lim(), amt(15, 0), time.Second)
	c.Advance(time.Second)
	wantGrant(t, l, key, lim(), amt(15, 0), amt(20, 0), amt(15, 0))
}

func testZeroMinNeverFails(t *testing.T, _ *ManualClock, open func() limiter.Limiter) {
	l := open()
	wantGrant(t, l, key, lim(), amt(0, 1500), amt(0, 1500), amt(0, 1500))
	wantAvailable(t, l, key, lim(), amt(10, -500))
	// Tokens are in debt, but this call needs none of them.
	wantGrant(t, l, key, lim(), amt(1, 0), amt(1, 100), amt(1, 0))
}

func testUnlimitedDimension(t *testing.T, _ *ManualClock, open func() limiter.Limiter) {
	l := open()
	rpmOnly := limiter.Limit{RPM: 60, BurstRequests: 10}
	wantGrant(t, l, key, rpmOnly, amt(1, 1e6), amt(1, 1e9), amt(1, 1e9))
	wantAvailable(t, l, key, rpmOnly, amt(9, math.Inf(1)))
	if err := l.Adjust(context.Background(), key, rpmOnly, amt(0, -1e12)); err != nil {
		t.Fatal(err)
	}
	wantAvailable(t, l, key, rpmOnly, amt(9, math.Inf(1)))
	wantInsufficient(t, l, key, rpmOnly, amt(10, 0), time.Second)

	none := limiter.Limit{}
	wantGrant(t, l, "free", none, amt(5, 5), amt(7, 7), amt(7, 7))
	wantAvailable(t, l, "free", none, amt(math.Inf(1), math.Inf(1)))
}

func testAdjustRefundIsCapped(t *testing.T, _ *ManualClock, open func() limiter.Limiter) {
	l := open()
	wantGrant(t, l, key, lim(), amt(4, 400), amt(4, 400), amt(4, 400))
	adjust(t, l, key, lim(), amt(1, 100))
	wantAvailable(t, l, key, lim(), amt(7, 700))
	adjust(t, l, key, lim(), amt(10, 10000))
	wantAvailable(t, l, key, lim(), amt(10, 1000))
}

func testAdjustChargeGoesNegative(t *testing.T, _ *ManualClock, open func() limiter.Limiter) {
	l := open()
	adjust(t, l, key, lim(), amt(-15, -2000))
	wantAvailable(t, l, key, lim(), amt(-5, -1000))
	// Requests need 6s, tokens (1+1000)/100 = 10.01s.
	wantInsufficient(t, l, key, lim(), amt(1, 1), 10010*time.Millisecond)
}

func testShrinkingLimitClamps(t *testing.T, _ *ManualClock, open func() limiter.Limiter) {
	l := open()
	smaller := limiter.Limit{RPM: 60, TPM: 6000, BurstRequests: 4, BurstTokens: 400}
	wantAvailable(t, l, key, smaller, amt(4, 400))
	wantGrant(t, l, key, lim(), amt(1, 1), amt(1, 1), amt(1, 1))
	wantGrant(t, l, key, smaller, amt(1, 1), amt(10, 1000), amt(4, 400))
	// Growing back does not bring the clamped capacity back.
	wantAvailable(t, l, key, lim(), amt(0, 0))
}

func testClockGoingBackwards(t *testing.T, c *ManualClock, open func() limiter.Limiter) {
	l := open()
	wantGrant(t, l, key, lim(), amt(10, 1000), amt(10, 1000), amt(10, 1000))
	c.Advance(-5 * time.Second)
	wantAvailable(t, l, key, lim(), amt(0, 0))
	wantInsufficient(t, l, key, lim(), amt(1, 0), time.Second)
	// Writes while the clock is behind must not move the bucket's time back.
	adjust(t, l, key, lim(), amt(1, 100))
	wantGrant(t, l, key, lim(), amt(1, 100), amt(1, 100), amt(1, 100))
	// Back where it was: the five seconds are not refilled twice.
	c.Advance(5 * time.Second)
	wantAvailable(t, l, key, lim(), amt(0, 0))
	c.Advance(time.Second)
	wantAvailable(t, l, key, lim(), amt(1, 100))
}

func testKeysAreIndependent(t *testing.T, _ *ManualClock, open func() limiter.Limiter) {
	l := open()
	wantGrant(t, l, "a", lim(), amt(10, 1000), amt(10, 1000), amt(10, 1000))
	wantAvailable(t, l, "a", lim(), amt(0, 0))
	wantAvailable(t, l, "b", lim(), amt(10, 1000))
	wantGrant(t, l, "b", lim(), amt(1, 1), amt(1, 1), amt(1, 1))
}

func testInvalidArguments(t *testing.T, _ *ManualClock, open func() limiter.Limiter) {
	l := open()
	ctx := context.Background()
	for _, bad := range []limiter.Limit{
		{RPM: -1, BurstRequests: 1},
		{RPM: 60},
		{TPM: 60, BurstTokens: math.NaN()},
		{TPM: math.Inf(1), BurstTokens: 1},
		{BurstRequests: -1},
	} {
		if _, err := l.Take(ctx, key, bad, amt(1, 1), amt(1, 1)); !errors.Is(err, limiter.ErrInvalidLimit) {
			t.Errorf("Take with limit %+v: err = %v, want ErrInvalidLimit", bad, err)
		}
		if err := l.Adjust(ctx, key, bad, amt(1, 1)); !errors.Is(err, limiter.ErrInvalidLimit) {
			t.Errorf("Adjust with limit %+v: err = %v, want ErrInvalidLimit", bad, err)
		}
		if _, err := l.Available(ctx, key, bad); !errors.Is(err, limiter.ErrInvalidLimit) {
			t.Errorf("Available with limit %+v: err = %v, want ErrInvalidLimit", bad, err)
		}
	}
	for _, r := range []struct{ min, max limiter.Amount }{
		{amt(2, 0), amt(1, 0)},
		{amt(0, -1), amt(0, 1)},
		{amt(math.NaN(), 0), amt(1, 0)},
		{amt(0, 0), amt(0, math.NaN())},
		{amt(math.Inf(1), 0), amt(math.Inf(1), 0)},
	} {
		if _, err := l.Take(ctx, key, lim(), r.min, r.max); !errors.Is(err, limiter.ErrInvalidAmount) {
			t.Errorf("Take(%v, %v): err = %v, want ErrInvalidAmount", r.min, r.max, err)
		}
	}
	if err := l.Adjust(ctx, key, lim(), amt(math.Inf(-1), 0)); !errors.Is(err, limiter.ErrInvalidAmount) {
		t.Errorf("Adjust(-Inf): err = %v, want ErrInvalidAmount", err)
	}
	// Nothing above touched the bucket; max +Inf means "all there is".
	wantGrant(t, l, key, lim(), amt(1, 1), amt(math.Inf(1), math.Inf(1)), amt(10, 1000))
}

func testCancelledContext(t *testing.T, _ *ManualClock, open func() limiter.Limiter) {
	l := open()
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := l.Take(ctx, key, lim(), amt(1, 1), amt(1, 1)); !errors.Is(err, context.Canceled) {
		t.Errorf("Take: err = %v, want context.Canceled", err)
	}
	if err := l.Adjust(ctx, key, lim(), amt(-1, -1)); !errors.Is(err, context.Canceled) {
		t.Errorf("Adjust: err = %v, want context.Canceled", err)
	}
	if _, err := l.Available(ctx, key, lim()); !errors.Is(err, context.Canceled) {
		t.Errorf("Available: err = %v, want context.Canceled", err)
	}
	wantAvailable(t, l, key, lim(), amt(10, 1000))
}

func testSharedBetweenInstances(t *testing.T, c *ManualClock, open func() limiter.Limiter) {
	a, b := open(), open()
	wantGrant(t, a, key, lim(), amt(10, 1000), amt(10, 1000), amt(10, 1000))
	// b has not necessarily heard of a's take, but must not grant again.
	wantInsufficient(t, b, key, lim(), amt(1, 0), time.Second)
	c.Advance(2 * time.Second)
	one := amt(1, 0)
	wantGrant(t, b, key, lim(), one, one, one)
	wantGrant(t, a, key, lim(), one, one, one)
	insufficient(t, a, key, lim(), one)
	insufficient(t, b, key, lim(), one)

	// Refunds reach the other instances, though not necessarily at once.
	adjust(t, b, key, lim(), amt(3, 0))
	eventually(t, func() bool {
		got, err := a.Available(context.Background(), key, lim())
		return err == nil && near(got, amt(3, 200))
	}, "a sees b's refund")
}

func testConcurrentTakes(t *testing.T, c *ManualClock, open func() limiter.Limiter) {
	const instances, goroutines, attempts = 4, 4, 40
	// Refill is 0.1 request and 10 tokens per attempt: far less than asked
	// for, but enough that grants keep racing for it after the burst.
	limit := limiter.Limit{RPM: 6000, TPM: 600000, BurstRequests: 20, BurstTokens: 2000}
	min, max := amt(1, 50), amt(3, 200)
	start := c.Now()

	var mu sync.Mutex
	var granted limiter.Amount
	var refused, contended int
	var wg sync.WaitGroup
	for range instances {
		l := open()
		for range goroutines {
			wg.Go(func() {
				for range attempts {
					g, err := l.Take(context.Background(), key, limit, min, max)
					c.Advance(time.Millisecond)
					mu.Lock()
					switch {
					case err == nil:
						granted = granted.Add(g)
					case errors.Is(err, limiter.ErrInsufficient):
						refused++
					case errors.Is(err, limiter.ErrContention):
						contended++
					default:
						t.Errorf("Take: %v", err)
					}
					mu.Unlock()
				}
			})
		}
	}
	wg.Wait()

	elapsed := c.Now().Sub(start).Seconds()
	bound := amt(limit.BurstRequests+limit.RPM/60*elapsed, limit.BurstTokens+limit.TPM/60*elapsed)
	t.Logf("granted %v in %.3fs (bound %v); %d refused, %d gave up on contention", granted, elapsed, bound, refused, contended)
	if granted.Requests > bound.Requests+1e-9 || granted.Tokens > bound.Tokens+1e-6 {
		t.Fatalf("granted %v, more than capacity + rate*elapsed = %v", granted, bound)
	}
	// The attempts far exceed the capacity, so the bucket must have run dry
	// in one dimension: a limiter that refuses everything fails here.
	if granted.Requests < limit.BurstRequests-min.Requests && granted.Tokens < limit.BurstTokens-min.Tokens {
		t.Fatalf("granted only %v of a bucket of %v", granted, limit.Capacity())
	}
}

func amt(requests, tokens float64) limiter.Amount {
	return limiter.Amount{Requests: requests, Tokens: tokens}
}

// near compares amounts with a tolerance for rounding in refill.
func near(a, b limiter.Amount) bool {
	close := func(x, y float64) bool {
		if math.IsInf(x, 0) || math.IsInf(y, 0) {
			return x == y
		}
		return math.Abs(x-y) <= 1e-9*math.Max(1, math.Abs(y))
	}
	return close(a.Requests, b.Requests) && close(a.Tokens, b.Tokens)
}

func wantGrant(t *testing.T, l limiter.Limiter, key string, limit limiter.Limit, min, max, want limiter.Amount) {
	t.Helper()
	got, err := l.Take(context.Background(), key, limit, min, max)
	if err != nil {
		t.Fatalf("Take(%v, %v): %v, want grant %v", min, max, err, want)
	}
	if !near(got, want) {
		t.Fatalf("Take(%v, %v) = %v, want %v", min, max, got, want)
	}
}

func insufficient(t *testing.T, l limiter.Limiter, key string, limit limiter.Limit, min limiter.Amount) *limiter.InsufficientError {
	t.Helper()
	g, err := l.Take(context.Background(), key, limit, min, min)
	if !errors.Is(err, limiter.ErrInsufficient) {
		t.Fatalf("Take(%v) = %v, %v; want ErrInsufficient", min, g, err)
	}
	var ie *limiter.InsufficientError
	if !errors.As(err, &ie) {
		t.Fatalf("Take(%v): %T is not an *InsufficientError", min, err)
	}
	return ie
}

func wantInsufficient(t *testing.T, l limiter.Limiter, key string, limit limiter.Limit, min limiter.Amount, retryAfter time.Duration) {
	t.Helper()
	if got := insufficient(t, l, key, limit, min).RetryAfter; got != retryAfter {
		t.Fatalf("Take(%v): RetryAfter = %v, want %v", min, got, retryAfter)
	}
}

func wantAvailable(t *testing.T, l limiter.Limiter, key string, limit limiter.Limit, want limiter.Amount) {
	t.Helper()
	got, err := l.Available(context.Background(), key, limit)
	if err != nil {
		t.Fatalf("Available: %v", err)
	}
	if !near(got, want) {
		t.Fatalf("Available = %v, want %v", got, want)
	}
}

func adjust(t *testing.T, l limiter.Limiter, key string, limit limiter.Limit, delta limiter.Amount) {
	t.Helper()
	if err := l.Adjust(context.Background(), key, limit, delta); err != nil {
		t.Fatalf("Adjust(%v): %v", delta, err)
	}
}

// eventually polls cond until it holds, for what other processes learn
// asynchronously (through a KV watcher). The deadline only bounds a failing
// test; a passing one returns as soon as cond holds.
func eventually(t *testing.T, cond func() bool, what string) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting until %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}
