package executor

import (
	"testing"
	"time"
)

func TestBackoffGrowsWithFullJitter(t *testing.T) {
	base, maxDelay := 100*time.Millisecond, time.Second
	top := func() float64 { return 0.999999 }
	for attempt, want := range map[int]time.Duration{1: 100 * time.Millisecond, 2: 200 * time.Millisecond, 3: 400 * time.Millisecond, 4: 800 * time.Millisecond, 5: time.Second, 12: time.Second} {
		got := Backoff(attempt, base, maxDelay, 0, top)
		if got > want || got < want*99/100 {
			t.Errorf("attempt %d: ceiling %v, want about %v", attempt, got, want)
		}
	}
	if got := Backoff(3, base, maxDelay, 0, func() float64 { return 0 }); got != 0 {
		t.Errorf("full jitter may wait nothing, got %v", got)
	}
	if got := Backoff(1, base, maxDelay, 2*time.Second, func() float64 { return 0.5 }); got != 2*time.Second+50*time.Millisecond {
		t.Errorf("a provider's hint is a floor with jitter on top, got %v", got)
	}
}
