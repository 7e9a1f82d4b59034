package gateway_test

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/sluicehq/sluice/messages"
	"github.com/sluicehq/sluice/services/config"
)

// Requests that are not allowed are refused in the route's dialect, and
// never reach NATS.
func TestAuthAndTiers(t *testing.T) {
	r := newRig(t, nil)
	for _, tc := range []struct {
		name    string
		path    string
		body    string
		headers []string
		status  int
		code    string // OpenAI routes: error.code; Anthropic: error.type
		param   string
	}{
		{"no token", "/v1/chat/completions", chatBody, nil, 401, "invalid_api_key", ""},
		{"unknown token", "/v1/chat/completions", chatBody, []string{"Authorization", "Bearer sk-nobody"}, 401, "invalid_api_key", ""},
		{"not a bearer", "/v1/chat/completions", chatBody, []string{"Authorization", "Basic " + demoToken}, 401, "invalid_api_key", ""},
		{"x-api-key is Anthropic's", "/v1/chat/completions", chatBody, []string{"x-api-key", demoToken}, 401, "invalid_api_key", ""},
		{"no token on messages", "/v1/messages", messagesBody, nil, 401, "authentication_error", ""},
		{"unknown x-api-key", "/v1/messages", messagesBody, []string{"x-api-key", "sk-nobody"}, 401, "authentication_error", ""},
		{"pool of another team", "/v1/chat/completions", `{"model":"secret-pool","messages":[{"role":"user","content":"hi"}]}`, []string{"Authorization", "Bearer " + demoToken}, 403, "forbidden", "model"},
		{"tier not allowed", "/v1/chat/completions", chatBody, []string{"Authorization", "Bearer " + demoToken, "X-Sluice-Tier", "critical"}, 403, "forbidden", ""},
		{"tier not allowed on messages", "/v1/messages", messagesBody, []string{"x-api-key", demoToken, "X-Sluice-Tier", "critical"}, 403, "permission_error", ""},
		{"unknown tier", "/v1/chat/completions", chatBody, []string{"Authorization", "Bearer " + demoToken, "X-Sluice-Tier", "urgent"}, 400, "invalid_request", ""},
		{"bad timeout", "/v1/chat/completions", chatBody, []string{"Authorization", "Bearer " + demoToken, "X-Sluice-Timeout", "soon"}, 400, "invalid_request", ""},
		{"negative timeout", "/v1/chat/completions", chatBody, []string{"Authorization", "Bearer " + demoToken, "X-Sluice-Timeout", "-5s"}, 400, "invalid_request", ""},
		{"timeout over max_timeout", "/v1/chat/completions", chatBody, []string{"Authorization", "Bearer " + demoToken, "X-Sluice-Timeout", "11m"}, 400, "invalid_request", ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			a := r.do(http.MethodPost, tc.path, "", tc.body, tc.headers...)
			if a.Status != tc.status {
				t.Fatalf("status %d, want %d: %s", a.Status, tc.status, a.Body)
			}
			if ct := a.Header.Get("Content-Type"); ct != "application/json" {
				t.Errorf("Content-Type %q", ct)
			}
			if strings.HasPrefix(tc.path, "/v1/messages") {
				if _, typ := anthropicError(t, a.Body); typ != tc.code {
					t.Errorf("error type %q, want %q", typ, tc.code)
				}
			} else {
				_, _, code, param := openAIError(t, a.Body)
				if code != tc.code {
					t.Errorf("error code %q, want %q", code, tc.code)
				}
				if (param == nil) != (tc.param == "") || (param != nil && *param != tc.param) {
					t.Errorf("param %v, want %q", param, tc.param)
				}
			}
			if strings.Contains(a.Body, demoToken) || strings.Contains(a.Body, "sk-nobody") {
				t.Errorf("the answer echoes the token: %s", a.Body)
			}
		})
	}
	r.noCalls()
	if logs := r.logs.String(); strings.Contains(logs, demoToken) || strings.Contains(logs, "sk-nobody") {
		t.Errorf("a token is in the logs:\n%s", logs)
	}
}

// Bad bodies are refused before they reach NATS, with the field at fault.
func TestBadInput(t *testing.T) {
	r := newRig(t, nil)
	auth := []string{"Authorization", "Bearer " + demoToken}
	msgs := `"messages":[{"role":"user","content":"hi"}]`
	for _, tc := range []struct {
		name   string
		path   string
		body   string
		status int
		code   string // OpenAI routes: error.code; Anthropic: error.type
		param  string
	}{
		{"malformed JSON", "/v1/chat/completions", `{"model":"chat",`, 400, "invalid_request", ""},
		{"trailing garbage", "/v1/chat/completions", chatBody + "x", 400, "invalid_request", ""},
		{"not an object", "/v1/chat/completions", `[1,2]`, 400, "invalid_request", ""},
		{"empty", "/v1/chat/completions", ` `, 400, "invalid_request", ""},
		{"no model", "/v1/chat/completions", `{` + msgs + `}`, 400, "invalid_request", "model"},
		{"model not a string", "/v1/chat/completions", `{"model":5,` + msgs + `}`, 400, "invalid_request", "model"},
		{"unknown model", "/v1/chat/completions", `{"model":"gpt-9",` + msgs + `}`, 404, "model_not_found", "model"},
		{"chat on an Anthropic pool", "/v1/chat/completions", `{"model":"claude",` + msgs + `}`, 404, "model_not_found", "model"},
		{"embeddings on an Anthropic pool", "/v1/embeddings", `{"model":"claude","input":"x"}`, 404, "model_not_found", "model"},
		{"no messages", "/v1/chat/completions", `{"model":"chat"}`, 400, "invalid_request", "messages"},
		{"n zero", "/v1/chat/completions", `{"model":"chat","n":0,` + msgs + `}`, 400, "invalid_request", "n"},
		{"n too large", "/v1/chat/completions", `{"model":"chat","n":1000,` + msgs + `}`, 400, "invalid_request", "n"},
		{"n not a number", "/v1/chat/completions", `{"model":"chat","n":"two",` + msgs + `}`, 400, "invalid_request", "n"},
		{"max_tokens zero", "/v1/chat/completions", `{"model":"chat","max_tokens":0,` + msgs + `}`, 400, "invalid_request", "max_tokens"},
		{"max_tokens negative", "/v1/chat/completions", `{"model":"chat","max_tokens":-1,` + msgs + `}`, 400, "invalid_request", "max_tokens"},
		{"max_tokens huge", "/v1/chat/completions", `{"model":"chat","max_tokens":100000000,` + msgs + `}`, 400, "invalid_request", "max_tokens"},
		{"max_completion_tokens zero", "/v1/chat/completions", `{"model":"chat","max_completion_tokens":0,` + msgs + `}`, 400, "invalid_request", "max_completion_tokens"},
		{"no input", "/v1/embeddings", `{"model":"emb"}`, 400, "invalid_request", "input"},
		{"over the body limit", "/v1/chat/completions", `{"model":"chat",` + msgs + `,"user":"` + strings.Repeat("x", 5000) + `"}`, 413, "invalid_request", ""},
		{"messages: malformed", "/v1/messages", `{"model":"claude"`, 400, "invalid_request_error", ""},
		{"messages: no max_tokens", "/v1/messages", `{"model":"claude",` + msgs + `}`, 400, "invalid_request_error", ""},
		{"messages: max_tokens zero", "/v1/messages", `{"model":"claude","max_tokens":0,` + msgs + `}`, 400, "invalid_request_error", ""},
		{"messages: OpenAI pool", "/v1/messages", `{"model":"chat","max_tokens":5,` + msgs + `}`, 404, "not_found_error", ""},
		{"messages: unknown model", "/v1/messages", `{"model":"claude-9","max_tokens":5,` + msgs + `}`, 404, "not_found_error", ""},
		{"completions: no prompt", "/v1/completions", `{"model":"chat"}`, 400, "invalid_request", "prompt"},
		{"completions: prompt an object", "/v1/completions", `{"model":"chat","prompt":{"a":1}}`, 400, "invalid_request", "prompt"},
		{"completions: prompt empty array", "/v1/completions", `{"model":"chat","prompt":[]}`, 400, "invalid_request", "prompt"},
		{"completions: prompt twice", "/v1/completions", `{"model":"chat","prompt":"a","Prompt":"bbbbbbbbbbbbbbbbbbbbbbbbbbbbbb"}`, 400, "invalid_request", "Prompt"},
		{"completions: best_of below n", "/v1/completions", `{"model":"chat","prompt":"a","n":3,"best_of":2}`, 400, "invalid_request", "best_of"},
		{"completions: best_of twice", "/v1/completions", `{"model":"chat","prompt":"a","best_of":1,"BEST_OF":100}`, 400, "invalid_request", "BEST_OF"},
		{"completions: max_tokens negative", "/v1/completions", `{"model":"chat","prompt":"a","max_tokens":-1}`, 400, "invalid_request", "max_tokens"},
		{"completions: Anthropic pool", "/v1/completions", `{"model":"claude","prompt":"a"}`, 404, "model_not_found", "model"},
		{"count_tokens: no messages", "/v1/messages/count_tokens", `{"model":"claude"}`, 400, "invalid_request_error", ""},
		{"count_tokens: stream", "/v1/messages/count_tokens", `{"model":"claude","stream":true,` + msgs + `}`, 400, "invalid_request_error", ""},
		{"count_tokens: max_tokens", "/v1/messages/count_tokens", `{"model":"claude","max_tokens":5,` + msgs + `}`, 400, "invalid_request_error", ""},
		{"count_tokens: OpenAI pool", "/v1/messages/count_tokens", `{"model":"chat",` + msgs + `}`, 404, "not_found_error", ""},
		{"count_tokens: malformed", "/v1/messages/count_tokens", `{"model":`, 400, "invalid_request_error", ""},
		{"messages: over the limit", "/v1/messages", `{"model":"claude","max_tokens":5,` + msgs + `,"system":"` + strings.Repeat("x", 5000) + `"}`, 413, "request_too_large", ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			a := r.do(http.MethodPost, tc.path, "", tc.body, auth...)
			if a.Status != tc.status {
				t.Fatalf("status %d, want %d: %s", a.Status, tc.status, a.Body)
			}
			if strings.HasPrefix(tc.path, "/v1/messages") {
				if _, typ := anthropicError(t, a.Body); typ != tc.code {
					t.Errorf("error type %q, want %q", typ, tc.code)
				}
				return
			}
			_, _, code, param := openAIError(t, a.Body)
			if code != tc.code {
				t.Errorf("error code %q, want %q", code, tc.code)
			}
			if (param == nil) != (tc.param == "") || (param != nil && *param != tc.param) {
				t.Errorf("param %v, want %q", param, tc.param)
			}
		})
	}
	// A body sent without a Content-Length is cut off at the limit: the
	// answer comes while the client is still sending.
	req := r.request(context.Background(), http.MethodPost, "/v1/chat/completions", demoToken, "")
	endless := &endlessBody{prefix: `{"model":"chat",` + msgs + `,"user":"`, stop: make(chan struct{})}
	defer close(endless.stop)
	req.Body, req.ContentLength = endless, -1
	if a := r.wait(r.send(req)); a.Status != http.StatusRequestEntityTooLarge {
		t.Errorf("chunked body over the limit: status %d: %s", a.Status, a.Body)
	}
	r.noCalls()
}

// endlessBody is a request body that sends its prefix and 8 KiB more,
// then nothing until stop is closed, so that only a server that stops
// reading at its limit can answer.
type endlessBody struct {
	prefix string
	sent   int
	stop   chan struct{}
}

func (b *endlessBody) Read(p []byte) (int, error) {
	if b.sent >= 8<<10 {
		<-b.stop
		return 0, io.EOF
	}
	n := copy(p, strings.Repeat("x", len(p)))
	if b.sent == 0 {
		n = copy(p, b.prefix)
	}
	b.sent += n
	return n, nil
}

func (b *endlessBody) Close() error { return nil }

// The call the gateway publishes follows the protocol: the team's subject
// and tier, Nats-Msg-Id = id, the pool, the route's endpoint, the body
// unchanged and the deadline.
func TestPublishedCall(t *testing.T) {
	r := newRig(t, nil)
	for _, tc := range []struct {
		name      string
		path      string
		token     string
		body      string
		headers   []string
		subject   string
		endpoint  messages.Endpoint
		timeoutMS int64
	}{
		{"default tier and timeout", "/v1/chat/completions", demoToken, chatBody, nil, "sluice.call.demo.standard", messages.EndpointChatCompletions, 90000},
		{"tier header", "/v1/chat/completions", demoToken, chatBody, []string{"X-Sluice-Tier", "Batch"}, "sluice.call.demo.batch", messages.EndpointChatCompletions, 90000},
		{"timeout as a duration", "/v1/embeddings", demoToken, embBody, []string{"X-Sluice-Timeout", "2m"}, "sluice.call.demo.standard", messages.EndpointEmbeddings, 120000},
		{"timeout in seconds", "/v1/embeddings", demoToken, embBody, []string{"X-Sluice-Timeout", "1.5"}, "sluice.call.demo.standard", messages.EndpointEmbeddings, 1500},
		{"the SDK's timeout", "/v1/chat/completions", opsToken, chatBody, []string{"X-Stainless-Timeout", "7"}, "sluice.call.ops.standard", messages.EndpointChatCompletions, 7000},
		{"the SDK's timeout, capped", "/v1/chat/completions", opsToken, chatBody, []string{"X-Stainless-Timeout", "3600"}, "sluice.call.ops.standard", messages.EndpointChatCompletions, 600000},
		{"messages", "/v1/messages", "", messagesBody, []string{"x-api-key", demoToken, "anthropic-version", "2023-06-01"}, "sluice.call.demo.standard", messages.EndpointMessages, 90000},
	} {
		t.Run(tc.name, func(t *testing.T) {
			pending := r.send(r.request(context.Background(), http.MethodPost, tc.path, tc.token, tc.body, tc.headers...))
			c := r.nextCall()
			if c.Subject != tc.subject {
				t.Errorf("subject %q, want %q", c.Subject, tc.subject)
			}
			if c.MsgID == "" || c.MsgID != c.Call.ID || !messages.ValidToken(c.Call.ID) {
				t.Errorf("Nats-Msg-Id %q, id %q", c.MsgID, c.Call.ID)
			}
			var sent, got map[string]any
			_ = json.Unmarshal([]byte(tc.body), &sent)
			if err := json.Unmarshal(c.Call.Body, &got); err != nil || !reflect.DeepEqual(sent, got) {
				t.Errorf("body %s, want %s", c.Call.Body, tc.body)
			}
			if c.Call.Model != sent["model"] || c.Call.Endpoint != tc.endpoint || c.Call.TimeoutMS != tc.timeoutMS {
				t.Errorf("model %q endpoint %q timeout_ms %d", c.Call.Model, c.Call.Endpoint, c.Call.TimeoutMS)
			}
			r.result(c, messages.Result{HTTPStatus: 200, Body: json.RawMessage(`{"ok":true}`)})
			a := r.wait(pending)
			if a.Header.Get("x-sluice-call-id") != c.Call.ID {
				t.Errorf("x-sluice-call-id %q, want %q", a.Header.Get("x-sluice-call-id"), c.Call.ID)
			}
		})
	}
	// The body goes as the client wrote it, HTML characters included.
	body := `{"model":"chat","messages":[{"role":"user","content":"<b>a & b</b>"}]}`
	pending := r.send(r.request(context.Background(), http.MethodPost, "/v1/chat/completions", demoToken, body))
	c := r.nextCall()
	if string(c.Call.Body) != body {
		t.Errorf("body %s, want %s", c.Call.Body, body)
	}
	r.result(c, messages.Result{HTTPStatus: 200, Body: json.RawMessage(`{}`)})
	r.wait(pending)
}

// Every kind of result gets its status, body and headers, in each dialect.
func TestAnswers(t *testing.T) {
	r := newRig(t, nil)
	providerBody := `{"error":{"message":"Invalid 'messages[0].role'","type":"invalid_request_error","param":"messages[0].role","code":null}}`
	for _, tc := range []struct {
		name       string
		res        messages.Result
		status     int
		body       string // exactly, when set
		code       string // sluice's error: OpenAI code
		anthropic  string // sluice's error: Anthropic type
		retryAfter string
		noRetry    bool
	}{
		{name: "ok", res: messages.Result{HTTPStatus: 200, Body: json.RawMessage(`{"id":"chatcmpl-1","choices":[]}`), Attempts: 2, Deployment: "chat-1", Region: "us-east", Timings: messages.Timings{QueuedMS: 12.5}},
			status: 200, body: `{"id":"chatcmpl-1","choices":[]}`},
		{name: "provider 400 passes through", res: messages.Result{HTTPStatus: 400, Body: json.RawMessage(providerBody), Attempts: 1,
			Error: &messages.Error{Code: messages.CodeProviderError, Message: "the provider refused", ProviderStatus: 400}},
			status: 400, body: providerBody, noRetry: true},
		{name: "provider 500 passes through", res: messages.Result{HTTPStatus: 500, Body: json.RawMessage(`{"error":{"message":"boom"}}`), Attempts: 5,
			Error: &messages.Error{Code: messages.CodeProviderError, Message: "kept failing", ProviderStatus: 500}},
			status: 500, body: `{"error":{"message":"boom"}}`, noRetry: true},
		{name: "provider 429 passes through", res: messages.Result{HTTPStatus: 429, Body: json.RawMessage(`{"error":{"code":"rate_limit_exceeded"}}`), Attempts: 5,
			Error: &messages.Error{Code: messages.CodeRateLimited, Message: "gave up after 5 attempts", ProviderStatus: 429}},
			status: 429, body: `{"error":{"code":"rate_limit_exceeded"}}`, noRetry: true},
		{name: "rate limited without a body", res: messages.Result{Error: &messages.Error{Code: messages.CodeRateLimited, Message: "gave up"}},
			status: 429, code: "rate_limited", anthropic: "rate_limit_error", noRetry: true},
		{name: "provider unreachable", res: messages.Result{Error: &messages.Error{Code: messages.CodeProviderError, Message: "connection refused"}},
			status: 502, code: "provider_error", anthropic: "api_error", noRetry: true},
		{name: "queue full", res: messages.Result{Error: &messages.Error{Code: messages.CodeQueueFull, Message: "team demo has 10 calls waiting", RetryAfterMS: 1500}},
			status: 429, code: "queue_full", anthropic: "rate_limit_error", retryAfter: "2"},
		{name: "budget exhausted", res: messages.Result{Error: &messages.Error{Code: messages.CodeBudgetExhausted, Message: "team demo's day budget is spent", RetryAfterMS: 3_600_000}},
			status: 429, code: "budget_exhausted", anthropic: "rate_limit_error", retryAfter: "3600", noRetry: true},
		{name: "deadline", res: messages.Result{Error: &messages.Error{Code: messages.CodeDeadlineExceeded, Message: "the deadline passed"}},
			status: 504, code: "deadline_exceeded", anthropic: "timeout_error", noRetry: true},
		{name: "unknown model", res: messages.Result{Error: &messages.Error{Code: messages.CodeUnknownModel, Message: "no pool"}},
			status: 404, code: "model_not_found", anthropic: "not_found_error"},
		{name: "forbidden", res: messages.Result{Error: &messages.Error{Code: messages.CodeForbidden, Message: "no"}},
			status: 403, code: "forbidden", anthropic: "permission_error"},
		{name: "invalid", res: messages.Result{Error: &messages.Error{Code: messages.CodeInvalidRequest, Message: "body.messages: bad", Field: "body.messages"}},
			status: 400, code: "invalid_request", anthropic: "invalid_request_error"},
		{name: "no deployment serves the route", res: messages.Result{Error: &messages.Error{Code: messages.CodeInvalidRequest, Message: "endpoint: none", Field: "endpoint"}},
			status: 404, code: "model_not_found", anthropic: "not_found_error"},
		{name: "internal", res: messages.Result{Error: &messages.Error{Code: messages.CodeInternal, Message: "no secret"}},
			status: 502, code: "internal", anthropic: "api_error"},
		{name: "canceled", res: messages.Result{Error: &messages.Error{Code: messages.CodeCanceled, Message: "canceled"}},
			status: 499, code: "canceled", anthropic: "invalid_request_error"},
	} {
		for _, route := range []struct{ path, body string }{{"/v1/chat/completions", chatBody}, {"/v1/messages", messagesBody}} {
			t.Run(tc.name+" "+route.path, func(t *testing.T) {
				pending := r.send(r.request(context.Background(), http.MethodPost, route.path, demoToken, route.body))
				c := r.nextCall()
				r.result(c, tc.res)
				a := r.wait(pending)
				if a.Status != tc.status {
					t.Fatalf("status %d, want %d: %s", a.Status, tc.status, a.Body)
				}
				if ct := a.Header.Get("Content-Type"); ct != "application/json" {
					t.Errorf("Content-Type %q", ct)
				}
				if got := a.Header.Get("Retry-After"); got != tc.retryAfter {
					t.Errorf("Retry-After %q, want %q", got, tc.retryAfter)
				}
				if got := a.Header.Get("x-should-retry") == "false"; got != tc.noRetry {
					t.Errorf("x-should-retry: false is %v, want %v", got, tc.noRetry)
				}
				if a.Header.Get("x-sluice-call-id") != c.Call.ID {
					t.Errorf("x-sluice-call-id %q, want %q", a.Header.Get("x-sluice-call-id"), c.Call.ID)
				}
				if tc.res.Deployment != "" {
					for h, want := range map[string]string{"x-sluice-deployment": "chat-1", "x-sluice-region": "us-east", "x-sluice-attempts": "2", "x-sluice-queued-ms": "12.5"} {
						if got := a.Header.Get(h); got != want {
							t.Errorf("%s %q, want %q", h, got, want)
						}
					}
				}
				switch {
				case tc.body != "":
					if a.Body != tc.body {
						t.Errorf("body %s, want it unchanged: %s", a.Body, tc.body)
					}
				case route.path == "/v1/messages":
					msg, typ := anthropicError(t, a.Body)
					if typ != tc.anthropic || msg != tc.res.Error.Message {
						t.Errorf("type %q message %q, want %q %q", typ, msg, tc.anthropic, tc.res.Error.Message)
					}
				default:
					msg, _, code, _ := openAIError(t, a.Body)
					if code != tc.code || msg != tc.res.Error.Message {
						t.Errorf("code %q message %q, want %q %q", code, msg, tc.code, tc.res.Error.Message)
					}
				}
			})
		}
	}
}

// /v1/models lists exactly the pools the caller's team may use.
func TestModels(t *testing.T) {
	r := newRig(t, nil)
	list := func(token string, headers ...string) []string {
		t.Helper()
		a := r.do(http.MethodGet, "/v1/models", token, "", headers...)
		if a.Status != 200 {
			t.Fatalf("status %d: %s", a.Status, a.Body)
		}
		var out struct {
			Object string `json:"object"`
			Data   []struct {
				ID      string `json:"id"`
				Object  string `json:"object"`
				OwnedBy string `json:"owned_by"`
			} `json:"data"`
		}
		if err := json.Unmarshal([]byte(a.Body), &out); err != nil || out.Object != "list" {
			t.Fatalf("not a model list (%v): %s", err, a.Body)
		}
		var ids []string
		for _, m := range out.Data {
			if m.Object != "model" || m.OwnedBy == "" {
				t.Errorf("not a model: %+v", m)
			}
			ids = append(ids, m.ID)
		}
		return ids
	}
	if got, want := list(demoToken), []string{"chat", "claude", "emb"}; !reflect.DeepEqual(got, want) {
		t.Errorf("demo's models %v, want %v", got, want)
	}
	if got, want := list(opsToken), []string{"chat", "claude", "emb", "secret-pool"}; !reflect.DeepEqual(got, want) {
		t.Errorf("ops's models %v, want %v", got, want)
	}
	// A client that speaks Anthropic (x-api-key, or anthropic-version)
	// gets Anthropic's list, and its errors.
	for _, headers := range [][]string{{"x-api-key", demoToken}, {"anthropic-version", "2023-06-01", "Authorization", "Bearer " + demoToken}} {
		a := r.do(http.MethodGet, "/v1/models", "", "", headers...)
		var out struct {
			Data []struct {
				Type        string    `json:"type"`
				ID          string    `json:"id"`
				DisplayName string    `json:"display_name"`
				CreatedAt   time.Time `json:"created_at"`
			} `json:"data"`
			HasMore bool    `json:"has_more"`
			FirstID *string `json:"first_id"`
			LastID  *string `json:"last_id"`
		}
		dec := json.NewDecoder(strings.NewReader(a.Body))
		dec.DisallowUnknownFields()
		if err := dec.Decode(&out); a.Status != 200 || err != nil || out.HasMore || out.FirstID == nil || *out.FirstID != "chat" || out.LastID == nil || *out.LastID != "emb" {
			t.Fatalf("%v: not Anthropic's model list (%d, %v): %s", headers[0], a.Status, err, a.Body)
		}
		var ids []string
		for _, m := range out.Data {
			if m.Type != "model" || m.DisplayName != m.ID || !m.CreatedAt.Equal(time.Unix(0, 0)) {
				t.Errorf("not a model: %+v", m)
			}
			ids = append(ids, m.ID)
		}
		if want := []string{"chat", "claude", "emb"}; !reflect.DeepEqual(ids, want) {
			t.Errorf("%v: demo's models %v, want %v", headers[0], ids, want)
		}
		one := r.do(http.MethodGet, "/v1/models/claude", "", "", headers...)
		if one.Status != 200 || !strings.Contains(one.Body, `"type":"model"`) || !strings.Contains(one.Body, `"display_name":"claude"`) {
			t.Errorf("%v: one model: %d %s", headers[0], one.Status, one.Body)
		}
		missing := r.do(http.MethodGet, "/v1/models/gpt-9", "", "", headers...)
		if _, typ := anthropicError(t, missing.Body); missing.Status != 404 || typ != "not_found_error" {
			t.Errorf("%v: unknown model: %d %s", headers[0], missing.Status, missing.Body)
		}
	}
	if a := r.do(http.MethodGet, "/v1/models", "", "", "x-api-key", "sk-nobody"); a.Status != 401 {
		t.Errorf("Anthropic client, wrong token: %d %s", a.Status, a.Body)
	} else if _, typ := anthropicError(t, a.Body); typ != "authentication_error" {
		t.Errorf("Anthropic client, wrong token: type %q", typ)
	}
	if a := r.do(http.MethodGet, "/v1/models", "", ""); a.Status != 401 {
		t.Errorf("without a token: %d %s", a.Status, a.Body)
	}
	if a := r.do(http.MethodGet, "/v1/models/chat", demoToken, ""); a.Status != 200 || !strings.Contains(a.Body, `"id":"chat"`) {
		t.Errorf("one model: %d %s", a.Status, a.Body)
	}
	for _, name := range []string{"secret-pool", "gpt-9"} {
		a := r.do(http.MethodGet, "/v1/models/"+name, demoToken, "")
		if a.Status != 404 {
			t.Errorf("model %s: %d %s", name, a.Status, a.Body)
			continue
		}
		if _, _, code, _ := openAIError(t, a.Body); code != "model_not_found" {
			t.Errorf("model %s: code %q", name, code)
		}
	}

	// A new configuration shows at once.
	cfg, err := config.Parse([]byte(strings.Replace(rigYAML(), "pools: [chat, emb, claude]", "pools: [chat]", 1)))
	if err != nil {
		t.Fatal(err)
	}
	r.live.Store(cfg)
	if got, want := list(demoToken), []string{"chat"}; !reflect.DeepEqual(got, want) {
		t.Errorf("after a configuration change: %v, want %v", got, want)
	}
}

func TestRoutesAndMethods(t *testing.T) {
	r := newRig(t, nil)
	a := r.do(http.MethodGet, "/v1/chat/completions", demoToken, "")
	if a.Status != 405 || a.Header.Get("Allow") != "POST" {
		t.Errorf("GET chat: %d Allow %q", a.Status, a.Header.Get("Allow"))
	}
	openAIError(t, a.Body)
	a = r.do(http.MethodGet, "/v1/messages", demoToken, "")
	if a.Status != 405 {
		t.Errorf("GET messages: %d", a.Status)
	}
	anthropicError(t, a.Body)
	a = r.do(http.MethodPost, "/v1/images/generations", demoToken, chatBody)
	if a.Status != 404 {
		t.Errorf("unknown route: %d", a.Status)
	}
	if _, _, code, _ := openAIError(t, a.Body); code != "unknown_url" {
		t.Errorf("unknown route: code %q", code)
	}
	a = r.do(http.MethodGet, "/v1/completions", demoToken, "")
	if a.Status != 405 {
		t.Errorf("GET completions: %d", a.Status)
	}
	openAIError(t, a.Body)
	// Every path under /v1/messages answers in Anthropic's dialect.
	a = r.do(http.MethodGet, "/v1/messages/count_tokens", demoToken, "")
	if a.Status != 405 {
		t.Errorf("GET count_tokens: %d", a.Status)
	}
	anthropicError(t, a.Body)
	for _, p := range []string{"/v1/messages/batches", "/v1/messages/count_tokens/x", "/v1/messages/"} {
		a = r.do(http.MethodPost, p, demoToken, "{}")
		if _, typ := anthropicError(t, a.Body); a.Status != 404 || typ != "not_found_error" {
			t.Errorf("%s: %d %s", p, a.Status, a.Body)
		}
	}
	r.noCalls()
}

func TestHealthAndReadiness(t *testing.T) {
	r := newRig(t, nil)
	if a := r.do(http.MethodGet, "/healthz", "", ""); a.Status != 200 {
		t.Errorf("/healthz: %d %s", a.Status, a.Body)
	}
	if a := r.do(http.MethodGet, "/readyz", "", ""); a.Status != 200 || !strings.Contains(a.Body, `"nats":"connected"`) {
		t.Errorf("/readyz: %d %s", a.Status, a.Body)
	}
	r.srv.Shutdown()
	r.srv.WaitForShutdown()
	deadline := time.Now().Add(hang)
	for {
		a := r.do(http.MethodGet, "/readyz", "", "")
		if a.Status == 503 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("/readyz still %d with NATS down: %s", a.Status, a.Body)
		}
		time.Sleep(20 * time.Millisecond)
	}
	if a := r.do(http.MethodGet, "/healthz", "", ""); a.Status != 200 {
		t.Errorf("/healthz with NATS down: %d %s", a.Status, a.Body)
	}
	// With NATS down a call cannot be submitted: 503, in time.
	a := r.do(http.MethodPost, "/v1/chat/completions", demoToken, chatBody)
	if a.Status != 503 {
		t.Errorf("a call with NATS down: %d %s", a.Status, a.Body)
	}
}

// Without a configuration the gateway is not ready, and says so.
func TestNotReadyWithoutConfiguration(t *testing.T) {
	r := newRig(t, nil)
	r.live.Store(nil)
	a := r.do(http.MethodGet, "/readyz", "", "")
	if a.Status != 503 || !strings.Contains(a.Body, `"config":"none"`) {
		t.Errorf("/readyz: %d %s", a.Status, a.Body)
	}
	if a := r.do(http.MethodPost, "/v1/chat/completions", demoToken, chatBody); a.Status != 503 {
		t.Errorf("a call without configuration: %d %s", a.Status, a.Body)
	}
	if a := r.do(http.MethodGet, "/v1/models", demoToken, ""); a.Status != 503 {
		t.Errorf("models without configuration: %d %s", a.Status, a.Body)
	}
}

// calls.max_body_bytes is the size of the request body: one of exactly
// the limit is published, though the call around it is larger.
func TestBodyOfTheLimitIsPublished(t *testing.T) {
	r := newRig(t, nil)
	frame := `{"model":"chat","messages":[{"role":"user","content":"hi"}],"user":""}`
	body := strings.Replace(frame, `"user":""`, `"user":"`+strings.Repeat("x", 4096-len(frame))+`"`, 1)
	ch := r.send(r.request(context.Background(), http.MethodPost, "/v1/chat/completions", demoToken, body))
	c := r.nextCall()
	if len(c.Call.Body) != 4096 {
		t.Fatalf("the call carries a body of %d bytes, want 4096", len(c.Call.Body))
	}
	r.submitted(c)
	r.result(c, messages.Result{HTTPStatus: 200, Body: json.RawMessage(`{"ok":true}`)})
	if a := r.wait(ch); a.Status != http.StatusOK {
		t.Fatalf("status %d: %s", a.Status, a.Body)
	}
}
