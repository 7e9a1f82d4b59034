package dispatcher

import (
	"context"
	"encoding/json"
	"errors"
	"math/rand/v2"
	"sort"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/sluicehq/sluice/messages"
	"github.com/sluicehq/sluice/services/config"
	"github.com/sluicehq/sluice/services/limiter"
)

// Bounds on how long the scheduler sleeps between passes when nothing
// wakes it: long enough not to spin, short enough to notice lease expiry
// and capacity other dispatchers returned.
const (
	minPassWait = time.Millisecond
	maxPassWait = 250 * time.Millisecond
	// errorWait is how long a call waits after the shared state failed to
	// answer (NATS down, say) before admission is tried again.
	errorWait = 50 * time.Millisecond
)

// schedule runs admission passes until ctx ends: whenever a call arrives,
// capacity returns, or the earliest moment something could be admitted or
// expire comes.
func (d *Dispatcher) schedule(ctx context.Context) {
	timer := time.NewTimer(maxPassWait)
	defer timer.Stop()
	keepAlive := time.NewTicker(d.cfg.AckWait / 3)
	defer keepAlive.Stop()
	for {
		timer.Reset(d.pass(ctx))
		select {
		case <-ctx.Done():
			return
		case <-d.wake:
		case <-timer.C:
		case <-keepAlive.C:
			d.keepAlive()
		}
	}
}

// pass expires calls past their deadline, then admits, pool by pool and in
// priority order, every call that fits now. A call that does not fit
// blocks the deployments it could use for the calls behind it, so a lower
// tier never overtakes a higher one on the same deployments, while calls
// restricted to other regions still flow. pass returns how long to sleep.
func (d *Dispatcher) pass(ctx context.Context) time.Duration {
	d.mu.Lock()
	defer d.mu.Unlock()
	now := d.cfg.Clock()
	cfg := d.cfg.Shared.Load()
	for w := d.queue.earliestDeadline(); w != nil && !now.Before(w.ticket.Deadline); w = d.queue.earliestDeadline() {
		d.dequeue(w)
		d.finishAsync(w, messages.Errorf(messages.CodeDeadlineExceeded, "the deadline passed after waiting %s for capacity", now.Sub(w.since).Round(time.Millisecond)))
	}

	wait := maxPassWait
	if w := d.queue.earliestDeadline(); w != nil {
		wait = min(wait, w.ticket.Deadline.Sub(now))
	}
	for _, name := range d.queue.poolNames() {
		pool, ok := cfg.Pool(name)
		if !ok {
			d.queue.each(name, func(w *waiting) bool {
				d.dequeue(w)
				d.finishAsync(w, messages.Errorf(messages.CodeUnknownModel, "pool %q was removed from the configuration", name))
				return true
			})
			continue
		}
		blocked := map[string]bool{}
		d.queue.each(name, func(w *waiting) bool {
			var open []*config.Deployment
			for _, dep := range candidates(pool, w.ticket.Call.Regions) {
				if !blocked[dep.ID] {
					open = append(open, dep)
				}
			}
			if len(open) == 0 {
				return len(blocked) < len(pool.Deployments)
			}
			dep, retryAfter := d.admit(ctx, cfg, w, open)
			if dep == nil {
				for _, c := range open {
					blocked[c.ID] = true
				}
				wait = min(wait, retryAfter)
				return len(blocked) < len(pool.Deployments)
			}
			d.dequeue(w)
			d.dispatch(cfg, w, dep)
			return true
		})
	}
	return max(wait, minPassWait)
}

// admit reserves w's need on the open deployment with the most headroom
// relative to its limits, trying the others in turn. Equal headroom is
// broken at random so that dispatchers do not herd onto one key, and the
// deployment that failed a retry's last attempt goes last. It returns the
// deployment, or nil and how long until one could fit.
func (d *Dispatcher) admit(ctx context.Context, cfg *config.Config, w *waiting, open []*config.Deployment) (*config.Deployment, time.Duration) {
	type option struct {
		dep   *config.Deployment
		limit limiter.Limit
		score float64
	}
	options := make([]option, 0, len(open))
	for _, dep := range open {
		lim := limitOf(dep, cfg.Admission.Burst)
		avail, err := d.shared.Available(ctx, dep.ID, lim)
		if err != nil {
			avail = limiter.Amount{}
		}
		held := d.leases.Held(dep.ID)
		score := min((avail.Requests+held.Requests)/lim.BurstRequests, (avail.Tokens+held.Tokens)/lim.BurstTokens)
		if dep.ID == w.ticket.LastDeployment {
			score -= 2
		}
		options = append(options, option{dep: dep, limit: lim, score: score + rand.Float64()*1e-6})
	}
	sort.Slice(options, func(i, j int) bool { return options[i].score > options[j].score })

	wait := maxPassWait
	for _, o := range options {
		err := d.leases.Take(ctx, o.dep.ID, o.limit, w.need)
		if err == nil {
			return o.dep, 0
		}
		var short *limiter.InsufficientError
		if errors.As(err, &short) {
			wait = min(wait, short.RetryAfter)
			continue
		}
		d.log.Warn("limiter", "deployment", o.dep.ID, "err", err)
		wait = min(wait, errorWait)
	}
	return nil, wait
}

// dispatch publishes admitted work to the deployment's region. The call is
// acknowledged once JetStream has stored the work; if it cannot be stored,
// the reservation is refunded and the call redelivered.
func (d *Dispatcher) dispatch(cfg *config.Config, w *waiting, dep *config.Deployment) {
	now := d.cfg.Clock()
	queued := now.Sub(w.since)
	t := w.ticket
	t.QueuedMS += ms(queued)
	work := messages.Work{
		Ticket:         t,
		Deployment:     dep.ID,
		Region:         dep.Region,
		ReservedTokens: int64(w.need.Tokens),
		DispatchedAt:   now,
		Dispatcher:     d.cfg.ID,
	}
	d.metrics.QueueWait.WithLabelValues(dep.Pool(), string(t.Tier)).Observe(queued.Seconds())
	d.metrics.Admissions.WithLabelValues(dep.Pool(), dep.ID).Inc()
	d.metrics.TokensReserved.WithLabelValues(t.Team, dep.Pool(), dep.ID).Add(w.need.Tokens)

	data, err := json.Marshal(work)
	if err != nil {
		d.refund(dep.ID, w.need)
		d.finishAsync(w, messages.Errorf(messages.CodeInternal, "encode work: %v", err))
		return
	}
	msg := &nats.Msg{Subject: messages.ExecSubject(dep.Region), Data: data, Header: nats.Header{}}
	msg.Header.Set(messages.HeaderMsgID, messages.ExecMsgID(t.Call.ID, t.Attempt))
	future, err := d.js.PublishMsgAsync(msg)
	if err != nil {
		d.log.Warn("publish work; the call will be redelivered", "call", t.Call.ID, "err", err)
		d.refund(dep.ID, w.need)
		_ = w.msg.Nak()
		return
	}
	d.inflight.Add(1)
	go func() {
		defer d.inflight.Done()
		select {
		case ack := <-future.Ok():
			if ack.Duplicate {
				// A dispatcher that died after publishing this attempt got
				// it out already: it runs once, so this reservation is spare.
				d.refund(dep.ID, w.need)
			}
			_ = w.msg.Ack()
		case err := <-future.Err():
			d.log.Warn("publish work; the call will be redelivered", "call", t.Call.ID, "err", err)
			d.refund(dep.ID, w.need)
			_ = w.msg.Nak()
		}
	}()
}

// finishAsync answers a waiting call with an error result, off the
// scheduler's path.
func (d *Dispatcher) finishAsync(w *waiting, e *messages.Error) {
	t := w.ticket
	t.QueuedMS += ms(d.cfg.Clock().Sub(w.since))
	d.inflight.Add(1)
	go func() {
		defer d.inflight.Done()
		d.reject(w.msg, &t, e)
	}()
}

// dequeue removes a call from the queue. The caller holds d.mu.
func (d *Dispatcher) dequeue(w *waiting) {
	d.queue.remove(w)
	d.metrics.QueueDepth.WithLabelValues(w.pool(), string(w.ticket.Tier)).Dec()
}

// keepAlive tells JetStream that calls waiting longer than a third of
// AckWait are still in hand, so they are not redelivered elsewhere.
func (d *Dispatcher) keepAlive() {
	d.mu.Lock()
	defer d.mu.Unlock()
	now := d.cfg.Clock()
	for _, w := range d.queue.all() {
		if now.Sub(w.touched) >= d.cfg.AckWait/3 {
			_ = w.msg.InProgress()
			w.touched = now
		}
	}
}

// candidates are the deployments of pool in regions (all when regions is
// empty).
func candidates(pool *config.Pool, regions []string) []*config.Deployment {
	if len(regions) == 0 {
		return pool.Deployments
	}
	var out []*config.Deployment
	for _, dep := range pool.Deployments {
		for _, r := range regions {
			if dep.Region == r {
				out = append(out, dep)
				break
			}
		}
	}
	return out
}

// limitOf is a deployment's limit in the shared limiter. The bucket holds
// Burst worth of the sustained rate, and never less than one request.
func limitOf(dep *config.Deployment, burst time.Duration) limiter.Limit {
	rpm, tpm := float64(dep.RPM), float64(dep.TPM)
	return limiter.Limit{
		RPM:           rpm,
		TPM:           tpm,
		BurstRequests: max(1, rpm/60*burst.Seconds()),
		BurstTokens:   max(1, tpm/60*burst.Seconds()),
	}
}

func ms(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }
