package executor

import (
	"context"
	"errors"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/sluicehq/sluice/messages"
	"github.com/sluicehq/sluice/services/attempts"
	"github.com/sluicehq/sluice/services/results"
)

// Admission is a promise for a moment: a dispatcher gave the work a send
// time on its deployment's schedule (Work.SendAt), and the deployment's
// limits hold only if the request goes then. So the executor sends no
// earlier than SendAt, and no later than SendBy; work it takes later
// (its region was down, it was busy, NATS was restarting) goes back
// through admission, not out to the provider.
//
// And an attempt runs once: right before the request goes, the executor
// claims the attempt in SLUICE_ATTEMPTS (see package attempts), which the
// server refuses to do twice. Work whose attempt is claimed already is a
// duplicate (after a NATS restart, say), and is dropped; work delivered
// again after an executor died is, if that executor claimed it, an
// attempt that may have reached the provider: it counts, and the call goes
// on with its next attempt.

// claimLead is how long before its send time an attempt is claimed, so
// that the claim's round trip does not make the request late. An executor
// that dies in between counts an attempt that was not sent: the only way
// attempts can exceed the provider requests made.
const claimLead = 2 * time.Millisecond

// sending says how the wait for an attempt's send time ended.
type sending int

const (
	sendNow   sending = iota // claimed, on time: send it
	sendLate                 // not sent: too late, or shutting down; hand it back
	duplicate                // another delivery of this attempt claimed it
	unclaimed                // the claim could not be made: NATS trouble
)

// awaitSend waits for w's send time, claims the attempt, and says whether
// to send it now. ctx ends the wait (shutdown): the work is then handed
// back. Work handed back before it was claimed is claimed as handed back,
// so that no other delivery of it (a duplicate after a NATS restart) is
// sent besides its next admission.
func (e *Executor) awaitSend(ctx context.Context, w *messages.Work) sending {
	claim := func(ctx context.Context, handedBack bool) sending {
		err := e.claims.Claim(ctx, w.Team, w.Call.ID, w.Attempt, w.Admission,
			attempts.Claim{Deployment: w.Deployment, Region: e.cfg.Region, At: e.cfg.Clock(), HandedBack: handedBack})
		switch {
		case errors.Is(err, attempts.ErrClaimed):
			return duplicate
		case err != nil:
			e.log.Warn("claim the attempt; the work will be delivered again", "call", w.Call.ID, "attempt", w.Attempt, "err", err)
			return unclaimed
		case handedBack:
			return sendLate
		}
		return sendNow
	}
	if e.tooLate(w) || !e.sleepUntil(ctx, w.SendAt.Add(-claimLead)) {
		// Shutting down, the claim must still be made: a moment more.
		claimCtx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
		defer cancel()
		return claim(claimCtx, true)
	}
	if got := claim(ctx, false); got != sendNow {
		return got
	}
	if !e.sleepUntil(ctx, w.SendAt) || e.tooLate(w) {
		// Claimed, not sent: handed back alive, so nobody takes the claim
		// for a request that may have gone.
		return sendLate
	}
	e.sends.sent(w.Deployment, e.cfg.Clock())
	return sendNow
}

// tooLate reports whether w can no longer be sent as admission promised.
// Work from before send times (SendBy zero) is never late.
func (e *Executor) tooLate(w *messages.Work) bool {
	return !w.SendBy.IsZero() && e.cfg.Clock().After(w.SendBy)
}

// sleepUntil waits until t, and reports false if ctx ended first.
func (e *Executor) sleepUntil(ctx context.Context, t time.Time) bool {
	d := t.Sub(e.cfg.Clock())
	if d <= 0 {
		return ctx.Err() == nil
	}
	timer := time.NewTimer(d)
	defer timer.Stop()
	select {
	case <-timer.C:
		return true
	case <-ctx.Done():
		return false
	}
}

// handBack returns work that was not sent to admission, as the same
// attempt admitted once more.
func (e *Executor) handBack(w *messages.Work, why string) outcome {
	e.metrics.LateWork.WithLabelValues(e.cfg.Region, why).Inc()
	r := &messages.Retry{Ticket: w.Ticket, NotBefore: e.cfg.Clock(), Late: true}
	r.Admission = w.Admission + 1
	r.LastDeployment = w.Deployment
	return outcome{retry: r, class: messages.OutcomeNotSent, usedTokens: 0}
}

// lostAttempt is the outcome of work delivered again after the executor
// that claimed it died: the attempt may have reached the provider, so it
// counts, and the call goes on with its next attempt, or ends when its
// attempts are spent.
func (e *Executor) lostAttempt(w *messages.Work) outcome {
	res := e.newResult(w)
	lost := messages.Errorf(messages.CodeInternal,
		"the executor sending attempt %d stopped before it answered; the provider may have received it", w.Attempt)
	return e.retryOrGiveUp(w, res, messages.OutcomeTransport, 0, lost)
}

// redelivered decides what to do with work delivered again: nothing more
// when its call has a result (answered), its next admission when it was
// handed back already, the next attempt when it was claimed to be sent
// (it may have been), or proceed as usual. ok is false when it could not tell, and the work
// should be delivered again later.
func (e *Executor) redelivered(ctx context.Context, msg jetstream.Msg, w *messages.Work) (o *outcome, answered, ok bool) {
	meta, err := msg.Metadata()
	if err != nil || meta.NumDelivered <= 1 {
		return nil, false, true
	}
	if _, err := results.FetchFrom(ctx, e.stream, w.Team, w.Call.ID); err == nil {
		return nil, true, true
	}
	c, err := e.claims.Lookup(ctx, w.Team, w.Call.ID, w.Attempt, w.Admission)
	switch {
	case err == nil && c.HandedBack:
		// Handed back already, perhaps by this work's last delivery, which
		// may have died before its next admission was published: publish
		// it (again: JetStream keeps one).
		back := e.handBack(w, "late")
		return &back, false, true
	case err == nil:
		lost := e.lostAttempt(w)
		return &lost, false, true
	case errors.Is(err, attempts.ErrNotClaimed):
		return nil, false, true
	default:
		e.log.Warn("look up the attempt's claim; the work will be delivered again", "call", w.Call.ID, "err", err)
		return nil, false, false
	}
}
