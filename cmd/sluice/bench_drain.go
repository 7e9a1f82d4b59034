package main

import (
	"fmt"
	"io"

	"github.com/sluicehq/sluice/services/bench"
)

func printDrain(w io.Writer, r *bench.DrainReport) {
	fmt.Fprintf(w, "sluice bench drain on %s, %d CPUs (GOMAXPROCS %d), %s\n", r.Machine.OS, r.Machine.NumCPU, r.Machine.GOMAXPROCS, r.Machine.GoVersion)
	fmt.Fprintf(w, "%d dispatcher(s), zero-latency fake provider, limits far above the load (provider 429s: %d)\n", r.Dispatchers, r.ProviderRefused)
	fmt.Fprintf(w, "CPU: of the whole process (NATS, sluice, fake provider, this client), per call\n\n")
	b, d := r.Baseline, r.Drain
	fmt.Fprintf(w, "unsaturated end to end (%d calls, at most %d in flight): %8.0f calls/s  (%d failed, %.0f µs CPU/call)\n", b.Calls, b.Window, b.PerSecond, b.Failed, b.CPUMicrosPerCall)
	fmt.Fprintf(w, "backlog of %d batch calls, published in %.1fs, %d still waiting then\n", d.Backlog, d.PublishSeconds, d.WaitingAfterPublish)
	fmt.Fprintf(w, "  drain, after publishing:      %8.0f calls/s  (%d calls over %.1fs, %d failed, %.0f µs CPU/call)\n", d.PerSecond, d.Drained, d.Seconds, d.Failed, d.CPUMicrosPerCall)
	if d.Left > 0 {
		fmt.Fprintf(w, "  left undrained when the time (--duration) was up: %d\n", d.Left)
	}
	fmt.Fprintf(w, "  overall, publishing included: %8.0f calls/s\n", d.OverallPerSecond)
	fmt.Fprintf(w, "  drain / unsaturated:          %8.2f\n\n", r.Ratio)
	c := r.Critical
	fmt.Fprintf(w, "critical calls at %.0f/s meanwhile (%d, %d failed, %d unanswered), ms  p50      p99      max\n", c.Rate, c.Calls, c.Failed, c.Unanswered)
	fmt.Fprintf(w, "  queued (Timings.QueuedMS)                       %8.2f %8.2f %8.2f\n", c.QueuedP50MS, c.QueuedP99MS, c.QueuedMaxMS)
	fmt.Fprintf(w, "  publish to result                               %8.2f %8.2f %8.2f\n\n", c.ResultP50MS, c.ResultP99MS, c.ResultMaxMS)
	m := r.Memory
	fmt.Fprintf(w, "heap in use (whole process, after a GC): %.1f MiB before the backlog, %.1f MiB with %d calls waiting\n", mib(m.HeapBeforeBytes), mib(m.HeapPeakBytes), m.Waiting)
	fmt.Fprintf(w, "  %.0f bytes per waiting call (an upper bound for the dispatchers: NATS's share included); the calls stream stores %.0f bytes per call\n", m.BytesPerWaiting, m.StreamBytesPerWaiting)
	fmt.Fprintf(w, "  where the calls without a result were   not delivered  held by dispatchers  at executors\n")
	for _, at := range []struct {
		name string
		b    bench.Backlog
	}{{"all published", r.AfterPublish}, {"end of the drain", r.AtEnd}} {
		fmt.Fprintf(w, "    %-36s %13d  %19d  %12d\n", at.name, at.b.NotDelivered, at.b.HeldByDispatchers, at.b.AtExecutors)
	}
	fmt.Fprintln(w)
	fmt.Fprintf(w, "targets (issue 11)\n")
	fmt.Fprintf(w, "  drain >= %.1f x unsaturated:  %s (%.2f)\n", bench.DrainTargetRatio, met(r.DrainTargetMet), r.Ratio)
	fmt.Fprintf(w, "  critical p99 <= %.0f ms:       %s (%.2f ms, %d unanswered)\n", bench.CriticalTargetP99MS, met(r.CriticalTargetMet), c.QueuedP99MS, c.Unanswered)
}

func met(ok bool) string {
	if ok {
		return "met"
	}
	return "NOT met"
}

func mib(b uint64) float64 { return float64(b) / (1 << 20) }
