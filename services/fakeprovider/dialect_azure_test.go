package fakeprovider

import (
	"bytes"
	"encoding/json"
	"net/http"
	"strings"
	"testing"
)

const azureChatPath = "/openai/deployments/dep-1/chat/completions?api-version=2024-10-21"

func azureKey(k string) map[string]string { return map[string]string{"api-key": k} }

// azureErr decodes Azure's gateway error body, which has no field but
// code and message: an OpenAI-shaped body is refused.
func (r reply) azureErr(t *testing.T) azureErrorDetail {
	t.Helper()
	var b azureErrorBody
	dec := json.NewDecoder(bytes.NewReader(r.body))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&b); err != nil {
		t.Fatalf("not Azure's gateway error body: %s: %v", r.body, err)
	}
	return b.Error
}

func TestAzureChat(t *testing.T) {
	h := newHarness(t, Config{Keys: map[string]KeyConfig{"az-1": {RPM: 600, TPM: 60_000}}})
	// Azure ignores the body's model: the URL names the deployment.
	for i, body := range []string{
		`{"messages":[{"role":"user","content":"hello world!"}],"max_tokens":5}`,
		`{"model":"gpt-other","messages":[{"role":"user","content":"hello world!"}],"max_tokens":5}`,
	} {
		r := h.send(azureChatPath, azureKey("az-1"), body)
		if r.status != http.StatusOK {
			t.Fatalf("call %d: %d %s", i, r.status, r.body)
		}
		var resp chatCompletion
		r.decode(t, &resp)
		if resp.Model != "dep-1" || resp.Usage.TotalTokens != helloPrompt+5 || resp.Choices[0].FinishReason != "length" {
			t.Errorf("call %d: %+v", i, resp)
		}
		if got, want := r.header.Get("x-ratelimit-remaining-requests"), itoa(int64(9-i)); got != want {
			t.Errorf("remaining requests %s, want %s", got, want)
		}
		if r.header.Get("x-ratelimit-remaining-tokens") == "" {
			t.Error("no remaining tokens")
		}
		// Azure sends neither limits nor resets.
		r.noHeaders(t, "x-ratelimit-limit-requests", "x-ratelimit-limit-tokens", "x-ratelimit-reset-requests",
			"x-ratelimit-reset-tokens", "retry-after", "retry-after-ms")
	}
	if c := h.fake.Stats().Keys["az-1"]; c.Received != 2 || c.Served != 2 {
		t.Errorf("counters %+v", c)
	}
}

func TestAzureEmbeddings(t *testing.T) {
	h := newHarness(t, Config{Keys: map[string]KeyConfig{"az-1": {TPM: 60_000}}})
	r := h.send("/openai/deployments/emb/embeddings?api-version=2024-10-21", azureKey("az-1"), `{"input":["abcd","abcde"]}`)
	if r.status != http.StatusOK {
		t.Fatalf("%d %s", r.status, r.body)
	}
	var resp embeddingList
	r.decode(t, &resp)
	if resp.Model != "emb" || len(resp.Data) != 2 || resp.Usage.PromptTokens != 3 {
		t.Errorf("%+v", resp)
	}
}

func TestAzureErrors(t *testing.T) {
	hello := `{"messages":[{"role":"user","content":"hello world!"}]}`
	tests := []struct {
		name    string
		cfg     Config
		path    string
		headers map[string]string
		status  int
		code    string // Azure gateway code; "" for an OpenAI-shaped body
		message string
		count   func(Counters) int64
	}{
		{"missing api-version", Config{Keys: map[string]KeyConfig{"k": {}}}, "/openai/deployments/d/chat/completions",
			azureKey("k"), 400, "MissingApiVersionParameter", "api-version query parameter", func(c Counters) int64 { return c.InvalidRequests }},
		{"bearer is not Azure's auth", Config{Keys: map[string]KeyConfig{"k": {}}}, azureChatPath,
			map[string]string{"Authorization": "Bearer k"}, 401, "401", "Access denied", nil},
		{"unknown key", Config{Keys: map[string]KeyConfig{"k": {}}}, azureChatPath,
			azureKey("nope"), 401, "401", "Access denied", nil},
		{"insufficient quota", Config{Keys: map[string]KeyConfig{"k": {InsufficientQuota: true}}}, azureChatPath,
			azureKey("k"), 429, "insufficient_quota", "quota", func(c Counters) int64 { return c.InsufficientQuota }},
		{"unknown deployment", Config{Keys: map[string]KeyConfig{"k": {}}, Models: []string{"other"}}, azureChatPath,
			azureKey("k"), 404, "DeploymentNotFound", "deployment for this resource does not exist", func(c Counters) int64 { return c.InvalidRequests }},
		{"invalid body is the model service's 400", Config{Keys: map[string]KeyConfig{"k": {}}}, azureChatPath,
			azureKey("k"), 400, "", "Missing required parameter: 'messages'", func(c Counters) int64 { return c.InvalidRequests }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := newHarness(t, tt.cfg)
			body := hello
			if tt.code == "" {
				body = `{}`
			}
			r := h.send(tt.path, tt.headers, body)
			if r.status != tt.status {
				t.Fatalf("status %d, want %d: %s", r.status, tt.status, r.body)
			}
			if tt.code != "" {
				if e := r.azureErr(t); e.Code != tt.code || !strings.Contains(e.Message, tt.message) {
					t.Errorf("error %+v", e)
				}
			} else if e := r.apiErr(t); !strings.Contains(e.Message, tt.message) || e.Type != typeInvalidRequest {
				t.Errorf("error %+v", e)
			}
			if tt.count != nil {
				if c := h.fake.Stats().Keys["k"]; c.Received != 1 || tt.count(c) != 1 || c.Finished() != 1 {
					t.Errorf("counters %+v", c)
				}
			}
		})
	}
}

func TestAzureRateLimited(t *testing.T) {
	tests := []struct {
		name   string
		key    KeyConfig
		what   string
		op     string
		path   string
		body   string
		ms, s  string
		remain string
	}{
		{"calls", KeyConfig{RPM: 60}, "call", "ChatCompletions_Create", azureChatPath,
			`{"messages":[{"role":"user","content":"hello world!"}]}`, "1000", "1", "x-ratelimit-remaining-requests"},
		{"tokens", KeyConfig{TPM: 600}, "token", "Embeddings_Create", "/openai/deployments/e/embeddings?api-version=2024-06-01",
			`{"input":"` + strings.Repeat("x", 32) + `"}`, "600", "1", "x-ratelimit-remaining-tokens"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := newHarness(t, Config{Keys: map[string]KeyConfig{"k": tt.key}})
			if r := h.send(tt.path, azureKey("k"), tt.body); r.status != http.StatusOK {
				t.Fatalf("first: %d %s", r.status, r.body)
			}
			r := h.send(tt.path, azureKey("k"), tt.body)
			if r.status != http.StatusTooManyRequests {
				t.Fatalf("second: %d %s", r.status, r.body)
			}
			e := r.azureErr(t)
			version := tt.path[strings.Index(tt.path, "=")+1:]
			if e.Code != "429" || !strings.Contains(e.Message, tt.op+" Operation under Azure OpenAI API version "+version) ||
				!strings.Contains(e.Message, "exceeded "+tt.what+" rate limit") || !strings.Contains(e.Message, "retry after 1 second.") {
				t.Errorf("error %+v", e)
			}
			if r.header.Get("retry-after-ms") != tt.ms || r.header.Get("retry-after") != tt.s || r.header.Get(tt.remain) == "" {
				t.Errorf("headers %v", r.header)
			}
		})
	}
}

func TestAzureUnknownOperation(t *testing.T) {
	h := newHarness(t, Config{AcceptAnyKey: true})
	for _, p := range []string{"/openai/deployments/d/images/generations?api-version=1", "/openai/deployments//chat/completions?api-version=1", "/openai/deployments/d"} {
		if r := h.send(p, azureKey("k"), `{}`); r.status != http.StatusNotFound {
			t.Errorf("%s: %d", p, r.status)
		}
	}
}
