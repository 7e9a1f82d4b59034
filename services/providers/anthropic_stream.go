package providers

import (
	"context"
	"encoding/json"
	"net/http"
	"strings"
)

// Anthropic satisfies Streamer.
var _ Streamer = Anthropic{}

// Stream implements Streamer for Anthropic's Messages API. The request is
// Do's (x-api-key, anthropic-version, the deployment's model), with the
// body's "stream": true as the client wrote it.
//
// A 2xx text/event-stream answer is relayed event by event ("event:
// <type>" and "data: <json>" lines, pings included), and its usage read on
// the way: the prompt is message_start's message.usage.input_tokens plus
// its cache_creation_input_tokens and cache_read_input_tokens, the
// completion message_delta's usage.output_tokens. message_delta's counts
// are cumulative, so the last one stands; input or cache counts it
// carries replace message_start's. A count that is negative, absurd or
// not a number drops the stream's usage, as Do drops a body's. Anthropic
// always reports usage in the stream, so no event is Injected. Limits come
// from the anthropic-ratelimit-* headers, as for Do; any other answer (an
// error) is read whole, as Do reads it.
//
// An "error" event mid-stream ({"type": "error", "error": {"type":
// "overloaded_error", ...}}) is relayed like the events before it, and
// the stream then does not count as a success: the Response keeps the 200
// Status and the usage seen so far, its ErrorType and ErrorCode are the
// error's type, and its Class is RateLimited for rate_limit_error,
// QuotaExhausted for billing_error (or a "credit balance is too low"
// message), and Unavailable for anything else, overloaded_error and
// api_error included, or an error event that cannot be read. Since chunks
// were already relayed, the call cannot be retried: the executor ends it
// with provider_error.
func (an Anthropic) Stream(ctx context.Context, client *http.Client, req Request, onEvent func(Event) error) (*Response, error) {
	url, h, body, err := anthropicRequest(req)
	if err != nil {
		return nil, err
	}
	var st anthropicStream
	resp, err := stream(ctx, client, url, h, body, sseDialect{limits: an.limits, readBody: readAnthropicBody, observe: st.observe, last: anthropicLast}, onEvent)
	if err != nil || !st.failed {
		return resp, err
	}
	resp.Class = st.class()
	resp.ErrorType, resp.ErrorCode = st.errorType, st.errorType
	return resp, nil
}

// anthropicStream is what an Anthropic stream's events said so far.
type anthropicStream struct {
	// The latest counts reported, each checked to be within [0, MaxCount].
	input, cacheCreation, cacheRead, output int64
	// seen: some count was reported; bad: some count was garbage, and the
	// stream's usage is not to be trusted.
	seen, bad bool

	// failed: an error event came; errorType and quota are what it said.
	failed    bool
	errorType string
	quota     bool
}

// anthropicUsageFields is a usage object, in message_start's message or
// in message_delta. A missing or null count is nil.
type anthropicUsageFields struct {
	InputTokens              *int64 `json:"input_tokens"`
	OutputTokens             *int64 `json:"output_tokens"`
	CacheCreationInputTokens *int64 `json:"cache_creation_input_tokens"`
	CacheReadInputTokens     *int64 `json:"cache_read_input_tokens"`
}

// observe reads one event. The data's type names the event, or else the
// event's name does; an event named "error" is one whatever its data.
func (s *anthropicStream) observe(e *Event, u *streamUsage) {
	var top struct {
		Type    any             `json:"type"`
		Message json.RawMessage `json:"message"`
		Usage   json.RawMessage `json:"usage"`
		Error   json.RawMessage `json:"error"`
	}
	if json.Unmarshal(e.Data, &top) != nil {
		top.Type, top.Message, top.Usage, top.Error = nil, nil, nil, nil
	}
	kind := stringOf(top.Type)
	if kind == "" {
		kind = e.Name
	}
	switch {
	case e.Name == "error" || kind == "error":
		s.fail(top.Error)
		return
	case kind == "message_start":
		var m struct {
			Usage json.RawMessage `json:"usage"`
		}
		if json.Unmarshal(top.Message, &m) != nil {
			return
		}
		s.read(m.Usage)
	case kind == "message_delta":
		s.read(top.Usage)
	default:
		return
	}
	switch {
	case s.bad:
		u.seen = false
	case s.seen:
		// Each count is within MaxCount: the sum cannot overflow, and
		// usage() drops a prompt above MaxCount.
		u.prompt, u.completion, u.total, u.cached, u.seen = s.input+s.cacheCreation+s.cacheRead, s.output, 0, s.cacheRead, true
	}
}

// read takes the counts a usage object reports.
func (s *anthropicStream) read(raw json.RawMessage) {
	if len(raw) == 0 || string(raw) == "null" {
		return
	}
	var f anthropicUsageFields
	if json.Unmarshal(raw, &f) != nil {
		s.bad = true
		return
	}
	for _, c := range []struct {
		got *int64
		to  *int64
	}{{f.InputTokens, &s.input}, {f.OutputTokens, &s.output}, {f.CacheCreationInputTokens, &s.cacheCreation}, {f.CacheReadInputTokens, &s.cacheRead}} {
		if c.got == nil {
			continue
		}
		if *c.got < 0 || *c.got > MaxCount {
			s.bad = true
			continue
		}
		*c.to, s.seen = *c.got, true
	}
}

// fail records an error event; the first one stands.
func (s *anthropicStream) fail(raw json.RawMessage) {
	if s.failed {
		return
	}
	s.failed = true
	s.errorType, s.quota = anthropicError(raw)
}

// class is what a stream that carried an error event means for the call.
func (s *anthropicStream) class() Class {
	switch {
	case s.quota:
		return QuotaExhausted
	case s.errorType == "rate_limit_error":
		return RateLimited
	default:
		return Unavailable
	}
}

// anthropicError reads Anthropic's error object, {"type": ..., "message":
// ...}: its type, and whether it says the billing quota is spent.
func anthropicError(raw json.RawMessage) (typ string, quota bool) {
	var e struct {
		Type    any `json:"type"`
		Message any `json:"message"`
	}
	if len(raw) == 0 || json.Unmarshal(raw, &e) != nil {
		return "", false
	}
	typ = stringOf(e.Type)
	msg := strings.ToLower(stringOf(e.Message))
	return typ, typ == "billing_error" || strings.Contains(msg, "credit balance is too low")
}

// anthropicLast is the event that ends a complete Anthropic stream. An
// error event ends it too: the stream is over, and its class says how.
func anthropicLast(e Event) bool {
	if e.Name == "message_stop" || e.Name == "error" {
		return true
	}
	var d struct {
		Type string `json:"type"`
	}
	return json.Unmarshal(e.Data, &d) == nil && (d.Type == "message_stop" || d.Type == "error")
}
