package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"strconv"
	"strings"
	"time"

	"github.com/sluicehq/sluice/services/bench"
)

func runBench(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlagSet("bench", stderr)
	var o bench.Options
	var acc bench.AccuracyOptions
	var gw bench.GatewayOptions
	mode := fs.String("mode", "throughput", "throughput: calls/s and added latency against a JetStream baseline; accuracy: 429s and capacity used under twice the demand; fairness: teams' shares and critical waits under three times the demand; gateway: latency the HTTP gateway and sluice add over calling the provider directly; drain: how fast a backlog drains against the unsaturated end-to-end rate, and critical waits meanwhile; scheduler: one dispatcher's scheduling cost per admission and memory per waiting call at 1,000 to 100,000 waiting over 10 to 1,000 teams, with no NATS")
	fs.DurationVar(&acc.Duration, "duration", 60*time.Second, "accuracy, fairness: how long to offer the demand (default for accuracy 65s); gateway: each measurement (default there 5s); drain: the longest the backlog drains after publishing, what is left then is abandoned")
	rates := fs.String("rates", "100,1000", "gateway: arrival rates, calls per second, comma-separated")
	fs.DurationVar(&gw.ProviderLatency, "provider-latency", time.Millisecond, "gateway: the fake provider's fixed latency, the same on both paths")
	fs.Float64Var(&acc.Demand, "demand", 2, "accuracy: demand as a multiple of the capacity")
	enforcement := fs.String("enforcement", "all", "accuracy: how the fake provider enforces its limits, comma-separated: "+strings.Join(bench.ModelNames(), ", ")+"; or all")
	rpms := fs.String("rpm", "600,6000", "accuracy: each key's requests per minute, one run per value, comma-separated")
	fs.IntVar(&o.Calls, "calls", 20000, "calls (and baseline messages) for the throughput measurement; drain: calls of the unsaturated baseline (default there 10000)")
	fs.Float64Var(&o.Rate, "rate", 200, "calls per second for the latency measurement; drain: of the critical calls published while the backlog drains (default there 20)")
	fs.IntVar(&o.LatencyCalls, "latency-calls", 2000, "calls for the latency measurement, through sluice and directly each")
	fs.IntVar(&o.Dispatchers, "dispatchers", 0, "dispatchers to run (default 1 for throughput, 3 for accuracy, 2 for fairness and drain)")
	var dr bench.DrainOptions
	fs.IntVar(&dr.Backlog, "backlog", 100_000, "drain: batch calls published at once")
	asJSON := fs.Bool("json", false, "print the report as JSON")
	logLevel := fs.String("log-level", "warn", "debug, info, warn or error")
	if err := parse(fs, args); err != nil {
		return err
	}
	log, err := newLogger(stderr, *logLevel)
	if err != nil {
		return err
	}
	o.Logger = log
	set := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { set[f.Name] = true })
	durationSet := set["duration"]
	switch *mode {
	case "gateway":
		// --duration's default suits the other modes' single
		// measurement; the gateway mode makes eight.
		if durationSet {
			gw.Duration = acc.Duration
		}
		if gw.Rates, err = parseRates(*rates); err != nil {
			return err
		}
		gw.Dispatchers, gw.Logger = o.Dispatchers, log
		rep, err := bench.RunGateway(ctx, gw)
		if err != nil {
			return err
		}
		if *asJSON {
			return writeJSON(stdout, rep)
		}
		printGateway(stdout, rep)
	case "throughput":
		rep, err := bench.Run(ctx, o)
		if err != nil {
			return err
		}
		if *asJSON {
			return writeJSON(stdout, rep)
		}
		printReport(stdout, rep)
	case "fairness":
		rep, err := bench.RunFairness(ctx, bench.FairnessOptions{Duration: acc.Duration, Dispatchers: o.Dispatchers})
		if err != nil {
			return err
		}
		if *asJSON {
			return writeJSON(stdout, rep)
		}
		printFairness(stdout, rep)
	case "accuracy":
		acc.Dispatchers = o.Dispatchers
		if !durationSet {
			acc.Duration = 0 // the mode's own default
		}
		if *enforcement != "all" {
			acc.Models = strings.Split(*enforcement, ",")
		}
		if acc.RPMs, err = parseRPMs(*rpms); err != nil {
			return err
		}
		rep, err := bench.RunAccuracy(ctx, acc)
		if err != nil {
			return err
		}
		if *asJSON {
			return writeJSON(stdout, rep)
		}
		printAccuracy(stdout, rep)
	case "drain":
		// --calls and --rate default to the throughput mode's figures;
		// the drain mode has its own unless they are given.
		if set["calls"] {
			dr.BaselineCalls = o.Calls
		}
		if set["rate"] {
			dr.CriticalRate = o.Rate
		}
		if durationSet {
			dr.Duration = acc.Duration
		}
		dr.Dispatchers, dr.Logger = o.Dispatchers, log
		rep, err := bench.RunDrain(ctx, dr)
		if err != nil {
			return err
		}
		if *asJSON {
			return writeJSON(stdout, rep)
		}
		printDrain(stdout, rep)
	case "scheduler":
		rep, err := bench.RunScheduler(ctx, bench.SchedulerOptions{})
		if err != nil {
			return err
		}
		if *asJSON {
			return writeJSON(stdout, rep)
		}
		printScheduler(stdout, rep)
	default:
		return fmt.Errorf("-mode %q: use throughput, accuracy, fairness, gateway, drain or scheduler", *mode)
	}
	return nil
}

func writeJSON(w io.Writer, v any) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}

func printAccuracy(w io.Writer, r *bench.AccuracyReport) {
	fmt.Fprintf(w, "sluice bench accuracy on %s, %d CPUs, %s\n", r.Machine.OS, r.Machine.NumCPU, r.Machine.GoVersion)
	fmt.Fprintf(w, "%d dispatchers, 2 regions x 2 keys, twice the configured capacity offered\n\n", r.Dispatchers)
	fmt.Fprintf(w, "model        rpm/key  429s (after 30s)  used (after 30s)  most in 1s (allowed, bound)  most in 60s (allowed, bound)  KV ops/call\n")
	for _, run := range r.Runs {
		fmt.Fprintf(w, "%-11s %8d  %5d (%5d)      %5.1f%% (%5.1f%%)    %5d (%d, %.1f)         %6d (%d, %.1f)          %.2f\n",
			run.Model.Name, run.RPM, run.Refused, run.RefusedAfter30s, 100*run.Used, 100*run.UsedAfter30s,
			run.Max1s, run.Limit1s, run.Bound1s, run.Max60s, run.Limit60s, run.Bound60s, run.KVOpsPerCall)
	}
	fmt.Fprintf(w, "\nsend timing, ms after each request's send time (the bound holds for arrivals within J = %.0f ms)\n", accuracyJitterMS(r))
	fmt.Fprintf(w, "model        rpm/key  sent p50/p99/max      to provider p50/p99/max (p99 prepare/write/deliver)  arrived p99/max  later than J  early  most scheduled in 1s+J  work late (too late)  handed back\n")
	for _, run := range r.Runs {
		t := run.Timing
		fmt.Fprintf(w, "%-11s %8d  %5.2f/%5.2f/%6.1f    %5.2f/%5.2f/%6.1f (%5.2f/%5.2f/%5.2f)         %5.2f/%6.1f     %5d (%.2f%%)  %5d  %22d  %9d (%8d)  %11d\n",
			run.Model.Name, run.RPM, t.SendP50MS, t.SendP99MS, t.SendMaxMS, t.WireP50MS, t.WireP99MS, t.WireMaxMS,
			t.PrepareP99MS, t.WriteP99MS, t.DeliverP99MS,
			t.ArrivalP99MS, t.ArrivalMaxMS, t.ArrivedLate, 100*float64(t.ArrivedLate)/float64(max(t.Followed, 1)), t.ArrivedEarly,
			t.MaxScheduled,
			t.ReceivedLate, t.ReceivedTooLate, t.HandedBack)
	}
	fmt.Fprintf(w, "\nmodels:\n")
	seen := map[string]bool{}
	for _, run := range r.Runs {
		if !seen[run.Model.Name] {
			seen[run.Model.Name] = true
			fmt.Fprintf(w, "  %-11s %s\n", run.Model.Name, run.Model.Description)
		}
	}
}

// accuracyJitterMS is the jitter the runs of r were made with.
func accuracyJitterMS(r *bench.AccuracyReport) float64 {
	if len(r.Runs) == 0 {
		return 0
	}
	return r.Runs[0].Timing.JitterMS
}

// parseRPMs reads a comma-separated list of positive whole numbers.
func parseRPMs(s string) ([]int64, error) {
	var out []int64
	for _, f := range strings.Split(s, ",") {
		n, err := strconv.ParseInt(strings.TrimSpace(f), 10, 64)
		if err != nil || n <= 0 {
			return nil, fmt.Errorf("--rpm: %q is not a positive whole number", f)
		}
		out = append(out, n)
	}
	return out, nil
}

func printReport(w io.Writer, r *bench.Report) {
	fmt.Fprintf(w, "sluice bench on %s, %d CPUs (GOMAXPROCS %d), %s\n\n", r.Machine.OS, r.Machine.NumCPU, r.Machine.GOMAXPROCS, r.Machine.GoVersion)
	fmt.Fprintf(w, "throughput (%d calls, %d dispatcher(s), zero-latency fake provider)\n", r.EndToEnd.Count, r.Options.Dispatchers)
	fmt.Fprintf(w, "  JetStream baseline (publish, consume, ack): %8.0f msgs/s\n", r.Baseline.PerSecond)
	fmt.Fprintf(w, "  sluice end to end:                          %8.0f calls/s  (%.2f of the baseline)\n", r.EndToEnd.PerSecond, r.EndToEnd.PerSecond/r.Baseline.PerSecond)
	fmt.Fprintf(w, "  KV operations per call:                     %8.3f\n\n", r.KVOpsPerCal)
	fmt.Fprintf(w, "latency at %.0f calls/s (%d calls each way), ms\n", r.Latency.Rate, r.Latency.Calls)
	fmt.Fprintf(w, "                  p50      p99\n")
	fmt.Fprintf(w, "  direct      %8.2f %8.2f\n", r.Latency.DirectP50, r.Latency.DirectP99)
	fmt.Fprintf(w, "  via sluice  %8.2f %8.2f\n", r.Latency.SluiceP50, r.Latency.SluiceP99)
	fmt.Fprintf(w, "  added       %8.2f %8.2f\n", r.Latency.AddedP50, r.Latency.AddedP99)
}

func printFairness(w io.Writer, r *bench.FairnessReport) {
	fmt.Fprintf(w, "sluice bench fairness on %s, %d CPUs, %s\n\n", r.Machine.OS, r.Machine.NumCPU, r.Machine.GoVersion)
	fmt.Fprintf(w, "%d dispatchers, one pool of %.0f calls/s, %.0f/s offered for %.0fs (provider 429s: %d)\n\n", r.Dispatchers, r.Capacity, r.Offered, r.Seconds, r.Refused)
	fmt.Fprintf(w, "  team     tier      weight  offered/s  served/s  share   entitlement\n")
	for _, t := range r.Teams {
		fmt.Fprintf(w, "  %-8s %-9s %6.0f  %9.0f  %8.1f  %5.1f%%  %5.1f%%\n", t.Team, t.Tier, t.Weight, t.Offered, t.Served, 100*t.Share, 100*t.Entitlement)
	}
	fmt.Fprintf(w, "\n  critical wait:  p50 %.1f ms, p99 %.1f ms\n", r.CriticalWaitP50MS, r.CriticalWaitP99MS)
	fmt.Fprintf(w, "  scheduling:     %.1f µs per call admitted\n", r.ScheduleMicrosPerCall)
}

// parseRates reads a comma-separated list of positive rates.
func parseRates(s string) ([]float64, error) {
	var out []float64
	for _, f := range strings.Split(s, ",") {
		r, err := strconv.ParseFloat(strings.TrimSpace(f), 64)
		if err != nil || r <= 0 || r > 1e6 {
			return nil, fmt.Errorf("-rates %q: want positive calls per second, such as 100,1000", s)
		}
		out = append(out, r)
	}
	return out, nil
}

func printGateway(w io.Writer, r *bench.GatewayReport) {
	fmt.Fprintf(w, "sluice bench gateway on %s, %d CPUs (GOMAXPROCS %d), %s\n\n", r.Machine.OS, r.Machine.NumCPU, r.Machine.GOMAXPROCS, r.Machine.GoVersion)
	fmt.Fprintf(w, "gateway -> NATS -> %d dispatcher(s) -> executor -> fake provider, against the fake provider directly over HTTP\n", r.Dispatchers)
	fmt.Fprintf(w, "provider latency %.1f ms (chunks %.1f ms apart), %.0fs per measurement, provider 429s: %d\n", r.ProviderLatencyMS, r.ChunkDelayMS, r.Seconds, r.ProviderRefused)
	fmt.Fprintf(w, "chat: the whole answer; stream: time to first chunk (TTFC). Milliseconds; CPU: cores the whole process used.\n\n")
	fmt.Fprintf(w, "  kind    rate/s  path     sent/s  ok/s  errors  CPU     p50     p99   added p50  added p99  ratio p50  ratio p99\n")
	for _, row := range r.Rows {
		for i, p := range []struct {
			name string
			s    bench.PathStats
		}{{"direct", row.Direct}, {"gateway", row.Gateway}} {
			fmt.Fprintf(w, "  %-6s %7.0f  %-7s %7.0f %5.0f %7d %4.2f %7.2f %7.2f", row.Kind, row.Rate, p.name, p.s.SentPerSecond, p.s.PerSecond, p.s.Errors, p.s.CPU, p.s.P50, p.s.P99)
			if i == 1 {
				fmt.Fprintf(w, "  %9.2f  %9.2f  %9.2f  %9.2f", row.AddedP50, row.AddedP99, row.RatioP50, row.RatioP99)
			}
			fmt.Fprintln(w)
		}
	}
	for _, row := range r.Rows {
		for _, p := range []struct {
			name string
			s    bench.PathStats
		}{{"direct", row.Direct}, {"gateway", row.Gateway}} {
			if p.s.FirstError != "" {
				fmt.Fprintf(w, "\n  %s %s at %.0f/s, first error: %s", row.Kind, p.name, row.Rate, p.s.FirstError)
			}
		}
	}
	fmt.Fprintln(w)
}
