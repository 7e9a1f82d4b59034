package fakeprovider

import (
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/sluicehq/sluice/messages"
	"github.com/sluicehq/sluice/services/tokens"
)

func anthropicHeaders(key string) map[string]string {
	return map[string]string{"x-api-key": key, "anthropic-version": "2023-06-01"}
}

// helloMessages is a Messages body of helloPrompt prompt tokens.
func helloMessages(extra string) string {
	return `{"model":"claude","messages":[{"role":"user","content":"hello world!"}]` + extra + `}`
}

func (r reply) anthropicErr(t *testing.T) anthropicErrorDetail {
	t.Helper()
	var b anthropicErrorBody
	r.decode(t, &b)
	if b.Type != "error" {
		t.Errorf("body type %q, want error", b.Type)
	}
	return b.Error
}

func TestMessagesSuccess(t *testing.T) {
	tests := []struct {
		name   string
		extra  string
		out    int64
		stop   string
		charge int64
	}{
		{"natural end", `,"max_tokens":100`, 16, "end_turn", helloPrompt + 100},
		{"cut by max_tokens", `,"max_tokens":5`, 5, "max_tokens", helloPrompt + 5},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := newHarness(t, Config{Keys: map[string]KeyConfig{"ant-1": {RPM: 600, TPM: 60_000}}})
			r := h.send("/v1/messages", anthropicHeaders("ant-1"), helloMessages(tt.extra))
			if r.status != http.StatusOK {
				t.Fatalf("%d %s", r.status, r.body)
			}
			var m anthropicMessage
			r.decode(t, &m)
			if !strings.HasPrefix(m.ID, "msg_") || m.Type != "message" || m.Role != "assistant" || m.Model != "claude" ||
				m.StopReason != tt.stop || m.StopSequence != nil || len(m.Content) != 1 || m.Content[0].Type != "text" ||
				int64(len(strings.Fields(m.Content[0].Text))) != tt.out {
				t.Errorf("message %+v", m)
			}
			if m.Usage != (anthropicUsage{InputTokens: helloPrompt, OutputTokens: tt.out}) {
				t.Errorf("usage %+v", m.Usage)
			}
			now := h.clock.Now()
			want := map[string]string{
				"anthropic-ratelimit-requests-limit":     "600",
				"anthropic-ratelimit-requests-remaining": "9",
				"anthropic-ratelimit-requests-reset":     now.Add(time.Second).Format(time.RFC3339), // 100ms, rounded up
				"anthropic-ratelimit-tokens-limit":       "60000",
				"anthropic-ratelimit-tokens-remaining":   itoa(1000 - tt.charge), // as admitted, as OpenAI reports it
				"anthropic-ratelimit-tokens-reset":       now.Add(time.Second).Format(time.RFC3339),
				"Date":                                   now.Format(http.TimeFormat),
			}
			for k, v := range want {
				if got := r.header.Get(k); got != v {
					t.Errorf("header %s = %q, want %q", k, got, v)
				}
			}
			if r.header.Get("request-id") == "" {
				t.Error("no request-id")
			}
			r.noHeaders(t, "x-ratelimit-limit-requests", "x-ratelimit-remaining-tokens", "retry-after", "retry-after-ms",
				"anthropic-ratelimit-input-tokens-limit", "anthropic-ratelimit-output-tokens-limit")
			c := h.fake.Stats().Keys["ant-1"]
			if c.Served != 1 || c.MaxTokens1s != tt.charge || c.PromptTokens != helloPrompt || c.CompletionTokens != tt.out {
				t.Errorf("counters %+v", c)
			}
		})
	}
}

// The fake charges a Messages call what sluice's estimator reserves for
// it, so that a refusal in a test is never an estimation gap.
func TestMessagesChargeMatchesTokensPackage(t *testing.T) {
	bodies := []string{
		`{"model":"c","max_tokens":7,"messages":[{"role":"user","content":"hello"}]}`,
		`{"model":"c","max_tokens":1,"system":"You are terse and exact.","messages":[{"role":"user","content":"hi"},{"role":"assistant","content":"yo"},{"role":"user","content":"and?"}]}`,
		`{"model":"c","max_tokens":3,"system":[{"type":"text","text":"abc"},{"type":"text","text":"defgh"}],"messages":[{"role":"user","content":[{"type":"text","text":"123456789"},{"type":"image","source":{"type":"base64","media_type":"image/png","data":"AAAA"}}]}]}`,
		`{"model":"c","max_tokens":2,"system":"","messages":[{"role":"user","content":[]}]}`,
	}
	for i, body := range bodies {
		h := newHarness(t, Config{Keys: map[string]KeyConfig{"k": {TPM: 6_000_000}}})
		if r := h.send("/v1/messages", anthropicHeaders("k"), body); r.status != http.StatusOK {
			t.Fatalf("body %d: %d %s", i, r.status, r.body)
		}
		est, err := tokens.Of(messages.EndpointMessages, []byte(body), 999)
		if err != nil {
			t.Fatalf("body %d: %v", i, err)
		}
		c := h.fake.Stats().Keys["k"]
		if c.MaxTokens1s != est.Total() || c.PromptTokens != est.Prompt {
			t.Errorf("body %d: fake charged %d (prompt %d), sluice estimates %d (prompt %d)", i, c.MaxTokens1s, c.PromptTokens, est.Total(), est.Prompt)
		}
	}
}

func TestMessagesInvalid(t *testing.T) {
	tests := []struct {
		name, body, message string
	}{
		{"not JSON", `{"model":`, "not valid JSON"},
		{"wrong type", `{"model":"c","max_tokens":"5","messages":[]}`, "max_tokens"},
		{"no model", `{"max_tokens":5,"messages":[{"role":"user","content":"x"}]}`, "model: Field required"},
		{"no max_tokens", `{"model":"c","messages":[{"role":"user","content":"x"}]}`, "max_tokens: Field required"},
		{"zero max_tokens", `{"model":"c","max_tokens":0,"messages":[{"role":"user","content":"x"}]}`, "max_tokens: Input should be greater than or equal to 1"},
		{"huge max_tokens", `{"model":"c","max_tokens":99999999,"messages":[{"role":"user","content":"x"}]}`, "maximum allowed number of output tokens"},
		{"no messages", `{"model":"c","max_tokens":5}`, "messages: Field required"},
		{"empty messages", `{"model":"c","max_tokens":5,"messages":[]}`, "at least one message"},
		{"message not object", `{"model":"c","max_tokens":5,"messages":["hi"]}`, "messages.0: Input should be a valid dictionary"},
		{"system role", `{"model":"c","max_tokens":5,"messages":[{"role":"system","content":"x"}]}`, "messages.0.role"},
		{"no content", `{"model":"c","max_tokens":5,"messages":[{"role":"user"}]}`, "messages.0.content: Field required"},
		{"content number", `{"model":"c","max_tokens":5,"messages":[{"role":"user","content":3}]}`, "messages.0.content: Input should be"},
		{"block without type", `{"model":"c","max_tokens":5,"messages":[{"role":"user","content":[{"text":"x"}]}]}`, "messages.0.content.0.type"},
		{"text block without text", `{"model":"c","max_tokens":5,"messages":[{"role":"user","content":[{"type":"text"}]}]}`, "messages.0.content.0.text"},
		{"system number", `{"model":"c","max_tokens":5,"system":3,"messages":[{"role":"user","content":"x"}]}`, "system: Input should be"},
		{"stream not a boolean", `{"model":"c","max_tokens":5,"stream":"yes","messages":[{"role":"user","content":"x"}]}`, "stream"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := newHarness(t, Config{Keys: map[string]KeyConfig{"k": {RPM: 600, TPM: 60_000}}})
			r := h.send("/v1/messages", anthropicHeaders("k"), tt.body)
			if r.status != http.StatusBadRequest {
				t.Fatalf("status %d: %s", r.status, r.body)
			}
			if e := r.anthropicErr(t); e.Type != "invalid_request_error" || !strings.Contains(e.Message, tt.message) {
				t.Errorf("error %+v, want a message with %q", e, tt.message)
			}
			if c := h.fake.Stats().Keys["k"]; c.InvalidRequests != 1 || c.MaxRequests1s != 0 {
				t.Errorf("counters %+v: an invalid call is counted and charged nothing", c)
			}
		})
	}
}

func TestMessagesAuthAndVersion(t *testing.T) {
	tests := []struct {
		name    string
		cfg     Config
		headers map[string]string
		status  int
		typ     string
		message string
	}{
		{"missing version", Config{Keys: map[string]KeyConfig{"k": {}}}, map[string]string{"x-api-key": "k"},
			400, "invalid_request_error", "anthropic-version: header is required"},
		{"bearer is not Anthropic's auth", Config{Keys: map[string]KeyConfig{"k": {}}},
			map[string]string{"Authorization": "Bearer k", "anthropic-version": "2023-06-01"}, 401, "authentication_error", "invalid x-api-key"},
		{"unknown key", Config{Keys: map[string]KeyConfig{"k": {}}}, anthropicHeaders("nope"), 401, "authentication_error", "invalid x-api-key"},
		{"credit balance", Config{Keys: map[string]KeyConfig{"k": {InsufficientQuota: true}}}, anthropicHeaders("k"),
			400, "invalid_request_error", "credit balance is too low"},
		{"unknown model", Config{Keys: map[string]KeyConfig{"k": {}}, Models: []string{"other"}}, anthropicHeaders("k"),
			404, "not_found_error", "model: claude"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := newHarness(t, tt.cfg)
			r := h.send("/v1/messages", tt.headers, helloMessages(`,"max_tokens":5`))
			if r.status != tt.status {
				t.Fatalf("status %d: %s", r.status, r.body)
			}
			if e := r.anthropicErr(t); e.Type != tt.typ || !strings.Contains(e.Message, tt.message) {
				t.Errorf("error %+v", e)
			}
		})
	}
}

func TestMessagesRateLimited(t *testing.T) {
	tests := []struct {
		name       string
		key        KeyConfig
		first      string
		second     string
		retryAfter string
		advance    time.Duration
		counter    func(Counters) int64
	}{
		{"requests", KeyConfig{RPM: 6}, helloMessages(`,"max_tokens":1`), helloMessages(`,"max_tokens":1`),
			"10", 10 * time.Second, func(c Counters) int64 { return c.RateLimitedRequests }},
		// 600 TPM over 1s: 10 tokens, 10 per second; 9+1 fills it, 9+5 needs 14 > 10: wait until full.
		{"tokens", KeyConfig{TPM: 600}, helloMessages(`,"max_tokens":1`), helloMessages(`,"max_tokens":5`),
			"1", time.Second, func(c Counters) int64 { return c.RateLimitedTokens }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := newHarness(t, Config{Keys: map[string]KeyConfig{"k": tt.key}})
			if r := h.send("/v1/messages", anthropicHeaders("k"), tt.first); r.status != http.StatusOK {
				t.Fatalf("first: %d %s", r.status, r.body)
			}
			r := h.send("/v1/messages", anthropicHeaders("k"), tt.second)
			if r.status != http.StatusTooManyRequests {
				t.Fatalf("second: %d %s", r.status, r.body)
			}
			if e := r.anthropicErr(t); e.Type != "rate_limit_error" || !strings.Contains(e.Message, "per minute") {
				t.Errorf("error %+v", e)
			}
			if r.header.Get("retry-after") != tt.retryAfter {
				t.Errorf("retry-after %q, want %q", r.header.Get("retry-after"), tt.retryAfter)
			}
			r.noHeaders(t, "retry-after-ms")
			if c := h.fake.Stats().Keys["k"]; tt.counter(c) != 1 {
				t.Errorf("counters %+v", c)
			}
			h.clock.Advance(tt.advance)
			if r := h.send("/v1/messages", anthropicHeaders("k"), tt.second); r.status != http.StatusOK {
				t.Errorf("after retry-after: %d %s", r.status, r.body)
			}
		})
	}
}

func TestOverloadRate(t *testing.T) {
	tests := []struct {
		name   string
		send   func(h *harness) reply
		status int
		check  func(t *testing.T, r reply)
	}{
		{"anthropic 529", func(h *harness) reply {
			return h.send("/v1/messages", anthropicHeaders("k"), helloMessages(`,"max_tokens":5`))
		}, statusOverloaded, func(t *testing.T, r reply) {
			if e := r.anthropicErr(t); e.Type != "overloaded_error" || e.Message != "Overloaded" {
				t.Errorf("error %+v", e)
			}
		}},
		{"openai 503", func(h *harness) reply { return h.chat("k", helloChat(`,"max_tokens":5`)) }, 503,
			func(t *testing.T, r reply) {
				if e := r.apiErr(t); e.Type != typeServer || !strings.Contains(e.Message, "overloaded") {
					t.Errorf("error %+v", e)
				}
			}},
		{"azure 503", func(h *harness) reply {
			return h.send(azureChatPath, azureKey("k"), helloChat(`,"max_tokens":5`))
		}, 503, func(t *testing.T, r reply) {
			if e := r.apiErr(t); e.Type != typeServer || !strings.Contains(e.Message, "overloaded") {
				t.Errorf("error %+v", e)
			}
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := newHarness(t, Config{Keys: map[string]KeyConfig{"k": {RPM: 600, TPM: 60_000}}, OverloadRate: 1})
			r := tt.send(h)
			if r.status != tt.status {
				t.Fatalf("status %d: %s", r.status, r.body)
			}
			tt.check(t, r)
			c := h.fake.Stats().Keys["k"]
			if c.Overloaded != 1 || c.Served != 0 || c.Finished() != c.Received {
				t.Errorf("counters %+v", c)
			}
			// The tokens were refunded; the request was spent.
			if err := h.fake.SetOverloadRate(0); err != nil {
				t.Fatal(err)
			}
			r = tt.send(h)
			if r.status != http.StatusOK {
				t.Fatalf("with OverloadRate 0: %d", r.status)
			}
			if c := h.fake.Stats().Keys["k"]; c.Served != 1 {
				t.Errorf("counters %+v", c)
			}
		})
	}
	if _, err := New(Config{AcceptAnyKey: true, OverloadRate: 1.5}); err == nil {
		t.Error("OverloadRate 1.5 accepted")
	}
	h := newHarness(t, Config{AcceptAnyKey: true})
	if h.fake.SetOverloadRate(-0.1) == nil || h.fake.SetOverloadRate(nan()) == nil {
		t.Error("SetOverloadRate accepts a rate outside 0..1")
	}
}
