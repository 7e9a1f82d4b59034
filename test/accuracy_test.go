package test

import (
	"net/http"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/sluicehq/sluice/services/devstack"
	"github.com/sluicehq/sluice/services/fakeprovider"
)

// The accuracy tests hold sluice to every way a provider may enforce its
// limits, with a fake provider that enforces them its own way (see
// package fakeprovider), not sluice's: three dispatchers share two
// regions x two keys under twice the demand they allow, and the provider
// counts what reached each key in every 1 s and 60 s window. They run one
// after the other, not in parallel: what they measure is within 10 ms
// (admission.jitter), which a machine busy with other tests blurs.

const (
	accuracyRPM = 300 // per key: 5 a second, 20 over four keys
	// accuracyRun outlasts one 60 s window, where a schedule that starts
	// full, or a burst at the start of a minute, would show.
	accuracyRun = 65 * time.Second
)

// accuracyStack starts sluice on a provider whose every key enforces kc
// (with accuracyRPM), the sluice configuration naming accuracyRPM too.
func accuracyStack(t *testing.T, kc fakeprovider.KeyConfig) *accuracyWatch {
	t.Helper()
	kc.RPM, kc.TPM = accuracyRPM, 10_000_000
	return startAccuracy(t, twoRegionYAML(accuracyRPM, 10_000_000, layout{}), kc)
}

// offerTwice publishes twice the capacity for d, and returns when it
// started.
func offerTwice(t *testing.T, s *devstack.Stack, d time.Duration) time.Time {
	t.Helper()
	nc := connect(t, s)
	js, _ := jetstream.New(nc)
	capacity := 4 * float64(accuracyRPM) / 60
	start := time.Now()
	publishPaced(t, js, int(2*capacity*d.Seconds()), 2*capacity, func(id string) string {
		return chatCall(id, "m", 20, `,"timeout_ms":600000`)
	})
	return start
}

// keyReport is what the provider saw of one key.
type keyReport struct {
	key                  string
	served, refused      int64
	late                 int64 // work handed back late (see accuracyWatch)
	max1s, max60s        int64
	used                 float64 // of the rate the key allows, while served and not told to wait, late work included
	servedFrom, servedTo time.Time
}

// reportKeys reads the provider's counts per key; allowed is the requests
// a minute each key really admits.
func reportKeys(t *testing.T, w *accuracyWatch, allowed float64) []keyReport {
	t.Helper()
	st := w.s.Fake.Stats()
	var out []keyReport
	for k, c := range st.Keys {
		r := keyReport{key: redactKey(k), served: c.Served, refused: c.Refused(), late: w.lateOn(k),
			max1s: c.MaxRequests1s, max60s: c.MaxRequests60s, servedFrom: c.FirstServed, servedTo: c.LastServed}
		if span := c.LastServed.Sub(c.FirstServed) - w.toldToWait(k); span > 0 {
			r.used = float64(c.Served-1+r.late) / (allowed / 60 * span.Seconds())
		}
		out = append(out, r)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].key < out[j].key })
	for _, r := range out {
		t.Logf("  %s: served %d, refused %d, %d handed back late, at most %d in 1 s and %d in 60 s, %.1f%% of what the key allows in use",
			r.key, r.served, r.refused, r.late, r.max1s, r.max60s, 100*r.used)
	}
	return out
}

// Against every model of enforcement, at the configured limits: the
// provider refuses nothing (but where a request reached it later than
// admission.jitter after its send time, see accuracyWatch), and sluice
// uses at least 98% of what each key allows.
func TestAccuracyAgainstEveryEnforcement(t *testing.T) {
	models := []struct {
		name string
		key  fakeprovider.KeyConfig
	}{
		{"token bucket holding a second", fakeprovider.KeyConfig{Enforce: fakeprovider.EnforceBucket}},
		{"sliding minute", fakeprovider.KeyConfig{Enforce: fakeprovider.EnforceWindows, Windows: []fakeprovider.Window{{Span: time.Minute}}}},
		{"sliding second and minute", fakeprovider.KeyConfig{Enforce: fakeprovider.EnforceWindows,
			Windows: []fakeprovider.Window{{Span: time.Second}, {Span: time.Minute}}, RetryAfter: fakeprovider.RetryAfterReset}},
	}
	for _, m := range models {
		t.Run(strings.ReplaceAll(m.name, " ", "_"), func(t *testing.T) {
			w := accuracyStack(t, m.key)
			start := offerTwice(t, w.s, accuracyRun)
			w.judgeRefusals(t, start, start)
			perSecond := int64((accuracyRPM + 59) / 60)
			for _, r := range reportKeys(t, w, accuracyRPM) {
				judgeLate(t, r.key, r.served, r.late)
				// A bucket allows a second's worth and its refill in any
				// second, a sliding minute all of it; a one-second window
				// what it holds.
				if countsASecond(m.key) && r.max1s > perSecond || r.max60s > accuracyRPM {
					t.Errorf("%s: %d requests in one second (allowed %d), %d in a minute (allowed %d)", r.key, r.max1s, perSecond, r.max60s, accuracyRPM)
				}
				if r.used < 0.98 {
					t.Errorf("%s: %.1f%% of what the key allows in use, want at least 98%%", r.key, 100*r.used)
				}
			}
		})
	}
}

// A provider stricter than sluice was told: it allows 20% less (someone
// else uses the keys), or it enforces a one-second window that sluice,
// told the provider counts only the minute, bursts into. Its 429s teach
// sluice to slow down: they stop within 30 s, and sluice then uses at
// least 95% of what the provider really allows.
func TestAccuracyLearnsAStricterProvider(t *testing.T) {
	cases := []struct {
		name    string
		key     fakeprovider.KeyConfig
		windows string // what sluice is told
		allowed float64
	}{
		{"a fifth of each key used by someone else",
			fakeprovider.KeyConfig{Enforce: fakeprovider.EnforceWindows, Windows: []fakeprovider.Window{{Span: time.Second}, {Span: time.Minute}}, OtherUse: 0.2},
			"", 0.8 * accuracyRPM},
		{"a one-second window sluice was not told of",
			fakeprovider.KeyConfig{Enforce: fakeprovider.EnforceWindows, Windows: []fakeprovider.Window{{Span: time.Second}, {Span: time.Minute}}, RetryAfter: fakeprovider.RetryAfterReset},
			"[1m]", accuracyRPM},
	}
	for _, c := range cases {
		t.Run(strings.ReplaceAll(c.name, " ", "_"), func(t *testing.T) {
			kc := c.key
			kc.RPM, kc.TPM = accuracyRPM, 10_000_000
			w := startAccuracy(t, func(url string) string {
				y := twoRegionYAML(accuracyRPM, 10_000_000, layout{})(url)
				if c.windows != "" {
					y = strings.ReplaceAll(y, "tpm: 10000000}", "tpm: 10000000, windows: "+c.windows+"}")
				}
				return y
			}, kc)
			start := offerTwice(t, w.s, accuracyRun)
			learnt, end := start.Add(30*time.Second), start.Add(accuracyRun)
			t.Logf("%d refusals in all", w.arrivals.count(start, end, http.StatusTooManyRequests))
			// Refusals after the first 30 s: none, but where a request
			// reached the provider late.
			w.judgeRefusals(t, start, learnt)
			// What was served over the last 30 s, against what the provider
			// allows in that time.
			served := w.arrivals.count(learnt, end, http.StatusOK)
			want := 4 * c.allowed / 60 * (accuracyRun - 30*time.Second).Seconds()
			used := float64(served) / want
			t.Logf("served %d of the %.0f the provider allowed from 30 s on: %.1f%%", served, want, 100*used)
			if used < 0.95 {
				t.Errorf("used %.1f%% of what the provider allows, want at least 95%%", 100*used)
			}
		})
	}
}

// redactKey keeps a key's region, not its secret part, for messages.
func redactKey(key string) string {
	if i := strings.LastIndexByte(key, '-'); i > 0 {
		return key[:i] + "-…"
	}
	return "…"
}

// countsASecond reports whether kc enforces a one-second window.
func countsASecond(kc fakeprovider.KeyConfig) bool {
	for _, w := range kc.Windows {
		if w.Span == time.Second {
			return kc.Enforce == fakeprovider.EnforceWindows
		}
	}
	return false
}
