package test

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/sluicehq/sluice/messages"
	"github.com/sluicehq/sluice/services/config"
	"github.com/sluicehq/sluice/services/results"
	"github.com/sluicehq/sluice/services/tokens"
	"github.com/sluicehq/sluice/services/usage"
)

// refusalsMaxBody is calls.max_body_bytes in refusalsYAML.
const refusalsMaxBody = 4096

// refusalsYAML has pool m of a small deployment in us-east (2,000 TPM)
// and a larger one in eu-west (600,000 TPM: its second's 10,000 tokens
// hold the call that fits, so that it never waits for the schedule to
// idle before it, as a call larger than a tenth of a second's tokens
// does: 34 s at 6,000 TPM), an Anthropic pool claude of
// 2,000 TPM, team demo with the dev token, and bodies of at most
// refusalsMaxBody bytes.
func refusalsYAML(fakeURL string) string {
	return fmt.Sprintf(`pools:
  m:
    deployments:
      - {id: us-1, provider: openai, base_url: %[1]q, region: us-east, key: KEY_US_1, rpm: 600, tpm: 2000}
      - {id: eu-1, provider: openai, base_url: %[1]q, region: eu-west, key: KEY_EU_1, rpm: 600, tpm: 600000}
  claude:
    deployments:
      - {id: claude-1, provider: anthropic, base_url: %[1]q, region: us-east, model: claude-sonnet-4, key: CLAUDE_KEY, rpm: 600, tpm: 2000}
teams:
  demo:
    tokens: [%[2]q]
calls: {max_body_bytes: %[3]d}
`, fakeURL+"/v1", config.HashToken(devToken), refusalsMaxBody)
}

// A call whose token reservation is over the configured TPM of every
// deployment it may use could never be sent: it is refused at once, with
// its reservation and the most a deployment admits in the message, over
// NATS and through the gateway, and usage counts no wait for it. A call
// that fits one of the deployments goes.
func TestCallThatCanNeverFitIsRefusedAtOnce(t *testing.T) {
	s := startStack(t, stackOptions{yaml: refusalsYAML})
	startDispatcher(t, s, "d1", nil)
	startExecutors(t, s)
	nc := connect(t, s)
	js, _ := jetstream.New(nc)
	log := watchResults(t, nc, "demo")
	url := startGateway(t, s, nil)
	ctx, cancel := context.WithTimeout(t.Context(), 2*time.Minute)
	defer cancel()

	chatBody := func(maxTokens int) string {
		return fmt.Sprintf(`{"messages":[{"role":"user","content":"hello there"}],"max_tokens":%d}`, maxTokens)
	}
	reservation := func(endpoint messages.Endpoint, body string) string {
		est, bad := tokens.Of(endpoint, []byte(body), 256)
		if bad != nil {
			t.Fatal(bad)
		}
		return strconv.FormatInt(est.Total(), 10)
	}
	huge, usOnly, fits := chatBody(700000), chatBody(3000), chatBody(3000)
	for _, c := range []struct{ id, tier, body, extra string }{
		{"never-fits", "high", huge, ""},
		{"never-fits-in-us", "high", usOnly, `,"regions":["us-east"]`},
		{"fits-in-eu", "standard", fits, ""},
	} {
		call := fmt.Sprintf(`{"id":%q,"model":"m","body":%s,"timeout_ms":120000%s}`, c.id, c.body, c.extra)
		if err := publishCall(ctx, js, "demo", c.tier, c.id, call); err != nil {
			t.Fatal(err)
		}
	}
	log.waitFor(t, []string{"never-fits", "never-fits-in-us", "fits-in-eu"}, time.Minute)
	for _, c := range []struct{ id, reserved, most string }{
		{"never-fits", reservation(messages.EndpointChatCompletions, huge), "600000"},
		{"never-fits-in-us", reservation(messages.EndpointChatCompletions, usOnly), "2000"},
	} {
		r := log.one(t, c.id)
		if r.Error == nil || r.Error.Code != messages.CodeInvalidRequest {
			t.Fatalf("%s: want invalid_request, got %+v", c.id, r.Error)
		}
		if !strings.Contains(r.Error.Message, c.reserved) || !strings.Contains(r.Error.Message, c.most) {
			t.Errorf("%s: the message should say it reserves %s tokens and a deployment admits at most %s: %q", c.id, c.reserved, c.most, r.Error.Message)
		}
		if r.Attempts != 0 || r.Timings.QueuedMS != 0 {
			t.Errorf("%s: refused after %d attempts and %v ms in the queue, want at once", c.id, r.Attempts, r.Timings.QueuedMS)
		}
	}
	if !strings.Contains(log.one(t, "never-fits-in-us").Error.Message, "us-east") {
		t.Errorf("the refusal of a call restricted to us-east should name the region: %q", log.one(t, "never-fits-in-us").Error.Message)
	}
	if r := log.one(t, "fits-in-eu"); r.Status != messages.StatusOK || r.Region != "eu-west" {
		t.Fatalf("a call that fits eu-west: %+v in %q", r.Error, r.Region)
	}

	t.Run("through the gateway, OpenAI", func(t *testing.T) {
		resp := gatewayPost(ctx, t, url, "/v1/chat/completions", `{"model":"m","max_tokens":700000,"messages":[{"role":"user","content":"hello there"}]}`,
			"X-Sluice-Tier", "high", "X-Sluice-Timeout", "2m")
		body := readAll(t, resp)
		var e struct {
			Error struct{ Message, Type, Code string } `json:"error"`
		}
		if err := json.Unmarshal([]byte(body), &e); err != nil || resp.StatusCode != http.StatusBadRequest ||
			e.Error.Code != string(messages.CodeInvalidRequest) || e.Error.Type != "invalid_request_error" {
			t.Fatalf("status %d: %s", resp.StatusCode, body)
		}
		if want := reservation(messages.EndpointChatCompletions, `{"model":"m","max_tokens":700000,"messages":[{"role":"user","content":"hello there"}]}`); !strings.Contains(e.Error.Message, want) || !strings.Contains(e.Error.Message, "600000") {
			t.Errorf("message %q should name the reservation %s and 600000", e.Error.Message, want)
		}
		if q := resp.Header.Get("x-sluice-queued-ms"); q != "0" {
			t.Errorf("x-sluice-queued-ms %q, want 0", q)
		}
	})
	t.Run("through the gateway, Anthropic", func(t *testing.T) {
		req := `{"model":"claude","max_tokens":5000,"messages":[{"role":"user","content":"hello there"}]}`
		resp := gatewayPost(ctx, t, url, "/v1/messages", req, "Authorization", "", "x-api-key", devToken, "X-Sluice-Timeout", "2m")
		body := readAll(t, resp)
		var e struct {
			Type  string                         `json:"type"`
			Error struct{ Type, Message string } `json:"error"`
		}
		if err := json.Unmarshal([]byte(body), &e); err != nil || resp.StatusCode != http.StatusBadRequest || e.Type != "error" || e.Error.Type != "invalid_request_error" {
			t.Fatalf("status %d: %s", resp.StatusCode, body)
		}
		if want := reservation(messages.EndpointMessages, req); !strings.Contains(e.Error.Message, want) || !strings.Contains(e.Error.Message, "2000") {
			t.Errorf("message %q should name the reservation %s and 2000", e.Error.Message, want)
		}
	})

	// Usage counts the refusals as errors that waited for nothing.
	kv, err := js.KeyValue(ctx, messages.BucketUsage)
	if err != nil {
		t.Fatal(err)
	}
	var high usage.Total
	waitUntil(t, "usage to count the refusals", 30*time.Second, func() bool {
		totals, err := usage.Query(ctx, kv, time.Now().Add(-2*time.Hour), time.Now().Add(time.Hour))
		if err != nil {
			t.Fatal(err)
		}
		for _, tot := range totals {
			if tot.Team == "demo" && tot.Pool == "m" && tot.Tier == messages.TierHigh {
				high = tot
			}
		}
		return high.Calls >= 3
	})
	if high.Calls != 3 || high.Errors[messages.CodeInvalidRequest] != 3 || high.Wait.Counts[0] != 3 || high.Attempts != 0 {
		t.Errorf("usage of the refused calls: %d calls, errors %v, %d attempts, waits %v: want 3 invalid_request, none waiting a millisecond",
			high.Calls, high.Errors, high.Attempts, high.Wait.Counts)
	}
}

// A call id that is not a subject token is refused, and the refusal is
// the one result the client receives where it listens: on
// sluice.result.<team>.<the id as sent> when that is a subject, else on
// the Nats-Msg-Id when that is a valid id, else on the id derived from
// the call's sequence in SLUICE_CALLS (which the client's PubAck gives).
func TestBadCallIDIsAnsweredWhereTheClientListens(t *testing.T) {
	s := startStack(t, stackOptions{yaml: refusalsYAML})
	startDispatcher(t, s, "d1", nil)
	startExecutors(t, s)
	nc := connect(t, s)
	js, _ := jetstream.New(nc)
	ctx, cancel := context.WithTimeout(t.Context(), 2*time.Minute)
	defer cancel()

	type answer struct{ name, listen string }
	var want []answer
	// Ids that make a subject: answered there.
	for _, c := range []struct{ name, bodyID, msgID, listen string }{
		{"a dot", "dot.id", "dot.id", "dot.id"},
		{"dots, in Nats-Msg-Id only", "", "a.b.c", "a.b.c"},
		{"65 characters", strings.Repeat("x", 65), strings.Repeat("x", 65), strings.Repeat("x", 65)},
		{"unicode", "ünïcødé-✓", "ünïcødé-✓", "ünïcødé-✓"},
		{"'@' and '$'", "call@host$1", "", "call@host$1"},
		{"a space, with a good Nats-Msg-Id", "has space", "fallback-1", "fallback-1"},
	} {
		sub, err := nc.SubscribeSync(messages.ResultSubject("demo", c.listen))
		if err != nil {
			t.Fatal(err)
		}
		if err := nc.Flush(); err != nil {
			t.Fatal(err)
		}
		if err := publishCall(ctx, js, "demo", "standard", c.msgID, chatCall(c.bodyID, "m", 5, "")); err != nil {
			t.Fatalf("%s: %v", c.name, err)
		}
		m, err := sub.NextMsg(30 * time.Second)
		if err != nil {
			t.Errorf("%s: nothing on %s: %v", c.name, sub.Subject, err)
			continue
		}
		var r messages.Result
		if err := json.Unmarshal(m.Data, &r); err != nil {
			t.Fatalf("%s: %v", c.name, err)
		}
		if r.ID != c.listen || r.Error == nil || r.Error.Code != messages.CodeInvalidRequest || r.Error.Field != "id" || r.Error.Message == "" {
			t.Errorf("%s: want one invalid_request naming field id, for id %q; got id %q, %+v", c.name, c.listen, r.ID, r.Error)
		}
		want = append(want, answer{c.name, messages.ResultSubject("demo", c.listen)})
	}
	// Ids that make no subject: answered on the derived id.
	stream, err := js.Stream(ctx, messages.StreamResults)
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct{ name, id string }{
		{"wildcard *", "a.*"},
		{"wildcard >", "a.>"},
		{"a space", "has space"},
		{"a tab", "a\tb"},
		{"an empty token", "a..b"},
		{"a leading dot", ".a"},
		{"a trailing dot", "a."},
		{"300 characters", strings.Repeat("y", 300)},
	} {
		ack, err := js.PublishMsg(ctx, &nats.Msg{Subject: "sluice.call.demo.standard", Data: []byte(chatCall(c.id, "m", 5, "")), Header: nats.Header{}})
		if err != nil {
			t.Fatal(err)
		}
		derived := messages.DerivedCallID(ack.Sequence)
		var r *messages.Result
		waitUntil(t, c.name+": a result on the derived id", 30*time.Second, func() bool {
			r, err = results.FetchFrom(ctx, stream, "demo", derived)
			return err == nil
		})
		if r.ID != derived || r.Error == nil || r.Error.Code != messages.CodeInvalidRequest || r.Error.Field != "id" {
			t.Errorf("%s: want invalid_request naming field id, got id %q, %+v", c.name, r.ID, r.Error)
		}
		want = append(want, answer{c.name, messages.ResultSubject("demo", derived)})
	}
	// A good call still works.
	good := watchResults(t, nc, "demo")
	if err := publishCall(ctx, js, "demo", "standard", "good", chatCall("good", "m", 5, "")); err != nil {
		t.Fatal(err)
	}
	good.waitFor(t, []string{"good"}, 30*time.Second)
	want = append(want, answer{"good", messages.ResultSubject("demo", "good")})

	// Exactly one result is stored per call, on the subject named above:
	// none on a derived id for a call answered where its client listens.
	info, err := stream.Info(ctx, jetstream.WithSubjectFilter("sluice.result.demo.>"))
	if err != nil {
		t.Fatal(err)
	}
	for _, w := range want {
		if n := info.State.Subjects[w.listen]; n != 1 {
			t.Errorf("%s: %d results stored on %s, want 1", w.name, n, w.listen)
		}
	}
	if len(info.State.Subjects) != len(want) {
		t.Errorf("%d results stored for %d calls: %v", len(info.State.Subjects), len(want), info.State.Subjects)
	}
}

// calls.max_body_bytes is the size of the body a client sends: a body of
// exactly the limit goes, over HTTP and over NATS, though the call around
// it is larger; one byte more is refused, with a message that says what
// may be sent.
func TestBodyLimitIsTheBodysSize(t *testing.T) {
	s := startStack(t, stackOptions{yaml: refusalsYAML})
	startDispatcher(t, s, "d1", nil)
	startExecutors(t, s)
	nc := connect(t, s)
	js, _ := jetstream.New(nc)
	log := watchResults(t, nc, "demo")
	url := startGateway(t, s, nil)
	ctx, cancel := context.WithTimeout(t.Context(), 2*time.Minute)
	defer cancel()
	limit := strconv.Itoa(refusalsMaxBody)

	for _, size := range []int{refusalsMaxBody - 1, refusalsMaxBody, refusalsMaxBody + 1} {
		t.Run(fmt.Sprintf("HTTP body of %d bytes", size), func(t *testing.T) {
			resp := gatewayPost(ctx, t, url, "/v1/chat/completions", paddedBody(size))
			body := readAll(t, resp)
			if size <= refusalsMaxBody {
				if resp.StatusCode != http.StatusOK {
					t.Fatalf("status %d: %s", resp.StatusCode, body)
				}
				return
			}
			var e struct {
				Error struct{ Message, Code string } `json:"error"`
			}
			if err := json.Unmarshal([]byte(body), &e); err != nil || resp.StatusCode != http.StatusRequestEntityTooLarge || e.Error.Code != string(messages.CodeInvalidRequest) {
				t.Fatalf("status %d: %s", resp.StatusCode, body)
			}
			if !strings.Contains(e.Error.Message, "at most "+limit+" bytes") || !strings.Contains(e.Error.Message, strconv.Itoa(size)) {
				t.Errorf("message %q should say the body is %d bytes and may be at most %s", e.Error.Message, size, limit)
			}
		})
	}
	t.Run("HTTP Anthropic body over the limit", func(t *testing.T) {
		body := `{"model":"claude","max_tokens":5,"messages":[{"role":"user","content":"hi"}],"system":"` + strings.Repeat("s", refusalsMaxBody) + `"}`
		resp := gatewayPost(ctx, t, url, "/v1/messages", body, "Authorization", "", "x-api-key", devToken)
		got := readAll(t, resp)
		var e struct {
			Error struct{ Type, Message string } `json:"error"`
		}
		if err := json.Unmarshal([]byte(got), &e); err != nil || resp.StatusCode != http.StatusRequestEntityTooLarge || e.Error.Type != "request_too_large" ||
			!strings.Contains(e.Error.Message, "at most "+limit+" bytes") {
			t.Fatalf("status %d: %s", resp.StatusCode, got)
		}
	})

	for _, size := range []int{refusalsMaxBody, refusalsMaxBody + 1} {
		t.Run(fmt.Sprintf("NATS body of %d bytes", size), func(t *testing.T) {
			id := fmt.Sprintf("nats-body-%d", size)
			call := fmt.Sprintf(`{"id":%q,"model":"m","body":%s}`, id, paddedBody(size))
			if err := publishCall(ctx, js, "demo", "standard", id, call); err != nil {
				t.Fatal(err)
			}
			log.waitFor(t, []string{id}, 30*time.Second)
			r := log.one(t, id)
			if size <= refusalsMaxBody {
				if r.Status != messages.StatusOK {
					t.Fatalf("a body of exactly the limit in a call of %d bytes: %+v", len(call), r.Error)
				}
				return
			}
			if r.Error == nil || r.Error.Code != messages.CodeInvalidRequest || r.Error.Field != "body" ||
				!strings.Contains(r.Error.Message, "at most "+limit+" bytes") || !strings.Contains(r.Error.Message, strconv.Itoa(size)) {
				t.Fatalf("want invalid_request on body saying it is %d bytes of at most %s: %+v", size, limit, r.Error)
			}
		})
	}
}

// paddedBody is a chat body for pool m of exactly size bytes.
func paddedBody(size int) string {
	frame := `{"model":"m","max_tokens":5,"messages":[{"role":"user","content":"hello"}],"user":""}`
	return strings.Replace(frame, `"user":""`, `"user":"`+strings.Repeat("u", size-len(frame))+`"`, 1)
}
