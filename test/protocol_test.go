package test

import (
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/sluicehq/sluice/messages"
)

// A plain nats.go connection, not sluice's client, publishes JSON exactly
// as the README documents and receives the result.
func TestPlainNATSClientMakesACall(t *testing.T) {
	s := startStack(t, stackOptions{})
	startDispatcher(t, s, "d1", nil)
	startExecutors(t, s)

	nc, err := nats.Connect(s.ClientURL())
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	id := "readme-call-1"
	sub, err := nc.SubscribeSync("sluice.result.demo." + id)
	if err != nil {
		t.Fatal(err)
	}
	body := `{"id":"readme-call-1","model":"gpt-4o-mini","body":{"messages":[{"role":"user","content":"hi"}],"max_tokens":20},"metadata":{"trace":"t-1"}}`
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if _, err := js.Publish(ctx, "sluice.call.demo.standard", []byte(body), jetstream.WithMsgID(id)); err != nil {
		t.Fatal(err)
	}
	msg, err := sub.NextMsgWithContext(ctx)
	if err != nil {
		t.Fatal(err)
	}
	var res struct {
		ID         string `json:"id"`
		Team       string `json:"team"`
		Tier       string `json:"tier"`
		Status     string `json:"status"`
		HTTPStatus int    `json:"http_status"`
		Body       struct {
			Object  string `json:"object"`
			Choices []struct {
				Message struct {
					Content string `json:"content"`
				} `json:"message"`
			} `json:"choices"`
		} `json:"body"`
		Usage struct {
			PromptTokens     int `json:"prompt_tokens"`
			CompletionTokens int `json:"completion_tokens"`
			TotalTokens      int `json:"total_tokens"`
		} `json:"usage"`
		Attempts   int               `json:"attempts"`
		Deployment string            `json:"deployment"`
		Region     string            `json:"region"`
		Provider   string            `json:"provider"`
		Metadata   map[string]string `json:"metadata"`
		Timings    struct {
			AcceptedAt time.Time `json:"accepted_at"`
			FinishedAt time.Time `json:"finished_at"`
			TotalMS    float64   `json:"total_ms"`
		} `json:"timings"`
	}
	if err := json.Unmarshal(msg.Data, &res); err != nil {
		t.Fatalf("result is not the documented JSON: %v\n%s", err, msg.Data)
	}
	if res.ID != id || res.Team != "demo" || res.Tier != "standard" || res.Status != "ok" || res.HTTPStatus != 200 {
		t.Fatalf("result header fields: %s", msg.Data)
	}
	if res.Body.Object != "chat.completion" || len(res.Body.Choices) != 1 || res.Body.Choices[0].Message.Content == "" {
		t.Fatalf("the provider body must come back unchanged: %s", msg.Data)
	}
	if res.Usage.TotalTokens == 0 || res.Usage.TotalTokens != res.Usage.PromptTokens+res.Usage.CompletionTokens {
		t.Fatalf("usage: %+v", res.Usage)
	}
	if res.Attempts != 1 || !strings.HasPrefix(res.Deployment, "fake-") || (res.Region != "us-east" && res.Region != "eu-west") || res.Provider != "openai" {
		t.Fatalf("routing fields: %s", msg.Data)
	}
	if res.Metadata["trace"] != "t-1" {
		t.Fatalf("metadata must be echoed: %s", msg.Data)
	}
	if res.Timings.AcceptedAt.IsZero() || res.Timings.FinishedAt.Before(res.Timings.AcceptedAt) || res.Timings.TotalMS <= 0 {
		t.Fatalf("timings: %s", msg.Data)
	}

	// The result stays fetchable from the stream, for a client that was away.
	stored, err := js.Stream(ctx, "SLUICE_RESULTS")
	if err != nil {
		t.Fatal(err)
	}
	// The stream stores the result as subscribers receive it; a get right
	// after may come a moment early.
	var m *jetstream.RawStreamMsg
	for {
		m, err = stored.GetLastMsgForSubject(ctx, "sluice.result.demo."+id)
		if err == nil || ctx.Err() != nil {
			break
		}
		time.Sleep(10 * time.Millisecond)
	}
	if err != nil || string(m.Data) != string(msg.Data) {
		t.Fatalf("stored result: %v", err)
	}

	// Publishing the same call again (same Nats-Msg-Id) runs it once.
	served := s.Fake.Stats().Total.Served
	if _, err := js.Publish(ctx, "sluice.call.demo.standard", []byte(body), jetstream.WithMsgID(id)); err != nil {
		t.Fatal(err)
	}
	if next, err := sub.NextMsg(time.Second); err == nil {
		t.Fatalf("a duplicate publish was answered again: %s", next.Data)
	}
	if got := s.Fake.Stats().Total.Served; got != served {
		t.Fatalf("a duplicate publish reached the provider: served %d, then %d", served, got)
	}
}

// Every kind of bad input gets exactly one error result with a code and a
// message; nothing crashes, and good calls keep flowing afterwards.
func TestBadInputGetsOneErrorResult(t *testing.T) {
	// A provider that answers 200 with an HTML page, as a misconfigured
	// proxy in front of a provider would.
	html := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "text/html")
		_, _ = w.Write([]byte("<html><body>Welcome to nginx!</body></html>"))
	}))
	defer html.Close()

	s := startStack(t, stackOptions{yaml: twoRegionYAML(600, 100000, layout{
		pools: `  html:
    deployments:
      - {id: html-1, provider: openai, base_url: "` + html.URL + `/v1", region: us-east, key: KEY_US_EAST_1, rpm: 600, tpm: 100000}
`,
		teams: "  limited: {tiers: [batch]}\n",
		top:   "calls: {max_body_bytes: 4096}\n",
	})})
	startDispatcher(t, s, "d1", nil)
	startExecutors(t, s)
	nc := connect(t, s)
	js, _ := jetstream.New(nc)
	log := watchResults(t, nc, "demo")
	logNobody := watchResults(t, nc, "nobody")
	logLimited := watchResults(t, nc, "limited")
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()

	past := time.Now().Add(-time.Minute).UTC().Format(time.RFC3339Nano)
	cases := []struct {
		name, team, tier, id, body string
		code                       messages.Code
		log                        *resultLog
	}{
		{"malformed JSON", "demo", "standard", "bad-json", `{"model": "m", "body": {`, messages.CodeInvalidRequest, log},
		{"missing model", "demo", "standard", "no-model", `{"id":"no-model","body":{"messages":[{"role":"user","content":"x"}]}}`, messages.CodeInvalidRequest, log},
		{"unknown model", "demo", "standard", "unknown-model", chatCall("unknown-model", "gpt-9", 5, ""), messages.CodeUnknownModel, log},
		{"unknown tier", "demo", "urgent", "unknown-tier", chatCall("unknown-tier", "m", 5, ""), messages.CodeInvalidRequest, log},
		{"unknown team", "nobody", "standard", "unknown-team", chatCall("unknown-team", "m", 5, ""), messages.CodeForbidden, logNobody},
		{"tier not allowed", "limited", "critical", "tier-forbidden", chatCall("tier-forbidden", "m", 5, ""), messages.CodeForbidden, logLimited},
		{"body over the limit", "demo", "standard", "too-big", `{"id":"too-big","model":"m","body":{"messages":[{"role":"user","content":"` + strings.Repeat("x", 5000) + `"}]}}`, messages.CodeInvalidRequest, log},
		{"deadline already past", "demo", "standard", "past", chatCall("past", "m", 5, `,"deadline":"`+past+`"`), messages.CodeDeadlineExceeded, log},
		{"bad body", "demo", "standard", "bad-body", `{"id":"bad-body","model":"m","body":{"messages":"hi"}}`, messages.CodeInvalidRequest, log},
		{"unknown field", "demo", "standard", "unknown-field", `{"id":"unknown-field","model":"m","body":{"messages":[]},"priority":9}`, messages.CodeInvalidRequest, log},
		{"streamed embeddings", "demo", "standard", "stream", `{"id":"stream","model":"m","endpoint":"/v1/embeddings","body":{"input":"x","stream":true}}`, messages.CodeInvalidRequest, log},
		{"non-JSON provider answer", "demo", "standard", "html", chatCall("html", "html", 5, ""), messages.CodeProviderError, log},
	}
	for _, tc := range cases {
		if err := publishCall(ctx, js, tc.team, tc.tier, tc.id, tc.body); err != nil {
			t.Fatalf("%s: publish: %v", tc.name, err)
		}
	}
	// A call with no id anywhere is answered on an id sluice derives, which
	// a client finds by subscribing to the team's results.
	if err := publishCall(ctx, js, "demo", "standard", "", `not json at all`); err != nil {
		t.Fatal(err)
	}
	// A good call after all that still works.
	if err := publishCall(ctx, js, "demo", "standard", "good", chatCall("good", "m", 5, "")); err != nil {
		t.Fatal(err)
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			tc.log.waitFor(t, []string{tc.id}, 30*time.Second)
			r := tc.log.one(t, tc.id)
			if r.Status != messages.StatusError || r.Error == nil || r.Error.Code != tc.code || r.Error.Message == "" {
				t.Fatalf("want one %s error with a message, got %+v", tc.code, r.Error)
			}
		})
	}
	log.waitFor(t, []string{"good"}, 30*time.Second)
	if r := log.one(t, "good"); r.Status != messages.StatusOK {
		t.Fatalf("good call after bad input: %+v", r.Error)
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		log.mu.Lock()
		var derived []messages.Result
		for id, rs := range log.byID {
			if messages.ValidToken(id) && len(id) == 36 {
				derived = append(derived, rs...)
			}
		}
		log.mu.Unlock()
		if len(derived) == 1 && derived[0].Error != nil && derived[0].Error.Code == messages.CodeInvalidRequest {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("a call without any id should get one invalid_request on a derived id; got %+v", derived)
		}
		time.Sleep(50 * time.Millisecond)
	}
	// Nothing that could be answered went to the dead-letter stream.
	dlq, err := js.Stream(ctx, messages.StreamDeadLetters)
	if err != nil {
		t.Fatal(err)
	}
	if info, _ := dlq.Info(ctx); info.State.Msgs != 0 {
		t.Fatalf("%d dead letters for answerable input", info.State.Msgs)
	}
}

// A message that cannot be parsed enough to answer goes to the dead-letter
// stream, with its reason.
func TestUnanswerableMessageIsDeadLettered(t *testing.T) {
	s := startStack(t, stackOptions{})
	startDispatcher(t, s, "d1", nil)
	nc := connect(t, s)
	js, _ := jetstream.New(nc)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	// Retries are sluice's own messages; garbage on their subject has no
	// call id to answer.
	if _, err := js.Publish(ctx, messages.RetrySubject("demo", messages.TierStandard), []byte("garbage")); err != nil {
		t.Fatal(err)
	}
	dlq, err := js.Stream(ctx, messages.StreamDeadLetters)
	if err != nil {
		t.Fatal(err)
	}
	for {
		m, err := dlq.GetLastMsgForSubject(ctx, messages.DeadLetterSubjects)
		if err == nil {
			if string(m.Data) != "garbage" || m.Header.Get(messages.HeaderDeadLetterReason) == "" ||
				m.Header.Get(messages.HeaderDeadLetterSubject) != messages.RetrySubject("demo", messages.TierStandard) {
				t.Fatalf("dead letter: %q %v", m.Data, m.Header)
			}
			break
		}
		if ctx.Err() != nil {
			t.Fatal("no dead letter")
		}
		time.Sleep(50 * time.Millisecond)
	}
	// And the calls stream no longer holds it.
	calls, _ := js.Stream(ctx, messages.StreamCalls)
	for {
		info, err := calls.Info(ctx)
		if err == nil && info.State.Msgs == 0 {
			break
		}
		if ctx.Err() != nil {
			t.Fatalf("calls stream still holds the dead letter: %+v", info.State)
		}
		time.Sleep(50 * time.Millisecond)
	}
}
