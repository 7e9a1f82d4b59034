package providers

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/textproto"
	"reflect"
	"slices"
	"strings"
	"testing"

	"github.com/sluicehq/sluice/messages"
)

// The fuzz targets here hold the whole reading of a provider's answer to
// its contract, from the bytes on the wire (see fuzz_test.go for the
// parsers of headers and bodies alone).

// FuzzReadEvent reads a provider's event stream: whatever the bytes, no
// panic, no event above MaxEventBytes, and each event's Raw is what the
// gateway relays (Raw and a blank line): non-empty lines with no comment
// among them, that read back as the same one event.
func FuzzReadEvent(f *testing.F) {
	f.Add([]byte(": keep-alive\n\nevent: message_start\ndata: {\"a\":1}\n\ndata: x\r\ndata: y\r\n\r\ndata: tail"))
	f.Add([]byte("data: {\"choices\":[{\"delta\":{\"content\":\"hi\"}}]}\n\ndata: {\"choices\":[],\"usage\":{\"prompt_tokens\":9,\"completion_tokens\":2,\"total_tokens\":11}}\n\ndata: [DONE]\n\n"))
	f.Add([]byte(sse("message_start", evStart, "content_block_delta", evDelta, "message_delta", evMessageDelta(`{"output_tokens":5}`), "message_stop", evStop)))
	f.Add([]byte("event: error\ndata: {\"type\":\"error\",\"error\":{\"type\":\"overloaded_error\",\"message\":\"Overloaded\"}}\n\n"))
	f.Add([]byte("data\n\ndata:\n\n:\n\nevent\nid: 7\nretry: 10\n\n\r\n\r\n"))
	f.Add([]byte("data: a\rb\n\ndata:  two spaces\n\nevent:no-space\ndata:x\n\n"))
	f.Add([]byte("<html><body>502 Bad Gateway</body></html>"))
	f.Add([]byte("data: \xff\xfe\n\n\x00\n\n"))
	f.Add([]byte(""))
	f.Fuzz(func(t *testing.T, data []byte) {
		r := bufio.NewReaderSize(bytes.NewReader(data), 16) // small, so that long lines are gathered
		for n := 0; ; n++ {
			e, err := readEvent(r)
			if e != nil {
				checkEvent(t, e)
			}
			if err != nil {
				if !errors.Is(err, io.EOF) && !errors.Is(err, ErrEventTooLong) {
					t.Fatalf("error %v", err)
				}
				return
			}
			if e == nil {
				t.Fatalf("no event and no error")
			}
			if n > len(data) {
				t.Fatalf("more events than bytes")
			}
		}
	})
}

// checkEvent holds one event to the framing the gateway relies on.
func checkEvent(t *testing.T, e *Event) {
	t.Helper()
	if len(e.Raw) == 0 || len(e.Raw) > MaxEventBytes {
		t.Fatalf("event of %d bytes", len(e.Raw))
	}
	for _, line := range bytes.Split(e.Raw, []byte("\n")) {
		if len(bytes.TrimRight(line, "\r\n")) == 0 || line[0] == ':' {
			t.Fatalf("raw event %q has a blank or comment line", e.Raw)
		}
	}
	relayed := append(append([]byte(nil), e.Raw...), '\n', '\n')
	again, err := readEvent(bufio.NewReader(bytes.NewReader(relayed)))
	if err != nil || again == nil || !bytes.Equal(again.Raw, e.Raw) || again.Name != e.Name || !bytes.Equal(again.Data, e.Data) {
		t.Fatalf("event %q (name %q, data %q) relayed reads as %+v, %v", e.Raw, e.Name, e.Data, again, err)
	}
}

// answerTransport answers every request with the same status, headers
// and body, without a network.
type answerTransport struct {
	status int
	header http.Header
	body   []byte
}

func (a answerTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	if req.Body != nil {
		_, _ = io.Copy(io.Discard, req.Body)
		_ = req.Body.Close()
	}
	return &http.Response{StatusCode: a.status, Header: a.header.Clone(), Body: io.NopCloser(bytes.NewReader(a.body)), Request: req}, nil
}

// parseHeaderBlock reads "Name: value" lines; a line without a colon is
// skipped.
func parseHeaderBlock(block string) http.Header {
	h := http.Header{}
	for _, line := range strings.Split(block, "\n") {
		if k, v, ok := strings.Cut(line, ":"); ok && strings.TrimSpace(k) != "" {
			h.Add(textproto.CanonicalMIMEHeaderKey(strings.TrimSpace(k)), strings.TrimSpace(v))
		}
	}
	return h
}

// FuzzAnswer sends one request through each adapter, plain and streamed,
// to a provider that answers whatever the fuzzer says: any status, any
// headers (rate limits, retry-after, Date, Content-Type), any body. No
// panic; any HTTP answer to a plain request is a Response, never an
// error; its status is the provider's, its class the one the status (and
// a quota error) implies, its usage absent or within [0, MaxCount], its
// limits and waits bounded; the secret is in no error; a stream that ends
// well ended with its last event, and its events keep their framing.
func FuzzAnswer(f *testing.F) {
	type seed struct {
		status      uint16
		contentType string
		headers     string
		body        string
	}
	seeds := []seed{
		{200, "application/json", "x-ratelimit-limit-requests: 60000\nx-ratelimit-remaining-tokens: 149984\nx-ratelimit-reset-requests: 1m30.5s\nx-ratelimit-reset-tokens: 12ms",
			`{"choices":[],"usage":{"prompt_tokens":9,"completion_tokens":16,"total_tokens":25}}`},
		{429, "application/json", "retry-after: 2\nx-ratelimit-remaining-requests: 0\nx-ratelimit-reset-requests: 6m0s",
			`{"error":{"message":"Rate limit reached","type":"requests","code":"rate_limit_exceeded"}}`},
		{429, "application/json", "", `{"error":{"message":"You exceeded your current quota","type":"insufficient_quota","code":"insufficient_quota"}}`},
		{429, "application/json", "retry-after-ms: 1500\nx-ratelimit-remaining-requests: -1\nx-ratelimit-limit-tokens: 0", `{"error":{"code":"429","message":"Requests to the ChatCompletions_Create Operation ...","status":429}}`},
		{429, "application/json", "anthropic-ratelimit-requests-limit: 50\nanthropic-ratelimit-requests-remaining: 0\nanthropic-ratelimit-requests-reset: 2026-03-01T12:00:01Z\nDate: Sun, 01 Mar 2026 12:00:00 GMT\nretry-after: 17",
			`{"type":"error","error":{"type":"rate_limit_error","message":"Number of request tokens has exceeded your per-minute rate limit"}}`},
		{529, "application/json", "", `{"type":"error","error":{"type":"overloaded_error","message":"Overloaded"}}`},
		{400, "application/json", "", `{"type":"error","error":{"type":"invalid_request_error","message":"Your credit balance is too low"}}`},
		{429, "application/json", "", `[{"error":{"code":429,"status":"RESOURCE_EXHAUSTED","details":[{"@type":"type.googleapis.com/google.rpc.RetryInfo","retryDelay":"17s"}]}}]`},
		{429, "application/x-amz-json-1.1", "", `{"__type":"ThrottlingException","message":"Rate exceeded"}`},
		{200, "text/event-stream; charset=utf-8", "x-ratelimit-limit-tokens: 150000",
			"data: {\"choices\":[{\"delta\":{\"content\":\"hi\"}}]}\n\ndata: {\"choices\":[],\"usage\":{\"prompt_tokens\":9,\"completion_tokens\":2,\"total_tokens\":11}}\n\ndata: [DONE]\n\n"},
		{200, "text/event-stream", "anthropic-ratelimit-input-tokens-limit: 40000\nanthropic-ratelimit-output-tokens-limit: 8000",
			sse("message_start", evStart, "message_delta", evMessageDelta(`{"output_tokens":5}`), "message_stop", evStop)},
		{200, "text/event-stream", "", sse("message_start", evStart, "error", `{"type":"error","error":{"type":"overloaded_error"}}`)},
		{200, "text/event-stream", "", "data: {\"choices\":[{\"delta\":{}}]}\n\n"},
		{200, "application/json", "", `{"choices":[],"usage":{"prompt_tokens":2006,"completion_tokens":300,"total_tokens":2306,"prompt_tokens_details":{"cached_tokens":1920}}}`},
		{200, "application/json", "", `{"output":[],"usage":{"input_tokens":1500,"input_tokens_details":{"cached_tokens":1024},"output_tokens":80}}`},
		{200, "application/json", "", `{"type":"message","usage":{"input_tokens":50,"cache_creation_input_tokens":200,"cache_read_input_tokens":1000,"output_tokens":75}}`},
		{502, "text/html", "", "<html><body><h1>502 Bad Gateway</h1></body></html>"},
		{200, "application/json", "", ""},
		{200, "application/json", "Content-Type: text/event-stream\nx-ratelimit-reset-tokens: 9999999999h\nretry-after: Fri, 31 Dec 2100 23:59:59 GMT", "{"},
		{100, "", "\xff: \xfe", "\x00"},
	}
	for _, s := range seeds {
		f.Add(s.status, s.contentType, s.headers, []byte(s.body))
	}
	const secret = "sk-fuzz-secret-0123456789"
	requests := []struct {
		adapter  Adapter
		endpoint messages.Endpoint
		body     string
	}{
		{OpenAI{}, "/v1/chat/completions", `{"model":"m","messages":[{"role":"user","content":"hi"}]}`},
		{Azure{}, "/v1/chat/completions", `{"messages":[{"role":"user","content":"hi"}]}`},
		{OpenAI{}, "/v1/embeddings", `{"input":"hi"}`},
		{Anthropic{}, "/v1/messages", `{"max_tokens":10,"messages":[{"role":"user","content":"hi"}]}`},
	}
	f.Fuzz(func(t *testing.T, status uint16, contentType, headers string, body []byte) {
		h := parseHeaderBlock(headers)
		if contentType != "" {
			h.Set("Content-Type", contentType)
		}
		at := answerTransport{status: 100 + int(status)%500, header: h, body: body}
		client := &http.Client{Transport: at}
		for _, rq := range requests {
			req := Request{Endpoint: rq.endpoint, Body: []byte(rq.body), Model: "m", BaseURL: "http://provider.invalid/v1", Secret: secret, RequestID: "c1"}
			resp, err := rq.adapter.Do(context.Background(), client, req)
			if err != nil {
				t.Fatalf("%T: an HTTP answer is an error: %v", rq.adapter, err)
			}
			checkResponse(t, at, resp, body)

			s, ok := rq.adapter.(Streamer)
			if !ok || req.Endpoint == "/v1/embeddings" {
				continue
			}
			req.Body = append(bytes.TrimSuffix(req.Body, []byte("}")), `,"stream":true}`...)
			var events []Event
			resp, err = s.Stream(context.Background(), client, req, func(e Event) error {
				checkEvent(t, &e)
				events = append(events, Event{Name: e.Name, Data: append([]byte(nil), e.Data...)})
				return nil
			})
			if err != nil {
				if strings.Contains(err.Error(), secret) {
					t.Fatalf("the secret is in an error: %v", err)
				}
				if !errors.Is(err, ErrStreamIncomplete) && !errors.Is(err, ErrEventTooLong) {
					t.Fatalf("%T: stream error %v", rq.adapter, err)
				}
				continue
			}
			if resp.Status != at.status {
				t.Fatalf("%T: status %d, provider said %d", rq.adapter, resp.Status, at.status)
			}
			checkLimits(t, resp.Limits)
			checkUsage(t, resp)
			if resp.Class == Success && len(events) > 0 && !slices.ContainsFunc(events, lastEvent) {
				t.Fatalf("%T: a stream without its last event is a success: %q", rq.adapter, body)
			}
		}
	})
}

// checkResponse holds a plain answer's Response to the contract.
func checkResponse(t *testing.T, at answerTransport, resp *Response, body []byte) {
	t.Helper()
	if resp == nil {
		t.Fatal("no Response and no error")
	}
	if resp.Status != at.status || !bytes.Equal(resp.Body, body) {
		t.Fatalf("status %d body %q, provider said %d %q", resp.Status, resp.Body, at.status, body)
	}
	want := classify(at.status, resp.Class == QuotaExhausted)
	if resp.Class != want {
		t.Fatalf("class %v for status %d, want %v", resp.Class, at.status, want)
	}
	checkLimits(t, resp.Limits)
	checkUsage(t, resp)
}

func checkUsage(t *testing.T, resp *Response) {
	t.Helper()
	if u := resp.Usage; u != nil {
		if u.PromptTokens < 0 || u.CompletionTokens < 0 || u.PromptTokens > MaxCount || u.CompletionTokens > MaxCount ||
			u.TotalTokens < u.PromptTokens+u.CompletionTokens || u.TotalTokens > 2*MaxCount {
			t.Fatalf("usage %+v", u)
		}
		// What is priced as cached is part of the prompt, and never
		// negative: a cost is never below the uncached part's.
		if d := u.PromptTokensDetails; d != nil && (d.CachedTokens <= 0 || d.CachedTokens > u.PromptTokens) {
			t.Fatalf("usage %+v: cached tokens %d of a prompt of %d", u, d.CachedTokens, u.PromptTokens)
		}
	}
}

// lastEvent is an event that may end a complete stream, in either dialect.
func lastEvent(e Event) bool { return string(e.Data) == "[DONE]" || anthropicLast(e) }

// FuzzRequestBody rewrites a client's body for the provider: the model
// the deployment names (withModel), and the usage chunk a stream must end
// with (withStreamUsage). No panic; a body that is not a JSON object is
// ErrInvalidBody; otherwise the body keeps every field the client sent
// and gets the deployment's model, and a streamed one asks for usage,
// left byte for byte as it was when the client asked already.
func FuzzRequestBody(f *testing.F) {
	for _, s := range []struct{ body, model string }{
		{`{"model":"gpt-4o-mini","messages":[{"role":"user","content":"hi"}]}`, "gpt-4o-mini"},
		{`{"model":"pool","messages":[],"stream":true}`, "gpt-4o-mini-2024-07-18"},
		{`{"messages":[],"stream":true,"stream_options":{"include_usage":true}}`, "m"},
		{`{"messages":[],"stream":true,"stream_options":{"include_usage":false,"x":1}}`, "m"},
		{`{"stream_options":null}`, "m"},
		{`{"stream_options":[]}`, "m"},
		{`{"stream_options":{"include_usage":"yes"}}`, "m"},
		{`{"model":1,"model":"m","a":"<&>\u2028"}`, "m"},
		{`{"max_tokens":10,"messages":[{"role":"user","content":"hi"}]}`, "claude-sonnet-4-5"},
		{`null`, "m"},
	} {
		f.Add([]byte(s.body), s.model)
	}
	f.Add([]byte(`[1]`), "m")
	f.Add([]byte(`{"a":1} {}`), "m")
	f.Add([]byte(`{"a":1}`), "m\xff\"")
	f.Fuzz(func(t *testing.T, body []byte, model string) {
		out, err := withModel(body, model)
		if err != nil {
			if !errors.Is(err, ErrInvalidBody) {
				t.Fatalf("withModel(%q): %v", body, err)
			}
			return
		}
		in := objectOf(t, body)
		got := objectOf(t, out)
		if m, ok := got["model"].(string); !ok || m != string([]rune(model)) {
			t.Fatalf("withModel(%q, %q) = %q", body, model, out)
		}
		delete(in, "model")
		delete(got, "model")
		if !reflect.DeepEqual(in, got) {
			t.Fatalf("withModel(%q) changed the other fields: %q", body, out)
		}

		streamed, asked, err := withStreamUsage(out)
		if err != nil {
			if !errors.Is(err, ErrInvalidBody) {
				t.Fatalf("withStreamUsage(%q): %v", out, err)
			}
			return
		}
		if asked && !bytes.Equal(streamed, out) {
			t.Fatalf("withStreamUsage changed a body that asked for usage: %q to %q", out, streamed)
		}
		opts, _ := objectOf(t, streamed)["stream_options"].(map[string]any)
		if opts["include_usage"] != true {
			t.Fatalf("withStreamUsage(%q) = %q: no include_usage", out, streamed)
		}
	})
}

// objectOf decodes a JSON object, its numbers as written.
func objectOf(t *testing.T, data []byte) map[string]any {
	t.Helper()
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.UseNumber()
	var m map[string]any
	if err := dec.Decode(&m); err != nil {
		t.Fatalf("%q is not a JSON object: %v", data, err)
	}
	return m
}
