package dispatcher

import (
	"fmt"
	"maps"
	"math/rand/v2"
	"slices"
	"testing"
	"time"

	"github.com/sluicehq/sluice/messages"
)

func waitingCall(id, team, pool string, tier messages.Tier, deadline time.Time) *waiting {
	return &waiting{ticket: messages.Ticket{Call: messages.CallRequest{ID: id, Model: pool}, Team: team, Tier: tier, Deadline: deadline}}
}

// serveNext admits the fairest call of tier in pool p and returns its team.
func serveNext(q *queue, tier messages.Tier, weights map[string]float64) string {
	w := q.fairest("p", tier, func(string) bool { return false })
	if w == nil {
		return ""
	}
	q.served(w, weights[w.ticket.Team])
	q.remove(w)
	return w.ticket.Team
}

func TestFairQueuingSharesByWeight(t *testing.T) {
	q := newQueue()
	far := time.Unix(1e9, 0)
	for i := 0; i < 40; i++ {
		q.push(waitingCall(fmt.Sprintf("a%d", i), "a", "p", messages.TierStandard, far))
		q.push(waitingCall(fmt.Sprintf("b%d", i), "b", "p", messages.TierStandard, far))
	}
	weights := map[string]float64{"a": 3, "b": 1}
	served := map[string]int{}
	for i := 0; i < 20; i++ {
		served[serveNext(q, messages.TierStandard, weights)]++
	}
	if served["a"] != 15 || served["b"] != 5 {
		t.Fatalf("weights 3:1 served %v in 20 calls", served)
	}
	if q.waitingFor("a") != 25 || q.waitingFor("b") != 35 || q.len() != 60 {
		t.Fatalf("counts: a %d b %d all %d", q.waitingFor("a"), q.waitingFor("b"), q.len())
	}
}

// A team that was idle gets its share back at once, but no credit for
// the time it was idle: it does not then starve the others.
func TestFairQueuingDoesNotBankIdleTime(t *testing.T) {
	q := newQueue()
	far := time.Unix(1e9, 0)
	weights := map[string]float64{"a": 1, "b": 1}
	for i := 0; i < 100; i++ {
		q.push(waitingCall(fmt.Sprintf("b%d", i), "b", "p", messages.TierStandard, far))
	}
	for i := 0; i < 50; i++ {
		serveNext(q, messages.TierStandard, weights) // b alone, borrowing a's share
	}
	for i := 0; i < 20; i++ {
		q.push(waitingCall(fmt.Sprintf("a%d", i), "a", "p", messages.TierStandard, far))
	}
	served := map[string]int{}
	for i := 0; i < 20; i++ {
		served[serveNext(q, messages.TierStandard, weights)]++
	}
	if served["a"] < 9 || served["a"] > 11 {
		t.Fatalf("after a returns, equal weights served %v in 20 calls; want about 10 each", served)
	}
}

func TestQueueKeepsDeadlinesAndFIFO(t *testing.T) {
	q := newQueue()
	t0 := time.Unix(1000, 0)
	first := waitingCall("first", "a", "p", messages.TierBatch, t0.Add(time.Hour))
	second := waitingCall("second", "a", "p", messages.TierBatch, t0.Add(time.Minute))
	other := waitingCall("other", "b", "x", messages.TierHigh, t0.Add(time.Second))
	for _, w := range []*waiting{first, second, other} {
		q.push(w)
	}
	if q.head("p", messages.TierBatch, "a") != first {
		t.Fatal("a team's list is FIFO")
	}
	if q.earliestDeadline() != other {
		t.Fatal("deadline heap")
	}
	if names := q.poolNames(); len(names) != 2 || names[0] != "p" || names[1] != "x" {
		t.Fatalf("pools %v", names)
	}
	if d := q.depth("p", messages.TierBatch)["a"]; d.n != 2 {
		t.Fatalf("depth %+v", d)
	}
	q.remove(other)
	if q.earliestDeadline() != second || len(q.poolNames()) != 1 {
		t.Fatal("removal")
	}
	for _, w := range q.all() {
		q.remove(w)
	}
	if q.len() != 0 || len(q.pools) != 0 || q.earliestDeadline() != nil || q.waitingFor("a") != 0 {
		t.Fatal("queue not empty")
	}
}

// The deadline budget used is the worst of every waiting call, not the
// oldest one's: a newer call with a short deadline can be closer to it.
func TestDeadlineUsedLooksAtEveryCall(t *testing.T) {
	q := newQueue()
	now := time.Unix(1000, 0)
	call := func(id string, accepted, deadline time.Duration) {
		w := waitingCall(id, "a", "p", messages.TierStandard, now.Add(deadline))
		w.ticket.AcceptedAt = now.Add(accepted)
		q.push(w)
	}
	if got := q.deadlineUsed("p", messages.TierStandard, now); got != 0 {
		t.Fatalf("empty queue: %v", got)
	}
	call("old-long", -60*time.Second, 240*time.Second) // 60 of 300 s: 0.2
	call("new-short", -8*time.Second, 2*time.Second)   // 8 of 10 s: 0.8
	if got := q.deadlineUsed("p", messages.TierStandard, now); got < 0.79 || got > 0.81 {
		t.Fatalf("deadline used %v, want 0.8 (the newer call's)", got)
	}
	call("late", -20*time.Second, -5*time.Second) // past its deadline
	if got := q.deadlineUsed("p", messages.TierStandard, now); got != 1 {
		t.Fatalf("deadline used %v with a call past its deadline, want 1", got)
	}
	if got := q.deadlineUsed("p", messages.TierBatch, now); got != 0 {
		t.Fatalf("another tier: %v", got)
	}
}

// TestQueueMatchesReference drives the queue and the queue as it was
// before issue 11 (refQueue, which scans every team and call) through the
// same random, seeded sequences of what intake, passes, cancellations and
// expiry do, and requires the same answers from both at every step: the
// same call from fairest whatever skip excludes, the same start-time fair
// queuing tags after served and remove, and the same counts, heads,
// depths, oldest calls and deadline shares.
func TestQueueMatchesReference(t *testing.T) {
	seeds, steps := uint64(40), 2500
	if testing.Short() {
		seeds, steps = 8, 1000
	}
	for seed := uint64(1); seed <= seeds; seed++ {
		t.Run(fmt.Sprint(seed), func(t *testing.T) { checkAgainstReference(t, seed, steps) })
	}
}

func checkAgainstReference(t *testing.T, seed uint64, steps int) {
	rng := rand.New(rand.NewPCG(seed, 11))
	// A few teams, or enough for fairest to walk a deep heap past
	// skipped ones.
	var teams []string
	for i := range []int{2 + rng.IntN(6), 20 + rng.IntN(21)}[seed%2] {
		teams = append(teams, fmt.Sprintf("t%02d", i))
	}
	pools := []string{"p", "x"}
	// Weights that make ties (1, 2, 4) and ones that do not.
	weights := map[string]float64{}
	for _, team := range teams {
		weights[team] = []float64{1, 1, 2, 4, 3, 0.5, 1.0 / 3}[rng.IntN(7)]
	}
	budgets := []time.Duration{30 * time.Second, 5 * time.Minute, 5 * time.Minute, 10 * time.Second}
	type pair struct {
		w   *waiting
		ref *refWaiting
	}
	q, ref := newQueue(), newRefQueue()
	live := map[string]pair{}
	var ids []string
	now := time.Unix(1_800_000_000, 0)
	seq := 0

	forget := func(id string) {
		delete(live, id)
		i := slices.Index(ids, id)
		ids[i] = ids[len(ids)-1]
		ids = ids[:len(ids)-1]
	}
	removeBoth := func(p pair) {
		q.remove(p.w)
		ref.remove(p.ref)
		forget(p.w.ticket.Call.ID)
	}
	sameCall := func(step int, what string, w *waiting, r *refWaiting) {
		t.Helper()
		switch {
		case w == nil && r == nil:
		case w == nil || r == nil:
			t.Fatalf("step %d: %s: queue %v, reference %v", step, what, w != nil, r != nil)
		case w.ticket.Call.ID != r.ticket.Call.ID:
			t.Fatalf("step %d: %s: queue %s, reference %s", step, what, w.ticket.Call.ID, r.ticket.Call.ID)
		}
	}
	randomSkip := func() func(string) bool {
		// None stuck, a few, most, nearly all.
		share := []float64{0, 0.3, 0.7, 0.95}[rng.IntN(4)]
		skipped := map[string]bool{}
		for _, team := range teams {
			skipped[team] = rng.Float64() < share
		}
		return func(team string) bool { return skipped[team] }
	}

	for step := 0; step < steps; step++ {
		now = now.Add(time.Duration(rng.IntN(int(2 * time.Second))))
		pool := pools[rng.IntN(len(pools))]
		tier := messages.Tiers[rng.IntN(len(messages.Tiers))]
		team := teams[rng.IntN(len(teams))]
		switch op := rng.IntN(100); {
		case op < 40 || len(ids) == 0: // intake
			seq++
			id := fmt.Sprintf("c%d", seq)
			accepted := now.Add(-time.Duration(rng.IntN(int(20 * time.Second))))
			var deadline time.Time
			switch k := rng.IntN(100); {
			case k < 1:
				deadline = accepted // no budget at all
			case k < 30:
				deadline = accepted.Add(time.Duration(1 + rng.IntN(int(10*time.Minute))))
			default:
				deadline = accepted.Add(budgets[rng.IntN(len(budgets))])
			}
			w := waitingCall(id, team, pool, tier, deadline)
			w.ticket.AcceptedAt, w.since = accepted, now
			r := &refWaiting{ticket: w.ticket, since: w.since}
			q.push(w)
			ref.push(r)
			live[id] = pair{w, r}
			ids = append(ids, id)
		case op < 75: // a pass admits the fairest call
			skip := randomSkip()
			w, r := q.fairest(pool, tier, skip), ref.fairest(pool, tier, skip)
			sameCall(step, "fairest", w, r)
			if w == nil {
				break
			}
			q.served(w, weights[w.ticket.Team])
			ref.served(r, weights[r.ticket.Team])
			if rng.IntN(10) > 0 {
				removeBoth(live[w.ticket.Call.ID])
			}
		case op < 80: // a team behind its guarantee: its head
			w, r := q.head(pool, tier, team), ref.head(pool, tier, team)
			sameCall(step, "head", w, r)
			if w != nil {
				q.served(w, weights[team])
				ref.served(r, weights[team])
				removeBoth(live[w.ticket.Call.ID])
			}
		case op < 92: // canceled, or a call that can never fit
			id := ids[rng.IntN(len(ids))]
			if q.byID(id) != live[id].w || ref.byID(id) != live[id].ref {
				t.Fatalf("step %d: byID(%s)", step, id)
			}
			removeBoth(live[id])
		default: // the deadline passed
			w, r := q.earliestDeadline(), ref.earliestDeadline()
			if !w.ticket.Deadline.Equal(r.ticket.Deadline) {
				t.Fatalf("step %d: earliest deadline %v, reference %v", step, w.ticket.Deadline, r.ticket.Deadline)
			}
			removeBoth(live[w.ticket.Call.ID])
		}

		if q.len() != ref.len() || q.len() != len(ids) {
			t.Fatalf("step %d: len %d, reference %d, live %d", step, q.len(), ref.len(), len(ids))
		}
		for _, team := range teams {
			if q.waitingFor(team) != ref.waitingFor(team) || !q.oldestOf(team).Equal(ref.oldestOf(team)) {
				t.Fatalf("step %d: team %s: waiting %d since %v, reference %d since %v", step, team,
					q.waitingFor(team), q.oldestOf(team), ref.waitingFor(team), ref.oldestOf(team))
			}
		}
		if got, want := q.poolNames(), ref.poolNames(); !slices.Equal(got, want) || len(q.pools) != len(ref.pools) {
			t.Fatalf("step %d: pools %v, reference %v", step, got, want)
		}
		for _, pool := range pools {
			if q.waitingIn(pool) != ref.waitingIn(pool) {
				t.Fatalf("step %d: waitingIn(%s) %d, reference %d", step, pool, q.waitingIn(pool), ref.waitingIn(pool))
			}
			for _, tier := range messages.Tiers {
				if got, want := q.depth(pool, tier), ref.depth(pool, tier); !maps.Equal(got, want) {
					t.Fatalf("step %d: depth(%s, %s) %v, reference %v", step, pool, tier, got, want)
				}
				// Now, and later: calls then past their deadline count 1.
				for _, at := range []time.Time{now, now.Add(time.Duration(rng.IntN(int(time.Minute))))} {
					if got, want := q.deadlineUsed(pool, tier, at), ref.deadlineUsed(pool, tier, at); got != want {
						t.Fatalf("step %d: deadlineUsed(%s, %s) %v, reference %v", step, pool, tier, got, want)
					}
				}
				// The fair queuing state itself: every team's tags, and
				// the teams kept while idle.
				tq, rtq := q.tier(pool, tier), ref.pools[pool]
				if (tq == nil) != (rtq == nil) {
					t.Fatalf("step %d: pool %s kept by one queue only", step, pool)
				}
				if tq == nil {
					continue
				}
				rt := &rtq[tier.Rank()]
				if tq.vtime != rt.vtime || len(tq.teams) != len(rt.teams) {
					t.Fatalf("step %d: %s/%s: vtime %v teams %d, reference %v and %d", step, pool, tier, tq.vtime, len(tq.teams), rt.vtime, len(rt.teams))
				}
				for name, team := range tq.teams {
					r, ok := rt.teams[name]
					if !ok || team.finish != r.finish || team.n != r.calls.Len() || (team.n > 0 && team.start != r.start) {
						t.Fatalf("step %d: %s/%s team %s: start %v finish %v n %d, reference %+v", step, pool, tier, name, team.start, team.finish, team.n, r)
					}
				}
			}
		}
		if step%50 == 0 {
			var got, want []string
			for _, w := range q.all() {
				got = append(got, w.ticket.Call.ID)
			}
			for _, r := range ref.all() {
				want = append(want, r.ticket.Call.ID)
			}
			slices.Sort(got)
			slices.Sort(want)
			if !slices.Equal(got, want) {
				t.Fatalf("step %d: all %v, reference %v", step, got, want)
			}
		}
	}
	// Drain both in fair order: the whole service order agrees.
	for _, pool := range pools {
		for _, tier := range messages.Tiers {
			for {
				none := func(string) bool { return false }
				w, r := q.fairest(pool, tier, none), ref.fairest(pool, tier, none)
				sameCall(steps, "drain", w, r)
				if w == nil {
					break
				}
				q.served(w, weights[w.ticket.Team])
				ref.served(r, weights[r.ticket.Team])
				removeBoth(live[w.ticket.Call.ID])
			}
		}
	}
	if q.len() != 0 || len(q.pools) != 0 || len(q.teams) != 0 || len(q.ids) != 0 {
		t.Fatalf("drained queue holds %d calls, %d pools, %d teams, %d ids", q.len(), len(q.pools), len(q.teams), len(q.ids))
	}
}
