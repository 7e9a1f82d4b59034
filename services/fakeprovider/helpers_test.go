package fakeprovider

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"strconv"
	"sync"
	"testing"
	"time"
)

// manualClock is a clock that moves only when told to.
type manualClock struct {
	mu  sync.Mutex
	now time.Time
}

func newManualClock() *manualClock {
	return &manualClock{now: time.Date(2025, 6, 1, 12, 0, 0, 0, time.UTC)}
}

func (c *manualClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *manualClock) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.now = c.now.Add(d)
}

// harness is a fake behind an httptest server.
type harness struct {
	t     *testing.T
	fake  *Server
	srv   *httptest.Server
	clock *manualClock
}

// newHarness starts a fake on a manual clock unless cfg has a clock.
func newHarness(t *testing.T, cfg Config) *harness {
	t.Helper()
	h := &harness{t: t}
	if cfg.Clock == nil {
		h.clock = newManualClock()
		cfg.Clock = h.clock.Now
	}
	fake, err := New(cfg)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	h.fake = fake
	h.srv = httptest.NewServer(fake)
	// Cleanups run last first: the fake releases hung calls before the
	// test server waits for them.
	t.Cleanup(h.srv.Close)
	t.Cleanup(func() { _ = fake.Close() })
	return h
}

// reply is a response read to the end.
type reply struct {
	status int
	header http.Header
	body   []byte
}

func (h *harness) do(ctx context.Context, method, path, key, body string) (reply, error) {
	var rd io.Reader
	if body != "" {
		rd = bytes.NewBufferString(body)
	}
	req, err := http.NewRequestWithContext(ctx, method, h.srv.URL+path, rd)
	if err != nil {
		return reply{}, err
	}
	if key != "" {
		req.Header.Set("Authorization", "Bearer "+key)
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := h.srv.Client().Do(req)
	if err != nil {
		return reply{}, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return reply{status: resp.StatusCode, header: resp.Header, body: b}, err
}

func (h *harness) post(path, key, body string) reply {
	h.t.Helper()
	r, err := h.do(context.Background(), http.MethodPost, path, key, body)
	if err != nil {
		h.t.Fatalf("POST %s: %v", path, err)
	}
	return r
}

func (h *harness) chat(key, body string) reply {
	h.t.Helper()
	return h.post("/v1/chat/completions", key, body)
}

// decode unmarshals the reply's body into v.
func (r reply) decode(t *testing.T, v any) {
	t.Helper()
	if err := json.Unmarshal(r.body, v); err != nil {
		t.Fatalf("decoding %q: %v", r.body, err)
	}
}

// apiErr decodes an OpenAI error body.
func (r reply) apiErr(t *testing.T) errorDetail {
	t.Helper()
	var b errorBody
	r.decode(t, &b)
	return b.Error
}

// intHeader reads a header that must hold an integer.
func (r reply) intHeader(t *testing.T, name string) int64 {
	t.Helper()
	v := r.header.Get(name)
	n, err := strconv.ParseInt(v, 10, 64)
	if err != nil {
		t.Fatalf("header %s = %q: %v", name, v, err)
	}
	return n
}

func str(p *string) string {
	if p == nil {
		return "<null>"
	}
	return *p
}

// waitFor polls cond until it holds. The deadline only turns a hang into a
// failure; no test depends on how fast anything is.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(2 * time.Millisecond)
	}
}

// A chat request of 9 prompt tokens: "hello world!" is 12 bytes, 3 tokens,
// plus 3 for the message and 3 for the reply.
const helloPrompt = 9

func helloChat(extra string) string {
	return `{"model":"m","messages":[{"role":"user","content":"hello world!"}]` + extra + `}`
}

// send posts body to path (which may carry a query) with exactly the given
// headers besides Content-Type: no bearer key unless one is among them.
func (h *harness) send(path string, headers map[string]string, body string) reply {
	h.t.Helper()
	req, err := http.NewRequest(http.MethodPost, h.srv.URL+path, bytes.NewBufferString(body))
	if err != nil {
		h.t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/json")
	for k, v := range headers {
		req.Header.Set(k, v)
	}
	resp, err := h.srv.Client().Do(req)
	if err != nil {
		h.t.Fatalf("POST %s: %v", path, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		h.t.Fatal(err)
	}
	return reply{status: resp.StatusCode, header: resp.Header, body: b}
}

// noHeaders fails if r carries any of names.
func (r reply) noHeaders(t *testing.T, names ...string) {
	t.Helper()
	for _, n := range names {
		if v := r.header.Get(n); v != "" {
			t.Errorf("header %s = %q, want none", n, v)
		}
	}
}
