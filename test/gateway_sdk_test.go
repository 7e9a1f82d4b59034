package test

import (
	"context"
	"errors"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/openai/openai-go/v3"
	"github.com/openai/openai-go/v3/option"

	"github.com/sluicehq/sluice/messages"
)

// The official OpenAI Go SDK, configured with nothing but the gateway's
// base URL and a team token, works against sluice: chat completions,
// streamed ones (with and without the usage chunk), embeddings, the model
// list, and errors.
func TestGatewayOpenAISDK(t *testing.T) {
	s := startStack(t, stackOptions{})
	startDispatcher(t, s, "d1", nil)
	startExecutors(t, s)
	url := startGateway(t, s, nil)
	results := watchResults(t, connect(t, s), "demo")
	client := openai.NewClient(option.WithBaseURL(url+"/v1"), option.WithAPIKey(devToken))
	ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
	defer cancel()
	params := openai.ChatCompletionNewParams{
		Model:     "gpt-4o-mini",
		Messages:  []openai.ChatCompletionMessageParamUnion{openai.UserMessage("hello there")},
		MaxTokens: openai.Int(6),
	}

	t.Run("chat", func(t *testing.T) {
		var raw *http.Response
		resp, err := client.Chat.Completions.New(ctx, params, option.WithResponseInto(&raw))
		if err != nil {
			t.Fatal(err)
		}
		if len(resp.Choices) != 1 || resp.Choices[0].Message.Content != "ok ok ok ok ok ok" || resp.Model != "gpt-4o-mini" {
			t.Errorf("answer %+v", resp.Choices)
		}
		if resp.Usage.CompletionTokens != 6 || resp.Usage.PromptTokens == 0 || resp.Usage.TotalTokens != resp.Usage.PromptTokens+6 {
			t.Errorf("usage %+v", resp.Usage)
		}
		id := raw.Header.Get("x-sluice-call-id")
		results.waitFor(t, []string{id}, 10*time.Second)
		if r := results.one(t, id); r.Status != messages.StatusOK || r.Deployment != raw.Header.Get("x-sluice-deployment") || r.Deployment == "" {
			t.Errorf("result %+v, headers %v", r, raw.Header)
		}
	})

	// stream reads a streamed completion and returns its content deltas,
	// the chunks that carried usage, and the call's id.
	stream := func(t *testing.T, p openai.ChatCompletionNewParams) (deltas []string, usageChunks []openai.ChatCompletionChunk, id string) {
		t.Helper()
		var raw *http.Response
		st := client.Chat.Completions.NewStreaming(ctx, p, option.WithResponseInto(&raw))
		defer st.Close()
		acc := openai.ChatCompletionAccumulator{}
		for st.Next() {
			chunk := st.Current()
			acc.AddChunk(chunk)
			if len(chunk.Choices) > 0 && chunk.Choices[0].Delta.Content != "" {
				deltas = append(deltas, chunk.Choices[0].Delta.Content)
			}
			if chunk.JSON.Usage.Valid() && chunk.Usage.TotalTokens > 0 {
				usageChunks = append(usageChunks, chunk)
			}
		}
		if err := st.Err(); err != nil {
			t.Fatal(err)
		}
		if raw == nil || raw.Header.Get("Content-Type") != "text/event-stream; charset=utf-8" {
			t.Fatalf("not a stream: %v", raw)
		}
		if len(acc.Choices) != 1 {
			t.Fatalf("the stream accumulated %d choices", len(acc.Choices))
		}
		if got := acc.Choices[0].Message.Content; got != strings.Join(deltas, "") || acc.Choices[0].FinishReason != "length" {
			t.Errorf("accumulated %q (%s)", got, acc.Choices[0].FinishReason)
		}
		return deltas, usageChunks, raw.Header.Get("x-sluice-call-id")
	}
	want := []string{"ok", " ok", " ok", " ok", " ok", " ok"}

	t.Run("stream with usage", func(t *testing.T) {
		p := params
		p.StreamOptions = openai.ChatCompletionStreamOptionsParam{IncludeUsage: openai.Bool(true)}
		deltas, usage, id := stream(t, p)
		if !slices.Equal(deltas, want) {
			t.Errorf("deltas %q, want %q, in order", deltas, want)
		}
		if len(usage) != 1 || len(usage[0].Choices) != 0 || usage[0].Usage.CompletionTokens != 6 || usage[0].Usage.PromptTokens == 0 {
			t.Fatalf("usage chunks %+v, want one with the usage and no choices", usage)
		}
		results.waitFor(t, []string{id}, 10*time.Second)
		r := results.one(t, id)
		if r.Status != messages.StatusOK || r.Usage == nil || *r.Usage != (messages.Usage{PromptTokens: usage[0].Usage.PromptTokens, CompletionTokens: 6, TotalTokens: usage[0].Usage.TotalTokens}) {
			t.Errorf("result %+v usage %+v", r.Error, r.Usage)
		}
		if r.Chunks != len(want)+4 { // the role, six deltas, the finish, the usage, [DONE]
			t.Errorf("result counts %d chunks", r.Chunks)
		}
	})

	t.Run("stream without usage", func(t *testing.T) {
		deltas, usage, id := stream(t, params)
		if !slices.Equal(deltas, want) {
			t.Errorf("deltas %q, want %q, in order", deltas, want)
		}
		if len(usage) != 0 {
			t.Errorf("the usage chunk sluice asked for reached the client: %+v", usage)
		}
		// sluice counted the tokens all the same.
		results.waitFor(t, []string{id}, 10*time.Second)
		if r := results.one(t, id); r.Status != messages.StatusOK || r.Usage == nil || r.Usage.CompletionTokens != 6 || r.Usage.PromptTokens == 0 {
			t.Errorf("result %+v usage %+v", r.Error, r.Usage)
		}
	})

	t.Run("embedding", func(t *testing.T) {
		resp, err := client.Embeddings.New(ctx, openai.EmbeddingNewParams{
			Model: "text-embedding-3-small",
			Input: openai.EmbeddingNewParamsInputUnion{OfArrayOfStrings: []string{"hello", "world"}},
		})
		if err != nil {
			t.Fatal(err)
		}
		if len(resp.Data) != 2 || len(resp.Data[0].Embedding) == 0 || resp.Usage.PromptTokens == 0 {
			t.Errorf("embeddings %+v", resp)
		}
	})

	t.Run("models", func(t *testing.T) {
		page, err := client.Models.List(ctx)
		if err != nil {
			t.Fatal(err)
		}
		var ids []string
		for _, m := range page.Data {
			ids = append(ids, m.ID)
		}
		if !slices.Equal(ids, []string{"claude-haiku-4-5", "gpt-4o-mini", "text-embedding-3-small"}) {
			t.Errorf("models %v", ids)
		}
	})

	t.Run("errors", func(t *testing.T) {
		p := params
		p.Model = "gpt-9"
		_, err := client.Chat.Completions.New(ctx, p)
		var apiErr *openai.Error
		if !errors.As(err, &apiErr) || apiErr.StatusCode != 404 || apiErr.Code != "model_not_found" || apiErr.Param != "model" {
			t.Errorf("unknown model: %v", err)
		}
		p = params
		p.N = openai.Int(1000)
		_, err = client.Chat.Completions.New(ctx, p)
		if !errors.As(err, &apiErr) || apiErr.StatusCode != 400 || apiErr.Param != "n" {
			t.Errorf("n out of range: %v", err)
		}
		bad := openai.NewClient(option.WithBaseURL(url+"/v1"), option.WithAPIKey("sk-not-a-team"))
		_, err = bad.Chat.Completions.New(ctx, params)
		if !errors.As(err, &apiErr) || apiErr.StatusCode != 401 {
			t.Errorf("wrong token: %v", err)
		}
		p = params
		p.Model = "gpt-9"
		st := client.Chat.Completions.NewStreaming(ctx, p)
		for st.Next() {
			t.Errorf("a chunk of a stream that cannot start: %+v", st.Current())
		}
		if !errors.As(st.Err(), &apiErr) || apiErr.StatusCode != 404 {
			t.Errorf("stream of an unknown model: %v", st.Err())
		}
	})
}
