package test

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/sluicehq/sluice/services/fakeprovider"
)

// Tokens the way requests are held (TestAccuracyAgainstEveryEnforcement):
// keys whose token limit binds long before their request limit, calls
// that reserve their worst case (prompt + max_tokens) and use less. The
// provider charges each request what it may use when it arrives, as
// OpenAI documents for its TPM, and replaces that with what it used once
// answered; sluice reserves the same and settles from the reported usage.
// Against a token bucket and against sliding one-second and one-minute
// windows, at twice the demand: no request is refused for tokens or
// requests, and every token the provider counted is one a result
// reported.
//
// What such a provider can serve: a bucket of 100 tokens refilled at 100
// a second, 4 calls a second per key (each nets 25); windows, less than
// the TPM in usage: a call arriving needs room for its whole reservation
// (49) in the one-second window beside what the calls before it used (25
// each), so at most three calls go in any second.
//
// sluice's schedule gives a call larger than its token burst (by default
// a tenth of a second's tokens, 10 here) an idle gap of (reservation -
// burst) / rate before it, which keeps every window at its bound whatever
// the sizes of the calls, and which no refund gives back: measured, 1.35
// calls a second per key against the bucket (34% of 4) and 1.35 against
// the windows (45% of 3). A deployment whose calls are that large against
// a second's tokens says so with token_burst (their reservation): they go
// back to back, at the rate the rest of the window leaves, and each
// refund lets the next one go sooner: 1.97 a second (66% of 3). The
// floors below are those figures less room for a busy machine.

const (
	// accuracyTokenTPM is 100 tokens a second per key: four calls' usage,
	// two calls' reservations.
	accuracyTokenTPM = 6_000
	// accuracyTokenRPM never binds: 100 requests a second.
	accuracyTokenRPM = 6_000
	// Each call: a prompt of 9 tokens (the fake's and sluice's estimate of
	// "hello there"), max_tokens 40 reserved, 16 generated: 49 reserved,
	// 25 used.
	accuracyTokenMax  = 40
	accuracyTokenUsed = 25
)

func TestAccuracyTokens(t *testing.T) {
	models := []struct {
		name string
		key  fakeprovider.KeyConfig
		// canServe is the most calls a second a key can serve.
		canServe float64
		// tokenBurst is the deployments' token_burst, 0 for the default.
		tokenBurst int
		// floor is the share of canServe sluice must serve.
		floor float64
	}{
		{"token bucket holding a second", fakeprovider.KeyConfig{Enforce: fakeprovider.EnforceBucket}, 4, 0, 0.25},
		{"sliding second and minute", fakeprovider.KeyConfig{Enforce: fakeprovider.EnforceWindows,
			Windows: []fakeprovider.Window{{Span: time.Second}, {Span: time.Minute}}, RetryAfter: fakeprovider.RetryAfterReset}, 3, 0, 0.35},
		// A token burst of the calls' reservation sends them back to back.
		{"sliding second and minute, token burst 49", fakeprovider.KeyConfig{Enforce: fakeprovider.EnforceWindows,
			Windows: []fakeprovider.Window{{Span: time.Second}, {Span: time.Minute}}, RetryAfter: fakeprovider.RetryAfterReset}, 3, 49, 0.55},
	}
	for _, m := range models {
		t.Run(strings.ReplaceAll(m.name, " ", "_"), func(t *testing.T) {
			kc := m.key
			kc.RPM, kc.TPM = accuracyTokenRPM, accuracyTokenTPM
			w := startAccuracy(t, func(url string) string {
				y := twoRegionYAML(accuracyTokenRPM, accuracyTokenTPM, layout{})(url)
				if m.tokenBurst > 0 {
					y = strings.ReplaceAll(y, fmt.Sprintf("tpm: %d}", accuracyTokenTPM), fmt.Sprintf("tpm: %d, token_burst: %d}", accuracyTokenTPM, m.tokenBurst))
				}
				return y
			}, kc)
			s := w.s

			nc := connect(t, s)
			js, _ := jetstream.New(nc)
			capacity := 4 * float64(accuracyTokenTPM) / 60 / accuracyTokenUsed // calls a second
			start := time.Now()
			publishPaced(t, js, int(2*capacity*accuracyRun.Seconds()), 2*capacity, func(id string) string {
				return chatCall(id, "m", accuracyTokenMax, `,"timeout_ms":600000`)
			})
			w.judgeRefusals(t, start, start)
			st := s.Fake.Stats()
			if len(st.Keys) != 4 {
				t.Fatalf("the provider saw %d keys, want 4", len(st.Keys))
			}
			for k, c := range st.Keys {
				if c.Served > 0 && c.TotalTokens != c.Served*accuracyTokenUsed {
					t.Fatalf("%s: %d tokens for %d calls: the calls are not the %d tokens each the test counts on", redactKey(k), c.TotalTokens, c.Served, accuracyTokenUsed)
				}
				var used float64
				if span := c.LastServed.Sub(c.FirstServed); span > 0 {
					used = float64(c.TotalTokens-accuracyTokenUsed) / (accuracyTokenTPM / 60 * span.Seconds())
				}
				t.Logf("  %s: served %d (%d tokens), refused %d for tokens and %d for requests, at most %d tokens in 1 s and %d in 60 s at admission, %.1f%% of the tokens the key allows",
					redactKey(k), c.Served, c.TotalTokens, c.RateLimitedTokens, c.RateLimitedRequests, c.MaxTokens1s, c.MaxTokens60s, 100*used)
				if span := c.LastServed.Sub(c.FirstServed); span > 0 {
					served := float64(c.Served-1) / span.Seconds() / m.canServe
					t.Logf("  %s: %.1f%% of the %v calls a second the provider could serve", redactKey(k), 100*served, m.canServe)
					if served < m.floor {
						t.Errorf("%s: served %.1f%% of what the provider could, want at least %.0f%%", redactKey(k), 100*served, 100*m.floor)
					}
				}
			}
		})
	}
}
