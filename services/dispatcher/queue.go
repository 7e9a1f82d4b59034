package dispatcher

import (
	"container/heap"
	"math/bits"
	"sort"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/sluicehq/sluice/messages"
	"github.com/sluicehq/sluice/services/budget"
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
	// hold is what the call reserved of its team's budgets; nil when
	// the team has none.
	hold *budget.Hold
	// touched is when JetStream was last told the call is in progress.
	touched time.Time
	// overBudget is set once a retry had to wait for its pool's retry
	// budget, so it is counted once.
	overBudget bool

	// The queue's bookkeeping, in the record itself rather than in list
	// elements and maps of its own: a deep backlog is mostly these.
	team       *teamQueue // whose list it is in
	prev, next *waiting   // in that list
	class      *budgetClass
	// at is its place in the deadline heap (atDeadline) and in its budget
	// class's, by acceptance (atAccepted).
	at [2]int32
}

const (
	atDeadline = iota
	atAccepted
)

func (w *waiting) pool() string { return w.ticket.Call.Model }

// queue holds waiting calls: per pool and tier, one FIFO list per team,
// with the start-time fair queuing (SFQ) tags that share the tier between
// teams by weight; and one heap over all calls by deadline. It is not safe
// for concurrent use.
//
// SFQ: a team's head call has a start tag; the tier serves the smallest.
// Serving it advances the team's finish tag by 1/weight, and the tier's
// virtual time to the served start tag. The team's next call starts at that
// finish tag; a call arriving at an empty list starts at the later of the
// team's finish tag and the tier's virtual time, so an idle team can claim
// no service for the time it was idle, and gets its share at once.
//
// Costs (issue 11: a pass admits thousands of calls out of a backlog of a
// hundred thousand, over a thousand teams): push, remove and served take
// O(log) of the tier's teams and of the queue; fairest O(1) when skip
// excludes no team ahead of the one it returns, and O(k) when it passes
// over k of them; head, byID, waitingFor, waitingIn O(1);
// oldestOf O(the team's lists); depth O(the tier's waiting teams);
// deadlineUsed O(its budget classes) when calls share a few budgets, and
// more when a class holds many different ones (see there).
type queue struct {
	pools     map[string]*poolQueue
	deadlines callHeap
	// teams are the calls waiting per team, over every pool and tier.
	teams map[string]*teamCalls
	// ids finds a waiting call by its id.
	ids map[string]*waiting
	// scratch is fairest's and deadlineUsed's list of heap nodes to visit.
	scratch []int32
}

// poolQueue is one pool's tiers, with how many calls wait in them.
type poolQueue struct {
	tiers [4]tierQueue
	n     int
}

// tierQueue is one tier of one pool.
type tierQueue struct {
	pool *poolQueue
	// teams holds a team while it has calls waiting, and while idle for
	// as long as its finish tag is ahead of vtime.
	teams map[string]*teamQueue
	// vtime is the tier's virtual time: the start tag of the last call
	// served.
	vtime float64
	// order is the teams with calls waiting, a heap by start tag and then
	// name: the order fair queuing serves them in.
	order teamOrder
	// classes are the waiting calls by the length of their deadline
	// budget, for deadlineUsed; unbudgeted counts the calls whose
	// deadline is not after their acceptance.
	classes    map[int]*budgetClass
	unbudgeted int
}

type teamQueue struct {
	name string
	tier *tierQueue
	// head and tail are the team's FIFO list of calls in the tier, n its
	// length.
	head, tail *waiting
	n          int
	// start is the start tag of the head call; finish the finish tag of
	// the team's last served call.
	start, finish float64
	// servedHead is set when the head call was served and is about to be
	// removed: the next head then starts at finish.
	servedHead bool
	// order is the team's place in tier.order (-1 when no call waits);
	// listed its place in calls.lists.
	order, listed int
	calls         *teamCalls
}

// teamCalls is what one team has waiting, over every pool and tier.
type teamCalls struct {
	n int
	// lists are the team's non-empty lists.
	lists []*teamQueue
}

func newQueue() *queue {
	return &queue{
		pools:     map[string]*poolQueue{},
		deadlines: callHeap{slot: atDeadline},
		teams:     map[string]*teamCalls{},
		ids:       map[string]*waiting{},
	}
}

func (q *queue) len() int { return len(q.deadlines.calls) }

func (q *queue) push(w *waiting) {
	p, ok := q.pools[w.pool()]
	if !ok {
		p = &poolQueue{}
		for i := range p.tiers {
			p.tiers[i].pool = p
		}
		q.pools[w.pool()] = p
	}
	tq := &p.tiers[w.ticket.Tier.Rank()]
	if tq.teams == nil {
		tq.teams = map[string]*teamQueue{}
		tq.classes = map[int]*budgetClass{}
	}
	team, ok := tq.teams[w.ticket.Team]
	if !ok {
		team = &teamQueue{name: w.ticket.Team, tier: tq, finish: tq.vtime, order: -1}
		tq.teams[w.ticket.Team] = team
	}
	if team.n == 0 {
		team.start = max(team.finish, tq.vtime)
		tq.pushOrder(team)
		calls, ok := q.teams[team.name]
		if !ok {
			calls = &teamCalls{}
			q.teams[team.name] = calls
		}
		team.calls, team.listed = calls, len(calls.lists)
		calls.lists = append(calls.lists, team)
	}
	w.team, w.prev, w.next = team, team.tail, nil
	if team.tail != nil {
		team.tail.next = w
	} else {
		team.head = w
	}
	team.tail = w
	team.n++
	team.calls.n++
	p.n++

	q.deadlines.push(w)
	tq.addBudget(w)
	q.ids[w.ticket.Call.ID] = w
}

// byID returns the waiting call with id, or nil.
func (q *queue) byID(id string) *waiting { return q.ids[id] }

func (q *queue) remove(w *waiting) {
	team := w.team
	tq := team.tier
	wasHead := team.head == w
	if w.prev != nil {
		w.prev.next = w.next
	} else {
		team.head = w.next
	}
	if w.next != nil {
		w.next.prev = w.prev
	} else {
		team.tail = w.prev
	}
	w.team, w.prev, w.next = nil, nil, nil
	team.n--
	moved := false
	if wasHead && team.servedHead {
		team.start, team.servedHead = team.finish, false
		moved = true
	}
	calls := team.calls
	calls.n--
	switch {
	case team.n == 0:
		tq.removeOrder(team)
		last := calls.lists[len(calls.lists)-1]
		calls.lists[team.listed], last.listed = last, team.listed
		calls.lists[len(calls.lists)-1] = nil
		calls.lists = calls.lists[:len(calls.lists)-1]
		team.calls = nil
		if calls.n == 0 {
			delete(q.teams, team.name)
		}
		if team.finish <= tq.vtime {
			// Nothing to remember: it would start from vtime anyway.
			delete(tq.teams, team.name)
		}
	case moved:
		tq.fixOrder(team)
	}

	q.deadlines.remove(w)
	tq.removeBudget(w)
	if q.ids[w.ticket.Call.ID] == w {
		delete(q.ids, w.ticket.Call.ID)
	}
	p := tq.pool
	if p.n--; p.n == 0 {
		delete(q.pools, w.pool())
	}
}

// served records that w, the head of its team's list, is being admitted
// (remove it next): the team's finish tag becomes its start tag plus
// 1/weight, and the tier's virtual time moves to that start tag.
func (q *queue) served(w *waiting, weight float64) {
	team := w.team
	team.finish = team.start + 1/weight
	team.tier.vtime = max(team.tier.vtime, team.start)
	team.servedHead = true
}

// tier returns the tier of pool, or nil when nothing waits for pool.
func (q *queue) tier(pool string, tier messages.Tier) *tierQueue {
	p, ok := q.pools[pool]
	if !ok {
		return nil
	}
	return &p.tiers[tier.Rank()]
}

// head returns the first call of team in pool and tier, or nil.
func (q *queue) head(pool string, tier messages.Tier, team string) *waiting {
	tq := q.tier(pool, tier)
	if tq == nil {
		return nil
	}
	if t, ok := tq.teams[team]; ok {
		return t.head
	}
	return nil
}

// fairest returns the head call, in pool and tier, of the team start-time
// fair queuing serves next: the smallest start tag. skip excludes teams.
// Ties go to the team name, for determinism.
//
// The teams are a heap in that order, so the answer is the least team not
// skipped whose ancestors all are. fairest walks down from the top, the
// lesser child first, through skipped teams only, and leaves any subtree
// whose top is not ahead of the best team found so far: it asks skip
// about the teams ahead of the one it returns (and a few more), rather
// than about every team, and changes nothing.
func (q *queue) fairest(pool string, tier messages.Tier, skip func(team string) bool) *waiting {
	tq := q.tier(pool, tier)
	if tq == nil || len(tq.order) == 0 {
		return nil
	}
	order := tq.order
	if !skip(order[0].name) {
		return order[0].head
	}
	// Taken, not borrowed, should skip ever ask the queue again.
	stack := q.scratch[:0]
	q.scratch = nil
	var best *teamQueue
	for i := int32(0); ; {
		// order[i] is skipped: its children are next, the lesser on top.
		if l, r := 2*i+1, 2*i+2; int(r) < len(order) {
			if teamBefore(order[r], order[l]) {
				l, r = r, l
			}
			stack = append(stack, r, l)
		} else if int(l) < len(order) {
			stack = append(stack, l)
		}
		for {
			if len(stack) == 0 {
				q.scratch = stack
				if best == nil {
					return nil
				}
				return best.head
			}
			i = stack[len(stack)-1]
			stack = stack[:len(stack)-1]
			t := order[i]
			if best != nil && !teamBefore(t, best) {
				continue // nor any team below it
			}
			if !skip(t.name) {
				best = t
				continue
			}
			break
		}
	}
}

// depth is the number of calls waiting for pool in tier, and the oldest of
// them, per team.
func (q *queue) depth(pool string, tier messages.Tier) map[string]teamDepth {
	tq := q.tier(pool, tier)
	if tq == nil {
		return map[string]teamDepth{}
	}
	out := make(map[string]teamDepth, len(tq.order))
	for _, team := range tq.order {
		out[team.name] = teamDepth{n: team.n, oldest: team.head.since}
	}
	return out
}

type teamDepth struct {
	n      int
	oldest time.Time
}

// deadlineUsed is, of the calls waiting for pool in tier, the largest
// share of its deadline budget (from acceptance to deadline) one has used
// at now, between 0 and 1; 0 when none waits. Calls with shorter deadlines
// may be behind older ones, so it cannot just look at the oldest call.
//
// It need not look at every call either. The calls are in classes of
// about the same budget (within a sixteenth), each a heap by acceptance.
// A call accepted for age x has used x/b of its budget b; none of its
// class accepted later, whose budgets are at least the class's shortest S,
// can have used more than x/S. So each class's heap is walked down from
// its oldest call, leaving every subtree whose top's bound is no more than
// the largest share found. Of a class of one budget (the default timeout,
// a client's timeout_ms) it looks at the oldest call and its two children;
// of one of many, at the calls within about a sixteenth of the age of its
// oldest.
func (q *queue) deadlineUsed(pool string, tier messages.Tier, now time.Time) float64 {
	tq := q.tier(pool, tier)
	if tq == nil {
		return 0
	}
	if tq.unbudgeted > 0 {
		return 1
	}
	used := 0.0
	stack := q.scratch[:0]
	q.scratch = nil
	for _, c := range tq.classes {
		calls := c.calls.calls
		// Down the heap from its oldest call, leaving a subtree once its
		// top's bound (that of the oldest call in it) is no more than used.
		stack = append(stack[:0], 0)
		for len(stack) > 0 {
			i := stack[len(stack)-1]
			stack = stack[:len(stack)-1]
			t := &calls[i].ticket
			age := now.Sub(t.AcceptedAt)
			if float64(age)/float64(c.shortest) <= used {
				continue
			}
			u := float64(age) / float64(t.Deadline.Sub(t.AcceptedAt))
			if u >= 1 {
				q.scratch = stack
				return 1
			}
			used = max(used, u)
			for child := 2*i + 1; child <= 2*i+2 && int(child) < len(calls); child++ {
				stack = append(stack, child)
			}
		}
	}
	q.scratch = stack
	return used
}

// budgetClass is the calls of a tier whose deadline budgets have the same
// classOf.
type budgetClass struct {
	calls callHeap
	// shortest is the shortest budget of a call in the class since it was
	// last empty: no call in it has a shorter one.
	shortest time.Duration
	key      int
}

// classOf groups budgets that differ by less than a sixteenth: the length
// of the budget in bits, and the four bits after its leading one.
func classOf(budget time.Duration) int {
	b := uint64(budget)
	n := bits.Len64(b)
	if n <= 5 {
		return int(b)
	}
	return n<<4 | int(b>>(n-5))&15
}

func (tq *tierQueue) addBudget(w *waiting) {
	budget := w.ticket.Deadline.Sub(w.ticket.AcceptedAt)
	if budget <= 0 {
		tq.unbudgeted++
		return
	}
	key := classOf(budget)
	c, ok := tq.classes[key]
	if !ok {
		c = &budgetClass{calls: callHeap{slot: atAccepted}, key: key}
		tq.classes[key] = c
	}
	if c.shortest == 0 || budget < c.shortest {
		c.shortest = budget
	}
	c.calls.push(w)
	w.class = c
}

func (tq *tierQueue) removeBudget(w *waiting) {
	c := w.class
	if c == nil {
		tq.unbudgeted--
		return
	}
	w.class = nil
	c.calls.remove(w)
	if len(c.calls.calls) == 0 {
		delete(tq.classes, c.key)
	}
}

// waitingFor is the number of calls team has waiting here.
func (q *queue) waitingFor(team string) int {
	if t, ok := q.teams[team]; ok {
		return t.n
	}
	return 0
}

// waitingIn is how many calls wait for pool.
func (q *queue) waitingIn(pool string) int {
	if p, ok := q.pools[pool]; ok {
		return p.n
	}
	return 0
}

// oldestOf is when the longest-waiting call of team started waiting here
// (zero when none waits).
func (q *queue) oldestOf(team string) time.Time {
	var oldest time.Time
	if t, ok := q.teams[team]; ok {
		for _, list := range t.lists {
			since := list.head.since
			if oldest.IsZero() || since.Before(oldest) {
				oldest = since
			}
		}
	}
	return oldest
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

// earliestDeadline is the waiting call whose deadline comes first.
func (q *queue) earliestDeadline() *waiting {
	if len(q.deadlines.calls) == 0 {
		return nil
	}
	return q.deadlines.calls[0]
}

// all lists every waiting call.
func (q *queue) all() []*waiting {
	return append([]*waiting(nil), q.deadlines.calls...)
}

// teamBefore is fair queuing's order: smaller start tag, then name.
func teamBefore(a, b *teamQueue) bool {
	return a.start < b.start || (a.start == b.start && a.name < b.name)
}

// teamOrder is a tier's teams with calls waiting, as a container/heap
// by teamBefore; each team keeps its index (teamQueue.order).
type teamOrder []*teamQueue

func (o teamOrder) Len() int           { return len(o) }
func (o teamOrder) Less(i, j int) bool { return teamBefore(o[i], o[j]) }
func (o teamOrder) Swap(i, j int) {
	o[i], o[j] = o[j], o[i]
	o[i].order, o[j].order = i, j
}
func (o *teamOrder) Push(x any) {
	t := x.(*teamQueue)
	t.order = len(*o)
	*o = append(*o, t)
}
func (o *teamOrder) Pop() any {
	old := *o
	t := old[len(old)-1]
	old[len(old)-1] = nil
	*o = shrink(old[:len(old)-1])
	t.order = -1
	return t
}

func (tq *tierQueue) pushOrder(t *teamQueue)   { heap.Push(&tq.order, t) }
func (tq *tierQueue) fixOrder(t *teamQueue)    { heap.Fix(&tq.order, t.order) }
func (tq *tierQueue) removeOrder(t *teamQueue) { heap.Remove(&tq.order, t.order) }

// callHeap is a container/heap of calls by deadline (slot atDeadline) or
// by acceptance (atAccepted); slot is also which of a call's places
// (waiting.at) it keeps.
type callHeap struct {
	calls []*waiting
	slot  int
}

func (h *callHeap) Len() int { return len(h.calls) }
func (h *callHeap) Less(i, j int) bool {
	a, b := &h.calls[i].ticket, &h.calls[j].ticket
	if h.slot == atDeadline {
		return a.Deadline.Before(b.Deadline)
	}
	return a.AcceptedAt.Before(b.AcceptedAt)
}
func (h *callHeap) Swap(i, j int) {
	c := h.calls
	c[i], c[j] = c[j], c[i]
	c[i].at[h.slot], c[j].at[h.slot] = int32(i), int32(j)
}
func (h *callHeap) Push(x any) {
	w := x.(*waiting)
	w.at[h.slot] = int32(len(h.calls))
	h.calls = append(h.calls, w)
}
func (h *callHeap) Pop() any {
	last := len(h.calls) - 1
	w := h.calls[last]
	h.calls[last] = nil
	h.calls = shrink(h.calls[:last])
	w.at[h.slot] = -1
	return w
}

func (h *callHeap) push(w *waiting)   { heap.Push(h, w) }
func (h *callHeap) remove(w *waiting) { heap.Remove(h, int(w.at[h.slot])) }

// shrink gives back most of a slice's array once it is mostly unused, so
// a drained backlog does not keep its heaps' size.
func shrink[T any](s []T) []T {
	if cap(s) > 1024 && len(s) < cap(s)/4 {
		return append(make([]T, 0, cap(s)/2), s...)
	}
	return s
}
