package main

import (
	"fmt"
	"io"

	"github.com/sluicehq/sluice/services/bench"
)

func printScheduler(w io.Writer, r *bench.SchedulerReport) {
	fmt.Fprintf(w, "sluice bench scheduler on %s, %d CPUs (GOMAXPROCS %d), %s\n", r.Machine.OS, r.Machine.NumCPU, r.Machine.GOMAXPROCS, r.Machine.GoVersion)
	fmt.Fprintf(w, "one dispatcher's scheduler, no NATS, a simulated clock; %d admissions per row, the queue kept as deep\n", r.Admissions)
	fmt.Fprintf(w, "bytes per waiting call: the scheduler's own (empty body, no JetStream message)\n\n")
	fmt.Fprintf(w, "waiting   teams  µs/admission  vs first  log ratio  bytes/waiting\n")
	for _, row := range r.Rows {
		fmt.Fprintf(w, "%7d  %6d  %12.2f  %8.2f  %9.2f  %13.0f\n", row.Waiting, row.Teams, row.MicrosPerAdmission, row.Ratio, row.LogRatio, row.BytesPerWaiting)
	}
	worst := r.Rows[0]
	for _, row := range r.Rows {
		if row.MicrosPerAdmission > worst.MicrosPerAdmission {
			worst = row
		}
	}
	met := "met"
	if worst.MicrosPerAdmission > 20 {
		met = "NOT met"
	}
	fmt.Fprintf(w, "\ntarget (issue 11): at most 20 µs per admission at every size: %s (worst %.2f µs, %d waiting over %d teams)\n", met, worst.MicrosPerAdmission, worst.Waiting, worst.Teams)
}
