package gateway_test

import (
	"context"
	"encoding/json"
	"errors"
	"net"
	"net/http"
	"net/http/httptrace"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/sluicehq/sluice/messages"
	"github.com/sluicehq/sluice/services/embedded"
	"github.com/sluicehq/sluice/services/gateway"
	"github.com/sluicehq/sluice/test/natstest"
)

// A client that goes away while its call waits cancels the call, and is
// counted as 499.
func TestClientGoesAwayWhileWaiting(t *testing.T) {
	r := newRig(t, nil)
	ctx, cancel := context.WithCancel(context.Background())
	pending := r.send(r.request(ctx, http.MethodPost, "/v1/chat/completions", demoToken, chatBody))
	c := r.nextCall()
	r.submitted(c)
	cancel()
	if a := <-pending; a.Err == nil {
		t.Fatalf("the request did not fail: %d", a.Status)
	}
	r.waitCancel(c.Call.ID)
	waitFor(t, "a 499 to be counted", func() bool {
		return strings.Contains(r.metrics(), `sluice_gateway_requests_total route="/v1/chat/completions" status="499" 1`)
	})
	// Its result, when it comes, goes nowhere and breaks nothing.
	r.result(c, messages.Result{Error: &messages.Error{Code: messages.CodeCanceled, Message: "canceled"}})
	pending = r.send(r.request(context.Background(), http.MethodPost, "/v1/chat/completions", demoToken, chatBody))
	c = r.nextCall()
	r.result(c, messages.Result{HTTPStatus: 200, Body: []byte(`{}`)})
	if a := r.wait(pending); a.Status != 200 {
		t.Errorf("next call: %d %s", a.Status, a.Body)
	}
}

// When sluice does not answer by the call's deadline (plus the grace for
// the trip back), the gateway answers 504 itself and cancels the call.
func TestNoResultByTheDeadline(t *testing.T) {
	r := newRig(t, func(c *gateway.Config) { c.ResultGrace = 100 * time.Millisecond })
	for _, path := range []string{"/v1/chat/completions", "/v1/messages"} {
		body := chatBody
		if path == "/v1/messages" {
			body = messagesBody
		}
		pending := r.send(r.request(context.Background(), http.MethodPost, path, demoToken, body, "X-Sluice-Timeout", "200ms"))
		c := r.nextCall()
		if c.Call.TimeoutMS != 200 {
			t.Errorf("timeout_ms %d", c.Call.TimeoutMS)
		}
		a := r.wait(pending)
		if a.Status != 504 {
			t.Fatalf("%s: status %d: %s", path, a.Status, a.Body)
		}
		if path == "/v1/messages" {
			anthropicError(t, a.Body)
		} else if _, _, code, _ := openAIError(t, a.Body); code != "deadline_exceeded" {
			t.Errorf("code %q", code)
		}
		r.waitCancel(c.Call.ID)
	}
	// A stream that started and outlives its deadline ends with an error.
	pending := r.send(r.request(context.Background(), http.MethodPost, "/v1/chat/completions", demoToken, streamBody, "X-Sluice-Timeout", "300ms"))
	c := r.nextCall()
	r.chunk(c, 1, "data: 1")
	a := r.wait(pending)
	if !strings.HasPrefix(a.Body, "data: 1\n\ndata: {\"error\":") || !strings.Contains(a.Body, "deadline_exceeded") {
		t.Errorf("stream %q", a.Body)
	}
	r.waitCancel(c.Call.ID)
}

// Shutting down lets calls in flight finish; those still open after the
// grace are canceled.
func TestGracefulShutdown(t *testing.T) {
	r := newRig(t, func(c *gateway.Config) { c.ShutdownGrace = time.Second })
	finishing := r.send(r.request(context.Background(), http.MethodPost, "/v1/chat/completions", demoToken, chatBody))
	first := r.nextCall()
	stuck := r.send(r.request(context.Background(), http.MethodPost, "/v1/embeddings", demoToken, embBody))
	second := r.nextCall()

	r.stop()
	// New connections are refused once shutdown starts.
	waitFor(t, "new connections to be refused", func() bool {
		_, err := http.Get(r.url + "/healthz")
		return err != nil
	})
	r.result(first, messages.Result{HTTPStatus: 200, Body: []byte(`{"done":true}`)})
	if a := r.wait(finishing); a.Status != 200 || a.Body != `{"done":true}` {
		t.Errorf("the call in flight: %d %s", a.Status, a.Body)
	}
	r.waitCancel(second.Call.ID)
	if a := <-stuck; a.Err == nil {
		t.Errorf("the call past the grace was answered: %d %s", a.Status, a.Body)
	}
	select {
	case err := <-r.done:
		if err != nil {
			t.Errorf("Run returned %v", err)
		}
		r.done <- nil // for the cleanup
	case <-time.After(hang):
		t.Fatal("Run did not return")
	}
}

// A write deadline left on a keep-alive connection does not cut off the
// next request on it, however long that one waits; nor does ReadTimeout.
func TestLongWaitsOnKeepAliveConnections(t *testing.T) {
	r := newRig(t, func(c *gateway.Config) {
		c.WriteTimeout = 200 * time.Millisecond
		c.ReadTimeout = 200 * time.Millisecond
	})
	reused := 0
	reusedLast, continued := false, false
	for i := range 3 {
		trace := &httptrace.ClientTrace{GotConn: func(info httptrace.GotConnInfo) {
			if info.Reused {
				reused++
			}
		}}
		ctx := httptrace.WithClientTrace(context.Background(), trace)
		pending := r.send(r.request(ctx, http.MethodPost, "/v1/chat/completions", demoToken, chatBody))
		c := r.nextCall()
		if i > 0 {
			time.Sleep(600 * time.Millisecond)
		}
		r.result(c, messages.Result{HTTPStatus: 200, Body: []byte(`{"n":1}`)})
		a := <-pending
		if a.Err != nil || a.Status != 200 {
			t.Fatalf("request %d: %v %d %s", i, a.Err, a.Status, a.Body)
		}
	}
	// Idle longer than WriteTimeout, then a request that makes the
	// server write first (100 Continue, before the answer).
	time.Sleep(400 * time.Millisecond)
	trace := &httptrace.ClientTrace{
		GotConn:        func(info httptrace.GotConnInfo) { reusedLast = info.Reused },
		Got100Continue: func() { continued = true },
	}
	req := r.request(httptrace.WithClientTrace(context.Background(), trace), http.MethodPost, "/v1/chat/completions", demoToken, chatBody, "Expect", "100-continue")
	pending := r.send(req)
	c := r.nextCall()
	r.result(c, messages.Result{HTTPStatus: 200, Body: []byte(`{"n":1}`)})
	if a := <-pending; a.Err != nil || a.Status != 200 {
		t.Fatalf("a request expecting 100 Continue after an idle spell: %v %d %s", a.Err, a.Status, a.Body)
	}
	if reused != 2 || !reusedLast || !continued {
		t.Errorf("%d requests reused the connection, want 2; the last reused it: %v; got 100 Continue: %v", reused, reusedLast, continued)
	}
}

// Metrics count requests by route and status, and hold no token.
func TestMetrics(t *testing.T) {
	r := newRig(t, nil)
	r.do(http.MethodPost, "/v1/chat/completions", "", chatBody)
	r.do(http.MethodPost, "/v1/chat/completions", "sk-wrong-token", chatBody)
	pending := r.send(r.request(context.Background(), http.MethodPost, "/v1/embeddings", demoToken, embBody))
	c := r.nextCall()
	waitFor(t, "the call to be in flight", func() bool {
		return strings.Contains(r.metrics(), `sluice_gateway_in_flight route="/v1/embeddings" 1`)
	})
	r.result(c, messages.Result{HTTPStatus: 200, Body: []byte(`{}`)})
	r.wait(pending)
	r.do(http.MethodGet, "/nowhere", "", "")
	waitFor(t, "the metrics", func() bool {
		m := r.metrics()
		return strings.Contains(m, `sluice_gateway_requests_total route="/v1/chat/completions" status="401" 2`) &&
			strings.Contains(m, `sluice_gateway_requests_total route="/v1/embeddings" status="200" 1`) &&
			strings.Contains(m, `sluice_gateway_requests_total route="other" status="404" 1`) &&
			strings.Contains(m, `sluice_gateway_in_flight route="/v1/embeddings" 0`) &&
			strings.Contains(m, `sluice_gateway_request_duration_seconds route="/v1/embeddings" count=1`)
	})
	if m := r.metrics(); strings.Contains(m, demoToken) || strings.Contains(m, "sk-wrong-token") {
		t.Errorf("a token is in the metrics:\n%s", m)
	}
	logs := r.logs.String()
	if strings.Contains(logs, demoToken) || strings.Contains(logs, "sk-wrong-token") {
		t.Errorf("a token is in the logs:\n%s", logs)
	}
	if !strings.Contains(logs, "team=demo") {
		t.Errorf("the logs do not say the team:\n%s", logs)
	}
}

func TestNewNeedsAConfiguration(t *testing.T) {
	if _, err := gateway.New(nil, gateway.Config{}); err == nil || !strings.Contains(err.Error(), "configuration") {
		t.Errorf("New without Shared: %v", err)
	}
	r := newRig(t, nil)
	g, err := gateway.New(natstest.Connect(t, r.srv), gateway.Config{Shared: r.live, Addr: strings.TrimPrefix(r.url, "http://")})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := g.Listen(); err == nil {
		t.Error("Listen on an address in use succeeded")
	}
	if err := g.Run(context.Background()); err == nil || errors.Is(err, context.Canceled) {
		t.Errorf("Run on an address in use: %v", err)
	}
}

// A result published while the gateway's NATS connection was down is
// found in the results stream once it is back.
func TestResultMissedDuringAReconnect(t *testing.T) {
	r := newRig(t, nil)
	pending := r.send(r.request(context.Background(), http.MethodPost, "/v1/chat/completions", demoToken, chatBody))
	c := r.nextCall()
	r.submitted(c)

	port := r.srv.Addr().(*net.TCPAddr).Port
	r.srv.Shutdown()
	r.srv.WaitForShutdown()
	srv, err := embedded.Start(embedded.Config{Port: port, StoreDir: r.dir, Name: "natstest"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { srv.Shutdown(); srv.WaitForShutdown() })
	// Store the result at once, before the gateway is likely back.
	nc, err := nats.Connect(srv.ClientURL())
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	data, _ := json.Marshal(messages.Result{ID: c.Call.ID, Team: c.Team, Tier: c.Tier, Status: messages.StatusOK, HTTPStatus: 200, Body: []byte(`{"late":true}`)})
	ctx, cancel := context.WithTimeout(context.Background(), hang)
	defer cancel()
	if _, err := js.Publish(ctx, messages.AnswerSubject(c.Team, c.Call.ID), data); err != nil {
		t.Fatal(err)
	}
	if a := r.wait(pending); a.Status != 200 || a.Body != `{"late":true}` {
		t.Errorf("%d %s", a.Status, a.Body)
	}
}
