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

// MaxCount bounds any count a header may report (about 1.1e12 requests or
// tokens per minute, far above any real grant). A larger value is garbage
// and reads as unknown, so that no later arithmetic on it can overflow.
const MaxCount = 1 << 40

// RateLimits is what an answer said about the key's rate limits. Counts a
// header did not give, or gave as garbage, are -1; durations are 0.
//
// Limits are per Period, which is a minute for every dialect parsed here:
// OpenAI's x-ratelimit-limit-* are RPM and TPM, and so are Anthropic's
// anthropic-ratelimit-*-limit. PerMinute states them per minute whatever
// the period.
//
// Remaining counts are what is left now, where 0 is meaningful: the limit
// is exhausted until its reset. Resets are how long until the limit is
// whole again (OpenAI's reset durations, or Anthropic's RFC 3339 reset
// instants made relative to the answer's Date).
type RateLimits struct {
	LimitRequests, LimitTokens         int64
	RemainingRequests, RemainingTokens int64
	ResetRequests, ResetTokens         time.Duration

	// The input and output token limits that Anthropic meters apart
	// (ITPM, OTPM). ParseAnthropicHeaders folds them into the Tokens fields
	// above, which is what a limiter of total tokens per minute learns
	// from; they are kept here for a limiter that meters them apart.
	LimitInputTokens, LimitOutputTokens         int64
	RemainingInputTokens, RemainingOutputTokens int64
	ResetInputTokens, ResetOutputTokens         time.Duration

	// RetryAfter is the explicit wait the provider asked for: retry-after-ms,
	// else retry-after, else (on a 429) a Google RetryInfo retryDelay in the
	// body.
	RetryAfter time.Duration

	// Period is the span the Limit fields are stated over; zero reads as
	// a minute.
	Period time.Duration
}

// unknownLimits is the RateLimits of an answer that said nothing.
func unknownLimits() RateLimits {
	return RateLimits{
		LimitRequests: -1, LimitTokens: -1,
		RemainingRequests: -1, RemainingTokens: -1,
		LimitInputTokens: -1, LimitOutputTokens: -1,
		RemainingInputTokens: -1, RemainingOutputTokens: -1,
		Period: time.Minute,
	}
}

// Wait is how long the provider asked to wait before the next request: the
// explicit retry-after if given, else the reset of the exhausted limit.
// kind names that limit, "requests" or "tokens" as an OpenAI 429 body does;
// any other kind (empty, or Anthropic's rate_limit_error) lets the
// remaining counts say which limit is exhausted, and when none says so,
// Wait is the longest reset.
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
	var exhausted time.Duration
	if r.RemainingRequests == 0 {
		exhausted = r.ResetRequests
	}
	if r.RemainingTokens == 0 {
		exhausted = max(exhausted, r.ResetTokens)
	}
	if exhausted > 0 {
		return exhausted
	}
	return max(r.ResetRequests, r.ResetTokens)
}

// PerMinute is what the provider says it allows at most per minute, in
// requests and in tokens: the Limit fields restated from Period to a
// minute, rounded down. Either is -1 when the answer did not say. This is
// the number to compare with a deployment's configured RPM and TPM; it is
// never a reason to raise them.
func (r RateLimits) PerMinute() (requests, tokens int64) {
	return perMinute(r.LimitRequests, r.Period), perMinute(r.LimitTokens, r.Period)
}

func perMinute(limit int64, period time.Duration) int64 {
	if limit <= 0 || limit > MaxCount {
		return -1
	}
	if period <= 0 || period == time.Minute {
		return limit
	}
	f := math.Floor(float64(limit) * float64(time.Minute) / float64(period))
	if f < 1 {
		return -1 // less than one per minute is not a limit sluice can keep
	}
	return int64(min(f, MaxCount))
}

// ParseOpenAIHeaders reads OpenAI's x-ratelimit-* headers and retry-after
// (or retry-after-ms). Malformed, negative or absurd values are ignored,
// never trusted; limits of -1 or 0, which some compatible APIs and Azure
// send for "unknown", read as unknown.
func ParseOpenAIHeaders(h http.Header) RateLimits {
	return parseOpenAIHeaders(h, time.Time{})
}

// parseOpenAIHeaders is ParseOpenAIHeaders measuring an HTTP-date
// retry-after from now (the zero time: the local clock).
func parseOpenAIHeaders(h http.Header, now time.Time) RateLimits {
	r := unknownLimits()
	r.LimitRequests = count(h.Get("x-ratelimit-limit-requests"))
	r.LimitTokens = count(h.Get("x-ratelimit-limit-tokens"))
	r.RemainingRequests = remaining(h.Get("x-ratelimit-remaining-requests"))
	r.RemainingTokens = remaining(h.Get("x-ratelimit-remaining-tokens"))
	r.ResetRequests = duration(h.Get("x-ratelimit-reset-requests"))
	r.ResetTokens = duration(h.Get("x-ratelimit-reset-tokens"))
	r.RetryAfter = retryAfter(h, now)
	return r
}

// count parses a limit. Some APIs send -1 or 0 for "unknown": both read as
// unknown (-1), as does anything above MaxCount.
func count(s string) int64 {
	n, err := strconv.ParseInt(strings.TrimSpace(s), 10, 64)
	if err != nil || n <= 0 || n > MaxCount {
		return -1
	}
	return n
}

// remaining parses a remaining count, where 0 is meaningful.
func remaining(s string) int64 {
	n, err := strconv.ParseInt(strings.TrimSpace(s), 10, 64)
	if err != nil || n < 0 || n > MaxCount {
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

// retryAfter reads retry-after-ms (Azure, and OpenAI's SDKs) or else
// retry-after: seconds, or an HTTP date measured from now (the zero time
// means the local clock).
func retryAfter(h http.Header, now time.Time) time.Duration {
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
		return seconds(f)
	}
	if t, err := http.ParseTime(v); err == nil {
		if now.IsZero() {
			now = time.Now()
		}
		return clampWait(t.Sub(now))
	}
	return 0
}

// seconds turns a count of seconds into a wait in [0, MaxWait]; NaN and
// negative counts are no wait, infinity is MaxWait.
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
