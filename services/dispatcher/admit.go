package dispatcher

import (
	"context"
	"encoding/json"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/sluicehq/sluice/messages"
	"github.com/sluicehq/sluice/services/config"
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
	// contendedJitter spreads the returns of dispatchers waiting for the
	// same bucket to refill.
	contendedJitter = 20 * time.Millisecond
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
// restricted to other regions still flow. Deployments that are disabled,
// cooling down or behind an open circuit are blocked for everyone; a retry
// over its pool's budget waits without blocking anything. pass returns
// how long to sleep.
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
		for _, dep := range pool.Deployments {
			if usable, until := d.usable(cfg, dep, now); !usable {
				blocked[dep.ID] = true
				if !until.IsZero() {
					wait = min(wait, until.Sub(now))
				}
			}
		}
		budget := d.budget(name)
		_, poolOut := d.outOfRotation(pool.Deployments, now)
		d.queue.each(name, func(w *waiting) bool {
			if len(blocked) >= len(pool.Deployments) && !poolOut {
				return false
			}
			retry := w.ticket.Attempt > 1
			if retry && !budget.allows(now, cfg.Retry.Budget, cfg.Retry.BudgetMinPerSecond) {
				if !w.overBudget {
					w.overBudget = true
					d.metrics.RetryBudgetWaits.WithLabelValues(name).Inc()
				}
				wait = min(wait, budgetWindow/budgetBuckets)
				return true
			}
			cands := candidates(pool, w.ticket.Call)
			if reason, out := d.outOfRotation(cands, now); out {
				// Only an operator can bring these back: waiting helps no one.
				d.dequeue(w)
				d.finishAsync(w, &messages.Error{Code: messages.CodeProviderError,
					Message: "every deployment that could serve this call is out of rotation: " + reason})
				return true
			}
			var open []*config.Deployment
			for _, dep := range cands {
				if !blocked[dep.ID] {
					open = append(open, dep)
				}
			}
			if len(open) == 0 {
				return true
			}
			dep, retryAfter := d.admit(ctx, cfg, w, open, now)
			if dep == nil {
				for _, c := range open {
					blocked[c.ID] = true
				}
				wait = min(wait, retryAfter)
				return true
			}
			d.dequeue(w)
			budget.note(now, retry)
			key := attemptKey(w.ticket.Call.ID, w.ticket.Attempt)
			d.breakerOf(dep.ID).dispatched(now, key)
			d.breakerOf(regionKey(dep.Region)).dispatched(now, key)
			d.dispatch(cfg, w, dep)
			return true
		})
	}
	return max(wait, minPassWait)
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
		d.unreserve(dep.ID, w)
		d.finishAsync(w, messages.Errorf(messages.CodeInternal, "encode work: %v", err))
		return
	}
	msg := &nats.Msg{Subject: messages.ExecSubject(dep.Region), Data: data, Header: nats.Header{}}
	msg.Header.Set(messages.HeaderMsgID, messages.ExecMsgID(t.Call.ID, t.Attempt))
	future, err := d.js.PublishMsgAsync(msg)
	if err != nil {
		d.log.Warn("publish work; the call will be redelivered", "call", t.Call.ID, "err", err)
		d.unreserve(dep.ID, w)
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
				d.unreserve(dep.ID, w)
			}
			_ = w.msg.Ack()
		case err := <-future.Err():
			d.log.Warn("publish work; the call will be redelivered", "call", t.Call.ID, "err", err)
			d.unreserve(dep.ID, w)
			_ = w.msg.Nak()
		}
	}()
}

// unreserve gives back what admitting w to a deployment took: its limiter
// reservation and its in-flight slot.
func (d *Dispatcher) unreserve(deployment string, w *waiting) {
	d.refund(deployment, w.need)
	d.slots.Release(deployment, attemptKey(w.ticket.Call.ID, w.ticket.Attempt))
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

func ms(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }
