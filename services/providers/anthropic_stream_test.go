package providers

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/sluicehq/sluice/messages"
	"github.com/sluicehq/sluice/services/fakeprovider"
)

func TestAnthropicStreamAgainstFake(t *testing.T) {
	const secret = "sk-ant-stream-4242"
	cases := []struct {
		name       string
		apiVersion string
		body       []byte
		charge     int64
		usage      [3]int64
		stop       string
	}{
		{name: "cut by max_tokens", body: helloMessages(`,"stream":true`), charge: 9 + 5, usage: [3]int64{9, 5, 14}, stop: "max_tokens"},
		{
			name:   "natural end with a system prompt",
			body:   []byte(`{"model":"pool","stream":true,"max_tokens":100,"system":"be brief","messages":[{"role":"user","content":"hello world!"}]}`),
			charge: 14 + 100, usage: [3]int64{14, 16, 30}, stop: "end_turn",
		},
		{name: "an api-version is passed", apiVersion: "2099-01-01", body: helloMessages(`,"stream":true`), charge: 9 + 5, usage: [3]int64{9, 5, 14}, stop: "max_tokens"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			f := newFakeAPI(t, fakeprovider.Config{Keys: map[string]fakeprovider.KeyConfig{secret: {RPM: 600, TPM: 60_000}}})
			events, resp, err := f.streamAll(ProviderAnthropic, Request{Endpoint: messages.EndpointMessages, Body: tc.body, Model: "claude-real",
				BaseURL: f.url + "/v1/", APIVersion: tc.apiVersion, Secret: secret})
			if err != nil {
				t.Fatal(err)
			}
			expect{status: 200, class: Success, usage: tc.usage}.check(t, resp)
			if resp.Body != nil {
				t.Errorf("a stream's Response has a body: %s", resp.Body)
			}
			if l := resp.Limits; l.RemainingRequests != 9 || l.LimitTokens != 60_000 || l.RemainingTokens != 1000-tc.charge || l.ResetTokens != time.Second {
				t.Errorf("limits %+v", l)
			}

			// Relayed in order, as the provider framed them.
			var names []string
			var text strings.Builder
			for i, e := range events {
				names = append(names, e.Name)
				if e.Injected {
					t.Errorf("event %d (%s) marked injected", i, e.Name)
				}
				if want := "event: " + e.Name + "\ndata: " + string(e.Data); string(e.Raw) != want {
					t.Errorf("event %d raw %q, want %q", i, e.Raw, want)
				}
				var d struct {
					Type  string
					Delta struct{ Text string }
				}
				if err := json.Unmarshal(e.Data, &d); err != nil || d.Type != e.Name {
					t.Errorf("event %d %s: data %s", i, e.Name, e.Data)
				}
				if e.Name == "content_block_delta" {
					text.WriteString(d.Delta.Text)
				}
			}
			want := []string{"message_start", "content_block_start", "ping"}
			for range tc.usage[1] {
				want = append(want, "content_block_delta")
			}
			want = append(want, "content_block_stop", "message_delta", "message_stop")
			if strings.Join(names, " ") != strings.Join(want, " ") {
				t.Fatalf("events %v\nwant %v", names, want)
			}
			if got := strings.Fields(text.String()); len(got) != int(tc.usage[1]) {
				t.Errorf("text %q", text.String())
			}
			if md := string(events[len(events)-2].Data); !strings.Contains(md, `"stop_reason":"`+tc.stop+`"`) {
				t.Errorf("message_delta %s", md)
			}

			// The request is Do's, with stream as the client sent it.
			w := f.last()
			if w.url.Path != "/v1/messages" || w.url.RawQuery != "" {
				t.Errorf("sent to %s", w.url)
			}
			version := tc.apiVersion
			if version == "" {
				version = DefaultAnthropicVersion
			}
			if got := w.header.Get("anthropic-version"); got != version {
				t.Errorf("anthropic-version %q, want %q", got, version)
			}
			var sent struct {
				Model  string
				Stream bool
			}
			if err := json.Unmarshal(w.body, &sent); err != nil || sent.Model != "claude-real" || !sent.Stream {
				t.Errorf("sent body %s", w.body)
			}
			f.checkSecret(secret, "x-api-key", "")
			noSecretIn(t, secret, resp, err)
			for _, e := range events {
				if strings.Contains(string(e.Raw), secret) {
					t.Errorf("event %s holds the secret", e.Name)
				}
			}
			if c := f.fake.Stats().Keys[secret]; c.Served != 1 || c.TotalTokens != tc.usage[2] || c.StreamAborts != 0 {
				t.Errorf("fake counters %+v", c)
			}
		})
	}
}

// An answer to a streaming request that is not a stream (an error) is
// read whole, as Do reads it: no event is relayed.
func TestAnthropicStreamErrorAnswerIsReadWhole(t *testing.T) {
	const secret = "sk-ant-1"
	cases := []struct {
		name   string
		cfg    fakeprovider.Config
		before int
		body   []byte
		want   expect
	}{
		{"429 rate_limit_error with retry-after", fakeprovider.Config{Keys: map[string]fakeprovider.KeyConfig{secret: {RPM: 6}}}, 1, helloMessages(`,"stream":true`),
			expect{status: 429, class: RateLimited, errorType: "rate_limit_error", errorCode: "rate_limit_error", retryAfter: 10 * time.Second}},
		{"529 overloaded_error", fakeprovider.Config{Keys: map[string]fakeprovider.KeyConfig{secret: {}}, OverloadRate: 1}, 0, helloMessages(`,"stream":true`),
			expect{status: 529, class: Unavailable, errorType: "overloaded_error", errorCode: "overloaded_error"}},
		{"credit balance too low", fakeprovider.Config{Keys: map[string]fakeprovider.KeyConfig{secret: {InsufficientQuota: true}}}, 0, helloMessages(`,"stream":true`),
			expect{status: 400, class: QuotaExhausted, errorType: "invalid_request_error", errorCode: "invalid_request_error"}},
		{"missing max_tokens", fakeprovider.Config{Keys: map[string]fakeprovider.KeyConfig{secret: {}}}, 0, []byte(`{"stream":true,"messages":[{"role":"user","content":"hi"}]}`),
			expect{status: 400, class: Rejected, errorType: "invalid_request_error", errorCode: "invalid_request_error"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			f := newFakeAPI(t, tc.cfg)
			req := Request{Endpoint: messages.EndpointMessages, Body: tc.body, Model: "claude", BaseURL: f.url + "/v1", Secret: secret}
			for range tc.before {
				if events, resp, err := f.streamAll(ProviderAnthropic, req); err != nil || resp.Class != Success || len(events) == 0 {
					t.Fatalf("before: %v %+v", err, resp)
				}
			}
			events, resp, err := f.streamAll(ProviderAnthropic, req)
			if err != nil || len(events) != 0 {
				t.Fatalf("%v, %d events", err, len(events))
			}
			tc.want.check(t, resp)
			if !strings.Contains(string(resp.Body), `"type":"error"`) {
				t.Errorf("body %s", resp.Body)
			}
			f.checkSecret(secret, "x-api-key", "")
			noSecretIn(t, secret, resp, err)
		})
	}
}

// When the relay fails, reading stops and the provider request is closed:
// the fake counts an aborted stream and settles it on what it sent.
func TestAnthropicStreamStopsWhenTheRelayDoes(t *testing.T) {
	cases := []struct {
		name   string
		stopAt string // the event whose relay fails
		// The fake sent one delta, or none if it noticed the close before
		// writing the first.
		minSent, maxSent int64
	}{
		{"at the first delta", "content_block_delta", 1, 1},
		{"at message_start", "message_start", 0, 1},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			// 600,000 TPM over 1s: 10,000 tokens. The first delta comes at
			// once, the next after an hour: only closing the request ends
			// the stream.
			f := newFakeAPI(t, fakeprovider.Config{Keys: map[string]fakeprovider.KeyConfig{"sk": {TPM: 600_000}}, CompletionTokens: 1000, ChunkDelay: time.Hour})
			stop := errors.New("client gone")
			a, _ := For(ProviderAnthropic)
			var names []string
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			resp, err := a.(Streamer).Stream(ctx, http.DefaultClient, Request{
				Endpoint: messages.EndpointMessages, Body: helloMessages(`,"stream":true,"max_tokens":1000`),
				Model: "m", BaseURL: f.url + "/v1", Secret: "sk",
			}, func(e Event) error {
				names = append(names, e.Name)
				if e.Name == tc.stopAt {
					return stop
				}
				return nil
			})
			if !errors.Is(err, stop) || resp != nil || names[len(names)-1] != tc.stopAt {
				t.Fatalf("after the relay failed: %v, %+v, events %v", err, resp, names)
			}
			deadline := time.Now().Add(10 * time.Second)
			for f.fake.Stats().Total.StreamAborts != 1 {
				if time.Now().After(deadline) {
					t.Fatal("the provider request should have been closed")
				}
				time.Sleep(5 * time.Millisecond)
			}
			if c := f.fake.Stats().Keys["sk"]; c.Served != 0 || c.Finished() != 1 {
				t.Errorf("fake counters %+v", c)
			}
			// Settled on what was sent: the 1,000 tokens reserved for the
			// reply came back, but for what was generated.
			after, err := f.do(ProviderAnthropic, Request{Endpoint: messages.EndpointMessages, Body: helloMessages(`,"max_tokens":1`), Model: "m", BaseURL: f.url + "/v1", Secret: "sk"})
			if err != nil {
				t.Fatal(err)
			}
			left := after.Limits.RemainingTokens
			if left < 10_000-(9+tc.maxSent)-(9+1) || left > 10_000-(9+tc.minSent)-(9+1) {
				t.Errorf("%d tokens left after the aborted stream and a 10-token call", left)
			}
		})
	}
}

// script serves body as a 200 event stream, with a few Anthropic
// rate-limit headers.
func script(t *testing.T, body string) string {
	t.Helper()
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/event-stream; charset=utf-8")
		w.Header().Set("anthropic-ratelimit-requests-limit", "50")
		w.Header().Set("anthropic-ratelimit-requests-remaining", "49")
		w.WriteHeader(http.StatusOK)
		_, _ = io.WriteString(w, body)
	}))
	t.Cleanup(srv.Close)
	return srv.URL
}

// streamScript streams body through the Anthropic adapter.
func streamScript(t *testing.T, body string) ([]Event, *Response, error) {
	t.Helper()
	url := script(t, body)
	var events []Event
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	resp, err := Anthropic{}.Stream(ctx, nil, Request{Endpoint: messages.EndpointMessages, Body: helloMessages(`,"stream":true`), Model: "m", BaseURL: url, Secret: "k"},
		func(e Event) error {
			e.Raw = append([]byte(nil), e.Raw...)
			events = append(events, e)
			return nil
		})
	return events, resp, err
}

// sse frames events in Anthropic's way: name, data, name, data, ...
func sse(pairs ...string) string {
	var b strings.Builder
	for i := 0; i+1 < len(pairs); i += 2 {
		if pairs[i] != "" {
			b.WriteString("event: " + pairs[i] + "\n")
		}
		b.WriteString("data: " + pairs[i+1] + "\n\n")
	}
	return b.String()
}

const (
	evStart      = `{"type":"message_start","message":{"id":"msg_1","type":"message","role":"assistant","model":"m","content":[],"stop_reason":null,"usage":{"input_tokens":9,"output_tokens":1}}}`
	evBlockStart = `{"type":"content_block_start","index":0,"content_block":{"type":"text","text":""}}`
	evDelta      = `{"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":"ok"}}`
	evBlockStop  = `{"type":"content_block_stop","index":0}`
	evStop       = `{"type":"message_stop"}`
)

func evMessageDelta(usage string) string {
	return `{"type":"message_delta","delta":{"stop_reason":"end_turn","stop_sequence":null},"usage":` + usage + `}`
}

// An error event mid-stream is relayed, and the stream does not count as a
// success.
func TestAnthropicStreamErrorEvent(t *testing.T) {
	head := []string{"message_start", evStart, "content_block_start", evBlockStart, "content_block_delta", evDelta}
	cases := []struct {
		name      string
		tail      []string
		class     Class
		errorType string
	}{
		{"overloaded_error", []string{"error", `{"type":"error","error":{"type":"overloaded_error","message":"Overloaded"}}`}, Unavailable, "overloaded_error"},
		{"api_error", []string{"error", `{"type":"error","error":{"type":"api_error","message":"Internal server error"}}`}, Unavailable, "api_error"},
		{"rate_limit_error", []string{"error", `{"type":"error","error":{"type":"rate_limit_error","message":"slow down"}}`}, RateLimited, "rate_limit_error"},
		{"billing_error", []string{"error", `{"type":"error","error":{"type":"billing_error","message":"pay up"}}`}, QuotaExhausted, "billing_error"},
		{"an unknown error type", []string{"error", `{"type":"error","error":{"type":"weird_error"}}`}, Unavailable, "weird_error"},
		{"an error event that is not JSON", []string{"error", `oops`}, Unavailable, ""},
		{"an error named only by its data", []string{"", `{"type":"error","error":{"type":"overloaded_error"}}`}, Unavailable, "overloaded_error"},
		{"an error named only by the event", []string{"error", `{"error":{"type":"api_error"}}`}, Unavailable, "api_error"},
		{"the first error stands", []string{"error", `{"type":"error","error":{"type":"rate_limit_error"}}`, "error", `{"type":"error","error":{"type":"api_error"}}`}, RateLimited, "rate_limit_error"},
		{"no error", []string{"content_block_stop", evBlockStop, "message_delta", evMessageDelta(`{"output_tokens":1}`), "message_stop", evStop}, Success, ""},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			events, resp, err := streamScript(t, sse(append(append([]string(nil), head...), tc.tail...)...))
			if err != nil {
				t.Fatal(err)
			}
			if len(events) != (len(head)+len(tc.tail))/2 {
				t.Errorf("%d events relayed", len(events))
			}
			last := events[len(events)-1]
			if want := tc.tail[len(tc.tail)-1]; string(last.Data) != want {
				t.Errorf("last event relayed %q, want %q", last.Data, want)
			}
			if resp.Status != 200 || resp.Class != tc.class || resp.ErrorType != tc.errorType || resp.ErrorCode != tc.errorType || resp.Body != nil {
				t.Errorf("response %+v, want class %v error %q", resp, tc.class, tc.errorType)
			}
			if resp.Usage == nil || resp.Usage.PromptTokens != 9 || resp.Usage.CompletionTokens != 1 {
				t.Errorf("usage %+v: what the stream reported before the error", resp.Usage)
			}
			if resp.Limits.RemainingRequests != 49 || resp.Limits.LimitRequests != 50 {
				t.Errorf("limits %+v", resp.Limits)
			}
		})
	}
}

func TestAnthropicStreamUsage(t *testing.T) {
	start := func(usage string) string {
		return `{"type":"message_start","message":{"id":"msg_1","type":"message","role":"assistant","content":[],"usage":` + usage + `}}`
	}
	maxCount := strconv.FormatInt(MaxCount, 10)
	cases := []struct {
		name   string
		events []string
		want   [4]int64 // prompt, completion, total, cached; zero: no usage
	}{
		{"input and output", []string{"message_start", start(`{"input_tokens":10,"output_tokens":1}`), "message_delta", evMessageDelta(`{"output_tokens":5}`)}, [4]int64{10, 5, 15, 0}},
		{"cache tokens count as input", []string{"message_start", start(`{"input_tokens":10,"cache_creation_input_tokens":20,"cache_read_input_tokens":30,"output_tokens":1}`),
			"message_delta", evMessageDelta(`{"output_tokens":7}`)}, [4]int64{60, 7, 67, 30}},
		{"output is cumulative: the last stands", []string{"message_start", start(`{"input_tokens":10,"output_tokens":1}`),
			"message_delta", evMessageDelta(`{"output_tokens":3}`), "message_delta", evMessageDelta(`{"output_tokens":7}`)}, [4]int64{10, 7, 17, 0}},
		{"message_delta's input replaces message_start's", []string{"message_start", start(`{"input_tokens":10,"cache_read_input_tokens":5,"output_tokens":1}`),
			"message_delta", evMessageDelta(`{"input_tokens":12,"cache_read_input_tokens":null,"output_tokens":4}`)}, [4]int64{17, 4, 21, 5}},
		{"message_start alone", []string{"message_start", start(`{"input_tokens":10,"output_tokens":1}`)}, [4]int64{10, 1, 11, 0}},
		{"the data's type, not the name, says what it is", []string{"ping", start(`{"input_tokens":10,"output_tokens":1}`), "message_delta", `{"type":"ping","usage":{"output_tokens":99}}`}, [4]int64{10, 1, 11, 0}},
		{"no usage at all", []string{"message_start", `{"type":"message_start","message":{"id":"m"}}`, "message_delta", `{"type":"message_delta","delta":{}}`}, [4]int64{}},
		{"a null message", []string{"message_start", `{"type":"message_start","message":null}`}, [4]int64{}},
		{"a negative count", []string{"message_start", start(`{"input_tokens":-10,"output_tokens":1}`), "message_delta", evMessageDelta(`{"output_tokens":5}`)}, [4]int64{}},
		{"a negative count later", []string{"message_start", start(`{"input_tokens":10,"output_tokens":1}`), "message_delta", evMessageDelta(`{"output_tokens":-5}`)}, [4]int64{}},
		{"an absurd count", []string{"message_start", start(`{"input_tokens":10,"output_tokens":1}`), "message_delta", evMessageDelta(`{"output_tokens":99999999999999999999}`)}, [4]int64{}},
		{"a count that is a string", []string{"message_start", start(`{"input_tokens":"10","output_tokens":1}`)}, [4]int64{}},
		{"a count that is a fraction", []string{"message_start", start(`{"input_tokens":10.5,"output_tokens":1}`)}, [4]int64{}},
		{"usage that is not an object", []string{"message_start", start(`[1,2]`)}, [4]int64{}},
		{"input beyond MaxCount in sum", []string{"message_start", start(`{"input_tokens":` + maxCount + `,"cache_read_input_tokens":` + maxCount + `,"output_tokens":1}`)}, [4]int64{}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			// Each script ends as a complete stream does.
			events, resp, err := streamScript(t, sse(append(tc.events, "message_stop", evStop)...))
			if err != nil {
				t.Fatal(err)
			}
			if len(events) != len(tc.events)/2+1 || resp.Class != Success {
				t.Fatalf("%d events, class %v", len(events), resp.Class)
			}
			for _, e := range events {
				if e.Injected {
					t.Errorf("event %s marked injected", e.Name)
				}
			}
			if tc.want == ([4]int64{}) {
				if resp.Usage != nil {
					t.Errorf("usage %+v, want none", resp.Usage)
				}
				return
			}
			if resp.Usage == nil {
				t.Fatal("no usage")
			}
			if got := [4]int64{resp.Usage.PromptTokens, resp.Usage.CompletionTokens, resp.Usage.TotalTokens, resp.Usage.CachedTokens()}; got != tc.want {
				t.Errorf("usage %v, want %v", got, tc.want)
			}
		})
	}
}

// Whatever a hostile stream holds, the adapter neither panics nor trusts
// it; a stream that ends without message_stop is incomplete.
func TestAnthropicStreamHostile(t *testing.T) {
	cases := []struct {
		name    string
		body    string
		events  int
		wantErr error
	}{
		{"garbage lines", "no colon here\n\x00\xff\xfe\n: comment\nevent\ndata\n\n", 1, ErrStreamIncomplete},
		{"fields without values", "event:\ndata:\n\nevent: message_start\n\n", 2, ErrStreamIncomplete},
		{"data that is not JSON", sse("message_start", "{", "message_delta", "[]", "message_delta", "null", "message_start", `"str"`, "content_block_delta", "12", "message_stop", evStop), 6, nil},
		{"typed fields of the wrong type", sse("message_start", `{"type":5,"message":7}`, "message_delta", `{"type":"message_delta","usage":"lots"}`,
			"message_start", `{"type":"message_start","message":{"usage":{"input_tokens":{}}}}`, "message_stop", evStop), 4, nil},
		{"deep nesting", sse("message_delta", `{"type":"message_delta","usage":`+strings.Repeat("[", 10000)+strings.Repeat("]", 10000)+`}`, "message_stop", evStop), 2, nil},
		{"no blank line at the end", "event: message_start\ndata: " + evStart + "\n\nevent: message_stop\ndata: " + evStop, 2, nil},
		{"cut short", "event: message_start\ndata: " + evStart, 1, ErrStreamIncomplete},
		{"only comments", ": ping\n\n: ping\n\n", 0, ErrStreamIncomplete},
		{"CRLF framing", strings.ReplaceAll(sse("message_start", evStart, "message_stop", evStop), "\n", "\r\n"), 2, nil},
		{"an event over MaxEventBytes", sse("content_block_delta", strings.Repeat("x", MaxEventBytes+1)), 0, ErrEventTooLong},
		{"empty", "", 0, ErrStreamIncomplete},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			events, resp, err := streamScript(t, tc.body)
			if len(events) != tc.events {
				t.Errorf("%d events relayed, want %d", len(events), tc.events)
			}
			if tc.wantErr != nil {
				if !errors.Is(err, tc.wantErr) || resp != nil {
					t.Fatalf("%v, %+v; want %v", err, resp, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if resp.Status != 200 {
				t.Errorf("status %d", resp.Status)
			}
			if u := resp.Usage; u != nil && (u.PromptTokens < 0 || u.CompletionTokens < 0 || u.TotalTokens != u.PromptTokens+u.CompletionTokens) {
				t.Errorf("usage %+v", u)
			}
		})
	}
}

// FuzzAnthropicStream holds the stream reader to its contract: whatever
// the events, no panic, and usage either absent or within [0, MaxCount]
// with a total that is the sum.
func FuzzAnthropicStream(f *testing.F) {
	f.Add(sse("message_start", evStart, "message_delta", evMessageDelta(`{"output_tokens":5}`)))
	f.Add(sse("error", `{"type":"error","error":{"type":"overloaded_error"}}`))
	f.Add(sse("message_start", `{"type":"message_start","message":{"usage":{"input_tokens":1099511627776,"cache_read_input_tokens":1099511627776}}}`))
	f.Add("event: message_delta\ndata: {\"type\":\"message_delta\",\"usage\":{\"output_tokens\":-1}}\n\n")
	f.Add("data: \xff\n\nevent:\n\n:\n\n")
	f.Fuzz(func(t *testing.T, body string) {
		var st anthropicStream
		var u streamUsage
		r := bufio.NewReader(strings.NewReader(body))
		for {
			e, err := readEvent(r)
			if e != nil {
				st.observe(e, &u)
			}
			if err != nil {
				break
			}
		}
		if got := u.usage(); got != nil {
			if got.PromptTokens < 0 || got.PromptTokens > MaxCount || got.CompletionTokens < 0 || got.CompletionTokens > MaxCount ||
				got.TotalTokens != got.PromptTokens+got.CompletionTokens {
				t.Errorf("usage %+v", got)
			}
		}
		_ = st.class()
	})
}
