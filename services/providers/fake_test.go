package providers

import (
	"bytes"
	"context"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/sluicehq/sluice/messages"
	"github.com/sluicehq/sluice/services/fakeprovider"
)

// This file runs the adapters against the fake provider, which speaks each
// dialect. A recording handler in front of the fake keeps every request as
// it arrived, so that tests can check what went on the wire: the URL, the
// headers, the body, and that the secret appears in exactly one header.

// fakeClock is a clock that moves only when told to.
type fakeClock struct {
	mu  sync.Mutex
	now time.Time
}

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

// wire is one request as the fake received it.
type wire struct {
	method string
	url    *url.URL
	header http.Header
	body   []byte
}

type fakeAPI struct {
	t     *testing.T
	fake  *fakeprovider.Server
	url   string
	clock *fakeClock

	mu   sync.Mutex
	seen []wire
}

// newFakeAPI serves a fake provider for cfg, on a manual clock at a whole
// second, behind a recorder.
func newFakeAPI(t *testing.T, cfg fakeprovider.Config) *fakeAPI {
	t.Helper()
	f := &fakeAPI{t: t, clock: &fakeClock{now: time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)}}
	cfg.Clock = f.clock.Now
	fake, err := fakeprovider.New(cfg)
	if err != nil {
		t.Fatalf("fakeprovider.New: %v", err)
	}
	f.fake = fake
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		f.mu.Lock()
		f.seen = append(f.seen, wire{method: r.Method, url: r.URL, header: r.Header.Clone(), body: body})
		f.mu.Unlock()
		r.Body = io.NopCloser(bytes.NewReader(body))
		fake.ServeHTTP(w, r)
	}))
	t.Cleanup(srv.Close)
	t.Cleanup(func() { _ = fake.Close() })
	f.url = srv.URL
	return f
}

// do sends req through the provider's adapter.
func (f *fakeAPI) do(provider string, req Request) (*Response, error) {
	f.t.Helper()
	a, err := For(provider)
	if err != nil {
		f.t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	return a.Do(ctx, http.DefaultClient, req)
}

// last is the last request the fake received.
func (f *fakeAPI) last() wire {
	f.t.Helper()
	f.mu.Lock()
	defer f.mu.Unlock()
	if len(f.seen) == 0 {
		f.t.Fatal("the fake received nothing")
	}
	return f.seen[len(f.seen)-1]
}

func (f *fakeAPI) count() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return len(f.seen)
}

// checkSecret asserts that every request carried secret as the value of
// header (with prefix), and nowhere else: no other header, not the URL,
// not the body.
func (f *fakeAPI) checkSecret(secret, header, prefix string) {
	f.t.Helper()
	f.mu.Lock()
	defer f.mu.Unlock()
	for i, w := range f.seen {
		if got := w.header.Get(header); got != prefix+secret {
			f.t.Errorf("request %d: header %s = %q, want the secret there", i, header, got)
		}
		for k, vs := range w.header {
			if http.CanonicalHeaderKey(k) == http.CanonicalHeaderKey(header) {
				continue
			}
			for _, v := range vs {
				if strings.Contains(v, secret) {
					f.t.Errorf("request %d: the secret is in header %s too", i, k)
				}
			}
		}
		if strings.Contains(w.url.String(), secret) || bytes.Contains(w.body, []byte(secret)) {
			f.t.Errorf("request %d: the secret is in the URL or the body", i)
		}
	}
}

// noSecretIn asserts that what an adapter returned does not hold secret.
func noSecretIn(t *testing.T, secret string, resp *Response, err error) {
	t.Helper()
	if err != nil && strings.Contains(err.Error(), secret) {
		t.Errorf("the error holds the secret: %v", err)
	}
	if resp == nil {
		return
	}
	if bytes.Contains(resp.Body, []byte(secret)) {
		t.Error("the response body holds the secret")
	}
	for k, vs := range resp.Header {
		for _, v := range vs {
			if strings.Contains(v, secret) {
				t.Errorf("response header %s holds the secret", k)
			}
		}
	}
}

// expect is what a table case expects of a Response.
type expect struct {
	status    int
	class     Class
	errorType string
	errorCode string
	usage     [3]int64 // prompt, completion, total; zero: no usage expected
	// retryAfter, when not zero, is the exact RetryAfter expected.
	retryAfter time.Duration
}

func (e expect) check(t *testing.T, resp *Response) {
	t.Helper()
	if resp.Status != e.status || resp.Class != e.class {
		t.Fatalf("status %d class %v, want %d %v; body %s", resp.Status, resp.Class, e.status, e.class, resp.Body)
	}
	if resp.ErrorType != e.errorType || resp.ErrorCode != e.errorCode {
		t.Errorf("error type %q code %q, want %q %q", resp.ErrorType, resp.ErrorCode, e.errorType, e.errorCode)
	}
	if e.usage != [3]int64{} {
		if resp.Usage == nil {
			t.Fatalf("no usage; body %s", resp.Body)
		}
		if got := [3]int64{resp.Usage.PromptTokens, resp.Usage.CompletionTokens, resp.Usage.TotalTokens}; got != e.usage {
			t.Errorf("usage %v, want %v", got, e.usage)
		}
	} else if resp.Class != Success && resp.Usage != nil {
		t.Errorf("usage %+v on an error", resp.Usage)
	}
	if e.retryAfter != 0 && resp.Limits.RetryAfter != e.retryAfter {
		t.Errorf("RetryAfter %v, want %v", resp.Limits.RetryAfter, e.retryAfter)
	}
}

func TestUnsupportedEndpointsSendNothing(t *testing.T) {
	f := newFakeAPI(t, fakeprovider.Config{AcceptAnyKey: true})
	for _, tc := range []struct {
		provider string
		endpoint string
	}{
		{"openai", "/v1/messages"},
		{"azure", "/v1/messages"},
		{"anthropic", "/v1/chat/completions"},
		{"anthropic", "/v1/embeddings"},
		{"anthropic", "/v1/completions"},
		{"openai", "/v1/messages/count_tokens"},
		{"azure", "/v1/messages/count_tokens"},
		{"anthropic", "/v1/responses"},
		{"openai", "/v1/images/generations"},
	} {
		resp, err := f.do(tc.provider, Request{Endpoint: messages.Endpoint(tc.endpoint), Body: []byte(`{}`), Model: "m", BaseURL: f.url, Secret: "sk"})
		if !errors.Is(err, ErrUnsupportedEndpoint) || resp != nil {
			t.Errorf("%s %s: %v, %v; want ErrUnsupportedEndpoint", tc.provider, tc.endpoint, resp, err)
		}
	}
	for _, p := range []string{"openai", "anthropic"} {
		ep := "/v1/chat/completions"
		if p == "anthropic" {
			ep = "/v1/messages"
		}
		if _, err := f.do(p, Request{Endpoint: messages.Endpoint(ep), Body: []byte(`[1]`), Model: "m", BaseURL: f.url, Secret: "sk"}); !errors.Is(err, ErrInvalidBody) {
			t.Errorf("%s with a body that is no object: %v, want ErrInvalidBody", p, err)
		}
	}
	if n := f.count(); n != 0 {
		t.Errorf("the fake received %d requests", n)
	}
}

// An answer larger than MaxResponseBytes is cut there: the adapter neither
// runs out of memory nor trusts anything in the truncated body (the usage
// at its start, a RetryInfo).
func TestEnormousAnswerIsCut(t *testing.T) {
	for _, status := range []int{200, 429} {
		srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			w.WriteHeader(status)
			_, _ = io.WriteString(w, `{"usage":{"prompt_tokens":1,"completion_tokens":1},"error":{"details":[{"@type":"google.rpc.RetryInfo","retryDelay":"9s"}]},"pad":"`)
			chunk := strings.Repeat("x", 1<<20)
			for range MaxResponseBytes>>20 + 1 {
				if _, err := io.WriteString(w, chunk); err != nil {
					return
				}
			}
			_, _ = io.WriteString(w, `"}`)
		}))
		providers := []string{"openai", "azure", "anthropic"}
		if status == 429 {
			providers = providers[:1] // the 429 path is shared
		}
		for _, p := range providers {
			ep := messages.EndpointChatCompletions
			if p == "anthropic" {
				ep = messages.EndpointMessages
			}
			a, _ := For(p)
			resp, err := a.Do(context.Background(), nil, Request{Endpoint: ep, Body: []byte(`{}`), Model: "m", BaseURL: srv.URL, Secret: "k"})
			if err != nil {
				t.Fatalf("%s %d: %v", p, status, err)
			}
			if len(resp.Body) != MaxResponseBytes || resp.Usage != nil || resp.Limits.RetryAfter != 0 || resp.Status != status {
				t.Errorf("%s %d: %d bytes, usage %v, retry after %v", p, status, len(resp.Body), resp.Usage, resp.Limits.RetryAfter)
			}
		}
		srv.Close()
	}
}
