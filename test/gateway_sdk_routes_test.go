package test

import (
	"context"
	"errors"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/anthropics/anthropic-sdk-go/v2"
	anthropicoption "github.com/anthropics/anthropic-sdk-go/v2/option"
	"github.com/openai/openai-go/v3"
	"github.com/openai/openai-go/v3/option"

	"github.com/sluicehq/sluice/messages"
	"github.com/sluicehq/sluice/services/devstack"
)

// checkSettled holds one call's attempt to what the fake provider counted
// for it (the fake was reset before the call, so its counters are the
// call's): sluice reserved what the fake charged at admission, one
// request, and settled on what the fake served.
func checkSettled(t *testing.T, s *devstack.Stack, reports *attemptReports, id string, wantUsed int64) {
	t.Helper()
	sent := reports.waitSent(t, []string{id}, 30*time.Second)[id]
	if len(sent) != 1 {
		t.Fatalf("call %s: %d attempts sent, want 1: %+v", id, len(sent), sent)
	}
	d := sent[0]
	st := s.Fake.Stats().Total
	if st.Received != 1 || st.Served != 1 || st.MaxRequests60s != 1 {
		t.Errorf("call %s: the fake received %d, served %d, admitted %d; want 1 each", id, st.Received, st.Served, st.MaxRequests60s)
	}
	if d.ReservedTokens != st.MaxTokens60s {
		t.Errorf("call %s: sluice reserved %d tokens, the fake charged %d at admission", id, d.ReservedTokens, st.MaxTokens60s)
	}
	if d.UsedTokens != wantUsed || (wantUsed >= 0 && st.TotalTokens != wantUsed) {
		t.Errorf("call %s: settled on %d tokens, the fake served %d; want %d", id, d.UsedTokens, st.TotalTokens, wantUsed)
	}
}

// The official OpenAI Go SDK calls legacy completions through the
// gateway, plain and streamed (with and without the usage chunk); each is
// reserved what the fake provider charges and settled on what it served.
func TestGatewayCompletionsSDK(t *testing.T) {
	st := startSDKStack(t)
	s, url, results, reports := st.s, st.url, st.results, st.reports
	client := openai.NewClient(option.WithBaseURL(url+"/v1"), option.WithAPIKey(devToken))
	ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
	defer cancel()
	params := openai.CompletionNewParams{
		Model:     "gpt-4o-mini",
		Prompt:    openai.CompletionNewParamsPromptUnion{OfString: openai.String("Say ok: ")},
		MaxTokens: openai.Int(5),
		N:         openai.Int(2),
	}

	t.Run("plain", func(t *testing.T) {
		s.Fake.Reset()
		var raw *http.Response
		resp, err := client.Completions.New(ctx, params, option.WithResponseInto(&raw))
		if err != nil {
			t.Fatal(err)
		}
		if resp.Object != "text_completion" || len(resp.Choices) != 2 || resp.Choices[0].Text != "ok ok ok ok ok" || resp.Choices[1].Index != 1 || resp.Choices[0].FinishReason != "length" {
			t.Errorf("completion %+v", resp)
		}
		// "Say ok: " is 8 bytes: 2 tokens; 2 choices of 5.
		if resp.Usage.PromptTokens != 2 || resp.Usage.CompletionTokens != 10 || resp.Usage.TotalTokens != 12 {
			t.Errorf("usage %+v", resp.Usage)
		}
		id := raw.Header.Get("x-sluice-call-id")
		results.waitFor(t, []string{id}, 10*time.Second)
		if r := results.one(t, id); r.Status != messages.StatusOK || r.Usage == nil || r.Usage.TotalTokens != 12 || r.Deployment != raw.Header.Get("x-sluice-deployment") {
			t.Errorf("result %+v usage %+v", r, r.Usage)
		}
		checkSettled(t, s, reports, id, 12)
	})

	t.Run("default max_tokens and a batch", func(t *testing.T) {
		s.Fake.Reset()
		p := openai.CompletionNewParams{Model: "gpt-4o-mini", Prompt: openai.CompletionNewParamsPromptUnion{OfArrayOfStrings: []string{"abcd", "abcdefgh"}}}
		var raw *http.Response
		resp, err := client.Completions.New(ctx, p, option.WithResponseInto(&raw))
		if err != nil {
			t.Fatal(err)
		}
		// Two prompts of 1 and 2 tokens, each 16 "generated" of 16 allowed.
		if len(resp.Choices) != 2 || resp.Usage.PromptTokens != 3 || resp.Usage.CompletionTokens != 32 {
			t.Errorf("completion %+v", resp)
		}
		checkSettled(t, s, reports, raw.Header.Get("x-sluice-call-id"), 35)
	})

	stream := func(t *testing.T, p openai.CompletionNewParams) (texts map[int64]string, usage []openai.Completion, id string) {
		t.Helper()
		var raw *http.Response
		st := client.Completions.NewStreaming(ctx, p, option.WithResponseInto(&raw))
		defer st.Close()
		texts = map[int64]string{}
		for st.Next() {
			c := st.Current()
			for _, ch := range c.Choices {
				texts[ch.Index] += ch.Text
			}
			if c.JSON.Usage.Valid() && c.Usage.TotalTokens > 0 {
				usage = append(usage, c)
			}
		}
		if err := st.Err(); err != nil {
			t.Fatal(err)
		}
		if raw == nil || !strings.HasPrefix(raw.Header.Get("Content-Type"), "text/event-stream") {
			t.Fatalf("not a stream: %v", raw)
		}
		return texts, usage, raw.Header.Get("x-sluice-call-id")
	}
	want := map[int64]string{0: "ok ok ok ok ok", 1: "ok ok ok ok ok"}

	t.Run("stream with usage", func(t *testing.T) {
		s.Fake.Reset()
		p := params
		p.StreamOptions = openai.ChatCompletionStreamOptionsParam{IncludeUsage: openai.Bool(true)}
		texts, usage, id := stream(t, p)
		if len(texts) != 2 || texts[0] != want[0] || texts[1] != want[1] {
			t.Errorf("texts %v", texts)
		}
		if len(usage) != 1 || len(usage[0].Choices) != 0 || usage[0].Usage.TotalTokens != 12 {
			t.Errorf("usage chunks %+v, want one with the usage and no choices", usage)
		}
		results.waitFor(t, []string{id}, 10*time.Second)
		if r := results.one(t, id); r.Status != messages.StatusOK || r.Usage == nil || r.Usage.TotalTokens != 12 || r.Chunks != 10+2+1+1 {
			t.Errorf("result %+v usage %+v chunks %d", r.Error, r.Usage, r.Chunks)
		}
		checkSettled(t, s, reports, id, 12)
	})

	t.Run("stream without usage", func(t *testing.T) {
		s.Fake.Reset()
		texts, usage, id := stream(t, params)
		if len(texts) != 2 || texts[0] != want[0] || texts[1] != want[1] {
			t.Errorf("texts %v", texts)
		}
		if len(usage) != 0 {
			t.Errorf("the usage chunk sluice asked for reached the client: %+v", usage)
		}
		results.waitFor(t, []string{id}, 10*time.Second)
		if r := results.one(t, id); r.Status != messages.StatusOK || r.Usage == nil || r.Usage.TotalTokens != 12 {
			t.Errorf("result %+v usage %+v", r.Error, r.Usage)
		}
		checkSettled(t, s, reports, id, 12)
	})

	t.Run("errors", func(t *testing.T) {
		var apiErr *openai.Error
		p := params
		p.Model = "claude-haiku-4-5"
		if _, err := client.Completions.New(ctx, p); !errors.As(err, &apiErr) || apiErr.StatusCode != 404 || apiErr.Code != "model_not_found" {
			t.Errorf("an Anthropic pool: %v", err)
		}
		p = params
		p.BestOf = openai.Int(1)
		if _, err := client.Completions.New(ctx, p); !errors.As(err, &apiErr) || apiErr.StatusCode != 400 || apiErr.Param != "best_of" {
			t.Errorf("best_of below n: %v", err)
		}
	})
}

// The official Anthropic Go SDK, given nothing but the gateway's URL and
// a team token, works against `sluice dev`'s configuration: messages
// plain and streamed, count_tokens, the model list, and errors in
// Anthropic's shape; each call reserved what the fake provider charged
// and settled on what it served.
func TestGatewayAnthropicSDK(t *testing.T) {
	st := startSDKStack(t)
	s, url, results, reports := st.s, st.url, st.results, st.reports
	client := anthropic.NewClient(anthropicoption.WithBaseURL(url), anthropicoption.WithAPIKey(devToken))
	ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
	defer cancel()
	const model = "claude-haiku-4-5"
	params := anthropic.MessageNewParams{
		Model:     model,
		MaxTokens: 6,
		System:    []anthropic.TextBlockParam{{Text: "be brief"}},
		Messages:  []anthropic.MessageParam{anthropic.NewUserMessage(anthropic.NewTextBlock("hello there"))},
	}
	// 3 for the reply, 3 + 2 for the system prompt, 3 + 3 for the message.
	const prompt = 14

	t.Run("message", func(t *testing.T) {
		s.Fake.Reset()
		var raw *http.Response
		msg, err := client.Messages.New(ctx, params, anthropicoption.WithResponseInto(&raw))
		if err != nil {
			t.Fatal(err)
		}
		if len(msg.Content) != 1 || msg.Content[0].Text != "ok ok ok ok ok ok" || msg.StopReason != anthropic.StopReasonMaxTokens || string(msg.Model) != model {
			t.Errorf("message %+v", msg)
		}
		if msg.Usage.InputTokens != prompt || msg.Usage.OutputTokens != 6 {
			t.Errorf("usage %+v", msg.Usage)
		}
		id := raw.Header.Get("x-sluice-call-id")
		results.waitFor(t, []string{id}, 10*time.Second)
		if r := results.one(t, id); r.Status != messages.StatusOK || r.Provider != "anthropic" || r.Usage == nil || r.Usage.TotalTokens != prompt+6 {
			t.Errorf("result %+v usage %+v", r, r.Usage)
		}
		checkSettled(t, s, reports, id, prompt+6)
	})

	t.Run("stream", func(t *testing.T) {
		s.Fake.Reset()
		var raw *http.Response
		st := client.Messages.NewStreaming(ctx, params, anthropicoption.WithResponseInto(&raw))
		defer st.Close()
		var acc anthropic.Message
		var deltas []string
		for st.Next() {
			ev := st.Current()
			if err := acc.Accumulate(ev); err != nil {
				t.Fatal(err)
			}
			if d, ok := ev.AsAny().(anthropic.ContentBlockDeltaEvent); ok {
				deltas = append(deltas, d.Delta.Text)
			}
		}
		if err := st.Err(); err != nil {
			t.Fatal(err)
		}
		if want := []string{"ok", " ok", " ok", " ok", " ok", " ok"}; !slices.Equal(deltas, want) {
			t.Errorf("deltas %q, want %q", deltas, want)
		}
		if len(acc.Content) != 1 || acc.Content[0].Text != "ok ok ok ok ok ok" || acc.Usage.InputTokens != prompt || acc.Usage.OutputTokens != 6 || acc.StopReason != anthropic.StopReasonMaxTokens {
			t.Errorf("accumulated %+v", acc)
		}
		id := raw.Header.Get("x-sluice-call-id")
		results.waitFor(t, []string{id}, 10*time.Second)
		if r := results.one(t, id); r.Status != messages.StatusOK || r.Usage == nil || r.Usage.TotalTokens != prompt+6 {
			t.Errorf("result %+v usage %+v", r.Error, r.Usage)
		}
		checkSettled(t, s, reports, id, prompt+6)
	})

	t.Run("count_tokens", func(t *testing.T) {
		s.Fake.Reset()
		var raw *http.Response
		count, err := client.Messages.CountTokens(ctx, anthropic.MessageCountTokensParams{
			Model:    model,
			System:   anthropic.MessageCountTokensParamsSystemUnion{OfTextBlockArray: params.System},
			Messages: params.Messages,
		}, anthropicoption.WithResponseInto(&raw))
		if err != nil {
			t.Fatal(err)
		}
		if count.InputTokens != prompt {
			t.Errorf("counted %d input tokens, want %d", count.InputTokens, prompt)
		}
		id := raw.Header.Get("x-sluice-call-id")
		results.waitFor(t, []string{id}, 10*time.Second)
		if r := results.one(t, id); r.Status != messages.StatusOK || r.Provider != "anthropic" || r.Usage != nil {
			t.Errorf("result %+v usage %+v", r, r.Usage)
		}
		// One request, no tokens: reserved 0, and no usage to settle on.
		checkSettled(t, s, reports, id, -1)
	})

	t.Run("models", func(t *testing.T) {
		page, err := client.Models.List(ctx, anthropic.ModelListParams{})
		if err != nil {
			t.Fatal(err)
		}
		var ids []string
		for _, m := range page.Data {
			if m.DisplayName != m.ID || !m.JSON.CreatedAt.Valid() {
				t.Errorf("model %+v", m)
			}
			ids = append(ids, m.ID)
		}
		if want := []string{model, "gpt-4o-mini", "text-embedding-3-small"}; !slices.Equal(ids, want) || page.HasMore || page.FirstID != model || page.LastID != "text-embedding-3-small" {
			t.Errorf("models %v (has_more %v, first %q, last %q), want %v", ids, page.HasMore, page.FirstID, page.LastID, want)
		}
		all := client.Models.ListAutoPaging(ctx, anthropic.ModelListParams{})
		n := 0
		for all.Next() {
			n++
		}
		if all.Err() != nil || n != 3 {
			t.Errorf("auto-paging: %d models, %v", n, all.Err())
		}
		m, err := client.Models.Get(ctx, model, anthropic.ModelGetParams{})
		if err != nil || m.ID != model || m.Type != "model" {
			t.Errorf("one model: %+v %v", m, err)
		}
	})

	t.Run("errors", func(t *testing.T) {
		var apiErr *anthropic.Error
		p := params
		p.Model = "claude-9"
		if _, err := client.Messages.New(ctx, p); !errors.As(err, &apiErr) || apiErr.StatusCode != 404 || apiErr.Type() != "not_found_error" {
			t.Errorf("unknown model: %v", err)
		}
		if _, err := client.Messages.CountTokens(ctx, anthropic.MessageCountTokensParams{Model: "gpt-4o-mini", Messages: params.Messages}); !errors.As(err, &apiErr) || apiErr.StatusCode != 404 || apiErr.Type() != "not_found_error" {
			t.Errorf("count_tokens on an OpenAI pool: %v", err)
		}
		if _, err := client.Models.Get(ctx, "gpt-9", anthropic.ModelGetParams{}); !errors.As(err, &apiErr) || apiErr.StatusCode != 404 || apiErr.Type() != "not_found_error" {
			t.Errorf("unknown model: %v", err)
		}
		bad := anthropic.NewClient(anthropicoption.WithBaseURL(url), anthropicoption.WithAPIKey("sk-not-a-team"), anthropicoption.WithMaxRetries(0))
		if _, err := bad.Models.List(ctx, anthropic.ModelListParams{}); !errors.As(err, &apiErr) || apiErr.StatusCode != 401 || apiErr.Type() != "authentication_error" {
			t.Errorf("wrong token: %v", err)
		}
		p = params
		p.MaxTokens = 0
		st := client.Messages.NewStreaming(ctx, p)
		for st.Next() {
			t.Errorf("an event of a stream that cannot start: %+v", st.Current())
		}
		if !errors.As(st.Err(), &apiErr) || apiErr.StatusCode != 400 || apiErr.Type() != "invalid_request_error" {
			t.Errorf("max_tokens 0: %v", st.Err())
		}
	})
}

// A pool whose count_tokens is "estimate" answers the Anthropic SDK's
// countTokens at the gateway, with sluice's estimate and no provider
// request; a bad body is still refused in Anthropic's shape.
func TestGatewayCountTokensEstimated(t *testing.T) {
	s := startStack(t, stackOptions{yaml: func(url string) string {
		return strings.Replace(devstack.DevConfigYAML(url), "  claude-haiku-4-5:\n", "  claude-haiku-4-5:\n    count_tokens: estimate\n", 1)
	}})
	startDispatcher(t, s, "d1", nil)
	startExecutors(t, s)
	url := startGateway(t, s, nil)
	client := anthropic.NewClient(anthropicoption.WithBaseURL(url), anthropicoption.WithAPIKey(devToken))
	ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
	defer cancel()
	if !s.Shared.Load().Pools["claude-haiku-4-5"].EstimatesTokenCounts() {
		t.Fatal("the pool does not estimate token counts: the configuration did not take")
	}
	var raw *http.Response
	count, err := client.Messages.CountTokens(ctx, anthropic.MessageCountTokensParams{
		Model:    "claude-haiku-4-5",
		System:   anthropic.MessageCountTokensParamsSystemUnion{OfTextBlockArray: []anthropic.TextBlockParam{{Text: "be brief"}}},
		Messages: []anthropic.MessageParam{anthropic.NewUserMessage(anthropic.NewTextBlock("hello there"))},
	}, anthropicoption.WithResponseInto(&raw))
	if err != nil {
		t.Fatal(err)
	}
	// 3 for the reply, 3 + 2 for the system prompt, 3 + 3 for the message.
	if count.InputTokens != 14 || raw.Header.Get("x-sluice-estimated") != "true" || raw.Header.Get("x-sluice-call-id") != "" {
		t.Errorf("counted %d input tokens (want 14), estimated %q, call %q", count.InputTokens, raw.Header.Get("x-sluice-estimated"), raw.Header.Get("x-sluice-call-id"))
	}
	if n := s.Fake.Stats().Total.Received; n != 0 {
		t.Errorf("the provider received %d requests; an estimate asks none", n)
	}
	_, err = client.Messages.CountTokens(ctx, anthropic.MessageCountTokensParams{Model: "claude-haiku-4-5"})
	var apiErr *anthropic.Error
	if !errors.As(err, &apiErr) || apiErr.StatusCode != http.StatusBadRequest || apiErr.Type() != "invalid_request_error" {
		t.Errorf("count_tokens without messages: %v", err)
	}
}
