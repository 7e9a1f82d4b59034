package providers

import (
	"strings"
	"testing"

	"github.com/sluicehq/sluice/messages"
	"github.com/sluicehq/sluice/services/fakeprovider"
)

// Responses go to {base_url}/responses (OpenAI) and Azure's v1 API,
// {base_url}/openai/v1/responses, with the deployment as the body's
// model; the usage is read from input_tokens and output_tokens.
func TestResponsesOnTheWire(t *testing.T) {
	f := newFakeAPI(t, fakeprovider.Config{AcceptAnyKey: true})
	body := []byte(`{"model":"x","input":"hello world!","max_output_tokens":16}`)

	resp, err := f.do("openai", Request{Endpoint: messages.EndpointResponses, Body: body, Model: "gpt-4.1", BaseURL: f.url + "/v1", Secret: "sk-o"})
	if err != nil {
		t.Fatal(err)
	}
	// 3 + 3 + 3 of input, 16 of output.
	expect{status: 200, class: Success, usage: [3]int64{9, 16, 25}}.check(t, resp)
	if w := f.last(); w.url.Path != "/v1/responses" || !strings.Contains(string(w.body), `"model":"gpt-4.1"`) || w.header.Get("Authorization") != "Bearer sk-o" {
		t.Errorf("sent %s %s", w.url, w.body)
	}

	resp, err = f.do("azure", Request{Endpoint: messages.EndpointResponses, Body: body, Model: "my-deployment", BaseURL: f.url, Secret: "sk-a"})
	if err != nil {
		t.Fatal(err)
	}
	expect{status: 200, class: Success, usage: [3]int64{9, 16, 25}}.check(t, resp)
	if w := f.last(); w.url.Path != "/openai/v1/responses" || !strings.Contains(string(w.body), `"model":"my-deployment"`) || w.header.Get("api-key") != "sk-a" {
		t.Errorf("sent %s %s %v", w.url, w.body, w.header)
	}
}

// A Responses usage is read from input_tokens and output_tokens; chat's
// names still win when they are the ones given, and garbage drops it.
func TestOpenAIUsageShapes(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want *messages.Usage
	}{
		{`{"input_tokens":3,"output_tokens":4,"total_tokens":7,"input_tokens_details":{"cached_tokens":1}}`, &messages.Usage{PromptTokens: 3, CompletionTokens: 4, TotalTokens: 7}},
		{`{"input_tokens":3}`, &messages.Usage{PromptTokens: 3, TotalTokens: 3}},
		{`{"prompt_tokens":3,"completion_tokens":4,"total_tokens":7}`, &messages.Usage{PromptTokens: 3, CompletionTokens: 4, TotalTokens: 7}},
		{`{"input_tokens":-3,"output_tokens":4}`, nil},
		{`{"input_tokens":"3"}`, nil},
	} {
		got := openAIUsage([]byte(tc.in))
		if (got == nil) != (tc.want == nil) || got != nil && *got != *tc.want {
			t.Errorf("%s: %+v, want %+v", tc.in, got, tc.want)
		}
	}
}
