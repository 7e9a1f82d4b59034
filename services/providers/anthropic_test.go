package providers

import (
	"encoding/json"
	"testing"
	"time"

	"github.com/sluicehq/sluice/messages"
	"github.com/sluicehq/sluice/services/fakeprovider"
)

// helloMessages is 9 prompt tokens, as helloChat.
func helloMessages(extra string) []byte {
	return []byte(`{"model":"pool","max_tokens":5,"messages":[{"role":"user","content":"hello world!"}]` + extra + `}`)
}

func TestAnthropicAgainstFake(t *testing.T) {
	const secret = "sk-ant-secret-9999"
	cases := []struct {
		name       string
		cfg        fakeprovider.Config
		before     int
		apiVersion string
		body       []byte
		want       expect
		limits     func(t *testing.T, l RateLimits)
	}{
		{
			name: "success with usage and limits",
			cfg:  fakeprovider.Config{Keys: map[string]fakeprovider.KeyConfig{secret: {RPM: 600, TPM: 60_000}}},
			body: helloMessages(`,"system":"be brief"`), // +3 for the system prompt, +2 for its text
			want: expect{status: 200, class: Success, usage: [3]int64{14, 5, 19}},
			limits: func(t *testing.T, l RateLimits) {
				// Resets are whole seconds after the fake's Date.
				if l.LimitRequests != 600 || l.RemainingRequests != 9 || l.ResetRequests != time.Second ||
					l.LimitTokens != 60_000 || l.RemainingTokens != 1000-19 || l.ResetTokens != time.Second {
					t.Errorf("limits %+v", l)
				}
				if rpm, tpm := l.PerMinute(); rpm != 600 || tpm != 60_000 {
					t.Errorf("PerMinute %d %d", rpm, tpm)
				}
			},
		},
		{
			name: "an api-version is passed",
			cfg:  fakeprovider.Config{Keys: map[string]fakeprovider.KeyConfig{secret: {}}}, apiVersion: "2099-01-01",
			body: helloMessages(""),
			want: expect{status: 200, class: Success, usage: [3]int64{9, 5, 14}},
		},
		{
			name:   "429 rate_limit_error with retry-after",
			cfg:    fakeprovider.Config{Keys: map[string]fakeprovider.KeyConfig{secret: {RPM: 6}}}, // one request per 10s
			before: 1, body: helloMessages(""),
			want: expect{status: 429, class: RateLimited, errorType: "rate_limit_error", errorCode: "rate_limit_error", retryAfter: 10 * time.Second},
			limits: func(t *testing.T, l RateLimits) {
				if l.RemainingRequests != 0 || l.ResetRequests != 10*time.Second || l.Wait("rate_limit_error") != 10*time.Second {
					t.Errorf("limits %+v", l)
				}
			},
		},
		{
			name: "529 overloaded_error is unavailable, not a limit",
			cfg:  fakeprovider.Config{Keys: map[string]fakeprovider.KeyConfig{secret: {RPM: 600}}, OverloadRate: 1},
			body: helloMessages(""),
			want: expect{status: 529, class: Unavailable, errorType: "overloaded_error", errorCode: "overloaded_error"},
			limits: func(t *testing.T, l RateLimits) {
				if l.RetryAfter != 0 || l.RemainingRequests == 0 {
					t.Errorf("limits %+v", l)
				}
			},
		},
		{
			name: "5xx api_error",
			cfg:  fakeprovider.Config{Keys: map[string]fakeprovider.KeyConfig{secret: {}}, ErrorRate: 1, ErrorStatus: 500},
			body: helloMessages(""),
			want: expect{status: 500, class: Unavailable, errorType: "api_error", errorCode: "api_error"},
		},
		{
			name: "credit balance too low is quota exhausted",
			cfg:  fakeprovider.Config{Keys: map[string]fakeprovider.KeyConfig{secret: {InsufficientQuota: true}}},
			body: helloMessages(""),
			want: expect{status: 400, class: QuotaExhausted, errorType: "invalid_request_error", errorCode: "invalid_request_error"},
		},
		{
			name: "missing max_tokens is rejected",
			cfg:  fakeprovider.Config{Keys: map[string]fakeprovider.KeyConfig{secret: {}}},
			body: []byte(`{"messages":[{"role":"user","content":"hi"}]}`),
			want: expect{status: 400, class: Rejected, errorType: "invalid_request_error", errorCode: "invalid_request_error"},
		},
		{
			name: "unknown model is rejected",
			cfg:  fakeprovider.Config{Keys: map[string]fakeprovider.KeyConfig{secret: {}}, Models: []string{"other"}},
			body: helloMessages(""),
			want: expect{status: 404, class: Rejected, errorType: "not_found_error", errorCode: "not_found_error"},
		},
		{
			name: "wrong key is rejected",
			cfg:  fakeprovider.Config{Keys: map[string]fakeprovider.KeyConfig{"another": {}}},
			body: helloMessages(""),
			want: expect{status: 401, class: Rejected, errorType: "authentication_error", errorCode: "authentication_error"},
		},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			f := newFakeAPI(t, tc.cfg)
			req := Request{Endpoint: messages.EndpointMessages, Body: tc.body, Model: "claude-real", BaseURL: f.url + "/v1/", APIVersion: tc.apiVersion, Secret: secret}
			for range tc.before {
				if _, err := f.do("anthropic", req); err != nil {
					t.Fatal(err)
				}
			}
			resp, err := f.do("anthropic", req)
			if err != nil {
				t.Fatal(err)
			}
			tc.want.check(t, resp)
			if tc.limits != nil {
				tc.limits(t, resp.Limits)
			}
			w := f.last()
			if w.url.Path != "/v1/messages" || w.url.RawQuery != "" {
				t.Errorf("sent to %s", w.url)
			}
			version := tc.apiVersion
			if version == "" {
				version = DefaultAnthropicVersion
			}
			if got := w.header.Get("anthropic-version"); got != version {
				t.Errorf("anthropic-version %q, want %q", got, version)
			}
			if w.header.Get("Authorization") != "" || w.header.Get("Content-Type") != "application/json" {
				t.Errorf("headers %v", w.header)
			}
			var sent struct{ Model string }
			if err := json.Unmarshal(w.body, &sent); err != nil || sent.Model != "claude-real" {
				t.Errorf("sent body %s: the model must be the deployment's", w.body)
			}
			f.checkSecret(secret, "x-api-key", "")
			noSecretIn(t, secret, resp, err)
		})
	}
}

// Without a Date header, resets are measured on the adapter's Clock.
func TestAnthropicClockWithoutDate(t *testing.T) {
	now := time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)
	h := anthropicHeaders(map[string]string{"requests-remaining": "0", "requests-reset": "2026-03-01T12:00:03Z"})
	r := ParseAnthropicHeaders(h, answerTime(h, func() time.Time { return now }))
	if r.ResetRequests != 3*time.Second {
		t.Fatalf("reset %v", r.ResetRequests)
	}
}
