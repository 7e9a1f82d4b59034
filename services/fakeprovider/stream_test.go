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

// sseEvents splits a server-sent events body into its data payloads,
// failing on anything outside OpenAI's framing.
func sseEvents(t *testing.T, body string) []string {
	t.Helper()
	if !strings.HasSuffix(body, "data: [DONE]\n\n") {
		t.Fatalf("stream does not end with data: [DONE]: %q", body)
	}
	var events []string
	for _, ev := range strings.SplitAfter(body, "\n\n") {
		if ev == "" {
			continue
		}
		if !strings.HasPrefix(ev, "data: ") || !strings.HasSuffix(ev, "\n\n") || strings.Count(ev, "\n") != 2 {
			t.Fatalf("malformed event %q", ev)
		}
		events = append(events, strings.TrimSuffix(strings.TrimPrefix(ev, "data: "), "\n\n"))
	}
	return events
}

func TestStream(t *testing.T) {
	tests := []struct {
		name         string
		extra        string
		n            int
		tokens       int // per choice
		finish       string
		includeUsage bool
	}{
		{"plain", "", 1, 16, "stop", false},
		{"include_usage", `,"stream_options":{"include_usage":true}`, 1, 16, "stop", true},
		{"include_usage false", `,"stream_options":{"include_usage":false}`, 1, 16, "stop", false},
		{"max_tokens", `,"max_tokens":3,"stream_options":{"include_usage":true}`, 1, 3, "length", true},
		{"two choices", `,"n":2,"max_tokens":4,"stream_options":{"include_usage":true}`, 2, 4, "length", true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := newHarness(t, Config{Keys: map[string]KeyConfig{"sk-a": {RPM: 600, TPM: 60_000}}})
			r := h.chat("sk-a", helloChat(`,"stream":true`+tt.extra))
			if r.status != http.StatusOK {
				t.Fatalf("status %d: %s", r.status, r.body)
			}
			if ct := r.header.Get("content-type"); !strings.HasPrefix(ct, "text/event-stream") {
				t.Errorf("content-type %q", ct)
			}
			for _, k := range []string{"x-ratelimit-remaining-requests", "x-ratelimit-remaining-tokens", "x-request-id", "openai-processing-ms"} {
				if r.header.Get(k) == "" {
					t.Errorf("header %s missing", k)
				}
			}
			events := sseEvents(t, string(r.body))
			events = events[:len(events)-1] // [DONE]

			var usageChunk *chatChunk
			texts := make([]string, tt.n)
			roles, finishes := make([]int, tt.n), make([]int, tt.n)
			var id string
			for i, ev := range events {
				var raw map[string]json.RawMessage
				if err := json.Unmarshal([]byte(ev), &raw); err != nil {
					t.Fatalf("event %d: %v", i, err)
				}
				u, hasUsage := raw["usage"]
				if hasUsage != tt.includeUsage {
					t.Errorf("event %d: usage present %v, want %v", i, hasUsage, tt.includeUsage)
				}
				var ch chatChunk
				if err := json.Unmarshal([]byte(ev), &ch); err != nil {
					t.Fatal(err)
				}
				if ch.Object != "chat.completion.chunk" || ch.Model != "m" || (id != "" && ch.ID != id) {
					t.Errorf("event %d: %s", i, ev)
				}
				id = ch.ID
				if tt.includeUsage && string(u) != "null" {
					if i != len(events)-1 {
						t.Errorf("usage before the last chunk: event %d", i)
					}
					if string(raw["choices"]) != "[]" {
						t.Errorf("usage chunk choices %s, want []", raw["choices"])
					}
					usageChunk = &ch
					continue
				}
				if len(ch.Choices) != 1 {
					t.Fatalf("event %d has %d choices", i, len(ch.Choices))
				}
				c := ch.Choices[0]
				switch {
				case c.Delta.Role == "assistant":
					roles[c.Index]++
					if texts[c.Index] != "" || finishes[c.Index] != 0 {
						t.Errorf("role of choice %d not first", c.Index)
					}
				case c.FinishReason != nil:
					finishes[c.Index]++
					if *c.FinishReason != tt.finish {
						t.Errorf("finish_reason %q, want %q", *c.FinishReason, tt.finish)
					}
				case c.Delta.Content != nil:
					if finishes[c.Index] != 0 {
						t.Errorf("content after finish on choice %d", c.Index)
					}
					texts[c.Index] += *c.Delta.Content
				default:
					t.Errorf("event %d carries nothing: %s", i, ev)
				}
			}
			for i := range tt.n {
				if roles[i] != 1 || finishes[i] != 1 {
					t.Errorf("choice %d: %d role chunks, %d finish chunks; want 1 and 1", i, roles[i], finishes[i])
				}
				if want := completionText(int64(tt.tokens)); texts[i] != want {
					t.Errorf("choice %d text %q, want %q", i, texts[i], want)
				}
			}
			want := usage{PromptTokens: helloPrompt, CompletionTokens: int64(tt.tokens * tt.n)}
			want.TotalTokens = want.PromptTokens + want.CompletionTokens
			if tt.includeUsage {
				if usageChunk == nil {
					t.Fatal("no usage chunk")
				}
				var u usage
				if err := json.Unmarshal(usageChunk.Usage, &u); err != nil || u != want {
					t.Errorf("usage %s, want %+v", usageChunk.Usage, want)
				}
			}
			if c := h.fake.Stats().Keys["sk-a"]; c.Served != 1 || c.TotalTokens != want.TotalTokens || c.StreamAborts != 0 {
				t.Errorf("counters %+v", c)
			}
		})
	}
}

func TestStreamClientGoesAway(t *testing.T) {
	// 600,000 TPM over 1s: 10,000 tokens. The first chunk comes at once,
	// the next after an hour: the client leaves in between, whatever the
	// speed of the machine.
	h := newHarness(t, Config{
		Keys:             map[string]KeyConfig{"sk-a": {TPM: 600_000}},
		CompletionTokens: 1000,
		ChunkDelay:       time.Hour,
	})
	const charge = helloPrompt + 1000
	ctx, cancel := context.WithCancel(t.Context())
	req, _ := http.NewRequestWithContext(ctx, http.MethodPost, h.srv.URL+"/v1/chat/completions",
		strings.NewReader(helloChat(`,"stream":true,"max_tokens":1000`)))
	req.Header.Set("Authorization", "Bearer sk-a")
	resp, err := h.srv.Client().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	if got := resp.Header.Get("x-ratelimit-remaining-tokens"); got != itoa(10_000-charge) {
		t.Errorf("remaining tokens %s, want %d", got, 10_000-charge)
	}
	line, err := bufio.NewReader(resp.Body).ReadString('\n')
	if err != nil || !strings.Contains(line, `"role":"assistant"`) {
		t.Fatalf("first event %q: %v", line, err)
	}
	cancel()
	resp.Body.Close()

	waitFor(t, "the abort to be counted", func() bool { return h.fake.Stats().Total.StreamAborts == 1 })
	c := h.fake.Stats().Keys["sk-a"]
	if c.Served != 0 || c.Received != 1 || c.Finished() != 1 || c.TotalTokens != 0 {
		t.Errorf("counters %+v", c)
	}
	// Settled against what was sent, the prompt alone: the 1,000 reserved
	// for the completion are back.
	r := h.chat("sk-a", helloChat(`,"max_tokens":0`))
	if got, want := r.header.Get("x-ratelimit-remaining-tokens"), itoa(10_000-2*helloPrompt); got != want {
		t.Errorf("after the aborted stream and a 9-token call %s tokens left, want %s", got, want)
	}
}
