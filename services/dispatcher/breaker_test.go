package dispatcher

import (
	"fmt"
	"testing"
	"time"

	"github.com/sluicehq/sluice/messages"
	"github.com/sluicehq/sluice/services/config"
)

func TestBreakerOpensProbesAndCloses(t *testing.T) {
	c := config.Circuit{FailureRate: 0.5, MinRequests: 4, WindowRequests: 8, Window: 10 * time.Second, OpenFor: 5 * time.Second, Probes: 1}
	var b breaker
	now := time.Unix(1000, 0)
	failed, ok := new(true), new(false)

	// Three failures are not enough attempts to judge.
	for i := 0; i < 3; i++ {
		if _, changed := b.record(now, c, "x", failed); changed {
			t.Fatal("opened before MinRequests attempts")
		}
	}
	if st, changed := b.record(now, c, "x", failed); !changed || st != circuitOpen {
		t.Fatalf("four failures of four: state %v", st)
	}
	if blocked, until := b.blocked(now.Add(time.Second), c); !blocked || !until.Equal(now.Add(5*time.Second)) {
		t.Fatalf("open breaker must block until OpenFor passes: %v %v", blocked, until)
	}
	// After OpenFor: half-open, one probe at a time.
	later := now.Add(6 * time.Second)
	if blocked, _ := b.blocked(later, c); blocked {
		t.Fatal("half-open breaker must let a probe through")
	}
	b.dispatched(later, "probe-1")
	if blocked, _ := b.blocked(later, c); !blocked {
		t.Fatal("only Probes calls at once while half-open")
	}
	// A straggler from before does not decide.
	if _, changed := b.record(later, c, "old", ok); changed {
		t.Fatal("a result that was not a probe changed the state")
	}
	// The probe fails: open again.
	if st, _ := b.record(later, c, "probe-1", failed); st != circuitOpen {
		t.Fatalf("failed probe: %v", st)
	}
	// Next probe succeeds: closed, counting from scratch.
	later = later.Add(6 * time.Second)
	if blocked, _ := b.blocked(later, c); blocked {
		t.Fatal("half-open again after OpenFor")
	}
	b.dispatched(later, "probe-2")
	if st, _ := b.record(later, c, "probe-2", ok); st != circuitClosed {
		t.Fatalf("successful probe: %v", st)
	}
	if _, changed := b.record(later, c, "y", failed); changed {
		t.Fatal("a closed breaker starts counting afresh")
	}
}

func TestBreakerCountsOnlyTheWindow(t *testing.T) {
	c := config.Circuit{FailureRate: 0.5, MinRequests: 4, WindowRequests: 8, Window: 10 * time.Second, OpenFor: 5 * time.Second, Probes: 1}
	var b breaker
	now := time.Unix(1000, 0)
	failed, ok := new(true), new(false)
	for i := 0; i < 3; i++ {
		b.record(now, c, "x", failed)
	}
	// Much later, old failures no longer count: 1 failure of 4 is fine.
	now = now.Add(time.Minute)
	b.record(now, c, "x", failed)
	for i := 0; i < 3; i++ {
		if _, changed := b.record(now, c, "x", ok); changed {
			t.Fatal("old failures counted")
		}
	}
	// 429s and calls never sent say nothing.
	for i := 0; i < 10; i++ {
		if _, changed := b.record(now, c, "x", nil); changed {
			t.Fatal("an outcome without a verdict changed the state")
		}
	}
}

// A busy deployment that starts failing is judged on its last attempts,
// not diluted by many earlier successes.
func TestBreakerJudgesTheLastAttempts(t *testing.T) {
	c := config.Circuit{FailureRate: 0.5, MinRequests: 4, WindowRequests: 8, Window: time.Minute, OpenFor: 5 * time.Second, Probes: 1}
	var b breaker
	now := time.Unix(1000, 0)
	for i := 0; i < 100; i++ {
		b.record(now, c, "x", new(false))
	}
	opened := 0
	for i := 1; i <= 8; i++ {
		if st, changed := b.record(now, c, "x", new(true)); changed && st == circuitOpen {
			opened = i
			break
		}
	}
	if opened != 4 {
		t.Fatalf("opened after %d failures following 100 successes; want 4 (half of the last 8)", opened)
	}
}

func TestBreakerForgetsLostProbes(t *testing.T) {
	c := config.Circuit{FailureRate: 0.5, MinRequests: 1, WindowRequests: 8, Window: 10 * time.Second, OpenFor: 5 * time.Second, Probes: 1}
	var b breaker
	now := time.Unix(1000, 0)
	b.record(now, c, "x", new(true))
	now = now.Add(6 * time.Second)
	b.blocked(now, c)
	b.dispatched(now, "lost-probe") // its executor dies; no report comes
	if blocked, _ := b.blocked(now.Add(time.Second), c); !blocked {
		t.Fatal("the probe is still out")
	}
	if blocked, _ := b.blocked(now.Add(6*time.Second), c); blocked {
		t.Fatal("a probe that never reported must stop counting after OpenFor")
	}
}

func TestRetryBudget(t *testing.T) {
	var b retryBudget
	now := time.Unix(1000, 0)
	// With no traffic, the floor allows a trickle: 1/s over the window.
	for i := 0; i < 10; i++ {
		if !b.allows(now, 0.2, 1) {
			t.Fatalf("retry %d refused within the floor", i)
		}
		b.note(now, true)
	}
	if b.allows(now, 0.2, 1) {
		t.Fatal("the floor is 10 retries per 10 s window")
	}
	// 100 first attempts buy 20 more retries.
	for i := 0; i < 100; i++ {
		b.note(now, false)
	}
	n := 0
	for b.allows(now, 0.2, 1) {
		b.note(now, true)
		n++
	}
	if n != 20 {
		t.Fatalf("%d more retries allowed, want 20", n)
	}
	// The window slides: later, the budget is back.
	if !b.allows(now.Add(budgetWindow+time.Second), 0.2, 1) {
		t.Fatal("old retries must leave the window")
	}
}

// Only what the provider did is judged: attempts cut by the call's own
// deadline or by its client, however many, leave a breaker closed.
func TestBreakerIgnoresDeadlinesAndCancels(t *testing.T) {
	want := map[messages.Outcome]*bool{
		messages.OutcomeOK:          new(false),
		messages.OutcomeRejected:    new(false),
		messages.OutcomeUnavailable: new(true),
		messages.OutcomeTimeout:     new(true),
		messages.OutcomeTransport:   new(true),
		messages.OutcomeRateLimited: nil,
		messages.OutcomeQuota:       nil,
		messages.OutcomeNotSent:     nil,
		messages.OutcomeCanceled:    nil,
		messages.OutcomeDeadline:    nil,
	}
	for o, w := range want {
		got := healthVerdict(o)
		if (got == nil) != (w == nil) || (got != nil && *got != *w) {
			t.Errorf("%s: verdict %v, want %v", o, verdictString(got), verdictString(w))
		}
	}

	c := config.Circuit{FailureRate: 0.5, MinRequests: 10, WindowRequests: 20, Window: 30 * time.Second, OpenFor: 10 * time.Second, Probes: 1}
	var b breaker
	now := time.Unix(1000, 0)
	for i := range 20 {
		for _, o := range []messages.Outcome{messages.OutcomeDeadline, messages.OutcomeCanceled} {
			if _, changed := b.record(now, c, fmt.Sprintf("%s-%d", o, i), healthVerdict(o)); changed {
				t.Fatalf("attempt %d cut by %s changed the breaker", i, o)
			}
		}
		if i%2 == 0 {
			b.record(now, c, fmt.Sprintf("ok-%d", i), healthVerdict(messages.OutcomeOK))
		}
	}
	if blocked, _ := b.blocked(now, c); blocked || b.state != circuitClosed {
		t.Fatalf("state %v after deadlines and cancels only", b.state)
	}
	// They do not dilute real failures either: ten timeouts of ten judged
	// attempts open it.
	b = breaker{}
	var st circuitState
	for i := range 10 {
		b.record(now, c, fmt.Sprintf("cut-%d", i), healthVerdict(messages.OutcomeDeadline))
		st, _ = b.record(now, c, fmt.Sprintf("timeout-%d", i), healthVerdict(messages.OutcomeTimeout))
	}
	if st != circuitOpen {
		t.Fatalf("ten attempt timeouts: state %v, want open", st)
	}
}

func verdictString(v *bool) string {
	if v == nil {
		return "none"
	}
	return fmt.Sprint(*v)
}
