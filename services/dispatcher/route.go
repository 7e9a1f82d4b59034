package dispatcher

import (
	"context"
	"errors"
	"math"
	"math/rand/v2"
	"sort"
	"strings"
	"time"

	"github.com/sluicehq/sluice/messages"
	"github.com/sluicehq/sluice/services/concurrency"
	"github.com/sluicehq/sluice/services/config"
	"github.com/sluicehq/sluice/services/limiter"
	"github.com/sluicehq/sluice/services/pace"
	"github.com/sluicehq/sluice/services/providers"
)

// candidates are the deployments of pool that may serve call: those that
// speak its endpoint, in the regions it allows (all when it names none).
func candidates(pool *config.Pool, call messages.CallRequest) []*config.Deployment {
	var out []*config.Deployment
	for _, dep := range pool.Deployments {
		if !providers.Supports(dep.Provider, call.Endpoint) {
			continue
		}
		if len(call.Regions) > 0 && !contains(call.Regions, dep.Region) {
			continue
		}
		// A pinned call (one that continues state a provider stored
		// under one key, such as a Responses API previous_response_id)
		// may go only to that deployment: it waits for it, as for
		// regions, rather than go where the state is not.
		if call.Deployment != "" && dep.ID != call.Deployment {
			continue
		}
		out = append(out, dep)
	}
	return out
}

// usable reports whether any call may go to dep now, and if not, until
// when it stays unusable (zero when only an operator can tell).
func (d *Dispatcher) usable(cfg *config.Config, dep *config.Deployment, now time.Time) (bool, time.Time) {
	h := d.health.Get(dep.ID)
	if h.DisabledNow(now) {
		return false, h.DisabledUntil
	}
	if h.CoolingAt(now) {
		return false, h.CooldownUntil
	}
	if blocked, until := d.breakerOf(dep.ID).blocked(now, cfg.Health.Circuit); blocked {
		return false, until
	}
	if blocked, until := d.breakerOf(regionKey(dep.Region)).blocked(now, cfg.Health.Circuit); blocked {
		return false, until
	}
	return true, time.Time{}
}

// outOfRotation reports whether every one of cands is disabled (by
// insufficient_quota) at now, with the reason of the first.
func (d *Dispatcher) outOfRotation(cands []*config.Deployment, now time.Time) (string, bool) {
	reason := ""
	for _, dep := range cands {
		h := d.health.Get(dep.ID)
		if !h.DisabledNow(now) {
			return "", false
		}
		if reason == "" {
			reason = h.DisabledReason
		}
	}
	return reason, len(cands) > 0
}

// admit reserves w's need on one of the open deployments, records what
// it took in r, and returns the deployment; or nil, and how long until one
// could fit.
//
// The order: deployments in the call's preferred regions first, in the
// order it prefers them; then, within a preference, a random order drawn
// in proportion to weight × headroom (the capacity left relative to the
// limit, counting what this dispatcher holds leased). Equal headroom
// spreads calls evenly, so dispatchers do not herd onto one key, and more
// headroom draws more calls. The deployment whose attempt just failed goes
// last, and after a provider failure its region goes after the others.
//
// On a deployment, admission takes an in-flight slot (max_in_flight), then
// for a non-critical call the deployment's non-critical bucket (the
// critical reserve), then a send time on the deployment's schedule, no
// later than admission.lease_ttl from now (see limiter.Pacer) and no
// sooner than its work can reach the region's executors (see leadOf);
// ahead is how many more calls this pass may place on it, for the lease's
// size.
func (d *Dispatcher) admit(ctx context.Context, cfg *config.Config, sh *shares, w *waiting, open []*config.Deployment, now time.Time, r *reservation, ahead int) (*config.Deployment, time.Duration) {
	type option struct {
		dep   *config.Deployment
		limit limiter.Limit
		rank  int
		key   float64
	}
	// After a provider failure (not a 429), the rest of that region goes
	// after the other regions too: whatever broke may be regional.
	failedRegion := ""
	if last, ok := cfg.Deployment(w.ticket.LastDeployment); ok && w.ticket.LastError != nil && w.ticket.LastError.Code == messages.CodeProviderError {
		failedRegion = last.Region
	}
	options := make([]option, 0, len(open))
	for _, dep := range open {
		lim := d.paceOf(cfg, dep, now)
		o := option{dep: dep, limit: lim, rank: preference(w.ticket.Call.PreferRegions, dep.Region)}
		// Weighted random order (Efraimidis-Spirakis): sorting by u^(1/w)
		// draws without replacement with probability proportional to w.
		if weight := dep.Weight * d.headroom(ctx, dep.ID, lim); weight > 0 {
			o.key = math.Pow(d.rng.Float64(), 1/weight)
		} else {
			o.key = -1 + d.rng.Float64()*1e-3
		}
		switch {
		case dep.ID == w.ticket.LastDeployment:
			o.key -= 2
		case failedRegion != "" && dep.Region == failedRegion:
			o.key--
		}
		options = append(options, o)
	}
	sort.Slice(options, func(i, j int) bool {
		if options[i].rank != options[j].rank {
			return options[i].rank < options[j].rank
		}
		return options[i].key > options[j].key
	})

	wait := maxPassWait
	attempt := attemptKey(w.ticket.Call.ID, w.ticket.Attempt, w.ticket.Admission)
	critical := w.ticket.Tier == messages.TierCritical
	for _, o := range options {
		var got []taken
		if o.dep.MaxInFlight > 0 {
			err := d.slots.Acquire(ctx, o.dep.ID, o.dep.MaxInFlight, attempt, now.Add(cfg.Admission.InFlightLease))
			if err != nil {
				if !errors.Is(err, concurrency.ErrFull) {
					d.log.Warn("concurrency slots", "deployment", o.dep.ID, "err", err)
				}
				// Attempt reports wake the scheduler when slots free up.
				wait = min(wait, errorWait)
				continue
			}
		}
		release := func() {
			for _, t := range got {
				d.settle.add(t.key, t.limit, t.amount)
			}
			if o.dep.MaxInFlight > 0 {
				d.slots.Release(o.dep.ID, attempt)
			}
		}
		if nl, ok := sh.nonCriticalLimit(o.limit); ok && !critical {
			key := nonCriticalKey(o.dep.ID)
			if err := d.leases.Take(ctx, key, nl, w.need); err != nil {
				release()
				wait = min(wait, d.jittered(err))
				continue
			}
			got = append(got, taken{key, nl, w.need})
		}
		sendAt, err := d.pacer.Admit(ctx, o.dep.ID, o.limit, w.need, ahead, d.leadOf(o.dep.Region))
		if err != nil {
			release()
			wait = min(wait, d.jittered(err))
			if !errors.Is(err, limiter.ErrInsufficient) {
				d.log.Warn("limiter", "deployment", o.dep.ID, "err", err)
			}
			continue
		}
		r.taken = append(r.taken, got...)
		r.deployment, r.slot = o.dep.ID, o.dep.MaxInFlight > 0
		r.pace, r.sendAt, r.tokens = o.limit, sendAt, w.need.Tokens
		return o.dep, 0
	}
	return nil, wait
}

// headroom is how much of a deployment's schedule is free over the next
// horizon, from 0 (booked to the horizon, counting what this dispatcher
// holds) to 1 (idle): the least over its limited dimensions. It costs no
// KV operation: the schedule comes from the watched cache.
func (d *Dispatcher) headroom(ctx context.Context, deployment string, lim limiter.Limit) float64 {
	free, err := d.schedules.Free(ctx, deployment, lim)
	if err != nil {
		return 0
	}
	held := d.pacer.Held(deployment)
	h := d.pacer.Horizon().Seconds()
	out := 1.0
	for _, dim := range []struct{ rate, capacity, free, held float64 }{
		{lim.RPM / 60, lim.BurstRequests, free.Requests, held.Requests},
		{lim.TPM / 60, lim.BurstTokens, free.Tokens, held.Tokens},
	} {
		if dim.rate <= 0 {
			continue
		}
		ahead := dim.rate * h
		out = min(out, max(0, min(1, (dim.free+dim.held-(dim.capacity-ahead))/ahead)))
	}
	return out
}

// jittered is how long to wait after a limiter refusal. The jitter keeps
// dispatchers that found the same bucket short from all coming back at the
// same instant and racing.
func (d *Dispatcher) jittered(err error) time.Duration {
	wait := shortOf(err)
	if errors.Is(err, limiter.ErrInsufficient) {
		wait += time.Duration(d.rng.Int64N(int64(contendedJitter)))
	}
	return wait
}

// randomness is where routing draws its random numbers: math/rand/v2's
// global source, or a seeded *rand.Rand in a simulation.
type randomness interface {
	Float64() float64
	Int64N(n int64) int64
}

// globalRand is math/rand/v2's global source.
type globalRand struct{}

func (globalRand) Float64() float64     { return rand.Float64() }
func (globalRand) Int64N(n int64) int64 { return rand.Int64N(n) }

// preference is region's place in prefer (len(prefer) when absent).
func preference(prefer []string, region string) int {
	for i, r := range prefer {
		if r == region {
			return i
		}
	}
	return len(prefer)
}

// paceOf is the pace a deployment's calls are sent at now (see pace.Of).
func (d *Dispatcher) paceOf(cfg *config.Config, dep *config.Deployment, now time.Time) limiter.Limit {
	return pace.Of(cfg, dep, d.health.Get(dep.ID), now)
}

// breakerOf returns the breaker for a deployment id or a regionKey. Only
// the scheduler calls it.
func (d *Dispatcher) breakerOf(key string) *breaker {
	b, ok := d.breakers[key]
	if !ok {
		b = &breaker{}
		d.breakers[key] = b
	}
	return b
}

// budget returns a pool's retry budget. Only the scheduler calls it.
func (d *Dispatcher) budget(pool string) *retryBudget {
	b, ok := d.budgets[pool]
	if !ok {
		b = &retryBudget{}
		d.budgets[pool] = b
	}
	return b
}

// regionKey names a region's breaker apart from deployment ids.
func regionKey(region string) string { return "region:" + region }

// cutRegion returns the region a regionKey names.
func cutRegion(key string) (string, bool) { return strings.CutPrefix(key, "region:") }

// attemptKey names one admission of one attempt of one call: the id of its
// work.
func attemptKey(callID string, attempt, admission int) string {
	return messages.ExecMsgID(callID, attempt, admission)
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}
