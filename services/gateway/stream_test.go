package gateway_test

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/sluicehq/sluice/messages"
	"github.com/sluicehq/sluice/services/gateway"
)

// Events are written as they come, each followed by a blank line, with
// the stream's headers; the result's figures follow as trailers.
func TestStreamFraming(t *testing.T) {
	r := newRig(t, nil)
	for _, tc := range []struct {
		name   string
		path   string
		body   string
		events []string
	}{
		{"openai", "/v1/chat/completions", streamBody, []string{`data: {"choices":[{"delta":{"content":"a"}}]}`, `data: {"choices":[{"delta":{"content":"b"}}]}`, `data: [DONE]`}},
		{"anthropic", "/v1/messages", `{"model":"claude","stream":true,"max_tokens":5,"messages":[{"role":"user","content":"hi"}]}`,
			[]string{"event: message_start\ndata: {\"type\":\"message_start\"}", "event: content_block_delta\ndata: {\"type\":\"content_block_delta\"}", "event: message_stop\ndata: {\"type\":\"message_stop\"}"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			req := r.request(context.Background(), http.MethodPost, tc.path, demoToken, tc.body)
			respCh := make(chan *http.Response, 1)
			go func() {
				resp, err := r.client.Do(req)
				if err != nil {
					t.Error(err)
					close(respCh)
					return
				}
				respCh <- resp
			}()
			c := r.nextCall()
			// The first event arrives before anything else is sent.
			r.chunk(c, 1, tc.events[0])
			resp := <-respCh
			if resp == nil {
				t.FailNow()
			}
			defer resp.Body.Close()
			if resp.StatusCode != 200 || resp.Header.Get("Content-Type") != "text/event-stream; charset=utf-8" || resp.Header.Get("Cache-Control") != "no-cache" {
				t.Fatalf("status %d, headers %v", resp.StatusCode, resp.Header)
			}
			if resp.Header.Get("x-sluice-call-id") != c.Call.ID {
				t.Errorf("x-sluice-call-id %q", resp.Header.Get("x-sluice-call-id"))
			}
			br := bufio.NewReader(resp.Body)
			if got := readEvent(t, br); got != tc.events[0] {
				t.Fatalf("first event %q, want %q", got, tc.events[0])
			}
			for i, e := range tc.events[1:] {
				r.chunk(c, i+2, e)
			}
			r.result(c, messages.Result{HTTPStatus: 200, Chunks: len(tc.events), Attempts: 1, Deployment: "d-1", Region: "us-east"})
			rest, err := io.ReadAll(br)
			if err != nil {
				t.Fatal(err)
			}
			want := strings.Join(tc.events[1:], "\n\n") + "\n\n"
			if string(rest) != want {
				t.Errorf("stream %q, want %q", rest, want)
			}
			if resp.Trailer.Get("x-sluice-deployment") != "d-1" || resp.Trailer.Get("x-sluice-attempts") != "1" {
				t.Errorf("trailers %v", resp.Trailer)
			}
		})
	}
	if !strings.Contains(r.metrics(), `sluice_gateway_first_chunk_seconds route="/v1/chat/completions" count=1`) {
		t.Errorf("time to first chunk not observed:\n%s", r.metrics())
	}
}

// readEvent reads one event: lines up to a blank line.
func readEvent(t *testing.T, br *bufio.Reader) string {
	t.Helper()
	var lines []string
	for {
		line, err := br.ReadString('\n')
		if err != nil {
			t.Fatalf("reading an event: %v (so far %q)", err, lines)
		}
		line = strings.TrimSuffix(line, "\n")
		if line == "" {
			return strings.Join(lines, "\n")
		}
		lines = append(lines, line)
	}
}

// The result may overtake the events it counts (they travel on another
// subscription): they are all written before the stream ends.
func TestStreamResultBeforeItsEvents(t *testing.T) {
	r := newRig(t, nil)
	pending := r.send(r.request(context.Background(), http.MethodPost, "/v1/chat/completions", demoToken, streamBody))
	c := r.nextCall()
	r.result(c, messages.Result{HTTPStatus: 200, Chunks: 3})
	if err := r.nc.Flush(); err != nil {
		t.Fatal(err)
	}
	time.Sleep(50 * time.Millisecond)
	for i := 1; i <= 3; i++ {
		r.chunk(c, i, fmt.Sprintf("data: %d", i))
	}
	a := r.wait(pending)
	if a.Body != "data: 1\n\ndata: 2\n\ndata: 3\n\n" {
		t.Errorf("stream %q", a.Body)
	}
	r.noCancel()
}

// A call that fails before its first event is an HTTP error; one that
// fails after ends the stream with an error event, in each dialect.
func TestStreamErrors(t *testing.T) {
	r := newRig(t, nil)
	anthropicStream := `{"model":"claude","stream":true,"max_tokens":5,"messages":[{"role":"user","content":"hi"}]}`

	t.Run("before the first event", func(t *testing.T) {
		pending := r.send(r.request(context.Background(), http.MethodPost, "/v1/chat/completions", demoToken, streamBody))
		c := r.nextCall()
		r.result(c, messages.Result{Error: &messages.Error{Code: messages.CodeQueueFull, Message: "full", RetryAfterMS: 3000}})
		a := r.wait(pending)
		if a.Status != 429 || a.Header.Get("Retry-After") != "3" {
			t.Fatalf("status %d Retry-After %q: %s", a.Status, a.Header.Get("Retry-After"), a.Body)
		}
		openAIError(t, a.Body)
	})
	t.Run("provider refused the stream", func(t *testing.T) {
		pending := r.send(r.request(context.Background(), http.MethodPost, "/v1/messages", demoToken, anthropicStream))
		c := r.nextCall()
		body := `{"type":"error","error":{"type":"invalid_request_error","message":"stream: no"}}`
		r.result(c, messages.Result{HTTPStatus: 400, Body: []byte(body), Error: &messages.Error{Code: messages.CodeProviderError, Message: "refused", ProviderStatus: 400}})
		a := r.wait(pending)
		if a.Status != 400 || a.Body != body {
			t.Fatalf("status %d: %s", a.Status, a.Body)
		}
	})
	for _, route := range []struct {
		path, body, errorPrefix, errorType string
	}{
		{"/v1/chat/completions", streamBody, "data: ", "api_error"},
		{"/v1/messages", anthropicStream, "event: error\ndata: ", "api_error"},
	} {
		t.Run("mid-stream "+route.path, func(t *testing.T) {
			pending := r.send(r.request(context.Background(), http.MethodPost, route.path, demoToken, route.body))
			c := r.nextCall()
			r.chunk(c, 1, "data: 1")
			r.chunk(c, 2, "data: 2")
			r.result(c, messages.Result{Chunks: 2, Error: &messages.Error{Code: messages.CodeProviderError, Message: "the stream broke off after 2 chunks"}})
			a := r.wait(pending)
			if a.Status != 200 {
				t.Fatalf("status %d", a.Status)
			}
			events := strings.Split(strings.TrimSuffix(a.Body, "\n\n"), "\n\n")
			if len(events) != 3 || events[0] != "data: 1" || events[1] != "data: 2" || !strings.HasPrefix(events[2], route.errorPrefix) || !strings.HasSuffix(a.Body, "\n\n") {
				t.Fatalf("stream %q", a.Body)
			}
			data := strings.TrimPrefix(events[2], route.errorPrefix)
			if route.path == "/v1/messages" {
				if msg, _ := anthropicError(t, data); !strings.Contains(msg, "broke off") {
					t.Errorf("error event %s", data)
				}
			} else if msg, _, code, _ := openAIError(t, data); code != "provider_error" || !strings.Contains(msg, "broke off") {
				t.Errorf("error event %s", data)
			}
		})
	}
}

// A stream its own deadline cut mid-way ends with the call's error,
// deadline_exceeded, in each dialect, and is counted as cut by its
// deadline, not as a failure.
func TestStreamCutByItsDeadline(t *testing.T) {
	r := newRig(t, nil)
	for i, route := range []struct {
		path, body, errorPrefix string
	}{
		{"/v1/chat/completions", streamBody, "data: "},
		{"/v1/messages", `{"model":"claude","stream":true,"max_tokens":5,"messages":[{"role":"user","content":"hi"}]}`, "event: error\ndata: "},
	} {
		t.Run(route.path, func(t *testing.T) {
			pending := r.send(r.request(context.Background(), http.MethodPost, route.path, demoToken, route.body))
			c := r.nextCall()
			r.chunk(c, 1, "data: 1")
			r.result(c, messages.Result{Chunks: 1, Error: &messages.Error{Code: messages.CodeDeadlineExceeded, Message: "the deadline passed after 1 chunks of the stream"}})
			a := r.wait(pending)
			events := strings.Split(strings.TrimSuffix(a.Body, "\n\n"), "\n\n")
			if a.Status != 200 || len(events) != 2 || !strings.HasPrefix(events[1], route.errorPrefix) {
				t.Fatalf("status %d, stream %q", a.Status, a.Body)
			}
			data := strings.TrimPrefix(events[1], route.errorPrefix)
			if route.path == "/v1/messages" {
				if _, typ := anthropicError(t, data); typ != "timeout_error" {
					t.Errorf("error event %s", data)
				}
			} else if _, typ, code, _ := openAIError(t, data); typ != "timeout_error" || code != string(messages.CodeDeadlineExceeded) {
				t.Errorf("error event %s", data)
			}
			want := fmt.Sprintf(`sluice_gateway_streams_truncated_total reason="deadline" %d`, i+1)
			waitFor(t, "the truncation to be counted", func() bool { return strings.Contains(r.metrics(), want) })
			if strings.Contains(r.metrics(), `sluice_gateway_streams_truncated_total reason="error"`) {
				t.Errorf("a stream cut by its deadline counted as an error:\n%s", r.metrics())
			}
		})
	}
}

// A gap in the numbering means events were lost: the stream ends with an
// error event rather than go on with a hole, and the call is canceled.
func TestStreamGap(t *testing.T) {
	r := newRig(t, nil)
	pending := r.send(r.request(context.Background(), http.MethodPost, "/v1/chat/completions", demoToken, streamBody))
	c := r.nextCall()
	r.chunk(c, 1, "data: 1")
	r.chunk(c, 3, "data: 3")
	r.waitCancel(c.Call.ID)
	a := r.wait(pending)
	if !strings.HasPrefix(a.Body, "data: 1\n\ndata: {\"error\":") || strings.Contains(a.Body, "data: 3") {
		t.Fatalf("stream %q", a.Body)
	}
	if !strings.Contains(r.metrics(), `sluice_gateway_streams_truncated_total reason="lost_chunks" 1`) {
		t.Errorf("truncation not counted:\n%s", r.metrics())
	}
	if !strings.Contains(r.logs.String(), "chunks of the stream were lost") {
		t.Errorf("the gap is not logged:\n%s", r.logs)
	}

	// A result counting events that never come ends the stream as well
	// (after a bounded wait for them).
	pending = r.send(r.request(context.Background(), http.MethodPost, "/v1/chat/completions", demoToken, streamBody))
	c = r.nextCall()
	r.chunk(c, 1, "data: 1")
	r.result(c, messages.Result{HTTPStatus: 200, Chunks: 2})
	a = r.wait(pending)
	if !strings.HasPrefix(a.Body, "data: 1\n\ndata: {\"error\":") {
		t.Fatalf("stream %q", a.Body)
	}
}

// A client that goes away mid-stream cancels its call.
func TestStreamClientGoesAway(t *testing.T) {
	r := newRig(t, nil)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	req := r.request(ctx, http.MethodPost, "/v1/chat/completions", demoToken, streamBody)
	respCh := make(chan *http.Response, 1)
	go func() {
		resp, err := r.client.Do(req)
		if err != nil {
			t.Error(err)
			close(respCh)
			return
		}
		respCh <- resp
	}()
	c := r.nextCall()
	r.chunk(c, 1, "data: 1")
	resp := <-respCh
	if resp == nil {
		t.FailNow()
	}
	readEvent(t, bufio.NewReader(resp.Body))
	cancel()
	resp.Body.Close()
	r.waitCancel(c.Call.ID)
	waitFor(t, "the truncation to be counted", func() bool {
		return strings.Contains(r.metrics(), `sluice_gateway_streams_truncated_total reason="client_gone" 1`)
	})
}

// A client that stops reading is cut off, and its call canceled, once
// StreamBuffer events wait for it or one write takes WriteTimeout, while
// the gateway goes on serving everyone else.
func TestStreamSlowClient(t *testing.T) {
	for _, tc := range []struct {
		name   string
		tune   func(*gateway.Config)
		reason string
	}{
		{"buffer overflows", func(c *gateway.Config) { c.StreamBuffer = 4; c.WriteTimeout = hang }, "slow_client"},
		{"write times out", func(c *gateway.Config) { c.StreamBuffer = 1 << 20; c.WriteTimeout = 300 * time.Millisecond }, "slow_client"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := newRig(t, tc.tune)
			conn := stalledStream(t, r)
			c := r.nextCall()
			event := "data: " + strings.Repeat("x", 16<<10)
			stop := make(chan struct{})
			published := make(chan struct{})
			go func() {
				defer close(published)
				for i := 1; i <= 4000; i++ {
					select {
					case <-stop:
						return
					default:
					}
					r.chunk(c, i, event)
				}
			}()
			r.waitCancel(c.Call.ID)
			close(stop)
			<-published

			// Others are served all along.
			pending := r.send(r.request(context.Background(), http.MethodPost, "/v1/chat/completions", demoToken, chatBody))
			other := r.nextCall()
			r.result(other, messages.Result{HTTPStatus: 200, Body: []byte(`{"ok":1}`)})
			if a := r.wait(pending); a.Status != 200 || a.Body != `{"ok":1}` {
				t.Errorf("another call while one client is stuck: %d %s", a.Status, a.Body)
			}
			r.result(c, messages.Result{Error: &messages.Error{Code: messages.CodeCanceled, Message: "canceled"}})
			waitFor(t, "the truncation to be counted", func() bool {
				return strings.Contains(r.metrics(), `sluice_gateway_streams_truncated_total reason="`+tc.reason+`" 1`)
			})
			conn.Close()
		})
	}
}

// stalledStream starts a streamed call on a connection that never reads
// its answer.
func stalledStream(t *testing.T, r *rig) net.Conn {
	t.Helper()
	conn, err := net.Dial("tcp", strings.TrimPrefix(r.url, "http://"))
	if err != nil {
		t.Fatal(err)
	}
	_ = conn.(*net.TCPConn).SetReadBuffer(4096)
	t.Cleanup(func() { conn.Close() })
	fmt.Fprintf(conn, "POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer %s\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n%s",
		demoToken, len(streamBody), streamBody)
	return conn
}

func waitFor(t *testing.T, what string, ok func() bool) {
	t.Helper()
	deadline := time.Now().Add(hang)
	for !ok() {
		if time.Now().After(deadline) {
			t.Fatalf("waited %s for %s", hang, what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}
