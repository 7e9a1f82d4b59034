package providers

import (
	"net/http"

	"github.com/sluicehq/sluice/messages"
)

// verdict is what a dialect read from an answer's body.
type verdict struct {
	usage     *messages.Usage
	errorType string
	errorCode string
	// quota is set when the body says the key's billing quota is spent.
	quota bool
}

// respond assembles the Response to a, given the limits its headers gave
// and what its body said. On a 429 that named no wait, a RetryInfo in the
// body supplies one, whatever the dialect.
func respond(a answer, limits RateLimits, v verdict) *Response {
	if a.status == http.StatusTooManyRequests && limits.RetryAfter == 0 && !a.truncated {
		limits.RetryAfter = retryInfoDelay(a.body)
	}
	return &Response{
		Status:    a.status,
		Header:    a.header,
		Body:      a.body,
		Class:     classify(a.status, v.quota),
		ErrorCode: v.errorCode,
		ErrorType: v.errorType,
		Usage:     v.usage,
		Limits:    limits,
	}
}

// classify judges a status. Billing exhaustion comes first: OpenAI says it
// with a 429, Anthropic with a 400, and either way no retry helps. 529 is
// Anthropic's overloaded_error: the provider is busy, not the key limited.
func classify(status int, quota bool) Class {
	switch {
	case status >= 200 && status < 300:
		return Success
	case quota && status >= 400 && status < 500:
		return QuotaExhausted
	case status == http.StatusTooManyRequests:
		return RateLimited
	case status >= 500, status == http.StatusRequestTimeout:
		return Unavailable
	default:
		return Rejected
	}
}

// usage checks a reported usage before sluice settles a reservation with
// it: a negative count or one above MaxCount means the report is garbage,
// and no usage is better than a wrong one (the reservation then stands).
// A total below prompt + completion, or missing, is raised to their sum.
// cached is the prompt tokens read from the provider's cache: a count
// below 0 or above the prompt is dropped (so those tokens are priced as
// uncached input, which errs high), and 0 adds no details.
func usage(prompt, completion, total, cached int64) *messages.Usage {
	for _, n := range []int64{prompt, completion, total} {
		if n < 0 || n > MaxCount {
			return nil
		}
	}
	u := &messages.Usage{PromptTokens: prompt, CompletionTokens: completion, TotalTokens: max(total, prompt+completion)}
	if cached > 0 && cached <= prompt {
		u.PromptTokensDetails = &messages.PromptTokensDetails{CachedTokens: cached}
	}
	return u
}

// stringOf returns v when it is a JSON string, else "".
func stringOf(v any) string {
	s, _ := v.(string)
	return s
}
