package limiter_test

import (
	"math"
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
