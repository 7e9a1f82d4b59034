package test

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/sluicehq/sluice/messages"
	"github.com/sluicehq/sluice/services/config"
)

// gatewayYAML has an OpenAI pool and an Anthropic pool with room for
// huge reservations, retries cut to two attempts, and team demo with the
// dev token.
func gatewayYAML(fakeURL string) string {
	return fmt.Sprintf(`pools:
  gpt:
    deployments:
      - {id: gpt-1, provider: openai, base_url: %[1]q, region: us-east, key: GPT_KEY, rpm: 100000, tpm: 1000000000}
  claude:
    deployments:
      - {id: claude-1, provider: anthropic, base_url: %[1]q, region: us-east, model: claude-sonnet-4, key: CLAUDE_KEY, rpm: 100000, tpm: 1000000000}
teams:
  demo:
    tokens: [%[2]q]
retry:
  max_attempts: 2
  base_delay: 10ms
`, fakeURL+"/v1", config.HashToken(devToken))
}

// Raw HTTP against a whole sluice: server-sent event framing in both
// dialects, provider answers passed through unchanged, sluice's own
// errors in the route's dialect.
func TestGatewayHTTP(t *testing.T) {
	s := startStack(t, stackOptions{yaml: gatewayYAML})
	startDispatcher(t, s, "d1", nil)
	startExecutors(t, s)
	url := startGateway(t, s, nil)
	results := watchResults(t, connect(t, s), "demo")
	ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
	defer cancel()

	t.Run("OpenAI stream", func(t *testing.T) {
		resp := gatewayPost(ctx, t, url, "/v1/chat/completions", `{"model":"gpt","stream":true,"max_tokens":4,"messages":[{"role":"user","content":"hi"}]}`)
		body := readAll(t, resp)
		if resp.StatusCode != 200 || resp.Header.Get("Content-Type") != "text/event-stream; charset=utf-8" || resp.Header.Get("Cache-Control") != "no-cache" {
			t.Fatalf("status %d headers %v", resp.StatusCode, resp.Header)
		}
		events := sseEvents(t, body)
		if events[len(events)-1] != "data: [DONE]" {
			t.Errorf("the stream does not end with data: [DONE]: %q", body)
		}
		var text strings.Builder
		for _, e := range events[:len(events)-1] {
			data, ok := strings.CutPrefix(e, "data: ")
			if !ok || strings.Contains(e, "\n") {
				t.Fatalf("event %q is not one data line", e)
			}
			var chunk struct {
				Object  string `json:"object"`
				Choices []struct {
					Delta struct {
						Content string `json:"content"`
					} `json:"delta"`
				} `json:"choices"`
			}
			if err := json.Unmarshal([]byte(data), &chunk); err != nil || chunk.Object != "chat.completion.chunk" {
				t.Fatalf("event %q: %v", e, err)
			}
			for _, c := range chunk.Choices {
				text.WriteString(c.Delta.Content)
			}
		}
		if text.String() != "ok ok ok ok" {
			t.Errorf("streamed text %q", text.String())
		}
		if resp.Trailer.Get("x-sluice-deployment") != "gpt-1" {
			t.Errorf("trailers %v", resp.Trailer)
		}
	})

	t.Run("Anthropic stream", func(t *testing.T) {
		resp := gatewayPost(ctx, t, url, "/v1/messages", `{"model":"claude","stream":true,"max_tokens":3,"messages":[{"role":"user","content":"hi"}]}`,
			"Authorization", "", "x-api-key", devToken, "anthropic-version", "2023-06-01")
		body := readAll(t, resp)
		if resp.StatusCode != 200 {
			t.Fatalf("status %d: %s", resp.StatusCode, body)
		}
		var names []string
		for _, e := range sseEvents(t, body) {
			lines := strings.Split(e, "\n")
			name, ok := strings.CutPrefix(lines[0], "event: ")
			if len(lines) != 2 || !ok || !strings.HasPrefix(lines[1], `data: {"type":"`+name+`"`) {
				t.Fatalf("event %q is not Anthropic's framing", e)
			}
			names = append(names, name)
		}
		want := "message_start content_block_start ping content_block_delta content_block_delta content_block_delta content_block_stop message_delta message_stop"
		if strings.Join(names, " ") != want {
			t.Errorf("events %v", names)
		}
		id := resp.Header.Get("x-sluice-call-id")
		results.waitFor(t, []string{id}, 10*time.Second)
		if r := results.one(t, id); r.Status != messages.StatusOK || r.Usage == nil || r.Usage.CompletionTokens != 3 {
			t.Errorf("result %+v usage %+v", r.Error, r.Usage)
		}
	})

	t.Run("Anthropic message", func(t *testing.T) {
		resp := gatewayPost(ctx, t, url, "/v1/messages", `{"model":"claude","max_tokens":3,"system":"be brief","messages":[{"role":"user","content":"hi"}]}`,
			"Authorization", "", "x-api-key", devToken)
		body := readAll(t, resp)
		var msg struct {
			Type  string `json:"type"`
			Model string `json:"model"`
		}
		if resp.StatusCode != 200 || json.Unmarshal([]byte(body), &msg) != nil || msg.Type != "message" || msg.Model != "claude-sonnet-4" {
			t.Errorf("%d %s", resp.StatusCode, body)
		}
	})

	// The fake refuses max_tokens over 2^20 (sluice allows up to 10M): the
	// provider's 400 comes back unchanged, in its own dialect.
	for _, tc := range []struct{ name, path, body, want string }{
		{"OpenAI provider error", "/v1/chat/completions", `{"model":"gpt","max_tokens":2000000,"messages":[{"role":"user","content":"hi"}]}`, `"code":"invalid_value"`},
		{"Anthropic provider error", "/v1/messages", `{"model":"claude","max_tokens":2000000,"messages":[{"role":"user","content":"hi"}]}`, `"type":"invalid_request_error"`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			resp := gatewayPost(ctx, t, url, tc.path, tc.body)
			body := readAll(t, resp)
			if resp.StatusCode != 400 || !strings.Contains(body, tc.want) || !strings.Contains(body, "2000000") {
				t.Fatalf("%d %s", resp.StatusCode, body)
			}
			id := resp.Header.Get("x-sluice-call-id")
			results.waitFor(t, []string{id}, 10*time.Second)
			r := results.one(t, id)
			if r.Error == nil || r.Error.Code != messages.CodeProviderError || string(r.Body) != body {
				t.Errorf("the answer is not the provider's body unchanged:\n%s\n%s", body, r.Body)
			}
		})
	}

	t.Run("Anthropic stream refused before it starts", func(t *testing.T) {
		resp := gatewayPost(ctx, t, url, "/v1/messages", `{"model":"claude","stream":true,"max_tokens":2000000,"messages":[{"role":"user","content":"hi"}]}`)
		body := readAll(t, resp)
		if resp.StatusCode != 400 || resp.Header.Get("Content-Type") != "application/json" || !strings.Contains(body, `"type":"error"`) {
			t.Errorf("%d %v %s", resp.StatusCode, resp.Header, body)
		}
	})

	t.Run("deadline", func(t *testing.T) {
		if err := s.Fake.SetLatency(2*time.Second, 0); err != nil {
			t.Fatal(err)
		}
		defer func() { _ = s.Fake.SetLatency(0, 0) }()
		for _, path := range []string{"/v1/chat/completions", "/v1/messages"} {
			model := map[string]string{"/v1/chat/completions": "gpt", "/v1/messages": "claude"}[path]
			resp := gatewayPost(ctx, t, url, path, `{"model":"`+model+`","max_tokens":3,"messages":[{"role":"user","content":"hi"}]}`, "X-Sluice-Timeout", "300ms")
			body := readAll(t, resp)
			if resp.StatusCode != 504 || resp.Header.Get("x-should-retry") != "false" {
				t.Errorf("%s: %d %s", path, resp.StatusCode, body)
			}
			if path == "/v1/messages" && !strings.Contains(body, `"type":"timeout_error"`) || path != "/v1/messages" && !strings.Contains(body, `"code":"deadline_exceeded"`) {
				t.Errorf("%s: %s", path, body)
			}
		}
	})

	t.Run("unknown model and wrong route", func(t *testing.T) {
		for _, tc := range []struct{ path, body, want string }{
			{"/v1/chat/completions", `{"model":"gpt-9","messages":[{"role":"user","content":"hi"}]}`, `"code":"model_not_found"`},
			{"/v1/chat/completions", `{"model":"claude","messages":[{"role":"user","content":"hi"}]}`, `"code":"model_not_found"`},
			{"/v1/messages", `{"model":"gpt","max_tokens":3,"messages":[{"role":"user","content":"hi"}]}`, `"type":"not_found_error"`},
		} {
			resp := gatewayPost(ctx, t, url, tc.path, tc.body)
			if body := readAll(t, resp); resp.StatusCode != 404 || !strings.Contains(body, tc.want) {
				t.Errorf("%s %s: %d %s", tc.path, tc.body, resp.StatusCode, body)
			}
		}
	})

	t.Run("health", func(t *testing.T) {
		for _, path := range []string{"/healthz", "/readyz"} {
			resp, err := http.Get(url + path)
			if err != nil {
				t.Fatal(err)
			}
			if body := readAll(t, resp); resp.StatusCode != 200 {
				t.Errorf("%s: %d %s", path, resp.StatusCode, body)
			}
		}
	})
}
