package dispatcher

import (
	"context"
	"sync"
	"sync/atomic"
	"time"

	"github.com/sluicehq/sluice/messages"
)

// The scheduler goroutine (schedule, in loop.go) alone owns the queue,
// the circuit breakers, the retry budgets and the demand it announces: no
// lock guards them. The dispatcher's other goroutines (intake, attempt
// reports, cancellations, announcements) post events to its inbox and
// wake it; it applies them, in the order they were posted, before each
// pass. So nothing they do waits for a pass, and a pass that waits on the
// shared state (a lease topped up, a slot taken, work published) holds up
// admission alone.

// inbox holds the events posted since the scheduler last took them. Its
// lock is held only to append or to swap the slice, never across a call.
type inbox struct {
	mu     sync.Mutex
	events []event
	// criticalPosted counts the critical calls posted: a pass that sees it
	// change ends after the admission under way, so that a critical call
	// waits for one admission rather than for a pass.
	criticalPosted atomic.Uint64
}

// event is one of the types below.
type event interface{ event() }

// callOffered: a valid call to hold until it is admitted; fresh when it
// is new (not a retry or a late attempt handed back), and so counts
// against its team's max_queued.
type callOffered struct {
	w     *waiting
	fresh bool
}

// callCanceled: the client canceled call id.
type callCanceled struct{ id string }

// attemptJudged: an executor reported an attempt's outcome, for the
// breakers of its deployment and region.
type attemptJudged struct {
	done messages.AttemptDone
	at   time.Time
}

// stateAsked: the announcer wants what this dispatcher holds.
type stateAsked struct {
	reply chan<- messages.DispatcherState
}

func (callOffered) event()   {}
func (callCanceled) event()  {}
func (attemptJudged) event() {}
func (stateAsked) event()    {}

// post hands e to the scheduler and wakes it.
func (d *Dispatcher) post(e event) {
	d.inbox.mu.Lock()
	d.inbox.events = append(d.inbox.events, e)
	d.inbox.mu.Unlock()
	if o, ok := e.(callOffered); ok && o.w.ticket.Tier == messages.TierCritical {
		d.inbox.criticalPosted.Add(1)
	}
	d.poke()
}

// take returns the events posted since the last call, oldest first.
func (b *inbox) take() []event {
	b.mu.Lock()
	defer b.mu.Unlock()
	out := b.events
	b.events = nil
	return out
}

// applyEvents applies what was posted since the last pass. Only the
// scheduler calls it.
func (d *Dispatcher) applyEvents() {
	for _, e := range d.inbox.take() {
		switch e := e.(type) {
		case callOffered:
			d.offer(e.w, e.fresh)
		case callCanceled:
			if w := d.queue.byID(e.id); w != nil {
				d.dequeue(w)
				d.answer(w, messages.Errorf(messages.CodeCanceled, "the client canceled the call while it waited"))
			}
		case attemptJudged:
			d.judge(e.done, e.at)
		case stateAsked:
			e.reply <- d.state()
		}
	}
}

// offer queues a call, unless it was canceled since it was read or, when
// fresh, its team has max_queued calls waiting already. A call the limit
// let in once is not refused later: its retries queue whatever waits.
func (d *Dispatcher) offer(w *waiting, fresh bool) {
	t := w.ticket
	if d.wasCanceled(t.Call.ID) {
		d.answer(w, messages.Errorf(messages.CodeCanceled, "the client canceled the call before it was admitted"))
		return
	}
	if fresh {
		if full := d.checkQueueLimit(d.cfg.Shared.Load(), t.Team); full != nil {
			d.answer(w, full)
			return
		}
	}
	d.queue.push(w)
	d.metrics.QueueDepth.WithLabelValues(w.pool(), string(t.Tier)).Inc()
}

// askState returns what this dispatcher holds, from the scheduler; false
// when ctx ended first.
func (d *Dispatcher) askState(ctx context.Context) (messages.DispatcherState, bool) {
	reply := make(chan messages.DispatcherState, 1)
	d.post(stateAsked{reply})
	select {
	case s := <-reply:
		return s, true
	case <-ctx.Done():
		return messages.DispatcherState{}, false
	}
}

// handBackPosted returns to JetStream the calls posted but never queued,
// once the scheduler has stopped.
func (d *Dispatcher) handBackPosted() int {
	n := 0
	for _, e := range d.inbox.take() {
		if o, ok := e.(callOffered); ok {
			d.releaseBudget(o.w.hold)
			_ = o.w.msg.Nak()
			n++
		}
	}
	return n
}
