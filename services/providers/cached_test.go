package providers

import (
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/sluicehq/sluice/messages"
)

// answering serves body, as contentType, to every request.
func answering(t *testing.T, contentType, body string) string {
	t.Helper()
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", contentType)
		_, _ = io.WriteString(w, body)
	}))
	t.Cleanup(srv.Close)
	return srv.URL
}

// The prompt tokens a provider read from its cache reach the usage, in
// every shape the adapters read: OpenAI's chat (prompt_tokens_details),
// its stream's usage chunk, the Responses API (input_tokens_details),
// Anthropic's messages and their stream (cache_read_input_tokens; cache
// writes are uncached input).
func TestCachedTokensInEveryShape(t *testing.T) {
	chat := `{"model":"m","max_tokens":5,"messages":[{"role":"user","content":"hi"}]}`
	for _, tc := range []struct {
		name, provider string
		endpoint       messages.Endpoint
		stream         bool
		contentType    string
		answer         string
		want           [4]int64 // prompt, completion, total, cached
	}{
		{"openai chat", ProviderOpenAI, messages.EndpointChatCompletions, false, "application/json",
			`{"id":"c","object":"chat.completion","choices":[],"usage":{"prompt_tokens":2006,"completion_tokens":300,"total_tokens":2306,"prompt_tokens_details":{"cached_tokens":1920,"audio_tokens":0}}}`,
			[4]int64{2006, 300, 2306, 1920}},
		{"openai chat stream", ProviderOpenAI, messages.EndpointChatCompletions, true, "text/event-stream",
			"data: {\"id\":\"c\",\"object\":\"chat.completion.chunk\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\"hi\"}}]}\n\n" +
				"data: {\"id\":\"c\",\"object\":\"chat.completion.chunk\",\"choices\":[],\"usage\":{\"prompt_tokens\":2006,\"completion_tokens\":300,\"total_tokens\":2306,\"prompt_tokens_details\":{\"cached_tokens\":1920}}}\n\n" +
				"data: [DONE]\n\n",
			[4]int64{2006, 300, 2306, 1920}},
		{"openai responses", ProviderOpenAI, messages.EndpointResponses, false, "application/json",
			`{"id":"resp_1","object":"response","output":[],"usage":{"input_tokens":1500,"input_tokens_details":{"cached_tokens":1024},"output_tokens":80,"total_tokens":1580}}`,
			[4]int64{1500, 80, 1580, 1024}},
		{"anthropic messages", ProviderAnthropic, messages.EndpointMessages, false, "application/json",
			`{"id":"msg_1","type":"message","role":"assistant","content":[],"usage":{"input_tokens":50,"cache_creation_input_tokens":200,"cache_read_input_tokens":1000,"output_tokens":75}}`,
			[4]int64{1250, 75, 1325, 1000}},
		{"anthropic stream", ProviderAnthropic, messages.EndpointMessages, true, "text/event-stream",
			sse("message_start", `{"type":"message_start","message":{"id":"msg_1","type":"message","role":"assistant","content":[],"usage":{"input_tokens":50,"cache_creation_input_tokens":200,"cache_read_input_tokens":1000,"output_tokens":1}}}`,
				"message_delta", evMessageDelta(`{"output_tokens":75}`), "message_stop", evStop),
			[4]int64{1250, 75, 1325, 1000}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			url := answering(t, tc.contentType, tc.answer) + "/v1"
			body := chat
			if tc.endpoint == messages.EndpointResponses {
				body = `{"model":"m","input":"hi"}`
			}
			if tc.stream {
				body = body[:len(body)-1] + `,"stream":true}`
			}
			req := Request{Endpoint: tc.endpoint, Body: []byte(body), Model: "m", BaseURL: url, Secret: "k"}
			adapter, err := For(tc.provider)
			if err != nil {
				t.Fatal(err)
			}
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			var resp *Response
			if tc.stream {
				resp, err = adapter.(Streamer).Stream(ctx, nil, req, func(Event) error { return nil })
			} else {
				resp, err = adapter.Do(ctx, nil, req)
			}
			if err != nil {
				t.Fatal(err)
			}
			if resp.Class != Success || resp.Usage == nil {
				t.Fatalf("class %v usage %+v", resp.Class, resp.Usage)
			}
			u := resp.Usage
			if got := [4]int64{u.PromptTokens, u.CompletionTokens, u.TotalTokens, u.CachedTokens()}; got != tc.want {
				t.Errorf("usage %v, want %v", got, tc.want)
			}
		})
	}
}
