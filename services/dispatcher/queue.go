package dispatcher

import (
	"container/heap"
	"container/list"
	"sort"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/sluicehq/sluice/messages"
	"github.com/sluicehq/sluice/services/limiter"
)

// waiting is a call held by this dispatcher until it is admitted, its
// deadline passes, or the dispatcher stops. Its JetStream message stays
// unacknowledged meanwhile, so the call survives a crash of the dispatcher.
type waiting struct {
	msg    jetstream.Msg
	ticket messages.Ticket
	// need is what admission reserves: one request and the token estimate.
	need limiter.Amount
	// since is when this dispatcher started holding the call.
	since time.Time
	// touched is when JetStream was last told the call is in progress.
	touched time.Time
	// overBudget is set once a retry had to wait for its pool's retry
	// budget, so it is counted once.
	overBudget bool

	elem      *list.Element // in its pool's tier list
	heapIndex int           // in the deadline heap
}

func (w *waiting) pool() string { return w.ticket.Call.Model }

// queue holds waiting calls: per pool, one FIFO list per tier, and one
// heap over all of them by deadline. It is not safe for concurrent use.
type queue struct {
	pools     map[string]*[4]list.List
	deadlines deadlineHeap
}

func newQueue() *queue {
	return &queue{pools: map[string]*[4]list.List{}}
}

func (q *queue) len() int { return len(q.deadlines) }

func (q *queue) push(w *waiting) {
	tiers, ok := q.pools[w.pool()]
	if !ok {
		tiers = new([4]list.List)
		q.pools[w.pool()] = tiers
	}
	w.elem = tiers[w.ticket.Tier.Rank()].PushBack(w)
	heap.Push(&q.deadlines, w)
}

func (q *queue) remove(w *waiting) {
	tiers := q.pools[w.pool()]
	tiers[w.ticket.Tier.Rank()].Remove(w.elem)
	heap.Remove(&q.deadlines, w.heapIndex)
	empty := true
	for i := range tiers {
		if tiers[i].Len() > 0 {
			empty = false
		}
	}
	if empty {
		delete(q.pools, w.pool())
	}
}

// depth is the number of calls waiting for pool in tier.
func (q *queue) depth(pool string, tier messages.Tier) int {
	tiers, ok := q.pools[pool]
	if !ok {
		return 0
	}
	return tiers[tier.Rank()].Len()
}

// poolNames lists the pools with waiting calls, sorted, so passes are
// deterministic.
func (q *queue) poolNames() []string {
	names := make([]string, 0, len(q.pools))
	for name := range q.pools {
		names = append(names, name)
	}
	sort.Strings(names)
	return names
}

// each visits the calls waiting for pool, highest tier first and oldest
// first within a tier, until visit returns false. visit may remove the call
// it is given.
func (q *queue) each(pool string, visit func(*waiting) bool) {
	tiers, ok := q.pools[pool]
	if !ok {
		return
	}
	for i := range tiers {
		for e := tiers[i].Front(); e != nil; {
			next := e.Next()
			if !visit(e.Value.(*waiting)) {
				return
			}
			e = next
		}
	}
}

// earliestDeadline is the waiting call whose deadline comes first.
func (q *queue) earliestDeadline() *waiting {
	if len(q.deadlines) == 0 {
		return nil
	}
	return q.deadlines[0]
}

// all lists every waiting call.
func (q *queue) all() []*waiting {
	return append([]*waiting(nil), q.deadlines...)
}

type deadlineHeap []*waiting

func (h deadlineHeap) Len() int { return len(h) }
func (h deadlineHeap) Less(i, j int) bool {
	return h[i].ticket.Deadline.Before(h[j].ticket.Deadline)
}
func (h deadlineHeap) Swap(i, j int) {
	h[i], h[j] = h[j], h[i]
	h[i].heapIndex = i
	h[j].heapIndex = j
}
func (h *deadlineHeap) Push(x any) {
	w := x.(*waiting)
	w.heapIndex = len(*h)
	*h = append(*h, w)
}
func (h *deadlineHeap) Pop() any {
	old := *h
	w := old[len(old)-1]
	old[len(old)-1] = nil
	*h = old[:len(old)-1]
	w.heapIndex = -1
	return w
}
