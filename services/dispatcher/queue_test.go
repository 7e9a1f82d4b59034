package dispatcher

import (
	"fmt"
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
