package executor

import (
	"testing"
	"time"
)

func TestSendCountsCountSinceALesson(t *testing.T) {
	var c sendCounts
	now := time.Unix(1000, 0)
	for i := range 100 {
		c.sent("d", now.Add(time.Duration(i)*10*time.Millisecond)) // 100 in the second before now+1s
	}
	c.refused("d", now.Add(900*time.Millisecond))
	c.sent("other", now)
	end := now.Add(time.Second)
	if sent, refused := c.since("d", time.Time{}, end); sent != 100 || refused != 1 {
		t.Fatalf("since ever: %d sent, %d refused; want 100 and 1", sent, refused)
	}
	if sent, refused := c.since("d", now.Add(500*time.Millisecond), end); sent != 50 || refused != 1 {
		t.Fatalf("since half a second: %d sent, %d refused; want 50 and 1", sent, refused)
	}
	// Counts older than the sample are forgotten, and their buckets reused.
	later := end.Add(20 * time.Second)
	c.sent("d", later)
	if sent, refused := c.since("d", time.Time{}, later); sent != 1 || refused != 0 {
		t.Fatalf("20 s later: %d sent, %d refused; want 1 and 0", sent, refused)
	}
	if sent, _ := c.since("unknown", time.Time{}, later); sent != 0 {
		t.Fatal("a deployment never sent to has sent nothing")
	}
}
