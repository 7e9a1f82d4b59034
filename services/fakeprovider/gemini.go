package fakeprovider

import (
	"fmt"
	"net/http"
	"time"
)

// Google's APIs answer a rate limit with a google.rpc error body and no
// headers: the wait is a RetryInfo detail, in whole seconds. Config's
// RateLimitBody makes the fake answer its 429s that way, so that clients
// are tested on reading it.

type googleErrorBody struct {
	Error googleErrorDetail `json:"error"`
}

type googleErrorDetail struct {
	Code    int              `json:"code"`
	Message string           `json:"message"`
	Status  string           `json:"status"`
	Details []map[string]any `json:"details"`
}

// geminiRateLimitBody is the 429 body asking to wait d (rounded up to a
// whole second, at least 1), as an object or wrapped in a one-element
// array. A QuotaFailure detail comes first, as Gemini sends it, so that a
// client must look for the RetryInfo rather than take the first detail. A
// call too large for a window gets no RetryInfo: no wait would help it.
func geminiRateLimitBody(a admission, d time.Duration, array bool) any {
	metric := "generate_content_requests"
	if a.limitedBy == "tokens" {
		metric = "generate_content_input_token_count"
	}
	b := googleErrorBody{Error: googleErrorDetail{
		Code: http.StatusTooManyRequests,
		Message: "You exceeded your current quota, please check your plan and billing details. " +
			"For more information on this error, head to: https://ai.google.dev/gemini-api/docs/rate-limits.",
		Status: "RESOURCE_EXHAUSTED",
		Details: []map[string]any{
			{
				"@type": "type.googleapis.com/google.rpc.QuotaFailure",
				"violations": []map[string]any{{
					"quotaMetric": "generativelanguage.googleapis.com/" + metric,
					"quotaId":     "PerMinutePerProjectPerModel",
				}},
			},
		},
	}}
	if !a.tooLarge {
		b.Error.Details = append(b.Error.Details, map[string]any{
			"@type":      "type.googleapis.com/google.rpc.RetryInfo",
			"retryDelay": fmt.Sprintf("%ds", max(1, ceilDiv(int64(d), int64(time.Second)))),
		})
	}
	if array {
		return []googleErrorBody{b}
	}
	return b
}
