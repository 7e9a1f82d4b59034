package test

import (
	"fmt"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

// measure runs the loads for warmup, then counts what each team had
// served over window.
func measure(t *testing.T, logs map[string]*resultLog, warmup, window time.Duration) map[string]float64 {
	t.Helper()
	time.Sleep(warmup)
	from := time.Now()
	time.Sleep(window)
	to := time.Now()
	out := map[string]float64{}
	for team, l := range logs {
		out[team] = float64(l.servedIn(from, to)[team]) / to.Sub(from).Seconds()
	}
	t.Logf("served per second: %v", out)
	return out
}

// Batch calls run only in the room other traffic leaves below
// tiers.batch.max_utilization.
func TestBatchWaitsForRoom(t *testing.T) {
	s := startStack(t, stackOptions{yaml: sharedPoolYAML(6000, "  web: {}\n  etl: {}\n", "  batch: {max_utilization: 0.5}\n")})
	startDispatcher(t, s, "d1", nil)
	startExecutors(t, s)
	nc := connect(t, s)
	js, _ := jetstream.New(nc)
	logs := map[string]*resultLog{"web": watchResults(t, nc, "web"), "etl": watchResults(t, nc, "etl")}
	startLoad(t, js, "web", "standard", 40) // 40% of the pool's 100/s
	startLoad(t, js, "etl", "batch", 100)
	got := measure(t, logs, 3*time.Second, 5*time.Second)
	if got["web"] < 36 {
		t.Errorf("standard traffic got %.1f/s of the 40/s it asked", got["web"])
	}
	if got["etl"] < 5 || got["etl"] > 15 || got["web"]+got["etl"] > 56 {
		t.Errorf("batch got %.1f/s; with standard at 40%% and max_utilization 0.5 it should get about 10/s", got["etl"])
	}
}

// Inside an off-peak window batch calls use all the room there is.
func TestBatchRunsFreelyOffPeak(t *testing.T) {
	now := time.Now().UTC()
	window := fmt.Sprintf("%s-%s", now.Add(-time.Hour).Format("15:04"), now.Add(time.Hour).Format("15:04"))
	s := startStack(t, stackOptions{yaml: sharedPoolYAML(6000, "  etl: {}\n", fmt.Sprintf("  batch: {max_utilization: 0.3, off_peak: [%q]}\n", window))})
	startDispatcher(t, s, "d1", nil)
	startExecutors(t, s)
	nc := connect(t, s)
	js, _ := jetstream.New(nc)
	logs := map[string]*resultLog{"etl": watchResults(t, nc, "etl")}
	startLoad(t, js, "etl", "batch", 150)
	got := measure(t, logs, 2*time.Second, 4*time.Second)
	// On peak, max_utilization would hold batch to 30/s: twice that
	// shows it does not apply, whatever a busy machine leaves of the 100.
	if got["etl"] < 60 {
		t.Errorf("off-peak, batch got %.1f/s of the pool's 100/s; max_utilization 0.3 (30/s) should not apply", got["etl"])
	}
}

// The critical reserve keeps room that only critical calls may use, and a
// lower tier's minimum share keeps it from starving under higher ones.
func TestReserveAndMinimumShare(t *testing.T) {
	s := startStack(t, stackOptions{yaml: sharedPoolYAML(6000, "  ops: {}\n  web: {}\n  etl: {}\n",
		"  critical: {reserve: 0.2}\n  batch: {min_share: 0.1, max_utilization: 1}\n  standard: {min_share: 0}\n")})
	startDispatcher(t, s, "d1", nil)
	startExecutors(t, s)
	nc := connect(t, s)
	js, _ := jetstream.New(nc)
	logs := map[string]*resultLog{"web": watchResults(t, nc, "web"), "etl": watchResults(t, nc, "etl"), "ops": watchResults(t, nc, "ops")}
	startLoad(t, js, "web", "high", 150) // more than the whole pool
	startLoad(t, js, "etl", "batch", 50)
	got := measure(t, logs, 3*time.Second, 5*time.Second)
	// high may use the pool but the reserve (80/s) and batch's minimum
	// share (10/s) comes first.
	if got["web"] > 75 || got["etl"] < 8 || got["etl"] > 13 {
		t.Errorf("high %.1f/s and batch %.1f/s; want high at most 70-80/s (reserve 20%%) and batch about 10/s (min share 10%%)", got["web"], got["etl"])
	}
	// Critical calls find the reserve at once.
	critical := startLoad(t, js, "ops", "critical", 15)
	got = measure(t, logs, 2*time.Second, 4*time.Second)
	critical.halt()
	if got["ops"] < 13 {
		t.Errorf("critical got %.1f/s of the 15/s it asked, with the reserve for it", got["ops"])
	}
}

// A team's guarantee holds against a team with a much larger weight.
func TestGuaranteeHolds(t *testing.T) {
	s := startStack(t, stackOptions{yaml: sharedPoolYAML(6000,
		"  big: {pools: {m: {weight: 9}}}\n  small: {pools: {m: {weight: 1, guaranteed_rpm: 1800}}}\n", "")})
	startDispatcher(t, s, "d1", nil)
	startExecutors(t, s)
	nc := connect(t, s)
	js, _ := jetstream.New(nc)
	logs := map[string]*resultLog{"big": watchResults(t, nc, "big"), "small": watchResults(t, nc, "small")}
	startLoad(t, js, "big", "standard", 150)
	startLoad(t, js, "small", "standard", 60)
	got := measure(t, logs, 3*time.Second, 5*time.Second)
	// By weight alone small would get 10/s; its guarantee is 30/s.
	if got["small"] < 27 || got["small"] > 36 {
		t.Errorf("small got %.1f/s; its guarantee is 30/s (weights alone would give 10/s)", got["small"])
	}
}
