package providers

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"strings"

	"github.com/sluicehq/sluice/messages"
)

// OpenAI speaks the OpenAI API, and every OpenAI-compatible one (vLLM,
// Groq, Together, Mistral, Gemini's OpenAI endpoint, ...): bearer
// authentication, x-ratelimit-* headers, errors as {"error": {"type",
// "code", "message"}}. It serves chat completions, legacy completions
// ({base_url}/completions), embeddings and responses ({base_url}/responses,
// whose usage says input_tokens and output_tokens).
type OpenAI struct{}

// Do implements Adapter.
func (OpenAI) Do(ctx context.Context, client *http.Client, req Request) (*Response, error) {
	if !Supports(ProviderOpenAI, req.Endpoint) {
		return nil, fmt.Errorf("%w: openai does not serve %q", ErrUnsupportedEndpoint, req.Endpoint)
	}
	if req.Endpoint == messages.EndpointResponseGet || req.Endpoint == messages.EndpointResponseDelete {
		h := jsonHeaders(req)
		h.Set("Authorization", "Bearer "+req.Secret)
		resp, _, err := doStored(ctx, client, req, req.BaseURL, h)
		return resp, err
	}
	body, err := withModel(req.Body, req.Model)
	if err != nil {
		return nil, err
	}
	url, h := openAIRequest(req)
	a, err := post(ctx, client, url, h, body)
	if err != nil {
		return nil, err
	}
	return respond(a, parseOpenAIHeaders(a.header, answerTime(a.header, nil)), a.read(readOpenAIBody)), nil
}

// openAIRequest is the URL and headers of an OpenAI request.
func openAIRequest(req Request) (string, http.Header) {
	url := strings.TrimSuffix(req.BaseURL, "/") + strings.TrimPrefix(string(req.Endpoint), "/v1")
	h := jsonHeaders(req)
	h.Set("Authorization", "Bearer "+req.Secret)
	return url, h
}

// readOpenAIBody reads usage and error from an OpenAI-shaped body, which
// Azure and most compatible APIs share. The two are decoded apart, so that
// a strange error does not hide the usage, and a body that is not JSON
// gives an empty verdict: the executor judges it.
func readOpenAIBody(data []byte) verdict {
	var top struct {
		Usage json.RawMessage `json:"usage"`
		Error json.RawMessage `json:"error"`
	}
	if !decodeErrorBody(data, &top) && json.Unmarshal(data, &top) != nil {
		return verdict{}
	}
	var v verdict
	if len(top.Usage) > 0 && string(top.Usage) != "null" {
		v.usage = openAIUsage(top.Usage)
	}
	var e struct {
		// Each is decoded as any, so that one of an unexpected type does
		// not hide the others.
		Type   any `json:"type"`   // a string, or null (Azure)
		Code   any `json:"code"`   // a string (OpenAI, Azure) or a number (Google)
		Status any `json:"status"` // Google's RESOURCE_EXHAUSTED; a number for Azure
	}
	if len(top.Error) > 0 && json.Unmarshal(top.Error, &e) == nil {
		v.errorType = stringOf(e.Type)
		v.errorCode = stringOf(e.Code)
		if v.errorCode == "" {
			v.errorCode = stringOf(e.Status)
		}
		v.quota = v.errorCode == "insufficient_quota" || v.errorType == "insufficient_quota"
	}
	return v
}

// openAIUsage reads a usage object: chat's and completions' prompt_tokens
// and completion_tokens (with prompt_tokens_details.cached_tokens), or
// the Responses API's input_tokens and output_tokens (with
// input_tokens_details.cached_tokens); nil when it cannot be read.
func openAIUsage(raw json.RawMessage) *messages.Usage {
	var u openAIUsageFields
	if json.Unmarshal(raw, &u) != nil {
		return nil
	}
	return u.usage()
}

// openAIUsageFields is an OpenAI usage object, of any of its APIs.
type openAIUsageFields struct {
	PromptTokens        int64          `json:"prompt_tokens"`
	CompletionTokens    int64          `json:"completion_tokens"`
	InputTokens         *int64         `json:"input_tokens"`
	OutputTokens        *int64         `json:"output_tokens"`
	TotalTokens         int64          `json:"total_tokens"`
	PromptTokensDetails *cachedDetails `json:"prompt_tokens_details"`
	InputTokensDetails  *cachedDetails `json:"input_tokens_details"`
}

// cachedDetails is OpenAI's prompt_tokens_details (input_tokens_details
// in the Responses API). Its other counts (audio tokens) are part of
// the prompt and priced as input.
type cachedDetails struct {
	CachedTokens int64 `json:"cached_tokens"`
}

// UnmarshalJSON reads the cached count, and takes details it cannot
// read as none, so that they never hide the usage around them.
func (d *cachedDetails) UnmarshalJSON(data []byte) error {
	var v struct {
		CachedTokens int64 `json:"cached_tokens"`
	}
	if json.Unmarshal(data, &v) != nil {
		v.CachedTokens = 0
	}
	d.CachedTokens = v.CachedTokens
	return nil
}

func (u openAIUsageFields) usage() *messages.Usage {
	if u.InputTokens != nil || u.OutputTokens != nil {
		var in, out int64
		if u.InputTokens != nil {
			in = *u.InputTokens
		}
		if u.OutputTokens != nil {
			out = *u.OutputTokens
		}
		var cached int64
		if u.InputTokensDetails != nil {
			cached = u.InputTokensDetails.CachedTokens
		}
		return usage(in, out, u.TotalTokens, cached)
	}
	var cached int64
	if u.PromptTokensDetails != nil {
		cached = u.PromptTokensDetails.CachedTokens
	}
	return usage(u.PromptTokens, u.CompletionTokens, u.TotalTokens, cached)
}

// withModel sets the body's "model" to the provider's model name, leaving
// every other field as the client wrote it. A body already naming the
// model passes through byte for byte.
func withModel(body []byte, model string) ([]byte, error) {
	var fields map[string]json.RawMessage
	if err := json.Unmarshal(body, &fields); err != nil {
		return nil, fmt.Errorf("%w: %v", ErrInvalidBody, err)
	}
	if fields == nil {
		return nil, fmt.Errorf("%w: null", ErrInvalidBody)
	}
	if cur, ok := fields["model"]; ok {
		var s string
		if json.Unmarshal(cur, &s) == nil && s == model {
			return body, nil
		}
	}
	m, err := json.Marshal(model)
	if err != nil {
		return nil, fmt.Errorf("providers: encode model name: %w", err)
	}
	fields["model"] = m
	out, err := json.Marshal(fields)
	if err != nil {
		return nil, fmt.Errorf("providers: encode body: %w", err)
	}
	return out, nil
}
