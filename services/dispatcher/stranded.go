package dispatcher

import (
	"context"
	"encoding/json"
	"errors"
	"sort"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/sluicehq/sluice/messages"
	"github.com/sluicehq/sluice/services/attempts"
	"github.com/sluicehq/sluice/services/results"
	"github.com/sluicehq/sluice/services/tracing"
)

// Work admitted to a region waits in SLUICE_EXEC for one of the region's
// executors. If the region has none taking work (they all died, or it
// left the configuration), the work would wait there for ever, and an
// executor that came back would find it late. So one dispatcher at a time
// (the live one with the smallest id) sweeps SLUICE_EXEC every
// Config.SweepInterval, and as soon as a region turns stalled: in each
// region whose executors are not taking work,
//
//   - work past its send-by time (plus sweepSlack) that no executor
//     claimed goes back to admission, as the same attempt admitted once
//     more, and is deleted: its call may go to another region, or waits
//     at a dispatcher for this one (see regions.go). An executor that
//     finds it meanwhile hands it back the same way, under the same
//     Nats-Msg-Id, so it is admitted once.
//   - work an executor claimed (it died while sending it) waits for an
//     executor to take it again, which continues the call with its next
//     attempt; if none does by the call's deadline plus
//     Config.StrandedGrace, the call gets its terminal result,
//     deadline_exceeded (unless one is stored already), and the work is
//     deleted. An attempt in progress ends at the call's deadline, so
//     past the grace no executor is still sending it.
//
// Should two answers race anyway, SLUICE_RESULTS keeps the first and
// refuses the second.

// sweepSlack is how long past its send-by time work must be before the
// sweep hands it back: more than clocks disagree by.
const sweepSlack = time.Second

// maxSweptPerRegion bounds one sweep's reads in one region.
const maxSweptPerRegion = 10_000

// sweepLoop sweeps stranded work until ctx ends.
func (d *Dispatcher) sweepLoop(ctx context.Context, exec jetstream.Stream) {
	t := time.NewTicker(d.cfg.SweepInterval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		case <-d.sweepNow:
		}
		if !d.sweeper() {
			continue
		}
		n, err := d.sweepStranded(ctx, exec)
		if err != nil && ctx.Err() == nil {
			d.log.Warn("sweep stranded work", "err", err, "swept", n)
		} else if n > 0 {
			d.log.Warn("swept work no executor took in time: handed back to admission, or answered past its deadline", "work", n)
		}
	}
}

// sweepSoon asks the sweep loop for a sweep now.
func (d *Dispatcher) sweepSoon() {
	select {
	case d.sweepNow <- struct{}{}:
	default:
	}
}

// sweeper reports whether this dispatcher is the one that sweeps: the
// live one with the smallest id.
func (d *Dispatcher) sweeper() bool {
	now := d.cfg.Clock()
	d.peers.mu.Lock()
	defer d.peers.mu.Unlock()
	for id, p := range d.peers.state {
		if now.Sub(p.heard) <= stateExpiry && id < d.cfg.ID {
			return false
		}
	}
	return true
}

// sweepStranded hands back or answers, and deletes, the stranded work in
// exec, and returns how much it swept.
func (d *Dispatcher) sweepStranded(ctx context.Context, exec jetstream.Stream) (int, error) {
	info, err := exec.Info(ctx, jetstream.WithSubjectFilter(messages.ExecSubjects))
	if err != nil {
		return 0, err
	}
	subjects := make([]string, 0, len(info.State.Subjects))
	for s := range info.State.Subjects {
		subjects = append(subjects, s)
	}
	sort.Strings(subjects)
	answered := 0
	var errs []error
	for _, subject := range subjects {
		region := strings.TrimPrefix(subject, messages.ExecSubject(""))
		pulling, _, err := d.executorsOf(ctx, exec, region)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		if pulling {
			continue
		}
		n, err := d.sweepRegion(ctx, exec, subject, info.State.FirstSeq)
		answered += n
		if err != nil {
			errs = append(errs, err)
		}
	}
	return answered, errors.Join(errs...)
}

// sweepRegion walks the work on subject from sequence first.
func (d *Dispatcher) sweepRegion(ctx context.Context, exec jetstream.Stream, subject string, first uint64) (int, error) {
	swept := 0
	seq := max(first, 1)
	for range maxSweptPerRegion {
		m, err := exec.GetMsg(ctx, seq, jetstream.WithGetMsgSubject(subject))
		if errors.Is(err, jetstream.ErrMsgNotFound) {
			return swept, nil
		}
		if err != nil {
			return swept, err
		}
		seq = m.Sequence + 1
		var w messages.Work
		if err := json.Unmarshal(m.Data, &w); err != nil {
			// Dispatchers publish only valid work; leave what is not for
			// the executors, which dead-letter it.
			continue
		}
		now := d.cfg.Clock()
		if !w.SendBy.IsZero() && now.Sub(w.SendBy) < sweepSlack {
			continue
		}
		c, err := d.claims.Lookup(ctx, w.Team, w.Call.ID, w.Attempt, w.Admission)
		switch {
		case errors.Is(err, attempts.ErrNotClaimed):
			// The next admission continues the work's trace.
			handed, err := d.handBackStranded(tracing.Extract(ctx, m.Header), &w)
			if err != nil {
				return swept, err
			}
			if handed {
				d.metrics.LateWork.WithLabelValues(w.Region, "swept").Inc()
			}
		case err != nil:
			return swept, err
		case c.HandedBack:
			// Handed back already, perhaps without its next admission
			// published (the one who did died): publish it, again.
			if err := d.publishNextAdmission(tracing.Extract(ctx, m.Header), &w); err != nil {
				return swept, err
			}
		case now.Sub(w.Deadline) < d.cfg.StrandedGrace:
			continue
		default:
			if _, err := results.FetchFrom(ctx, d.stream, w.Team, w.Call.ID); errors.Is(err, results.ErrNotFound) {
				res := strandedResult(&w)
				rctx, span := d.traceResult(ctx, m.Header, &w.Ticket, res.Error)
				err := d.results.Publish(rctx, res)
				span.End()
				if err != nil {
					return swept, err
				}
				d.metrics.Stranded.WithLabelValues(w.Region).Inc()
			} else if err != nil {
				return swept, err
			}
		}
		swept++
		if err := exec.DeleteMsg(ctx, m.Sequence); err != nil && !errors.Is(err, jetstream.ErrMsgNotFound) {
			return swept, err
		}
	}
	return swept, nil
}

// handBackStranded puts unsent work back through admission, as its
// executor would have had it taken the work late: it claims the work as
// handed back, so that no executor sends it, then publishes its next
// admission. It reports false when an executor claimed it first.
func (d *Dispatcher) handBackStranded(ctx context.Context, w *messages.Work) (bool, error) {
	err := d.claims.Claim(ctx, w.Team, w.Call.ID, w.Attempt, w.Admission,
		attempts.Claim{Deployment: w.Deployment, Region: w.Region, At: d.cfg.Clock(), HandedBack: true})
	if errors.Is(err, attempts.ErrClaimed) {
		return false, nil
	}
	if err != nil {
		return false, err
	}
	return true, d.publishNextAdmission(ctx, w)
}

// publishNextAdmission publishes work's attempt for admission once more,
// under the Nats-Msg-Id its executor would give it.
func (d *Dispatcher) publishNextAdmission(ctx context.Context, w *messages.Work) error {
	r := messages.Retry{Ticket: w.Ticket, NotBefore: d.cfg.Clock(), Late: true}
	r.Admission = w.Admission + 1
	r.LastDeployment = w.Deployment
	data, err := json.Marshal(r)
	if err != nil {
		return err
	}
	msg := &nats.Msg{Subject: messages.RetrySubject(w.Team, w.Tier), Data: data, Header: nats.Header{}}
	msg.Header.Set(messages.HeaderMsgID, messages.RetryMsgID(w.Call.ID, r.Attempt, r.Admission))
	tracing.Inject(ctx, msg.Header)
	_, err = d.js.PublishMsg(ctx, msg)
	return err
}

// strandedResult is the terminal result of work no executor took.
func strandedResult(w *messages.Work) *messages.Result {
	t := w.Ticket
	return &messages.Result{
		ID:         t.Call.ID,
		Team:       t.Team,
		Tier:       t.Tier,
		Model:      t.Call.Model,
		Deployment: w.Deployment,
		Region:     w.Region,
		Attempts:   t.Attempt - 1,
		Metadata:   t.Call.Metadata,
		Error: messages.Errorf(messages.CodeDeadlineExceeded,
			"the deadline passed while the call waited for an executor of region %s; none took it", w.Region),
		Timings: messages.Timings{AcceptedAt: t.AcceptedAt, QueuedMS: t.QueuedMS},
	}
}
