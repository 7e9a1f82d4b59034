package limiter

import (
	"fmt"
	"math"
	"time"
)

// Enforcement is what a provider is taken to enforce on a deployment: a
// sustained rate per minute of requests and tokens, and sliding windows
// over which it counts them.
type Enforcement struct {
	// RPM and TPM are the limits per minute; zero means unlimited.
	RPM, TPM float64
	// Windows are the spans of the sliding windows the provider counts
	// over. In a window of span w it allows ceil(RPM*w/1m) requests and
	// floor(TPM*w/1m) tokens (a one-second window of a 600 RPM limit holds
	// 10 requests). With no windows, the provider is taken to enforce only
	// a token bucket of the rate, holding Burst of it.
	Windows []time.Duration
	// Jitter is how late after its scheduled time a request may reach
	// the provider (executor wake-up, the network): every rate leaves
	// this much room in each window.
	Jitter time.Duration
	// Burst is the bucket's capacity, as time at the rate, when there are
	// no windows. At least one request is always allowed.
	Burst time.Duration
	// TokenBurst, when positive, is the least token capacity: the tokens
	// a call may reserve without the schedule idling before it. Calls
	// larger than the capacity go only after an idle gap of (reservation
	// - capacity) / rate (see [Schedule]), which halves what a schedule
	// sends when every call is much larger than it; a capacity of the
	// typical reservation sends them back to back, at a rate lowered by
	// what the capacity takes of each window. Zero means the default: a
	// tenth of a second's tokens, at most half the smallest window's.
	TokenBurst float64
}

// Utilization bounds for Fit: the rate a window allows is never used
// beyond these fractions, so that what is left over becomes burst (a
// window the rate alone fills leaves none).
const (
	requestsUtilization = 0.99
	tokensUtilization   = 0.99
	// tokensBurstShare: the token capacity is at least this share of a
	// second at the window's rate (and at most half the smallest
	// window's tokens), so that a call of ordinary size need not wait
	// for the schedule to idle before it (see Schedule).
	tokensBurstShare = 0.1
)

// Fit returns the fastest pace (rates and capacities, as a Limit for a
// [Schedule]) whose sends stay inside everything e enforces: with sends
// arriving up to e.Jitter after their scheduled times, a schedule of rate
// r and capacity C sends at most C + r*(T + Jitter) in any window of
// length T (see [Schedule]), so Fit picks, per dimension, for every
// window w holding L_w:
//
//	C + r*(w + Jitter) <= L_w     (tokens)
//	C + r*(w + Jitter) <  L_w + 1 (requests, which come whole)
//
// (a window too short to hold one token of the rate counts no tokens),
// with r at most the sustained rate itself (also a token bucket of the
// configured rate is satisfied) and at most 99% of the tightest window's
// own rate, what is left of the window becoming burst C. A request
// capacity is at least one request; a token capacity at least a tenth of
// a second's tokens (so that ordinary calls are not held back to idle the
// schedule for them).
//
// Errors: a window or jitter that is not positive, or limits no pace can
// meet (a window too short to hold one request after the jitter).
func Fit(e Enforcement) (Limit, error) {
	if e.RPM < 0 || e.TPM < 0 || !finite(e.RPM) || !finite(e.TPM) {
		return Limit{}, fmt.Errorf("limiter: fit: limits %g rpm, %g tpm", e.RPM, e.TPM)
	}
	if e.Jitter < 0 {
		return Limit{}, fmt.Errorf("limiter: fit: negative jitter %v", e.Jitter)
	}
	if e.TokenBurst < 0 || !finite(e.TokenBurst) {
		return Limit{}, fmt.Errorf("limiter: fit: token burst %g", e.TokenBurst)
	}
	for _, w := range e.Windows {
		if w <= 0 {
			return Limit{}, fmt.Errorf("limiter: fit: window %v is not positive", w)
		}
	}
	var out Limit
	for i := range dims {
		perMinute := e.RPM
		if i == 1 {
			perMinute = e.TPM
		}
		if perMinute == 0 {
			continue
		}
		least := 0.0
		if i == 1 {
			least = e.TokenBurst
		}
		rate, capacity, err := fitDim(i == 0, perMinute, e.Windows, e.Jitter, e.Burst, least)
		if err != nil {
			return Limit{}, err
		}
		if i == 0 {
			out.RPM, out.BurstRequests = rate*60, capacity
		} else {
			out.TPM, out.BurstTokens = rate*60, capacity
		}
	}
	return out, out.Validate()
}

// fitDim fits one dimension: rate per second and capacity, the capacity
// at least least (when positive).
func fitDim(requests bool, perMinute float64, windows []time.Duration, jitter, burst time.Duration, least float64) (float64, float64, error) {
	sustained := perMinute / 60
	if len(windows) == 0 {
		// A token bucket of capacity B takes, over any span T, B + r*T;
		// requests arriving within jitter of their send times, a schedule
		// of capacity C sends C + r*(T + jitter): C leaves the jitter's
		// worth of the bucket unused. Whole requests and tokens: a bucket
		// must hold at least one.
		return sustained, math.Max(math.Max(1, least), sustained*(burst-jitter).Seconds()), nil
	}
	minCap := 1.0
	type win struct{ span, limit float64 }
	var ws []win
	tightest := math.Inf(1) // the lowest window rate, per second
	smallest := math.Inf(1) // the fewest a window holds
	for _, w := range windows {
		allowed := perMinute * w.Seconds() / 60
		if requests {
			allowed = math.Ceil(allowed - 1e-9)
		} else {
			allowed = math.Floor(allowed + 1e-9)
		}
		if allowed < 1 {
			// Too short to hold one token of the rate: the provider cannot
			// count tokens over it.
			continue
		}
		ws = append(ws, win{w.Seconds(), allowed})
		tightest = math.Min(tightest, allowed/w.Seconds())
		smallest = math.Min(smallest, allowed)
	}
	if len(ws) == 0 {
		return sustained, math.Max(math.Max(1, least), sustained*(burst-jitter).Seconds()), nil
	}
	slack := 0.0 // requests come whole: C + r*T < L + 1 keeps the count at L
	utilization := tokensUtilization
	if requests {
		slack, utilization = 1, requestsUtilization
	} else {
		minCap = math.Min(tokensBurstShare*tightest, smallest/2)
		if least > 0 {
			if least >= smallest {
				return 0, 0, fmt.Errorf("limiter: fit: a token burst of %g leaves no room for a rate in windows %v holding %g", least, windows, smallest)
			}
			minCap = least
		}
	}
	j := jitter.Seconds()
	rate := math.Min(sustained, utilization*tightest)
	for _, w := range ws {
		rate = math.Min(rate, (w.limit+slack-minCap)/(w.span+j))
	}
	// Strictly inside the bounds, whatever the rounding.
	rate *= 1 - 1e-9
	if rate <= 0 {
		return 0, 0, fmt.Errorf("limiter: fit: %g per minute leaves no room in windows %v with %v of jitter", perMinute, windows, jitter)
	}
	capacity := math.Inf(1)
	for _, w := range ws {
		capacity = math.Min(capacity, w.limit+slack-rate*(w.span+j))
	}
	return rate, math.Max(capacity*(1-1e-12), math.SmallestNonzeroFloat64), nil
}
