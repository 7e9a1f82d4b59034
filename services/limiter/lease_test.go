package limiter_test

import (
	"context"
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/sluicehq/sluice/services/limiter"
	"github.com/sluicehq/sluice/services/limiter/limitertest"
	"github.com/sluicehq/sluice/test/natstest"
)

// counting is a Limiter that counts the calls made to the one it wraps.
type counting struct {
	limiter.Limiter
	takes, adjusts atomic.Int64

	mu      sync.Mutex
	grants  []limiter.Amount
	refunds []limiter.Amount
}

func (c *counting) Take(ctx context.Context, key string, limit limiter.Limit, min, max limiter.Amount) (limiter.Amount, error) {
	c.takes.Add(1)
	g, err := c.Limiter.Take(ctx, key, limit, min, max)
	if err == nil {
		c.mu.Lock()
		c.grants = append(c.grants, g)
		c.mu.Unlock()
	}
	return g, err
}

func (c *counting) Adjust(ctx context.Context, key string, limit limiter.Limit, delta limiter.Amount) error {
	c.adjusts.Add(1)
	c.mu.Lock()
	c.refunds = append(c.refunds, delta)
	c.mu.Unlock()
	return c.Limiter.Adjust(ctx, key, limit, delta)
}

// leaseFixture is Leases over a counted Memory on a manual clock.
type leaseFixture struct {
	clock  *limitertest.ManualClock
	shared *counting
	leases *limiter.Leases
}

func newLeaseFixture(opts limiter.LeaseOptions) *leaseFixture {
	clock := limitertest.NewManualClock()
	shared := &counting{Limiter: limiter.NewMemory(clock.Now)}
	opts.Clock = clock.Now
	return &leaseFixture{clock: clock, shared: shared, leases: limiter.NewLeases(shared, opts)}
}

func (f *leaseFixture) available(t *testing.T, limit limiter.Limit) limiter.Amount {
	t.Helper()
	a, err := f.shared.Available(context.Background(), "k", limit)
	if err != nil {
		t.Fatal(err)
	}
	return a
}

// fill takes need repeatedly at one instant until this process holds at
// least need, and returns what it spent.
func (f *leaseFixture) fill(t *testing.T, limit limiter.Limit, need limiter.Amount) limiter.Amount {
	t.Helper()
	var spent limiter.Amount
	for range 100 {
		if err := f.leases.Take(context.Background(), "k", limit, need); err != nil {
			t.Fatal(err)
		}
		spent = spent.Add(need)
		if h := f.leases.Held("k"); h.Requests >= need.Requests && h.Tokens >= need.Tokens {
			return spent
		}
	}
	t.Fatalf("held %v after 100 takes of %v: leases never grow", f.leases.Held("k"), need)
	return spent
}

func nearAmt(a, b limiter.Amount) bool {
	near := func(x, y, tolerance float64) bool { return x == y || math.Abs(x-y) < tolerance }
	return near(a.Requests, b.Requests, 1e-9) && near(a.Tokens, b.Tokens, 1e-6)
}

func TestLeasesSpendLocally(t *testing.T) {
	f := newLeaseFixture(limiter.LeaseOptions{})
	lim := limiter.Limit{RPM: 6000, TPM: 600000, BurstRequests: 100, BurstTokens: 10000}
	need := amt(1, 100)
	spent := f.fill(t, lim, need)

	held := f.leases.Held("k")
	takes := f.shared.takes.Load()
	if err := f.leases.Take(context.Background(), "k", lim, need); err != nil {
		t.Fatal(err)
	}
	spent = spent.Add(need)
	if f.shared.takes.Load() != takes {
		t.Fatal("a Take covered by the allowance called the shared limiter")
	}
	if got := f.leases.Held("k"); !nearAmt(got, held.Sub(need)) {
		t.Fatalf("Held = %v, want %v", got, held.Sub(need))
	}
	// Nothing is lost or made up: shared + held + spent is the capacity.
	if got := f.available(t, lim).Add(f.leases.Held("k")).Add(spent); !nearAmt(got, lim.Capacity()) {
		t.Fatalf("shared + held + spent = %v, want the capacity %v", got, lim.Capacity())
	}
}

func TestLeasesFollowDemandUpToMaxShare(t *testing.T) {
	f := newLeaseFixture(limiter.LeaseOptions{TTL: 100 * time.Millisecond, MaxShare: 0.5})
	// 2000 requests/s sustained, a burst of 100: demand of 1000/s for a TTL
	// would be 100 per lease, more than half the burst.
	lim := limiter.Limit{RPM: 120000, BurstRequests: 100}
	for range 2000 {
		if err := f.leases.Take(context.Background(), "k", lim, amt(1, 0)); err != nil {
			t.Fatal(err)
		}
		if h := f.leases.Held("k"); h.Requests > 50 {
			t.Fatalf("holding %v, more than MaxShare of the burst", h)
		}
		f.clock.Advance(time.Millisecond)
	}
	var largest float64
	for _, g := range f.shared.grants {
		largest = math.Max(largest, g.Requests)
	}
	if largest != 50 {
		t.Fatalf("largest lease %v, want it capped at 50", largest)
	}
	if n := f.shared.takes.Load(); n > 2000/10 {
		t.Fatalf("%d shared takes for 2000 calls: leases are not saving anything", n)
	}
}

func TestLeasesReturnDiscountedLeftoversOnExpiry(t *testing.T) {
	f := newLeaseFixture(limiter.LeaseOptions{TTL: 100 * time.Millisecond})
	lim := limiter.Limit{RPM: 60, BurstRequests: 100} // 1 request/s
	ctx := context.Background()
	spent := f.fill(t, lim, amt(1, 0))
	held := f.leases.Held("k")

	f.clock.Advance(150 * time.Millisecond)
	if h := f.leases.Held("k"); !h.IsZero() {
		t.Fatalf("Held after the TTL = %v, want 0", h)
	}
	if err := f.leases.Expire(ctx); err != nil {
		t.Fatal(err)
	}
	// The refund is what was held less what the bucket refilled meanwhile
	// (0.15 requests), so the bucket is exactly where it would be had only
	// what was spent ever been taken.
	if len(f.shared.refunds) != 1 || !nearAmt(f.shared.refunds[0], amt(held.Requests-0.15, 0)) {
		t.Fatalf("refunds %v, want one of %v", f.shared.refunds, held.Requests-0.15)
	}
	if got, want := f.available(t, lim), amt(100-spent.Requests, math.Inf(1)); !nearAmt(got, want) {
		t.Fatalf("shared level %v, want %v", got, want)
	}

	// Without Expire, the next Take for the key returns the leftovers.
	f.fill(t, lim, amt(1, 0))
	f.clock.Advance(time.Second)
	if err := f.leases.Take(ctx, "k", lim, amt(1, 0)); err != nil {
		t.Fatal(err)
	}
	if len(f.shared.refunds) != 2 {
		t.Fatalf("%d refunds, want 2: Take did not return the expired leftovers", len(f.shared.refunds))
	}
	// Held a whole second at 1/s, nothing in a lease of fewer than one
	// request is worth returning; the refund is then nothing at all.
	if err := f.leases.Expire(ctx); err != nil {
		t.Fatal(err)
	}
}

func TestLeasesFlush(t *testing.T) {
	f := newLeaseFixture(limiter.LeaseOptions{})
	lim := limiter.Limit{RPM: 600, TPM: 60000, BurstRequests: 100, BurstTokens: 10000}
	ctx := context.Background()
	spent := f.fill(t, lim, amt(1, 100))
	if err := f.leases.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	if h := f.leases.Held("k"); !h.IsZero() {
		t.Fatalf("Held after Flush = %v", h)
	}
	// No time passed: everything unspent is back.
	if got, want := f.available(t, lim), lim.Capacity().Sub(spent); !nearAmt(got, want) {
		t.Fatalf("shared level %v, want %v", got, want)
	}
	adjusts := f.shared.adjusts.Load()
	if err := f.leases.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	if f.shared.adjusts.Load() != adjusts {
		t.Fatal("a Flush with nothing held called Adjust")
	}
	if err := f.leases.Take(ctx, "k", lim, amt(1, 100)); err != nil {
		t.Fatalf("Take after Flush: %v", err)
	}
}

func TestLeasesReleaseOneKey(t *testing.T) {
	f := newLeaseFixture(limiter.LeaseOptions{})
	lim := limiter.Limit{RPM: 600, TPM: 60000, BurstRequests: 100, BurstTokens: 10000}
	ctx := context.Background()
	spent := f.fill(t, lim, amt(1, 100))
	if err := f.leases.Take(ctx, "other", lim, amt(1, 100)); err != nil {
		t.Fatal(err)
	}
	otherHeld := f.leases.Held("other")
	if err := f.leases.Release(ctx, "k"); err != nil {
		t.Fatal(err)
	}
	if h := f.leases.Held("k"); !h.IsZero() {
		t.Fatalf("Held after Release = %v", h)
	}
	if h := f.leases.Held("other"); h != otherHeld {
		t.Fatalf("Release of k changed what is held for other: %v, was %v", h, otherHeld)
	}
	// No time passed: everything unspent is back.
	if got, want := f.available(t, lim), lim.Capacity().Sub(spent); !nearAmt(got, want) {
		t.Fatalf("shared level %v, want %v", got, want)
	}
	adjusts := f.shared.adjusts.Load()
	if err := f.leases.Release(ctx, "k"); err != nil {
		t.Fatal(err)
	}
	if err := f.leases.Release(ctx, "never-taken"); err != nil {
		t.Fatal(err)
	}
	if f.shared.adjusts.Load() != adjusts {
		t.Fatal("a Release with nothing held called Adjust")
	}
}

func TestLeasesInsufficientKeepsTheAllowance(t *testing.T) {
	f := newLeaseFixture(limiter.LeaseOptions{})
	lim := limiter.Limit{RPM: 60, BurstRequests: 20}
	ctx := context.Background()
	f.fill(t, lim, amt(1, 0))
	held := f.leases.Held("k")
	// Someone else empties the shared bucket.
	if _, err := f.shared.Limiter.Take(ctx, "k", lim, amt(0, 0), amt(100, 0)); err != nil {
		t.Fatal(err)
	}

	err := f.leases.Take(ctx, "k", lim, amt(held.Requests+1, 0))
	var ie *limiter.InsufficientError
	if !errors.Is(err, limiter.ErrInsufficient) || !errors.As(err, &ie) || ie.RetryAfter != time.Second {
		t.Fatalf("Take beyond the allowance of an empty bucket: %v, want *InsufficientError after 1s", err)
	}
	if got := f.leases.Held("k"); got != held {
		t.Fatalf("Held after a refused Take = %v, want %v", got, held)
	}
	if err := f.leases.Take(ctx, "k", lim, held); err != nil {
		t.Fatalf("Take of exactly the allowance: %v", err)
	}
}

func TestLeasesUnlimitedDimensions(t *testing.T) {
	f := newLeaseFixture(limiter.LeaseOptions{})
	ctx := context.Background()
	if err := f.leases.Take(ctx, "k", limiter.Limit{}, amt(1e9, 1e9)); err != nil {
		t.Fatal(err)
	}
	if f.shared.takes.Load() != 0 {
		t.Fatal("an unlimited bucket called the shared limiter")
	}
	rpmOnly := limiter.Limit{RPM: 60, BurstRequests: 10}
	if err := f.leases.Take(ctx, "k", rpmOnly, amt(1, 1e9)); err != nil {
		t.Fatal(err)
	}
	if got := f.leases.Held("k"); got.Tokens != 0 {
		t.Fatalf("Held = %v: tokens of an unlimited dimension are not held", got)
	}
	if err := f.leases.Take(ctx, "k", rpmOnly, amt(-1, 0)); !errors.Is(err, limiter.ErrInvalidAmount) {
		t.Fatalf("Take of a negative amount: %v, want ErrInvalidAmount", err)
	}
	if err := f.leases.Take(ctx, "k", limiter.Limit{RPM: 60}, amt(1, 0)); !errors.Is(err, limiter.ErrInvalidLimit) {
		t.Fatalf("Take with a rate and no burst: %v, want ErrInvalidLimit", err)
	}
}

// send is one call admitted through Leases, at the time it was admitted.
type send struct {
	at   time.Time
	need limiter.Amount
}

// checkWindows fails if, over some window [a, b] between two sends, more was
// sent than capacity + rate*(b-a+ttl).
func checkWindows(t *testing.T, sends []send, lim limiter.Limit, ttl time.Duration) {
	t.Helper()
	// Prefix sums keep the check of every window cheap.
	requests := make([]float64, len(sends)+1)
	tokens := make([]float64, len(sends)+1)
	at := make([]float64, len(sends)) // seconds since the first send
	for i, s := range sends {
		requests[i+1] = requests[i] + s.need.Requests
		tokens[i+1] = tokens[i] + s.need.Tokens
		at[i] = s.at.Sub(sends[0].at).Seconds()
	}
	for i := range sends {
		for j := i; j < len(sends); j++ {
			T := at[j] - at[i] + ttl.Seconds()
			r, k := requests[j+1]-requests[i], tokens[j+1]-tokens[i]
			if r > lim.BurstRequests+lim.RPM/60*T+1e-9 || k > lim.BurstTokens+lim.TPM/60*T+1e-6 {
				t.Fatalf("sent %v over %v (sends %d..%d), more than capacity + rate*(T+TTL)",
					amt(r, k), sends[j].at.Sub(sends[i].at), i, j)
			}
		}
	}
}

// TestLeasesBound has processes with bursty, uneven demand share one bucket
// through Leases, and checks the bound of Leases over every window.
//
// Besides random bursts, a process may fall silent with a lease in hand
// (whose leftover is returned later), and all processes may spend all they
// hold at one instant: a flash crowd. Returning leftovers at full value would
// let the processes bank refill this way and break the bound.
func TestLeasesBound(t *testing.T) {
	for seed := range uint64(8) {
		t.Run(fmt.Sprint("seed", seed), func(t *testing.T) {
			const processes = 6
			ttl := 100 * time.Millisecond
			clock := limitertest.NewManualClock()
			shared := limiter.NewMemory(clock.Now)
			lim := limiter.Limit{RPM: 3000, TPM: 300000, BurstRequests: 50, BurstTokens: 5000}
			var ls [processes]*limiter.Leases
			for i := range ls {
				ls[i] = limiter.NewLeases(shared, limiter.LeaseOptions{Clock: clock.Now, TTL: ttl, MaxShare: 1})
			}
			r := rand.New(rand.NewPCG(seed, 42))
			ctx := context.Background()
			var sends []send
			var refused int
			take := func(p *limiter.Leases, need limiter.Amount) {
				err := p.Take(ctx, "k", lim, need)
				switch {
				case err == nil:
					sends = append(sends, send{clock.Now(), need})
				case errors.Is(err, limiter.ErrInsufficient):
					refused++
				default:
					t.Fatal(err)
				}
			}
			for range 4000 {
				clock.Advance(time.Duration(r.IntN(int(ttl / 4))))
				p := ls[r.IntN(processes)]
				switch x := r.IntN(100); {
				case x < 2:
					if err := p.Flush(ctx); err != nil {
						t.Fatal(err)
					}
				case x < 10:
					if err := p.Expire(ctx); err != nil {
						t.Fatal(err)
					}
				case x < 15:
					// A flash crowd: everyone spends all they hold.
					for _, q := range ls {
						if h := q.Held("k"); h.Requests > 0 && h.Tokens > 0 {
							take(q, h)
						}
					}
				default:
					// A burst of calls at one instant builds demand, then
					// the process may fall silent with a lease in hand.
					for range 1 + r.IntN(8) {
						take(p, amt(1, float64(1+r.IntN(300))))
					}
				}
			}
			t.Logf("%d sends, %d refused", len(sends), refused)
			if refused == 0 {
				t.Fatal("nothing refused: the demand never pressed on the limit")
			}
			checkWindows(t, sends, lim, ttl)
		})
	}
}

// TestLeasesConcurrent has several processes, each with its own Leases and
// goroutines, share one bucket, over Memory and over KV (one connection and
// one KV per process), and checks that what they send stays within the
// bound, and that leasing saves shared operations.
func TestLeasesConcurrent(t *testing.T) {
	backends := map[string]func(t *testing.T, clock limiter.Clock) func() limiter.Limiter{
		"Memory": func(t *testing.T, clock limiter.Clock) func() limiter.Limiter {
			m := limiter.NewMemory(clock)
			return func() limiter.Limiter { return m }
		},
		"KV": func(t *testing.T, clock limiter.Clock) func() limiter.Limiter {
			srv := natstest.Start(t)
			createBucket(t, srv, "limits")
			return func() limiter.Limiter {
				return startKV(t, openBucket(t, srv, "limits"), limiter.KVOptions{Clock: clock})
			}
		},
	}
	for name, backend := range backends {
		t.Run(name, func(t *testing.T) {
			const processes, goroutines, calls = 3, 4, 300
			ttl := 50 * time.Millisecond
			clock := limitertest.NewManualClock()
			open := backend(t, clock.Now)
			// 2000 requests/s against calls arriving at 10000/s.
			lim := limiter.Limit{RPM: 120000, TPM: 12e6, BurstRequests: 100, BurstTokens: 10000}
			start := clock.Now()

			var sent atomic.Int64 // requests; each call is one
			var wg sync.WaitGroup
			var leases []*limiter.Leases
			var shared []*counting
			for range processes {
				c := &counting{Limiter: open()}
				ls := limiter.NewLeases(c, limiter.LeaseOptions{Clock: clock.Now, TTL: ttl})
				leases = append(leases, ls)
				shared = append(shared, c)
				for range goroutines {
					wg.Go(func() {
						for range calls {
							err := ls.Take(context.Background(), "k", lim, amt(1, 100))
							switch {
							case err == nil:
								sent.Add(1)
							case errors.Is(err, limiter.ErrInsufficient), errors.Is(err, limiter.ErrContention):
							default:
								t.Errorf("Take: %v", err)
							}
							clock.Advance(100 * time.Microsecond)
						}
					})
				}
			}
			wg.Wait()
			for _, ls := range leases {
				if err := ls.Flush(context.Background()); err != nil {
					t.Fatal(err)
				}
			}

			elapsed := clock.Now().Sub(start) + ttl
			bound := lim.BurstRequests + lim.RPM/60*elapsed.Seconds()
			var takes int64
			for _, c := range shared {
				takes += c.takes.Load()
			}
			t.Logf("sent %d of %d calls in %v (bound %.1f), %d shared takes",
				sent.Load(), processes*goroutines*calls, elapsed-ttl, bound, takes)
			if float64(sent.Load()) > bound {
				t.Fatalf("sent %d requests, more than capacity + rate*(T+TTL) = %.1f", sent.Load(), bound)
			}
			if float64(sent.Load()) < lim.BurstRequests {
				t.Fatalf("sent only %d: less than one burst", sent.Load())
			}
		})
	}
}
