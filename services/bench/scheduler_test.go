package bench

import (
	"context"
	"testing"
)

// RunScheduler measures every depth with every team count, against the
// first as its baseline. (Not how fast: no test asserts on speed.)
func TestRunScheduler(t *testing.T) {
	rep, err := RunScheduler(context.Background(), SchedulerOptions{Admissions: 2000, Waiting: []int{500, 2000}, Teams: []int{5, 50}})
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
	if b := rep.Rows[0]; b.Ratio != 1 || b.LogRatio != 1 || b.Waiting != 500 || b.Teams != 5 {
		t.Errorf("baseline row %+v: want the smallest queue over the fewest teams, at ratio 1", b)
	}
}
