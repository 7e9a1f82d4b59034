package streams_test

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/sluicehq/sluice/messages"
	"github.com/sluicehq/sluice/services/config"
	"github.com/sluicehq/sluice/services/streams"
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
	if len(got) != 9 { // 4 streams + 5 KV buckets
		t.Fatalf("streams: %v", got)
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
	if res.Exec == nil || res.Results == nil || res.Config == nil || res.Usage == nil || res.Health == nil {
		t.Fatalf("Open returned %+v", res)
	}
}
