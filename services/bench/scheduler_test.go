package bench

import (
	"context"
	"testing"
)

// RunScheduler measures every depth with every team count, against the
// first as its baseline. (Not how fast: no test asserts on speed.)
func TestRunScheduler(t *testing.T) {
	// Queues deep enough that their heap dwarfs what the package's
	// parallel tests allocate and free meanwhile (the heap is the
	// process's): at 500 calls, one run measured -4,470 bytes a call.
	rep, err := RunScheduler(context.Background(), SchedulerOptions{Admissions: 2000, Waiting: []int{20_000, 40_000}, Teams: []int{5, 50}})
	if err != nil {
		t.Fatal(err)
	}
	if len(rep.Rows) != 4 {
		t.Fatalf("%d rows, want 4 (2 depths x 2 team counts)", len(rep.Rows))
	}
	for _, r := range rep.Rows {
		if r.MicrosPerAdmission <= 0 || r.BytesPerWaiting <= 0 || r.Ratio <= 0 || r.LogRatio < 1 {
			t.Errorf("row %+v: every figure must be measured", r)
		}
	}
	if b := rep.Rows[0]; b.Ratio != 1 || b.LogRatio != 1 || b.Waiting != 20_000 || b.Teams != 5 {
		t.Errorf("baseline row %+v: want the smallest queue over the fewest teams, at ratio 1", b)
	}
}
