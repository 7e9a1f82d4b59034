package providers

import (
	"math"
	"net/http"
	"testing"
	"time"
)

// The fuzz targets hold the parsers of what providers send to their
// contract: whatever arrives, no panic, counts either unknown or within
// [0, MaxCount] (limits at least 1), waits within [0, MaxWait]. Their seed
// corpora run as ordinary tests; `go test -fuzz FuzzX` searches further.

func checkLimits(t *testing.T, r RateLimits) {
	t.Helper()
	for name, n := range map[string]int64{
		"LimitRequests": r.LimitRequests, "LimitTokens": r.LimitTokens,
		"LimitInputTokens": r.LimitInputTokens, "LimitOutputTokens": r.LimitOutputTokens,
	} {
		if n != -1 && (n < 1 || n > 2*MaxCount) { // the tokens fold may add two
			t.Errorf("%s = %d", name, n)
		}
	}
	for name, n := range map[string]int64{
		"RemainingRequests": r.RemainingRequests, "RemainingTokens": r.RemainingTokens,
		"RemainingInputTokens": r.RemainingInputTokens, "RemainingOutputTokens": r.RemainingOutputTokens,
	} {
		if n != -1 && (n < 0 || n > 2*MaxCount) {
			t.Errorf("%s = %d", name, n)
		}
	}
	for name, d := range map[string]time.Duration{
		"ResetRequests": r.ResetRequests, "ResetTokens": r.ResetTokens,
		"ResetInputTokens": r.ResetInputTokens, "ResetOutputTokens": r.ResetOutputTokens,
		"RetryAfter": r.RetryAfter, "Wait()": r.Wait(""), "Wait(tokens)": r.Wait("tokens"),
	} {
		if d < 0 || d > MaxWait {
			t.Errorf("%s = %v", name, d)
		}
	}
	rpm, tpm := r.PerMinute()
	if rpm != -1 && (rpm < 1 || rpm > MaxCount) || tpm != -1 && (tpm < 1 || tpm > MaxCount) {
		t.Errorf("PerMinute = %d, %d", rpm, tpm)
	}
}

func FuzzParseOpenAIHeaders(f *testing.F) {
	f.Add("60000", "150000", "0", "149984", "1m30.5s", "12ms", "2", "150")
	f.Add("-1", "0", "lots", "99999999999999999999999", "-5s", "876000h", "NaN", "-1")
	f.Add("9223372036854775807", "1e9", "+3", " 7 ", "Inf", "1.5", "Fri, 31 Dec 2100 23:59:59 GMT", "Inf")
	f.Add("\xff\xfe", "", "", "", "9999999999h", "0.000000001s", "99999999999", "1e308")
	f.Fuzz(func(t *testing.T, limReq, limTok, remReq, remTok, resetReq, resetTok, ra, raMS string) {
		h := http.Header{}
		h["X-Ratelimit-Limit-Requests"] = []string{limReq}
		h["X-Ratelimit-Limit-Tokens"] = []string{limTok}
		h["X-Ratelimit-Remaining-Requests"] = []string{remReq}
		h["X-Ratelimit-Remaining-Tokens"] = []string{remTok}
		h["X-Ratelimit-Reset-Requests"] = []string{resetReq}
		h["X-Ratelimit-Reset-Tokens"] = []string{resetTok}
		h["Retry-After"] = []string{ra}
		h["Retry-After-Ms"] = []string{raMS}
		checkLimits(t, ParseOpenAIHeaders(h))
	})
}

func FuzzParseAnthropicHeaders(f *testing.F) {
	f.Add("50", "49", "2026-03-01T12:00:01Z", "10000", "0", "2026-03-01T12:00:06Z",
		"40000", "39000", "2026-03-01T12:00:02Z", "10000", "9000", "9999-12-31T23:59:59Z", "17", int64(0))
	f.Add("-1", "-1", "0001-01-01T00:00:00Z", "0", "lots", "yesterday",
		"9223372036854775807", "1099511627776", "2026-03-01T12:00:00.999999999+14:00", "1099511627776", "1099511627776", "", "NaN", int64(math.MaxInt64))
	f.Add("", "", "", "", "", "", "", "", "", "", "", "", "Sun, 01 Mar 2026 12:00:05 GMT", int64(math.MinInt64))
	f.Fuzz(func(t *testing.T, rl, rr, rs, tl, tr, ts, il, ir, is, ol, or, os, ra string, nowNanos int64) {
		h := anthropicHeaders(map[string]string{
			"requests-limit": rl, "requests-remaining": rr, "requests-reset": rs,
			"tokens-limit": tl, "tokens-remaining": tr, "tokens-reset": ts,
			"input-tokens-limit": il, "input-tokens-remaining": ir, "input-tokens-reset": is,
			"output-tokens-limit": ol, "output-tokens-remaining": or, "output-tokens-reset": os,
			"retry-after": ra,
		})
		checkLimits(t, ParseAnthropicHeaders(h, time.Unix(0, nowNanos)))
	})
}

func FuzzRetryInfo(f *testing.F) {
	f.Add([]byte(geminiObject))
	f.Add([]byte("[" + geminiObject + "]"))
	f.Add([]byte(`{"error":{"details":[{"@type":"type.googleapis.com/google.rpc.RetryInfo","retryDelay":"-1e999s"}]}}`))
	f.Add([]byte(`[[[[[[[[[[]]]]]]]]]]`))
	f.Add([]byte("\xff\xfe{\"error\":"))
	f.Fuzz(func(t *testing.T, body []byte) {
		if d := retryInfoDelay(body); d < 0 || d > MaxWait {
			t.Fatalf("retryInfoDelay = %v", d)
		}
	})
}

func FuzzReadBodies(f *testing.F) {
	f.Add([]byte(`{"usage":{"prompt_tokens":9,"completion_tokens":16,"total_tokens":25}}`))
	f.Add([]byte(`{"error":{"code":"429","message":"x","status":400,"type":null}}`))
	f.Add([]byte(`{"type":"error","error":{"type":"rate_limit_error","message":"credit balance is too low"}}`))
	f.Add([]byte(`{"usage":{"input_tokens":9223372036854775807,"cache_read_input_tokens":9223372036854775807,"output_tokens":-1}}`))
	f.Add([]byte(`[{"error":{"code":429,"status":"RESOURCE_EXHAUSTED"}}]`))
	f.Fuzz(func(t *testing.T, body []byte) {
		for _, read := range []func([]byte) verdict{readOpenAIBody, readAnthropicBody} {
			v := read(body)
			if u := v.usage; u != nil {
				if u.PromptTokens < 0 || u.CompletionTokens < 0 || u.TotalTokens < u.PromptTokens+u.CompletionTokens ||
					u.PromptTokens > MaxCount || u.CompletionTokens > MaxCount || u.TotalTokens > 2*MaxCount {
					t.Fatalf("usage %+v from %q", u, body)
				}
			}
			for _, status := range []int{200, 400, 429, 529} {
				r := respond(answer{status: status, header: http.Header{}, body: body}, unknownLimits(), v)
				checkLimits(t, r.Limits)
			}
		}
	})
}
