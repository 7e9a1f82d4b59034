package test

import (
	"context"
	"errors"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/openai/openai-go/v3"
	"github.com/openai/openai-go/v3/option"
	"github.com/openai/openai-go/v3/responses"

	"github.com/sluicehq/sluice/messages"
)

// The official OpenAI Go SDK calls the Responses API through the gateway:
// a string input with instructions and max_output_tokens, and input items
// with the pool's default_max_tokens; each is reserved what the fake
// provider charges at admission and settled on the usage it reported.
func TestGatewayResponsesSDK(t *testing.T) {
	s := startStack(t, stackOptions{})
	startDispatcher(t, s, "d1", nil)
	startExecutors(t, s)
	url := startGateway(t, s, nil)
	nc := connect(t, s)
	results := watchResults(t, nc, "demo")
	reports := watchAttemptReports(t, nc, "d1")
	client := openai.NewClient(option.WithBaseURL(url+"/v1"), option.WithAPIKey(devToken))
	ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
	defer cancel()

	t.Run("plain", func(t *testing.T) {
		s.Fake.Reset()
		var raw *http.Response
		resp, err := client.Responses.New(ctx, responses.ResponseNewParams{
			Model:           "gpt-4o-mini",
			Input:           responses.ResponseNewParamsInputUnion{OfString: openai.String("Say ok: ")},
			Instructions:    openai.String("be brief"),
			MaxOutputTokens: openai.Int(20),
		}, option.WithResponseInto(&raw))
		if err != nil {
			t.Fatal(err)
		}
		if resp.Object != "response" || resp.Status != responses.ResponseStatusCompleted || len(resp.ID) < 6 || resp.ID[:5] != "resp_" ||
			resp.OutputText() != completionTextOf(16) || len(resp.Output) != 1 || resp.Output[0].Type != "message" {
			t.Errorf("response %+v", resp)
		}
		// 3 for the reply, 3 + 2 for the instructions, 3 + 2 for the input;
		// 16 generated of the 20 allowed.
		if resp.Usage.InputTokens != 13 || resp.Usage.OutputTokens != 16 || resp.Usage.TotalTokens != 29 {
			t.Errorf("usage %+v", resp.Usage)
		}
		id := raw.Header.Get("x-sluice-call-id")
		results.waitFor(t, []string{id}, 10*time.Second)
		r := results.one(t, id)
		if r.Status != messages.StatusOK || r.Usage == nil || *r.Usage != (messages.Usage{PromptTokens: 13, CompletionTokens: 16, TotalTokens: 29}) ||
			r.Deployment == "" || r.Deployment != raw.Header.Get("x-sluice-deployment") {
			t.Errorf("result %+v usage %+v", r, r.Usage)
		}
		checkSettled(t, s, reports, id, 29)
	})

	t.Run("input items and the default max_output_tokens", func(t *testing.T) {
		s.Fake.Reset()
		var raw *http.Response
		resp, err := client.Responses.New(ctx, responses.ResponseNewParams{
			Model: "gpt-4o-mini",
			Input: responses.ResponseNewParamsInputUnion{OfInputItemList: responses.ResponseInputParam{
				responses.ResponseInputItemParamOfMessage("hello there", responses.EasyInputMessageRoleUser),
				responses.ResponseInputItemParamOfMessage(responses.ResponseInputMessageContentListParam{
					{OfInputText: &responses.ResponseInputTextParam{Text: "abcdefgh"}},
				}, responses.EasyInputMessageRoleUser),
			}},
		}, option.WithResponseInto(&raw))
		if err != nil {
			t.Fatal(err)
		}
		// 3 for the reply, 3 + 3 and 3 + 2 for the messages.
		if resp.Usage.InputTokens != 14 || resp.Usage.OutputTokens != 16 {
			t.Errorf("usage %+v", resp.Usage)
		}
		// Reserved: 14 + the pool's default_max_tokens (256), which the
		// fake charges too.
		checkSettled(t, s, reports, raw.Header.Get("x-sluice-call-id"), 30)
	})

	t.Run("stream", func(t *testing.T) {
		s.Fake.Reset()
		var raw *http.Response
		st := client.Responses.NewStreaming(ctx, responses.ResponseNewParams{
			Model:           "gpt-4o-mini",
			Input:           responses.ResponseNewParamsInputUnion{OfString: openai.String("Say ok: ")},
			Instructions:    openai.String("be brief"),
			MaxOutputTokens: openai.Int(20),
		}, option.WithResponseInto(&raw))
		defer st.Close()
		var types []string
		var text string
		var completed *responses.Response
		for st.Next() {
			ev := st.Current()
			types = append(types, ev.Type)
			switch ev.Type {
			case "response.output_text.delta":
				text += ev.Delta
			case "response.completed":
				r := ev.AsResponseCompleted().Response
				completed = &r
			}
		}
		if err := st.Err(); err != nil {
			t.Fatal(err)
		}
		if raw == nil || !strings.HasPrefix(raw.Header.Get("Content-Type"), "text/event-stream") {
			t.Fatalf("not a stream: %v", raw)
		}
		if len(types) != 4+16+4 || types[0] != "response.created" || types[len(types)-1] != "response.completed" || text != completionTextOf(16) {
			t.Errorf("events %v, text %q", types, text)
		}
		if completed == nil || completed.Usage.InputTokens != 13 || completed.Usage.OutputTokens != 16 || completed.OutputText() != completionTextOf(16) {
			t.Fatalf("response.completed %+v", completed)
		}
		id := raw.Header.Get("x-sluice-call-id")
		results.waitFor(t, []string{id}, 10*time.Second)
		r := results.one(t, id)
		if r.Status != messages.StatusOK || r.Usage == nil || *r.Usage != (messages.Usage{PromptTokens: 13, CompletionTokens: 16, TotalTokens: 29}) || r.Chunks != len(types) {
			t.Errorf("result %+v usage %+v chunks %d", r.Error, r.Usage, r.Chunks)
		}
		checkSettled(t, s, reports, id, 29)
	})

	t.Run("errors", func(t *testing.T) {
		var apiErr *openai.Error
		if _, err := client.Responses.New(ctx, responses.ResponseNewParams{Model: "claude-haiku-4-5",
			Input: responses.ResponseNewParamsInputUnion{OfString: openai.String("hi")}}); !errors.As(err, &apiErr) || apiErr.StatusCode != 404 || apiErr.Code != "model_not_found" {
			t.Errorf("an Anthropic pool: %v", err)
		}
		// The provider's own 400 comes back: OpenAI takes no fewer than 16.
		if _, err := client.Responses.New(ctx, responses.ResponseNewParams{Model: "gpt-4o-mini", MaxOutputTokens: openai.Int(5),
			Input: responses.ResponseNewParamsInputUnion{OfString: openai.String("hi")}}); !errors.As(err, &apiErr) || apiErr.StatusCode != 400 || apiErr.Param != "max_output_tokens" {
			t.Errorf("max_output_tokens below 16: %v", err)
		}
	})
}

// completionTextOf is the fake provider's reply of n tokens.
func completionTextOf(n int) string {
	out := ""
	for i := range n {
		if i > 0 {
			out += " "
		}
		out += "ok"
	}
	return out
}
