package fakeprovider

import (
	"encoding/json"
	"net/http"
	"testing"
)

func TestGeminiRateLimitBody(t *testing.T) {
	for _, form := range []string{RateLimitBodyGemini, RateLimitBodyGeminiArray} {
		for _, tt := range []struct {
			dialect string
			send    func(h *harness) reply
		}{
			{"openai", func(h *harness) reply { return h.chat("k", helloChat(`,"max_tokens":1`)) }},
			{"azure", func(h *harness) reply { return h.send(azureChatPath, azureKey("k"), helloChat(`,"max_tokens":1`)) }},
			{"anthropic", func(h *harness) reply {
				return h.send("/v1/messages", anthropicHeaders("k"), helloMessages(`,"max_tokens":1`))
			}},
		} {
			t.Run(form+"/"+tt.dialect, func(t *testing.T) {
				// 4 RPM over 1s: one request, refilled in 15s.
				h := newHarness(t, Config{Keys: map[string]KeyConfig{"k": {RPM: 4}}, RateLimitBody: form})
				if r := tt.send(h); r.status != http.StatusOK {
					t.Fatalf("first: %d %s", r.status, r.body)
				}
				r := tt.send(h)
				if r.status != http.StatusTooManyRequests {
					t.Fatalf("second: %d %s", r.status, r.body)
				}
				body := r.body
				if form == RateLimitBodyGeminiArray {
					var arr []json.RawMessage
					r.decode(t, &arr)
					if len(arr) != 1 {
						t.Fatalf("array of %d", len(arr))
					}
					body = arr[0]
				}
				var g googleErrorBody
				if err := json.Unmarshal(body, &g); err != nil {
					t.Fatalf("%s: %v", body, err)
				}
				if g.Error.Code != 429 || g.Error.Status != "RESOURCE_EXHAUSTED" || len(g.Error.Details) != 2 ||
					g.Error.Details[1]["@type"] != "type.googleapis.com/google.rpc.RetryInfo" || g.Error.Details[1]["retryDelay"] != "15s" {
					t.Errorf("body %s", body)
				}
				r.noHeaders(t, "retry-after", "retry-after-ms", "x-ratelimit-remaining-requests", "anthropic-ratelimit-requests-remaining")
				if c := h.fake.Stats().Keys["k"]; c.RateLimitedRequests != 1 || c.Finished() != c.Received {
					t.Errorf("counters %+v", c)
				}
			})
		}
	}
	if _, err := New(Config{AcceptAnyKey: true, RateLimitBody: "bedrock"}); err == nil {
		t.Error("an unknown RateLimitBody accepted")
	}
}
