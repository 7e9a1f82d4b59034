package gateway

import (
	"encoding/json"
	"net/http"
	"strconv"
	"strings"

	"github.com/sluicehq/sluice/messages"
)

// dialect is the API shape a route speaks: how its errors look.
type dialect int

const (
	// openAI: {"error":{"message","type","param","code"}}.
	openAI dialect = iota
	// anthropic: {"type":"error","error":{"type","message"}}.
	anthropic
)

// apiError is an error the gateway answers itself, in either dialect.
type apiError struct {
	Status int
	// Code is sluice's error code (messages.Code), or one of the
	// gateway's own: invalid_api_key, model_not_found, unknown_url,
	// method_not_allowed.
	Code    string
	Message string
	// Param names the request body's field at fault, if any.
	Param string
	// RetryAfterMS, for queue_full, becomes Retry-After (whole seconds).
	RetryAfterMS int64
	// NoRetry asks OpenAI's SDKs not to retry (x-should-retry: false):
	// sluice has retried already, or the deadline has passed.
	NoRetry bool
}

// errorType is the error's "type" in each dialect, by HTTP status.
func (e *apiError) errorType(d dialect) string {
	if d == anthropic {
		switch e.Status {
		case http.StatusBadRequest, http.StatusMethodNotAllowed, statusClientGone:
			return "invalid_request_error"
		case http.StatusUnauthorized:
			return "authentication_error"
		case http.StatusForbidden:
			return "permission_error"
		case http.StatusNotFound:
			return "not_found_error"
		case http.StatusRequestEntityTooLarge:
			return "request_too_large"
		case http.StatusTooManyRequests:
			return "rate_limit_error"
		case http.StatusGatewayTimeout:
			return "timeout_error"
		case http.StatusServiceUnavailable:
			return "overloaded_error"
		default:
			return "api_error"
		}
	}
	switch e.Status {
	case http.StatusUnauthorized:
		return "authentication_error"
	case http.StatusForbidden:
		return "permission_error"
	case http.StatusTooManyRequests:
		return "rate_limit_error"
	case http.StatusGatewayTimeout:
		return "timeout_error"
	case statusClientGone:
		return "canceled"
	default:
		if e.Status >= 500 {
			return "api_error"
		}
		return "invalid_request_error"
	}
}

// body is the error's JSON body in dialect d.
func (e *apiError) body(d dialect) []byte {
	var v any
	if d == anthropic {
		v = map[string]any{"type": "error", "error": map[string]string{"type": e.errorType(d), "message": e.Message}}
	} else {
		var param *string
		if e.Param != "" {
			param = &e.Param
		}
		v = map[string]any{"error": map[string]any{"message": e.Message, "type": e.errorType(d), "param": param, "code": e.Code}}
	}
	data, _ := json.Marshal(v) // maps of strings: cannot fail
	return data
}

// writeError answers e in dialect d.
func writeError(w http.ResponseWriter, d dialect, e *apiError) {
	if e.Status == http.StatusTooManyRequests && e.RetryAfterMS > 0 {
		w.Header().Set("Retry-After", strconv.FormatInt(max(1, (e.RetryAfterMS+999)/1000), 10))
	}
	if e.NoRetry {
		w.Header().Set("x-should-retry", "false")
	}
	writeBody(w, e.Status, e.body(d))
}

// streamErrorEvent is e as a server-sent event that ends a stream: what
// OpenAI's SDKs raise as an error mid-stream (a data line with an
// "error"), or Anthropic's "event: error".
func streamErrorEvent(d dialect, e *apiError) []byte {
	if d == anthropic {
		return append([]byte("event: error\ndata: "), e.body(d)...)
	}
	return append([]byte("data: "), e.body(d)...)
}

// fromCallError turns sluice's error of a call into the gateway's answer:
//
//	invalid_request    400 (404 when no deployment of the pool serves the route)
//	unknown_model      404
//	forbidden          403
//	queue_full         429 with Retry-After
//	budget_exhausted   429 with Retry-After (the budget's reset), not to be retried by SDKs
//	deadline_exceeded  504
//	rate_limited       429 (the provider's answer, when there is one, is passed through instead)
//	provider_error     502 (likewise)
//	canceled           499
//	internal           502
func fromCallError(e *messages.Error) *apiError {
	out := &apiError{Code: string(e.Code), Message: e.Message, Param: param(e.Field)}
	if out.Code == "" {
		// An error without a code (no sluice service sends one) still
		// gets one a client can branch on.
		out.Code = string(messages.CodeInternal)
	}
	if out.Message == "" {
		out.Message = out.Code
	}
	switch e.Code {
	case messages.CodeInvalidRequest:
		out.Status = http.StatusBadRequest
		if e.Field == "endpoint" {
			out.Status, out.Code, out.Param = http.StatusNotFound, "model_not_found", "model"
		}
	case messages.CodeUnknownModel:
		out.Status, out.Code, out.Param = http.StatusNotFound, "model_not_found", "model"
	case messages.CodeForbidden:
		out.Status = http.StatusForbidden
	case messages.CodeQueueFull:
		out.Status, out.RetryAfterMS = http.StatusTooManyRequests, e.RetryAfterMS
	case messages.CodeBudgetExhausted:
		// Like a provider's insufficient_quota: 429, and no use retrying
		// before the budget resets, hours away.
		out.Status, out.RetryAfterMS, out.NoRetry = http.StatusTooManyRequests, e.RetryAfterMS, true
	case messages.CodeDeadlineExceeded:
		out.Status, out.NoRetry = http.StatusGatewayTimeout, true
	case messages.CodeRateLimited:
		out.Status, out.NoRetry = http.StatusTooManyRequests, true
	case messages.CodeProviderError:
		out.Status, out.NoRetry = http.StatusBadGateway, true
	case messages.CodeCanceled:
		out.Status = statusClientGone
	default:
		out.Status = http.StatusBadGateway
	}
	return out
}

// param is the client's name for a field sluice names: the request body
// is the call's body, so "body.max_tokens" is "max_tokens".
func param(field string) string {
	if field == "body" {
		return ""
	}
	return strings.TrimPrefix(field, "body.")
}
