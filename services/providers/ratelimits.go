package providers

import (
	"math"
	"net/http"
	"strconv"
	"strings"
	"time"
)

// MaxWait bounds any wait a provider asks for: a header that says to come
// back in a year is garbage, not advice.
const MaxWait = 10 * time.Minute

// RateLimits is what a response's rate-limit headers said. Values a header
// did not give, or gave as garbage, are -1 (counts) or 0 (durations).
type RateLimits struct {
	LimitRequests, LimitTokens         int64
	RemainingRequests, RemainingTokens int64
	ResetRequests, ResetTokens         time.Duration
	// RetryAfter is retry-after-ms, or else retry-after.
	RetryAfter time.Duration
}

// Wait is how long the provider asked to wait before the next request: the
// explicit retry-after if given, else the reset of the exhausted limit
// (kind is "requests" or "tokens", from a 429 body; empty means either).
func (r RateLimits) Wait(kind string) time.Duration {
	if r.RetryAfter > 0 {
		return r.RetryAfter
	}
	switch kind {
	case "requests":
		return r.ResetRequests
	case "tokens":
		return r.ResetTokens
	}
	return max(r.ResetRequests, r.ResetTokens)
}

// ParseOpenAIHeaders reads OpenAI's x-ratelimit-* headers and retry-after.
// Malformed, negative or absurd values are ignored, never trusted.
func ParseOpenAIHeaders(h http.Header) RateLimits {
	return RateLimits{
		LimitRequests:     count(h.Get("x-ratelimit-limit-requests")),
		LimitTokens:       count(h.Get("x-ratelimit-limit-tokens")),
		RemainingRequests: remaining(h.Get("x-ratelimit-remaining-requests")),
		RemainingTokens:   remaining(h.Get("x-ratelimit-remaining-tokens")),
		ResetRequests:     duration(h.Get("x-ratelimit-reset-requests")),
		ResetTokens:       duration(h.Get("x-ratelimit-reset-tokens")),
		RetryAfter:        retryAfter(h),
	}
}

// count parses a limit. Some APIs send -1 or 0 for "unknown": both read as
// unknown (-1).
func count(s string) int64 {
	n, err := strconv.ParseInt(strings.TrimSpace(s), 10, 64)
	if err != nil || n <= 0 {
		return -1
	}
	return n
}

// remaining parses a remaining count, where 0 is meaningful.
func remaining(s string) int64 {
	n, err := strconv.ParseInt(strings.TrimSpace(s), 10, 64)
	if err != nil || n < 0 {
		return -1
	}
	return n
}

// duration parses OpenAI's reset values: Go-like durations such as 12ms, 1s,
// 6m0s or 1m30.5s; a bare number is seconds.
func duration(s string) time.Duration {
	s = strings.TrimSpace(s)
	if s == "" {
		return 0
	}
	d, err := time.ParseDuration(s)
	if err != nil {
		f, ferr := strconv.ParseFloat(s, 64)
		if ferr != nil {
			return 0
		}
		d = seconds(f)
	}
	return clampWait(d)
}

// retryAfter reads retry-after-ms (Azure) or retry-after (seconds or an
// HTTP date).
func retryAfter(h http.Header) time.Duration {
	if v := strings.TrimSpace(h.Get("retry-after-ms")); v != "" {
		if f, err := strconv.ParseFloat(v, 64); err == nil && f > 0 {
			return clampWait(seconds(f / 1000))
		}
	}
	v := strings.TrimSpace(h.Get("retry-after"))
	if v == "" {
		return 0
	}
	if f, err := strconv.ParseFloat(v, 64); err == nil {
		return clampWait(seconds(f))
	}
	if t, err := http.ParseTime(v); err == nil {
		return clampWait(time.Until(t))
	}
	return 0
}

func seconds(f float64) time.Duration {
	if math.IsNaN(f) || f <= 0 {
		return 0
	}
	if f > MaxWait.Seconds() {
		return MaxWait
	}
	return time.Duration(f * float64(time.Second))
}

func clampWait(d time.Duration) time.Duration {
	if d <= 0 {
		return 0
	}
	return min(d, MaxWait)
}
