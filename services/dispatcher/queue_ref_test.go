package dispatcher

// The queue as it was before issue 11 (fairest and deadlineUsed scanning
// every team and call), kept as the reference the property test holds
// the queue to. Only the types are renamed.

import (
	"container/heap"
	"container/list"
	"sort"
	"time"

	"github.com/sluicehq/sluice/messages"
)

type refWaiting struct {
	ticket    messages.Ticket
	since     time.Time
	elem      *list.Element
	heapIndex int
}

func (w *refWaiting) pool() string { return w.ticket.Call.Model }

type refQueue struct {
	pools     map[string]*[4]refTier
	deadlines refDeadlineHeap
	// byTeam counts the calls waiting per team, over every pool; byPool
	// per pool.
	byTeam map[string]int
	byPool map[string]int
	// ids finds a waiting call by its id.
	ids map[string]*refWaiting
}

// refTier is one tier of one pool.
type refTier struct {
	teams map[string]*refTeam
	// vtime is the tier's virtual time: the start tag of the last call
	// served.
	vtime float64
}

type refTeam struct {
	calls list.List
	// start is the start tag of the head call; finish the finish tag of
	// the team's last served call.
	start, finish float64
	// servedHead is set when the head call was served and is about to be
	// removed: the next head then starts at finish.
	servedHead bool
}

func newRefQueue() *refQueue {
	return &refQueue{pools: map[string]*[4]refTier{}, byTeam: map[string]int{}, byPool: map[string]int{}, ids: map[string]*refWaiting{}}
}

func (q *refQueue) len() int { return len(q.deadlines) }

func (q *refQueue) push(w *refWaiting) {
	tiers, ok := q.pools[w.pool()]
	if !ok {
		tiers = new([4]refTier)
		q.pools[w.pool()] = tiers
	}
	tq := &tiers[w.ticket.Tier.Rank()]
	if tq.teams == nil {
		tq.teams = map[string]*refTeam{}
	}
	team, ok := tq.teams[w.ticket.Team]
	if !ok {
		team = &refTeam{finish: tq.vtime}
		tq.teams[w.ticket.Team] = team
	}
	if team.calls.Len() == 0 {
		team.start = max(team.finish, tq.vtime)
	}
	w.elem = team.calls.PushBack(w)
	heap.Push(&q.deadlines, w)
	q.byTeam[w.ticket.Team]++
	q.byPool[w.pool()]++
	q.ids[w.ticket.Call.ID] = w
}

// byID returns the waiting call with id, or nil.
func (q *refQueue) byID(id string) *refWaiting { return q.ids[id] }

func (q *refQueue) remove(w *refWaiting) {
	tiers := q.pools[w.pool()]
	tq := &tiers[w.ticket.Tier.Rank()]
	team := tq.teams[w.ticket.Team]
	wasHead := team.calls.Front() == w.elem
	team.calls.Remove(w.elem)
	if wasHead && team.servedHead {
		team.start, team.servedHead = team.finish, false
	}
	if team.calls.Len() == 0 && team.finish <= tq.vtime {
		// Nothing to remember: it would start from vtime anyway.
		delete(tq.teams, w.ticket.Team)
	}
	heap.Remove(&q.deadlines, w.heapIndex)
	if q.ids[w.ticket.Call.ID] == w {
		delete(q.ids, w.ticket.Call.ID)
	}
	if q.byTeam[w.ticket.Team]--; q.byTeam[w.ticket.Team] == 0 {
		delete(q.byTeam, w.ticket.Team)
	}
	if q.byPool[w.pool()]--; q.byPool[w.pool()] == 0 {
		delete(q.byPool, w.pool())
	}
	if q.poolEmpty(w.pool()) {
		delete(q.pools, w.pool())
	}
}

func (q *refQueue) poolEmpty(pool string) bool {
	for i := range q.pools[pool] {
		for _, team := range q.pools[pool][i].teams {
			if team.calls.Len() > 0 {
				return false
			}
		}
	}
	return true
}

// served records that w, the head of its team's list, is being admitted
// (remove it next): the team's finish tag becomes its start tag plus
// 1/weight, and the tier's virtual time moves to that start tag.
func (q *refQueue) served(w *refWaiting, weight float64) {
	tq := &q.pools[w.pool()][w.ticket.Tier.Rank()]
	team := tq.teams[w.ticket.Team]
	team.finish = team.start + 1/weight
	tq.vtime = max(tq.vtime, team.start)
	team.servedHead = true
}

// head returns the first call of team in pool and tier, or nil.
func (q *refQueue) head(pool string, tier messages.Tier, team string) *refWaiting {
	tiers, ok := q.pools[pool]
	if !ok {
		return nil
	}
	tq, ok := tiers[tier.Rank()].teams[team]
	if !ok || tq.calls.Len() == 0 {
		return nil
	}
	return tq.calls.Front().Value.(*refWaiting)
}

// fairest returns the head call, in pool and tier, of the team start-time
// fair queuing serves next: the smallest start tag. skip excludes teams.
// Ties go to the team name, for determinism.
func (q *refQueue) fairest(pool string, tier messages.Tier, skip func(team string) bool) *refWaiting {
	tiers, ok := q.pools[pool]
	if !ok {
		return nil
	}
	tq := &tiers[tier.Rank()]
	var best *refWaiting
	var bestTag float64
	for name, team := range tq.teams {
		if team.calls.Len() == 0 || skip(name) {
			continue
		}
		tag := team.start
		if best == nil || tag < bestTag || (tag == bestTag && name < best.ticket.Team) {
			best, bestTag = team.calls.Front().Value.(*refWaiting), tag
		}
	}
	return best
}

// depth is the number of calls waiting for pool in tier, and the oldest of
// them, per team.
func (q *refQueue) depth(pool string, tier messages.Tier) map[string]teamDepth {
	out := map[string]teamDepth{}
	tiers, ok := q.pools[pool]
	if !ok {
		return out
	}
	for name, team := range tiers[tier.Rank()].teams {
		if team.calls.Len() == 0 {
			continue
		}
		out[name] = teamDepth{n: team.calls.Len(), oldest: team.calls.Front().Value.(*refWaiting).since}
	}
	return out
}

// deadlineUsed is, of the calls waiting for pool in tier, the largest
// share of its deadline budget (from acceptance to deadline) one has used
// at now, between 0 and 1; 0 when none waits. It looks at every waiting
// call, since calls with shorter deadlines may be behind older ones.
func (q *refQueue) deadlineUsed(pool string, tier messages.Tier, now time.Time) float64 {
	tiers, ok := q.pools[pool]
	if !ok {
		return 0
	}
	used := 0.0
	for _, team := range tiers[tier.Rank()].teams {
		for e := team.calls.Front(); e != nil; e = e.Next() {
			t := e.Value.(*refWaiting).ticket
			budget := t.Deadline.Sub(t.AcceptedAt)
			if budget <= 0 {
				return 1
			}
			used = max(used, min(1, float64(now.Sub(t.AcceptedAt))/float64(budget)))
		}
	}
	return used
}

// waitingFor is the number of calls team has waiting here.
func (q *refQueue) waitingFor(team string) int { return q.byTeam[team] }

// waitingIn is how many calls wait for pool.
func (q *refQueue) waitingIn(pool string) int { return q.byPool[pool] }

// oldestOf is when the longest-waiting call of team started waiting here
// (zero when none waits).
func (q *refQueue) oldestOf(team string) time.Time {
	var oldest time.Time
	for _, tiers := range q.pools {
		for i := range tiers {
			if t, ok := tiers[i].teams[team]; ok && t.calls.Len() > 0 {
				since := t.calls.Front().Value.(*refWaiting).since
				if oldest.IsZero() || since.Before(oldest) {
					oldest = since
				}
			}
		}
	}
	return oldest
}

// poolNames lists the pools with waiting calls, sorted, so passes are
// deterministic.
func (q *refQueue) poolNames() []string {
	names := make([]string, 0, len(q.pools))
	for name := range q.pools {
		names = append(names, name)
	}
	sort.Strings(names)
	return names
}

// earliestDeadline is the waiting call whose deadline comes first.
func (q *refQueue) earliestDeadline() *refWaiting {
	if len(q.deadlines) == 0 {
		return nil
	}
	return q.deadlines[0]
}

// all lists every waiting call.
func (q *refQueue) all() []*refWaiting {
	return append([]*refWaiting(nil), q.deadlines...)
}

type refDeadlineHeap []*refWaiting

func (h refDeadlineHeap) Len() int { return len(h) }
func (h refDeadlineHeap) Less(i, j int) bool {
	return h[i].ticket.Deadline.Before(h[j].ticket.Deadline)
}
func (h refDeadlineHeap) Swap(i, j int) {
	h[i], h[j] = h[j], h[i]
	h[i].heapIndex = i
	h[j].heapIndex = j
}
func (h *refDeadlineHeap) Push(x any) {
	w := x.(*refWaiting)
	w.heapIndex = len(*h)
	*h = append(*h, w)
}
func (h *refDeadlineHeap) Pop() any {
	old := *h
	w := old[len(old)-1]
	old[len(old)-1] = nil
	*h = old[:len(old)-1]
	w.heapIndex = -1
	return w
}
