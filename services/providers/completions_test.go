package providers

import (
	"context"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/sluicehq/sluice/messages"
	"github.com/sluicehq/sluice/services/fakeprovider"
)

// Legacy completions go to {base_url}/completions (OpenAI) and the
// deployment's /completions (Azure), plain and streamed; streamed, the
// usage chunk sluice asks for is read and marked Injected when the client
// did not ask for it. count_tokens goes to {base_url}/messages/count_tokens
// and carries no usage.
func TestCompletionsAndCountTokensOnTheWire(t *testing.T) {
	f := newFakeAPI(t, fakeprovider.Config{AcceptAnyKey: true})
	body := []byte(`{"model":"x","prompt":"hello world!","max_tokens":4}`)

	resp, err := f.do("openai", Request{Endpoint: messages.EndpointCompletions, Body: body, Model: "gpt-3.5-turbo-instruct", BaseURL: f.url + "/v1", Secret: "sk-o"})
	if err != nil {
		t.Fatal(err)
	}
	expect{status: 200, class: Success, usage: [3]int64{3, 4, 7}}.check(t, resp)
	if w := f.last(); w.url.Path != "/v1/completions" || !strings.Contains(string(w.body), `"model":"gpt-3.5-turbo-instruct"`) {
		t.Errorf("sent %s %s", w.url, w.body)
	}

	resp, err = f.do("azure", Request{Endpoint: messages.EndpointCompletions, Body: body, Model: "instruct", BaseURL: f.url, Secret: "sk-a"})
	if err != nil {
		t.Fatal(err)
	}
	expect{status: 200, class: Success, usage: [3]int64{3, 4, 7}}.check(t, resp)
	if w := f.last(); w.url.Path != "/openai/deployments/instruct/completions" || w.url.Query().Get("api-version") == "" {
		t.Errorf("sent %s", w.url)
	}

	for _, provider := range []string{"openai", "azure"} {
		for _, asked := range []bool{false, true} {
			b := `{"model":"x","prompt":"hello world!","max_tokens":2,"stream":true}`
			if asked {
				b = `{"model":"x","prompt":"hello world!","max_tokens":2,"stream":true,"stream_options":{"include_usage":true}}`
			}
			a, _ := For(provider)
			base := f.url + "/v1"
			if provider == "azure" {
				base = f.url
			}
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			var events, injected int
			resp, err := a.(Streamer).Stream(ctx, http.DefaultClient, Request{Endpoint: messages.EndpointCompletions, Body: []byte(b), Model: "m", BaseURL: base, Secret: "sk"}, func(e Event) error {
				events++
				if e.Injected {
					injected++
				}
				return nil
			})
			cancel()
			if err != nil {
				t.Fatalf("%s asked %v: %v", provider, asked, err)
			}
			if resp.Usage == nil || *resp.Usage != (messages.Usage{PromptTokens: 3, CompletionTokens: 2, TotalTokens: 5}) {
				t.Errorf("%s asked %v: usage %+v", provider, asked, resp.Usage)
			}
			// Two deltas, the finish, the usage chunk, [DONE].
			if events != 5 || injected != map[bool]int{false: 1, true: 0}[asked] {
				t.Errorf("%s asked %v: %d events, %d injected", provider, asked, events, injected)
			}
			if w := f.last(); !strings.Contains(string(w.body), `"include_usage":true`) {
				t.Errorf("%s: the stream did not ask for usage: %s", provider, w.body)
			}
		}
	}

	resp, err = f.do("anthropic", Request{Endpoint: messages.EndpointCountTokens, Model: "claude-x", BaseURL: f.url + "/v1", Secret: "sk-an",
		Body: []byte(`{"model":"c","messages":[{"role":"user","content":"hello world!"}]}`)})
	if err != nil {
		t.Fatal(err)
	}
	expect{status: 200, class: Success}.check(t, resp)
	if resp.Usage != nil || string(resp.Body) != `{"input_tokens":9}`+"\n" {
		t.Errorf("count_tokens usage %+v body %q", resp.Usage, resp.Body)
	}
	if w := f.last(); w.url.Path != "/v1/messages/count_tokens" || w.header.Get("anthropic-version") == "" || w.header.Get("x-api-key") != "sk-an" {
		t.Errorf("sent %s %v", w.url, w.header)
	}
}
