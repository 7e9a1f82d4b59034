package limiter_test

import (
	"context"
	"errors"
	"math"
	"math/rand/v2"
	"sort"
	"sync/atomic"
	"testing"
	"time"

	"github.com/sluicehq/sluice/services/limiter"
	"github.com/sluicehq/sluice/services/limiter/limitertest"
)

// countingScheduler counts the leases that reach the shared schedule.
type countingScheduler struct {
	limiter.Scheduler
	leases atomic.Int64
}

func (c *countingScheduler) Lease(ctx context.Context, key string, limit limiter.Limit, first, total limiter.Amount, lead, horizon time.Duration) (limiter.Stretch, error) {
	c.leases.Add(1)
	return c.Scheduler.Lease(ctx, key, limit, first, total, lead, horizon)
}

func fit(t *testing.T, e limiter.Enforcement) limiter.Limit {
	t.Helper()
	l, err := limiter.Fit(e)
	if err != nil {
		t.Fatal(err)
	}
	return l
}

// A queue costs one shared lease per MaxShare of a horizon: with 6,000
// RPM (100/s) and a 100ms horizon, a lease covers five calls.
func TestPacerLeasesForTheQueue(t *testing.T) {
	clock := limitertest.NewManualClock()
	shared := &countingScheduler{Scheduler: limiter.NewMemory(clock.Now)}
	p := limiter.NewPacer(shared, limiter.PacerOptions{Clock: clock.Now})
	lim := fit(t, limiter.Enforcement{RPM: 6000, Windows: defaultWindows, Jitter: 10 * time.Millisecond})
	var sends []time.Time
	for i := range 5 {
		at, err := p.Admit(context.Background(), "dep", lim, limiter.Amount{Requests: 1}, 100-i, 0)
		if err != nil {
			t.Fatalf("call %d: %v", i, err)
		}
		sends = append(sends, at)
	}
	if got := shared.leases.Load(); got != 1 {
		t.Fatalf("five queued calls took %d shared leases, want 1", got)
	}
	// The first goes now; the capacity of a little over one request lets
	// each next one go a hair before its interval, one interval apart.
	gap := time.Duration(60e9 / lim.RPM)
	early := time.Duration((lim.BurstRequests - 1) * 60e9 / lim.RPM)
	if d := sends[1].Sub(sends[0]); (d - (gap - early)).Abs() > time.Microsecond {
		t.Errorf("the second send came %v after the first, want %v", d, gap-early)
	}
	for i := 2; i < len(sends); i++ {
		if d := sends[i].Sub(sends[i-1]); (d - gap).Abs() > time.Microsecond {
			t.Errorf("send %d came %v after the one before, want %v", i, d, gap)
		}
	}
	// An idle caller (nothing ahead) leases only what it needs.
	clock.Advance(time.Second)
	if _, err := p.Admit(context.Background(), "dep", lim, limiter.Amount{Requests: 1}, 0, 0); err != nil {
		t.Fatal(err)
	}
	if h := p.Held("dep"); h.Requests > 1e-6 {
		t.Fatalf("an idle admission left %v held, want nothing", h)
	}
}

// What one process releases, another leases next.
func TestPacerRelease(t *testing.T) {
	clock := limitertest.NewManualClock()
	shared := limiter.NewMemory(clock.Now)
	lim := fit(t, limiter.Enforcement{RPM: 6000, Windows: defaultWindows, Jitter: 10 * time.Millisecond})
	a := limiter.NewPacer(shared, limiter.PacerOptions{Clock: clock.Now})
	b := limiter.NewPacer(shared, limiter.PacerOptions{Clock: clock.Now})
	one := limiter.Amount{Requests: 1}
	first, err := a.Admit(context.Background(), "dep", lim, one, 10, 0)
	if err != nil {
		t.Fatal(err)
	}
	if h := a.Held("dep"); h.Requests < 3.9 {
		t.Fatalf("a holds %v, want room for four more calls", h)
	}
	if err := a.Release(context.Background(), "dep"); err != nil {
		t.Fatal(err)
	}
	next, err := b.Admit(context.Background(), "dep", lim, one, 0, 0)
	if err != nil {
		t.Fatal(err)
	}
	early := time.Duration((lim.BurstRequests - 1) * 60e9 / lim.RPM)
	if want := first.Add(time.Duration(60e9/lim.RPM) - early); next.Sub(want).Abs() > time.Microsecond {
		t.Fatalf("b's call goes at %v, want right after a's one call (%v)", next, want)
	}
}

// A call that the horizon cannot hold is refused with how long to wait,
// and placed once that time has passed.
func TestPacerRefusesBeyondTheHorizon(t *testing.T) {
	clock := limitertest.NewManualClock()
	p := limiter.NewPacer(limiter.NewMemory(clock.Now), limiter.PacerOptions{Clock: clock.Now, Horizon: 100 * time.Millisecond})
	lim := limiter.Limit{RPM: 60, BurstRequests: 1}
	one := limiter.Amount{Requests: 1}
	if _, err := p.Admit(context.Background(), "dep", lim, one, 0, 0); err != nil {
		t.Fatal(err)
	}
	_, err := p.Admit(context.Background(), "dep", lim, one, 0, 0)
	var ie *limiter.InsufficientError
	if !errors.As(err, &ie) || (ie.RetryAfter-900*time.Millisecond).Abs() > time.Microsecond {
		t.Fatalf("second call: %v, want to retry after 900ms", err)
	}
	clock.Advance(ie.RetryAfter)
	at, err := p.Admit(context.Background(), "dep", lim, one, 0, 0)
	if err != nil {
		t.Fatal(err)
	}
	if want := clock.Now().Add(100 * time.Millisecond); at.Sub(want).Abs() > time.Microsecond {
		t.Fatalf("sent at %v, want %v", at, want)
	}
}

// The bound, end to end: three processes, each with a queue that never
// empties, place calls through their Pacers on one shared schedule; each
// call reaches the provider up to the jitter after its send time. In
// every sliding window the provider counts, what arrived stays inside the
// window's limit, and the schedule is used to at least 98% of the rate
// the tightest window allows.
func TestPacersStayInsideEveryWindow(t *testing.T) {
	const jitter = 10 * time.Millisecond
	cases := []struct {
		name    string
		e       limiter.Enforcement
		tokens  func(r *rand.Rand) float64
		minUsed float64 // of the requests the tightest window allows
	}{
		{
			name:    "600 rpm, 1s and 1m",
			e:       limiter.Enforcement{RPM: 600, TPM: 1_000_000, Windows: defaultWindows, Jitter: jitter},
			tokens:  func(*rand.Rand) float64 { return 100 },
			minUsed: 0.98,
		},
		{
			name:    "6000 rpm, 1s and 1m",
			e:       limiter.Enforcement{RPM: 6000, TPM: 10_000_000, Windows: defaultWindows, Jitter: jitter},
			tokens:  func(*rand.Rand) float64 { return 100 },
			minUsed: 0.98,
		},
		{
			name:    "600 rpm, 1m only, bursts allowed",
			e:       limiter.Enforcement{RPM: 600, Windows: []time.Duration{time.Minute}, Jitter: jitter},
			tokens:  func(*rand.Rand) float64 { return 0 },
			minUsed: 0.98,
		},
		{
			// Tokens bind, and calls vary from 10 to 3,000 tokens, many
			// above the 333 the capacity holds.
			name: "tokens bind, calls of every size",
			e:    limiter.Enforcement{RPM: 6000, TPM: 200_000, Windows: defaultWindows, Jitter: jitter},
			tokens: func(r *rand.Rand) float64 {
				return math.Floor(10 * math.Pow(300, r.Float64()))
			},
		},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			lim := fit(t, tc.e)
			clock := limitertest.NewManualClock()
			start := clock.Now()
			shared := limiter.NewMemory(clock.Now)
			r := rand.New(rand.NewPCG(1, 2))
			type proc struct {
				p    *limiter.Pacer
				wake time.Time
				next float64 // tokens of the call at the head of its queue
			}
			procs := make([]*proc, 3)
			for i := range procs {
				procs[i] = &proc{p: limiter.NewPacer(shared, limiter.PacerOptions{Clock: clock.Now}), next: tc.tokens(r)}
			}
			type arrival struct {
				at     time.Time
				tokens float64
			}
			var got []arrival
			const run = 130 * time.Second
			for clock.Now().Sub(start) < run {
				for _, pr := range procs {
					for !clock.Now().Before(pr.wake) {
						need := limiter.Amount{Requests: 1, Tokens: pr.next}
						at, err := pr.p.Admit(context.Background(), "dep", lim, need, 1000, 0)
						var ie *limiter.InsufficientError
						if errors.As(err, &ie) {
							// Dispatchers come back with up to 20ms of jitter.
							pr.wake = clock.Now().Add(ie.RetryAfter + time.Duration(r.Int64N(int64(20*time.Millisecond))))
							break
						}
						if err != nil {
							t.Fatal(err)
						}
						if at.Before(clock.Now()) || at.After(clock.Now().Add(pr.p.Horizon())) {
							t.Fatalf("send time %v outside [now, now+horizon] at %v", at, clock.Now())
						}
						late := time.Duration(r.Int64N(int64(jitter) + 1))
						got = append(got, arrival{at.Add(late), pr.next})
						pr.next = tc.tokens(r)
					}
				}
				clock.Advance(time.Millisecond)
			}
			sort.Slice(got, func(i, j int) bool { return got[i].at.Before(got[j].at) })
			for _, w := range tc.e.Windows {
				maxReq := math.Ceil(tc.e.RPM * w.Seconds() / 60)
				maxTok := math.Floor(tc.e.TPM * w.Seconds() / 60)
				head, tokens, worstReq, worstTok := 0, 0.0, 0, 0.0
				for i, a := range got {
					tokens += a.tokens
					for !got[head].at.After(a.at.Add(-w)) {
						tokens -= got[head].tokens
						head++
					}
					worstReq = max(worstReq, i-head+1)
					worstTok = math.Max(worstTok, tokens)
				}
				t.Logf("window %v: at most %d requests (limit %v), %.0f tokens (limit %v)", w, worstReq, maxReq, worstTok, maxTok)
				if float64(worstReq) > maxReq {
					t.Errorf("window %v got %d requests, above its limit %v", w, worstReq, maxReq)
				}
				if tc.e.TPM > 0 && worstTok > maxTok {
					t.Errorf("window %v got %.0f tokens, above its limit %v", w, worstTok, maxTok)
				}
			}
			if tc.minUsed > 0 {
				// The last full minute, once the first has passed.
				from, to := start.Add(65*time.Second), start.Add(125*time.Second)
				n := 0
				for _, a := range got {
					if !a.at.Before(from) && a.at.Before(to) {
						n++
					}
				}
				allowed := tc.e.RPM
				if used := float64(n) / allowed; used < tc.minUsed {
					t.Errorf("sent %d requests in a minute, %.1f%% of the %v allowed; want at least %.0f%%", n, 100*used, allowed, 100*tc.minUsed)
				} else {
					t.Logf("used %.2f%% of the requests allowed", 100*used)
				}
			}
		})
	}
}

// slowScheduler takes a millisecond of its clock for each lease, as a
// round trip to KV does.
type slowScheduler struct {
	limiter.Scheduler
	clock *limitertest.ManualClock
}

func (s slowScheduler) Lease(ctx context.Context, key string, limit limiter.Limit, first, total limiter.Amount, lead, horizon time.Duration) (limiter.Stretch, error) {
	st, err := s.Scheduler.Lease(ctx, key, limit, first, total, lead, horizon)
	s.clock.Advance(time.Millisecond)
	return st, err
}

// A call is sent no sooner than its lead; and at a rate so fast that the
// stretch leased for it has begun by the time the lease comes back, it
// is still placed, as of the lease.
func TestPacerLead(t *testing.T) {
	clock := limitertest.NewManualClock()
	p := limiter.NewPacer(slowScheduler{limiter.NewMemory(clock.Now), clock}, limiter.PacerOptions{Clock: clock.Now})
	fast := fit(t, limiter.Enforcement{RPM: 1e8, TPM: 1e11, Windows: defaultWindows, Jitter: 10 * time.Millisecond})
	for i := range 3 {
		before := clock.Now()
		at, err := p.Admit(context.Background(), "dep", fast, limiter.Amount{Requests: 1, Tokens: 20}, 0, 2*time.Millisecond)
		if err != nil {
			t.Fatalf("call %d: %v", i, err)
		}
		if at.Before(before.Add(2 * time.Millisecond)) {
			t.Fatalf("call %d sent at %v, sooner than its lead after %v", i, at, before)
		}
	}
}

// A limit that changes at every call (a learned limit climbing back)
// keeps what the pacers hold: the sends stay inside every window the
// configured limit allows, and the schedule stays full, at fewer than a
// lease a call (three pacers that all want more than the schedule holds
// take 0.8 at a limit that never changes; dropping what they held at each
// change sent 24% of what the limit allowed, at 3.4 leases a call).
func TestPacersFollowAClimbingLimit(t *testing.T) {
	const (
		jitter = 10 * time.Millisecond
		rpm    = 6000.0
		run    = 30 * time.Second
	)
	clock := limitertest.NewManualClock()
	start := clock.Now()
	shared := &countingScheduler{Scheduler: limiter.NewMemory(clock.Now)}
	r := rand.New(rand.NewPCG(3, 4))
	limitAt := func(now time.Time) limiter.Limit {
		climbed := float64(now.Sub(start)) / float64(run)
		return fit(t, limiter.Enforcement{RPM: rpm * (0.9 + 0.1*climbed), Windows: defaultWindows, Jitter: jitter})
	}
	pacers := make([]*limiter.Pacer, 3)
	wake := make([]time.Time, 3)
	for i := range pacers {
		pacers[i] = limiter.NewPacer(shared, limiter.PacerOptions{Clock: clock.Now})
	}
	var sends []time.Time
	var paced float64 // what the limit allowed over the run
	for clock.Now().Sub(start) < run {
		lim := limitAt(clock.Now())
		paced += lim.RPM / 60 / 1000
		for i, p := range pacers {
			for !clock.Now().Before(wake[i]) {
				at, err := p.Admit(context.Background(), "dep", limitAt(clock.Now()), limiter.Amount{Requests: 1}, 1000, 0)
				var ie *limiter.InsufficientError
				if errors.As(err, &ie) {
					wake[i] = clock.Now().Add(ie.RetryAfter + time.Duration(r.Int64N(int64(20*time.Millisecond))))
					break
				}
				if err != nil {
					t.Fatal(err)
				}
				sends = append(sends, at.Add(time.Duration(r.Int64N(int64(jitter)+1))))
			}
		}
		clock.Advance(time.Millisecond)
	}
	sort.Slice(sends, func(i, j int) bool { return sends[i].Before(sends[j]) })
	head, worst := 0, 0
	for i, at := range sends {
		for !sends[head].After(at.Add(-time.Second)) {
			head++
		}
		worst = max(worst, i-head+1)
	}
	used := float64(len(sends)) / paced
	perCall := float64(shared.leases.Load()) / float64(len(sends))
	t.Logf("at most %d in a second; %.1f%% of what the limit allowed; %.2f leases a call", worst, 100*used, perCall)
	if worst > 100 {
		t.Errorf("%d requests in one second, above the 100 the configured limit allows", worst)
	}
	if used < 0.98 {
		t.Errorf("sent %.1f%% of what the climbing limit allowed, want at least 98%%", 100*used)
	}
	if perCall > 1 {
		t.Errorf("%.2f shared leases a call, want what is held used", perCall)
	}
}
