package fakeprovider

import (
	"net/http"
	"strconv"
	"time"
)

// dialect is how one provider API speaks around the shared machinery of a
// metered call (limits, faults, counters): where the key is, what a request
// must carry besides it, what errors look like, and which rate-limit
// headers an answer carries. Every dialect meters the same keys in the same
// buckets or windows, so a key used through two dialects shares its limits,
// as one account would.
//
// An apiError is built OpenAI-shaped by the shared steps (validation,
// server errors) and by the dialect's own constructors; errorBody renders
// it in the dialect's wire format.
type dialect interface {
	// key returns the API key the request presents, "" for none.
	key(r *http.Request) string
	// check refuses, after authentication and before the body is read, a
	// request that lacks what the dialect requires besides the key.
	check(r *http.Request) *apiError
	invalidKey() *apiError
	insufficientQuota() *apiError
	modelNotFound(model string) *apiError
	rateLimited(model string, a admission, requested int64) *apiError
	serverError(status int) *apiError
	overloaded() *apiError
	// errorBody is the JSON body answering e.
	errorBody(e *apiError) any
	// setRateHeaders writes the rate-limit headers of an answer on a key
	// whose buckets or windows look like v at now.
	setRateHeaders(h http.Header, v rateView, now time.Time)
	// setRetryHeaders writes the headers of a 429 asking to wait d.
	setRetryHeaders(h http.Header, d time.Duration)
	// setCallHeaders writes headers every answer to a metered call carries,
	// given when the fake began serving it.
	setCallHeaders(h http.Header, start time.Time)
}

// openAIDialect is api.openai.com's, which most OpenAI-compatible servers
// copy: bearer keys, x-ratelimit-* headers, {"error": {...}} bodies.
type openAIDialect struct{}

func (openAIDialect) key(r *http.Request) string       { return bearer(r) }
func (openAIDialect) check(*http.Request) *apiError    { return nil }
func (openAIDialect) invalidKey() *apiError            { return errInvalidKey }
func (openAIDialect) insufficientQuota() *apiError     { return errInsufficientQuota }
func (openAIDialect) serverError(status int) *apiError { return serverError(status) }
func (openAIDialect) errorBody(e *apiError) any        { return e.body() }

func (openAIDialect) modelNotFound(m string) *apiError { return modelNotFound(m) }

func (openAIDialect) rateLimited(model string, a admission, requested int64) *apiError {
	return rateLimitError(model, a, requested)
}

// overloaded is OpenAI's 503 for a model with more demand than capacity.
func (openAIDialect) overloaded() *apiError {
	return &apiError{
		status: http.StatusServiceUnavailable,
		message: "That model is currently overloaded with other requests. You can retry your request, " +
			"or contact us through our help center at help.openai.com if the error persists.",
		typ: typeServer,
	}
}

func (openAIDialect) setRateHeaders(h http.Header, v rateView, _ time.Time) { setRateHeaders(h, v) }
func (openAIDialect) setRetryHeaders(h http.Header, d time.Duration)        { setRetryHeaders(h, d) }

func (openAIDialect) setCallHeaders(h http.Header, start time.Time) {
	h.Set("openai-processing-ms", strconv.FormatInt(time.Since(start).Milliseconds(), 10))
}
