package providers

import (
	"net/http"
	"testing"
	"time"

	"github.com/sluicehq/sluice/messages"
)

func TestParseOpenAIHeaders(t *testing.T) {
	h := http.Header{}
	h.Set("x-ratelimit-limit-requests", "60000")
	h.Set("x-ratelimit-limit-tokens", "150000")
	h.Set("x-ratelimit-remaining-requests", "0")
	h.Set("x-ratelimit-remaining-tokens", "149984")
	h.Set("x-ratelimit-reset-requests", "1m30.5s")
	h.Set("x-ratelimit-reset-tokens", "12ms")
	r := ParseOpenAIHeaders(h)
	want := unknownLimits()
	want.LimitRequests, want.LimitTokens, want.RemainingRequests, want.RemainingTokens = 60000, 150000, 0, 149984
	want.ResetRequests, want.ResetTokens = 90500*time.Millisecond, 12*time.Millisecond
	if r != want {
		t.Fatalf("got %+v\nwant %+v", r, want)
	}
	if r.Wait("requests") != 90500*time.Millisecond || r.Wait("tokens") != 12*time.Millisecond || r.Wait("") != 90500*time.Millisecond {
		t.Fatal("Wait picks the reset of the exhausted limit")
	}
}

func TestRetryAfterHeaders(t *testing.T) {
	cases := []struct {
		name    string
		headers map[string]string
		want    time.Duration
	}{
		{"seconds", map[string]string{"retry-after": "2"}, 2 * time.Second},
		{"ms wins", map[string]string{"retry-after": "2", "retry-after-ms": "150"}, 150 * time.Millisecond},
		{"fraction", map[string]string{"retry-after": "0.5"}, 500 * time.Millisecond},
		{"garbage", map[string]string{"retry-after": "soon"}, 0},
		{"negative", map[string]string{"retry-after": "-3"}, 0},
		{"huge", map[string]string{"retry-after": "99999999999"}, MaxWait},
		{"NaN", map[string]string{"retry-after": "NaN"}, 0},
		{"years away", map[string]string{"retry-after": "Fri, 31 Dec 2100 23:59:59 GMT"}, MaxWait},
		{"azure unknown ms", map[string]string{"retry-after-ms": "-1", "retry-after": "1"}, time.Second},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			h := http.Header{}
			for k, v := range tc.headers {
				h.Set(k, v)
			}
			if got := ParseOpenAIHeaders(h).RetryAfter; got != tc.want {
				t.Fatalf("got %v want %v", got, tc.want)
			}
		})
	}
}

func TestMalformedLimitHeadersAreUnknown(t *testing.T) {
	h := http.Header{}
	h.Set("x-ratelimit-limit-requests", "-1")
	h.Set("x-ratelimit-limit-tokens", "0")
	h.Set("x-ratelimit-remaining-requests", "lots")
	h.Set("x-ratelimit-remaining-tokens", "99999999999999999999999")
	h.Set("x-ratelimit-reset-requests", "-5s")
	h.Set("x-ratelimit-reset-tokens", "876000h")
	r := ParseOpenAIHeaders(h)
	if r.LimitRequests != -1 || r.LimitTokens != -1 || r.RemainingRequests != -1 || r.RemainingTokens != -1 {
		t.Fatalf("counts: %+v", r)
	}
	if r.ResetRequests != 0 || r.ResetTokens != MaxWait {
		t.Fatalf("resets: %+v", r)
	}
}

func TestWithModelKeepsOtherFields(t *testing.T) {
	in := []byte(`{"model":"pool","messages":[{"role":"user","content":"hi"}],"temperature":0.2}`)
	out, err := withModel(in, "gpt-4o-mini-2024-07-18")
	if err != nil {
		t.Fatal(err)
	}
	want := `{"messages":[{"role":"user","content":"hi"}],"model":"gpt-4o-mini-2024-07-18","temperature":0.2}`
	if string(out) != want {
		t.Fatalf("got %s", out)
	}
	same := []byte(`{"model":"x",  "messages":[]}`)
	if out, _ := withModel(same, "x"); string(out) != string(same) {
		t.Fatal("a body already naming the model passes through byte for byte")
	}
}

func TestAbsurdCountsAreUnknown(t *testing.T) {
	h := http.Header{}
	h.Set("x-ratelimit-limit-requests", "9223372036854775807") // parses, but no provider grants it
	h.Set("x-ratelimit-limit-tokens", "1099511627776")         // MaxCount: the largest believed
	h.Set("x-ratelimit-remaining-requests", "1099511627777")
	h.Set("x-ratelimit-remaining-tokens", "\xff\xfe")
	r := ParseOpenAIHeaders(h)
	if r.LimitRequests != -1 || r.LimitTokens != MaxCount || r.RemainingRequests != -1 || r.RemainingTokens != -1 {
		t.Fatalf("%+v", r)
	}
}

func TestAzureUnknownLimits(t *testing.T) {
	// Azure and some compatible APIs send -1 or 0 for a limit they do not
	// know: unknown, never "zero allowed". A remaining of 0 stays 0.
	h := http.Header{}
	h.Set("x-ratelimit-limit-requests", "0")
	h.Set("x-ratelimit-limit-tokens", "-1")
	h.Set("x-ratelimit-remaining-requests", "0")
	h.Set("x-ratelimit-remaining-tokens", "-1")
	h.Set("retry-after-ms", "1500")
	h.Set("retry-after", "2")
	r := ParseOpenAIHeaders(h)
	if r.LimitRequests != -1 || r.LimitTokens != -1 || r.RemainingRequests != 0 || r.RemainingTokens != -1 {
		t.Fatalf("counts %+v", r)
	}
	if r.RetryAfter != 1500*time.Millisecond {
		t.Fatalf("retry-after-ms must win over retry-after: %v", r.RetryAfter)
	}
	if rpm, tpm := r.PerMinute(); rpm != -1 || tpm != -1 {
		t.Fatalf("PerMinute %d %d", rpm, tpm)
	}
}

func TestWaitPicksTheExhaustedLimit(t *testing.T) {
	cases := []struct {
		name string
		r    RateLimits
		kind string
		want time.Duration
	}{
		{"retry-after wins", RateLimits{RetryAfter: time.Second, ResetTokens: time.Minute}, "tokens", time.Second},
		{"kind requests", RateLimits{RemainingRequests: 5, ResetRequests: 2 * time.Second, ResetTokens: time.Minute}, "requests", 2 * time.Second},
		{"tokens exhausted, unknown kind", RateLimits{RemainingRequests: 5, ResetRequests: time.Minute, RemainingTokens: 0, ResetTokens: 3 * time.Second}, "rate_limit_error", 3 * time.Second},
		{"requests exhausted, no kind", RateLimits{RemainingRequests: 0, ResetRequests: 4 * time.Second, RemainingTokens: 9, ResetTokens: time.Minute}, "", 4 * time.Second},
		{"both exhausted: the later", RateLimits{ResetRequests: 4 * time.Second, ResetTokens: 7 * time.Second}, "", 7 * time.Second},
		{"nothing exhausted: the longest", RateLimits{RemainingRequests: 1, RemainingTokens: 1, ResetRequests: 4 * time.Second, ResetTokens: 7 * time.Second}, "", 7 * time.Second},
		{"nothing known", unknownLimits(), "", 0},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			if got := tc.r.Wait(tc.kind); got != tc.want {
				t.Fatalf("Wait(%q) = %v, want %v", tc.kind, got, tc.want)
			}
		})
	}
}

func TestPerMinute(t *testing.T) {
	cases := []struct {
		name     string
		r        RateLimits
		rpm, tpm int64
	}{
		{"per minute", RateLimits{LimitRequests: 500, LimitTokens: 30000, Period: time.Minute}, 500, 30000},
		{"zero period is a minute", RateLimits{LimitRequests: 500, LimitTokens: -1}, 500, -1},
		{"per second", RateLimits{LimitRequests: 10, LimitTokens: 1000, Period: time.Second}, 600, 60000},
		{"per hour", RateLimits{LimitRequests: 120, LimitTokens: 30, Period: time.Hour}, 2, -1},
		{"huge per second is clamped", RateLimits{LimitRequests: MaxCount, LimitTokens: 0, Period: time.Second}, MaxCount, -1},
		{"garbage", RateLimits{LimitRequests: -5, LimitTokens: MaxCount + 1}, -1, -1},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			if rpm, tpm := tc.r.PerMinute(); rpm != tc.rpm || tpm != tc.tpm {
				t.Fatalf("PerMinute = %d, %d; want %d, %d", rpm, tpm, tc.rpm, tc.tpm)
			}
		})
	}
}

func TestSupports(t *testing.T) {
	cases := []struct {
		provider string
		endpoint messages.Endpoint
		want     bool
	}{
		{"openai", messages.EndpointChatCompletions, true},
		{"openai", messages.EndpointEmbeddings, true},
		{"openai", messages.EndpointMessages, false},
		{"azure", messages.EndpointChatCompletions, true},
		{"azure", messages.EndpointEmbeddings, true},
		{"azure", messages.EndpointMessages, false},
		{"anthropic", messages.EndpointMessages, true},
		{"anthropic", messages.EndpointChatCompletions, false},
		{"anthropic", messages.EndpointEmbeddings, false},
		{"bedrock", messages.EndpointChatCompletions, false},
		{"openai", messages.EndpointCompletions, true},
		{"azure", messages.EndpointCompletions, true},
		{"anthropic", messages.EndpointCompletions, false},
		{"anthropic", messages.EndpointCountTokens, true},
		{"openai", messages.EndpointCountTokens, false},
		{"azure", messages.EndpointCountTokens, false},
		{"openai", messages.EndpointResponses, true},
		{"azure", messages.EndpointResponses, true},
		{"anthropic", messages.EndpointResponses, false},
		{"openai", messages.EndpointResponseGet, true},
		{"azure", messages.EndpointResponseDelete, true},
		{"anthropic", messages.EndpointResponseGet, false},
		{"openai", "/v1/images/generations", false},
	}
	for _, tc := range cases {
		if got := Supports(tc.provider, tc.endpoint); got != tc.want {
			t.Errorf("Supports(%q, %q) = %v, want %v", tc.provider, tc.endpoint, got, tc.want)
		}
	}
	for _, p := range []string{"openai", "azure", "anthropic"} {
		if _, err := For(p); err != nil {
			t.Errorf("For(%q): %v", p, err)
		}
	}
	if _, err := For("fake"); err == nil {
		t.Error("For accepts an unknown provider")
	}
}
