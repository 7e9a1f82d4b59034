// Package providers owns the HTTP boundary with AI providers: one adapter
// per API dialect that turns a call into the provider's HTTP request, and
// the reading of what comes back: status, body, usage, and the rate-limit
// headers that tell sluice how long to wait.
//
// Adapters never log or return the secret they are given.
package providers

import (
	"context"
	"fmt"
	"net/http"
	"time"

	"github.com/sluicehq/sluice/messages"
)

// Request is one provider request.
type Request struct {
	Endpoint messages.Endpoint
	// Body is the call's body, passed through except for the model.
	Body []byte
	// Model is the provider's name for the model.
	Model string
	// BaseURL is the API root, e.g. https://api.openai.com/v1.
	BaseURL string
	// Secret authenticates the request. It comes from the executor's own
	// configuration and never leaves this request.
	Secret string
}

// Class is what a response means for the call.
type Class int

// Classes of responses.
const (
	// Success: a 2xx answer.
	Success Class = iota
	// RateLimited: a 429 for the key's rate limit; worth retrying later,
	// maybe on another deployment.
	RateLimited
	// QuotaExhausted: the key's billing quota is spent
	// (insufficient_quota); retrying does not help.
	QuotaExhausted
	// Unavailable: 5xx, or the provider being overloaded; worth retrying.
	Unavailable
	// Rejected: a 4xx that retrying does not fix.
	Rejected
)

// Response is what a provider answered.
type Response struct {
	Status int
	Header http.Header
	Body   []byte
	Class  Class
	// ErrorCode is the provider's error code, e.g. rate_limit_exceeded.
	ErrorCode string
	// ErrorType is the provider's error type; on an OpenAI 429 it says
	// which limit ran out: "requests" or "tokens".
	ErrorType string
	// Usage is the token usage the provider reported, if it did.
	Usage *messages.Usage
	// Limits is what the rate-limit headers said.
	Limits RateLimits
}

// Adapter speaks one provider dialect.
type Adapter interface {
	// Do sends req with client. It returns an error only when no HTTP
	// answer arrived (transport failure or ctx done); any HTTP answer,
	// including 4xx and 5xx, is a Response.
	Do(ctx context.Context, client *http.Client, req Request) (*Response, error)
}

// For returns the adapter for a provider dialect named in configuration.
func For(provider string) (Adapter, error) {
	switch provider {
	case "openai":
		return OpenAI{}, nil
	default:
		return nil, fmt.Errorf("providers: unknown provider %q", provider)
	}
}

// NewHTTPClient returns an HTTP client tuned for many concurrent requests to
// few hosts. Timeouts come from each request's context.
func NewHTTPClient() *http.Client {
	t := http.DefaultTransport.(*http.Transport).Clone()
	t.MaxIdleConns = 1024
	t.MaxIdleConnsPerHost = 512
	t.IdleConnTimeout = 90 * time.Second
	return &http.Client{Transport: t}
}
