package providers

import (
	"net/http"
	"testing"
	"time"
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
	want := RateLimits{
		LimitRequests: 60000, LimitTokens: 150000, RemainingRequests: 0, RemainingTokens: 149984,
		ResetRequests: 90500 * time.Millisecond, ResetTokens: 12 * time.Millisecond,
	}
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
