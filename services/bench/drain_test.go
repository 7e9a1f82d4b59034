package bench

import (
	"context"
	"testing"
	"time"
)

// TestRunDrain drains a tiny backlog and checks that the report is
// complete and coherent. It says nothing about speed: a test machine's
// speed is not the code's.
func TestRunDrain(t *testing.T) {
	if testing.Short() {
		t.Skip("starts sluice and drains a backlog")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	rep, err := RunDrain(ctx, DrainOptions{Backlog: 500, BaselineCalls: 200, Window: 50, CriticalRate: 50})
	if err != nil {
		t.Fatal(err)
	}
	if rep.Dispatchers != 2 || rep.ProviderRefused != 0 {
		t.Errorf("%d dispatchers, %d provider 429s; want 2 and none", rep.Dispatchers, rep.ProviderRefused)
	}
	b := rep.Baseline
	if b.Calls != 200 || b.Window != 50 || b.Failed != 0 || b.Seconds <= 0 || b.PerSecond <= 0 || b.CPUMicrosPerCall < 0 {
		t.Errorf("baseline: %+v", b)
	}
	d := rep.Drain
	if d.Backlog != 500 || d.Failed != 0 || d.PublishSeconds <= 0 || d.OverallPerSecond <= 0 {
		t.Errorf("drain: %+v", d)
	}
	if d.WaitingAfterPublish < 0 || d.WaitingAfterPublish > d.Backlog {
		t.Errorf("drain: %d waiting after publishing a backlog of %d", d.WaitingAfterPublish, d.Backlog)
	}
	if done := d.Backlog - d.WaitingAfterPublish; done+d.Drained+d.Left != d.Backlog || d.Left < 0 {
		t.Errorf("drain: %d done while publishing, %d drained, %d left, of %d", done, d.Drained, d.Left, d.Backlog)
	}
	if d.Drained > 0 && (d.Seconds <= 0 || d.PerSecond <= 0) {
		t.Errorf("drain: %d waiting, drained at %v/s over %vs", d.WaitingAfterPublish, d.PerSecond, d.Seconds)
	}
	if rep.Ratio != ratio(d.PerSecond, b.PerSecond) {
		t.Errorf("ratio %v, want %v / %v", rep.Ratio, d.PerSecond, b.PerSecond)
	}
	c := rep.Critical
	if c.Rate != 50 || c.Calls == 0 || c.Failed != 0 || c.Unanswered < 0 || c.Unanswered > c.Calls {
		t.Errorf("critical: %+v", c)
	}
	if c.QueuedP50MS < 0 || c.QueuedP99MS < c.QueuedP50MS || c.QueuedMaxMS < c.QueuedP99MS ||
		c.ResultP50MS <= 0 || c.ResultP99MS < c.ResultP50MS || c.ResultMaxMS < c.ResultP99MS || c.ResultMaxMS < c.QueuedMaxMS {
		t.Errorf("critical waits out of order: %+v", c)
	}
	m := rep.Memory
	if m.HeapBeforeBytes == 0 || m.HeapPeakBytes == 0 || m.Waiting < 0 || m.Waiting > d.WaitingAfterPublish {
		t.Errorf("memory: %+v, with %d waiting after publishing", m, d.WaitingAfterPublish)
	}
	for name, b := range map[string]Backlog{"after publishing": rep.AfterPublish, "at the end": rep.AtEnd} {
		if most := d.Backlog + c.Calls; b.HeldByDispatchers < 0 || b.HeldByDispatchers > most || b.NotDelivered > uint64(most) || b.AtExecutors > uint64(most) {
			t.Errorf("backlog %s: %+v", name, b)
		}
	}
	if m.Waiting > 0 && (m.BytesPerWaiting == 0 || m.StreamBytesPerWaiting <= 0) {
		t.Errorf("memory: %+v", m)
	}
	if rep.DrainTargetMet != (rep.Ratio >= DrainTargetRatio) || rep.CriticalTargetMet != (c.Unanswered == 0 && c.QueuedP99MS <= CriticalTargetP99MS) {
		t.Errorf("targets met %v and %v, for a ratio of %v and a critical p99 of %v ms", rep.DrainTargetMet, rep.CriticalTargetMet, rep.Ratio, c.QueuedP99MS)
	}
}
