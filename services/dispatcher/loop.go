package dispatcher

// The scheduler loop, which runs admission passes (pass.go; a call's
// deployment is chosen and reserved in route.go), and what becomes of a
// call once a pass has decided: its work published (dispatch), or its
// answer (finishAsync).

import (
	"context"
	"encoding/json"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/sluicehq/sluice/messages"
	"github.com/sluicehq/sluice/services/config"
	"github.com/sluicehq/sluice/services/tracing"
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

// schedule owns the queue (see inbox.go): until ctx ends, it applies what
// was posted and runs an admission pass whenever a call arrives, capacity
// returns, or the earliest moment something could be admitted or expire
// comes; and it keeps waiting calls alive and the deployment gauges set.
func (d *Dispatcher) schedule(ctx context.Context) {
	timer := time.NewTimer(maxPassWait)
	defer timer.Stop()
	keepAlive := time.NewTicker(d.cfg.AckWait / 3)
	defer keepAlive.Stop()
	gauges := time.NewTicker(time.Second)
	defer gauges.Stop()
	for {
		d.applyEvents()
		start, before := time.Now(), d.admittedTotal
		timer.Reset(d.pass(ctx))
		if n := d.admittedTotal - before; n > 0 {
			d.metrics.ScheduleSeconds.Add(time.Since(start).Seconds())
			d.metrics.Scheduled.Add(float64(n))
		}
		select {
		case <-ctx.Done():
			return
		case <-d.wake:
		case <-timer.C:
		case <-keepAlive.C:
			d.keepAlive()
		case <-gauges.C:
			d.reportDeployments()
		}
	}
}

// dispatch publishes admitted work to the deployment's region. The call is
// acknowledged once JetStream has stored the work; if it cannot be stored,
// the reservation is refunded and the call redelivered.
func (d *Dispatcher) dispatch(cfg *config.Config, w *waiting, dep *config.Deployment, sendAt time.Time) {
	now := d.cfg.Clock()
	queued := now.Sub(w.since)
	t := w.ticket
	attempt := attemptKey(t.Call.ID, t.Attempt, t.Admission)
	t.QueuedMS += ms(queued)
	work := messages.Work{
		Ticket:         t,
		Deployment:     dep.ID,
		Region:         dep.Region,
		ReservedTokens: int64(w.need.Tokens),
		DispatchedAt:   now,
		Dispatcher:     d.cfg.ID,
		SendAt:         sendAt,
		// Executors send no later than half the jitter after the send
		// time; the other half is the path to the provider.
		SendBy: sendAt.Add(cfg.Admission.Jitter / 2),
	}
	// Labels take only configured names (see config.Unknown): the team
	// may have left the configuration while its call waited.
	d.metrics.QueueWait.WithLabelValues(dep.Pool(), config.TierLabel(t.Tier)).Observe(queued.Seconds())
	d.metrics.Admissions.WithLabelValues(dep.Pool(), dep.ID).Inc()
	d.metrics.TokensReserved.WithLabelValues(cfg.TeamLabel(t.Team), dep.Pool(), dep.ID).Add(w.need.Tokens)

	ctx, admitted := d.traceAdmission(w, dep, sendAt, now)
	data, err := json.Marshal(work)
	if err != nil {
		admitted(err)
		d.unreserve(attempt)
		d.finishAsync(w, messages.Errorf(messages.CodeInternal, "encode work: %v", err))
		return
	}
	msg := &nats.Msg{Subject: messages.ExecSubject(dep.Region), Data: data, Header: nats.Header{}}
	msg.Header.Set(messages.HeaderMsgID, attempt)
	tracing.Inject(ctx, msg.Header) // the executor's attempt continues the admission's trace
	future, err := d.js.PublishMsgAsync(msg)
	if err != nil {
		admitted(err)
		d.log.Warn("publish work; the call will be redelivered", "call", t.Call.ID, "err", err)
		d.unreserve(attempt)
		_ = w.msg.Nak()
		return
	}
	d.inflight.Add(1)
	go func() {
		defer d.inflight.Done()
		select {
		case ack := <-future.Ok():
			admitted(nil)
			if ack.Duplicate {
				// A dispatcher that died after publishing this attempt got
				// it out already: it runs once, so this reservation is spare.
				d.unreserve(attempt)
			}
			_ = w.msg.Ack()
		case err := <-future.Err():
			admitted(err)
			d.log.Warn("publish work; the call will be redelivered", "call", t.Call.ID, "err", err)
			d.unreserve(attempt)
			_ = w.msg.Nak()
		}
	}()
}

// finishAsync answers a waiting call with an error result, off the
// scheduler's path.
func (d *Dispatcher) finishAsync(w *waiting, e *messages.Error) {
	t := w.ticket
	t.QueuedMS += ms(d.cfg.Clock().Sub(w.since))
	d.releaseBudget(w.hold)
	d.inflight.Add(1)
	go func() {
		defer d.inflight.Done()
		d.reject(w.msg, &t, e)
	}()
}

// dequeue removes a call from the queue. Only the scheduler calls it.
func (d *Dispatcher) dequeue(w *waiting) {
	d.queue.remove(w)
	d.metrics.QueueDepth.WithLabelValues(w.pool(), string(w.ticket.Tier)).Dec()
}

// keepAlive tells JetStream that calls waiting longer than a third of
// AckWait are still in hand, so they are not redelivered elsewhere; and
// forgets reservations of attempts that never reported. Only the
// scheduler calls it. The telling is handed to another goroutine: with a
// deep queue it is thousands of messages, and admission must not wait for
// them.
func (d *Dispatcher) keepAlive() {
	now := d.cfg.Clock()
	d.forgetOld(now, d.cfg.Shared.Load().Admission.InFlightLease)
	var due []*waiting
	for _, w := range d.queue.all() {
		if now.Sub(w.touched) >= d.cfg.AckWait/3 {
			w.touched = now
			due = append(due, w)
		}
	}
	if len(due) == 0 {
		return
	}
	d.inflight.Add(1)
	go func() {
		defer d.inflight.Done()
		for _, w := range due {
			_ = w.msg.InProgress()
		}
	}()
}

func ms(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }
