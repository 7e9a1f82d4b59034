// Package providers owns the HTTP boundary with AI providers: one adapter
// per API dialect that turns a call into the provider's HTTP request, and
// the reading of what comes back: status, body, usage, and the rate-limit
// signals that tell sluice how long to wait and how much the provider
// really allows.
//
// # Dialects
//
//	openai     OpenAI and every OpenAI-compatible API (vLLM, Groq, Together,
//	           Mistral, Gemini's OpenAI endpoint, ...): {base_url}/chat/completions,
//	           /completions, /embeddings or /responses, "Authorization: Bearer",
//	           x-ratelimit-* headers.
//	azure      Azure OpenAI: {base_url}/openai/deployments/{model}/chat/completions
//	           (or /completions, /embeddings) ?api-version=..., the body
//	           passed through byte for byte (the URL names the deployment);
//	           responses: {base_url}/openai/v1/responses, the deployment
//	           named as the body's model; "api-key" header, remaining counts
//	           and retry-after-ms.
//	anthropic  Anthropic Messages: {base_url}/messages (and
//	           /messages/count_tokens), "x-api-key" and
//	           "anthropic-version" headers, anthropic-ratelimit-* headers with
//	           RFC 3339 resets, 529 overloaded_error.
//
// Supports says which endpoints each dialect serves, so that a call is only
// routed to deployments that can answer it.
//
// # What is learned, and how far it is trusted
//
// Every adapter fills Response.Limits from the answer's headers and, on a
// 429, from a Google RetryInfo in the body (Gemini's retryDelay), whatever
// the dialect: OpenAI-compatible gateways pass such bodies through. A
// Bedrock-style ThrottlingException carries nothing: it is RateLimited with
// no hint, and only backoff and sluice's own counting help.
//
// Providers' headers are input from the network, so none is trusted
// blindly: garbage, negative numbers, NaN and counts above MaxCount read as
// unknown; waits are clamped to [0, MaxWait]; usage with negative or absurd
// counts is dropped. Parsing never panics (fuzz tests hold it to that).
//
// Adapters never log or return the secret they are given.
package providers

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"time"

	"github.com/sluicehq/sluice/messages"
)

// Provider dialect names, as configuration spells them.
const (
	ProviderOpenAI    = "openai"
	ProviderAzure     = "azure"
	ProviderAnthropic = "anthropic"
)

// Default API versions, used when a Request carries none. Configuration
// fills the same defaults; these keep an adapter usable on its own.
const (
	// DefaultAzureAPIVersion is Azure OpenAI's api-version query parameter.
	DefaultAzureAPIVersion = "2024-10-21"
	// DefaultAnthropicVersion is the anthropic-version header.
	DefaultAnthropicVersion = "2023-06-01"
)

// Errors an adapter returns before sending anything: the request cannot be
// expressed in the dialect, and retrying it will not change that.
var (
	// ErrUnsupportedEndpoint: the dialect does not serve the endpoint (see
	// Supports).
	ErrUnsupportedEndpoint = errors.New("providers: endpoint not served by this provider")
	// ErrInvalidBody: the call's body is not a JSON object.
	ErrInvalidBody = errors.New("providers: body is not a JSON object")
)

// Request is one provider request.
type Request struct {
	Endpoint messages.Endpoint
	// Body is the call's body, passed through except for the model (and
	// byte for byte for Azure, whose URL names the deployment).
	Body []byte
	// Model is the provider's name for the model; for Azure, the
	// deployment name in the URL.
	Model string
	// BaseURL is the API root: https://api.openai.com/v1,
	// https://<resource>.openai.azure.com, https://api.anthropic.com/v1.
	BaseURL string
	// APIVersion is Azure's api-version or Anthropic's anthropic-version;
	// empty means DefaultAzureAPIVersion or DefaultAnthropicVersion. The
	// openai dialect ignores it.
	APIVersion string
	// Secret authenticates the request. It comes from the executor's own
	// configuration and never leaves this request.
	Secret string
	// RequestID, when set, is sent as X-Client-Request-Id, the header
	// OpenAI documents for a client's own id of a request (other APIs
	// ignore it): the executor sends the call id, so that each provider
	// request can be traced back to its call.
	RequestID string
}

// jsonHeaders are the headers every request carries: its content type, and
// its client request id.
func jsonHeaders(req Request) http.Header {
	h := http.Header{}
	h.Set("Content-Type", "application/json")
	if req.RequestID != "" {
		h.Set("X-Client-Request-Id", req.RequestID)
	}
	return h
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
	// (insufficient_quota, or Anthropic's "credit balance is too low");
	// retrying does not help.
	QuotaExhausted
	// Unavailable: 5xx, a timeout, or the provider being overloaded
	// (Anthropic's 529): worth retrying with backoff, maybe elsewhere. It
	// says nothing about the key's limits.
	Unavailable
	// Rejected: a 4xx that retrying does not fix.
	Rejected
)

func (c Class) String() string {
	switch c {
	case Success:
		return "success"
	case RateLimited:
		return "rate_limited"
	case QuotaExhausted:
		return "quota_exhausted"
	case Unavailable:
		return "unavailable"
	case Rejected:
		return "rejected"
	}
	return fmt.Sprintf("Class(%d)", int(c))
}

// Response is what a provider answered.
type Response struct {
	Status int
	Header http.Header
	Body   []byte
	Class  Class
	// ErrorCode is the provider's error code: OpenAI's
	// rate_limit_exceeded or insufficient_quota, Azure's "429" or
	// RateLimitReached, Google's RESOURCE_EXHAUSTED.
	ErrorCode string
	// ErrorType is the provider's error type. On an OpenAI 429 it says
	// which limit ran out, "requests" or "tokens", which is what
	// RateLimits.Wait takes; Anthropic's is rate_limit_error,
	// overloaded_error, invalid_request_error and so on.
	ErrorType string
	// Usage is the token usage the provider reported, if it did and it
	// made sense.
	Usage *messages.Usage
	// Limits is what the rate-limit headers (and a 429's body) said.
	Limits RateLimits
}

// Adapter speaks one provider dialect.
type Adapter interface {
	// Do sends req with client. It returns an error only when no HTTP
	// answer arrived: the request could not be built (ErrUnsupportedEndpoint,
	// ErrInvalidBody: retrying does not help), or the transport failed or
	// ctx ended. Any HTTP answer, including 4xx and 5xx, is a Response.
	Do(ctx context.Context, client *http.Client, req Request) (*Response, error)
}

// For returns the adapter for a provider dialect named in configuration.
func For(provider string) (Adapter, error) {
	switch provider {
	case ProviderOpenAI:
		return OpenAI{}, nil
	case ProviderAzure:
		return Azure{}, nil
	case ProviderAnthropic:
		return Anthropic{}, nil
	default:
		return nil, fmt.Errorf("providers: unknown provider %q", provider)
	}
}

// Supports reports whether deployments of provider can serve calls to
// endpoint: openai and azure serve chat completions, (legacy)
// completions, embeddings and responses (stored ones too), anthropic serves messages and their token
// counting. An unknown provider serves nothing.
func Supports(provider string, endpoint messages.Endpoint) bool {
	switch provider {
	case ProviderOpenAI, ProviderAzure:
		return endpoint == messages.EndpointChatCompletions || endpoint == messages.EndpointCompletions || endpoint == messages.EndpointEmbeddings ||
			endpoint == messages.EndpointResponses || endpoint == messages.EndpointResponseGet || endpoint == messages.EndpointResponseDelete
	case ProviderAnthropic:
		return endpoint == messages.EndpointMessages || endpoint == messages.EndpointCountTokens
	default:
		return false
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
