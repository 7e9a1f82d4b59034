package providers

import (
	"encoding/json"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/sluicehq/sluice/messages"
	"github.com/sluicehq/sluice/services/fakeprovider"
)

// helloChat is 9 prompt tokens by the fake's rule: "hello world!" is 12
// bytes, 3 tokens, plus 3 for the message and 3 for the reply.
func helloChat(extra string) []byte {
	return []byte(`{"model":"pool","messages":[{"role":"user","content":"hello world!"}]` + extra + `}`)
}

func TestOpenAIAgainstFake(t *testing.T) {
	const secret = "sk-openai-secret-1234"
	chat := messages.EndpointChatCompletions
	cases := []struct {
		name string
		cfg  fakeprovider.Config
		// before are calls made first, to drain a bucket; their answers
		// are not checked.
		before   int
		endpoint messages.Endpoint
		body     []byte
		want     expect
		limits   func(t *testing.T, l RateLimits)
	}{
		{
			name: "chat success with usage and limits",
			cfg:  fakeprovider.Config{Keys: map[string]fakeprovider.KeyConfig{secret: {RPM: 600, TPM: 60_000}}},
			body: helloChat(`,"max_tokens":5`), endpoint: chat,
			want: expect{status: 200, class: Success, usage: [3]int64{9, 5, 14}},
			limits: func(t *testing.T, l RateLimits) {
				// 600 RPM over 1s: 10 requests, one used, refilled in 100ms.
				if l.LimitRequests != 600 || l.LimitTokens != 60_000 || l.RemainingRequests != 9 ||
					l.ResetRequests != 100*time.Millisecond || l.RemainingTokens != 1000-14 {
					t.Errorf("limits %+v", l)
				}
				if rpm, tpm := l.PerMinute(); rpm != 600 || tpm != 60_000 {
					t.Errorf("PerMinute %d %d", rpm, tpm)
				}
			},
		},
		{
			name: "embeddings success",
			cfg:  fakeprovider.Config{Keys: map[string]fakeprovider.KeyConfig{secret: {TPM: 60_000}}},
			body: []byte(`{"model":"pool","input":["abcd","abcde"]}`), endpoint: messages.EndpointEmbeddings,
			want: expect{status: 200, class: Success, usage: [3]int64{3, 0, 3}},
		},
		{
			name:   "429 on requests, with retry-after-ms",
			cfg:    fakeprovider.Config{Keys: map[string]fakeprovider.KeyConfig{secret: {RPM: 60}}},
			before: 1, body: helloChat(""), endpoint: chat,
			want: expect{status: 429, class: RateLimited, errorType: "requests", errorCode: "rate_limit_exceeded", retryAfter: time.Second},
			limits: func(t *testing.T, l RateLimits) {
				if l.RemainingRequests != 0 || l.Wait("requests") != time.Second {
					t.Errorf("limits %+v", l)
				}
			},
		},
		{
			name:   "429 on tokens",
			cfg:    fakeprovider.Config{Keys: map[string]fakeprovider.KeyConfig{secret: {TPM: 6000}}}, // 100 per second
			before: 1, body: helloChat(`,"max_tokens":80`), endpoint: chat,
			want: expect{status: 429, class: RateLimited, errorType: "tokens", errorCode: "rate_limit_exceeded", retryAfter: 140 * time.Millisecond},
		},
		{
			name: "insufficient_quota",
			cfg:  fakeprovider.Config{Keys: map[string]fakeprovider.KeyConfig{secret: {RPM: 60, InsufficientQuota: true}}},
			body: helloChat(""), endpoint: chat,
			want: expect{status: 429, class: QuotaExhausted, errorType: "insufficient_quota", errorCode: "insufficient_quota"},
		},
		{
			name: "5xx",
			cfg:  fakeprovider.Config{Keys: map[string]fakeprovider.KeyConfig{secret: {}}, ErrorRate: 1, ErrorStatus: 502},
			body: helloChat(""), endpoint: chat,
			want: expect{status: 502, class: Unavailable, errorType: "server_error"},
		},
		{
			name: "overloaded is a 503",
			cfg:  fakeprovider.Config{Keys: map[string]fakeprovider.KeyConfig{secret: {}}, OverloadRate: 1},
			body: helloChat(""), endpoint: chat,
			want: expect{status: 503, class: Unavailable, errorType: "server_error"},
		},
		{
			name: "unknown model is rejected",
			cfg:  fakeprovider.Config{Keys: map[string]fakeprovider.KeyConfig{secret: {}}, Models: []string{"other"}},
			body: helloChat(""), endpoint: chat,
			want: expect{status: 404, class: Rejected, errorType: "invalid_request_error", errorCode: "model_not_found"},
		},
		{
			name: "bad request is rejected",
			cfg:  fakeprovider.Config{Keys: map[string]fakeprovider.KeyConfig{secret: {}}},
			body: []byte(`{"messages":[]}`), endpoint: chat,
			want: expect{status: 400, class: Rejected, errorType: "invalid_request_error", errorCode: "invalid_value"},
		},
		{
			name: "wrong key is rejected",
			cfg:  fakeprovider.Config{Keys: map[string]fakeprovider.KeyConfig{"sk-another": {}}},
			body: helloChat(""), endpoint: chat,
			want: expect{status: 401, class: Rejected, errorType: "invalid_request_error", errorCode: "invalid_api_key"},
		},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			f := newFakeAPI(t, tc.cfg)
			req := Request{Endpoint: tc.endpoint, Body: tc.body, Model: "gpt-real", BaseURL: f.url + "/v1", Secret: secret}
			for range tc.before {
				if _, err := f.do("openai", req); err != nil {
					t.Fatal(err)
				}
			}
			resp, err := f.do("openai", req)
			if err != nil {
				t.Fatal(err)
			}
			tc.want.check(t, resp)
			if tc.limits != nil {
				tc.limits(t, resp.Limits)
			}
			w := f.last()
			if w.method != http.MethodPost || w.url.Path != string(tc.endpoint) {
				t.Errorf("sent %s %s", w.method, w.url)
			}
			var sent struct{ Model string }
			if err := json.Unmarshal(w.body, &sent); err != nil || sent.Model != "gpt-real" {
				t.Errorf("sent body %s: the model must be the deployment's", w.body)
			}
			f.checkSecret(secret, "Authorization", "Bearer ")
			noSecretIn(t, secret, resp, err)
			if st := f.fake.Stats(); tc.want.status != 401 && st.Keys[secret].Received != int64(tc.before+1) {
				t.Errorf("the fake counted %d calls for the key", st.Keys[secret].Received)
			}
		})
	}
}

func TestGeminiRateLimitBodyInEveryDialect(t *testing.T) {
	const secret = "sk-gemini-secret-42"
	for _, form := range []string{fakeprovider.RateLimitBodyGemini, fakeprovider.RateLimitBodyGeminiArray} {
		for _, tc := range []struct {
			provider, endpoint, base string
			body                     []byte
		}{
			{"openai", "/v1/chat/completions", "/v1", helloChat("")},
			{"azure", "/v1/chat/completions", "", helloChat("")},
			{"anthropic", "/v1/messages", "/v1", helloMessages("")},
		} {
			t.Run(form+"/"+tc.provider, func(t *testing.T) {
				// 6 RPM over 1s: one request, refilled in 10s.
				f := newFakeAPI(t, fakeprovider.Config{Keys: map[string]fakeprovider.KeyConfig{secret: {RPM: 6}}, RateLimitBody: form})
				req := Request{Endpoint: messages.Endpoint(tc.endpoint), Body: tc.body, Model: "m", BaseURL: f.url + tc.base, Secret: secret}
				if resp, err := f.do(tc.provider, req); err != nil || resp.Class != Success {
					t.Fatalf("first call: %v %v", resp, err)
				}
				resp, err := f.do(tc.provider, req)
				if err != nil {
					t.Fatal(err)
				}
				if resp.Status != 429 || resp.Class != RateLimited {
					t.Fatalf("status %d class %v: %s", resp.Status, resp.Class, resp.Body)
				}
				if resp.Header.Get("retry-after") != "" || resp.Header.Get("retry-after-ms") != "" {
					t.Fatal("the fake sent retry headers: the test would not prove the body is read")
				}
				if !strings.Contains(string(resp.Body), "RESOURCE_EXHAUSTED") {
					t.Fatalf("body %s", resp.Body)
				}
				if got := resp.Limits.Wait(resp.ErrorType); got != 10*time.Second || resp.Limits.RetryAfter != 10*time.Second {
					t.Errorf("Wait %v, RetryAfter %v; want the RetryInfo's 10s", got, resp.Limits.RetryAfter)
				}
			})
		}
	}
}
