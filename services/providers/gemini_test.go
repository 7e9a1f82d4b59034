package providers

import (
	"net/http"
	"strings"
	"testing"
	"time"
)

const geminiObject = `{"error":{"code":429,"message":"You exceeded your current quota","status":"RESOURCE_EXHAUSTED",
 "details":[{"@type":"type.googleapis.com/google.rpc.QuotaFailure","violations":[{"quotaMetric":"m"}]},
            {"@type":"type.googleapis.com/google.rpc.RetryInfo","retryDelay":"17s"}]}}`

func TestRetryInfoDelay(t *testing.T) {
	retry := func(delay string) string {
		return `{"error":{"code":429,"status":"RESOURCE_EXHAUSTED","details":[{"@type":"type.googleapis.com/google.rpc.RetryInfo","retryDelay":"` + delay + `"}]}}`
	}
	cases := []struct {
		name string
		body string
		want time.Duration
	}{
		{"object", geminiObject, 17 * time.Second},
		{"one-element array", "[" + geminiObject + "]", 17 * time.Second},
		{"fraction", retry("0.250s"), 250 * time.Millisecond},
		{"nanos", retry("1.000340s"), time.Second + 340*time.Microsecond},
		{"no RetryInfo", `{"error":{"code":429,"status":"RESOURCE_EXHAUSTED","details":[{"@type":"type.googleapis.com/google.rpc.Help"}]}}`, 0},
		{"no details", `{"error":{"code":429,"status":"RESOURCE_EXHAUSTED"}}`, 0},
		{"negative", retry("-5s"), 0},
		{"no unit", retry("17"), 0},
		{"go duration", retry("1m"), 0},
		{"NaN", retry("NaNs"), 0},
		{"huge", retry("1e300s"), MaxWait},
		{"years", retry("99999999999s"), MaxWait},
		{"delay not a string", `{"error":{"details":[{"@type":"type.googleapis.com/google.rpc.RetryInfo","retryDelay":17}]}}`, 0},
		{"details not objects", `{"error":{"details":[1,"x",null]}}`, 0},
		{"error not an object", `{"error":"slow down"}`, 0},
		{"empty array", `[]`, 0},
		{"array of junk", `[1]`, 0},
		{"not JSON", `Too many requests`, 0},
		{"empty", ``, 0},
		{"too large to search", `{"pad":"` + strings.Repeat("x", maxErrorBody) + `",` + geminiObject[1:], 0},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			if got := retryInfoDelay([]byte(tc.body)); got != tc.want {
				t.Fatalf("got %v, want %v", got, tc.want)
			}
		})
	}
}

func TestRespondReadsRetryInfoOnlyOn429WithoutHeader(t *testing.T) {
	withHeader := http.Header{}
	withHeader.Set("retry-after", "2")
	cases := []struct {
		name   string
		status int
		header http.Header
		body   string
		want   time.Duration
		class  Class
	}{
		{"gemini 429", 429, http.Header{}, geminiObject, 17 * time.Second, RateLimited},
		{"gemini 429 as array", 429, http.Header{}, "[" + geminiObject + "]", 17 * time.Second, RateLimited},
		{"a header wins", 429, withHeader, geminiObject, 2 * time.Second, RateLimited},
		{"not on a 503", 503, http.Header{}, geminiObject, 0, Unavailable},
		{"bedrock throttling: no hint", 429, http.Header{"X-Amzn-Errortype": {"ThrottlingException:http://internal.amazon.com/coral/com.amazon.bedrock/"}},
			`{"message":"Too many requests, please wait before trying again."}`, 0, RateLimited},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			a := answer{status: tc.status, header: tc.header, body: []byte(tc.body)}
			for name, read := range map[string]func([]byte) verdict{"openai": readOpenAIBody, "anthropic": readAnthropicBody} {
				r := respond(a, ParseOpenAIHeaders(tc.header), read(a.body))
				if r.Limits.RetryAfter != tc.want || r.Class != tc.class {
					t.Errorf("%s: retry after %v class %v; want %v %v", name, r.Limits.RetryAfter, r.Class, tc.want, tc.class)
				}
				if w := r.Limits.Wait(r.ErrorType); w != tc.want {
					t.Errorf("%s: Wait = %v, want %v", name, w, tc.want)
				}
			}
		})
	}
}

func TestReadOpenAIBodyGoogleError(t *testing.T) {
	v := readOpenAIBody([]byte("[" + geminiObject + "]"))
	if v.errorCode != "RESOURCE_EXHAUSTED" || v.errorType != "" || v.quota {
		t.Fatalf("%+v", v)
	}
}
