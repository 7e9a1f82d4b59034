package providers

import (
	"context"
	"encoding/json"
	"net/http"
)

// streamResponses posts a streaming Responses API body (OpenAI's or
// Azure's: the same events) and relays its typed server-sent events
// ("event: response.created", "response.output_text.delta", ...), each
// "data:" a JSON object whose "type" names it. The stream always reports
// its usage, in the response of its last event, so nothing is asked for
// and no event is Injected. The last event is response.completed, or
// response.incomplete (cut short by max_output_tokens: a success, its
// usage settled), or response.failed or error, which relay like the
// events before them and make the stream no success: Class Unavailable
// (RateLimited for a rate_limit_exceeded, QuotaExhausted for
// insufficient_quota), ErrorCode the error's code; the executor then
// ends the call with provider_error, since events already went out.
func streamResponses(ctx context.Context, client *http.Client, url string, h http.Header, body []byte, onEvent func(Event) error) (*Response, error) {
	var st responsesStream
	limits := func(h http.Header) RateLimits { return parseOpenAIHeaders(h, answerTime(h, nil)) }
	resp, err := stream(ctx, client, url, h, body, sseDialect{limits: limits, readBody: readOpenAIBody, observe: st.observe, last: st.last}, onEvent)
	if err != nil || !st.failed {
		return resp, err
	}
	resp.ErrorCode, resp.ErrorType = st.code, st.code
	switch st.code {
	case "rate_limit_exceeded":
		resp.Class = RateLimited
	case "insufficient_quota":
		resp.Class = QuotaExhausted
	default:
		resp.Class = Unavailable
	}
	return resp, nil
}

// responsesStream is what a Responses stream's events said so far.
type responsesStream struct {
	failed bool
	code   string
}

// responsesEvent is what is read of one event's data.
type responsesEvent struct {
	Type     string `json:"type"`
	Code     any    `json:"code"` // on "error"
	Response *struct {
		Usage json.RawMessage `json:"usage"`
		Error *struct {
			Code any `json:"code"`
		} `json:"error"`
	} `json:"response"`
}

// typeOf is the event's type: its data's "type", else its name.
func (responsesStream) typeOf(e Event, ev *responsesEvent) string {
	if ev.Type != "" {
		return ev.Type
	}
	return e.Name
}

func (s *responsesStream) observe(e *Event, u *streamUsage) {
	var ev responsesEvent
	if json.Unmarshal(e.Data, &ev) != nil && e.Name != "error" {
		return
	}
	switch s.typeOf(*e, &ev) {
	case "response.completed", "response.incomplete", "response.failed":
		if ev.Response != nil && len(ev.Response.Usage) > 0 && string(ev.Response.Usage) != "null" {
			if got := openAIUsage(ev.Response.Usage); got != nil {
				u.set(got)
			}
		}
		if s.typeOf(*e, &ev) == "response.failed" {
			s.failed = true
			if ev.Response != nil && ev.Response.Error != nil {
				s.code = stringOf(ev.Response.Error.Code)
			}
		}
	case "error":
		s.failed = true
		s.code = stringOf(ev.Code)
	}
}

func (s *responsesStream) last(e Event) bool {
	var ev responsesEvent
	_ = json.Unmarshal(e.Data, &ev)
	switch s.typeOf(e, &ev) {
	case "response.completed", "response.incomplete", "response.failed", "error":
		return true
	}
	return false
}
