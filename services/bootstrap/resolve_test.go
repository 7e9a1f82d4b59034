package bootstrap_test

import (
	"bytes"
	"context"
	"errors"
	"log/slog"
	"strings"
	"sync"
	"testing"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/sluicehq/sluice/messages"
	"github.com/sluicehq/sluice/services/bootstrap"
	"github.com/sluicehq/sluice/services/config"
	"github.com/sluicehq/sluice/services/streams"
)

// A dispatcher on a fresh server creates sluice's streams and stores its
// file; one started later with another file uses KV's (KV wins), and says
// so; with Force it stores its file over KV's.
func TestDispatcherStoresItsFileOnlyWhenKVHoldsNone(t *testing.T) {
	ctx := testContext(t)
	js := jetStream(t)

	live, kv, err := bootstrap.Resolve(ctx, js, bootstrap.Config{File: file(t, 60), Path: "a.yaml", Store: true, Logger: quiet})
	if err != nil {
		t.Fatal(err)
	}
	if live.Revision() != 1 || rpm(live.Load()) != 60 {
		t.Fatalf("first dispatcher: revision %d, rpm %d; want its file stored at revision 1", live.Revision(), rpm(live.Load()))
	}
	for _, name := range []string{messages.StreamCalls, messages.StreamExec, messages.StreamResults} {
		if _, err := js.Stream(ctx, name); err != nil {
			t.Errorf("stream %s: %v", name, err)
		}
	}
	stored, rev, err := config.Fetch(ctx, kv)
	if err != nil || rev != 1 || rpm(stored) != 60 {
		t.Fatalf("KV holds revision %d (rpm %v), %v; want the file at revision 1", rev, stored, err)
	}

	var logs bytes.Buffer
	live, _, err = bootstrap.Resolve(ctx, js, bootstrap.Config{File: file(t, 120), Path: "b.yaml", Store: true,
		Logger: slog.New(slog.NewTextHandler(&logs, nil))})
	if err != nil {
		t.Fatal(err)
	}
	if live.Revision() != 1 || rpm(live.Load()) != 60 {
		t.Fatalf("second dispatcher: revision %d, rpm %d; want KV's, revision 1 at rpm 60", live.Revision(), rpm(live.Load()))
	}
	if !strings.Contains(logs.String(), "KV wins") || !strings.Contains(logs.String(), "b.yaml") {
		t.Errorf("a file that differs from KV's is not warned about:\n%s", logs.String())
	}
	if got := revisions(t, ctx, kv); len(got) != 1 {
		t.Fatalf("KV revisions %v after a second dispatcher; want only the first", got)
	}

	live, _, err = bootstrap.Resolve(ctx, js, bootstrap.Config{File: file(t, 120), Store: true, Force: true, Logger: quiet})
	if err != nil {
		t.Fatal(err)
	}
	stored, rev, err = config.Fetch(ctx, kv)
	if err != nil || rev != 2 || rpm(stored) != 120 || live.Revision() != 2 || rpm(live.Load()) != 120 {
		t.Fatalf("with Force: KV at revision %d (%v), live at %d; want the file at revision 2", rev, err, live.Revision())
	}
}

// Dispatchers starting together on an empty KV store one configuration
// between them, and all use it.
func TestDispatchersStartingTogetherStoreOne(t *testing.T) {
	ctx := testContext(t)
	js := jetStream(t)
	if _, err := streams.Ensure(ctx, js, file(t, 1).Streams); err != nil {
		t.Fatal(err)
	}
	const n = 4
	lives := make([]*config.Live, n)
	errs := make([]error, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			lives[i], _, errs[i] = bootstrap.Resolve(ctx, js, bootstrap.Config{File: file(t, 60*(i+1)), Store: true, Logger: quiet})
		}()
	}
	wg.Wait()
	kv, err := js.KeyValue(ctx, messages.BucketConfig)
	if err != nil {
		t.Fatal(err)
	}
	if got := revisions(t, ctx, kv); len(got) != 1 {
		t.Fatalf("KV revisions %v; want one configuration stored", got)
	}
	stored, rev, err := config.Fetch(ctx, kv)
	if err != nil {
		t.Fatal(err)
	}
	for i := range n {
		if errs[i] != nil {
			t.Fatalf("dispatcher %d: %v", i, errs[i])
		}
		if lives[i].Revision() != rev || rpm(lives[i].Load()) != rpm(stored) {
			t.Errorf("dispatcher %d uses revision %d (rpm %d); KV holds %d (rpm %d)", i, lives[i].Revision(), rpm(lives[i].Load()), rev, rpm(stored))
		}
	}
}

// An executor (Store false) creates nothing: it waits for the bucket,
// then uses its file until a configuration is stored, and stores none.
func TestExecutorWaitsForTheBucketAndStoresNothing(t *testing.T) {
	ctx := testContext(t)
	js := jetStream(t)
	type resolved struct {
		live *config.Live
		kv   jetstream.KeyValue
		err  error
	}
	done := make(chan resolved, 1)
	go func() {
		live, kv, err := bootstrap.Resolve(ctx, js, bootstrap.Config{File: file(t, 60), Logger: quiet})
		done <- resolved{live, kv, err}
	}()
	// Whether it looked before or after, it returns only once the bucket
	// exists: it never creates it.
	if _, err := streams.Ensure(ctx, js, file(t, 1).Streams); err != nil {
		t.Fatal(err)
	}
	var r resolved
	select {
	case r = <-done:
	case <-ctx.Done():
		t.Fatal("an executor still waits for a bucket that exists")
	}
	if r.err != nil {
		t.Fatal(r.err)
	}
	if r.live.Revision() != 0 || rpm(r.live.Load()) != 60 {
		t.Fatalf("executor: revision %d, rpm %d; want its file, not from KV", r.live.Revision(), rpm(r.live.Load()))
	}
	if _, _, err := config.Fetch(ctx, r.kv); !errors.Is(err, config.ErrNotStored) {
		t.Fatalf("KV after an executor started: %v; want nothing stored", err)
	}
}

// Without a file a service waits for a configuration in KV and uses it;
// stopped while it waits, it returns ErrStopped.
func TestWithoutAFileAServiceWaitsForKV(t *testing.T) {
	ctx := testContext(t)
	js := jetStream(t)

	stopped, stop := context.WithCancel(ctx)
	stop()
	if _, _, err := bootstrap.Resolve(stopped, js, bootstrap.Config{Logger: quiet}); !errors.Is(err, bootstrap.ErrStopped) {
		t.Fatalf("stopped while waiting: %v, want ErrStopped", err)
	}

	res, err := streams.Ensure(ctx, js, file(t, 1).Streams)
	if err != nil {
		t.Fatal(err)
	}
	type resolved struct {
		live *config.Live
		err  error
	}
	done := make(chan resolved, 1)
	go func() {
		live, _, err := bootstrap.Resolve(ctx, js, bootstrap.Config{Logger: quiet})
		done <- resolved{live, err}
	}()
	rev, err := config.Apply(ctx, res.Config, file(t, 90))
	if err != nil {
		t.Fatal(err)
	}
	var r resolved
	select {
	case r = <-done:
	case <-ctx.Done():
		t.Fatal("a service still waits for a configuration stored in KV")
	}
	if r.err != nil || r.live.Revision() != rev || rpm(r.live.Load()) != 90 {
		t.Fatalf("without a file: %v, revision %d; want KV's revision %d", r.err, r.live.Revision(), rev)
	}
}
