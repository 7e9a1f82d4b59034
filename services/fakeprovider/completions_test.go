package fakeprovider

import (
	"encoding/json"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/sluicehq/sluice/messages"
	"github.com/sluicehq/sluice/services/tokens"
)

// A legacy completion: n choices per prompt of "ok" tokens, usage of
// every completion generated (best_of of them), charged at admission what
// sluice's estimator reserves, settled on the usage.
func TestCompletions(t *testing.T) {
	tests := []struct {
		name          string
		body          string
		choices       int
		perChoice     int64
		finish        string
		prompt, total int64 // usage
	}{
		// "hello world!" is 12 bytes: 3 tokens; max_tokens defaults to 16.
		{"default max_tokens", `{"model":"m","prompt":"hello world!"}`, 1, 16, "stop", 3, 3 + 16},
		{"cut by max_tokens", `{"model":"m","prompt":"hello world!","max_tokens":4}`, 1, 4, "length", 3, 3 + 4},
		{"n", `{"model":"m","prompt":"hello world!","max_tokens":2,"n":3}`, 3, 2, "length", 3, 3 + 6},
		{"best_of", `{"model":"m","prompt":"hello world!","max_tokens":2,"n":2,"best_of":5}`, 2, 2, "length", 3, 3 + 10},
		{"batch of strings", `{"model":"m","prompt":["abcd","abcdefgh"],"max_tokens":3,"n":2}`, 4, 3, "length", 3, 3 + 12},
		{"token ids", `{"model":"m","prompt":[1,2,3,4,5],"max_tokens":1}`, 1, 1, "length", 5, 6},
		{"token id lists", `{"model":"m","prompt":[[1,2],[3]],"max_tokens":1}`, 2, 1, "length", 3, 5},
		{"max_tokens zero", `{"model":"m","prompt":"abcd","max_tokens":0,"echo":true}`, 1, 0, "length", 1, 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := newHarness(t, Config{Keys: map[string]KeyConfig{"k": {RPM: 600, TPM: 6_000_000}}})
			r := h.post("/v1/completions", "k", tt.body)
			if r.status != http.StatusOK {
				t.Fatalf("status %d: %s", r.status, r.body)
			}
			var resp struct {
				ID      string `json:"id"`
				Object  string `json:"object"`
				Model   string `json:"model"`
				Choices []struct {
					Text         string  `json:"text"`
					Index        int     `json:"index"`
					FinishReason *string `json:"finish_reason"`
				} `json:"choices"`
				Usage usage `json:"usage"`
			}
			r.decode(t, &resp)
			if resp.Object != "text_completion" || !strings.HasPrefix(resp.ID, "cmpl-") || resp.Model != "m" || len(resp.Choices) != tt.choices {
				t.Fatalf("completion %s", r.body)
			}
			for i, c := range resp.Choices {
				if c.Index != i || c.Text != completionText(tt.perChoice) || str(c.FinishReason) != tt.finish {
					t.Errorf("choice %d: %+v", i, c)
				}
			}
			if resp.Usage.PromptTokens != tt.prompt || resp.Usage.TotalTokens != tt.total || resp.Usage.CompletionTokens != tt.total-tt.prompt {
				t.Errorf("usage %+v, want prompt %d total %d", resp.Usage, tt.prompt, tt.total)
			}
			est, bad := tokens.Of(messages.EndpointCompletions, []byte(tt.body), 999)
			if bad != nil {
				t.Fatal(bad)
			}
			c := h.fake.Stats().Keys["k"]
			if c.MaxTokens1s != est.Total() || c.PromptTokens != est.Prompt || c.Served != 1 || c.TotalTokens != tt.total {
				t.Errorf("fake charged %d (prompt %d), sluice estimates %d (prompt %d); counters %+v", c.MaxTokens1s, c.PromptTokens, est.Total(), est.Prompt, c)
			}
			if r.header.Get("x-ratelimit-remaining-tokens") == "" {
				t.Errorf("no rate-limit headers: %v", r.header)
			}
		})
	}
}

// A streamed legacy completion is OpenAI's server-sent events: a chunk
// per token and choice, the finish, the usage chunk when asked, [DONE].
func TestCompletionsStream(t *testing.T) {
	for _, include := range []bool{false, true} {
		h := newHarness(t, Config{Keys: map[string]KeyConfig{"k": {RPM: 600, TPM: 60_000}}})
		body := `{"model":"m","prompt":"hello world!","max_tokens":3,"n":2,"stream":true}`
		if include {
			body = `{"model":"m","prompt":"hello world!","max_tokens":3,"n":2,"stream":true,"stream_options":{"include_usage":true}}`
		}
		r := h.post("/v1/completions", "k", body)
		if r.status != http.StatusOK || !strings.HasPrefix(r.header.Get("Content-Type"), "text/event-stream") {
			t.Fatalf("status %d %v: %s", r.status, r.header, r.body)
		}
		events := strings.Split(strings.TrimSuffix(string(r.body), "\n\n"), "\n\n")
		want := 3*2 + 2 + 1 // deltas, finishes, [DONE]
		if include {
			want++
		}
		if len(events) != want || events[len(events)-1] != "data: [DONE]" {
			t.Fatalf("include_usage %v: %d events: %q", include, len(events), events)
		}
		text := map[int]string{}
		var u *usage
		for _, e := range events[:len(events)-1] {
			var ch struct {
				Object  string `json:"object"`
				Choices []struct {
					Text         string  `json:"text"`
					Index        int     `json:"index"`
					FinishReason *string `json:"finish_reason"`
				} `json:"choices"`
				Usage json.RawMessage `json:"usage"`
			}
			if err := json.Unmarshal([]byte(strings.TrimPrefix(e, "data: ")), &ch); err != nil || ch.Object != "text_completion" {
				t.Fatalf("event %q: %v", e, err)
			}
			if include != (len(ch.Usage) > 0) {
				t.Errorf("include_usage %v, usage %s", include, ch.Usage)
			}
			if len(ch.Choices) == 0 && string(ch.Usage) != "null" {
				u = &usage{}
				_ = json.Unmarshal(ch.Usage, u)
			}
			for _, c := range ch.Choices {
				text[c.Index] += c.Text
			}
		}
		if text[0] != "ok ok ok" || text[1] != "ok ok ok" {
			t.Errorf("texts %v", text)
		}
		if include && (u == nil || *u != usage{PromptTokens: 3, CompletionTokens: 6, TotalTokens: 9}) {
			t.Errorf("usage chunk %+v", u)
		}
		if c := h.fake.Stats().Keys["k"]; c.Served != 1 || c.TotalTokens != 9 || c.MaxTokens1s != 3+6 {
			t.Errorf("counters %+v", c)
		}
	}
}

func TestCompletionsInvalid(t *testing.T) {
	tests := []struct{ name, body, param string }{
		{"not JSON", `{"model":`, ""},
		{"no model", `{"prompt":"x"}`, "model"},
		{"no prompt", `{"model":"m"}`, "prompt"},
		{"prompt object", `{"model":"m","prompt":{"a":1}}`, "prompt"},
		{"prompt empty array", `{"model":"m","prompt":[]}`, "prompt"},
		{"prompt empty id list", `{"model":"m","prompt":[[1],[]]}`, "prompt"},
		{"negative token id", `{"model":"m","prompt":[1,-2]}`, "prompt"},
		{"max_tokens negative", `{"model":"m","prompt":"x","max_tokens":-1}`, "max_tokens"},
		{"n zero", `{"model":"m","prompt":"x","n":0}`, "n"},
		{"best_of below n", `{"model":"m","prompt":"x","n":3,"best_of":2}`, "best_of"},
		{"best_of streamed", `{"model":"m","prompt":"x","best_of":2,"stream":true}`, "best_of"},
		{"max_tokens string", `{"model":"m","prompt":"x","max_tokens":"5"}`, "max_tokens"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := newHarness(t, Config{Keys: map[string]KeyConfig{"k": {RPM: 600, TPM: 60_000}}})
			r := h.post("/v1/completions", "k", tt.body)
			if r.status != http.StatusBadRequest {
				t.Fatalf("status %d: %s", r.status, r.body)
			}
			if e := r.apiErr(t); e.Type != typeInvalidRequest || str(e.Param) != tt.param && tt.param != "" || e.Message == "" {
				t.Errorf("error %+v, want param %q", e, tt.param)
			}
			if c := h.fake.Stats().Keys["k"]; c.InvalidRequests != 1 || c.MaxRequests1s != 0 {
				t.Errorf("counters %+v: an invalid call is counted and charged nothing", c)
			}
		})
	}
}

// Completions are refused, like chat, when the key's tokens cannot cover
// the charge; and Azure serves them at its deployment URL.
func TestCompletionsLimitsAndAzure(t *testing.T) {
	h := newHarness(t, Config{Keys: map[string]KeyConfig{"k": {RPM: 600, TPM: 600}}})
	// 600 TPM with the default 1s quantum holds 10 tokens: 3 + 16 is
	// over, admitted only on a full bucket, which it leaves in debt.
	if r := h.post("/v1/completions", "k", `{"model":"m","prompt":"hello world!"}`); r.status != http.StatusOK {
		t.Fatalf("first: status %d: %s", r.status, r.body)
	}
	r := h.post("/v1/completions", "k", `{"model":"m","prompt":"hello world!"}`)
	if r.status != http.StatusTooManyRequests || str(r.apiErr(t).Code) != codeRateLimit || r.header.Get("retry-after") == "" {
		t.Fatalf("second: status %d %v: %s", r.status, r.header, r.body)
	}
	if c := h.fake.Stats().Keys["k"]; c.RateLimitedTokens != 1 {
		t.Errorf("counters %+v", c)
	}
	h.clock.Advance(time.Minute)
	a := h.send("/openai/deployments/dep/completions?api-version=2024-10-21", map[string]string{"api-key": "k"}, `{"prompt":"abcd","max_tokens":1}`)
	if a.status != http.StatusOK {
		t.Fatalf("azure: %d %s", a.status, a.body)
	}
	var resp struct {
		Model string `json:"model"`
		Usage usage  `json:"usage"`
	}
	a.decode(t, &resp)
	if resp.Model != "dep" || resp.Usage.TotalTokens != 2 {
		t.Errorf("azure completion %s", a.body)
	}
}

// count_tokens answers the prompt as the Messages rule counts it, and is
// admitted as one request and no tokens.
func TestCountTokens(t *testing.T) {
	h := newHarness(t, Config{Keys: map[string]KeyConfig{"k": {RPM: 600, TPM: 60_000}}})
	body := `{"model":"c","system":"be brief","messages":[{"role":"user","content":"hello world!"}]}`
	r := h.send("/v1/messages/count_tokens", anthropicHeaders("k"), body)
	if r.status != http.StatusOK {
		t.Fatalf("status %d: %s", r.status, r.body)
	}
	var got map[string]int64
	r.decode(t, &got)
	if len(got) != 1 || got["input_tokens"] != helloPrompt+3+2 {
		t.Errorf("count %s, want input_tokens %d", r.body, helloPrompt+3+2)
	}
	if r.header.Get("anthropic-ratelimit-requests-remaining") == "" || r.header.Get("request-id") == "" {
		t.Errorf("headers %v", r.header)
	}
	c := h.fake.Stats().Keys["k"]
	if c.Served != 1 || c.MaxRequests1s != 1 || c.MaxTokens1s != 0 || c.TotalTokens != 0 {
		t.Errorf("counters %+v: one request, no tokens", c)
	}
	est, bad := tokens.Of(messages.EndpointCountTokens, []byte(body), 999)
	if bad != nil || est.Total() != c.MaxTokens1s {
		t.Errorf("sluice reserves %+v (%v), the fake charged %d", est, bad, c.MaxTokens1s)
	}

	for _, tt := range []struct{ name, body, message string }{
		{"max_tokens", `{"model":"c","max_tokens":5,"messages":[{"role":"user","content":"x"}]}`, "max_tokens: Extra inputs"},
		{"stream", `{"model":"c","stream":false,"messages":[{"role":"user","content":"x"}]}`, "stream: Extra inputs"},
		{"no model", `{"messages":[{"role":"user","content":"x"}]}`, "model: Field required"},
		{"no messages", `{"model":"c"}`, "messages: Field required"},
		{"bad role", `{"model":"c","messages":[{"role":"system","content":"x"}]}`, "messages.0.role"},
	} {
		r := h.send("/v1/messages/count_tokens", anthropicHeaders("k"), tt.body)
		if r.status != http.StatusBadRequest {
			t.Fatalf("%s: status %d: %s", tt.name, r.status, r.body)
		}
		if e := r.anthropicErr(t); e.Type != "invalid_request_error" || !strings.Contains(e.Message, tt.message) {
			t.Errorf("%s: error %+v, want %q", tt.name, e, tt.message)
		}
	}
	if r := h.send("/v1/messages/count_tokens", map[string]string{"x-api-key": "k"}, body); r.status != http.StatusBadRequest {
		t.Errorf("without anthropic-version: %d %s", r.status, r.body)
	}
	if r := h.send("/v1/messages/count_tokens", anthropicHeaders("nope"), body); r.status != http.StatusUnauthorized || r.anthropicErr(t).Type != "authentication_error" {
		t.Errorf("unknown key: %d %s", r.status, r.body)
	}
}
