package test

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/sluicehq/sluice/messages"
	"github.com/sluicehq/sluice/services/fakeprovider"
	"github.com/sluicehq/sluice/services/gateway"
)

// A client that goes away mid-stream cancels its call: the provider
// request is closed, its tokens are settled with the dispatcher that
// admitted it, and the call ends with exactly one result.
func TestGatewayClientDisconnectsMidStream(t *testing.T) {
	s := startStack(t, stackOptions{fake: fakeprovider.Config{ChunkDelay: 20 * time.Millisecond}})
	startDispatcher(t, s, "d1", nil)
	startExecutors(t, s)
	url := startGateway(t, s, nil)
	results := watchResults(t, connect(t, s), "demo")
	settled := make(chan messages.AttemptDone, 4)
	doneSub, err := connect(t, s).Subscribe(messages.DoneSubject("d1"), func(m *nats.Msg) {
		var d messages.AttemptDone
		if json.Unmarshal(m.Data, &d) == nil {
			settled <- d
		}
	})
	if err != nil {
		t.Fatal(err)
	}
	defer doneSub.Unsubscribe()

	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	resp := gatewayPost(ctx, t, url, "/v1/chat/completions",
		`{"model":"gpt-4o-mini","stream":true,"max_tokens":200,"messages":[{"role":"user","content":"hello there"}]}`)
	if resp.StatusCode != 200 {
		t.Fatalf("status %d: %s", resp.StatusCode, readAll(t, resp))
	}
	id := resp.Header.Get("x-sluice-call-id")
	br := bufio.NewReader(resp.Body)
	for range 3 {
		if e := nextEvent(t, br); !strings.HasPrefix(e, "data: {") {
			t.Fatalf("event %q", e)
		}
	}
	cancel()
	resp.Body.Close()

	waitUntil(t, "the provider request to be closed", 30*time.Second, func() bool {
		return s.Fake.Stats().Total.StreamAborts == 1
	})
	results.waitFor(t, []string{id}, 30*time.Second)
	r := results.one(t, id)
	if r.Error == nil || (r.Error.Code != messages.CodeCanceled && r.Error.Code != messages.CodeProviderError) {
		t.Fatalf("result %+v, want canceled (or provider_error)", r.Error)
	}
	if r.Chunks < 3 {
		t.Errorf("the result counts %d chunks; the client read 3", r.Chunks)
	}
	// Settled: the reservation (prompt + max_tokens) shrinks to what was
	// used, the prompt and the chunks streamed before the close.
	// On a busy machine the work may have reached its executor late, and
	// gone back through admission unsent first: that report settles
	// nothing, and the next one is the attempt's.
	for sent := false; !sent; {
		select {
		case d := <-settled:
			if d.CallID == id && d.Outcome == messages.OutcomeNotSent {
				continue
			}
			sent = true
			if d.CallID != id || d.Outcome != messages.OutcomeCanceled {
				t.Fatalf("settlement %+v, want call %s canceled", d, id)
			}
			if d.UsedTokens < int64(r.Chunks) || d.UsedTokens >= d.ReservedTokens {
				t.Errorf("settled %d of %d reserved tokens after %d chunks", d.UsedTokens, d.ReservedTokens, r.Chunks)
			}
		case <-time.After(10 * time.Second):
			t.Fatal("the attempt was never settled with its dispatcher")
		}
	}
	// Nothing else comes for it: no retry, no second result.
	time.Sleep(500 * time.Millisecond)
	results.exactlyOnce(t, []string{id})
	st := s.Fake.Stats().Total
	if st.Received != 1 || st.Finished() != 1 || st.Served != 0 {
		t.Errorf("the provider received %d calls, finished %d, served %d; want 1, 1, 0", st.Received, st.Finished(), st.Served)
	}
}

// A client that disconnects while its call still waits for capacity
// cancels it before it is sent: the provider never sees it.
func TestGatewayClientDisconnectsWhileQueued(t *testing.T) {
	// One request a minute: the first call takes it, the second waits.
	yaml := func(fakeURL string) string {
		return fmt.Sprintf(`pools:
  slow:
    deployments:
      - {id: slow-1, provider: openai, base_url: %q, region: us-east, key: SLOW_KEY, rpm: 1, tpm: 100000}
teams:
  demo:
    tokens: [%q]
`, fakeURL+"/v1", "sha256:1c590839af894cf25f9a5fe06929af05b377f60efbe55508ef93d251887b9213")
	}
	s := startStack(t, stackOptions{yaml: yaml})
	startDispatcher(t, s, "d1", nil)
	startExecutors(t, s)
	url := startGateway(t, s, nil)
	results := watchResults(t, connect(t, s), "demo")
	body := `{"model":"slow","max_tokens":5,"messages":[{"role":"user","content":"hi"}]}`
	if resp := gatewayPost(t.Context(), t, url, "/v1/chat/completions", body); resp.StatusCode != 200 {
		t.Fatalf("first call: %d %s", resp.StatusCode, readAll(t, resp))
	}

	// See the second call published, and waiting in the dispatcher.
	nc := connect(t, s)
	published := make(chan string, 1)
	callSub, err := nc.Subscribe(messages.CallSubject("demo", messages.TierStandard), func(m *nats.Msg) {
		published <- m.Header.Get(messages.HeaderMsgID)
	})
	if err != nil {
		t.Fatal(err)
	}
	defer callSub.Unsubscribe()
	waiting := make(chan struct{}, 1)
	stateSub, err := nc.Subscribe(messages.StateSubject, func(m *nats.Msg) {
		var st messages.DispatcherState
		if json.Unmarshal(m.Data, &st) == nil {
			for _, q := range st.Queues {
				if q.Pool == "slow" && q.Depth == 1 {
					select {
					case waiting <- struct{}{}:
					default:
					}
				}
			}
		}
	})
	if err != nil {
		t.Fatal(err)
	}
	defer stateSub.Unsubscribe()
	if err := nc.Flush(); err != nil {
		t.Fatal(err)
	}

	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	answered := make(chan error, 1)
	go func() {
		req, _ := http.NewRequestWithContext(ctx, http.MethodPost, url+"/v1/chat/completions", strings.NewReader(body))
		req.Header.Set("Authorization", "Bearer "+devToken)
		resp, err := http.DefaultClient.Do(req)
		if err == nil {
			resp.Body.Close()
			err = fmt.Errorf("answered %d", resp.StatusCode)
		} else {
			err = nil
		}
		answered <- err
	}()
	var id string
	select {
	case id = <-published:
	case <-time.After(30 * time.Second):
		t.Fatal("the second call was not published")
	}
	select {
	case <-waiting:
	case <-time.After(30 * time.Second):
		t.Fatal("the second call is not waiting in the dispatcher")
	}
	cancel()
	if err := <-answered; err != nil {
		t.Fatalf("the queued call: %v", err)
	}
	results.waitFor(t, []string{id}, 90*time.Second)
	if r := results.one(t, id); r.Error == nil || r.Error.Code != messages.CodeCanceled {
		t.Errorf("the canceled call's result: %+v", r.Error)
	}
	if got := s.Fake.Stats().Total.Received; got != 1 {
		t.Errorf("the provider received %d calls, want only the first", got)
	}
}

// A client that reads its stream too slowly is cut off and its call
// canceled, while the gateway serves everyone else.
func TestGatewaySlowReaderDoesNotStallOthers(t *testing.T) {
	yaml := func(fakeURL string) string {
		return fmt.Sprintf(`pools:
  gpt-4o-mini:
    deployments:
      - {id: big-1, provider: openai, base_url: %q, region: us-east, key: BIG_KEY, rpm: 100000, tpm: 1000000000}
teams:
  demo:
    tokens: [%q]
`, fakeURL+"/v1", "sha256:1c590839af894cf25f9a5fe06929af05b377f60efbe55508ef93d251887b9213")
	}
	// Each choice goes on for a million tokens unless max_tokens stops it.
	s := startStack(t, stackOptions{yaml: yaml, fake: fakeprovider.Config{CompletionTokens: 1 << 20}})
	startDispatcher(t, s, "d1", nil)
	startExecutors(t, s)
	// Only the bounded buffer can find the client out: no write times out.
	url := startGateway(t, s, func(c *gateway.Config) { c.StreamBuffer = 16; c.WriteTimeout = 10 * time.Minute })
	results := watchResults(t, connect(t, s), "demo")

	// The slow client reads the answer's header, then nothing more.
	conn, err := net.Dial("tcp", strings.TrimPrefix(url, "http://"))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	_ = conn.(*net.TCPConn).SetReadBuffer(4096)
	body := `{"model":"gpt-4o-mini","stream":true,"max_tokens":1000000,"messages":[{"role":"user","content":"tell me everything"}]}`
	fmt.Fprintf(conn, "POST /v1/chat/completions HTTP/1.1\r\nHost: gateway\r\nAuthorization: Bearer %s\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n%s", devToken, len(body), body)
	resp, err := http.ReadResponse(bufio.NewReaderSize(conn, 4096), nil)
	if err != nil {
		t.Fatal(err)
	}
	slowID := resp.Header.Get("x-sluice-call-id")
	if resp.StatusCode != 200 || slowID == "" {
		t.Fatalf("status %d, call id %q", resp.StatusCode, slowID)
	}

	// Everyone else is served meanwhile.
	var wg sync.WaitGroup
	for i := range 20 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			stream := i%2 == 0
			b := fmt.Sprintf(`{"model":"gpt-4o-mini","stream":%v,"max_tokens":3,"messages":[{"role":"user","content":"hi"}]}`, stream)
			resp := gatewayPost(t.Context(), t, url, "/v1/chat/completions", b)
			out := readAll(t, resp)
			if resp.StatusCode != 200 || (stream && !strings.HasSuffix(out, "data: [DONE]\n\n")) {
				t.Errorf("call %d: %d %q", i, resp.StatusCode, out)
			}
		}()
	}
	wg.Wait()

	// The slow one is cut off: its call canceled, the provider request
	// closed, one result.
	results.waitFor(t, []string{slowID}, 60*time.Second)
	if r := results.one(t, slowID); r.Error == nil || r.Error.Code != messages.CodeCanceled {
		t.Errorf("the slow client's call: %+v", r.Error)
	}
	waitUntil(t, "the provider request to be closed", 30*time.Second, func() bool {
		return s.Fake.Stats().Total.StreamAborts == 1
	})
}
