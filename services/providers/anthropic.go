package providers

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"time"
)

// Anthropic speaks Anthropic's Messages API: POST {base_url}/messages (and
// {base_url}/messages/count_tokens, whose answer {"input_tokens": N}
// carries no usage: counting uses no tokens) with
// the key in x-api-key and the API version in anthropic-version
// (Request.APIVersion, default DefaultAnthropicVersion). The body is the
// call's, with "model" set to the deployment's model.
//
// Answers map onto sluice's classes as follows:
//
//	2xx                                   Success; usage.input_tokens (plus
//	                                      cache_creation_input_tokens and
//	                                      cache_read_input_tokens) is the prompt,
//	                                      usage.output_tokens the completion
//	429 rate_limit_error                  RateLimited, with retry-after and the
//	                                      anthropic-ratelimit-* headers
//	529 overloaded_error, 5xx             Unavailable: the provider is busy, not
//	                                      the key limited; retry with backoff,
//	                                      maybe elsewhere, and cool nothing
//	400 "credit balance is too low",
//	billing_error                         QuotaExhausted
//	other 4xx                             Rejected
//
// Anthropic also streams (see Stream): a 2xx event stream is a Success
// unless an error event comes mid-stream.
type Anthropic struct {
	// Clock is the local time, used to make reset instants relative when
	// an answer has no valid Date header. Default time.Now.
	Clock func() time.Time
}

// Do implements Adapter.
func (an Anthropic) Do(ctx context.Context, client *http.Client, req Request) (*Response, error) {
	url, h, body, err := anthropicRequest(req)
	if err != nil {
		return nil, err
	}
	a, err := post(ctx, client, url, h, body)
	if err != nil {
		return nil, err
	}
	return respond(a, an.limits(a.header), a.read(readAnthropicBody)), nil
}

// anthropicRequest is the URL, headers and body of a Messages request: the
// call's body with the deployment's model, the key in x-api-key alone.
func anthropicRequest(req Request) (string, http.Header, []byte, error) {
	if !Supports(ProviderAnthropic, req.Endpoint) {
		return "", nil, nil, fmt.Errorf("%w: anthropic does not serve %q", ErrUnsupportedEndpoint, req.Endpoint)
	}
	body, err := withModel(req.Body, req.Model)
	if err != nil {
		return "", nil, nil, err
	}
	version := req.APIVersion
	if version == "" {
		version = DefaultAnthropicVersion
	}
	h := jsonHeaders(req)
	h.Set("x-api-key", req.Secret)
	h.Set("anthropic-version", version)
	// The endpoint's path under the API root: /messages, or
	// /messages/count_tokens.
	return strings.TrimSuffix(req.BaseURL, "/") + strings.TrimPrefix(string(req.Endpoint), "/v1"), h, body, nil
}

// limits reads an answer's anthropic-ratelimit-* headers, its resets
// measured from its Date (else an.Clock).
func (an Anthropic) limits(h http.Header) RateLimits {
	return ParseAnthropicHeaders(h, answerTime(h, an.Clock))
}

// readAnthropicBody reads usage from a message, or the error from
// {"type": "error", "error": {"type": ..., "message": ...}}.
func readAnthropicBody(data []byte) verdict {
	var top struct {
		Usage json.RawMessage `json:"usage"`
		Error json.RawMessage `json:"error"`
	}
	if !decodeErrorBody(data, &top) && json.Unmarshal(data, &top) != nil {
		return verdict{}
	}
	var v verdict
	var u struct {
		InputTokens              int64 `json:"input_tokens"`
		OutputTokens             int64 `json:"output_tokens"`
		CacheCreationInputTokens int64 `json:"cache_creation_input_tokens"`
		CacheReadInputTokens     int64 `json:"cache_read_input_tokens"`
	}
	if len(top.Usage) > 0 && string(top.Usage) != "null" && json.Unmarshal(top.Usage, &u) == nil {
		// Each term is checked before the sum, so that the sum cannot
		// overflow.
		if u.CacheCreationInputTokens >= 0 && u.CacheCreationInputTokens <= MaxCount &&
			u.CacheReadInputTokens >= 0 && u.CacheReadInputTokens <= MaxCount &&
			u.InputTokens >= 0 && u.InputTokens <= MaxCount {
			prompt := u.InputTokens + u.CacheCreationInputTokens + u.CacheReadInputTokens
			// Reads from the cache are the cached part; writes to it are
			// priced as uncached input.
			v.usage = usage(prompt, u.OutputTokens, 0, u.CacheReadInputTokens) // total: their sum
		}
	}
	v.errorType, v.quota = anthropicError(top.Error)
	// Anthropic has no error code; its type is the closest thing.
	v.errorCode = v.errorType
	return v
}
