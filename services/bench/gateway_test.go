package bench

import (
	"context"
	"testing"
	"time"
)

// TestRunGateway runs the gateway mode briefly at a low rate and checks
// that the report is complete and coherent. It says nothing about speed:
// a test machine's speed is not the code's.
func TestRunGateway(t *testing.T) {
	if testing.Short() {
		t.Skip("starts sluice and sends calls for a few seconds")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	rep, err := RunGateway(ctx, GatewayOptions{Duration: 300 * time.Millisecond, Rates: []float64{50}})
	if err != nil {
		t.Fatal(err)
	}
	if rep.ProviderRefused != 0 {
		t.Errorf("the fake provider refused %d calls; it must not limit this run", rep.ProviderRefused)
	}
	if len(rep.Rows) != 2 {
		t.Fatalf("%d rows, want 2 (chat and stream at one rate): %+v", len(rep.Rows), rep.Rows)
	}
	for i, kind := range []string{"chat", "stream"} {
		row := rep.Rows[i]
		if row.Kind != kind || row.Rate != 50 {
			t.Errorf("row %d is %s at %v/s, want %s at 50/s", i, row.Kind, row.Rate, kind)
		}
		for name, p := range map[string]PathStats{"direct": row.Direct, "gateway": row.Gateway} {
			if p.Sent == 0 || p.OK != p.Sent || p.Errors != 0 {
				t.Errorf("%s %s: sent %d, ok %d, errors %d (%s)", kind, name, p.Sent, p.OK, p.Errors, p.FirstError)
			}
			if p.P50 <= 0 || p.P99 < p.P50 {
				t.Errorf("%s %s: p50 %v ms, p99 %v ms", kind, name, p.P50, p.P99)
			}
			if p.SentPerSecond <= 0 || p.PerSecond <= 0 {
				t.Errorf("%s %s: %v sent/s, %v answered/s", kind, name, p.SentPerSecond, p.PerSecond)
			}
		}
		if row.AddedP50 != row.Gateway.P50-row.Direct.P50 || row.RatioP50 <= 0 || row.RatioP99 <= 0 {
			t.Errorf("%s: added p50 %v, ratios %v and %v", kind, row.AddedP50, row.RatioP50, row.RatioP99)
		}
	}
}
