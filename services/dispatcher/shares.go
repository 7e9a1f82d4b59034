package dispatcher

import (
	"context"
	"errors"
	"time"

	"github.com/sluicehq/sluice/messages"
	"github.com/sluicehq/sluice/services/config"
	"github.com/sluicehq/sluice/services/limiter"
)

// How people's allocations become buckets in the shared limiter, next to
// each deployment's send schedule (see pace.Of):
//
//   - a team's cap in a pool: a bucket at the capped rate that each of the
//     team's calls must take from (hard);
//   - a team's guarantee in a pool, and a tier's minimum share of a pool:
//     buckets at that rate that every admission of the team (tier) is
//     charged to; while one holds credit, the team (tier) is behind its
//     share, and its calls go first (soft: a boost, never a block);
//   - the critical reserve: each deployment's "non-critical" bucket, at
//     (1 - reserve) of its rate, that every other tier must also take from,
//     so that critical calls always find the reserve;
//   - the batch gate: a pool bucket at max_utilization of its capacity,
//     charged by every other tier and taken from by batch calls, so batch
//     runs only in the room the rest leaves below that level.
//
// All of them live in one KV limiter (bucket SLUICE_LIMITER) that every
// dispatcher shares, so all of them enforce the same shares.

// Keys of the shared buckets. Pool names and ids keep to KV key characters.
func capKey(team, pool string) string       { return "team." + team + "." + pool + ".cap" }
func guaranteeKey(team, pool string) string { return "team." + team + "." + pool + ".guarantee" }
func minShareKey(pool string, tier messages.Tier) string {
	return "pool." + pool + ".tier." + string(tier) + ".min"
}
func batchGateKey(pool string) string         { return "pool." + pool + ".batch" }
func nonCriticalKey(deployment string) string { return deployment + ".noncritical" }

// poolCapacity is the sum of the pool's deployments' limits now, per
// minute.
func (d *Dispatcher) poolCapacity(cfg *config.Config, pool *config.Pool, now time.Time) (rpm, tpm float64) {
	for _, dep := range pool.Deployments {
		l := d.paceOf(cfg, dep, now)
		rpm += l.RPM
		tpm += l.TPM
	}
	return rpm, tpm
}

// shares holds, for one pass over one pool, the limits of the shared
// buckets that carry its allocations.
type shares struct {
	cfg        *config.Config
	pool       *config.Pool
	rpm, tpm   float64 // the pool's capacity now
	burst      time.Duration
	offPeak    bool
	gateClosed bool // batch may not run now
}

func (d *Dispatcher) sharesOf(cfg *config.Config, pool *config.Pool, now time.Time) *shares {
	s := &shares{cfg: cfg, pool: pool, burst: cfg.Admission.Burst, offPeak: cfg.Tiers.Batch.OffPeakAt(now)}
	s.rpm, s.tpm = d.poolCapacity(cfg, pool, now)
	return s
}

func (s *shares) capLimit(q *config.Quota) (limiter.Limit, bool) {
	if q.CapRPM == 0 && q.CapTPM == 0 {
		return limiter.Limit{}, false
	}
	return limiter.NewLimit(float64(q.CapRPM), float64(q.CapTPM), s.burst), true
}

func (s *shares) guaranteeLimit(q *config.Quota) (limiter.Limit, bool) {
	if !q.Guaranteed() {
		return limiter.Limit{}, false
	}
	return limiter.NewLimit(float64(q.GuaranteedRPM), float64(q.GuaranteedTPM), s.burst), true
}

func (s *shares) minShareLimit(tier messages.Tier) (limiter.Limit, bool) {
	f := s.cfg.Tiers.Policy(tier).MinShare
	if f <= 0 || tier == messages.TierCritical {
		return limiter.Limit{}, false
	}
	return limiter.NewLimit(f*s.rpm, f*s.tpm, s.burst), true
}

func (s *shares) batchGateLimit() (limiter.Limit, bool) {
	u := s.cfg.Tiers.Batch.MaxUtilization
	if u >= 1 {
		return limiter.Limit{}, false
	}
	return limiter.NewLimit(u*s.rpm, u*s.tpm, s.burst), true
}

// nonCriticalLimit is a deployment's bucket for every tier but critical.
func (s *shares) nonCriticalLimit(main limiter.Limit) (limiter.Limit, bool) {
	r := s.cfg.Tiers.Critical.Reserve
	if r <= 0 {
		return limiter.Limit{}, false
	}
	return limiter.NewLimit((1-r)*main.RPM, (1-r)*main.TPM, s.burst), true
}

// credit reports whether the bucket key holds at least need now. It costs
// no KV operation: the KV limiter answers from its watched cache.
func (d *Dispatcher) credit(ctx context.Context, key string, l limiter.Limit, need limiter.Amount) bool {
	avail, err := d.buckets.Available(ctx, key, l)
	if err != nil {
		return false
	}
	return (l.RPM == 0 || avail.Requests >= need.Requests) && (l.TPM == 0 || avail.Tokens >= need.Tokens)
}

// charge debits need from a soft-share bucket, in the next batch of
// settlements: the bucket only steers the order of admission, so a moment
// of delay does no harm, and batching keeps it off the KV's hot path. It
// returns what gives the charge back, should the call never be sent.
func (d *Dispatcher) charge(key string, l limiter.Limit, need limiter.Amount) taken {
	d.settle.add(key, l, limiter.Amount{Requests: -need.Requests, Tokens: -need.Tokens})
	return taken{key, l, need}
}

// shortOf turns a limiter refusal into how long to wait; other errors wait
// errorWait.
func shortOf(err error) time.Duration {
	var short *limiter.InsufficientError
	if errors.As(err, &short) {
		return short.RetryAfter
	}
	return errorWait
}
