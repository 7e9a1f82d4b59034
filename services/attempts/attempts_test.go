package attempts_test

import (
	"encoding/json"
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/sluicehq/sluice/messages"
	"github.com/sluicehq/sluice/services/attempts"
	"github.com/sluicehq/sluice/services/config"
	"github.com/sluicehq/sluice/services/streams"
	"github.com/sluicehq/sluice/test/natstest"
)

func streamsConfig() config.Streams {
	return config.Streams{Replicas: 1, ResultsMaxAge: time.Hour, DuplicateWindow: time.Minute, DeadLetterMaxAge: time.Hour, UsageMaxAge: time.Hour, MaxWaiting: 1000}
}

// open returns a Store on srv, on its own connection, with sluice's
// streams made.
func open(t *testing.T, srv *server.Server) (*attempts.Store, jetstream.JetStream, *streams.Resources) {
	t.Helper()
	js, err := jetstream.New(natstest.Connect(t, srv))
	if err != nil {
		t.Fatal(err)
	}
	res, err := streams.Ensure(t.Context(), js, streamsConfig())
	if err != nil {
		t.Fatal(err)
	}
	return attempts.New(js, res.Attempts), js, res
}

var at = time.Date(2026, 11, 25, 10, 0, 0, 0, time.UTC)

// An attempt is claimed once: a second claim, the same or another, is
// refused with ErrClaimed, and Lookup finds the first.
func TestClaimTwice(t *testing.T) {
	srv := natstest.Start(t)
	store, _, _ := open(t, srv)
	ctx := t.Context()
	first := attempts.Claim{Deployment: "oai-1", Region: "eu-west", At: at}

	if _, err := store.Lookup(ctx, "demo", "call-1", 1, 0); !errors.Is(err, attempts.ErrNotClaimed) {
		t.Fatalf("Lookup before the claim: %v, want ErrNotClaimed", err)
	}
	if err := store.Claim(ctx, "demo", "call-1", 1, 0, first); err != nil {
		t.Fatal(err)
	}
	// The same claim again (de-duplicated by Nats-Msg-Id), and another
	// executor's (on its own connection).
	if err := store.Claim(ctx, "demo", "call-1", 1, 0, first); !errors.Is(err, attempts.ErrClaimed) {
		t.Fatalf("the same claim again: %v, want ErrClaimed", err)
	}
	other, _, _ := open(t, srv)
	if err := other.Claim(ctx, "demo", "call-1", 1, 0, attempts.Claim{Deployment: "oai-2", Region: "us-east", At: at.Add(time.Second)}); !errors.Is(err, attempts.ErrClaimed) {
		t.Fatalf("another executor's claim: %v, want ErrClaimed", err)
	}
	got, err := other.Lookup(ctx, "demo", "call-1", 1, 0)
	if err != nil || got != first {
		t.Fatalf("Lookup: %+v, %v; want %+v", got, err, first)
	}
	// Other attempts and admissions of the call, and other calls, are
	// claims of their own.
	for _, c := range []struct {
		team, call         string
		attempt, admission int
	}{{"demo", "call-1", 2, 0}, {"demo", "call-1", 1, 1}, {"demo", "call-2", 1, 0}, {"other", "call-1", 1, 0}} {
		if _, err := store.Lookup(ctx, c.team, c.call, c.attempt, c.admission); !errors.Is(err, attempts.ErrNotClaimed) {
			t.Errorf("Lookup %+v: %v, want ErrNotClaimed", c, err)
		}
		if err := store.Claim(ctx, c.team, c.call, c.attempt, c.admission, first); err != nil {
			t.Errorf("Claim %+v: %v", c, err)
		}
	}
}

// A claim outlives a restart of the NATS server on its store: a claim
// after it, even with another Nats-Msg-Id (JetStream's de-duplication is
// rebuilt only from what is stored), is refused.
func TestClaimTwiceAcrossARestart(t *testing.T) {
	dir := t.TempDir()
	srv := natstest.StartIn(t, dir)
	store, _, _ := open(t, srv)
	ctx := t.Context()
	first := attempts.Claim{Deployment: "oai-1", Region: "eu-west", At: at}
	if err := store.Claim(ctx, "demo", "call-1", 3, 1, first); err != nil {
		t.Fatal(err)
	}
	srv.Shutdown()
	srv.WaitForShutdown()

	srv = natstest.StartIn(t, dir)
	store, js, _ := open(t, srv)
	if got, err := store.Lookup(ctx, "demo", "call-1", 3, 1); err != nil || got != first {
		t.Fatalf("Lookup after the restart: %+v, %v; want %+v", got, err, first)
	}
	if err := store.Claim(ctx, "demo", "call-1", 3, 1, first); !errors.Is(err, attempts.ErrClaimed) {
		t.Fatalf("the claim again after the restart: %v, want ErrClaimed", err)
	}
	// A claim the de-duplication cannot know: refused by the server.
	msg := &nats.Msg{Subject: messages.AttemptSubject("demo", "call-1", 3, 1), Data: []byte(`{}`), Header: nats.Header{}}
	msg.Header.Set(messages.HeaderMsgID, "another-id")
	msg.Header.Set(messages.HeaderExpectedLastSubjectSeq, "0")
	var apiErr *jetstream.APIError
	if _, err := js.PublishMsg(ctx, msg); !errors.As(err, &apiErr) || apiErr.ErrorCode != jetstream.JSErrCodeStreamWrongLastSequence {
		t.Fatalf("a second claim with another Nats-Msg-Id: %v, want error 10071", err)
	}
	if got, err := store.Lookup(ctx, "demo", "call-1", 3, 1); err != nil || got != first {
		t.Fatalf("Lookup: %+v, %v; want %+v", got, err, first)
	}
}

// A claim that JetStream's de-duplication does not know (made with
// another Nats-Msg-Id, as one is once the duplicate window passed or a
// restart forgot it) still makes a later claim fail: the server refuses
// it by the claim stored on the subject.
func TestClaimAfterAClaimDeduplicationForgot(t *testing.T) {
	srv := natstest.Start(t)
	store, js, _ := open(t, srv)
	ctx := t.Context()
	data, _ := json.Marshal(attempts.Claim{Deployment: "oai-1", Region: "eu-west", At: at})
	if _, err := js.Publish(ctx, messages.AttemptSubject("demo", "call-1", 1, 0), data, jetstream.WithMsgID("long-ago")); err != nil {
		t.Fatal(err)
	}
	if err := store.Claim(ctx, "demo", "call-1", 1, 0, attempts.Claim{Deployment: "oai-2", Region: "us-east", At: at}); !errors.Is(err, attempts.ErrClaimed) {
		t.Fatalf("Claim: %v, want ErrClaimed", err)
	}
	if got, err := store.Lookup(ctx, "demo", "call-1", 1, 0); err != nil || got.Deployment != "oai-1" {
		t.Fatalf("Lookup: %+v, %v; want the first claim", got, err)
	}
}

// Of many executors claiming one attempt at once, exactly one succeeds.
func TestClaimRace(t *testing.T) {
	srv := natstest.Start(t)
	ctx := t.Context()
	const n = 8
	stores := make([]*attempts.Store, n)
	for i := range stores {
		stores[i], _, _ = open(t, srv)
	}
	var wg sync.WaitGroup
	errs := make([]error, n)
	for i, s := range stores {
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs[i] = s.Claim(ctx, "demo", "call-1", 1, 0, attempts.Claim{Deployment: "d", Region: "r", At: at.Add(time.Duration(i))})
		}()
	}
	wg.Wait()
	won := -1
	for i, err := range errs {
		switch {
		case err == nil && won >= 0:
			t.Errorf("claims %d and %d both succeeded", won, i)
		case err == nil:
			won = i
		case !errors.Is(err, attempts.ErrClaimed):
			t.Errorf("claim %d: %v, want nil or ErrClaimed", i, err)
		}
	}
	if won < 0 {
		t.Fatal("no claim succeeded")
	}
	got, err := stores[0].Lookup(ctx, "demo", "call-1", 1, 0)
	if err != nil || !got.At.Equal(at.Add(time.Duration(won))) {
		t.Fatalf("Lookup: %+v, %v; want the winner's claim %d", got, err, won)
	}
}

// Bad input is an error matching ErrInvalid, never a panic, and publishes
// nothing.
func TestBadInput(t *testing.T) {
	srv := natstest.Start(t)
	store, _, res := open(t, srv)
	ctx := t.Context()
	for _, c := range []struct {
		team, call         string
		attempt, admission int
	}{
		{"", "call-1", 1, 0},
		{"de.mo", "call-1", 1, 0},
		{"demo", "", 1, 0},
		{"demo", "call.1", 1, 0},
		{"demo", "call-*", 1, 0},
		{"demo", "call-1", 0, 0},
		{"demo", "call-1", -1, 0},
		{"demo", "call-1", 1, -1},
	} {
		if err := store.Claim(ctx, c.team, c.call, c.attempt, c.admission, attempts.Claim{}); !errors.Is(err, attempts.ErrInvalid) {
			t.Errorf("Claim %+v: %v, want ErrInvalid", c, err)
		}
		if _, err := store.Lookup(ctx, c.team, c.call, c.attempt, c.admission); !errors.Is(err, attempts.ErrInvalid) {
			t.Errorf("Lookup %+v: %v, want ErrInvalid", c, err)
		}
	}
	var none *attempts.Store
	if err := none.Claim(ctx, "demo", "call-1", 1, 0, attempts.Claim{}); !errors.Is(err, attempts.ErrInvalid) {
		t.Errorf("Claim on a nil Store: %v", err)
	}
	if _, err := attempts.New(nil, nil).Lookup(ctx, "demo", "call-1", 1, 0); !errors.Is(err, attempts.ErrInvalid) {
		t.Errorf("Lookup on a Store without a stream: %v", err)
	}
	info, err := res.Attempts.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if info.State.Msgs != 0 {
		t.Errorf("bad claims stored %d messages", info.State.Msgs)
	}
}

// A claim is small JSON, as documented.
func TestClaimIsJSON(t *testing.T) {
	srv := natstest.Start(t)
	store, _, res := open(t, srv)
	ctx := t.Context()
	if err := store.Claim(ctx, "demo", "call-1", 1, 0, attempts.Claim{Deployment: "oai-1", Region: "eu-west", At: at}); err != nil {
		t.Fatal(err)
	}
	m, err := res.Attempts.GetLastMsgForSubject(ctx, "sluice.attempt.demo.call-1.1.0")
	if err != nil {
		t.Fatal(err)
	}
	var fields map[string]any
	if err := json.Unmarshal(m.Data, &fields); err != nil {
		t.Fatal(err)
	}
	if len(fields) != 3 || fields["deployment"] != "oai-1" || fields["region"] != "eu-west" || fields["at"] != "2026-11-25T10:00:00Z" {
		t.Errorf("claim: %s", m.Data)
	}
}
