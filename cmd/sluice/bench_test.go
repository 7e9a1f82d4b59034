package main

import (
	"encoding/json"
	"strings"
	"testing"

	"github.com/sluicehq/sluice/services/bench"
)

func TestBenchJSON(t *testing.T) {
	t.Parallel()
	code, stdout, stderr := runExecute("bench", "--calls", "300", "--latency-calls", "50", "--rate", "100", "--json")
	if code != 0 {
		t.Fatalf("exit code %d, want 0\nstdout:\n%s\nstderr:\n%s", code, stdout, stderr)
	}
	var raw map[string]json.RawMessage
	if err := json.Unmarshal([]byte(stdout), &raw); err != nil {
		t.Fatalf("stdout is not one JSON object: %v\n%s", err, stdout)
	}
	rep := map[string]map[string]any{}
	for k, v := range raw {
		var m map[string]any
		if json.Unmarshal(v, &m) == nil {
			rep[k] = m
		}
	}
	number := func(section, field string) (float64, bool) {
		v, ok := rep[section][field].(float64)
		return v, ok
	}
	for _, section := range []string{"baseline_jetstream", "end_to_end"} {
		if v, ok := number(section, "per_second"); !ok || v <= 0 {
			t.Errorf("%s.per_second is %v, want a positive number", section, rep[section]["per_second"])
		}
		if v, ok := number(section, "count"); !ok || v != 300 {
			t.Errorf("%s.count is %v, want the --calls 300", section, rep[section]["count"])
		}
	}
	for _, field := range []string{"rate", "calls", "direct_p50_ms", "direct_p99_ms", "sluice_p50_ms", "sluice_p99_ms", "added_p50_ms", "added_p99_ms"} {
		if _, ok := number("added_latency", field); !ok {
			t.Errorf("added_latency.%s is missing or not a number: %v", field, rep["added_latency"])
		}
	}
	if v, _ := number("added_latency", "calls"); v != 50 {
		t.Errorf("added_latency.calls is %v, want the --latency-calls 50", v)
	}
	if v, _ := number("added_latency", "rate"); v != 100 {
		t.Errorf("added_latency.rate is %v, want the --rate 100", v)
	}
	if _, ok := raw["kv_ops_per_call"]; !ok {
		t.Errorf("no kv_ops_per_call:\n%s", stdout)
	}
}

func TestBenchText(t *testing.T) {
	t.Parallel()
	code, stdout, stderr := runExecute("bench", "--calls", "50", "--latency-calls", "10", "--rate", "200")
	if code != 0 {
		t.Fatalf("exit code %d, want 0\nstdout:\n%s\nstderr:\n%s", code, stdout, stderr)
	}
	for _, want := range []string{"sluice bench on", "JetStream baseline", "sluice end to end", "KV operations per call", "via sluice", "added"} {
		if !strings.Contains(stdout, want) {
			t.Errorf("the report does not say %q:\n%s", want, stdout)
		}
	}
}

func TestBenchDrain(t *testing.T) {
	t.Parallel()
	code, stdout, stderr := runExecute("bench", "--mode", "drain", "--backlog", "500", "--calls", "200", "--rate", "50", "--json")
	if code != 0 {
		t.Fatalf("exit code %d, want 0\nstdout:\n%s\nstderr:\n%s", code, stdout, stderr)
	}
	var rep struct {
		Baseline struct {
			Calls     int     `json:"calls"`
			PerSecond float64 `json:"per_second"`
		} `json:"baseline"`
		Drain struct {
			Backlog   int     `json:"backlog"`
			PerSecond float64 `json:"per_second"`
		} `json:"drain"`
		Ratio    *float64 `json:"ratio"`
		Critical struct {
			Rate  float64 `json:"rate"`
			Calls int     `json:"calls"`
		} `json:"critical"`
		Memory struct {
			BytesPerWaiting *float64 `json:"bytes_per_waiting_call"`
		} `json:"memory"`
		DrainMet    *bool `json:"drain_target_met"`
		CriticalMet *bool `json:"critical_target_met"`
	}
	if err := json.Unmarshal([]byte(stdout), &rep); err != nil {
		t.Fatalf("stdout is not the drain report: %v\n%s", err, stdout)
	}
	if rep.Baseline.Calls != 200 || rep.Baseline.PerSecond <= 0 {
		t.Errorf("baseline %+v, want the --calls 200 at a positive rate", rep.Baseline)
	}
	if rep.Drain.Backlog != 500 || rep.Critical.Rate != 50 || rep.Critical.Calls == 0 {
		t.Errorf("drain %+v, critical %+v; want the --backlog 500 and --rate 50", rep.Drain, rep.Critical)
	}
	if rep.Ratio == nil || rep.Memory.BytesPerWaiting == nil || rep.DrainMet == nil || rep.CriticalMet == nil {
		t.Errorf("fields missing:\n%s", stdout)
	}
}

func TestBenchDrainText(t *testing.T) {
	t.Parallel()
	code, stdout, stderr := runExecute("bench", "--mode", "drain", "--backlog", "300", "--calls", "100")
	if code != 0 {
		t.Fatalf("exit code %d, want 0\nstdout:\n%s\nstderr:\n%s", code, stdout, stderr)
	}
	for _, want := range []string{"sluice bench drain on", "unsaturated end to end", "drain, after publishing", "drain / unsaturated", "queued (Timings.QueuedMS)", "bytes per waiting call", "targets (issue 11)", "critical p99 <= 50 ms"} {
		if !strings.Contains(stdout, want) {
			t.Errorf("the report does not say %q:\n%s", want, stdout)
		}
	}
}

// The scheduler mode's report names each row's queue and its figures, and
// the target.
func TestBenchSchedulerText(t *testing.T) {
	rep := &bench.SchedulerReport{Admissions: 100, Rows: []bench.SchedulerRow{
		{Waiting: 1000, Teams: 10, MicrosPerAdmission: 4, BytesPerWaiting: 470, Ratio: 1, LogRatio: 1},
		{Waiting: 100000, Teams: 1000, MicrosPerAdmission: 25, BytesPerWaiting: 500, Ratio: 6.25, LogRatio: 1.67},
	}}
	var out strings.Builder
	printScheduler(&out, rep)
	for _, want := range []string{"sluice bench scheduler on", "µs/admission", "100000    1000         25.00      6.25       1.67            500", "NOT met (worst 25.00 µs, 100000 waiting over 1000 teams)"} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("the report does not say %q:\n%s", want, out.String())
		}
	}
}
