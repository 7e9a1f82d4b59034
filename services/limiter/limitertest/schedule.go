package limitertest

import (
	"context"
	"errors"
	"math"
	"sort"
	"sync"
	"testing"
	"time"

	"github.com/sluicehq/sluice/services/limiter"
)

// SchedulerBackend is Backend for Schedulers: fresh shared state for one
// test, and a function that opens one more Scheduler over it.
type SchedulerBackend func(t *testing.T, clock limiter.Clock) (open func() limiter.Scheduler)

// pace is the limit most schedule tests use: 60 requests and 6000 tokens
// a minute (one request and 100 tokens a second), with capacities of 3
// requests and 300 tokens.
func pace() limiter.Limit {
	return limiter.Limit{RPM: 60, TPM: 6000, BurstRequests: 3, BurstTokens: 300}
}

// RunScheduler runs the Scheduler contract suite against backend.
func RunScheduler(t *testing.T, backend SchedulerBackend) {
	tests := []struct {
		name string
		run  func(t *testing.T, c *ManualClock, open func() limiter.Scheduler)
	}{
		{"FreshScheduleLeasesFromNow", testFreshLease},
		{"LeasesFollowEachOther", testLeasesFollow},
		{"CapacityLetsCallsGoAtOnce", testCapacity},
		{"BeyondTheHorizonIsRefused", testBeyondHorizon},
		{"IdleTimeIsNotBanked", testIdleNotBanked},
		{"LargeCallWaitsForIdle", testLargeCall},
		{"ReturnGivesBackTheTail", testReturn},
		{"SettleRefundsAndCharges", testSettle},
		{"UnlimitedDimension", testScheduleUnlimited},
		{"InvalidArguments", testScheduleInvalid},
		{"CancelledContext", testScheduleCancelled},
		{"ConcurrentLeasesNeverOverlap", testConcurrentLeases},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := NewManualClock()
			open := backend(t, c.Now)
			tt.run(t, c, open)
		})
	}
}

func lease(t *testing.T, s limiter.Scheduler, limit limiter.Limit, first, total limiter.Amount, horizon time.Duration) limiter.Stretch {
	t.Helper()
	st, err := s.Lease(context.Background(), key, limit, first, total, 0, horizon)
	if err != nil {
		t.Fatalf("Lease(%v, %v): %v", first, total, err)
	}
	return st
}

func refusedLease(t *testing.T, s limiter.Scheduler, limit limiter.Limit, first limiter.Amount, horizon time.Duration) time.Duration {
	t.Helper()
	_, err := s.Lease(context.Background(), key, limit, first, first, 0, horizon)
	var ie *limiter.InsufficientError
	if !errors.As(err, &ie) || !errors.Is(err, limiter.ErrInsufficient) {
		t.Fatalf("Lease(%v) = %v, want an InsufficientError", first, err)
	}
	return ie.RetryAfter
}

func nan() float64 { return math.NaN() }

func testFreshLease(t *testing.T, c *ManualClock, open func() limiter.Scheduler) {
	s := open()
	st := lease(t, s, pace(), amt(1, 100), amt(2, 150), 0)
	now := c.Now()
	if want := now.Add(2 * time.Second).UnixNano(); st.Requests.To != want || st.Requests.From > now.UnixNano() {
		t.Errorf("requests span %v, want it to end at %d (two requests at one a second, from now)", st.Requests, want)
	}
	// One end for both: the requests take longest.
	if st.Tokens.To != st.Requests.To || st.Tokens.From > now.UnixNano() {
		t.Errorf("tokens span %v, want it to end with the requests' (%v)", st.Tokens, st.Requests)
	}
}

func testLeasesFollow(t *testing.T, c *ManualClock, open func() limiter.Scheduler) {
	a, b := open(), open()
	first := lease(t, a, pace(), amt(1, 100), amt(1, 100), time.Minute)
	second := lease(t, b, pace(), amt(1, 100), amt(1, 100), time.Minute)
	if second.Requests.From != first.Requests.To || second.Tokens.From != first.Tokens.To {
		t.Fatalf("second lease %+v does not start where the first %+v ends", second, first)
	}
	// Time passing unused is not leased again: a lease after idle time
	// ends a request after now.
	c.Advance(5 * time.Second)
	third := lease(t, a, pace(), amt(1, 100), amt(1, 100), 0)
	if want := c.Now().Add(time.Second).UnixNano(); third.Requests.To != want || third.Requests.From != second.Requests.To {
		t.Fatalf("a lease after idle time spans %v, want from %d (the schedule's free instant) to %d (now + 1s)", third.Requests, second.Requests.To, want)
	}
}

// A capacity of 3 lets three calls go at once; the fourth has to wait its
// turn, a second later.
func testCapacity(t *testing.T, _ *ManualClock, open func() limiter.Scheduler) {
	s := open()
	for i := range 3 {
		if _, err := s.Lease(context.Background(), key, pace(), amt(1, 100), amt(1, 100), 0, 0); err != nil {
			t.Fatalf("call %d within capacity: %v", i+1, err)
		}
	}
	if got := refusedLease(t, s, pace(), amt(1, 100), 0); got != time.Second {
		t.Fatalf("fourth call: RetryAfter %v, want 1s", got)
	}
}

func testBeyondHorizon(t *testing.T, c *ManualClock, open func() limiter.Scheduler) {
	s := open()
	lim := limiter.Limit{RPM: 60, BurstRequests: 1}
	lease(t, s, lim, amt(1, 0), amt(1, 0), 0)
	// The next request may go in a second: not within 100ms.
	if got := refusedLease(t, s, lim, amt(1, 0), 100*time.Millisecond); got != 900*time.Millisecond {
		t.Fatalf("RetryAfter %v, want 900ms", got)
	}
	c.Advance(900 * time.Millisecond)
	st := lease(t, s, lim, amt(1, 0), amt(1, 0), 100*time.Millisecond)
	if want := c.Now().Add(100 * time.Millisecond).UnixNano(); st.Requests.From != want {
		t.Fatalf("lease starts at %d, want 100ms ahead (%d)", st.Requests.From, want)
	}
}

// However long a schedule was idle, what it may send at once is its
// capacity.
func testIdleNotBanked(t *testing.T, c *ManualClock, open func() limiter.Scheduler) {
	s := open()
	lease(t, s, pace(), amt(1, 100), amt(1, 100), 0)
	c.Advance(time.Hour)
	free, err := s.Free(context.Background(), key, pace())
	if err != nil {
		t.Fatal(err)
	}
	if !near(free, amt(3, 300)) {
		t.Fatalf("Free after an hour idle = %v, want the capacity %v", free, amt(3, 300))
	}
}

// A call larger than the capacity goes only once the schedule has been
// idle for what it exceeds the capacity by: 500 tokens at 100/s with a
// capacity of 300 need 2s of idle before them.
func testLargeCall(t *testing.T, c *ManualClock, open func() limiter.Scheduler) {
	s := open()
	lease(t, s, pace(), amt(0, 100), amt(0, 100), 0) // free from now+1s
	if got := refusedLease(t, s, pace(), amt(0, 500), 0); got != 3*time.Second {
		t.Fatalf("RetryAfter %v, want 3s (1s booked, then 2s of idle)", got)
	}
	c.Advance(3 * time.Second)
	st := lease(t, s, pace(), amt(0, 500), amt(0, 500), 0)
	if want := c.Now().Add(5 * time.Second).UnixNano(); st.Tokens.To != want {
		t.Fatalf("tokens span %v, want it to end 5s from now (%d)", st.Tokens, want)
	}
}

func testReturn(t *testing.T, c *ManualClock, open func() limiter.Scheduler) {
	a, b := open(), open()
	st := lease(t, a, pace(), amt(1, 100), amt(4, 400), time.Minute)
	// Two of the four requests were used; give back the other two.
	unused := limiter.Stretch{
		Requests: limiter.Span{From: st.Requests.To - 2e9, To: st.Requests.To},
		Tokens:   limiter.Span{From: st.Tokens.To - 2e9, To: st.Tokens.To},
	}
	ok, err := a.Return(context.Background(), key, pace(), unused)
	if err != nil || !ok {
		t.Fatalf("Return = %v, %v; want true", ok, err)
	}
	next := lease(t, b, pace(), amt(1, 100), amt(1, 100), time.Minute)
	if next.Requests.From != unused.Requests.From {
		t.Fatalf("the next lease starts at %d, want where the returned part began (%d)", next.Requests.From, unused.Requests.From)
	}
	// Something was leased after the first stretch: its remains cannot go
	// back without handing out b's lease twice.
	ok, err = a.Return(context.Background(), key, pace(), limiter.Stretch{Requests: limiter.Span{From: st.Requests.From, To: unused.Requests.From}})
	if err != nil || ok {
		t.Fatalf("Return of a stretch with a lease after it = %v, %v; want false", ok, err)
	}
	c.Advance(0)
}

func testSettle(t *testing.T, c *ManualClock, open func() limiter.Scheduler) {
	s := open()
	// 600 tokens book both dimensions 6s ahead: 3 - 6 requests, 300 -
	// 600 tokens free.
	lease(t, s, pace(), amt(1, 100), amt(1, 600), time.Minute)
	if err := s.Settle(context.Background(), key, pace(), amt(0, 400)); err != nil {
		t.Fatal(err)
	}
	free, err := s.Free(context.Background(), key, pace())
	if err != nil {
		t.Fatal(err)
	}
	// 200 tokens (2s) are still booked: 300 - 200.
	if !near(free, amt(-3, 100)) {
		t.Fatalf("Free after a refund of 400 tokens = %v, want %v", free, amt(-3, 100))
	}
	if err := s.Settle(context.Background(), key, pace(), amt(0, -300)); err != nil {
		t.Fatal(err)
	}
	if free, _ = s.Free(context.Background(), key, pace()); !near(free, amt(-3, -200)) {
		t.Fatalf("Free after a charge of 300 tokens = %v, want %v", free, amt(-3, -200))
	}
	c.Advance(0)
}

func testScheduleUnlimited(t *testing.T, _ *ManualClock, open func() limiter.Scheduler) {
	s := open()
	lim := limiter.Limit{RPM: 60, BurstRequests: 1}
	st := lease(t, s, lim, amt(1, 1e9), amt(1, 1e9), 0)
	if st.Tokens != (limiter.Span{}) {
		t.Fatalf("an unlimited dimension got span %v", st.Tokens)
	}
	free, err := s.Free(context.Background(), key, lim)
	if err != nil {
		t.Fatal(err)
	}
	if free.Tokens < 1e300 {
		t.Fatalf("Free tokens %v, want +Inf", free.Tokens)
	}
}

func testScheduleInvalid(t *testing.T, _ *ManualClock, open func() limiter.Scheduler) {
	s := open()
	ctx := context.Background()
	bad := limiter.Limit{RPM: 60}
	if _, err := s.Lease(ctx, key, bad, amt(1, 0), amt(1, 0), 0, 0); !errors.Is(err, limiter.ErrInvalidLimit) {
		t.Errorf("Lease with no capacity: %v", err)
	}
	if _, err := s.Lease(ctx, key, pace(), amt(2, 0), amt(1, 0), 0, 0); !errors.Is(err, limiter.ErrInvalidAmount) {
		t.Errorf("Lease with first above total: %v", err)
	}
	if _, err := s.Lease(ctx, key, pace(), amt(-1, 0), amt(1, 0), 0, 0); !errors.Is(err, limiter.ErrInvalidAmount) {
		t.Errorf("Lease of a negative amount: %v", err)
	}
	if err := s.Settle(ctx, key, pace(), amt(0, nan())); !errors.Is(err, limiter.ErrInvalidAmount) {
		t.Errorf("Settle by NaN: %v", err)
	}
	if _, err := s.Return(ctx, key, bad, limiter.Stretch{}); !errors.Is(err, limiter.ErrInvalidLimit) {
		t.Errorf("Return with a bad limit: %v", err)
	}
	if _, err := s.Free(ctx, key, bad); !errors.Is(err, limiter.ErrInvalidLimit) {
		t.Errorf("Free with a bad limit: %v", err)
	}
}

func testScheduleCancelled(t *testing.T, _ *ManualClock, open func() limiter.Scheduler) {
	s := open()
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := s.Lease(ctx, key, pace(), amt(1, 0), amt(1, 0), 0, 0); !errors.Is(err, context.Canceled) {
		t.Errorf("Lease: %v", err)
	}
	if err := s.Settle(ctx, key, pace(), amt(0, 1)); !errors.Is(err, context.Canceled) {
		t.Errorf("Settle: %v", err)
	}
	if _, err := s.Free(ctx, key, pace()); !errors.Is(err, context.Canceled) {
		t.Errorf("Free: %v", err)
	}
}

// Several instances leasing at once from one schedule get stretches that
// never overlap, in either dimension, and that leave no gap: the schedule
// hands out each moment of virtual time once.
func testConcurrentLeases(t *testing.T, _ *ManualClock, open func() limiter.Scheduler) {
	const instances, each = 4, 25
	var mu sync.Mutex
	var got []limiter.Stretch
	var wg sync.WaitGroup
	for range instances {
		s := open()
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range each {
				st, err := s.Lease(context.Background(), key, pace(), amt(1, 10), amt(1, 10), 0, time.Hour)
				if err != nil {
					t.Errorf("Lease: %v", err)
					return
				}
				mu.Lock()
				got = append(got, st)
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	for _, dim := range []func(limiter.Stretch) limiter.Span{
		func(s limiter.Stretch) limiter.Span { return s.Requests },
		func(s limiter.Stretch) limiter.Span { return s.Tokens },
	} {
		spans := make([]limiter.Span, len(got))
		for i, s := range got {
			spans[i] = dim(s)
		}
		sort.Slice(spans, func(i, j int) bool { return spans[i].From < spans[j].From })
		for i := 1; i < len(spans); i++ {
			if spans[i].From != spans[i-1].To {
				t.Fatalf("stretches %v and %v overlap or leave a gap", spans[i-1], spans[i])
			}
		}
	}
	if len(got) != instances*each {
		t.Fatalf("%d leases, want %d", len(got), instances*each)
	}
}
