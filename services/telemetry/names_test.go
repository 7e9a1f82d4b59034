package telemetry

import (
	"strings"
	"testing"
)

func TestNamesListsEveryMetric(t *testing.T) {
	names := Names()
	got := strings.Join(names, " ")
	for _, want := range []string{"sluice_calls_total", "sluice_queue_wait_seconds", "sluice_provider_429_total", "sluice_deployment_state"} {
		if !strings.Contains(got, want) {
			t.Errorf("Names() lacks %s: %s", want, got)
		}
	}
	for _, n := range names {
		if !strings.HasPrefix(n, "sluice_") {
			t.Errorf("metric %s is not named sluice_*", n)
		}
	}
}
