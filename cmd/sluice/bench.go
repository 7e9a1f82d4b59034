package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"

	"github.com/sluicehq/sluice/services/bench"
)

func runBench(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlagSet("bench", stderr)
	var o bench.Options
	fs.IntVar(&o.Calls, "calls", 20000, "calls (and baseline messages) for the throughput measurement")
	fs.Float64Var(&o.Rate, "rate", 200, "calls per second for the latency measurement")
	fs.IntVar(&o.LatencyCalls, "latency-calls", 2000, "calls for the latency measurement, through sluice and directly each")
	fs.IntVar(&o.Dispatchers, "dispatchers", 1, "dispatchers to run")
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
	rep, err := bench.Run(ctx, o)
	if err != nil {
		return err
	}
	if *asJSON {
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		return enc.Encode(rep)
	}
	printReport(stdout, rep)
	return nil
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
