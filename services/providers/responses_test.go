package providers

import (
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"reflect"
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
// The cached part of the prompt comes from input_tokens_details (or
// chat's prompt_tokens_details); a cached count that cannot be right is
// dropped, and the rest of the usage stands.
func TestOpenAIUsageShapes(t *testing.T) {
	cached := func(n int64) *messages.PromptTokensDetails { return &messages.PromptTokensDetails{CachedTokens: n} }
	for _, tc := range []struct {
		in   string
		want *messages.Usage
	}{
		{`{"input_tokens":3,"output_tokens":4,"total_tokens":7,"input_tokens_details":{"cached_tokens":1}}`, &messages.Usage{PromptTokens: 3, CompletionTokens: 4, TotalTokens: 7, PromptTokensDetails: cached(1)}},
		{`{"prompt_tokens":30,"completion_tokens":4,"total_tokens":34,"prompt_tokens_details":{"cached_tokens":20,"audio_tokens":0}}`, &messages.Usage{PromptTokens: 30, CompletionTokens: 4, TotalTokens: 34, PromptTokensDetails: cached(20)}},
		{`{"prompt_tokens":30,"completion_tokens":4,"prompt_tokens_details":{"cached_tokens":0}}`, &messages.Usage{PromptTokens: 30, CompletionTokens: 4, TotalTokens: 34}},
		{`{"prompt_tokens":30,"completion_tokens":4,"prompt_tokens_details":{"cached_tokens":31}}`, &messages.Usage{PromptTokens: 30, CompletionTokens: 4, TotalTokens: 34}},
		{`{"prompt_tokens":30,"completion_tokens":4,"prompt_tokens_details":{"cached_tokens":-1}}`, &messages.Usage{PromptTokens: 30, CompletionTokens: 4, TotalTokens: 34}},
		{`{"prompt_tokens":30,"completion_tokens":4,"prompt_tokens_details":{"cached_tokens":"20"}}`, &messages.Usage{PromptTokens: 30, CompletionTokens: 4, TotalTokens: 34}},
		{`{"prompt_tokens":30,"completion_tokens":4,"prompt_tokens_details":"lots"}`, &messages.Usage{PromptTokens: 30, CompletionTokens: 4, TotalTokens: 34}},
		{`{"input_tokens":30,"output_tokens":4,"prompt_tokens_details":{"cached_tokens":20}}`, &messages.Usage{PromptTokens: 30, CompletionTokens: 4, TotalTokens: 34}},
		{`{"input_tokens":3}`, &messages.Usage{PromptTokens: 3, TotalTokens: 3}},
		{`{"prompt_tokens":3,"completion_tokens":4,"total_tokens":7}`, &messages.Usage{PromptTokens: 3, CompletionTokens: 4, TotalTokens: 7}},
		{`{"input_tokens":-3,"output_tokens":4}`, nil},
		{`{"input_tokens":"3"}`, nil},
	} {
		got := openAIUsage([]byte(tc.in))
		if !reflect.DeepEqual(got, tc.want) {
			t.Errorf("%s: %+v, want %+v", tc.in, got, tc.want)
		}
	}
}

// A streamed Responses call relays every typed event as it came, none
// Injected (nothing is asked for: response.completed always carries the
// usage), and settles on response.completed's usage; openai and azure
// alike.
func TestResponsesStream(t *testing.T) {
	f := newFakeAPI(t, fakeprovider.Config{AcceptAnyKey: true, CompletionTokens: 3})
	for _, provider := range []string{"openai", "azure"} {
		base := f.url + "/v1"
		if provider == "azure" {
			base = f.url
		}
		a, _ := For(provider)
		var names []string
		resp, err := a.(Streamer).Stream(t.Context(), http.DefaultClient, Request{Endpoint: messages.EndpointResponses, Model: "m", BaseURL: base, Secret: "sk",
			Body: []byte(`{"model":"x","input":"hello world!","stream":true}`)}, func(e Event) error {
			if e.Injected {
				t.Errorf("%s: an injected event %s", provider, e.Raw)
			}
			names = append(names, e.Name)
			return nil
		})
		if err != nil {
			t.Fatalf("%s: %v", provider, err)
		}
		if resp.Class != Success || resp.Usage == nil || *resp.Usage != (messages.Usage{PromptTokens: 9, CompletionTokens: 3, TotalTokens: 12}) {
			t.Errorf("%s: %+v usage %+v", provider, resp, resp.Usage)
		}
		if len(names) != 4+3+4 || names[0] != "response.created" || names[4] != "response.output_text.delta" || names[len(names)-1] != "response.completed" {
			t.Errorf("%s: events %v", provider, names)
		}
		if w := f.last(); strings.Contains(string(w.body), "stream_options") {
			t.Errorf("%s: asked for usage: %s", provider, w.body)
		}
	}
}

// A Responses stream that fails (response.failed, or an error event) is
// relayed to its end and is no success; one that stops before its last
// event is incomplete.
func TestResponsesStreamFailures(t *testing.T) {
	for _, tc := range []struct {
		name, events string
		class        Class
		code         string
		err          error
	}{
		{"failed", "event: response.created\ndata: {\"type\":\"response.created\",\"response\":{}}\n\nevent: response.failed\ndata: {\"type\":\"response.failed\",\"response\":{\"error\":{\"code\":\"server_error\"},\"usage\":{\"input_tokens\":2,\"output_tokens\":1,\"total_tokens\":3}}}\n\n", Unavailable, "server_error", nil},
		{"error event", "event: error\ndata: {\"type\":\"error\",\"code\":\"rate_limit_exceeded\",\"message\":\"slow down\"}\n\n", RateLimited, "rate_limit_exceeded", nil},
		{"cut", "event: response.created\ndata: {\"type\":\"response.created\",\"response\":{}}\n\n", Success, "", ErrStreamIncomplete},
	} {
		t.Run(tc.name, func(t *testing.T) {
			srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				w.Header().Set("Content-Type", "text/event-stream")
				_, _ = io.WriteString(w, tc.events)
			}))
			defer srv.Close()
			resp, err := OpenAI{}.Stream(t.Context(), srv.Client(), Request{Endpoint: messages.EndpointResponses, Model: "m", BaseURL: srv.URL, Secret: "sk",
				Body: []byte(`{"input":"x","stream":true}`)}, func(Event) error { return nil })
			if tc.err != nil {
				if !errors.Is(err, tc.err) {
					t.Fatalf("err %v, want %v", err, tc.err)
				}
				return
			}
			if err != nil || resp.Class != tc.class || resp.ErrorCode != tc.code {
				t.Fatalf("err %v resp %+v", err, resp)
			}
		})
	}
}

// GET and DELETE of a stored response go to {base_url}/responses/{id}
// (OpenAI) and {base_url}/openai/v1/responses/{id} (Azure), with no body,
// and read no usage: the stored response's was settled when it was made.
func TestStoredResponsesOnTheWire(t *testing.T) {
	f := newFakeAPI(t, fakeprovider.Config{AcceptAnyKey: true})
	for _, provider := range []string{"openai", "azure"} {
		base, prefix := f.url+"/v1", "/v1/responses/"
		if provider == "azure" {
			base, prefix = f.url, "/openai/v1/responses/"
		}
		made, err := f.do(provider, Request{Endpoint: messages.EndpointResponses, Body: []byte(`{"model":"x","input":"hi"}`), Model: "m", BaseURL: base, Secret: "sk-" + provider})
		if err != nil || made.Class != Success {
			t.Fatalf("%s: %v %+v", provider, err, made)
		}
		var v struct {
			ID string `json:"id"`
		}
		if err := json.Unmarshal(made.Body, &v); err != nil {
			t.Fatal(err)
		}
		for i, tc := range []struct {
			endpoint messages.Endpoint
			method   string
		}{{messages.EndpointResponseGet, http.MethodGet}, {messages.EndpointResponseDelete, http.MethodDelete}, {messages.EndpointResponseGet, http.MethodGet}} {
			resp, err := f.do(provider, Request{Endpoint: tc.endpoint, Body: []byte(`{"model":"m","response_id":"` + v.ID + `"}`), Model: "m", BaseURL: base, Secret: "sk-" + provider})
			if err != nil {
				t.Fatalf("%s %s: %v", provider, tc.method, err)
			}
			if want := map[int]int{0: 200, 1: 200, 2: 404}[i]; resp.Status != want {
				t.Errorf("%s %s: status %d, want %d: %s", provider, tc.method, resp.Status, want, resp.Body)
			}
			if w := f.last(); w.method != tc.method || w.url.Path != prefix+v.ID || len(w.body) != 0 {
				t.Errorf("%s: sent %s %s %q", provider, w.method, w.url, w.body)
			}
			if resp.Usage != nil {
				t.Errorf("%s %s: usage %+v", provider, tc.method, resp.Usage)
			}
		}
	}
	if _, err := (OpenAI{}).Do(t.Context(), http.DefaultClient, Request{Endpoint: messages.EndpointResponseGet, Body: []byte(`{}`), BaseURL: f.url}); !errors.Is(err, ErrInvalidBody) {
		t.Errorf("no response_id: %v", err)
	}
}
