package providers

import (
	"net/http"
	"testing"
	"time"
)

// anthropicHeaders builds headers from short names ("requests-limit") and
// full ones ("retry-after").
func anthropicHeaders(kv map[string]string) http.Header {
	h := http.Header{}
	for k, v := range kv {
		switch k {
		case "retry-after", "Date":
			h.Set(k, v)
		default:
			h.Set("anthropic-ratelimit-"+k, v)
		}
	}
	return h
}

var anthropicNow = time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)

func TestParseAnthropicHeaders(t *testing.T) {
	h := anthropicHeaders(map[string]string{
		"requests-limit":          "50",
		"requests-remaining":      "49",
		"requests-reset":          "2026-03-01T12:00:01Z",
		"tokens-limit":            "10000", // the most restrictive of the two: output
		"tokens-remaining":        "9000",
		"tokens-reset":            "2026-03-01T12:00:06Z",
		"input-tokens-limit":      "40000",
		"input-tokens-remaining":  "39000",
		"input-tokens-reset":      "2026-03-01T12:00:02Z",
		"output-tokens-limit":     "10000",
		"output-tokens-remaining": "9000",
		"output-tokens-reset":     "2026-03-01T12:00:06.5Z",
	})
	r := ParseAnthropicHeaders(h, anthropicNow)
	want := unknownLimits()
	want.LimitRequests, want.RemainingRequests, want.ResetRequests = 50, 49, time.Second
	want.LimitInputTokens, want.RemainingInputTokens, want.ResetInputTokens = 40000, 39000, 2*time.Second
	want.LimitOutputTokens, want.RemainingOutputTokens, want.ResetOutputTokens = 10000, 9000, 6500*time.Millisecond
	// Folded: the split's sums, and the longest reset.
	want.LimitTokens, want.RemainingTokens, want.ResetTokens = 50000, 48000, 6500*time.Millisecond
	if r != want {
		t.Fatalf("got  %+v\nwant %+v", r, want)
	}
	if rpm, tpm := r.PerMinute(); rpm != 50 || tpm != 50000 {
		t.Fatalf("PerMinute %d %d", rpm, tpm)
	}
}

func TestAnthropicTokensFold(t *testing.T) {
	cases := []struct {
		name                  string
		headers               map[string]string
		limit, remaining      int64
		reset, wait           time.Duration
		limitIn, remainingOut int64
	}{
		{
			name: "combined only",
			headers: map[string]string{"tokens-limit": "80000", "tokens-remaining": "1000",
				"tokens-reset": "2026-03-01T12:00:30Z"},
			limit: 80000, remaining: 1000, reset: 30 * time.Second, wait: 30 * time.Second,
			limitIn: -1, remainingOut: -1,
		},
		{
			name: "output exhausted: tokens exhausted until the output reset",
			headers: map[string]string{
				"input-tokens-limit": "40000", "input-tokens-remaining": "30000", "input-tokens-reset": "2026-03-01T12:00:50Z",
				"output-tokens-limit": "8000", "output-tokens-remaining": "0", "output-tokens-reset": "2026-03-01T12:00:04Z",
			},
			limit: 48000, remaining: 0, reset: 4 * time.Second, wait: 4 * time.Second,
			limitIn: 40000, remainingOut: 0,
		},
		{
			name: "combined exhausted wins over split counts",
			headers: map[string]string{
				"tokens-remaining": "0", "tokens-reset": "2026-03-01T12:00:09Z",
				"input-tokens-remaining": "5", "output-tokens-remaining": "5",
			},
			limit: -1, remaining: 0, reset: 9 * time.Second, wait: 9 * time.Second,
			limitIn: -1, remainingOut: 5,
		},
		{
			name:    "only input given: no total limit can be said",
			headers: map[string]string{"input-tokens-limit": "40000", "input-tokens-remaining": "100"},
			limit:   -1, remaining: -1, limitIn: 40000, remainingOut: -1,
		},
		{
			name:    "nothing",
			headers: map[string]string{},
			limit:   -1, remaining: -1, limitIn: -1, remainingOut: -1,
		},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			r := ParseAnthropicHeaders(anthropicHeaders(tc.headers), anthropicNow)
			if r.LimitTokens != tc.limit || r.RemainingTokens != tc.remaining || r.ResetTokens != tc.reset {
				t.Errorf("tokens view: limit %d remaining %d reset %v; want %d %d %v",
					r.LimitTokens, r.RemainingTokens, r.ResetTokens, tc.limit, tc.remaining, tc.reset)
			}
			if r.LimitInputTokens != tc.limitIn || r.RemainingOutputTokens != tc.remainingOut {
				t.Errorf("split kept: input limit %d, output remaining %d", r.LimitInputTokens, r.RemainingOutputTokens)
			}
			if got := r.Wait("rate_limit_error"); got != tc.wait {
				t.Errorf("Wait = %v, want %v", got, tc.wait)
			}
		})
	}
}

func TestAnthropicHostileResets(t *testing.T) {
	cases := []struct {
		reset string
		want  time.Duration
	}{
		{"2026-03-01T12:00:10Z", 10 * time.Second},
		{"2026-03-01T13:00:10+01:00", 10 * time.Second}, // an offset is honoured
		{"2026-03-01T12:00:00.250Z", 250 * time.Millisecond},
		{"2026-03-01T11:59:00Z", 0},       // in the past
		{"0001-01-01T00:00:00Z", 0},       // far in the past: no overflow
		{"9999-12-31T23:59:59Z", MaxWait}, // years away
		{"2026-03-01T12:05:00Z", 5 * time.Minute},
		{"2026-03-01T12:30:00Z", MaxWait},
		{"tomorrow", 0},
		{"1700000000", 0}, // a Unix time is not RFC 3339
		{"2026-03-01 12:00:10", 0},
		{"\x00\xff", 0},
		{"", 0},
	}
	for _, tc := range cases {
		r := ParseAnthropicHeaders(anthropicHeaders(map[string]string{"requests-reset": tc.reset, "requests-remaining": "0"}), anthropicNow)
		if r.ResetRequests != tc.want {
			t.Errorf("reset %q: %v, want %v", tc.reset, r.ResetRequests, tc.want)
		}
	}
}

func TestAnthropicRetryAfter(t *testing.T) {
	cases := []struct {
		v    string
		want time.Duration
	}{
		{"17", 17 * time.Second},
		{"-3", 0},
		{"NaN", 0},
		{"Inf", MaxWait},
		{"1e300", MaxWait},
		{"Sun, 01 Mar 2026 12:00:05 GMT", 5 * time.Second}, // an HTTP date, from the answer's time
		{"soon", 0},
	}
	for _, tc := range cases {
		r := ParseAnthropicHeaders(anthropicHeaders(map[string]string{"retry-after": tc.v}), anthropicNow)
		if r.RetryAfter != tc.want {
			t.Errorf("retry-after %q: %v, want %v", tc.v, r.RetryAfter, tc.want)
		}
	}
}

func TestAnswerTime(t *testing.T) {
	local := func() time.Time { return anthropicNow.Add(time.Hour) }
	h := http.Header{}
	h.Set("Date", "Sun, 01 Mar 2026 12:00:00 GMT")
	if got := answerTime(h, local); !got.Equal(anthropicNow) {
		t.Errorf("with a Date header: %v, want the provider's %v", got, anthropicNow)
	}
	h.Set("Date", "yesterday")
	if got := answerTime(h, local); !got.Equal(local()) {
		t.Errorf("with a garbage Date: %v, want the clock's", got)
	}
	if got := answerTime(http.Header{}, nil); time.Since(got) > time.Minute {
		t.Errorf("without Date or clock: %v, want now", got)
	}
}
