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
	PromptTokens     int64 `json:"prompt_tokens"`
	CompletionTokens int64 `json:"completion_tokens"`
	TotalTokens      int64 `json:"total_tokens"`
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
	Error  *Error `json:"error,omitempty"`
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
