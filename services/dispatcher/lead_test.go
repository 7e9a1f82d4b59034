package dispatcher

import (
	"testing"
	"time"
)

// A backlog at the executors makes the way look long while it lasts; once
// it is gone the lead comes back within a few reports, while a way that
// grows longer raises it at once and keeps it.
func TestLeadFallsBackAfterABacklog(t *testing.T) {
	l := newLeads()
	limit := 50 * time.Millisecond
	for range 200 {
		l.note("r", 2*time.Millisecond)
	}
	if got := l.of("r", limit); got > 3*time.Millisecond {
		t.Fatalf("a steady 2 ms way: lead %v", got)
	}
	for range 500 { // the backlog: work waits up to a second
		l.note("r", 800*time.Millisecond)
	}
	if got := l.of("r", limit); got != limit {
		t.Fatalf("during the backlog: lead %v, want the cap %v", got, limit)
	}
	reports := 0
	for l.of("r", limit) > 5*time.Millisecond {
		l.note("r", 2*time.Millisecond)
		reports++
		if reports > 100 {
			t.Fatal("the lead never came back")
		}
	}
	if reports > 15 {
		t.Fatalf("%d reports of a 2 ms way to bring the lead back under 5 ms after a backlog, want at most 15", reports)
	}
	// A way that grows longer raises the lead at the first report.
	before := l.of("r", limit)
	l.note("r", 20*time.Millisecond)
	if got := l.of("r", limit); got <= before+2*time.Millisecond {
		t.Fatalf("a 20 ms report after a 2 ms way: lead %v from %v, want it raised", got, before)
	}
}
