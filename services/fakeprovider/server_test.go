package fakeprovider

import (
	"cmp"
	"encoding/json"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"
)

func TestChatSuccess(t *testing.T) {
	// 600 RPM and 60,000 TPM over 1s: 10 requests and 1,000 tokens, refilled
	// at 10 and 1,000 per second.
	tests := []struct {
		name       string
		extra      string
		n          int
		completion int64 // per choice
		finish     string
		charge     int64
	}{
		{"defaults", "", 1, 16, "stop", helloPrompt + 256},
		{"max_tokens above the natural length", `,"max_tokens":100`, 1, 16, "stop", helloPrompt + 100},
		{"max_tokens cuts it short", `,"max_tokens":5`, 1, 5, "length", helloPrompt + 5},
		{"max_completion_tokens", `,"max_completion_tokens":7`, 1, 7, "length", helloPrompt + 7},
		{"max_tokens null is unset", `,"max_tokens":null`, 1, 16, "stop", helloPrompt + 256},
		{"n choices are charged n times", `,"n":3,"max_tokens":20`, 3, 16, "stop", helloPrompt + 3*20},
		{"zero max_tokens", `,"max_tokens":0`, 1, 0, "length", helloPrompt},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := newHarness(t, Config{Keys: map[string]KeyConfig{"sk-a": {RPM: 600, TPM: 60_000}}})
			r := h.chat("sk-a", helloChat(tt.extra))
			if r.status != http.StatusOK {
				t.Fatalf("status %d: %s", r.status, r.body)
			}
			var resp chatCompletion
			r.decode(t, &resp)
			if resp.Object != "chat.completion" || resp.Model != "m" || !strings.HasPrefix(resp.ID, "chatcmpl-") {
				t.Errorf("object %q model %q id %q", resp.Object, resp.Model, resp.ID)
			}
			if resp.Created != h.clock.Now().Unix() {
				t.Errorf("created %d, want the clock's %d", resp.Created, h.clock.Now().Unix())
			}
			wantUsage := usage{PromptTokens: helloPrompt, CompletionTokens: tt.completion * int64(tt.n)}
			wantUsage.TotalTokens = wantUsage.PromptTokens + wantUsage.CompletionTokens
			if resp.Usage != wantUsage {
				t.Errorf("usage %+v, want %+v", resp.Usage, wantUsage)
			}
			if len(resp.Choices) != tt.n {
				t.Fatalf("%d choices, want %d", len(resp.Choices), tt.n)
			}
			for i, ch := range resp.Choices {
				if ch.Index != int64(i) || ch.Message.Role != "assistant" || ch.FinishReason != tt.finish {
					t.Errorf("choice %d: %+v", i, ch)
				}
				if got := int64(len(strings.Fields(ch.Message.Content))); got != tt.completion {
					t.Errorf("choice %d has %d words, want %d", i, got, tt.completion)
				}
			}
			headers := map[string]string{
				"x-ratelimit-limit-requests":     "600",
				"x-ratelimit-limit-tokens":       "60000",
				"x-ratelimit-remaining-requests": "9",
				"x-ratelimit-reset-requests":     "100ms", // one request at 10/s
				"x-ratelimit-remaining-tokens":   itoa(1000 - tt.charge),
				"x-ratelimit-reset-tokens":       formatDuration(time.Duration(tt.charge) * time.Millisecond),
				"content-type":                   "application/json",
			}
			for k, want := range headers {
				if got := r.header.Get(k); got != want {
					t.Errorf("header %s = %q, want %q", k, got, want)
				}
			}
			for _, k := range []string{"x-request-id", "openai-processing-ms"} {
				if r.header.Get(k) == "" {
					t.Errorf("header %s missing", k)
				}
			}
			if r.header.Get("retry-after") != "" {
				t.Error("retry-after on a success")
			}
			st := h.fake.Stats()
			if c := st.Keys["sk-a"]; c.Received != 1 || c.Served != 1 || c.TotalTokens != wantUsage.TotalTokens ||
				c.PromptTokens != wantUsage.PromptTokens || c.CompletionTokens != wantUsage.CompletionTokens {
				t.Errorf("key counters %+v", c)
			}
		})
	}
}

func itoa(n int64) string { return strconv.FormatInt(n, 10) }

func TestRateLimited(t *testing.T) {
	tests := []struct {
		name string
		key  KeyConfig
		// first is sent and must succeed; second must be refused.
		first, second string
		typ           string
		retryAfter    string
		retryAfterMS  string
		remReq        string
		remTok        string
	}{
		{
			name:  "requests",
			key:   KeyConfig{RPM: 60, TPM: 60_000}, // 1 request per second
			first: helloChat(""), second: helloChat(""),
			typ: "requests", retryAfter: "1", retryAfterMS: "1000",
			remReq: "0", remTok: itoa(1000 - helloPrompt - 16), // first settled
		},
		{
			name:  "tokens",
			key:   KeyConfig{RPM: 600, TPM: 6000}, // 100 tokens per second
			first: helloChat(`,"max_tokens":80`), second: helloChat(`,"max_tokens":80`),
			// 100 - 89 + (89-25) = 75 left; 89 needed: 14 short at 100/s.
			typ: "tokens", retryAfter: "1", retryAfterMS: "140",
			remReq: "9", remTok: "75",
		},
		{
			name:  "tokens for many seconds",
			key:   KeyConfig{RPM: 600, TPM: 600}, // 10 tokens per second
			first: helloChat(`,"max_tokens":0`), second: helloChat(`,"max_tokens":8`),
			// 10 - 9 = 1 left; 17 is oversized: wait until full, 0.9s.
			typ: "tokens", retryAfter: "1", retryAfterMS: "900",
			remReq: "9", remTok: "1",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := newHarness(t, Config{Keys: map[string]KeyConfig{"sk-a": tt.key}})
			if r := h.chat("sk-a", tt.first); r.status != http.StatusOK {
				t.Fatalf("first call: %d %s", r.status, r.body)
			}
			r := h.chat("sk-a", tt.second)
			if r.status != http.StatusTooManyRequests {
				t.Fatalf("second call: %d %s", r.status, r.body)
			}
			e := r.apiErr(t)
			if e.Type != tt.typ || str(e.Code) != "rate_limit_exceeded" || e.Param != nil ||
				!strings.HasPrefix(e.Message, "Rate limit reached for m ") || !strings.Contains(e.Message, tt.typ+" per min") {
				t.Errorf("error body %+v", e)
			}
			for k, want := range map[string]string{
				"retry-after":                    tt.retryAfter,
				"retry-after-ms":                 tt.retryAfterMS,
				"x-ratelimit-remaining-requests": tt.remReq,
				"x-ratelimit-remaining-tokens":   tt.remTok,
				"x-ratelimit-limit-requests":     itoa(tt.key.RPM),
				"x-ratelimit-limit-tokens":       itoa(tt.key.TPM),
				"content-type":                   "application/json",
			} {
				if got := r.header.Get(k); got != want {
					t.Errorf("header %s = %q, want %q", k, got, want)
				}
			}
			// Nothing was charged: a third identical call sees the same levels.
			r3 := h.chat("sk-a", tt.second)
			if r3.header.Get("x-ratelimit-remaining-requests") != tt.remReq ||
				r3.header.Get("x-ratelimit-remaining-tokens") != tt.remTok {
				t.Errorf("a refused call was charged: remaining %s requests, %s tokens",
					r3.header.Get("x-ratelimit-remaining-requests"), r3.header.Get("x-ratelimit-remaining-tokens"))
			}
			c := h.fake.Stats().Keys["sk-a"]
			refused := c.RateLimitedRequests
			if tt.typ == "tokens" {
				refused = c.RateLimitedTokens
			}
			if c.Received != 3 || c.Served != 1 || refused != 2 || c.Refused() != 2 {
				t.Errorf("counters %+v", c)
			}
			// After the advertised wait the call goes through.
			h.clock.Advance(time.Duration(r.intHeader(t, "retry-after-ms")) * time.Millisecond)
			if r := h.chat("sk-a", tt.second); r.status != http.StatusOK {
				t.Errorf("after retry-after-ms: %d %s", r.status, r.body)
			}
		})
	}
}

func TestQuantizedBurst(t *testing.T) {
	tests := []struct {
		name    string
		quantum time.Duration
		rpm     int64
		burst   int // admitted at one instant
		refill  time.Duration
	}{
		{"1s quantum refuses above a sixtieth of the minute", time.Second, 600, 10, 100 * time.Millisecond},
		{"default quantum", 0, 1200, 20, 50 * time.Millisecond},
		{"100ms quantum", 100 * time.Millisecond, 1200, 2, 50 * time.Millisecond},
		{"1m quantum is a plain per-minute bucket", time.Minute, 120, 120, 500 * time.Millisecond},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := newHarness(t, Config{Quantum: tt.quantum, Keys: map[string]KeyConfig{"sk-a": {RPM: tt.rpm}}})
			body := helloChat(`,"max_tokens":1`)
			for i := range tt.burst {
				if r := h.chat("sk-a", body); r.status != http.StatusOK {
					t.Fatalf("call %d of the burst: %d %s", i, r.status, r.body)
				}
			}
			r := h.chat("sk-a", body)
			if r.status != http.StatusTooManyRequests {
				t.Fatalf("call past the burst: %d, want 429 with %d of %d RPM used", r.status, tt.burst, tt.rpm)
			}
			if got := r.header.Get("retry-after-ms"); got != itoa(tt.refill.Milliseconds()) {
				t.Errorf("retry-after-ms %s, want %d", got, tt.refill.Milliseconds())
			}
			// One refill interval gives one more request, and no more.
			h.clock.Advance(tt.refill - time.Microsecond)
			if r := h.chat("sk-a", body); r.status != http.StatusTooManyRequests {
				t.Fatalf("1µs before the refill: %d", r.status)
			}
			h.clock.Advance(time.Microsecond)
			if r := h.chat("sk-a", body); r.status != http.StatusOK {
				t.Fatalf("after the refill: %d %s", r.status, r.body)
			}
			if r := h.chat("sk-a", body); r.status != http.StatusTooManyRequests {
				t.Fatalf("second call after one refill: %d", r.status)
			}
			// Over the next minute, drained every quantum, the key gets its
			// limit: the quantum bounds bursts, not the average.
			q := cmp.Or(tt.quantum, DefaultQuantum)
			admitted := 0
			for range int(time.Minute / q) {
				h.clock.Advance(q)
				for h.chat("sk-a", body).status == http.StatusOK {
					admitted++
				}
			}
			if want := int(tt.rpm); admitted != want {
				t.Errorf("admitted %d over the next minute, want %d", admitted, want)
			}
			if got := h.fake.Stats().Keys["sk-a"].MaxRequests60s; got > int64(tt.burst)+tt.rpm {
				t.Errorf("MaxRequests60s = %d, above burst+limit %d", got, int64(tt.burst)+tt.rpm)
			}
		})
	}
}

func TestDebt(t *testing.T) {
	// 600 TPM over 1s: 10 tokens per second, capacity 10.
	h := newHarness(t, Config{Keys: map[string]KeyConfig{"sk-a": {TPM: 600}}})
	big := helloChat(`,"max_tokens":50`) // charge 59, far above capacity
	r := h.chat("sk-a", big)
	if r.status != http.StatusOK {
		t.Fatalf("oversized call into a full bucket: %d %s", r.status, r.body)
	}
	if got := r.header.Get("x-ratelimit-remaining-tokens"); got != "0" {
		t.Errorf("remaining in debt = %s, want 0", got)
	}
	// Charged 59, used 25: the level is 10-59+34 = -15. A 9-token call
	// waits for 24 tokens: 2.4s.
	r = h.chat("sk-a", helloChat(`,"max_tokens":0`))
	if r.status != http.StatusTooManyRequests || r.header.Get("retry-after-ms") != "2400" || r.header.Get("retry-after") != "3" {
		t.Fatalf("call during the debt: %d retry-after %s/%sms", r.status, r.header.Get("retry-after"), r.header.Get("retry-after-ms"))
	}
	// An oversized call is refused until the bucket is full again (2.5s),
	// even when the bucket holds almost its capacity.
	h.clock.Advance(2499 * time.Millisecond)
	if r := h.chat("sk-a", big); r.status != http.StatusTooManyRequests {
		t.Fatalf("oversized call into a bucket not full: %d", r.status)
	}
	h.clock.Advance(time.Millisecond)
	if r := h.chat("sk-a", big); r.status != http.StatusOK {
		t.Fatalf("oversized call into a full bucket again: %d %s", r.status, r.body)
	}
}

func TestSettlementRefund(t *testing.T) {
	// 60,000 TPM over 1s: 1,000 tokens; the clock stands still, so the
	// second call's headers show exactly what the first left behind.
	tests := []struct {
		name   string
		extra  string
		charge int64
		used   int64
	}{
		{"default allowance", "", helloPrompt + 256, helloPrompt + 16},
		{"generous max_tokens", `,"max_tokens":200`, helloPrompt + 200, helloPrompt + 16},
		{"n=2", `,"max_tokens":200,"n":2`, helloPrompt + 400, helloPrompt + 32},
		{"max_tokens used up", `,"max_tokens":4`, helloPrompt + 4, helloPrompt + 4},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := newHarness(t, Config{Keys: map[string]KeyConfig{"sk-a": {TPM: 60_000}}})
			first := h.chat("sk-a", helloChat(tt.extra))
			if got, want := first.header.Get("x-ratelimit-remaining-tokens"), itoa(1000-tt.charge); got != want {
				t.Errorf("after admission %s tokens left, want %s", got, want)
			}
			second := h.chat("sk-a", helloChat(`,"max_tokens":0`))
			if got, want := second.header.Get("x-ratelimit-remaining-tokens"), itoa(1000-tt.used-helloPrompt); got != want {
				t.Errorf("after settlement %s tokens left, want %s", got, want)
			}
		})
	}
}

func TestInsufficientQuota(t *testing.T) {
	h := newHarness(t, Config{Keys: map[string]KeyConfig{"sk-broke": {RPM: 60, TPM: 600, InsufficientQuota: true}}})
	for range 3 {
		r := h.chat("sk-broke", helloChat(""))
		if r.status != http.StatusTooManyRequests {
			t.Fatalf("status %d", r.status)
		}
		e := r.apiErr(t)
		if str(e.Code) != "insufficient_quota" || e.Type != "insufficient_quota" || !strings.Contains(e.Message, "exceeded your current quota") {
			t.Errorf("body %+v", e)
		}
		if r.header.Get("retry-after") != "" {
			t.Error("retry-after on insufficient_quota: retrying does not help")
		}
		if r.header.Get("x-ratelimit-remaining-requests") != "1" {
			t.Errorf("insufficient_quota charged a request: remaining %s", r.header.Get("x-ratelimit-remaining-requests"))
		}
	}
	if c := h.fake.Stats().Keys["sk-broke"]; c.InsufficientQuota != 3 || c.Received != 3 || c.Refused() != 3 {
		t.Errorf("counters %+v", c)
	}
	// A key can run out of quota mid-run.
	if err := h.fake.SetKey("sk-broke", KeyConfig{RPM: 60}); err != nil {
		t.Fatal(err)
	}
	if r := h.chat("sk-broke", helloChat("")); r.status != http.StatusOK {
		t.Errorf("after topping up: %d", r.status)
	}
}

func TestAuthentication(t *testing.T) {
	tests := []struct {
		name   string
		header string
	}{
		{"missing", ""},
		{"unknown key", "Bearer sk-nobody"},
		{"wrong scheme", "Basic sk-a"},
		{"empty bearer", "Bearer "},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := newHarness(t, Config{Keys: map[string]KeyConfig{"sk-a": {RPM: 60}}})
			for _, path := range []string{"/v1/chat/completions", "/v1/embeddings"} {
				req, _ := http.NewRequest(http.MethodPost, h.srv.URL+path, strings.NewReader(helloChat("")))
				if tt.header != "" {
					req.Header.Set("Authorization", tt.header)
				}
				resp, err := h.srv.Client().Do(req)
				if err != nil {
					t.Fatal(err)
				}
				var b errorBody
				err = json.NewDecoder(resp.Body).Decode(&b)
				resp.Body.Close()
				if err != nil || resp.StatusCode != http.StatusUnauthorized {
					t.Fatalf("%s: status %d, decode %v", path, resp.StatusCode, err)
				}
				want := errorDetail{Message: "Incorrect API key provided", Type: "invalid_request_error"}
				if b.Error.Message != want.Message || b.Error.Type != want.Type || str(b.Error.Code) != "invalid_api_key" {
					t.Errorf("%s: body %+v", path, b.Error)
				}
				if resp.Header.Get("x-ratelimit-limit-requests") != "" {
					t.Errorf("%s: an unknown key got rate-limit headers", path)
				}
			}
			st := h.fake.Stats()
			if st.Total.Unauthorized != 2 || st.Total.Received != 2 || len(st.Keys) != 0 {
				t.Errorf("stats %+v", st)
			}
		})
	}
}

func TestAcceptAnyKey(t *testing.T) {
	h := newHarness(t, Config{AcceptAnyKey: true, DefaultKey: KeyConfig{RPM: 60}})
	for _, key := range []string{"sk-one", "sk-two", "sk-three"} {
		if r := h.chat(key, helloChat("")); r.status != http.StatusOK {
			t.Errorf("%s first call: %d", key, r.status)
		}
		if r := h.chat(key, helloChat("")); r.status != http.StatusTooManyRequests {
			t.Errorf("%s second call: %d; each key has a bucket of one", key, r.status)
		}
	}
	if r := h.chat("", helloChat("")); r.status != http.StatusUnauthorized {
		t.Errorf("no key at all: %d", r.status)
	}
	if n := len(h.fake.Stats().Keys); n != 3 {
		t.Errorf("%d keys counted, want 3", n)
	}
}

func TestInvalidRequests(t *testing.T) {
	chat, emb := "/v1/chat/completions", "/v1/embeddings"
	tests := []struct {
		name  string
		path  string
		body  string
		param string // "<null>" for none
	}{
		{"not JSON", chat, `{"model":`, "<null>"},
		{"an array", chat, `[1,2]`, "<null>"},
		{"empty body", chat, ``, "<null>"},
		{"missing model", chat, `{"messages":[{"role":"user","content":"x"}]}`, "model"},
		{"missing messages", chat, `{"model":"m"}`, "messages"},
		{"null messages", chat, `{"model":"m","messages":null}`, "messages"},
		{"empty messages", chat, `{"model":"m","messages":[]}`, "messages"},
		{"message not an object", chat, `{"model":"m","messages":["hi"]}`, "messages[0]"},
		{"message without role", chat, `{"model":"m","messages":[{"content":"hi"}]}`, "messages[0].role"},
		{"content a number", chat, `{"model":"m","messages":[{"role":"user","content":5}]}`, "messages[0].content"},
		{"content parts malformed", chat, `{"model":"m","messages":[{"role":"user","content":[{"type":"text","text":5}]}]}`, "messages[0].content"},
		{"n zero", chat, helloChat(`,"n":0`), "n"},
		{"n 129", chat, helloChat(`,"n":129`), "n"},
		{"n a string", chat, helloChat(`,"n":"2"`), "n"},
		{"negative max_tokens", chat, helloChat(`,"max_tokens":-1`), "max_tokens"},
		{"negative max_completion_tokens", chat, helloChat(`,"max_completion_tokens":-5`), "max_completion_tokens"},
		{"huge max_tokens", chat, helloChat(`,"max_tokens":1e18`), "max_tokens"},
		{"fractional max_tokens", chat, helloChat(`,"max_tokens":1.5`), "max_tokens"},
		{"embeddings missing input", emb, `{"model":"e"}`, "input"},
		{"embeddings null input", emb, `{"model":"e","input":null}`, "input"},
		{"embeddings empty array", emb, `{"model":"e","input":[]}`, "input"},
		{"embeddings empty string", emb, `{"model":"e","input":""}`, "input"},
		{"embeddings mixed array", emb, `{"model":"e","input":["a",1]}`, "input"},
		{"embeddings empty id list", emb, `{"model":"e","input":[[1],[]]}`, "input"},
		{"embeddings number", emb, `{"model":"e","input":5}`, "input"},
		{"embeddings negative id", emb, `{"model":"e","input":[-1]}`, "input"},
		{"embeddings dimensions 0", emb, `{"model":"e","input":"x","dimensions":0}`, "dimensions"},
		{"embeddings bad encoding", emb, `{"model":"e","input":"x","encoding_format":"hex"}`, "encoding_format"},
		{"embeddings missing model", emb, `{"input":"x"}`, "model"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := newHarness(t, Config{Keys: map[string]KeyConfig{"sk-a": {RPM: 60, TPM: 600}}})
			r := h.post(tt.path, "sk-a", tt.body)
			if r.status != http.StatusBadRequest {
				t.Fatalf("status %d: %s", r.status, r.body)
			}
			e := r.apiErr(t)
			if e.Type != "invalid_request_error" || str(e.Param) != tt.param || e.Message == "" {
				t.Errorf("body %+v, want param %s", e, tt.param)
			}
			// Nothing is charged, and the headers still report the key.
			if r.header.Get("x-ratelimit-remaining-requests") != "1" || r.header.Get("x-ratelimit-remaining-tokens") != "10" {
				t.Errorf("remaining %s requests, %s tokens: want untouched 1 and 10",
					r.header.Get("x-ratelimit-remaining-requests"), r.header.Get("x-ratelimit-remaining-tokens"))
			}
			if c := h.fake.Stats().Keys["sk-a"]; c.InvalidRequests != 1 || c.Received != 1 || c.Served != 0 {
				t.Errorf("counters %+v", c)
			}
		})
	}
}

func TestModels(t *testing.T) {
	h := newHarness(t, Config{
		Keys:   map[string]KeyConfig{"sk-a": {}},
		Models: []string{"gpt-4o-mini", "text-embedding-3-small"},
	})
	r, err := h.do(t.Context(), http.MethodGet, "/v1/models", "sk-a", "")
	if err != nil || r.status != http.StatusOK {
		t.Fatalf("GET /v1/models: %v %d", err, r.status)
	}
	var list modelList
	r.decode(t, &list)
	if list.Object != "list" || len(list.Data) != 2 || list.Data[0].ID != "gpt-4o-mini" || list.Data[1].Object != "model" {
		t.Errorf("list %+v", list)
	}
	if r, _ := h.do(t.Context(), http.MethodGet, "/v1/models", "sk-x", ""); r.status != http.StatusUnauthorized {
		t.Errorf("unknown key lists models: %d", r.status)
	}
	// A model outside the list is not found, and not charged.
	r = h.chat("sk-a", `{"model":"gpt-5","messages":[{"role":"user","content":"x"}]}`)
	if r.status != http.StatusNotFound || str(r.apiErr(t).Code) != "model_not_found" || str(r.apiErr(t).Param) != "model" {
		t.Errorf("unknown model: %d %s", r.status, r.body)
	}
	if r := h.chat("sk-a", `{"model":"gpt-4o-mini","messages":[{"role":"user","content":"x"}]}`); r.status != http.StatusOK {
		t.Errorf("listed model: %d %s", r.status, r.body)
	}
	if c := h.fake.Stats().Keys["sk-a"]; c.InvalidRequests != 1 || c.Served != 1 {
		t.Errorf("counters %+v", c)
	}
}

func TestRoutes(t *testing.T) {
	h := newHarness(t, Config{Keys: map[string]KeyConfig{"sk-a": {}}})
	tests := []struct {
		method, path string
		status       int
	}{
		{http.MethodPost, "/v1/images/generations", http.StatusNotFound},
		{http.MethodGet, "/v1/completions", http.StatusMethodNotAllowed},
		{http.MethodGet, "/v1/messages/count_tokens", http.StatusMethodNotAllowed},
		{http.MethodGet, "/", http.StatusNotFound},
		{http.MethodGet, "/v1/chat/completions", http.StatusMethodNotAllowed},
		{http.MethodPost, "/v1/models", http.StatusMethodNotAllowed},
		{http.MethodGet, "/fake/reset", http.StatusMethodNotAllowed},
		{http.MethodGet, "/fake/stats", http.StatusOK},
		{http.MethodPost, "/fake/reset", http.StatusNoContent},
	}
	for _, tt := range tests {
		r, err := h.do(t.Context(), tt.method, tt.path, "sk-a", "")
		if err != nil {
			t.Fatal(err)
		}
		if r.status != tt.status {
			t.Errorf("%s %s: %d, want %d", tt.method, tt.path, r.status, tt.status)
		}
		if r.header.Get("x-request-id") == "" {
			t.Errorf("%s %s: no x-request-id", tt.method, tt.path)
		}
		if tt.status >= 400 && (r.apiErr(t).Message == "" || r.header.Get("content-type") != "application/json") {
			t.Errorf("%s %s: not an OpenAI error: %s", tt.method, tt.path, r.body)
		}
	}
}

func TestNewValidates(t *testing.T) {
	ok := map[string]KeyConfig{"k": {RPM: 1}}
	tests := []struct {
		name string
		cfg  Config
	}{
		{"no keys", Config{}},
		{"empty key", Config{Keys: map[string]KeyConfig{"": {}}}},
		{"negative RPM", Config{Keys: map[string]KeyConfig{"k": {RPM: -1}}}},
		{"huge TPM", Config{Keys: map[string]KeyConfig{"k": {TPM: 1e12}}}},
		{"negative default", Config{AcceptAnyKey: true, DefaultKey: KeyConfig{TPM: -1}}},
		{"quantum above a minute", Config{Keys: ok, Quantum: time.Hour}},
		{"negative quantum", Config{Keys: ok, Quantum: -time.Second}},
		{"error rate above 1", Config{Keys: ok, ErrorRate: 1.5}},
		{"error status 404", Config{Keys: ok, ErrorStatus: 404}},
		{"negative timeout rate", Config{Keys: ok, TimeoutRate: -0.1}},
		{"negative latency", Config{Keys: ok, Latency: -time.Second}},
		{"negative jitter", Config{Keys: ok, LatencyJitter: -time.Second}},
		{"negative chunk delay", Config{Keys: ok, ChunkDelay: -time.Second}},
		{"dimensions", Config{Keys: ok, Dimensions: -1}},
		{"completion tokens", Config{Keys: ok, CompletionTokens: -1}},
		{"default max tokens", Config{Keys: ok, DefaultMaxTokens: 1 << 30}},
		{"empty model", Config{Keys: ok, Models: []string{""}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if _, err := New(tt.cfg); err == nil {
				t.Error("New accepted it")
			}
		})
	}
	if _, err := New(Config{Keys: ok}); err != nil {
		t.Errorf("minimal config: %v", err)
	}
	if _, err := New(Config{AcceptAnyKey: true}); err != nil {
		t.Errorf("AcceptAnyKey alone: %v", err)
	}
}

func TestStart(t *testing.T) {
	fake, err := New(Config{Keys: map[string]KeyConfig{"sk-a": {RPM: 60}}})
	if err != nil {
		t.Fatal(err)
	}
	base, err := fake.Start("127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := fake.Start("127.0.0.1:0"); err == nil {
		t.Error("second Start succeeded")
	}
	req, _ := http.NewRequest(http.MethodPost, base+"/v1/chat/completions", strings.NewReader(helloChat("")))
	req.Header.Set("Authorization", "Bearer sk-a")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Errorf("status %d", resp.StatusCode)
	}
	if err := fake.Close(); err != nil {
		t.Fatal(err)
	}
	if err := fake.Close(); err != nil {
		t.Errorf("second Close: %v", err)
	}
	if _, err := http.Get(base + "/fake/stats"); err == nil {
		t.Error("still serving after Close")
	}
}
