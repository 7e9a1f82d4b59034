package messages

import (
	"bytes"
	"encoding/json"
	"errors"
	"math"
	"strings"
	"time"
)

// Endpoint is the provider API a call is for, named by its path in the
// OpenAI API (or, for Messages, the Anthropic API).
type Endpoint string

// Endpoints sluice can call.
const (
	// EndpointChatCompletions is OpenAI's chat completions, served by
	// openai and azure deployments.
	EndpointChatCompletions Endpoint = "/v1/chat/completions"
	// EndpointEmbeddings is OpenAI's embeddings, served by openai and azure
	// deployments.
	EndpointEmbeddings Endpoint = "/v1/embeddings"
	// EndpointMessages is Anthropic's Messages API, served by anthropic
	// deployments.
	EndpointMessages Endpoint = "/v1/messages"
	// EndpointCompletions is OpenAI's legacy completions API (a prompt,
	// not messages), which vLLM and many OpenAI-compatible servers still
	// serve; served by openai and azure deployments.
	EndpointCompletions Endpoint = "/v1/completions"
	// EndpointCountTokens is Anthropic's token counting of a Messages
	// body, served by anthropic deployments. It reserves one request and
	// no tokens: Anthropic meters it by requests alone.
	EndpointCountTokens Endpoint = "/v1/messages/count_tokens"
	// EndpointResponses is OpenAI's Responses API (input items and
	// instructions, typed server-sent events when streamed), served by
	// openai and azure deployments.
	EndpointResponses Endpoint = "/v1/responses"
	// EndpointResponseGet and EndpointResponseDelete fetch and delete a
	// stored response: GET and DELETE /v1/responses/{response_id}, the id
	// in the body ({"model": ..., "response_id": "resp_..."}). A provider
	// stores a response with the key that made it, so these calls must
	// name that deployment (Deployment). Each reserves one request and no
	// tokens.
	EndpointResponseGet    Endpoint = "GET /v1/responses/{response_id}"
	EndpointResponseDelete Endpoint = "DELETE /v1/responses/{response_id}"
)

// Endpoints lists every endpoint.
var Endpoints = []Endpoint{EndpointChatCompletions, EndpointEmbeddings, EndpointMessages, EndpointCompletions, EndpointCountTokens, EndpointResponses,
	EndpointResponseGet, EndpointResponseDelete}

// Valid reports whether e is a known endpoint.
func (e Endpoint) Valid() bool {
	for _, x := range Endpoints {
		if x == e {
			return true
		}
	}
	return false
}

// Limits on what a call may carry. The body size limit is configuration
// (calls.max_body_bytes, the size of the body field as sent); these bound
// the envelope around it.
const (
	MaxModelLen      = 128
	MaxMetadataPairs = 16
	MaxMetadataKey   = 64
	MaxMetadataValue = 256
	MaxRegions       = 16
	// MaxEnvelopeBytes is how much larger than its body a call message may
	// be: room for every other field at its limits, JSON-escaped. A
	// message larger than calls.max_body_bytes plus this is refused
	// before it is decoded.
	MaxEnvelopeBytes = 64 << 10
)

// CallRequest is what a client publishes on sluice.call.<team>.<tier>. The
// team and tier come from the subject, never from the body, so NATS
// permissions on subjects decide who may call as whom.
//
//	{
//	  "id": "0b6c...",                      // optional; else Nats-Msg-Id, else assigned
//	  "model": "gpt-4o-mini",               // the pool; defaults to body.model
//	  "endpoint": "/v1/chat/completions",   // default; or /v1/embeddings, /v1/completions, /v1/responses, /v1/messages, /v1/messages/count_tokens
//	  "body": {"messages": [...], "max_tokens": 100},
//	  "timeout_ms": 30000,                  // or "deadline": "2026-11-25T10:00:00Z"
//	  "regions": ["eu-west", "us-east"],    // optional: only these regions may serve it
//	  "prefer_regions": ["eu-west"],        // optional: try these first, in order
//	  "deployment": "oai-eu-1",             // optional: only this deployment may serve it
//	  "metadata": {"trace": "abc"}          // optional; echoed in the result
//	}
type CallRequest struct {
	ID       string          `json:"id,omitempty"`
	Model    string          `json:"model,omitempty"`
	Endpoint Endpoint        `json:"endpoint,omitempty"`
	Body     json.RawMessage `json:"body"`
	// Deadline is when the call stops being worth answering. At most one of
	// Deadline and TimeoutMS may be set; TimeoutMS counts from acceptance.
	Deadline  *time.Time `json:"deadline,omitempty"`
	TimeoutMS int64      `json:"timeout_ms,omitempty"`
	// Regions, when set, are the only regions whose deployments may serve
	// the call (data residency): it waits rather than go elsewhere.
	Regions []string `json:"regions,omitempty"`
	// PreferRegions orders regions by preference: a deployment in an
	// earlier region is chosen whenever one has capacity now, before
	// headroom decides. Regions not listed come last.
	PreferRegions []string `json:"prefer_regions,omitempty"`
	// Deployment, when set, pins the call to the deployment of that id:
	// only it may serve the call, which waits for it rather than go
	// elsewhere (as for Regions). A call that continues state a provider
	// stored (a Responses API previous_response_id, or GET and DELETE of a
	// stored response) names the deployment whose key holds it: the
	// deployment of the result that made it.
	Deployment string            `json:"deployment,omitempty"`
	Metadata   map[string]string `json:"metadata,omitempty"`
}

// DecodeCall parses and validates the parts of a call that need no
// configuration: JSON shape, unknown fields, id, endpoint, model, deadline,
// regions and metadata. It fills Model from body.model and Endpoint with its
// default. Errors are invalid_request and name the field.
func DecodeCall(data []byte) (CallRequest, *Error) {
	var c CallRequest
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&c); err != nil {
		return c, jsonError(err)
	}
	if dec.More() {
		return c, Errorf(CodeInvalidRequest, "trailing data after the JSON object")
	}
	if err := checkFieldNames(data); err != nil {
		// Which id the call meant is the ambiguity: answer on the one in
		// Nats-Msg-Id, or a derived one.
		return CallRequest{}, err
	}
	return c, c.Normalize()
}

// Normalize fills defaults and validates the call; see DecodeCall.
func (c *CallRequest) Normalize() *Error {
	if c.ID != "" && !ValidToken(c.ID) {
		return FieldError("id", "must be 1 to 64 letters, digits, '-' or '_'")
	}
	if c.Endpoint == "" {
		c.Endpoint = EndpointChatCompletions
	}
	if !c.Endpoint.Valid() {
		return FieldError("endpoint", "unknown endpoint %q; use %s, %s, %s, %s, %s, %s, %s or %s", c.Endpoint,
			EndpointChatCompletions, EndpointEmbeddings, EndpointCompletions, EndpointResponses, EndpointResponseGet, EndpointResponseDelete,
			EndpointMessages, EndpointCountTokens)
	}
	if c.Deployment != "" && !ValidToken(c.Deployment) {
		return FieldError("deployment", "must be 1 to 64 letters, digits, '-' or '_'")
	}
	if c.Deployment == "" && (c.Endpoint == EndpointResponseGet || c.Endpoint == EndpointResponseDelete) {
		return FieldError("deployment", "is required for %s: the response is stored by the deployment that made it (the result's deployment)", c.Endpoint)
	}
	body := bytes.TrimSpace(c.Body)
	if len(body) == 0 || string(body) == "null" {
		return FieldError("body", "is required")
	}
	if body[0] != '{' {
		return FieldError("body", "must be a JSON object")
	}
	if c.Model == "" {
		var b struct {
			Model json.RawMessage `json:"model"`
		}
		if err := json.Unmarshal(body, &b); err != nil {
			return FieldError("body", "is not valid JSON: %v", err)
		}
		if len(b.Model) > 0 && string(b.Model) != "null" {
			if err := json.Unmarshal(b.Model, &c.Model); err != nil {
				return FieldError("body.model", "must be a string")
			}
		}
	}
	if c.Model == "" {
		return FieldError("model", "is required (set model, or body.model)")
	}
	if len(c.Model) > MaxModelLen {
		return FieldError("model", "longer than %d characters", MaxModelLen)
	}
	if c.Deadline != nil && c.TimeoutMS != 0 {
		return FieldError("timeout_ms", "set deadline or timeout_ms, not both")
	}
	if c.TimeoutMS < 0 {
		return FieldError("timeout_ms", "must be positive")
	}
	if len(c.Regions) > MaxRegions {
		return FieldError("regions", "at most %d regions", MaxRegions)
	}
	for _, r := range c.Regions {
		if !ValidToken(r) {
			return FieldError("regions", "%q is not a region name", r)
		}
	}
	if len(c.PreferRegions) > MaxRegions {
		return FieldError("prefer_regions", "at most %d regions", MaxRegions)
	}
	for _, r := range c.PreferRegions {
		if !ValidToken(r) {
			return FieldError("prefer_regions", "%q is not a region name", r)
		}
	}
	if len(c.Metadata) > MaxMetadataPairs {
		return FieldError("metadata", "at most %d entries", MaxMetadataPairs)
	}
	for k, v := range c.Metadata {
		if k == "" || len(k) > MaxMetadataKey || len(v) > MaxMetadataValue {
			return FieldError("metadata", "keys must be 1 to %d bytes and values at most %d", MaxMetadataKey, MaxMetadataValue)
		}
	}
	return nil
}

// DeadlineFrom is the call's absolute deadline given the time it was
// accepted and the default timeout for calls that set none. A timeout_ms
// beyond what a time.Duration holds (about 292 years) counts as the
// longest one, never as a wrapped-around, shorter or negative one.
func (c *CallRequest) DeadlineFrom(accepted time.Time, defaultTimeout time.Duration) time.Time {
	switch {
	case c.Deadline != nil:
		return *c.Deadline
	case c.TimeoutMS > math.MaxInt64/int64(time.Millisecond):
		return accepted.Add(math.MaxInt64)
	case c.TimeoutMS > 0:
		return accepted.Add(time.Duration(c.TimeoutMS) * time.Millisecond)
	default:
		return accepted.Add(defaultTimeout)
	}
}

// jsonError turns a decoding error into an invalid_request naming the field
// where encoding/json says which one.
func jsonError(err error) *Error {
	var typeErr *json.UnmarshalTypeError
	if errors.As(err, &typeErr) && typeErr.Field != "" {
		return FieldError(typeErr.Field, "must be %s", typeErr.Type.String())
	}
	var timeErr *time.ParseError
	if errors.As(err, &timeErr) {
		return FieldError("deadline", "must be an RFC 3339 time such as 2026-11-25T10:00:00Z")
	}
	msg := err.Error()
	if name, ok := strings.CutPrefix(msg, "json: unknown field "); ok {
		return FieldError(strings.Trim(name, `"`), "unknown field")
	}
	return Errorf(CodeInvalidRequest, "malformed JSON: %s", strings.TrimPrefix(msg, "json: "))
}
