package test

import (
	"context"
	"encoding/json"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/sluicehq/sluice/messages"
	"github.com/sluicehq/sluice/services/devstack"
	"github.com/sluicehq/sluice/services/fakeprovider"
	"github.com/sluicehq/sluice/services/health"
)

// A streamed call over plain NATS: the provider's events arrive in order on
// the stream subject, numbered, framed as the provider sent them; the
// result follows with the chunk count and the usage sluice asked for.
func TestStreamedCallOverNATS(t *testing.T) {
	s := startStack(t, stackOptions{})
	startDispatcher(t, s, "d1", nil)
	startExecutors(t, s)
	nc := connect(t, s)
	js, _ := jetstream.New(nc)
	chunks, err := nc.SubscribeSync(messages.StreamSubject("demo", "streamed-1"))
	if err != nil {
		t.Fatal(err)
	}
	result, err := nc.SubscribeSync(messages.ResultSubject("demo", "streamed-1"))
	if err != nil {
		t.Fatal(err)
	}
	body := `{"id":"streamed-1","model":"gpt-4o-mini","body":{"stream":true,"max_tokens":6,"messages":[{"role":"user","content":"hi"}]}}`
	if err := publishCall(t.Context(), js, "demo", "standard", "streamed-1", body); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	var events []string
	for {
		m, err := chunks.NextMsgWithContext(ctx)
		if err != nil {
			t.Fatalf("after %d chunks: %v", len(events), err)
		}
		if seq := m.Header.Get(messages.HeaderStreamSeq); seq != strconv.Itoa(len(events)+1) {
			t.Fatalf("chunk %d has Sluice-Seq %q", len(events)+1, seq)
		}
		events = append(events, string(m.Data))
		if string(m.Data) == "data: [DONE]" {
			break
		}
	}
	for _, e := range events {
		if !strings.HasPrefix(e, "data: ") {
			t.Fatalf("event %q not framed as the provider sent it", e)
		}
		if strings.Contains(e, `"choices":[]`) {
			t.Fatalf("the usage chunk sluice asked for reached the client: %s", e)
		}
	}
	m, err := result.NextMsgWithContext(ctx)
	if err != nil {
		t.Fatal(err)
	}
	var r messages.Result
	if err := json.Unmarshal(m.Data, &r); err != nil {
		t.Fatal(err)
	}
	if r.Status != messages.StatusOK || r.Chunks != len(events) || r.Usage == nil || r.Usage.CompletionTokens != 6 || len(r.Body) != 0 {
		t.Fatalf("result %+v usage %+v body %s", r, r.Usage, r.Body)
	}
}

// A client cancels mid-stream: the provider request is closed, tokens
// are settled, and the call ends with one result, canceled.
func TestCancelMidStream(t *testing.T) {
	s := startStack(t, stackOptions{fake: fakeprovider.Config{ChunkDelay: 50 * time.Millisecond}})
	startDispatcher(t, s, "d1", nil)
	startExecutors(t, s)
	nc := connect(t, s)
	js, _ := jetstream.New(nc)
	log := watchResults(t, nc, "demo")
	chunks, _ := nc.SubscribeSync(messages.StreamSubject("demo", "gone"))
	body := `{"id":"gone","model":"gpt-4o-mini","body":{"stream":true,"max_tokens":200,"messages":[{"role":"user","content":"hi"}]}}`
	if err := publishCall(t.Context(), js, "demo", "standard", "gone", body); err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 3; i++ {
		if _, err := chunks.NextMsg(10 * time.Second); err != nil {
			t.Fatal(err)
		}
	}
	if err := nc.Publish(messages.CancelSubject("demo", "gone"), nil); err != nil {
		t.Fatal(err)
	}
	log.waitFor(t, []string{"gone"}, 10*time.Second)
	r := log.one(t, "gone")
	if r.Error == nil || r.Error.Code != messages.CodeCanceled || r.Chunks < 3 {
		t.Fatalf("canceled stream: %+v chunks %d", r.Error, r.Chunks)
	}
	deadline := time.Now().Add(5 * time.Second)
	for s.Fake.Stats().Total.StreamAborts != 1 {
		if time.Now().After(deadline) {
			t.Fatalf("the provider request was not closed: %+v", s.Fake.Stats().Total)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// A call canceled while it waits is never sent.
func TestCancelWhileWaiting(t *testing.T) {
	s := startStack(t, stackOptions{})
	startDispatcher(t, s, "d1", nil)
	startExecutors(t, s)
	nc := connect(t, s)
	js, _ := jetstream.New(nc)
	coolAll(t, js, s)
	log := watchResults(t, nc, "demo")
	if err := publishCall(t.Context(), js, "demo", "standard", "waits", chatCall("waits", "gpt-4o-mini", 5, "")); err != nil {
		t.Fatal(err)
	}
	time.Sleep(200 * time.Millisecond)
	if err := nc.Publish(messages.CancelSubject("demo", "waits"), nil); err != nil {
		t.Fatal(err)
	}
	// And one canceled before it was even published.
	if err := nc.Publish(messages.CancelSubject("demo", "early"), nil); err != nil {
		t.Fatal(err)
	}
	_ = nc.Flush()
	time.Sleep(50 * time.Millisecond)
	if err := publishCall(t.Context(), js, "demo", "standard", "early", chatCall("early", "gpt-4o-mini", 5, "")); err != nil {
		t.Fatal(err)
	}
	log.waitFor(t, []string{"waits", "early"}, 10*time.Second)
	for _, id := range []string{"waits", "early"} {
		if r := log.one(t, id); r.Error == nil || r.Error.Code != messages.CodeCanceled || r.Attempts != 0 {
			t.Errorf("%s: %+v", id, r.Error)
		}
	}
	if n := s.Fake.Stats().Total.Received; n != 0 {
		t.Fatalf("the provider received %d requests for canceled calls", n)
	}
}

// coolAll makes every deployment cool down for a minute, so calls wait.
func coolAll(t *testing.T, js jetstream.JetStream, s *devstack.Stack) {
	t.Helper()
	kv, err := js.KeyValue(t.Context(), messages.BucketHealth)
	if err != nil {
		t.Fatal(err)
	}
	store := health.NewStore(kv)
	if err := store.Start(t.Context()); err != nil {
		t.Fatal(err)
	}
	defer store.Stop()
	for _, p := range s.Shared.Load().Pools {
		for _, d := range p.Deployments {
			if err := store.Update(t.Context(), d.ID, func(h *messages.DeploymentHealth) bool {
				h.CooldownUntil, h.CooldownReason = time.Now().Add(time.Minute), "test"
				return true
			}); err != nil {
				t.Fatal(err)
			}
		}
	}
	time.Sleep(100 * time.Millisecond) // the dispatchers' watches catch up
}
