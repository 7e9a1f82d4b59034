package dispatcher

import (
	"context"
	"errors"
	"math"
	"math/rand/v2"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/sluicehq/sluice/messages"
	"github.com/sluicehq/sluice/services/concurrency"
	"github.com/sluicehq/sluice/services/config"
	"github.com/sluicehq/sluice/services/health"
	"github.com/sluicehq/sluice/services/limiter"
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
// Deployments of stalled regions (see regions.go) go after all the rest.
//
// On a deployment, admission takes an in-flight slot (max_in_flight), then
// for a non-critical call the deployment's non-critical bucket (the
// critical reserve), then the deployment's own bucket.
func (d *Dispatcher) admit(ctx context.Context, cfg *config.Config, sh *shares, w *waiting, open []*config.Deployment, now time.Time, r *reservation) (*config.Deployment, time.Duration) {
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
		lim := d.limitOf(cfg, dep, now)
		avail, err := d.shared.Available(ctx, dep.ID, lim)
		if err != nil {
			avail = limiter.Amount{}
		}
		held := d.leases.Held(dep.ID)
		headroom := min((avail.Requests+held.Requests)/lim.BurstRequests, (avail.Tokens+held.Tokens)/lim.BurstTokens)
		o := option{dep: dep, limit: lim, rank: preference(w.ticket.Call.PreferRegions, dep.Region)}
		if d.regions.isStalled(dep.Region) {
			// After every region whose executors take work, preferred or not.
			o.rank = len(w.ticket.Call.PreferRegions) + 1
		}
		// Weighted random order (Efraimidis-Spirakis): sorting by u^(1/w)
		// draws without replacement with probability proportional to w.
		if weight := dep.Weight * headroom; weight > 0 {
			o.key = math.Pow(rand.Float64(), 1/weight)
		} else {
			o.key = -1 + rand.Float64()*1e-3
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
	attempt := attemptKey(w.ticket.Call.ID, w.ticket.Attempt)
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
				wait = min(wait, jittered(err))
				continue
			}
			got = append(got, taken{key, nl, w.need})
		}
		if err := d.leases.Take(ctx, o.dep.ID, o.limit, w.need); err != nil {
			release()
			wait = min(wait, jittered(err))
			if !errors.Is(err, limiter.ErrInsufficient) {
				d.log.Warn("limiter", "deployment", o.dep.ID, "err", err)
			}
			continue
		}
		r.taken = append(r.taken, append(got, taken{o.dep.ID, o.limit, w.need})...)
		r.deployment, r.slot = o.dep.ID, o.dep.MaxInFlight > 0
		return o.dep, 0
	}
	return nil, wait
}

// jittered is how long to wait after a limiter refusal. The jitter keeps
// dispatchers that found the same bucket short from all coming back at the
// same instant and racing.
func jittered(err error) time.Duration {
	wait := shortOf(err)
	if errors.Is(err, limiter.ErrInsufficient) {
		wait += time.Duration(rand.Int64N(int64(contendedJitter)))
	}
	return wait
}

// preference is region's place in prefer (len(prefer) when absent).
func preference(prefer []string, region string) int {
	for i, r := range prefer {
		if r == region {
			return i
		}
	}
	return len(prefer)
}

// limitOf is a deployment's limit in the shared limiter now: the
// configured limits, or lower ones its provider reported, recovering. The
// bucket holds admission.burst worth of the rate, never less than one
// request.
func (d *Dispatcher) limitOf(cfg *config.Config, dep *config.Deployment, now time.Time) limiter.Limit {
	return DeploymentLimit(cfg, dep, d.health.Get(dep.ID), now)
}

// DeploymentLimit is the bucket a deployment is admitted against at now,
// given what its provider taught (h): its key in the shared limiter is the
// deployment id.
func DeploymentLimit(cfg *config.Config, dep *config.Deployment, h messages.DeploymentHealth, now time.Time) limiter.Limit {
	rpm, tpm := health.Effective(dep.RPM, dep.TPM, h, now, cfg.Health.LearnedRecovery)
	return rateLimit(rpm, tpm, cfg.Admission.Burst)
}

// breakerOf returns the breaker for a deployment id or a regionKey. The
// caller holds d.mu.
func (d *Dispatcher) breakerOf(key string) *breaker {
	b, ok := d.breakers[key]
	if !ok {
		b = &breaker{}
		d.breakers[key] = b
	}
	return b
}

// budget returns a pool's retry budget. The caller holds d.mu.
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

// attemptKey names one attempt of one call.
func attemptKey(callID string, attempt int) string { return callID + "." + strconv.Itoa(attempt) }

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}
