package fakeprovider

import (
	"fmt"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"
)

// expectHeaders checks headers of r; "" wants the header absent.
func (r reply) expectHeaders(t *testing.T, want map[string]string) {
	t.Helper()
	for k, v := range want {
		if got := r.header.Get(k); got != v {
			t.Errorf("header %s = %q, want %q", k, got, v)
		}
	}
}

func TestWindowsBoundaryOverHTTP(t *testing.T) {
	// 600 RPM enforced as 10 per second and 600 per minute.
	h := newHarness(t, Config{
		Enforce: EnforceWindows,
		Windows: []Window{{Span: time.Second}, {Span: time.Minute}},
		Keys:    map[string]KeyConfig{"sk-a": {RPM: 600}},
	})
	for i := range 10 {
		if i > 0 {
			h.clock.Advance(100 * time.Millisecond)
		}
		r := h.chat("sk-a", helloChat(""))
		if r.status != http.StatusOK {
			t.Fatalf("call %d at +%dms: %d %s", i, 100*i, r.status, r.body)
		}
		// The headers count the minute, the longest window.
		r.expectHeaders(t, map[string]string{
			"x-ratelimit-limit-requests":     "600",
			"x-ratelimit-remaining-requests": itoa(int64(599 - i)),
			"x-ratelimit-reset-requests":     "1m0s",
		})
	}
	h.clock.Advance(50 * time.Millisecond) // +950ms: the 11th in the second
	r := h.chat("sk-a", helloChat(""))
	if r.status != http.StatusTooManyRequests || r.apiErr(t).Type != "requests" {
		t.Fatalf("11th call in a second: %d %s", r.status, r.body)
	}
	r.expectHeaders(t, map[string]string{
		"retry-after-ms":                 "50", // until +0 leaves the second
		"retry-after":                    "1",
		"x-ratelimit-remaining-requests": "590",
		"x-ratelimit-reset-requests":     "59.95s", // until +900ms leaves the minute
	})
	h.clock.Advance(50*time.Millisecond - time.Nanosecond)
	if r := h.chat("sk-a", helloChat("")); r.status != http.StatusTooManyRequests {
		t.Fatalf("a nanosecond before the oldest leaves: %d", r.status)
	}
	h.clock.Advance(time.Nanosecond)
	if r := h.chat("sk-a", helloChat("")); r.status != http.StatusOK {
		t.Fatalf("exactly when the oldest leaves: %d %s", r.status, r.body)
	}
	c := h.fake.Stats().Keys["sk-a"]
	if c.Served != 11 || c.RateLimitedRequests != 2 || c.MaxRequests1s != 10 || c.MaxRequests60s != 11 || c.Finished() != c.Received {
		t.Errorf("counters %+v", c)
	}
}

func TestWindowsRetryAfterModes(t *testing.T) {
	// Two requests per minute, in the default one-minute window, admitted
	// at +0 and +10s; the third, at +20s, fits once +0 leaves (+60s) and
	// the window is empty once +10s leaves (+70s).
	for _, tt := range []struct {
		mode string
		wait time.Duration
	}{{RetryAfterFit, 40 * time.Second}, {"", 40 * time.Second}, {RetryAfterReset, 50 * time.Second}} {
		for _, dialect := range []string{"openai", "anthropic", "gemini"} {
			t.Run(tt.mode+"/"+dialect, func(t *testing.T) {
				cfg := Config{Enforce: EnforceWindows, RetryAfter: tt.mode, Keys: map[string]KeyConfig{"sk-a": {RPM: 2}}}
				if dialect == "gemini" {
					cfg.RateLimitBody = RateLimitBodyGemini
				}
				h := newHarness(t, cfg)
				call := func() reply {
					if dialect == "anthropic" {
						return h.send("/v1/messages", anthropicHeaders("sk-a"), `{"model":"m","max_tokens":4,"messages":[{"role":"user","content":"hello world!"}]}`)
					}
					return h.chat("sk-a", helloChat(""))
				}
				call()
				h.clock.Advance(10 * time.Second)
				call()
				h.clock.Advance(10 * time.Second)
				r := call()
				if r.status != http.StatusTooManyRequests {
					t.Fatalf("third call: %d %s", r.status, r.body)
				}
				secs := itoa(int64(tt.wait / time.Second))
				switch dialect {
				case "openai":
					r.expectHeaders(t, map[string]string{"retry-after": secs, "retry-after-ms": itoa(tt.wait.Milliseconds())})
				case "anthropic":
					r.expectHeaders(t, map[string]string{"retry-after": secs, "retry-after-ms": ""})
				case "gemini":
					if !strings.Contains(string(r.body), `"retryDelay":"`+secs+`s"`) {
						t.Errorf("Gemini body without retryDelay %ss: %s", secs, r.body)
					}
				}
				// A fit is exact; a reset hint is later than the fit, by
				// design.
				h.clock.Advance(tt.wait - time.Nanosecond)
				if r := call(); tt.mode != RetryAfterReset && r.status != http.StatusTooManyRequests {
					t.Errorf("just before the hint: %d", r.status)
				}
				h.clock.Advance(time.Nanosecond)
				if r := call(); r.status != http.StatusOK {
					t.Errorf("after the hint: %d %s", r.status, r.body)
				}
			})
		}
	}
}

func TestWindowsSettleOverHTTP(t *testing.T) {
	// 100 tokens a minute. A call reserves its prompt and max_tokens (9+50)
	// and, once finished, counts what it used (9+16).
	h := newHarness(t, Config{Enforce: EnforceWindows, Keys: map[string]KeyConfig{"sk-a": {TPM: 100}}})
	if r := h.chat("sk-a", helloChat(`,"max_tokens":50`)); r.status != http.StatusOK {
		t.Fatalf("first: %d %s", r.status, r.body)
	}
	// 25 counted: a reservation of 69 fits (it would not next to the 59
	// charged at admission), and the headers count it while it runs.
	r := h.chat("sk-a", helloChat(`,"max_tokens":60`))
	if r.status != http.StatusOK {
		t.Fatalf("second: %d %s", r.status, r.body)
	}
	r.expectHeaders(t, map[string]string{"x-ratelimit-limit-tokens": "100", "x-ratelimit-remaining-tokens": "6"})
	// 25+25 counted now; an injected error settles to nothing.
	if err := h.fake.SetErrorRate(1); err != nil {
		t.Fatal(err)
	}
	if r := h.chat("sk-a", helloChat(`,"max_tokens":41`)); r.status != http.StatusInternalServerError {
		t.Fatalf("injected error: %d %s", r.status, r.body)
	}
	if err := h.fake.SetErrorRate(0); err != nil {
		t.Fatal(err)
	}
	r = h.chat("sk-a", helloChat(`,"max_tokens":41`)) // 50 reserved: exactly what is left
	if r.status != http.StatusOK {
		t.Fatalf("after the error: %d %s", r.status, r.body)
	}
	r.expectHeaders(t, map[string]string{"x-ratelimit-remaining-tokens": "0"})
	c := h.fake.Stats().Keys["sk-a"]
	if c.Served != 3 || c.InjectedErrors != 1 || c.Finished() != c.Received || c.Refused() != 0 {
		t.Errorf("counters %+v", c)
	}
}

func TestWindowsTooLargeOverHTTP(t *testing.T) {
	const chat100 = `,"max_tokens":100` // 109 tokens
	tests := []struct {
		name    string
		cfg     Config
		send    func(h *harness) reply
		check   func(t *testing.T, r reply)
		headers map[string]string
	}{
		{
			name: "openai",
			cfg:  Config{Keys: map[string]KeyConfig{"sk-a": {TPM: 60, Enforce: EnforceWindows}}},
			send: func(h *harness) reply { return h.chat("sk-a", helloChat(chat100)) },
			check: func(t *testing.T, r reply) {
				e := r.apiErr(t)
				want := "Request too large for m in organization org-fake on tokens per min (TPM): Limit 60, Requested 109."
				if e.Type != "tokens" || str(e.Code) != codeRateLimit || !strings.HasPrefix(e.Message, want) {
					t.Errorf("error %+v, want type tokens and a message starting %q", e, want)
				}
			},
			headers: map[string]string{"retry-after": "", "retry-after-ms": "", "x-ratelimit-limit-tokens": "60", "x-ratelimit-remaining-tokens": "60"},
		},
		{
			name: "another consumer's share makes it too large",
			cfg:  Config{Enforce: EnforceWindows, Keys: map[string]KeyConfig{"sk-a": {TPM: 200, OtherUse: 0.5}}},
			send: func(h *harness) reply { return h.chat("sk-a", helloChat(chat100)) },
			check: func(t *testing.T, r reply) {
				if e := r.apiErr(t); !strings.Contains(e.Message, "Limit 100, Requested 109.") {
					t.Errorf("message %q, want the limit the key really has", e.Message)
				}
			},
			headers: map[string]string{"retry-after": "", "x-ratelimit-limit-tokens": "200", "x-ratelimit-remaining-tokens": "100"},
		},
		{
			name: "anthropic",
			cfg:  Config{Enforce: EnforceWindows, Keys: map[string]KeyConfig{"sk-a": {TPM: 60}}},
			send: func(h *harness) reply {
				return h.send("/v1/messages", anthropicHeaders("sk-a"), `{"model":"m","max_tokens":100,"messages":[{"role":"user","content":"hello world!"}]}`)
			},
			check: func(t *testing.T, r reply) {
				if e := r.anthropicErr(t); e.Type != "rate_limit_error" || !strings.Contains(e.Message, "asks for 109") {
					t.Errorf("error %+v", e)
				}
			},
			headers: map[string]string{"retry-after": "", "anthropic-ratelimit-tokens-limit": "60"},
		},
		{
			name: "azure",
			cfg:  Config{Enforce: EnforceWindows, Keys: map[string]KeyConfig{"sk-a": {TPM: 60}}},
			send: func(h *harness) reply {
				return h.send("/openai/deployments/m/chat/completions?api-version=2024-06-01", map[string]string{"api-key": "sk-a"}, helloChat(chat100))
			},
			check: func(t *testing.T, r reply) {
				var b azureErrorBody
				r.decode(t, &b)
				if b.Error.Code != "429" || !strings.Contains(b.Error.Message, "asks for 109 tokens, more than the limit of 60") {
					t.Errorf("error %+v", b)
				}
			},
			headers: map[string]string{"retry-after": "", "retry-after-ms": ""},
		},
		{
			name: "gemini",
			cfg:  Config{Enforce: EnforceWindows, RateLimitBody: RateLimitBodyGemini, Keys: map[string]KeyConfig{"sk-a": {TPM: 60}}},
			send: func(h *harness) reply { return h.chat("sk-a", helloChat(chat100)) },
			check: func(t *testing.T, r reply) {
				if !strings.Contains(string(r.body), "RESOURCE_EXHAUSTED") || strings.Contains(string(r.body), "RetryInfo") {
					t.Errorf("want RESOURCE_EXHAUSTED without RetryInfo: %s", r.body)
				}
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := newHarness(t, tt.cfg)
			for i := range 2 { // at once, and after any wait alike
				r := tt.send(h)
				if r.status != http.StatusTooManyRequests {
					t.Fatalf("call %d: %d %s", i, r.status, r.body)
				}
				tt.check(t, r)
				r.expectHeaders(t, tt.headers)
				h.clock.Advance(time.Hour)
			}
			c := h.fake.Stats().Keys["sk-a"]
			if c.Received != 2 || c.RateLimitedTokens != 2 || c.Finished() != 2 || c.MaxRequests60s != 0 {
				t.Errorf("counters %+v", c)
			}
			// Nothing was counted: a call that fits finds the window empty.
			if r := h.chat("sk-a", helloChat(`,"max_tokens":1`)); r.status != http.StatusOK {
				t.Errorf("a small call after: %d %s", r.status, r.body)
			}
		})
	}
}

func TestOtherUse(t *testing.T) {
	// 600 RPM of which another consumer uses a fifth: 8 a second rather
	// than 10, while the headers still say 600.
	tests := []struct {
		name string
		cfg  Config
		wait string // retry-after-ms of the refusal
	}{
		{"windows", Config{Enforce: EnforceWindows, Windows: []Window{{Span: time.Second}},
			Keys: map[string]KeyConfig{"sk-a": {RPM: 600, OtherUse: 0.2}}}, "1000"},
		// A bucket of 8 refilled at 480 a minute: one every 125ms.
		{"bucket", Config{Keys: map[string]KeyConfig{"sk-a": {RPM: 600, OtherUse: 0.2}}}, "125"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := newHarness(t, tt.cfg)
			for i := range 8 {
				r := h.chat("sk-a", helloChat(""))
				if r.status != http.StatusOK {
					t.Fatalf("call %d: %d %s", i, r.status, r.body)
				}
				r.expectHeaders(t, map[string]string{"x-ratelimit-limit-requests": "600", "x-ratelimit-remaining-requests": itoa(int64(7 - i))})
			}
			r := h.chat("sk-a", helloChat(""))
			if r.status != http.StatusTooManyRequests {
				t.Fatalf("9th call: %d %s", r.status, r.body)
			}
			r.expectHeaders(t, map[string]string{"retry-after-ms": tt.wait, "x-ratelimit-limit-requests": "600", "x-ratelimit-remaining-requests": "0"})
			if e := r.apiErr(t); !strings.Contains(e.Message, "Limit 600,") {
				t.Errorf("message %q names another limit than the configured", e.Message)
			}
			// Anthropic's headers too report the configured limit.
			a := h.send("/v1/messages", anthropicHeaders("sk-a"), `{"model":"m","max_tokens":4,"messages":[{"role":"user","content":"hi"}]}`)
			a.expectHeaders(t, map[string]string{"anthropic-ratelimit-requests-limit": "600", "anthropic-ratelimit-requests-remaining": "0"})
		})
	}
}

func TestShareRounding(t *testing.T) {
	for _, tt := range []struct {
		n     int64
		other float64
		want  int64
	}{
		{10, 0.9, 1}, // 10*(1-0.9) is 0.9999999999999998 in float64
		{10, 0.7, 3},
		{600, 0.2, 480},
		{7, 0.5, 3},
		{maxWindowLimit, 0.000001, maxWindowLimit - maxWindowLimit/otherUseScale},
		{5, 0, 5},
	} {
		ppm := int64(tt.other*otherUseScale + 0.5)
		if got := share(tt.n, ppm); got != tt.want {
			t.Errorf("share(%d, %v) = %d, want %d", tt.n, tt.other, got, tt.want)
		}
	}
	for _, tt := range []struct {
		perMin int64
		span   time.Duration
		up     bool
		want   int64
	}{
		{600, time.Second, true, 10},
		{601, time.Second, true, 11},
		{601, time.Second, false, 10},
		{30, time.Second, true, 1},
		{30, time.Second, false, 0},
		{200_000, 100 * time.Millisecond, false, 333},
		{maxLimit, maxSpan, true, maxLimit * 24 * 60},
	} {
		if got := perSpan(tt.perMin, tt.span, tt.up); got != tt.want {
			t.Errorf("perSpan(%d, %v, %v) = %d, want %d", tt.perMin, tt.span, tt.up, got, tt.want)
		}
	}
}

func TestWindowsExplicitLimits(t *testing.T) {
	// A second of requests only on top of a minute of both; a key without
	// RPM reports the longest window's request limit per minute.
	h := newHarness(t, Config{Keys: map[string]KeyConfig{"sk-a": {
		TPM: 6000, Enforce: EnforceWindows,
		Windows: []Window{{Span: time.Second, Requests: 3, Tokens: NoLimit}, {Span: time.Minute, Requests: 100}},
	}}})
	for i := range 3 {
		r := h.chat("sk-a", helloChat(`,"max_tokens":1000`)) // more than 6000/60 tokens: no 1s token limit
		if r.status != http.StatusOK {
			t.Fatalf("call %d: %d %s", i, r.status, r.body)
		}
		r.expectHeaders(t, map[string]string{"x-ratelimit-limit-requests": "100", "x-ratelimit-remaining-requests": itoa(int64(99 - i)),
			"x-ratelimit-limit-tokens": "6000"})
	}
	if r := h.chat("sk-a", helloChat("")); r.status != http.StatusTooManyRequests || r.header.Get("retry-after-ms") != "1000" {
		t.Errorf("4th in a second: %d, retry-after-ms %s", r.status, r.header.Get("retry-after-ms"))
	}
}

func TestEnforcementValidates(t *testing.T) {
	ok := map[string]KeyConfig{"k": {RPM: 60, TPM: 6000}}
	tests := []struct {
		name string
		cfg  Config
		want string // in the error
	}{
		{"unknown model", Config{Keys: ok, Enforce: "leaky"}, `config.Enforce "leaky"`},
		{"unknown retry", Config{Keys: ok, RetryAfter: "soon"}, `config.RetryAfter "soon"`},
		{"zero span", Config{Keys: ok, Windows: []Window{{Span: 0}}}, "config.Windows[0]: span 0s outside"},
		{"negative tokens", Config{Keys: ok, Windows: []Window{{Span: time.Second, Tokens: -2}}}, "config.Windows[0]: tokens -2 outside"},
		{"count span", Config{Keys: ok, CountSpans: []time.Duration{48 * time.Hour}}, "config.CountSpans[0] 48h0m0s outside"},
		{"key model", Config{Keys: map[string]KeyConfig{"k": {Enforce: "x"}}}, `config.Keys[***]: enforce "x"`},
		{"other use 1", Config{Keys: map[string]KeyConfig{"k": {RPM: 60, OtherUse: 1}}}, "other_use 1 outside [0, 1)"},
		{"negative other use", Config{AcceptAnyKey: true, DefaultKey: KeyConfig{OtherUse: -0.1}}, "config.DefaultKey: other_use -0.1 outside"},
		{"windows on a bucket key", Config{Keys: map[string]KeyConfig{"k": {RPM: 60, Windows: []Window{{Span: time.Second}}}}}, "windows set, but the key enforces bucket"},
		{"retry on a bucket key", Config{Keys: map[string]KeyConfig{"k": {RPM: 60, RetryAfter: RetryAfterReset}}}, "retry_after set, but the key enforces bucket"},
		{"no whole token in a window", Config{Enforce: EnforceWindows, Windows: []Window{{Span: time.Second}}, Keys: map[string]KeyConfig{"k": {TPM: 30}}},
			"config.Windows[0] (1s): tpm 30 is no whole token per 1s"},
		{"other use leaves nothing in a window", Config{Enforce: EnforceWindows, Windows: []Window{{Span: time.Second}}, Keys: map[string]KeyConfig{"k": {RPM: 60, OtherUse: 0.5}}},
			"config.Windows[0] (1s): other_use 0.5 leaves none of its requests"},
		{"other use leaves nothing of a bucket", Config{Keys: map[string]KeyConfig{"k": {RPM: 1, OtherUse: 0.5}}}, "other_use 0.5 leaves none of rpm 1"},
		{"key's own windows", Config{Keys: map[string]KeyConfig{"k": {Enforce: EnforceWindows, TPM: 1, Windows: []Window{{Span: time.Second}}}}}, "windows[0] (1s): tpm 1 is no whole token"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := New(tt.cfg)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("New: %v, want an error containing %q", err, tt.want)
			}
		})
	}
	// Several problems are told at once.
	_, err := New(Config{Keys: map[string]KeyConfig{"k": {RPM: -1, OtherUse: 2, Enforce: "x"}}})
	if err == nil || !strings.Contains(err.Error(), "rpm -1") || !strings.Contains(err.Error(), "other_use 2") || !strings.Contains(err.Error(), `enforce "x"`) {
		t.Errorf("New: %v, want every problem named", err)
	}
	// SetKey checks against the Config's windows.
	fake, err := New(Config{Enforce: EnforceWindows, Windows: []Window{{Span: time.Second}}, Keys: ok})
	if err != nil {
		t.Fatal(err)
	}
	if err := fake.SetKey("k", KeyConfig{TPM: 30}); err == nil || !strings.Contains(err.Error(), "no whole token per 1s") {
		t.Errorf("SetKey: %v", err)
	}
	if err := fake.SetKey("k", KeyConfig{RPM: 600, OtherUse: 0.25}); err != nil {
		t.Errorf("SetKey: %v", err)
	}
}

func TestWindowsSetKeyInFlight(t *testing.T) {
	clock := newManualClock()
	l := newLimiter(Config{Clock: clock.Now, Enforce: EnforceWindows, Keys: map[string]KeyConfig{"k": {TPM: 100}}}.withDefaults())
	tokensLeft := func() int64 { return l.peek("k").tokens.remaining }
	a := l.admit("k", 80, time.Time{})
	if !a.ok {
		t.Fatal("refused")
	}
	// Another consumer takes half: the window's 80 already exceed the 50
	// left, and the call in flight still settles into it.
	l.set("k", KeyConfig{TPM: 100, OtherUse: 0.5})
	if got := tokensLeft(); got != 0 {
		t.Errorf("after OtherUse 0.5, %d left, want 0", got)
	}
	l.settle(a.ticket, 20)
	if got := tokensLeft(); got != 30 {
		t.Errorf("after settling to 20, %d left, want 50-20 = 30", got)
	}
	// To buckets and back: each model starts afresh, and a call admitted
	// by the other settles into nothing.
	b := l.admit("k", 30, time.Time{})
	l.set("k", KeyConfig{TPM: 6000, Enforce: EnforceBucket}) // 100 a second
	c := l.admit("k", 60, time.Time{})
	l.settle(b.ticket, 0)
	if got := tokensLeft(); got != 40 {
		t.Errorf("bucket after a windows ticket settled: %d left, want 40", got)
	}
	l.set("k", KeyConfig{TPM: 100})
	l.settle(c.ticket, 0)
	if got := tokensLeft(); got != 100 {
		t.Errorf("windows after a bucket ticket settled: %d left, want 100", got)
	}
	// A key removed and added again has a new log: an old ticket does not
	// settle into it.
	d := l.admit("k", 50, time.Time{})
	l.remove("k")
	l.set("k", KeyConfig{TPM: 100})
	e := l.admit("k", 50, time.Time{})
	l.settle(d.ticket, 0)
	if got := tokensLeft(); got != 50 {
		t.Errorf("after a stale ticket: %d left, want 50", got)
	}
	l.settle(e.ticket, 10)
	if got := tokensLeft(); got != 90 {
		t.Errorf("after the live ticket: %d left, want 90", got)
	}
	// And after a reset, nothing settles into the fresh windows.
	f := l.admit("k", 50, time.Time{})
	l.reset()
	l.admit("k", 50, time.Time{})
	l.settle(f.ticket, 0)
	if got := tokensLeft(); got != 50 {
		t.Errorf("after a ticket from before a reset: %d left, want 50", got)
	}
}

func TestEnforcementConcurrent(t *testing.T) {
	// Calls in every dialect while the keys change model, windows and
	// OtherUse under them: run with -race. Whatever the interleaving, every
	// call ends in exactly one outcome.
	h := newHarness(t, Config{
		Enforce: EnforceWindows, Windows: []Window{{Span: time.Second}, {Span: time.Minute}},
		Keys: map[string]KeyConfig{"sk-a": {RPM: 600, TPM: 60_000}, "sk-b": {RPM: 6000, TPM: 600_000}},
	})
	configs := []KeyConfig{
		{RPM: 600, TPM: 60_000},
		{RPM: 600, TPM: 60_000, OtherUse: 0.3},
		{RPM: 600, TPM: 60_000, Enforce: EnforceBucket},
		{RPM: 600, TPM: 60_000, RetryAfter: RetryAfterReset, Windows: []Window{{Span: 100 * time.Millisecond}}},
		{RPM: 600, TPM: 1000, OtherUse: 0.5},
	}
	var wg sync.WaitGroup
	stop := make(chan struct{})
	wg.Go(func() {
		for i := 0; ; i++ {
			select {
			case <-stop:
				return
			default:
			}
			if err := h.fake.SetKey([]string{"sk-a", "sk-b"}[i%2], configs[i%len(configs)]); err != nil {
				t.Error(err)
				return
			}
			h.clock.Advance(7 * time.Millisecond)
		}
	})
	const workers, calls = 16, 30
	var callers sync.WaitGroup
	for w := range workers {
		callers.Go(func() {
			for i := range calls {
				key := []string{"sk-a", "sk-b"}[(w+i)%2]
				var r reply
				switch i % 3 {
				case 0:
					r = h.chat(key, helloChat(fmt.Sprintf(`,"max_tokens":%d`, 10*i)))
				case 1:
					r = h.send("/v1/messages", anthropicHeaders(key), `{"model":"m","max_tokens":20,"messages":[{"role":"user","content":"hi"}]}`)
				default:
					r = h.post("/v1/embeddings", key, `{"model":"m","input":"hello"}`)
				}
				if r.status != http.StatusOK && r.status != http.StatusTooManyRequests {
					t.Errorf("status %d: %s", r.status, r.body)
				}
			}
		})
	}
	callers.Wait()
	close(stop)
	wg.Wait()
	st := h.fake.Stats()
	if st.Total.Received != workers*calls || st.Total.Finished() != st.Total.Received {
		t.Errorf("received %d, finished %d, want %d", st.Total.Received, st.Total.Finished(), workers*calls)
	}
	for k, c := range st.Keys {
		if c.Served+c.Refused() != c.Received {
			t.Errorf("%s: served %d + refused %d != received %d", k, c.Served, c.Refused(), c.Received)
		}
	}
}
