package providers

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"

	"github.com/sluicehq/sluice/messages"
)

// MaxResponseBytes bounds how much of a provider answer is read.
const MaxResponseBytes = 32 << 20

// OpenAI speaks the OpenAI API, and every OpenAI-compatible one (vLLM,
// Groq, Together, Mistral, ...): bearer authentication, x-ratelimit-*
// headers, errors as {"error": {"type", "code", "message"}}.
type OpenAI struct{}

// Do implements Adapter.
func (OpenAI) Do(ctx context.Context, client *http.Client, req Request) (*Response, error) {
	body, err := withModel(req.Body, req.Model)
	if err != nil {
		return nil, err
	}
	url := strings.TrimSuffix(req.BaseURL, "/") + strings.TrimPrefix(string(req.Endpoint), "/v1")
	hreq, err := http.NewRequestWithContext(ctx, http.MethodPost, url, bytes.NewReader(body))
	if err != nil {
		return nil, fmt.Errorf("providers: build request: %w", err)
	}
	hreq.Header.Set("Content-Type", "application/json")
	hreq.Header.Set("Authorization", "Bearer "+req.Secret)
	resp, err := client.Do(hreq)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(io.LimitReader(resp.Body, MaxResponseBytes))
	if err != nil {
		return nil, err
	}
	out := &Response{Status: resp.StatusCode, Header: resp.Header, Body: data, Limits: ParseOpenAIHeaders(resp.Header)}
	var parsed struct {
		Usage *messages.Usage `json:"usage"`
		Error *struct {
			Type string `json:"type"`
			Code any    `json:"code"`
		} `json:"error"`
	}
	_ = json.Unmarshal(data, &parsed) // a body that is not JSON is judged by the executor
	out.Usage = parsed.Usage
	if parsed.Error != nil {
		out.ErrorType = parsed.Error.Type
		if code, ok := parsed.Error.Code.(string); ok {
			out.ErrorCode = code
		}
	}
	out.Class = classify(resp.StatusCode, out.ErrorCode)
	return out, nil
}

func classify(status int, code string) Class {
	switch {
	case status >= 200 && status < 300:
		return Success
	case status == http.StatusTooManyRequests && code == "insufficient_quota":
		return QuotaExhausted
	case status == http.StatusTooManyRequests:
		return RateLimited
	case status >= 500, status == http.StatusRequestTimeout, status == 529:
		return Unavailable
	default:
		return Rejected
	}
}

// withModel sets the body's "model" to the provider's model name, leaving
// every other field as the client wrote it.
func withModel(body []byte, model string) ([]byte, error) {
	var fields map[string]json.RawMessage
	if err := json.Unmarshal(body, &fields); err != nil {
		return nil, fmt.Errorf("providers: body is not a JSON object: %w", err)
	}
	if cur, ok := fields["model"]; ok {
		var s string
		if json.Unmarshal(cur, &s) == nil && s == model {
			return body, nil
		}
	}
	m, _ := json.Marshal(model)
	fields["model"] = m
	return json.Marshal(fields)
}
