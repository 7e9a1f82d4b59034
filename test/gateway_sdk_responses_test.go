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
	"github.com/sluicehq/sluice/services/devstack"
)

// The official OpenAI Go SDK calls the Responses API through the gateway:
// a string input with instructions and max_output_tokens, and input items
// with the pool's default_max_tokens; each is reserved what the fake
// provider charges at admission and settled on the usage it reported.
func TestGatewayResponsesSDK(t *testing.T) {
	st := startSDKStack(t)
	s, url, results, reports := st.s, st.url, st.results, st.reports
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

// Stored responses through the gateway: Get and Delete reach the
// deployment (provider key) that made the response, and a chain of calls
// with PreviousResponseID, plain and streamed, all land there, whatever
// the headroom elsewhere; each chained call is reserved what the fake
// charged and settled on its usage, which counts the stored context.
func TestGatewayResponsesStoredSDK(t *testing.T) {
	st := startSDKStack(t)
	s, url, results, reports := st.s, st.url, st.results, st.reports
	client := openai.NewClient(option.WithBaseURL(url+"/v1"), option.WithAPIKey(devToken))
	ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
	defer cancel()
	cfg := s.Shared.Load()
	secrets := devstack.DevSecrets(cfg)
	keyOf := map[string]string{}
	for _, dep := range cfg.Pools["gpt-4o-mini"].Deployments {
		keyOf[dep.ID] = secrets[dep.Key]
	}
	input := func(s string) responses.ResponseNewParamsInputUnion {
		return responses.ResponseNewParamsInputUnion{OfString: openai.String(s)}
	}

	var raw *http.Response
	first, err := client.Responses.New(ctx, responses.ResponseNewParams{Model: "gpt-4o-mini", Input: input("Say ok: "), Instructions: openai.String("be brief")},
		option.WithResponseInto(&raw))
	if err != nil {
		t.Fatal(err)
	}
	home := raw.Header.Get("x-sluice-deployment")
	if keyOf[home] == "" {
		t.Fatalf("the response came from %q, not a deployment of the pool", home)
	}

	t.Run("chained", func(t *testing.T) {
		s.Fake.Reset()
		prev := first.ID
		const n = 8
		for i := range n {
			var raw *http.Response
			resp, err := client.Responses.New(ctx, responses.ResponseNewParams{Model: "gpt-4o-mini", Input: input("and again"), PreviousResponseID: openai.String(prev)},
				option.WithResponseInto(&raw))
			if err != nil {
				t.Fatalf("call %d: %v", i, err)
			}
			if got := raw.Header.Get("x-sluice-deployment"); got != home {
				t.Fatalf("call %d went to %s, not %s, which holds %s", i, got, home, prev)
			}
			if resp.PreviousResponseID != prev {
				t.Errorf("call %d: previous_response_id %q", i, resp.PreviousResponseID)
			}
			prev = resp.ID
		}
		st := s.Fake.Stats()
		for dep, key := range keyOf {
			want := int64(0)
			if dep == home {
				want = n
			}
			if got := st.Keys[key].Served; got != want {
				t.Errorf("deployment %s served %d, want %d", dep, got, want)
			}
		}
	})

	t.Run("chained reservation and settlement", func(t *testing.T) {
		s.Fake.Reset()
		var raw *http.Response
		resp, err := client.Responses.New(ctx, responses.ResponseNewParams{Model: "gpt-4o-mini", Input: input("and again"), PreviousResponseID: openai.String(first.ID)},
			option.WithResponseInto(&raw))
		if err != nil {
			t.Fatal(err)
		}
		// Its own 3 + 3 + 3, and the 13 + 16 of the first; reserved only
		// its own and the default 256, settled on what was used.
		if resp.Usage.InputTokens != 9+29 || resp.Usage.TotalTokens != 9+29+16 {
			t.Errorf("usage %+v", resp.Usage)
		}
		id := raw.Header.Get("x-sluice-call-id")
		results.waitFor(t, []string{id}, 10*time.Second)
		if r := results.one(t, id); r.Deployment != home {
			t.Errorf("result deployment %s, want %s", r.Deployment, home)
		}
		checkSettled(t, s, reports, id, 9+29+16)
	})

	t.Run("streamed, then got", func(t *testing.T) {
		st := client.Responses.NewStreaming(ctx, responses.ResponseNewParams{Model: "gpt-4o-mini", Input: input("more"), PreviousResponseID: openai.String(first.ID)})
		var id string
		for st.Next() {
			if ev := st.Current(); ev.Type == "response.completed" {
				id = ev.AsResponseCompleted().Response.ID
			}
		}
		if err := st.Err(); err != nil || id == "" {
			t.Fatalf("stream: %v, id %q", err, id)
		}
		_ = st.Close()
		s.Fake.Reset()
		var raw *http.Response
		got, err := client.Responses.Get(ctx, id, responses.ResponseGetParams{}, option.WithResponseInto(&raw))
		if err != nil {
			t.Fatal(err)
		}
		if got.ID != id || got.OutputText() != completionTextOf(16) || raw.Header.Get("x-sluice-deployment") != home || s.Fake.Stats().Keys[keyOf[home]].Served != 1 {
			t.Errorf("got %s from %s: %q", got.ID, raw.Header.Get("x-sluice-deployment"), got.OutputText())
		}
	})

	t.Run("get and delete", func(t *testing.T) {
		s.Fake.Reset()
		var raw *http.Response
		got, err := client.Responses.Get(ctx, first.ID, responses.ResponseGetParams{}, option.WithResponseInto(&raw))
		if err != nil {
			var apiErr *openai.Error
			if errors.As(err, &apiErr) {
				t.Fatal(apiErr.RawJSON())
			}
			t.Fatal(err)
		}
		if got.ID != first.ID || got.Usage.TotalTokens != 29 || raw.Header.Get("x-sluice-deployment") != home {
			t.Errorf("got %+v from %s", got, raw.Header.Get("x-sluice-deployment"))
		}
		// Reserved one request and no tokens, as the fake charged.
		checkSettled(t, s, reports, raw.Header.Get("x-sluice-call-id"), -1) // no usage: the reservation of none stands
		if err := client.Responses.Delete(ctx, first.ID); err != nil {
			t.Fatal(err)
		}
		if n := s.Fake.Stats().Keys[keyOf[home]].Served; n != 2 {
			t.Errorf("the home deployment served %d, want the get and the delete", n)
		}
		var apiErr *openai.Error
		if _, err := client.Responses.Get(ctx, first.ID, responses.ResponseGetParams{}); !errors.As(err, &apiErr) || apiErr.StatusCode != 404 {
			t.Errorf("get after delete: %v", err)
		}
	})

	t.Run("unknown", func(t *testing.T) {
		var apiErr *openai.Error
		if _, err := client.Responses.Get(ctx, "resp_nope", responses.ResponseGetParams{}); !errors.As(err, &apiErr) || apiErr.StatusCode != 404 || apiErr.Code != "not_found" {
			t.Errorf("get unknown: %v", err)
		}
		if err := client.Responses.Delete(ctx, "resp_nope"); !errors.As(err, &apiErr) || apiErr.StatusCode != 404 {
			t.Errorf("delete unknown: %v", err)
		}
		if _, err := client.Responses.New(ctx, responses.ResponseNewParams{Model: "gpt-4o-mini", Input: input("x"), PreviousResponseID: openai.String("resp_nope")}); !errors.As(err, &apiErr) ||
			apiErr.StatusCode != 404 || apiErr.Param != "previous_response_id" {
			t.Errorf("chained on unknown: %v", err)
		}
	})
}
