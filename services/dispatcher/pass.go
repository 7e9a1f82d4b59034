package dispatcher

import (
	"context"
	"slices"
	"strings"
	"time"

	"github.com/sluicehq/sluice/messages"
	"github.com/sluicehq/sluice/services/config"
	"github.com/sluicehq/sluice/services/limiter"
)

// passAdmissions bounds what one pass admits from one pool. Events posted
// meanwhile (a critical call among them) wait for the pass to end: a
// pass that admitted every call that fits, thousands when capacity is
// plentiful and a backlog waits, kept a critical call waiting seconds
// (`sluice bench --mode drain`: p99 8-10 s with 20,000 waiting; 0.2-0.3 s
// with this bound at 16, 0.2 s at 64 but a p50 three times 16's). A pass
// that reaches it asks for the next at once; so does one during which a
// critical call was posted, after the admission under way.
const passAdmissions = 16

// pass expires calls past their deadline, then admits, pool by pool, every
// call that fits now (at most passAdmissions a pool), in the order pick
// gives. A call that does not fit blocks the deployments it could use for
// every call after it in this pass, so a later call never overtakes an
// earlier one on the same deployments, while calls restricted to other
// regions still flow; and its team's list in its tier waits for the next
// pass (FIFO within a team and tier). pass returns how long to sleep: 0
// when more may fit at once. Only the scheduler calls it.
func (d *Dispatcher) pass(ctx context.Context) time.Duration {
	now := d.cfg.Clock()
	cfg := d.cfg.Shared.Load()
	for w := d.queue.earliestDeadline(); w != nil && !now.Before(w.ticket.Deadline); w = d.queue.earliestDeadline() {
		d.dequeue(w)
		why := "the deadline passed after waiting " + now.Sub(w.since).Round(time.Millisecond).String() + " for capacity"
		if regions := d.stalledFor(cfg, w); len(regions) > 0 {
			why += "; no executor of region " + strings.Join(regions, ", ") + " takes work"
		}
		d.answer(w, messages.Errorf(messages.CodeDeadlineExceeded, "%s", why))
	}

	wait := maxPassWait
	if w := d.queue.earliestDeadline(); w != nil {
		wait = min(wait, w.ticket.Deadline.Sub(now))
	}
	admitted, more := 0, false
	// A critical call posted during the pass ends it (see criticalPosted),
	// so the pools take turns being first.
	critical := d.inbox.criticalPosted.Load()
	names := d.queue.poolNames()
	if len(names) > 1 {
		k := int(d.passes % uint64(len(names)))
		names = slices.Concat(names[k:], names[:k])
	}
	d.passes++
	for _, name := range names {
		pool, ok := cfg.Pool(name)
		if !ok {
			for _, w := range d.queue.all() {
				if w.pool() == name {
					d.dequeue(w)
					d.answer(w, messages.Errorf(messages.CodeUnknownModel, "pool %q was removed from the configuration", name))
				}
			}
			continue
		}
		p := d.newPoolPass(ctx, cfg, pool, now)
		n, interrupted := 0, false
		for n < passAdmissions {
			if interrupted = d.inbox.criticalPosted.Load() != critical; interrupted {
				break
			}
			w := p.pick()
			if w == nil {
				break
			}
			if p.admitOne(w) {
				n++
			}
		}
		p.releaseDeferred()
		wait = min(wait, p.wait)
		admitted += n
		more = more || n == passAdmissions || interrupted
		if interrupted {
			break
		}
	}
	d.admittedTotal += uint64(admitted)
	if more {
		return 0
	}
	return max(wait, minPassWait)
}

// poolPass is one pass over one pool's waiting calls.
type poolPass struct {
	d      *Dispatcher
	ctx    context.Context
	cfg    *config.Config
	pool   *config.Pool
	now    time.Time
	shares *shares
	budget *retryBudget

	// blocked deployments take no more calls in this pass.
	blocked map[string]bool
	// stuck (tier, team) lists wait for the next pass; capped teams wait
	// in every tier.
	stuck  map[tierTeam]bool
	capped map[string]bool
	// poolOut: every deployment is out of rotation (insufficient_quota).
	poolOut bool
	wait    time.Duration

	// refused deployments turned a call away for lack of capacity in this
	// pass.
	refused map[string]bool
	// claims are the peers' standing demands on the pool, and peerServed
	// how fast they admitted its calls lately (see crossfair.go).
	claims     []claim
	peerServed map[tierTeam]float64
	// deferredOn are the deployments calls were deferred from, and that
	// took no call after.
	deferredOn map[string]bool
}

type tierTeam struct {
	tier messages.Tier
	team string
}

func (d *Dispatcher) newPoolPass(ctx context.Context, cfg *config.Config, pool *config.Pool, now time.Time) *poolPass {
	p := &poolPass{
		d: d, ctx: ctx, cfg: cfg, pool: pool, now: now,
		shares:  d.sharesOf(cfg, pool, now),
		budget:  d.budget(pool.Name()),
		blocked: map[string]bool{},
		stuck:   map[tierTeam]bool{},
		capped:  map[string]bool{},
		refused: map[string]bool{},
		wait:    maxPassWait,

		deferredOn: map[string]bool{},
	}
	p.claims, p.peerServed = d.claimsOn(pool.Name())
	for _, dep := range pool.Deployments {
		if d.regions.isStalled(dep.Region) {
			// Work admitted there would wait in SLUICE_EXEC and be sent
			// late, or not at all: calls wait here instead, or go
			// elsewhere, until an executor of the region takes work.
			p.blocked[dep.ID] = true
			continue
		}
		if usable, until := d.usable(cfg, dep, now); !usable {
			p.blocked[dep.ID] = true
			if !until.IsZero() {
				p.wait = min(p.wait, until.Sub(now))
			}
		}
	}
	_, p.poolOut = d.outOfRotation(pool.Deployments, now)
	if gate, ok := p.shares.batchGateLimit(); ok && !p.shares.offPeak {
		p.shares.gateClosed = !d.credit(ctx, batchGateKey(pool.Name()), gate, oneCall)
	}
	return p
}

// stalledFor returns the regions w may be served in when every one of
// them is stalled (nothing is admitted there), sorted; else nil.
func (d *Dispatcher) stalledFor(cfg *config.Config, w *waiting) []string {
	pool, ok := cfg.Pool(w.pool())
	if !ok {
		return nil
	}
	var regions []string
	for _, dep := range candidates(pool, w.ticket.Call) {
		if !d.regions.isStalled(dep.Region) {
			return nil
		}
		if !slices.Contains(regions, dep.Region) {
			regions = append(regions, dep.Region)
		}
	}
	slices.Sort(regions)
	return regions
}

// oneCall is the least a call needs: one request.
var oneCall = limiter.Amount{Requests: 1}

// pick returns the next call to try, or nil when none is left to try in
// this pass. The order:
//
//  1. critical calls, shared between teams by weight (fair queuing);
//  2. calls of teams behind their guarantee (whose guarantee bucket holds
//     credit), highest tier first;
//  3. calls of tiers behind their minimum share, highest tier first;
//  4. high, then standard, then batch calls, each tier shared between
//     teams by weight.
//
// Batch calls go only while the batch gate is open (the pool's other
// traffic leaves room below tiers.batch.max_utilization) or off-peak.
// Fair queuing only orders this dispatcher's calls; a call whose capacity
// a peer dispatcher needs more (for a higher tier, or a team further
// behind its weight) is deferred to the next pass (see crossfair.go).
func (p *poolPass) pick() *waiting {
	if len(p.blocked) >= len(p.pool.Deployments) && !p.poolOut {
		return nil
	}
	if w := p.fairest(messages.TierCritical, false); w != nil {
		return w
	}
	if w := p.guaranteed(); w != nil {
		return w
	}
	for _, tier := range messages.Tiers[1:] {
		if l, ok := p.shares.minShareLimit(tier); ok && p.open(tier) {
			if w := p.fairest(tier, false); w != nil && p.d.credit(p.ctx, minShareKey(p.pool.Name(), tier), l, w.need) {
				return w
			}
		}
	}
	for _, tier := range messages.Tiers[1:] {
		if !p.open(tier) {
			continue
		}
		if w := p.fairest(tier, true); w != nil {
			return w
		}
	}
	return nil
}

// open reports whether calls of tier may go in this pass.
func (p *poolPass) open(tier messages.Tier) bool {
	return tier != messages.TierBatch || !p.shares.gateClosed
}

// fairest is the head call, in tier, of the team fair queuing serves next,
// among the teams not stuck or capped, unless that call defers to a peer's
// claim (yieldToHigher: the claims of higher tiers count too); then the
// team waits for the next pass and the next team is tried.
func (p *poolPass) fairest(tier messages.Tier, yieldToHigher bool) *waiting {
	for {
		w := p.d.queue.fairest(p.pool.Name(), tier, func(team string) bool {
			return p.capped[team] || p.stuck[tierTeam{tier, team}]
		})
		if w == nil || !p.deferred(w, yieldToHigher) {
			return w
		}
		p.stuck[tierTeam{tier, w.ticket.Team}] = true
		p.wait = min(p.wait, deferWait)
	}
}

// guaranteed is the first waiting call of a team behind its guarantee.
func (p *poolPass) guaranteed() *waiting {
	// Only the teams with a guarantee here: a pass looks for every call,
	// and going through all teams (sorted, each time) was most of its cost
	// with a hundred of them.
	for _, name := range p.cfg.GuaranteedTeams(p.pool.Name()) {
		if p.capped[name] {
			continue
		}
		q, ok := p.cfg.Teams[name].Quota(p.pool.Name())
		if !ok {
			continue
		}
		l, ok := p.shares.guaranteeLimit(q)
		if !ok {
			continue
		}
		for _, tier := range messages.Tiers[1:] {
			if !p.open(tier) || p.stuck[tierTeam{tier, name}] {
				continue
			}
			w := p.d.queue.head(p.pool.Name(), tier, name)
			if w != nil && p.d.credit(p.ctx, guaranteeKey(name, p.pool.Name()), l, w.need) {
				return w
			}
		}
	}
	return nil
}

// weight is team's weight in the pool.
func (p *poolPass) weight(team string) float64 {
	if t, ok := p.cfg.Teams[team]; ok {
		if q, ok := t.Quota(p.pool.Name()); ok && q.Weight > 0 {
			return q.Weight
		}
	}
	return 1
}

// admitOne tries to admit w, and reports whether it did. When it cannot,
// w's list waits for the next pass, and what w could use is blocked.
func (p *poolPass) admitOne(w *waiting) bool {
	d, t := p.d, w.ticket
	stick := func(wait time.Duration) bool {
		p.stuck[tierTeam{t.Tier, t.Team}] = true
		p.wait = min(p.wait, wait)
		return false
	}
	// Only deployments whose tpm holds the call: a provider refuses a
	// request over it. None (the configuration changed since the call was
	// read): waiting helps no one.
	cands := candidates(p.pool, t.Call)
	if fit := admitting(cands, w.need.Tokens); len(fit) < len(cands) {
		if len(fit) == 0 {
			d.dequeue(w)
			d.answer(w, neverFits(p.pool.Name(), cands, t.Call.Regions, int64(w.need.Tokens), ""))
			return false
		}
		cands = fit
	}
	if reason, out := d.outOfRotation(cands, p.now); out {
		// Only an operator can bring these back: waiting helps no one.
		d.dequeue(w)
		d.answer(w, &messages.Error{Code: messages.CodeProviderError,
			Message: "every deployment that could serve this call is out of rotation: " + reason})
		return false
	}
	// A late attempt admitted again is not a retry: the provider never
	// saw it, and the retry budget is for what providers refused.
	retry := t.Attempt > 1 && t.Admission == 0
	if retry && !p.budget.allows(p.now, p.cfg.Retry.Budget, p.cfg.Retry.BudgetMinPerSecond) {
		if !w.overBudget {
			w.overBudget = true
			d.metrics.RetryBudgetWaits.WithLabelValues(p.pool.Name()).Inc()
		}
		return stick(budgetWindow / budgetBuckets)
	}
	var open []*config.Deployment
	starved := false
	for _, dep := range cands {
		if !p.blocked[dep.ID] {
			open = append(open, dep)
		}
		starved = starved || p.refused[dep.ID]
	}
	key := queueKey{p.pool.Name(), t.Tier, t.Team}
	if len(open) == 0 {
		if starved {
			d.demand.starve(key, nil)
		}
		return stick(maxPassWait)
	}

	r := &reservation{at: p.now}
	attempt := attemptKey(t.Call.ID, t.Attempt, t.Admission)
	quota := p.quota(t.Team)
	// The team's cap, and the batch gate, bind whatever the deployment.
	if l, ok := p.shares.capLimit(quota); ok {
		key := capKey(t.Team, p.pool.Name())
		if err := d.leases.Take(p.ctx, key, l, w.need); err != nil {
			p.capped[t.Team] = true
			p.wait = min(p.wait, shortOf(err))
			return false
		}
		r.taken = append(r.taken, taken{key, l, w.need})
	}
	gate, gated := p.shares.batchGateLimit()
	if t.Tier == messages.TierBatch && gated && !p.shares.offPeak {
		if err := d.leases.Take(p.ctx, batchGateKey(p.pool.Name()), gate, w.need); err != nil {
			d.giveBack(r, attempt)
			p.shares.gateClosed = true
			p.wait = min(p.wait, shortOf(err))
			return false
		}
		r.taken = append(r.taken, taken{batchGateKey(p.pool.Name()), gate, w.need})
	}

	// What else waits for the pool, spread over the deployments it may
	// use, sizes the lease the call takes its send time from.
	ahead := (d.queue.waitingIn(p.pool.Name()) - 1) / len(open)
	dep, retryAfter := d.admit(p.ctx, p.cfg, p.shares, w, open, p.now, r, ahead)
	if dep == nil {
		d.giveBack(r, attempt)
		for _, c := range open {
			p.blocked[c.ID] = true
			p.refused[c.ID] = true
		}
		d.demand.starve(key, open)
		return stick(retryAfter)
	}

	// Charge the soft shares, which steer the order of later passes.
	if l, ok := p.shares.guaranteeLimit(quota); ok {
		r.charged = append(r.charged, d.charge(guaranteeKey(t.Team, p.pool.Name()), l, w.need))
	}
	if l, ok := p.shares.minShareLimit(t.Tier); ok {
		r.charged = append(r.charged, d.charge(minShareKey(p.pool.Name(), t.Tier), l, w.need))
	}
	if gated && t.Tier != messages.TierBatch {
		r.charged = append(r.charged, d.charge(batchGateKey(p.pool.Name()), gate, w.need))
	}
	d.queue.served(w, p.weight(t.Team))
	d.demand.admitted(key, p.now)
	delete(p.deferredOn, dep.ID)
	d.dequeue(w)
	p.budget.note(p.now, retry)
	d.breakerOf(dep.ID).dispatched(p.now, attempt)
	d.breakerOf(regionKey(dep.Region)).dispatched(p.now, attempt)
	r.hold = w.hold
	d.reserved(attempt, r)
	d.admitTo(p.cfg, w, dep, r.sendAt)
	return true
}

// quota is team's quota in the pool (the default one for a team the
// configuration lost since the call was queued).
func (p *poolPass) quota(team string) *config.Quota {
	if t, ok := p.cfg.Teams[team]; ok {
		if q, ok := t.Quota(p.pool.Name()); ok {
			return q
		}
	}
	return &config.Quota{Weight: 1}
}
