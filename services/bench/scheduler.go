package bench

import (
	"context"
	"fmt"
	"math"

	"github.com/sluicehq/sluice/services/dispatcher"
)

// SchedulerOptions configures RunScheduler.
type SchedulerOptions struct {
	// Admissions per measurement. Default 20,000.
	Admissions int
	// Waiting and Teams are the queue depths and team counts measured,
	// each depth with each count. Default 1,000 / 10,000 / 100,000
	// waiting over 10 / 100 / 1,000 teams.
	Waiting, Teams []int
}

// SchedulerReport is what RunScheduler measured: one scheduler (no NATS,
// a simulated clock) admitting from queues of each depth over each number
// of teams. The first row, the smallest queue over the fewest teams, is
// the baseline the others are compared with.
type SchedulerReport struct {
	Machine    Machine        `json:"machine"`
	Admissions int            `json:"admissions"`
	Rows       []SchedulerRow `json:"rows"`
}

// SchedulerRow is one measurement.
type SchedulerRow struct {
	Waiting int `json:"waiting"`
	Teams   int `json:"teams"`
	// MicrosPerAdmission is the scheduler's time per call admitted.
	MicrosPerAdmission float64 `json:"micros_per_admission"`
	// BytesPerWaiting is the heap a waiting call holds in the scheduler
	// (empty body, no JetStream message).
	BytesPerWaiting float64 `json:"bytes_per_waiting"`
	// Ratio is MicrosPerAdmission over the baseline's, and LogRatio what
	// it would be were the cost to grow as the logarithm of the queue:
	// log(waiting)/log(the baseline's waiting).
	Ratio    float64 `json:"ratio"`
	LogRatio float64 `json:"log_ratio"`
}

// RunScheduler measures the scheduling core's cost per admission and
// memory per waiting call (see dispatcher.MeasureScheduler). ctx ends it
// between measurements.
func RunScheduler(ctx context.Context, o SchedulerOptions) (*SchedulerReport, error) {
	if o.Admissions <= 0 {
		o.Admissions = 20_000
	}
	if len(o.Waiting) == 0 {
		o.Waiting = []int{1_000, 10_000, 100_000}
	}
	if len(o.Teams) == 0 {
		o.Teams = []int{10, 100, 1_000}
	}
	rep := &SchedulerReport{Machine: machine(), Admissions: o.Admissions}
	for _, w := range o.Waiting {
		for _, teams := range o.Teams {
			if err := ctx.Err(); err != nil {
				return nil, err
			}
			got, err := dispatcher.MeasureScheduler(dispatcher.SchedulerLoad{Waiting: w, Teams: teams, Admissions: o.Admissions})
			if err != nil {
				return nil, fmt.Errorf("bench: scheduler at %d waiting over %d teams: %w", w, teams, err)
			}
			rep.Rows = append(rep.Rows, SchedulerRow{
				Waiting: w, Teams: teams,
				MicrosPerAdmission: float64(got.PerAdmission.Nanoseconds()) / 1000,
				BytesPerWaiting:    got.BytesPerWaiting,
			})
		}
	}
	base := rep.Rows[0]
	for i := range rep.Rows {
		r := &rep.Rows[i]
		r.Ratio = r.MicrosPerAdmission / base.MicrosPerAdmission
		r.LogRatio = math.Log(float64(r.Waiting)) / math.Log(float64(base.Waiting))
	}
	return rep, nil
}
