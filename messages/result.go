package messages

import (
	"encoding/json"
	"time"
)

// Status says whether a result is a success or an error.
type Status string

// Result statuses.
const (
	StatusOK    Status = "ok"
	StatusError Status = "error"
)

// Usage is the token usage a provider reported, in OpenAI's field names
// whatever the provider.
type Usage struct {
	// PromptTokens are all the input tokens, cached ones included
	// (Anthropic's input_tokens, cache_creation_input_tokens and
	// cache_read_input_tokens added up).
	PromptTokens     int64 `json:"prompt_tokens"`
	CompletionTokens int64 `json:"completion_tokens"`
	TotalTokens      int64 `json:"total_tokens"`
	// PromptTokensDetails, when the provider reported it, says how many
	// of PromptTokens were read from its prompt cache: OpenAI's
	// prompt_tokens_details.cached_tokens (input_tokens_details in the
	// Responses API), Anthropic's cache_read_input_tokens.
	PromptTokensDetails *PromptTokensDetails `json:"prompt_tokens_details,omitempty"`
}

// PromptTokensDetails breaks the prompt tokens down.
type PromptTokensDetails struct {
	// CachedTokens of the prompt were read from the provider's prompt
	// cache, at most PromptTokens.
	CachedTokens int64 `json:"cached_tokens"`
}

// CachedTokens is the prompt tokens read from the provider's cache: 0
// when it reported none.
func (u *Usage) CachedTokens() int64 {
	if u == nil || u.PromptTokensDetails == nil {
		return 0
	}
	return u.PromptTokensDetails.CachedTokens
}

// Cost is what a call's provider request cost, at the prices the
// configuration gives its deployment (per million input, cached input and
// output tokens, and per request; see the README's Configuration). The
// parts are in Currency, an ISO 4217 code such as USD, and add up to
// Total.
type Cost struct {
	Currency string  `json:"currency"`
	Total    float64 `json:"total"`
	// Input charges the prompt tokens not read from cache, CachedInput
	// those read from it, Output the completion tokens, and Request the
	// price of one request.
	Input       float64 `json:"input,omitempty"`
	CachedInput float64 `json:"cached_input,omitempty"`
	Output      float64 `json:"output,omitempty"`
	Request     float64 `json:"request,omitempty"`
	// Estimated is set when the provider reported no usage (an answer
	// without it, a stream cut off): Total then charges the call's
	// worst case, ReservedTokens (the prompt estimate plus max_tokens
	// that admission reserved) at the highest of the deployment's token
	// prices, plus Request. It is never less than what the provider can
	// have charged for the tokens sluice reserved.
	Estimated      bool  `json:"estimated,omitempty"`
	ReservedTokens int64 `json:"reserved_tokens,omitempty"`
}

// Timings say where a call's time went. Durations are in milliseconds.
type Timings struct {
	// AcceptedAt is when JetStream accepted the call.
	AcceptedAt time.Time `json:"accepted_at"`
	// FinishedAt is when the result was produced.
	FinishedAt time.Time `json:"finished_at"`
	// QueuedMS is the time spent waiting for admission, over all attempts.
	QueuedMS float64 `json:"queued_ms"`
	// ProviderMS is the duration of the last provider request.
	ProviderMS float64 `json:"provider_ms"`
	// TotalMS is FinishedAt minus AcceptedAt.
	TotalMS float64 `json:"total_ms"`
}

// Result is the one terminal answer to a call, published on
// sluice.result.<team>.<call id> with Nats-Msg-Id set to the call id.
type Result struct {
	ID     string `json:"id"`
	Team   string `json:"team"`
	Tier   Tier   `json:"tier"`
	Model  string `json:"model,omitempty"`
	Status Status `json:"status"`
	// HTTPStatus is the provider's status code, when a provider answered.
	HTTPStatus int `json:"http_status,omitempty"`
	// Body is the provider's answer, unchanged, when it was JSON (a JSON
	// string holding the start of it otherwise).
	Body json.RawMessage `json:"body,omitempty"`
	// Chunks counts the chunks of a streamed answer sent on its stream
	// subject; a streamed answer has no Body.
	Chunks int    `json:"chunks,omitempty"`
	Usage  *Usage `json:"usage,omitempty"`
	// Cost is what the provider request that made the answer cost,
	// when the configuration prices its deployment (prices.currency and
	// pools.<pool>.prices): from Usage, or estimated from the
	// reservation when the provider reported none, as when a streamed
	// answer broke off after some chunks (the result is then an error
	// with a cost). A call whose provider produced no answer (it
	// refused the request, answered 429 or 5xx, or did not answer in
	// time; or no request was made) carries no cost: providers do not
	// charge those. Token counting and stored-response fetches and
	// deletes cost 0.
	Cost  *Cost  `json:"cost,omitempty"`
	Error *Error `json:"error,omitempty"`
	// Attempts counts the attempts sluice made for this call. An executor
	// that crashed mid-request does not count: its attempt is repeated
	// under the same number, so the provider may have seen one more.
	Attempts   int               `json:"attempts"`
	Deployment string            `json:"deployment,omitempty"`
	Region     string            `json:"region,omitempty"`
	Provider   string            `json:"provider,omitempty"`
	Timings    Timings           `json:"timings"`
	Metadata   map[string]string `json:"metadata,omitempty"`
	// TraceID is the OpenTelemetry trace id (32 hex digits) of the call,
	// when the service that answered it traces: the trace of the
	// traceparent the call came with, else the one sluice started.
	TraceID string `json:"trace_id,omitempty"`
}

// Err returns the result's error, or nil for a success.
func (r *Result) Err() error {
	if r.Error == nil {
		return nil
	}
	return r.Error
}

// Outcome is the label value metrics use for this result: "ok" or the
// error code.
func (r *Result) Outcome() string {
	if r.Error == nil {
		return string(StatusOK)
	}
	return string(r.Error.Code)
}
