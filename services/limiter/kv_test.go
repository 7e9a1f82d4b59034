package limiter_test

import (
	"context"
	"errors"
	"fmt"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/sluicehq/sluice/services/limiter"
	"github.com/sluicehq/sluice/services/limiter/limitertest"
	"github.com/sluicehq/sluice/test/natstest"
)

func TestKVContract(t *testing.T) {
	srv := natstest.Start(t)
	var buckets atomic.Int64
	limitertest.Run(t, func(t *testing.T, clock limiter.Clock) func() limiter.Limiter {
		bucket := fmt.Sprintf("limits_%d", buckets.Add(1))
		createBucket(t, srv, bucket)
		// Each instance is a dispatcher: its own connection, its own cache
		// and watcher, over the same KV bucket.
		return func() limiter.Limiter {
			return startKV(t, openBucket(t, srv, bucket), limiter.KVOptions{Clock: clock})
		}
	})
}

// createBucket creates a KV bucket on srv.
func createBucket(t testing.TB, srv *server.Server, bucket string) jetstream.KeyValue {
	t.Helper()
	js, err := jetstream.New(natstest.Connect(t, srv))
	if err != nil {
		t.Fatal(err)
	}
	kv, err := js.CreateKeyValue(context.Background(), jetstream.KeyValueConfig{Bucket: bucket})
	if err != nil {
		t.Fatalf("create KV bucket: %v", err)
	}
	return kv
}

// openBucket binds to an existing KV bucket on a connection of its own.
func openBucket(t testing.TB, srv *server.Server, bucket string) jetstream.KeyValue {
	t.Helper()
	js, err := jetstream.New(natstest.Connect(t, srv))
	if err != nil {
		t.Fatal(err)
	}
	kv, err := js.KeyValue(context.Background(), bucket)
	if err != nil {
		t.Fatalf("open KV bucket: %v", err)
	}
	return kv
}

// startKV returns a started KV that stops when the test ends.
func startKV(t testing.TB, kv jetstream.KeyValue, opts limiter.KVOptions) *limiter.KV {
	t.Helper()
	l := limiter.NewKV(kv, opts)
	if err := l.Start(context.Background()); err != nil {
		t.Fatalf("start KV limiter: %v", err)
	}
	t.Cleanup(l.Stop)
	return l
}

// meddler is a KV bucket through which another writer changes a key right
// before the limiter's Update reaches the server, so that the server (a real
// one) answers with a real conflict.
type meddler struct {
	jetstream.KeyValue
	times int // how many Updates to meddle with; <0 means all
	value []byte
}

func (m *meddler) Update(ctx context.Context, key string, value []byte, rev uint64) (uint64, error) {
	if m.times != 0 {
		m.times--
		if _, err := m.KeyValue.Put(ctx, key, m.value); err != nil {
			return 0, err
		}
	}
	return m.KeyValue.Update(ctx, key, value, rev)
}

// stateAt encodes a bucket the way KV stores it.
func stateAt(level limiter.Amount, at time.Time) []byte {
	return fmt.Appendf(nil, `{"r":%g,"t":%g,"at":%d}`, level.Requests, level.Tokens, at.UnixNano())
}

func TestKVCostsOneOperationPerTake(t *testing.T) {
	srv := natstest.Start(t)
	clock := limitertest.NewManualClock()
	l := startKV(t, createBucket(t, srv, "limits"), limiter.KVOptions{Clock: clock.Now})
	ctx := context.Background()
	lim := limit()

	ops := func(want uint64, what string) {
		t.Helper()
		if got := l.Ops(); got != want {
			t.Fatalf("after %s: %d KV operations, want %d", what, got, want)
		}
	}
	if _, err := l.Take(ctx, "k", lim, amt(1, 100), amt(1, 100)); err != nil {
		t.Fatal(err)
	}
	ops(1, "the first Take (a Create)")
	if _, err := l.Take(ctx, "k", lim, amt(1, 100), amt(9, 900)); err != nil {
		t.Fatal(err)
	}
	ops(2, "the second Take (an Update on the cached revision)")
	if _, err := l.Take(ctx, "k", lim, amt(1, 1), amt(1, 1)); !errors.Is(err, limiter.ErrInsufficient) {
		t.Fatalf("Take from an empty bucket: %v, want ErrInsufficient", err)
	}
	ops(2, "a refused Take")
	if got, err := l.Available(ctx, "k", lim); err != nil || got != amt(0, 0) {
		t.Fatalf("Available = %v, %v; want empty", got, err)
	}
	if _, err := l.Available(ctx, "other", lim); err != nil {
		t.Fatal(err)
	}
	ops(2, "Available")
	if err := l.Adjust(ctx, "k", lim, amt(100, 1e6)); err != nil {
		t.Fatal(err)
	}
	ops(3, "a refund")
	if err := l.Adjust(ctx, "k", lim, amt(1, 1)); err != nil {
		t.Fatal(err)
	}
	ops(3, "a refund to a full bucket")
	if l.Conflicts() != 0 {
		t.Fatalf("%d conflicts with one writer", l.Conflicts())
	}
}

func TestKVRetriesOnFreshStateAfterConflict(t *testing.T) {
	srv := natstest.Start(t)
	clock := limitertest.NewManualClock()
	kv := createBucket(t, srv, "limits")
	m := &meddler{KeyValue: kv, value: stateAt(amt(2, 200), clock.Now())}
	l := startKV(t, m, limiter.KVOptions{Clock: clock.Now})
	ctx := context.Background()

	if _, err := l.Take(ctx, "k", limit(), amt(1, 1), amt(1, 1)); err != nil {
		t.Fatal(err)
	}
	m.times = 1
	// Another writer left 2 requests: the retry must see them, not the 9
	// this process believed were there.
	got, err := l.Take(ctx, "k", limit(), amt(1, 1), amt(5, 500))
	if err != nil || got != amt(2, 200) {
		t.Fatalf("Take = %v, %v; want the other writer's {2, 200}", got, err)
	}
	if l.Conflicts() != 1 || l.Ops() != 4 {
		t.Fatalf("%d conflicts, %d operations; want 1 conflict and 4 operations (Create, failed Update, Get, Update)", l.Conflicts(), l.Ops())
	}
	entry, err := kv.Get(ctx, "k")
	if err != nil || string(entry.Value()) != string(stateAt(amt(0, 0), clock.Now())) {
		t.Fatalf("stored %q, %v; want an empty bucket", entry.Value(), err)
	}
}

func TestKVGivesUpUnderContention(t *testing.T) {
	srv := natstest.Start(t)
	clock := limitertest.NewManualClock()
	kv := createBucket(t, srv, "limits")
	other := stateAt(amt(7, 700), clock.Now())
	m := &meddler{KeyValue: kv, times: -1, value: other}
	l := startKV(t, m, limiter.KVOptions{Clock: clock.Now, MaxAttempts: 3})
	ctx := context.Background()
	if _, err := kv.Put(ctx, "k", other); err != nil {
		t.Fatal(err)
	}

	_, err := l.Take(ctx, "k", limit(), amt(1, 1), amt(1, 1))
	if !errors.Is(err, limiter.ErrContention) {
		t.Fatalf("Take = %v, want ErrContention", err)
	}
	if l.Conflicts() != 3 {
		t.Fatalf("%d conflicts, want 3 (MaxAttempts)", l.Conflicts())
	}
	entry, err := kv.Get(ctx, "k")
	if err != nil || string(entry.Value()) != string(other) {
		t.Fatalf("stored %q, %v; want the other writer's value untouched", entry.Value(), err)
	}
}

func TestKVWithoutWatcherReadsFirst(t *testing.T) {
	srv := natstest.Start(t)
	clock := limitertest.NewManualClock()
	kv := createBucket(t, srv, "limits")
	l := limiter.NewKV(kv, limiter.KVOptions{Clock: clock.Now})
	ctx := context.Background()

	if _, err := l.Take(ctx, "k", limit(), amt(1, 1), amt(4, 400)); err != nil {
		t.Fatal(err)
	}
	if l.Ops() != 2 {
		t.Fatalf("%d operations, want 2 (Get, Create)", l.Ops())
	}
	// Another writer refunds behind its back: without a watcher, Available
	// reads the key and sees it.
	if _, err := kv.Put(ctx, "k", stateAt(amt(10, 1000), clock.Now())); err != nil {
		t.Fatal(err)
	}
	if got, err := l.Available(ctx, "k", limit()); err != nil || got != amt(10, 1000) {
		t.Fatalf("Available = %v, %v; want the refunded {10, 1000}", got, err)
	}
	if l.Ops() != 3 {
		t.Fatalf("%d operations, want 3", l.Ops())
	}

	// Start, then Stop: back to reading first, and still correct.
	if err := l.Start(ctx); err != nil {
		t.Fatal(err)
	}
	if err := l.Start(ctx); err == nil {
		t.Fatal("second Start succeeded")
	}
	l.Stop()
	l.Stop()
	if got, err := l.Take(ctx, "k", limit(), amt(1, 1), amt(20, 2000)); err != nil || got != amt(10, 1000) {
		t.Fatalf("Take after Stop = %v, %v; want {10, 1000}", got, err)
	}
}

func TestKVWatcherSeesOtherWriters(t *testing.T) {
	srv := natstest.Start(t)
	clock := limitertest.NewManualClock()
	createBucket(t, srv, "limits")
	a := startKV(t, openBucket(t, srv, "limits"), limiter.KVOptions{Clock: clock.Now})
	b := startKV(t, openBucket(t, srv, "limits"), limiter.KVOptions{Clock: clock.Now})
	ctx := context.Background()

	if _, err := a.Take(ctx, "k", limit(), amt(6, 600), amt(6, 600)); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		got, err := b.Available(ctx, "k", limit())
		if err != nil {
			t.Fatal(err)
		}
		if got == amt(4, 400) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("b.Available = %v, never saw a's take", got)
		}
		time.Sleep(5 * time.Millisecond)
	}
	if b.Ops() != 0 {
		t.Fatalf("b made %d KV operations to answer Available, want 0", b.Ops())
	}
	// b's cache is current, so its take is one Update.
	if _, err := b.Take(ctx, "k", limit(), amt(1, 100), amt(1, 100)); err != nil {
		t.Fatal(err)
	}
	if b.Ops() != 1 || b.Conflicts() != 0 {
		t.Fatalf("b: %d operations, %d conflicts; want 1 and 0", b.Ops(), b.Conflicts())
	}
	// A restarted process loads the state of every key at Start.
	c := startKV(t, openBucket(t, srv, "limits"), limiter.KVOptions{Clock: clock.Now})
	if got, err := c.Available(ctx, "k", limit()); err != nil || got != amt(3, 300) {
		t.Fatalf("c.Available = %v, %v; want {3, 300}", got, err)
	}
	if c.Ops() != 0 {
		t.Fatalf("c made %d KV operations, want 0", c.Ops())
	}
}

func TestKVBadAndDeletedState(t *testing.T) {
	srv := natstest.Start(t)
	clock := limitertest.NewManualClock()
	kv := createBucket(t, srv, "limits")
	// No watcher: every call reads the key, so the test needs no waiting.
	l := limiter.NewKV(kv, limiter.KVOptions{Clock: clock.Now})
	ctx := context.Background()

	for _, bad := range []string{`not json`, `{"r":1,"t":2}`, `{"r":1,"t":2,"at":-5}`} {
		if _, err := kv.Put(ctx, "k", []byte(bad)); err != nil {
			t.Fatal(err)
		}
		if _, err := l.Take(ctx, "k", limit(), amt(1, 1), amt(1, 1)); !errors.Is(err, limiter.ErrBadState) {
			t.Errorf("Take on %s: err = %v, want ErrBadState", bad, err)
		}
		if _, err := l.Available(ctx, "k", limit()); !errors.Is(err, limiter.ErrBadState) {
			t.Errorf("Available on %s: err = %v, want ErrBadState", bad, err)
		}
	}
	// Deleting the key is how an operator resets a bucket: it is full again.
	if err := kv.Delete(ctx, "k"); err != nil {
		t.Fatal(err)
	}
	if got, err := l.Take(ctx, "k", limit(), amt(1, 1), amt(20, 2000)); err != nil || got != amt(10, 1000) {
		t.Fatalf("Take after Delete = %v, %v; want a full bucket", got, err)
	}
}

func TestKVRejectsInvalidKeys(t *testing.T) {
	srv := natstest.Start(t)
	l := startKV(t, createBucket(t, srv, "limits"), limiter.KVOptions{})
	_, err := l.Take(context.Background(), "gpt-4.1 us", limit(), amt(1, 1), amt(1, 1))
	if !errors.Is(err, jetstream.ErrInvalidKey) {
		t.Fatalf("Take with a space in the key: err = %v, want jetstream.ErrInvalidKey", err)
	}
}
