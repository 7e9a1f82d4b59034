package fakeprovider

import (
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"time"
)

// This file is the Anthropic dialect: POST /v1/messages with the key in
// x-api-key and a required anthropic-version header; errors as
// {"type": "error", "error": {"type", "message"}} where the type follows
// the status (invalid_request_error, authentication_error,
// rate_limit_error, overloaded_error, ...); and anthropic-ratelimit-*
// headers whose resets are RFC 3339 instants.
//
// Anthropic's limits are continuously replenished token buckets, which is
// what the fake's bucket model is, so the key's requests and tokens buckets
// serve it unchanged (a key enforcing windows answers from its windows, as
// in any dialect). Anthropic meters input and output tokens apart; the
// fake keeps one tokens limit (input plus max_tokens at admission, settled
// on usage) and reports it in the anthropic-ratelimit-tokens-* headers,
// sending no input-tokens or output-tokens headers it could not back.
//
// Answers carry a Date header from Config.Clock, so that a client can turn
// the reset instants into waits on the fake's own clock, as a client of
// Anthropic should on Anthropic's.

// anthropicVersionHeader is the header every Messages request must carry.
const anthropicVersionHeader = "anthropic-version"

// anthropicDialect answers as api.anthropic.com does.
type anthropicDialect struct{}

// anthropicErrorBody is Anthropic's error body.
type anthropicErrorBody struct {
	Type  string               `json:"type"` // "error"
	Error anthropicErrorDetail `json:"error"`
}

type anthropicErrorDetail struct {
	Type    string `json:"type"`
	Message string `json:"message"`
}

func anthropicInvalid(format string, args ...any) *apiError {
	return &apiError{status: http.StatusBadRequest, message: fmt.Sprintf(format, args...), typ: typeInvalidRequest}
}

func (anthropicDialect) key(r *http.Request) string {
	return strings.TrimSpace(r.Header.Get("x-api-key"))
}

func (anthropicDialect) check(r *http.Request) *apiError {
	if strings.TrimSpace(r.Header.Get(anthropicVersionHeader)) == "" {
		return anthropicInvalid("anthropic-version: header is required")
	}
	return nil
}

func (anthropicDialect) invalidKey() *apiError {
	return &apiError{status: http.StatusUnauthorized, message: "invalid x-api-key"}
}

// insufficientQuota is how Anthropic says the billing quota is spent: a
// 400, not a 429.
func (anthropicDialect) insufficientQuota() *apiError {
	return anthropicInvalid("Your credit balance is too low to access the Anthropic API. " +
		"Please go to Plans & Billing to upgrade or purchase credits.")
}

func (anthropicDialect) modelNotFound(m string) *apiError {
	return &apiError{status: http.StatusNotFound, message: "model: " + m}
}

func (anthropicDialect) rateLimited(_ string, a admission, requested int64) *apiError {
	if a.tooLarge {
		return &apiError{status: http.StatusTooManyRequests, message: fmt.Sprintf(
			"This request would exceed the rate limit for your organization (org-fake) of %d tokens per minute "+
				"on its own: it asks for %d. Please reduce the prompt length or the maximum tokens requested; "+
				"retrying will not help.", a.wholeLimit, requested)}
	}
	var limit int64
	if a.refused != nil {
		limit = a.refused.limit
	}
	return &apiError{status: http.StatusTooManyRequests, message: fmt.Sprintf(
		"This request would exceed the rate limit for your organization (org-fake) of %d %s per minute. "+
			"For details, refer to: https://docs.claude.com/en/api/rate-limits. You can see the response headers "+
			"for current usage. Please reduce the prompt length or the maximum tokens requested, or try again later.",
		limit, a.limitedBy)}
}

func (anthropicDialect) serverError(status int) *apiError {
	return &apiError{status: status, message: "Internal server error"}
}

// overloaded is Anthropic's 529: the API is busy for everyone.
func (anthropicDialect) overloaded() *apiError {
	return &apiError{status: statusOverloaded, message: "Overloaded"}
}

// statusOverloaded is Anthropic's non-standard 529.
const statusOverloaded = 529

// anthropicErrorType is the error type Anthropic sends with a status.
func anthropicErrorType(status int) string {
	switch status {
	case http.StatusBadRequest, http.StatusMethodNotAllowed:
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
	case statusOverloaded:
		return "overloaded_error"
	}
	if status >= 500 {
		return "api_error"
	}
	return "invalid_request_error"
}

func (anthropicDialect) errorBody(e *apiError) any {
	return anthropicErrorBody{Type: "error", Error: anthropicErrorDetail{Type: anthropicErrorType(e.status), Message: e.message}}
}

// setRateHeaders writes anthropic-ratelimit-{requests,tokens}-{limit,
// remaining,reset} for the dimensions the key is limited in, and the Date
// the resets are relative to. A reset is the instant the bucket is full
// again, rounded up to the second so that it is never early.
func (anthropicDialect) setRateHeaders(h http.Header, v rateView, now time.Time) {
	h.Set("Date", now.UTC().Format(http.TimeFormat))
	for _, d := range []struct {
		name string
		b    *bucketView
	}{{"requests", v.requests}, {"tokens", v.tokens}} {
		if d.b == nil {
			continue
		}
		p := "anthropic-ratelimit-" + d.name + "-"
		h.Set(p+"limit", strconv.FormatInt(d.b.limit, 10))
		h.Set(p+"remaining", strconv.FormatInt(d.b.remaining, 10))
		h.Set(p+"reset", ceilSecond(now.Add(d.b.reset)).UTC().Format(time.RFC3339))
	}
}

// ceilSecond rounds t up to a whole second.
func ceilSecond(t time.Time) time.Time {
	if f := t.Truncate(time.Second); !f.Equal(t) {
		return f.Add(time.Second)
	}
	return t
}

// setRetryHeaders writes retry-after in whole seconds, rounded up and at
// least 1: Anthropic sends no millisecond variant.
func (anthropicDialect) setRetryHeaders(h http.Header, d time.Duration) {
	h.Set("retry-after", strconv.FormatInt(max(1, ceilDiv(int64(d), int64(time.Second))), 10))
}

// setCallHeaders repeats the request id under Anthropic's name for it.
func (anthropicDialect) setCallHeaders(h http.Header, _ time.Time) {
	h.Set("request-id", h.Get("x-request-id"))
}
