package fakeprovider

import (
	"bufio"
	"context"
	"encoding/json"
	"net/http"
	"strings"
	"testing"
	"time"
)

// sseEvent is one event of an Anthropic stream.
type sseEvent struct {
	name string
	data string
}

// anthropicEvents splits a stream in Anthropic's framing into its events,
// failing on anything else: every event is exactly "event: <name>\ndata:
// <json>\n\n", and the data's type is the event's name.
func anthropicEvents(t *testing.T, body string) []sseEvent {
	t.Helper()
	var events []sseEvent
	for _, ev := range strings.SplitAfter(body, "\n\n") {
		if ev == "" {
			continue
		}
		lines := strings.Split(strings.TrimSuffix(ev, "\n\n"), "\n")
		if !strings.HasSuffix(ev, "\n\n") || len(lines) != 2 ||
			!strings.HasPrefix(lines[0], "event: ") || !strings.HasPrefix(lines[1], "data: ") {
			t.Fatalf("malformed event %q", ev)
		}
		e := sseEvent{name: strings.TrimPrefix(lines[0], "event: "), data: strings.TrimPrefix(lines[1], "data: ")}
		var typed struct{ Type string }
		if err := json.Unmarshal([]byte(e.data), &typed); err != nil || typed.Type != e.name {
			t.Fatalf("event %s: data %s (%v) does not repeat its type", e.name, e.data, err)
		}
		events = append(events, e)
	}
	return events
}

func TestMessagesStream(t *testing.T) {
	tests := []struct {
		name   string
		extra  string
		prompt int64
		out    int64
		stop   string
	}{
		{"natural end", `,"max_tokens":100`, helloPrompt, 16, "end_turn"},
		{"cut by max_tokens", `,"max_tokens":5`, helloPrompt, 5, "max_tokens"},
		{"one token", `,"max_tokens":1`, helloPrompt, 1, "max_tokens"},
		{"system prompt", `,"max_tokens":3,"system":"be brief"`, helloPrompt + 3 + 2, 3, "max_tokens"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := newHarness(t, Config{Keys: map[string]KeyConfig{"ant-1": {RPM: 600, TPM: 60_000}}})
			r := h.send("/v1/messages", anthropicHeaders("ant-1"), helloMessages(`,"stream":true`+tt.extra))
			if r.status != http.StatusOK {
				t.Fatalf("status %d: %s", r.status, r.body)
			}
			if ct := r.header.Get("content-type"); !strings.HasPrefix(ct, "text/event-stream") {
				t.Errorf("content-type %q", ct)
			}
			var maxTokens struct {
				MaxTokens int64 `json:"max_tokens"`
			}
			if err := json.Unmarshal([]byte(helloMessages(tt.extra)), &maxTokens); err != nil {
				t.Fatal(err)
			}
			charge := tt.prompt + maxTokens.MaxTokens
			for k, v := range map[string]string{
				"anthropic-ratelimit-requests-remaining": "9",
				"anthropic-ratelimit-tokens-remaining":   itoa(1000 - charge), // as admitted
				"Date":                                   h.clock.Now().Format(http.TimeFormat),
			} {
				if got := r.header.Get(k); got != v {
					t.Errorf("header %s = %q, want %q", k, got, v)
				}
			}
			if r.header.Get("request-id") == "" || r.header.Get("x-request-id") == "" {
				t.Error("no request id")
			}
			r.noHeaders(t, "x-ratelimit-remaining-tokens", "retry-after")

			events := anthropicEvents(t, string(r.body))
			var names []string
			for _, e := range events {
				names = append(names, e.name)
			}
			want := []string{"message_start", "content_block_start", "ping"}
			for range tt.out {
				want = append(want, "content_block_delta")
			}
			want = append(want, "content_block_stop", "message_delta", "message_stop")
			if strings.Join(names, " ") != strings.Join(want, " ") {
				t.Fatalf("events %v\nwant %v", names, want)
			}

			var start struct {
				Message struct {
					ID, Type, Role, Model string
					Content               json.RawMessage
					StopReason            json.RawMessage `json:"stop_reason"`
					StopSequence          json.RawMessage `json:"stop_sequence"`
					Usage                 anthropicUsage
				}
			}
			if err := json.Unmarshal([]byte(events[0].data), &start); err != nil {
				t.Fatal(err)
			}
			m := start.Message
			if !strings.HasPrefix(m.ID, "msg_") || m.Type != "message" || m.Role != "assistant" || m.Model != "claude" ||
				string(m.Content) != "[]" || string(m.StopReason) != "null" || string(m.StopSequence) != "null" ||
				m.Usage != (anthropicUsage{InputTokens: tt.prompt, OutputTokens: 1}) {
				t.Errorf("message_start %s", events[0].data)
			}
			if events[1].data != `{"type":"content_block_start","index":0,"content_block":{"type":"text","text":""}}` {
				t.Errorf("content_block_start %s", events[1].data)
			}
			var text strings.Builder
			for _, e := range events[3 : 3+tt.out] {
				var d struct {
					Index *int
					Delta struct{ Type, Text string }
				}
				if err := json.Unmarshal([]byte(e.data), &d); err != nil || d.Index == nil || *d.Index != 0 || d.Delta.Type != "text_delta" {
					t.Errorf("delta %s", e.data)
				}
				text.WriteString(d.Delta.Text)
			}
			if got := text.String(); got != completionText(tt.out) {
				t.Errorf("text %q, want %q", got, completionText(tt.out))
			}
			n := len(events)
			if events[n-3].data != `{"type":"content_block_stop","index":0}` || events[n-1].data != `{"type":"message_stop"}` {
				t.Errorf("closing events %s, %s", events[n-3].data, events[n-1].data)
			}
			if got, want := events[n-2].data, `{"type":"message_delta","delta":{"stop_reason":"`+tt.stop+`","stop_sequence":null},"usage":{"output_tokens":`+itoa(tt.out)+`}}`; got != want {
				t.Errorf("message_delta %s\nwant %s", got, want)
			}

			c := h.fake.Stats().Keys["ant-1"]
			if c.Served != 1 || c.PromptTokens != tt.prompt || c.CompletionTokens != tt.out || c.TotalTokens != tt.prompt+tt.out ||
				c.StreamAborts != 0 || c.MaxTokens1s != charge {
				t.Errorf("counters %+v", c)
			}
			// Settled on the usage: what was reserved beyond it is back.
			r = h.send("/v1/messages", anthropicHeaders("ant-1"), helloMessages(`,"max_tokens":1`))
			if got, want := r.header.Get("anthropic-ratelimit-tokens-remaining"), itoa(1000-(tt.prompt+tt.out)-(helloPrompt+1)); got != want {
				t.Errorf("after the stream and a 10-token call, %s tokens left, want %s", got, want)
			}
		})
	}
}

func TestMessagesStreamClientGoesAway(t *testing.T) {
	// 600,000 TPM over 1s: 10,000 tokens. The first delta comes at once,
	// the next after an hour: the client leaves in between, whatever the
	// speed of the machine.
	h := newHarness(t, Config{
		Keys:             map[string]KeyConfig{"k": {TPM: 600_000}},
		CompletionTokens: 1000,
		ChunkDelay:       time.Hour,
	})
	ctx, cancel := context.WithCancel(t.Context())
	req, _ := http.NewRequestWithContext(ctx, http.MethodPost, h.srv.URL+"/v1/messages",
		strings.NewReader(helloMessages(`,"stream":true,"max_tokens":1000`)))
	for k, v := range anthropicHeaders("k") {
		req.Header.Set(k, v)
	}
	resp, err := h.srv.Client().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	if got := resp.Header.Get("anthropic-ratelimit-tokens-remaining"); got != itoa(10_000-helloPrompt-1000) {
		t.Errorf("remaining tokens %s, want %d", got, 10_000-helloPrompt-1000)
	}
	br := bufio.NewReader(resp.Body)
	for {
		line, err := br.ReadString('\n')
		if err != nil {
			t.Fatalf("before the first delta: %v", err)
		}
		if strings.HasPrefix(line, "data: ") && strings.Contains(line, `"text_delta"`) {
			break
		}
	}
	cancel()
	resp.Body.Close()

	waitFor(t, "the abort to be counted", func() bool { return h.fake.Stats().Total.StreamAborts == 1 })
	c := h.fake.Stats().Keys["k"]
	if c.Served != 0 || c.Received != 1 || c.Finished() != 1 || c.TotalTokens != 0 {
		t.Errorf("counters %+v", c)
	}
	// Settled against what was sent, the prompt and one token: the other
	// 999 reserved for the reply are back.
	r := h.send("/v1/messages", anthropicHeaders("k"), helloMessages(`,"max_tokens":1`))
	if got, want := r.header.Get("anthropic-ratelimit-tokens-remaining"), itoa(10_000-(helloPrompt+1)-(helloPrompt+1)); got != want {
		t.Errorf("after the aborted stream and a 10-token call %s tokens left, want %s", got, want)
	}
}

// ChunkDelay paces the deltas. Only a lower bound is checked: no test
// depends on how fast the machine is.
func TestMessagesStreamChunkDelay(t *testing.T) {
	const delay = 20 * time.Millisecond
	h := newHarness(t, Config{Keys: map[string]KeyConfig{"k": {}}, ChunkDelay: delay})
	start := time.Now()
	r := h.send("/v1/messages", anthropicHeaders("k"), helloMessages(`,"stream":true,"max_tokens":4`))
	if took := time.Since(start); took < 3*delay {
		t.Errorf("4 deltas in %v, want at least 3 delays of %v", took, delay)
	}
	if n := strings.Count(string(r.body), "event: content_block_delta\n"); n != 4 {
		t.Errorf("%d deltas", n)
	}
}

// A streaming request that is refused gets the same JSON error as any
// other: the stream never starts.
func TestMessagesStreamRefused(t *testing.T) {
	tests := []struct {
		name       string
		cfg        Config
		before     int
		body       string
		status     int
		typ        string
		retryAfter string
		counter    func(Counters) int64
	}{
		{"rate limited", Config{Keys: map[string]KeyConfig{"k": {RPM: 6}}}, 1, helloMessages(`,"stream":true,"max_tokens":1`),
			http.StatusTooManyRequests, "rate_limit_error", "10", func(c Counters) int64 { return c.RateLimitedRequests }},
		{"invalid", Config{Keys: map[string]KeyConfig{"k": {}}}, 0, helloMessages(`,"stream":true`),
			http.StatusBadRequest, "invalid_request_error", "", func(c Counters) int64 { return c.InvalidRequests }},
		{"overloaded", Config{Keys: map[string]KeyConfig{"k": {}}, OverloadRate: 1}, 0, helloMessages(`,"stream":true,"max_tokens":1`),
			statusOverloaded, "overloaded_error", "", func(c Counters) int64 { return c.Overloaded }},
		{"credit balance", Config{Keys: map[string]KeyConfig{"k": {InsufficientQuota: true}}}, 0, helloMessages(`,"stream":true,"max_tokens":1`),
			http.StatusBadRequest, "invalid_request_error", "", func(c Counters) int64 { return c.InsufficientQuota }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := newHarness(t, tt.cfg)
			for range tt.before {
				if r := h.send("/v1/messages", anthropicHeaders("k"), tt.body); r.status != http.StatusOK {
					t.Fatalf("before: %d %s", r.status, r.body)
				}
			}
			r := h.send("/v1/messages", anthropicHeaders("k"), tt.body)
			if r.status != tt.status || !strings.HasPrefix(r.header.Get("content-type"), "application/json") {
				t.Fatalf("status %d %s: %s", r.status, r.header.Get("content-type"), r.body)
			}
			if e := r.anthropicErr(t); e.Type != tt.typ {
				t.Errorf("error %+v, want type %s", e, tt.typ)
			}
			if got := r.header.Get("retry-after"); got != tt.retryAfter {
				t.Errorf("retry-after %q, want %q", got, tt.retryAfter)
			}
			if c := h.fake.Stats().Keys["k"]; tt.counter(c) != 1 || c.StreamAborts != 0 || c.Finished() != c.Received {
				t.Errorf("counters %+v", c)
			}
		})
	}
}
