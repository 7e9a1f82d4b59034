package dispatcher

import (
	"time"

	"github.com/sluicehq/sluice/messages"
	"github.com/sluicehq/sluice/services/config"
)

// circuitState is a breaker's state.
type circuitState int

const (
	circuitClosed circuitState = iota
	circuitOpen
	circuitHalfOpen
)

func (s circuitState) String() string {
	return [...]string{"closed", "open", "half_open"}[s]
}

// breaker is the circuit breaker of one deployment or one region, fed by
// the attempt reports of the calls this dispatcher admitted. When its last
// attempts (config.Circuit.WindowRequests of them, within Window) failed
// at the configured rate, with enough of them to judge, it opens: no calls
// go there for OpenFor. Then it lets Probes calls through (half-open); a
// probe that succeeds closes it, one that fails opens it again.
//
// Each dispatcher judges on its own share of the traffic, which for a
// failure rate is as good as the whole. It is not safe for concurrent use.
type breaker struct {
	state     circuitState
	openUntil time.Time
	// probes are the attempts let through while half-open, by attempt key,
	// with when they went.
	probes map[string]time.Time
	// recent holds the last attempts' verdicts, oldest first.
	recent []verdict
}

type verdict struct {
	at     time.Time
	failed bool
}

// blocked reports whether no call may go now, and until when.
func (b *breaker) blocked(now time.Time, c config.Circuit) (bool, time.Time) {
	switch b.state {
	case circuitOpen:
		if now.Before(b.openUntil) {
			return true, b.openUntil
		}
		b.state, b.probes = circuitHalfOpen, map[string]time.Time{}
		fallthrough
	case circuitHalfOpen:
		// A probe that never reported (its executor died) stops counting
		// after OpenFor, so the breaker cannot stay stuck half-open.
		for k, at := range b.probes {
			if now.Sub(at) > c.OpenFor {
				delete(b.probes, k)
			}
		}
		if len(b.probes) >= c.Probes {
			return true, now.Add(c.OpenFor / 4)
		}
	}
	return false, time.Time{}
}

// dispatched notes that an attempt went through; while half-open it is a
// probe.
func (b *breaker) dispatched(now time.Time, attempt string) {
	if b.state == circuitHalfOpen {
		b.probes[attempt] = now
	}
}

// record takes an attempt's outcome. failed is nil for outcomes that say
// nothing about the deployment's health (a 429, a call never sent, one
// its deadline or its client cut short: see healthVerdict). It
// returns the new state when the state changed.
func (b *breaker) record(now time.Time, c config.Circuit, attempt string, failed *bool) (circuitState, bool) {
	if failed == nil {
		if b.state == circuitHalfOpen {
			delete(b.probes, attempt)
		}
		return b.state, false
	}
	switch b.state {
	case circuitHalfOpen:
		if _, probe := b.probes[attempt]; !probe {
			return b.state, false // a straggler from before the breaker opened
		}
		delete(b.probes, attempt)
		if *failed {
			b.open(now, c)
			return circuitOpen, true
		}
		b.state, b.recent = circuitClosed, nil
		return circuitClosed, true
	case circuitOpen:
		return b.state, false
	}
	b.recent = append(b.recent, verdict{at: now, failed: *failed})
	if over := len(b.recent) - c.WindowRequests; over > 0 {
		b.recent = append(b.recent[:0], b.recent[over:]...)
	}
	total, bad := 0, 0
	for _, v := range b.recent {
		if now.Sub(v.at) < c.Window {
			total++
			if v.failed {
				bad++
			}
		}
	}
	if total >= c.MinRequests && float64(bad) >= c.FailureRate*float64(total) {
		b.open(now, c)
		return circuitOpen, true
	}
	return b.state, false
}

// healthVerdict is what an attempt's outcome says about its deployment's
// health, for the breakers: failed (the provider failed: 5xx, 529, no
// answer within the attempt timeout, no HTTP answer), succeeded (it
// answered, even to refuse), or nil for nothing at all: a 429, a call
// never sent, and an attempt the call's own deadline or its client cut
// short, which the provider had no part in; one team's short deadlines
// must not move every team's calls away from a healthy deployment.
func healthVerdict(o messages.Outcome) *bool {
	switch {
	case o.Failed():
		return new(true)
	case o == messages.OutcomeOK, o == messages.OutcomeRejected:
		return new(false)
	}
	return nil
}

func (b *breaker) open(now time.Time, c config.Circuit) {
	b.state, b.openUntil, b.probes, b.recent = circuitOpen, now.Add(c.OpenFor), nil, nil
}
