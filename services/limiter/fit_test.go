package limiter_test

import (
	"context"
	"errors"
	"math"
	"slices"
	"testing"
	"time"

	"github.com/sluicehq/sluice/services/limiter"
)

var defaultWindows = []time.Duration{time.Second, time.Minute}

func TestFit(t *testing.T) {
	const j = 10 * time.Millisecond
	tests := []struct {
		name             string
		e                limiter.Enforcement
		rpm, burstR      float64 // want, within 0.1%
		tpm, burstT      float64
		windowsForReport []time.Duration
	}{
		{
			// 10 a second in any second: 99% of it, and no room for a burst.
			name: "600 rpm, 1s and 1m windows",
			e:    limiter.Enforcement{RPM: 600, TPM: 200_000, Windows: defaultWindows, Jitter: j},
			rpm:  594, burstR: 11 - 9.9*1.01,
			// A tenth of a second's tokens as capacity; the rate is what
			// is left of the second after it and the jitter.
			tpm: (200_000.0/60 - 333) / 1.01 * 60, burstT: 333,
		},
		{
			// Only the minute counts: 99% of it, the rest as burst.
			name: "600 rpm, 1m window only",
			e:    limiter.Enforcement{RPM: 600, Windows: []time.Duration{time.Minute}, Jitter: j},
			rpm:  594, burstR: 601 - 9.9*60.01,
		},
		{
			// A 100ms window of one request: one every 101ms at most.
			name: "600 rpm, 100ms window",
			e:    limiter.Enforcement{RPM: 600, Windows: []time.Duration{100 * time.Millisecond, time.Minute}, Jitter: j},
			rpm:  60 / 0.11, burstR: 1,
		},
		{
			// A bucket of the rate, holding 500ms of it.
			name: "no windows",
			e:    limiter.Enforcement{RPM: 600, TPM: 60_000, Burst: 500 * time.Millisecond},
			rpm:  600, burstR: 5, tpm: 60_000, burstT: 500,
		},
		{
			// A token burst of a call of 49: the second's 100 tokens less
			// it, over the second and the jitter, is the rate.
			name: "6,000 tpm, token burst 49",
			e:    limiter.Enforcement{TPM: 6_000, Windows: defaultWindows, Jitter: j, TokenBurst: 49},
			tpm:  (100 - 49) / 1.01 * 60, burstT: 49,
		},
		{
			// ceil(100/60) = 2 in a second allows more than the minute
			// does: the minute binds.
			name: "100 rpm",
			e:    limiter.Enforcement{RPM: 100, Windows: defaultWindows, Jitter: j},
			rpm:  99, burstR: 3 - 1.65*1.01,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := limiter.Fit(tt.e)
			if err != nil {
				t.Fatal(err)
			}
			check := func(what string, got, want float64) {
				t.Helper()
				if want == 0 && got != 0 || want != 0 && math.Abs(got-want)/want > 1e-3 {
					t.Errorf("%s = %v, want %v", what, got, want)
				}
			}
			check("RPM", got.RPM, tt.rpm)
			check("BurstRequests", got.BurstRequests, tt.burstR)
			check("TPM", got.TPM, tt.tpm)
			check("BurstTokens", got.BurstTokens, tt.burstT)
			// Whatever it picked, the bound holds in every window.
			for _, w := range tt.e.Windows {
				if got.RPM > 0 {
					allowed := math.Ceil(tt.e.RPM * w.Seconds() / 60)
					if bound := got.BurstRequests + got.RPM/60*(w+tt.e.Jitter).Seconds(); bound >= allowed+1 {
						t.Errorf("requests: C + r(w+J) = %v in %v, not below %v + 1", bound, w, allowed)
					}
				}
				if got.TPM > 0 {
					allowed := math.Floor(tt.e.TPM * w.Seconds() / 60)
					if bound := got.BurstTokens + got.TPM/60*(w+tt.e.Jitter).Seconds(); bound > allowed {
						t.Errorf("tokens: C + r(w+J) = %v in %v, above %v", bound, w, allowed)
					}
				}
			}
		})
	}
}

func TestFitRefusesWhatCannotBePaced(t *testing.T) {
	for _, e := range []limiter.Enforcement{
		{RPM: 600, Windows: []time.Duration{0}},
		{RPM: -1, Windows: defaultWindows},
		{RPM: 600, Windows: defaultWindows, Jitter: -time.Millisecond},
		// A token burst the size of the second's tokens leaves no rate.
		{TPM: 6_000, Windows: defaultWindows, TokenBurst: 100},
		{TPM: 6_000, Windows: defaultWindows, TokenBurst: -1},
		{TPM: 6_000, Windows: defaultWindows, TokenBurst: math.NaN()},
	} {
		if got, err := limiter.Fit(e); err == nil {
			t.Errorf("Fit(%+v) = %+v, want an error", e, got)
		}
	}
}

// A window too short to hold one token of the rate counts no tokens: one
// token a minute is paced for the minute alone.
func TestFitSkipsWindowsTooShortForAToken(t *testing.T) {
	got, err := limiter.Fit(limiter.Enforcement{RPM: 1, TPM: 1, Windows: defaultWindows, Jitter: 10 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	if got.TPM <= 0 || got.TPM > 1 || got.BurstTokens+got.TPM/60*60.01 > 1 {
		t.Fatalf("pace %+v: want the minute's one token at most", got)
	}
}

// Calls larger than the token burst wait for the schedule to idle before
// each; the reservation a call did not use is refunded when it reports,
// but the idle gap is not (nor, before, the request schedule, held to
// the tokens' end). Three pacers share one schedule on a manual
// clock, each placing a call reserving 49 tokens whenever it can, for a
// minute; each call uses 25 and is settled 70 ms after its send time. A
// token burst of the calls' size sends about half again as many, and no
// second holds more than its 100 tokens, counting what each call used
// once it was settled and what it reserved before.
func TestTokenBurstOfTheCallsSendsThemBackToBack(t *testing.T) {
	const reserved, used, settleAfter = 49, 25, 70 * time.Millisecond
	sent := func(burst float64) (calls int, most1s float64) {
		now := time.Unix(1_700_000_000, 0)
		clock := func() time.Time { return now }
		mem := limiter.NewMemory(clock)
		// Requests never bind (100 a second), but are paced too.
		lim, err := limiter.Fit(limiter.Enforcement{RPM: 6_000, TPM: 6_000, Windows: defaultWindows, Jitter: 10 * time.Millisecond, TokenBurst: burst})
		if err != nil {
			t.Fatal(err)
		}
		var pacers []*limiter.Pacer
		for range 3 {
			pacers = append(pacers, limiter.NewPacer(mem, limiter.PacerOptions{Clock: clock}))
		}
		var sends, unsettled []time.Time
		for range 60_000 {
			now = now.Add(time.Millisecond)
			for len(unsettled) > 0 && !now.Before(unsettled[0].Add(settleAfter)) {
				if err := mem.Settle(context.Background(), "k", lim, limiter.Amount{Tokens: reserved - used}); err != nil {
					t.Fatal(err)
				}
				unsettled = unsettled[1:]
			}
			for _, p := range pacers {
				at, err := p.Admit(context.Background(), "k", lim, limiter.Amount{Requests: 1, Tokens: reserved}, 3, 5*time.Millisecond)
				if errors.Is(err, limiter.ErrInsufficient) {
					continue
				}
				if err != nil {
					t.Fatal(err)
				}
				sends = append(sends, at)
				unsettled = append(unsettled, at)
				slices.SortFunc(unsettled, func(a, b time.Time) int { return a.Compare(b) })
			}
		}
		slices.SortFunc(sends, func(a, b time.Time) int { return a.Compare(b) })
		// The window (s-1s, s] as the provider counts it when the call
		// sent at s arrives.
		for i, s := range sends {
			n := 0.0
			for k := i; k >= 0 && s.Sub(sends[k]) < time.Second; k-- {
				if s.Before(sends[k].Add(settleAfter)) {
					n += reserved
				} else {
					n += used
				}
			}
			most1s = max(most1s, n)
		}
		return len(sends), most1s
	}
	gapped, gappedMost := sent(0)
	backToBack, backToBackMost := sent(reserved)
	t.Logf("a minute of calls reserving %d tokens at 6,000 TPM: %d with the default burst, %d with a burst of %d; at most %v and %v tokens in any second",
		reserved, gapped, backToBack, reserved, gappedMost, backToBackMost)
	if gappedMost > 100 || backToBackMost > 100 {
		t.Errorf("a second held more than the window's 100 tokens")
	}
	// Back to back, each call nets 25 of a rate of 50.5 tokens a second:
	// 120 in the minute; gapped, 25 + the gap of 39 of 89: 83.
	if backToBack < 110 || float64(backToBack) < 1.3*float64(gapped) {
		t.Errorf("%d calls with a burst of %d against %d with the default: want about half again as many", backToBack, reserved, gapped)
	}
}

// With no windows, the provider is a token bucket of the rate holding
// Burst of it: the schedule's capacity leaves the jitter's worth of it
// free, so that its bound, C + r*(T + jitter), stays within the bucket's,
// B + r*T.
func TestFitLeavesATokenBucketTheJitter(t *testing.T) {
	e := limiter.Enforcement{RPM: 1200, TPM: 120000, Windows: []time.Duration{}, Jitter: 10 * time.Millisecond, Burst: 500 * time.Millisecond}
	l, err := limiter.Fit(e)
	if err != nil {
		t.Fatal(err)
	}
	for _, d := range []struct {
		name              string
		rate, capacity, b float64
	}{{"requests", l.RPM / 60, l.BurstRequests, 1200.0 / 60 * 0.5}, {"tokens", l.TPM / 60, l.BurstTokens, 120000.0 / 60 * 0.5}} {
		if d.capacity+d.rate*e.Jitter.Seconds() > d.b+1e-9 {
			t.Errorf("%s: capacity %g + rate %g × jitter exceeds the bucket's %g", d.name, d.capacity, d.rate, d.b)
		}
		if d.rate*60 < 0.999*map[string]float64{"requests": 1200, "tokens": 120000}[d.name] {
			t.Errorf("%s: rate %g/min, want the bucket's whole rate", d.name, d.rate*60)
		}
	}
}
