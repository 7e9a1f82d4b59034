package streams_test

import (
	"context"
	"encoding/json"
	"errors"
	"reflect"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/sluicehq/sluice/messages"
	"github.com/sluicehq/sluice/services/config"
	"github.com/sluicehq/sluice/services/results"
	"github.com/sluicehq/sluice/services/streams"
	"github.com/sluicehq/sluice/services/telemetry"
	"github.com/sluicehq/sluice/test/natstest"
)

func streamsConfig() config.Streams {
	return config.Streams{Replicas: 1, ResultsMaxAge: time.Hour, DuplicateWindow: time.Minute, DeadLetterMaxAge: time.Hour, UsageMaxAge: time.Hour, MaxWaiting: 1000}
}

// Several services starting at once, each on its own connection, all
// succeed and leave one set of resources.
func TestEnsureIsIdempotentUnderConcurrency(t *testing.T) {
	srv := natstest.Start(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	var wg sync.WaitGroup
	errs := make(chan error, 8)
	for i := 0; i < 8; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			js, err := jetstream.New(natstest.Connect(t, srv))
			if err != nil {
				errs <- err
				return
			}
			res, err := streams.Ensure(ctx, js, streamsConfig())
			if err != nil {
				errs <- err
				return
			}
			if _, err := streams.EnsureConsumer(ctx, res.Calls, streams.DispatcherConsumerConfig(streamsConfig(), 30*time.Second)); err != nil {
				errs <- err
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	js, _ := jetstream.New(natstest.Connect(t, srv))
	names := js.StreamNames(ctx)
	var got []string
	for n := range names.Name() {
		got = append(got, n)
	}
	if want := reflect.TypeFor[streams.Resources]().NumField(); len(got) != want { // one per stream and bucket
		t.Fatalf("streams: %v, want %d", got, want)
	}
	s, err := js.Stream(ctx, messages.StreamResults)
	if err != nil {
		t.Fatal(err)
	}
	if s.CachedInfo().Config.MaxAge != time.Hour || !s.CachedInfo().Config.AllowDirect {
		t.Fatalf("results stream config: %+v", s.CachedInfo().Config)
	}
}

// A call published twice with the same Nats-Msg-Id is stored once.
func TestCallsAreDeduplicatedByID(t *testing.T) {
	srv := natstest.Start(t)
	ctx := context.Background()
	js, _ := jetstream.New(natstest.Connect(t, srv))
	res, err := streams.Ensure(ctx, js, streamsConfig())
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 2; i++ {
		if _, err := js.Publish(ctx, messages.CallSubject("demo", messages.TierStandard), []byte(`{}`), jetstream.WithMsgID("call-1")); err != nil {
			t.Fatal(err)
		}
	}
	info, err := res.Calls.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if info.State.Msgs != 1 {
		t.Fatalf("stored %d messages, want 1", info.State.Msgs)
	}
	// A malformed call subject is not accepted at all.
	if _, err := js.Publish(ctx, "sluice.call.demo", []byte(`{}`)); err == nil {
		t.Fatal("sluice.call.demo should match no stream")
	}
}

// On a three-server cluster with streams replicated three times, services
// starting at once on different servers all succeed. nats-server answers
// only one of several concurrent creations of the same clustered stream;
// the others time out, and must be retried rather than fail the service.
func TestEnsureIsIdempotentOnAClusterUnderConcurrency(t *testing.T) {
	servers := natstest.StartCluster(t, 3)
	cfg := streamsConfig()
	cfg.Replicas = 3
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	var wg sync.WaitGroup
	errs := make(chan error, 6)
	for i := range 6 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			js, err := jetstream.New(natstest.Connect(t, servers[i%len(servers)]))
			if err != nil {
				errs <- err
				return
			}
			res, err := streams.Ensure(ctx, js, cfg)
			if err != nil {
				errs <- err
				return
			}
			if _, err := streams.EnsureConsumer(ctx, res.Calls, streams.DispatcherConsumerConfig(cfg, 30*time.Second)); err != nil {
				errs <- err
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	js, _ := jetstream.New(natstest.Connect(t, servers[0]))
	for _, name := range []string{messages.StreamCalls, messages.StreamResults} {
		s, err := js.Stream(ctx, name)
		if err != nil {
			t.Fatal(err)
		}
		if got := s.CachedInfo().Config.Replicas; got != 3 {
			t.Errorf("%s has %d replicas, want 3", name, got)
		}
	}
}

// Open finds what Ensure made and creates nothing: before Ensure it says
// the resources are not created, and leaves the server empty.
func TestOpenCreatesNothing(t *testing.T) {
	srv := natstest.Start(t)
	js, err := jetstream.New(natstest.Connect(t, srv))
	if err != nil {
		t.Fatal(err)
	}
	ctx := t.Context()
	if _, err := streams.Open(ctx, js); !errors.Is(err, streams.ErrNotCreated) {
		t.Fatalf("Open before Ensure: %v, want ErrNotCreated", err)
	}
	for range js.StreamNames(ctx).Name() {
		t.Fatal("Open created a stream")
	}
	if _, err := streams.Ensure(ctx, js, streamsConfig()); err != nil {
		t.Fatal(err)
	}
	res, err := streams.Open(ctx, js)
	if err != nil {
		t.Fatal(err)
	}
	if res.Exec == nil || res.Results == nil || res.Attempts == nil || res.Config == nil || res.Usage == nil || res.Health == nil {
		t.Fatalf("Open returned %+v", res)
	}
}

// The streams Ensure makes: results stored under their result subject
// from answers, republished once stored; attempt claims kept for the
// duplicate window, one per subject.
func TestEnsureResultsAndAttemptsStreams(t *testing.T) {
	srv := natstest.Start(t)
	js, err := jetstream.New(natstest.Connect(t, srv))
	if err != nil {
		t.Fatal(err)
	}
	res, err := streams.Ensure(t.Context(), js, streamsConfig())
	if err != nil {
		t.Fatal(err)
	}
	rc := res.Results.CachedInfo().Config
	if !slices.Equal(rc.Subjects, []string{"sluice.answer.*.>"}) || rc.SubjectTransform == nil ||
		rc.SubjectTransform.Source != "sluice.answer.*.>" || rc.SubjectTransform.Destination != "sluice.result.{{wildcard(1)}}.>" ||
		rc.RePublish == nil || rc.RePublish.Source != "sluice.result.>" || rc.RePublish.Destination != "sluice.result.>" || rc.RePublish.HeadersOnly ||
		rc.MaxMsgsPerSubject != 1 || rc.MaxAge != time.Hour || !rc.AllowDirect {
		t.Errorf("SLUICE_RESULTS: %+v (transform %+v, republish %+v)", rc, rc.SubjectTransform, rc.RePublish)
	}
	ac := res.Attempts.CachedInfo().Config
	if ac.Name != messages.StreamAttempts || !slices.Equal(ac.Subjects, []string{"sluice.attempt.*.*.*.*"}) ||
		ac.Retention != jetstream.LimitsPolicy || ac.Storage != jetstream.FileStorage || ac.Replicas != 1 ||
		ac.MaxMsgsPerSubject != 1 || ac.MaxAge != time.Minute || !ac.AllowDirect {
		t.Errorf("SLUICE_ATTEMPTS: %+v", ac)
	}
}

// A deployment made before answers had their own subject has
// SLUICE_RESULTS on sluice.result.*.*, without a transform. Ensure updates
// it in place: the results it stored stay fetchable, still answer their
// calls (a second result for one is refused), and new results are stored
// and republished.
func TestEnsureUpgradesTheResultsStream(t *testing.T) {
	srv := natstest.Start(t)
	nc := natstest.Connect(t, srv)
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	ctx := t.Context()
	cfg := streamsConfig()
	if _, err := js.CreateStream(ctx, jetstream.StreamConfig{
		Name:              messages.StreamResults,
		Description:       "sluice: terminal results, one per call",
		Subjects:          []string{"sluice.result.*.*"},
		Retention:         jetstream.LimitsPolicy,
		Storage:           jetstream.FileStorage,
		Replicas:          cfg.Replicas,
		MaxAge:            cfg.ResultsMaxAge,
		MaxMsgsPerSubject: 1,
		Duplicates:        min(cfg.DuplicateWindow, cfg.ResultsMaxAge),
		AllowDirect:       true,
	}); err != nil {
		t.Fatal(err)
	}
	old, _ := json.Marshal(messages.Result{ID: "old", Team: "demo", Status: messages.StatusOK, Body: json.RawMessage(`"old"`)})
	if _, err := js.Publish(ctx, "sluice.result.demo.old", old, jetstream.WithMsgID("old")); err != nil {
		t.Fatal(err)
	}

	res, err := streams.Ensure(ctx, js, cfg)
	if err != nil {
		t.Fatal(err)
	}
	info, err := res.Results.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(info.Config.Subjects, []string{messages.AnswerSubjects}) || info.Config.SubjectTransform == nil || info.Config.RePublish == nil {
		t.Fatalf("SLUICE_RESULTS after Ensure: %+v", info.Config)
	}
	if info.State.Msgs != 1 {
		t.Fatalf("SLUICE_RESULTS holds %d results after Ensure, want 1", info.State.Msgs)
	}
	for name, fetch := range map[string]func() (*messages.Result, error){
		"FetchFrom":   func() (*messages.Result, error) { return results.FetchFrom(ctx, res.Results, "demo", "old") },
		"FetchDirect": func() (*messages.Result, error) { return results.FetchDirect(ctx, nc, "", "demo", "old") },
	} {
		if got, err := fetch(); err != nil || string(got.Body) != `"old"` {
			t.Errorf("%s of the result stored before the upgrade: %+v, %v", name, got, err)
		}
	}

	sub, err := nc.SubscribeSync("sluice.result.demo.>")
	if err != nil {
		t.Fatal(err)
	}
	if err := nc.Flush(); err != nil {
		t.Fatal(err)
	}
	pub := results.NewPublisher(js, telemetry.New(prometheus.NewRegistry()), nil, nil)
	// The old result still answers its call: another is refused, by its
	// Nats-Msg-Id and without it.
	if stored, err := pub.Answer(ctx, &messages.Result{ID: "old", Team: "demo", Body: json.RawMessage(`"again"`)}); err != nil || stored {
		t.Fatalf("a second result for the old call: stored %v, %v", stored, err)
	}
	again := &nats.Msg{Subject: messages.AnswerSubject("demo", "old"), Data: []byte(`{}`), Header: nats.Header{}}
	again.Header.Set(messages.HeaderMsgID, "another-id")
	again.Header.Set(messages.HeaderExpectedLastSubjectSeq, "0")
	var apiErr *jetstream.APIError
	if _, err := js.PublishMsg(ctx, again); !errors.As(err, &apiErr) || apiErr.ErrorCode != jetstream.JSErrCodeStreamWrongLastSequence {
		t.Fatalf("a second result for the old call with another Nats-Msg-Id: %v, want error 10071", err)
	}
	// A new result is stored under its result subject and republished
	// there: the first thing the subscriber gets.
	if stored, err := pub.Answer(ctx, &messages.Result{ID: "new", Team: "demo", Body: json.RawMessage(`"new"`)}); err != nil || !stored {
		t.Fatalf("a new result: stored %v, %v", stored, err)
	}
	m, err := sub.NextMsg(10 * time.Second)
	if err != nil {
		t.Fatal(err)
	}
	if m.Subject != "sluice.result.demo.new" || !json.Valid(m.Data) {
		t.Fatalf("the subscriber got %s: %s, want the new result", m.Subject, m.Data)
	}
	if got, err := results.FetchFrom(ctx, res.Results, "demo", "new"); err != nil || string(got.Body) != `"new"` {
		t.Fatalf("the new result: %+v, %v", got, err)
	}
	// Ensure again changes nothing.
	if _, err := streams.Ensure(ctx, js, cfg); err != nil {
		t.Fatal(err)
	}
	if info, err := res.Results.Info(ctx); err != nil || info.State.Msgs != 2 {
		t.Fatalf("after Ensure again: %+v, %v", info, err)
	}
}

// A deployment made before call ids could have several tokens has
// SLUICE_RESULTS on sluice.answer.*.*. Ensure widens it in place: its
// results stay, and the refusal of a call with id dot.id is stored as
// sluice.result.<team>.dot.id, republished there, and only once.
func TestEnsureWidensTheResultsStreamToIDsOfSeveralTokens(t *testing.T) {
	srv := natstest.Start(t)
	nc := natstest.Connect(t, srv)
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	ctx := t.Context()
	cfg := streamsConfig()
	old := streams.ResultsConfig(cfg)
	old.Subjects = []string{"sluice.answer.*.*"}
	old.SubjectTransform = &jetstream.SubjectTransformConfig{Source: "sluice.answer.*.*", Destination: "sluice.result.{{wildcard(1)}}.{{wildcard(2)}}"}
	if _, err := js.CreateStream(ctx, old); err != nil {
		t.Fatal(err)
	}
	pub := results.NewPublisher(js, telemetry.New(prometheus.NewRegistry()), nil, nil)
	if stored, err := pub.Answer(ctx, &messages.Result{ID: "before", Team: "demo", Body: json.RawMessage(`"before"`)}); err != nil || !stored {
		t.Fatalf("a result before the upgrade: stored %v, %v", stored, err)
	}

	res, err := streams.Ensure(ctx, js, cfg)
	if err != nil {
		t.Fatal(err)
	}
	if info, err := res.Results.Info(ctx); err != nil || !slices.Equal(info.Config.Subjects, []string{messages.AnswerSubjects}) || info.State.Msgs != 1 {
		t.Fatalf("SLUICE_RESULTS after Ensure: %+v, %v", info, err)
	}
	if got, err := results.FetchFrom(ctx, res.Results, "demo", "before"); err != nil || string(got.Body) != `"before"` {
		t.Fatalf("the result stored before the upgrade: %+v, %v", got, err)
	}
	sub, err := nc.SubscribeSync(messages.ResultSubject("demo", "dot.id"))
	if err != nil {
		t.Fatal(err)
	}
	if err := nc.Flush(); err != nil {
		t.Fatal(err)
	}
	refusal := &messages.Result{ID: "dot.id", Team: "demo", Error: messages.FieldError("id", "not a token")}
	if stored, err := pub.Answer(ctx, refusal); err != nil || !stored {
		t.Fatalf("the refusal of dot.id: stored %v, %v", stored, err)
	}
	if stored, err := pub.Answer(ctx, refusal); err != nil || stored {
		t.Fatalf("a second refusal of dot.id: stored %v, %v", stored, err)
	}
	m, err := sub.NextMsg(10 * time.Second)
	if err != nil {
		t.Fatal(err)
	}
	if m.Subject != "sluice.result.demo.dot.id" {
		t.Fatalf("the subscriber got %s: %s", m.Subject, m.Data)
	}
	if got, err := results.FetchFrom(ctx, res.Results, "demo", "dot.id"); err != nil || got.ID != "dot.id" || got.Error == nil {
		t.Fatalf("the stored refusal of dot.id: %+v, %v", got, err)
	}
	if info, err := res.Results.Info(ctx); err != nil || info.State.Msgs != 2 {
		t.Fatalf("SLUICE_RESULTS holds %+v, %v; want 2 results", info, err)
	}
}

// SLUICE_CALLS keeps by interest, so Ensure makes both dispatcher lanes
// with it: a call published before any dispatcher ever ran is stored; a
// critical call stays stored until both lanes acknowledge it, and a
// batch call until the one lane that takes it does.
func TestCallsStreamHasBothLanesFromTheStart(t *testing.T) {
	srv := natstest.Start(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	js, _ := jetstream.New(natstest.Connect(t, srv))
	res, err := streams.Ensure(ctx, js, streamsConfig())
	if err != nil {
		t.Fatal(err)
	}
	if !streams.HasCriticalLane(res.Calls) {
		t.Fatalf("a new calls stream has no critical lane: retention %v", res.Calls.CachedInfo().Config.Retention)
	}
	for _, subj := range []string{messages.CallSubject("t", messages.TierCritical), messages.CallSubject("t", messages.TierBatch)} {
		if _, err := js.Publish(ctx, subj, []byte(`{}`)); err != nil {
			t.Fatal(err)
		}
	}
	stored := func() uint64 {
		info, err := res.Calls.Info(ctx)
		if err != nil {
			t.Fatal(err)
		}
		return info.State.Msgs
	}
	if n := stored(); n != 2 {
		t.Fatalf("calls stored before any dispatcher: %d, want 2", n)
	}
	fetchAck := func(consumer string, want int) []string {
		c, err := res.Calls.Consumer(ctx, consumer)
		if err != nil {
			t.Fatal(err)
		}
		// Fetch waits for want messages (or 5 s): under load, one
		// stored a moment ago may not be pending for the consumer yet.
		batch, err := c.Fetch(want, jetstream.FetchMaxWait(5*time.Second))
		if err != nil {
			t.Fatal(err)
		}
		var subjects []string
		for m := range batch.Messages() {
			subjects = append(subjects, m.Subject())
			if err := m.DoubleAck(ctx); err != nil {
				t.Fatal(err)
			}
		}
		if len(subjects) != want {
			t.Fatalf("consumer %s delivered %v, want %d calls", consumer, subjects, want)
		}
		more, err := c.FetchNoWait(1)
		if err != nil {
			t.Fatal(err)
		}
		for m := range more.Messages() {
			t.Fatalf("consumer %s delivered %s too, after the %d calls it takes", consumer, m.Subject(), want)
		}
		return subjects
	}
	fetchAck(streams.DispatcherConsumer, 2)
	if n := stored(); n != 1 {
		t.Fatalf("after the general lane acknowledged both calls, %d stored, want the critical one", n)
	}
	if got := fetchAck(streams.CriticalConsumer, 1); got[0] != messages.CallSubject("t", messages.TierCritical) {
		t.Fatalf("critical lane delivered %v", got)
	}
	if n := stored(); n != 0 {
		t.Fatalf("after both lanes acknowledged, %d stored, want 0", n)
	}
}

// A calls stream made with work-queue retention (by a sluice from before
// the critical lane) cannot become an interest stream in place: Ensure
// keeps it, and its one lane.
func TestWorkQueueCallsStreamIsKept(t *testing.T) {
	srv := natstest.Start(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	js, _ := jetstream.New(natstest.Connect(t, srv))
	old := streams.CallsConfig(streamsConfig())
	old.Retention = jetstream.WorkQueuePolicy
	if _, err := js.CreateStream(ctx, old); err != nil {
		t.Fatal(err)
	}
	if _, err := js.Publish(ctx, messages.CallSubject("t", messages.TierCritical), []byte(`{}`)); err != nil {
		t.Fatal(err)
	}
	res, err := streams.Ensure(ctx, js, streamsConfig())
	if err != nil {
		t.Fatal(err)
	}
	if streams.HasCriticalLane(res.Calls) {
		t.Fatal("a work-queue calls stream reports a critical lane")
	}
	if _, err := res.Calls.Consumer(ctx, streams.CriticalConsumer); !errors.Is(err, jetstream.ErrConsumerNotFound) {
		t.Fatalf("critical lane on a work-queue stream: %v", err)
	}
	if info, _ := res.Calls.Info(ctx); info.State.Msgs != 1 {
		t.Fatalf("the call stored before Ensure: %d stored, want 1", info.State.Msgs)
	}
}

// SLUICE_BUDGET keeps one value per key on file, and forgets a key
// nobody changed for 40 days: more than a month and its previous one.
func TestEnsureBudgetBucket(t *testing.T) {
	srv := natstest.Start(t)
	js, err := jetstream.New(natstest.Connect(t, srv))
	if err != nil {
		t.Fatal(err)
	}
	res, err := streams.Ensure(t.Context(), js, streamsConfig())
	if err != nil {
		t.Fatal(err)
	}
	if res.Budget == nil {
		t.Fatal("no budget bucket")
	}
	st, err := res.Budget.Status(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	if st.Bucket() != messages.BucketBudget || st.TTL() != 40*24*time.Hour || st.History() != 1 {
		t.Errorf("SLUICE_BUDGET: bucket %s, ttl %v, history %d", st.Bucket(), st.TTL(), st.History())
	}
}
