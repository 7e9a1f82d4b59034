package providers

import (
	"net/http"
	"strings"
	"time"
)

// ParseAnthropicHeaders reads Anthropic's anthropic-ratelimit-* headers
// (requests, tokens, input-tokens and output-tokens, each with -limit,
// -remaining and -reset) and retry-after. Limits are per minute. Resets are
// RFC 3339 instants, made relative to now: pass the instant the answer was
// made, ideally its Date header (see Anthropic.Clock), so that the local
// clock's skew does not shift them. A reset in the past is 0, one beyond
// MaxWait is MaxWait, garbage is ignored.
//
// Anthropic meters input and output tokens apart. The Tokens fields fold
// them into the single total-tokens view that sluice's TPM limiter keeps:
//
//   - LimitTokens is LimitInputTokens + LimitOutputTokens when both are
//     given: a minute can carry at most that many tokens in total, and it
//     never understates what the provider allows. (The combined
//     anthropic-ratelimit-tokens-limit header, which reports the most
//     restrictive of the two, is used only when the split is absent:
//     learning the output limit as a total would starve the input-heavy
//     calls that make most traffic.)
//   - RemainingTokens is 0 when any token limit reports 0 remaining, since
//     every call needs both input and output tokens; otherwise the sum of
//     the input and output remaining counts, or else the combined header.
//   - ResetTokens is the longest reset among the exhausted token limits
//     when one is exhausted, and otherwise the longest among all of them:
//     when the tokens view is whole again.
//
// The split values stay in the Input and Output fields for a limiter that
// meters them apart.
func ParseAnthropicHeaders(h http.Header, now time.Time) RateLimits {
	r := unknownLimits()
	get := func(name string) string { return h.Get("anthropic-ratelimit-" + name) }
	r.LimitRequests = count(get("requests-limit"))
	r.RemainingRequests = remaining(get("requests-remaining"))
	r.ResetRequests = resetAt(get("requests-reset"), now)

	r.LimitInputTokens = count(get("input-tokens-limit"))
	r.RemainingInputTokens = remaining(get("input-tokens-remaining"))
	r.ResetInputTokens = resetAt(get("input-tokens-reset"), now)
	r.LimitOutputTokens = count(get("output-tokens-limit"))
	r.RemainingOutputTokens = remaining(get("output-tokens-remaining"))
	r.ResetOutputTokens = resetAt(get("output-tokens-reset"), now)

	combined := struct {
		limit, remaining int64
		reset            time.Duration
	}{count(get("tokens-limit")), remaining(get("tokens-remaining")), resetAt(get("tokens-reset"), now)}

	// Limit: the split's sum, else the combined header.
	r.LimitTokens = combined.limit
	if r.LimitInputTokens > 0 && r.LimitOutputTokens > 0 {
		r.LimitTokens = r.LimitInputTokens + r.LimitOutputTokens // each <= MaxCount: no overflow
	}

	// Remaining: 0 if anything is exhausted, else the split's sum, else the
	// combined header.
	type dim struct {
		remaining int64
		reset     time.Duration
	}
	dims := []dim{{combined.remaining, combined.reset},
		{r.RemainingInputTokens, r.ResetInputTokens}, {r.RemainingOutputTokens, r.ResetOutputTokens}}
	var exhaustedReset, anyReset time.Duration
	exhausted := false
	for _, d := range dims {
		anyReset = max(anyReset, d.reset)
		if d.remaining == 0 {
			exhausted = true
			exhaustedReset = max(exhaustedReset, d.reset)
		}
	}
	switch {
	case exhausted:
		r.RemainingTokens, r.ResetTokens = 0, exhaustedReset
	case r.RemainingInputTokens >= 0 && r.RemainingOutputTokens >= 0:
		r.RemainingTokens, r.ResetTokens = r.RemainingInputTokens+r.RemainingOutputTokens, anyReset
	default:
		r.RemainingTokens, r.ResetTokens = combined.remaining, anyReset
	}

	r.RetryAfter = retryAfter(h, now)
	return r
}

// resetAt parses an RFC 3339 reset instant into the wait from now, clamped
// to [0, MaxWait].
func resetAt(s string, now time.Time) time.Duration {
	s = strings.TrimSpace(s)
	if s == "" {
		return 0
	}
	t, err := time.Parse(time.RFC3339, s)
	if err != nil {
		return 0
	}
	return clampWait(t.Sub(now)) // Sub saturates: no overflow for any year
}

// answerTime is the instant an answer was made: its Date header when that
// parses, so that relative waits are measured on the provider's clock and
// the local clock's skew does not shift them; otherwise clock's reading
// (time.Now when nil). A hostile Date can only move waits within
// [0, MaxWait], where every wait is clamped anyway.
func answerTime(h http.Header, clock func() time.Time) time.Time {
	if v := h.Get("Date"); v != "" {
		if t, err := http.ParseTime(v); err == nil {
			return t
		}
	}
	if clock == nil {
		return time.Now()
	}
	return clock()
}
