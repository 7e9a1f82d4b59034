package dispatcher

import (
	"context"
	"encoding/json"
	"errors"
	"sort"
	"strings"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/sluicehq/sluice/messages"
	"github.com/sluicehq/sluice/services/results"
)

// Work admitted to a region waits in SLUICE_EXEC for one of the region's
// executors. If the region has none (they all died, or it left the
// configuration), the work would wait there for ever and its call would
// never end. So one dispatcher at a time (the live one with the smallest
// id) sweeps SLUICE_EXEC every Config.SweepInterval: in each region whose
// executors are not pulling, work whose call's deadline passed more than
// Config.StrandedGrace ago gets its terminal result, deadline_exceeded
// (unless one is stored already), and is deleted.
//
// A live executor answers such work itself as soon as it reads it, and an
// attempt in progress ends at the call's deadline, so past the grace the
// sweep only meets work that no executor will answer. Should one answer
// anyway, SLUICE_RESULTS keeps one result per call.

// maxSweptPerRegion bounds one sweep's reads in one region.
const maxSweptPerRegion = 10_000

// sweepLoop sweeps stranded work until ctx ends.
func (d *Dispatcher) sweepLoop(ctx context.Context, exec jetstream.Stream) {
	every(ctx, d.cfg.SweepInterval, func() {
		if !d.sweeper() {
			return
		}
		if n, err := d.sweepStranded(ctx, exec); err != nil && ctx.Err() == nil {
			d.log.Warn("sweep stranded work", "err", err, "answered", n)
		} else if n > 0 {
			d.log.Warn("answered stranded work: no executor took it before its deadline", "calls", n)
		}
	})
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

// sweepStranded answers and deletes the stranded work in exec, and
// returns how many calls it answered.
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
	answered := 0
	seq := max(first, 1)
	for range maxSweptPerRegion {
		m, err := exec.GetMsg(ctx, seq, jetstream.WithGetMsgSubject(subject))
		if errors.Is(err, jetstream.ErrMsgNotFound) {
			return answered, nil
		}
		if err != nil {
			return answered, err
		}
		seq = m.Sequence + 1
		var w messages.Work
		if err := json.Unmarshal(m.Data, &w); err != nil {
			// Dispatchers publish only valid work; leave what is not for
			// the executors, which dead-letter it.
			continue
		}
		if d.cfg.Clock().Sub(w.Deadline) < d.cfg.StrandedGrace {
			continue
		}
		if _, err := results.FetchFrom(ctx, d.stream, w.Team, w.Call.ID); errors.Is(err, results.ErrNotFound) {
			if err := d.results.Publish(ctx, strandedResult(&w)); err != nil {
				return answered, err
			}
			answered++
			d.metrics.Stranded.WithLabelValues(w.Region).Inc()
		} else if err != nil {
			return answered, err
		}
		if err := exec.DeleteMsg(ctx, m.Sequence); err != nil && !errors.Is(err, jetstream.ErrMsgNotFound) {
			return answered, err
		}
	}
	return answered, nil
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
