package limiter_test

import (
	"errors"
	"math"
	"math/rand/v2"
	"testing"
	"time"

	"github.com/sluicehq/sluice/services/limiter"
)

// t0 is the time the pure bucket tests start at.
func t0() time.Time { return time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC) }

func amt(requests, tokens float64) limiter.Amount {
	return limiter.Amount{Requests: requests, Tokens: tokens}
}

// limit returns 1 request and 100 tokens per second, bursts 10 and 1000.
func limit() limiter.Limit {
	return limiter.Limit{RPM: 60, TPM: 6000, BurstRequests: 10, BurstTokens: 1000}
}

func TestBucketZeroValueIsFull(t *testing.T) {
	got, err := limiter.Bucket{}.Available(limit(), t0())
	if err != nil || got != amt(10, 1000) {
		t.Fatalf("Available = %v, %v; want full", got, err)
	}
	b := limiter.Bucket{}.Refill(limit(), t0())
	if b.Level != amt(10, 1000) || !b.At.Equal(t0()) {
		t.Fatalf("Refill = %+v, want full at t0", b)
	}
}

func TestBucketRefill(t *testing.T) {
	empty := limiter.Bucket{Level: amt(0, 0), At: t0()}
	tests := []struct {
		name    string
		b       limiter.Bucket
		limit   limiter.Limit
		now     time.Time
		want    limiter.Amount
		wantAt  time.Time
		comment string
	}{
		{"rate times elapsed", empty, limit(), t0().Add(1500 * time.Millisecond), amt(1.5, 150), t0().Add(1500 * time.Millisecond), ""},
		{"capped at capacity", empty, limit(), t0().Add(time.Hour), amt(10, 1000), t0().Add(time.Hour), ""},
		{"debt is repaid first", limiter.Bucket{Level: amt(-5, -100), At: t0()}, limit(), t0().Add(6 * time.Second), amt(1, 500), t0().Add(6 * time.Second), ""},
		{"clock went backwards", limiter.Bucket{Level: amt(2, 3), At: t0()}, limit(), t0().Add(-time.Minute), amt(2, 3), t0(), "At must not move back"},
		{"shrunk capacity clamps at once", limiter.Bucket{Level: amt(10, 1000), At: t0()},
			limiter.Limit{RPM: 60, TPM: 6000, BurstRequests: 4, BurstTokens: 400}, t0(), amt(4, 400), t0(), ""},
		{"unlimited dimension left alone", limiter.Bucket{Level: amt(0, 123), At: t0()},
			limiter.Limit{RPM: 60, BurstRequests: 10}, t0().Add(time.Second), amt(1, 123), t0().Add(time.Second), ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := tt.b.Refill(tt.limit, tt.now)
			if got.Level != tt.want || !got.At.Equal(tt.wantAt) {
				t.Fatalf("Refill = {%v at %v}, want {%v at %v} %s", got.Level, got.At, tt.want, tt.wantAt, tt.comment)
			}
		})
	}
}

func TestBucketTake(t *testing.T) {
	tests := []struct {
		name       string
		level      limiter.Amount
		limit      limiter.Limit
		min, max   limiter.Amount
		grant      limiter.Amount // when retryAfter is 0
		after      limiter.Amount // the level after; unchanged on refusal
		retryAfter time.Duration
	}{
		{"max when there is enough", amt(10, 1000), limit(), amt(1, 10), amt(3, 300), amt(3, 300), amt(7, 700), 0},
		{"what is left between min and max", amt(2, 50), limit(), amt(1, 10), amt(3, 300), amt(2, 50), amt(0, 0), 0},
		{"exactly min", amt(1, 10), limit(), amt(1, 10), amt(3, 300), amt(1, 10), amt(0, 0), 0},
		{"refused below min", amt(0.5, 1000), limit(), amt(1, 10), amt(3, 300), amt(0, 0), amt(0.5, 1000), 500 * time.Millisecond},
		{"refused: longest wait of both", amt(0, 0), limit(), amt(1, 300), amt(3, 300), amt(0, 0), amt(0, 0), 3 * time.Second},
		{"one dimension refused: nothing debited", amt(10, 5), limit(), amt(1, 10), amt(1, 10), amt(0, 0), amt(10, 5), 50 * time.Millisecond},
		{"oversized when full goes into debt", amt(10, 1000), limit(), amt(12, 0), amt(20, 0), amt(12, 0), amt(-2, 1000), 0},
		{"oversized waits for full, not for itself", amt(9, 1000), limit(), amt(12, 0), amt(12, 0), amt(0, 0), amt(9, 1000), time.Second},
		{"min 0 passes in debt, grants 0", amt(5, -10), limit(), amt(1, 0), amt(1, 100), amt(1, 0), amt(4, -10), 0},
		{"unlimited dimension grants max", amt(5, 0), limiter.Limit{RPM: 60, BurstRequests: 10}, amt(1, 1e6), amt(1, 1e9), amt(1, 1e9), amt(4, 0), 0},
		{"max +Inf takes all", amt(4, 40), limit(), amt(1, 1), amt(math.Inf(1), math.Inf(1)), amt(4, 40), amt(0, 0), 0},
		{"retry after rounds up", amt(0, 0), limit(), amt(1.0/3, 0), amt(1, 0), amt(0, 0), amt(0, 0), 333333334 * time.Nanosecond},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			b := limiter.Bucket{Level: tt.level, At: t0()}
			after, grant, err := b.Take(tt.limit, t0(), tt.min, tt.max)
			if tt.retryAfter > 0 {
				var ie *limiter.InsufficientError
				if !errors.As(err, &ie) || !errors.Is(err, limiter.ErrInsufficient) {
					t.Fatalf("Take = %v, %v; want *InsufficientError", grant, err)
				}
				if ie.RetryAfter != tt.retryAfter {
					t.Fatalf("RetryAfter = %v, want %v", ie.RetryAfter, tt.retryAfter)
				}
			} else if err != nil || grant != tt.grant {
				t.Fatalf("Take = %v, %v; want %v", grant, err, tt.grant)
			}
			if after.Level != tt.after {
				t.Fatalf("level after = %v, want %v", after.Level, tt.after)
			}
		})
	}
}

func TestBucketAdjust(t *testing.T) {
	b := limiter.Bucket{Level: amt(4, 400), At: t0()}
	tests := []struct {
		delta, want limiter.Amount
	}{
		{amt(1, 100), amt(5, 500)},
		{amt(100, 1e6), amt(10, 1000)},
		{amt(-10, -1000), amt(-6, -600)},
	}
	for _, tt := range tests {
		got, err := b.Adjust(limit(), t0(), tt.delta)
		if err != nil || got.Level != tt.want {
			t.Errorf("Adjust(%v) = %v, %v; want %v", tt.delta, got.Level, err, tt.want)
		}
	}
	if _, err := b.Adjust(limit(), t0(), amt(math.NaN(), 0)); !errors.Is(err, limiter.ErrInvalidAmount) {
		t.Errorf("Adjust(NaN): err = %v, want ErrInvalidAmount", err)
	}
	if _, err := b.Adjust(limiter.Limit{RPM: 1}, t0(), amt(1, 0)); !errors.Is(err, limiter.ErrInvalidLimit) {
		t.Errorf("Adjust with a rate and no burst: err = %v, want ErrInvalidLimit", err)
	}
}

// TestBucketWaitingRetryAfterIsEnough checks, for many random states, that
// a take refused with RetryAfter d succeeds after waiting d: RetryAfter
// rounds up, never down.
func TestBucketWaitingRetryAfterIsEnough(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	for range 10000 {
		lim := limiter.Limit{
			RPM: 1 + r.Float64()*1e4, TPM: 1 + r.Float64()*1e7,
			BurstRequests: 1 + r.Float64()*100, BurstTokens: 1 + r.Float64()*1e5,
		}
		b := limiter.Bucket{Level: amt(r.Float64()*lim.BurstRequests, r.Float64()*lim.BurstTokens), At: t0()}
		min := amt(r.Float64()*lim.BurstRequests*1.2, r.Float64()*lim.BurstTokens*1.2)
		_, _, err := b.Take(lim, t0(), min, min)
		var ie *limiter.InsufficientError
		if !errors.As(err, &ie) {
			continue
		}
		if _, _, err := b.Take(lim, t0().Add(ie.RetryAfter), min, min); err != nil {
			t.Fatalf("bucket %v, limit %+v, min %v: after RetryAfter %v: %v", b.Level, lim, min, ie.RetryAfter, err)
		}
	}
}

// TestBucketWindowBound drives one bucket with random takes at random times
// and checks the invariant the package promises: over any window of length
// T, what is granted is at most capacity + rate*T plus one oversized grant.
func TestBucketWindowBound(t *testing.T) {
	lim := limit()
	r := rand.New(rand.NewPCG(3, 4))
	type grant struct {
		at time.Time
		g  limiter.Amount
	}
	var grants []grant
	var b limiter.Bucket
	now := t0()
	for range 3000 {
		now = now.Add(time.Duration(r.ExpFloat64() * float64(200*time.Millisecond)))
		if r.IntN(20) == 0 {
			// Idle long enough to fill up: a bucket that overfills shows
			// in the burst that follows.
			now = now.Add(time.Minute)
		}
		min := amt(float64(r.IntN(3)), float64(r.IntN(400)))
		if r.IntN(50) == 0 {
			min.Tokens = 1500 // oversized
		}
		max := min.Add(amt(float64(r.IntN(3)), float64(r.IntN(400))))
		nb, g, err := b.Take(lim, now, min, max)
		if err != nil && !errors.Is(err, limiter.ErrInsufficient) {
			t.Fatal(err)
		}
		b = nb
		if err == nil {
			grants = append(grants, grant{now, g})
		}
	}
	if len(grants) < 100 {
		t.Fatalf("only %d grants: the test exercises nothing", len(grants))
	}
	// Every window that matters starts and ends at a grant.
	for i := range grants {
		var sum limiter.Amount
		var biggest float64
		for j := i; j < len(grants); j++ {
			sum = sum.Add(grants[j].g)
			if grants[j].g.Tokens > lim.BurstTokens {
				biggest = math.Max(biggest, grants[j].g.Tokens)
			}
			T := grants[j].at.Sub(grants[i].at).Seconds()
			if sum.Requests > lim.BurstRequests+lim.RPM/60*T+1e-9 ||
				sum.Tokens > lim.BurstTokens+lim.TPM/60*T+biggest+1e-6 {
				t.Fatalf("granted %v over %.3fs from grant %d, more than capacity + rate*T (+%g oversized)", sum, T, i, biggest)
			}
		}
	}
}
