package dispatcher

import (
	"cmp"
	"math"
	"slices"
	"sort"
	"time"

	"github.com/sluicehq/sluice/messages"
	"github.com/sluicehq/sluice/services/config"
)

// Fair queuing runs in each dispatcher over the calls it holds, but
// JetStream deals calls to whichever dispatcher pulls next, not by team or
// tier: two clients publishing in step are dealt out alternately, so one
// dispatcher may hold mostly one team's calls and another mostly the
// other's. Local fair queuing alone would then share a pool by where calls
// happen to be held, not by weight or tier.
//
// So dispatchers also tell each other, in their state announcements, what
// they admitted lately (a decaying rate per pool, tier and team), which of
// their waiting teams were refused for lack of capacity ("starved"), and on
// which deployments ("hungry"). A dispatcher defers a call, leaving the
// capacity to a peer, when that peer is hungry on every deployment the
// call could use now and is starved there for
//
//   - a team of the same tier that would still have been served less
//     than the call's team, relative to their weights, were its next call
//     admitted instead (by more than fairSlack): comparing the rates as
//     they would be after the next call, like finish tags in weighted fair
//     queuing, keeps the saw-tooth of a slow team's rate from passing
//     for a deficit, or
//   - any team of a higher tier, except where the call's tier claims its
//     minimum share.
//
// The team that, counting its next call, is served least for its weight
// is never deferred for its own tier, so dispatchers cannot defer each
// other's calls in a circle; and a call is deferred only for a peer that
// is short of capacity on the same deployments right now, so what is left
// is taken, not lost. What the deferring dispatcher had leased on those
// deployments goes back at once rather than lapse. A deferral lasts one
// pass; a peer's claim lapses with its next announcement, and a newly
// starved team is announced within urgentGap rather than at the next tick.
const (
	// servedWindow is the time constant of the served rates.
	servedWindow = 2 * time.Second
	// fairSlack is how far behind, relative to its weight, a team must be
	// for another to yield to it: less would make dispatchers defer on
	// noise.
	fairSlack = 0.02
	// deferWait is how soon a dispatcher that deferred calls looks again.
	deferWait = 50 * time.Millisecond
	// urgentGap is the least time between announcements made early, when
	// a team starves that was not starved in the last one: a critical call
	// should not wait half a second for its peers to hear of it.
	urgentGap = 20 * time.Millisecond
)

// queueKey names one team's calls of one pool and tier.
type queueKey struct {
	pool string
	tier messages.Tier
	team string
}

// decayingRate is a rate of events per second, averaged with weights that
// decay exponentially over servedWindow.
type decayingRate struct {
	v  float64
	at time.Time
}

func (r *decayingRate) add(now time.Time) {
	r.v = r.value(now) + 1/servedWindow.Seconds()
	r.at = now
}

func (r *decayingRate) value(now time.Time) float64 {
	if r.at.IsZero() {
		return 0
	}
	return r.v * math.Exp(-max(0, now.Sub(r.at).Seconds())/servedWindow.Seconds())
}

// demand is what this dispatcher tells its peers about its share of the
// pools; guarded by Dispatcher.mu.
type demand struct {
	served map[queueKey]*decayingRate
	// starved and hungry accumulate between announcements; claimed is
	// what the last announcement said was starved.
	starved, claimed map[queueKey]bool
	hungry           map[string]bool
	// urgent asks for an announcement now.
	urgent chan struct{}
}

func newDemand() demand {
	return demand{
		served:  map[queueKey]*decayingRate{},
		starved: map[queueKey]bool{}, claimed: map[queueKey]bool{},
		hungry: map[string]bool{},
		urgent: make(chan struct{}, 1),
	}
}

// starve notes that k's calls were refused for lack of capacity on the
// deployments of hungry, and asks for an announcement now if the last one
// did not say so.
func (m *demand) starve(k queueKey, hungry []*config.Deployment) {
	for _, dep := range hungry {
		m.hungry[dep.ID] = true
	}
	m.starved[k] = true
	if !m.claimed[k] {
		select {
		case m.urgent <- struct{}{}:
		default:
		}
	}
}

func (m *demand) admitted(k queueKey, now time.Time) {
	r, ok := m.served[k]
	if !ok {
		r = &decayingRate{}
		m.served[k] = r
	}
	r.add(now)
}

// announce moves what accumulated into s and starts afresh; rates that
// have decayed to nothing are forgotten.
func (m *demand) announce(s *messages.DispatcherState, now time.Time) {
	// Only teams still waiting are announced starved, and only what was
	// announced is claimed: a team that starved, got through, and starves
	// again is news.
	clear(m.claimed)
	for i := range s.Queues {
		q := &s.Queues[i]
		k := queueKey{q.Pool, q.Tier, q.Team}
		q.Starved = m.starved[k]
		m.claimed[k] = q.Starved
	}
	for k, r := range m.served {
		v := r.value(now)
		if v < 0.01 {
			delete(m.served, k)
			continue
		}
		s.Served = append(s.Served, messages.ServedRate{Pool: k.pool, Tier: k.tier, Team: k.team, PerSecond: v})
	}
	slices.SortFunc(s.Served, func(a, b messages.ServedRate) int {
		return cmp.Or(cmp.Compare(a.Pool, b.Pool), cmp.Compare(a.Tier, b.Tier), cmp.Compare(a.Team, b.Team))
	})
	for id := range m.hungry {
		s.Hungry = append(s.Hungry, id)
	}
	sort.Strings(s.Hungry)
	clear(m.starved)
	clear(m.hungry)
}

// claim is a peer's standing demand on one pool: the deployments it is
// short of, and its teams starved there.
type claim struct {
	hungry  map[string]bool
	starved []queueKey
}

// claimsOn returns the claims of the live peers on pool, and the rates at
// which the peers served each tier and team of it.
func (d *Dispatcher) claimsOn(pool string) ([]claim, map[tierTeam]float64) {
	now := d.cfg.Clock()
	d.peers.mu.Lock()
	defer d.peers.mu.Unlock()
	var claims []claim
	var served map[tierTeam]float64
	for _, p := range d.peers.state {
		if now.Sub(p.heard) > stateExpiry {
			continue
		}
		var c claim
		for _, k := range p.starved {
			if k.pool == pool {
				c.starved = append(c.starved, k)
			}
		}
		if len(c.starved) > 0 && len(p.hungry) > 0 {
			c.hungry = p.hungry
			claims = append(claims, c)
		}
		for k, v := range p.served {
			if k.pool == pool {
				if served == nil {
					served = map[tierTeam]float64{}
				}
				served[tierTeam{k.tier, k.team}] += v
			}
		}
	}
	return claims, served
}

// servedAfter is how fast team's calls of tier in this pass's pool were
// admitted lately by every dispatcher, counting one more call, per unit
// of the team's weight.
func (p *poolPass) servedAfter(tier messages.Tier, team string) float64 {
	v := p.peerServed[tierTeam{tier, team}] + 1/servedWindow.Seconds()
	if r, ok := p.d.demand.served[queueKey{p.pool.Name(), tier, team}]; ok {
		v += r.value(p.now)
	}
	return v / p.weight(team)
}

// deferred reports whether w should leave the capacity it could use to a
// peer that needs it more (see the top of this file). yieldToHigher says
// whether higher tiers' claims count.
func (p *poolPass) deferred(w *waiting, yieldToHigher bool) bool {
	if len(p.claims) == 0 {
		return false
	}
	t := w.ticket
	var open []string
	for _, dep := range candidates(p.pool, t.Call) {
		if !p.blocked[dep.ID] {
			open = append(open, dep.ID)
		}
	}
	if len(open) == 0 {
		return false
	}
	if !p.yields(t, open, yieldToHigher) {
		return false
	}
	for _, id := range open {
		p.deferredOn[id] = true
	}
	return true
}

// yields reports whether a call of t that could use the deployments open
// yields to a peer's claim.
func (p *poolPass) yields(t messages.Ticket, open []string, yieldToHigher bool) bool {
	mine := -1.0
	for _, c := range p.claims {
		if !hungryOnAll(c.hungry, open) {
			continue
		}
		for _, k := range c.starved {
			if k.tier.Rank() < t.Tier.Rank() || (k.team != t.Team && p.behindShare(k)) {
				if yieldToHigher {
					return true
				}
				continue
			}
			if k.tier != t.Tier || k.team == t.Team {
				continue
			}
			if mine < 0 {
				mine = p.servedAfter(t.Tier, t.Team)
			}
			if p.servedAfter(k.tier, k.team) < mine*(1-fairSlack) {
				return true
			}
		}
	}
	return false
}

// behindShare reports whether a peer's starved queue k is behind its
// team's guarantee or its tier's minimum share in this pool: here, such
// calls go before every other (see pick), so a peer's go before this
// dispatcher's ordinary calls too. The buckets are shared, so this
// dispatcher reads them itself (from the watched cache, no KV operation).
func (p *poolPass) behindShare(k queueKey) bool {
	if t, ok := p.cfg.Teams[k.team]; ok {
		if q, ok := t.Quota(p.pool.Name()); ok {
			if l, ok := p.shares.guaranteeLimit(q); ok && p.d.credit(p.ctx, guaranteeKey(k.team, p.pool.Name()), l, oneCall) {
				return true
			}
		}
	}
	l, ok := p.shares.minShareLimit(k.tier)
	return ok && p.d.credit(p.ctx, minShareKey(p.pool.Name(), k.tier), l, oneCall)
}

// releaseDeferred hands back at once what this dispatcher leased on the
// deployments it left to a peer: kept, it would lapse unspent while the
// peer waits for it.
func (p *poolPass) releaseDeferred() {
	for id := range p.deferredOn {
		if err := p.d.pacer.Release(p.ctx, id); err != nil {
			p.d.log.Warn("return the schedule held", "deployment", id, "err", err)
		}
		if err := p.d.leases.Release(p.ctx, nonCriticalKey(id)); err != nil {
			p.d.log.Warn("return leased capacity", "key", nonCriticalKey(id), "err", err)
		}
	}
}

func hungryOnAll(hungry map[string]bool, deployments []string) bool {
	for _, id := range deployments {
		if !hungry[id] {
			return false
		}
	}
	return true
}
