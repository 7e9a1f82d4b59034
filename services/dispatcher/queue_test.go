package dispatcher

import (
	"strings"
	"testing"
	"time"

	"github.com/sluicehq/sluice/messages"
)

func waitingCall(id, pool string, tier messages.Tier, deadline time.Time) *waiting {
	return &waiting{ticket: messages.Ticket{Call: messages.CallRequest{ID: id, Model: pool}, Tier: tier, Deadline: deadline}}
}

func TestQueueOrdersByTierThenArrival(t *testing.T) {
	q := newQueue()
	t0 := time.Unix(1000, 0)
	for _, w := range []*waiting{
		waitingCall("b1", "p", messages.TierBatch, t0.Add(time.Hour)),
		waitingCall("s1", "p", messages.TierStandard, t0.Add(time.Hour)),
		waitingCall("c1", "p", messages.TierCritical, t0.Add(time.Hour)),
		waitingCall("s2", "p", messages.TierStandard, t0.Add(time.Minute)),
		waitingCall("x1", "other", messages.TierHigh, t0.Add(time.Second)),
	} {
		q.push(w)
	}
	var order []string
	q.each("p", func(w *waiting) bool { order = append(order, w.ticket.Call.ID); return true })
	if got := strings.Join(order, " "); got != "c1 s1 s2 b1" {
		t.Fatalf("order %s", got)
	}
	if q.earliestDeadline().ticket.Call.ID != "x1" || q.len() != 5 || q.depth("p", messages.TierStandard) != 2 {
		t.Fatal("deadline heap or counts")
	}
	// Removing while visiting is allowed, and empties the pool.
	q.each("other", func(w *waiting) bool { q.remove(w); return true })
	if q.earliestDeadline().ticket.Call.ID != "s2" {
		t.Fatalf("earliest deadline after removal: %s", q.earliestDeadline().ticket.Call.ID)
	}
	if names := q.poolNames(); len(names) != 1 || names[0] != "p" {
		t.Fatalf("pools %v", names)
	}
	// Stopping the visit early.
	n := 0
	q.each("p", func(*waiting) bool { n++; return n < 2 })
	if n != 2 {
		t.Fatalf("visited %d after asking to stop at 2", n)
	}
	for _, w := range q.all() {
		q.remove(w)
	}
	if q.len() != 0 || len(q.pools) != 0 || q.earliestDeadline() != nil {
		t.Fatal("queue not empty")
	}
}
