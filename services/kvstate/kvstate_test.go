package kvstate_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/sluicehq/sluice/services/kvstate"
	"github.com/sluicehq/sluice/test/natstest"
)

// counter is the value the tests keep: {"n":5}.
type counter struct {
	N int
}

var codec = kvstate.Codec[counter]{
	Encode: func(c counter) ([]byte, error) { return json.Marshal(map[string]int{"n": c.N}) },
	Decode: func(data []byte) (counter, error) {
		var w struct {
			N *int `json:"n"`
		}
		if err := json.Unmarshal(data, &w); err != nil {
			return counter{}, err
		}
		if w.N == nil {
			return counter{}, errors.New(`missing "n"`)
		}
		return counter{N: *w.N}, nil
	},
}

func value(n int) []byte { return []byte(`{"n":` + strconv.Itoa(n) + `}`) }

// add returns an update that adds d to the counter.
func add(d int) func(counter) (counter, bool, error) {
	return func(c counter) (counter, bool, error) { return counter{N: c.N + d}, true, nil }
}

// createBucket creates a KV bucket on srv, on a connection of its own.
func createBucket(t *testing.T, srv *server.Server) jetstream.KeyValue {
	t.Helper()
	js, err := jetstream.New(natstest.Connect(t, srv))
	if err != nil {
		t.Fatal(err)
	}
	kv, err := js.CreateKeyValue(context.Background(), jetstream.KeyValueConfig{Bucket: "state"})
	if err != nil {
		t.Fatalf("create KV bucket: %v", err)
	}
	return kv
}

// openBucket binds to the bucket on a connection of its own, as another
// process would.
func openBucket(t *testing.T, srv *server.Server) jetstream.KeyValue {
	t.Helper()
	js, err := jetstream.New(natstest.Connect(t, srv))
	if err != nil {
		t.Fatal(err)
	}
	kv, err := js.KeyValue(context.Background(), "state")
	if err != nil {
		t.Fatalf("open KV bucket: %v", err)
	}
	return kv
}

// start returns a started Store that stops when the test ends.
func start(t *testing.T, kv jetstream.KeyValue, opts kvstate.Options) *kvstate.Store[counter] {
	t.Helper()
	s := kvstate.New(kv, codec, opts)
	if err := s.Start(context.Background()); err != nil {
		t.Fatalf("start: %v", err)
	}
	t.Cleanup(s.Stop)
	return s
}

func update(t *testing.T, s *kvstate.Store[counter], key string, f func(counter) (counter, bool, error)) {
	t.Helper()
	if _, err := s.Update(context.Background(), key, f); err != nil {
		t.Fatalf("Update(%q): %v", key, err)
	}
}

func stored(t *testing.T, kv jetstream.KeyValue, key string) string {
	t.Helper()
	kve, err := kv.Get(context.Background(), key)
	if err != nil {
		t.Fatalf("get %q: %v", key, err)
	}
	return string(kve.Value())
}

func wantStats(t *testing.T, s *kvstate.Store[counter], want kvstate.Stats) {
	t.Helper()
	if got := s.Stats(); got != want {
		t.Fatalf("stats %+v, want %+v", got, want)
	}
	if got, ops := s.Ops(), want.Gets+want.Creates+want.Updates; got != ops {
		t.Fatalf("Ops = %d, want %d", got, ops)
	}
	if got := s.Conflicts(); got != want.Conflicts {
		t.Fatalf("Conflicts = %d, want %d", got, want.Conflicts)
	}
}

// eventually polls cond until it holds, for what a Store learns through
// its watcher. The deadline only bounds a failing test.
func eventually(t *testing.T, cond func() bool, what string) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting until %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// meddler is a KV bucket through which another writer, on a connection of
// its own, changes a key right before each of the Store's Updates reaches
// the server: the server (a real one) answers with a real conflict.
type meddler struct {
	jetstream.KeyValue
	other  jetstream.KeyValue
	mu     sync.Mutex
	times  int // how many Updates to meddle with; <0 means all
	writes int // the other writer's value is 100+writes
}

func (m *meddler) Update(ctx context.Context, key string, v []byte, rev uint64) (uint64, error) {
	m.mu.Lock()
	if m.times != 0 {
		m.times--
		m.writes++
		if _, err := m.other.Put(ctx, key, value(100+m.writes)); err != nil {
			m.mu.Unlock()
			return 0, err
		}
	}
	m.mu.Unlock()
	return m.KeyValue.Update(ctx, key, v, rev)
}

func TestCacheFollowsOtherWriters(t *testing.T) {
	srv := natstest.Start(t)
	raw := createBucket(t, srv)
	a := start(t, openBucket(t, srv), kvstate.Options{})
	b := start(t, openBucket(t, srv), kvstate.Options{})
	ctx := context.Background()

	update(t, a, "k", add(5))
	wantStats(t, a, kvstate.Stats{Creates: 1})
	if e, watching := a.Cached("k"); !watching || !e.Exists || e.Value.N != 5 || e.Rev == 0 {
		t.Fatalf("a's own write: cached %+v, watching %v", e, watching)
	}
	eventually(t, func() bool { e, _ := b.Cached("k"); return e.Value.N == 5 }, "b sees a's write")
	if e, err := b.Get(ctx, "k"); err != nil || e.Value.N != 5 {
		t.Fatalf("b.Get = %+v, %v", e, err)
	}
	// b's cache is current: its update is one Update on the cached
	// revision, and its reads cost nothing.
	update(t, b, "k", add(1))
	wantStats(t, b, kvstate.Stats{Updates: 1})
	if got := stored(t, raw, "k"); got != `{"n":6}` {
		t.Fatalf("stored %s, want n 6", got)
	}

	// A delete reaches the cache as a missing key, which the next write
	// creates.
	if err := raw.Delete(ctx, "k"); err != nil {
		t.Fatal(err)
	}
	eventually(t, func() bool { e, _ := a.Cached("k"); return !e.Exists }, "a sees the delete")
	if e, _ := a.Cached("k"); e.Value.N != 0 || e.Rev == 0 {
		t.Fatalf("a's cache after the delete: %+v, want the zero value at the marker's revision", e)
	}
	update(t, a, "k", add(2))
	wantStats(t, a, kvstate.Stats{Creates: 2})

	// A Store started later loads every key at Start.
	if _, err := raw.Put(ctx, "other", value(9)); err != nil {
		t.Fatal(err)
	}
	c := start(t, openBucket(t, srv), kvstate.Options{})
	if e, _ := c.Cached("other"); e.Value.N != 9 {
		t.Fatalf("c loaded %+v, want n 9", e)
	}
	all, err := c.All(ctx)
	if err != nil || len(all) != 2 || all["k"].Value.N != 2 || all["other"].Value.N != 9 {
		t.Fatalf("c.All = %+v, %v; want k 2 and other 9", all, err)
	}
	wantStats(t, c, kvstate.Stats{})
}

func TestConflictRetriesOnFreshState(t *testing.T) {
	srv := natstest.Start(t)
	raw := createBucket(t, srv)
	m := &meddler{KeyValue: openBucket(t, srv), other: openBucket(t, srv)}
	s := start(t, m, kvstate.Options{})

	update(t, s, "k", add(1))
	m.times = 1
	// The other writer stored 101 before the Update arrived: the retry must
	// start from it, not from the 1 this Store believed was there.
	var seen []int
	wrote, err := s.Update(context.Background(), "k", func(c counter) (counter, bool, error) {
		seen = append(seen, c.N)
		return counter{N: c.N + 1}, true, nil
	})
	if err != nil || !wrote {
		t.Fatalf("Update = %v, %v", wrote, err)
	}
	if len(seen) != 2 || seen[0] != 1 || seen[1] != 101 {
		t.Fatalf("the update saw %v, want [1 101]", seen)
	}
	wantStats(t, s, kvstate.Stats{Creates: 1, Updates: 2, Gets: 1, Conflicts: 1})
	if got := stored(t, raw, "k"); got != `{"n":102}` {
		t.Fatalf("stored %s, want n 102", got)
	}
	if e, _ := s.Cached("k"); e.Value.N != 102 {
		t.Fatalf("cached %+v, want n 102", e)
	}
}

func TestCreateConflict(t *testing.T) {
	srv := natstest.Start(t)
	raw := createBucket(t, srv)
	// Without the watcher, but trusting its empty cache: the Create meets
	// the key another writer made.
	s := kvstate.New(openBucket(t, srv), codec, kvstate.Options{TrustCache: true})
	if _, err := raw.Put(context.Background(), "k", value(7)); err != nil {
		t.Fatal(err)
	}
	update(t, s, "k", add(1))
	wantStats(t, s, kvstate.Stats{Creates: 1, Gets: 1, Updates: 1, Conflicts: 1})
	if got := stored(t, raw, "k"); got != `{"n":8}` {
		t.Fatalf("stored %s, want n 8", got)
	}
}

func TestBoundedAttempts(t *testing.T) {
	srv := natstest.Start(t)
	raw := createBucket(t, srv)
	m := &meddler{KeyValue: openBucket(t, srv), other: openBucket(t, srv), times: -1}
	mine := errors.New("mine: contention")
	s := start(t, m, kvstate.Options{Name: "mine", MaxAttempts: 3, Contention: mine})
	if _, err := raw.Put(context.Background(), "k", value(1)); err != nil {
		t.Fatal(err)
	}
	eventually(t, func() bool { e, _ := s.Cached("k"); return e.Exists }, "the Store sees the key")

	wrote, err := s.Update(context.Background(), "k", add(1))
	if wrote || !errors.Is(err, kvstate.ErrContention) || !errors.Is(err, mine) {
		t.Fatalf("Update = %v, %v; want ErrContention matching the Store's own sentinel", wrote, err)
	}
	var ce *kvstate.ContentionError
	if !errors.As(err, &ce) || ce.Key != "k" || ce.Attempts != 3 {
		t.Fatalf("error %#v, want a ContentionError for k after 3 attempts", err)
	}
	if want := `mine: contention: key "k" changed on each of 3 attempts`; err.Error() != want {
		t.Fatalf("message %q, want %q", err, want)
	}
	wantStats(t, s, kvstate.Stats{Updates: 3, Gets: 2, Conflicts: 3})
	if got := stored(t, raw, "k"); got != `{"n":103}` {
		t.Fatalf("stored %s, want the other writer's last value", got)
	}

	// A pause between attempts ends with ctx.
	slow := kvstate.New(m, codec, kvstate.Options{Backoff: time.Hour})
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	if _, err := slow.Update(ctx, "k", add(1)); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Update in a long pause: %v, want context.DeadlineExceeded", err)
	}
}

func TestNoOpWritesCostNothing(t *testing.T) {
	srv := natstest.Start(t)
	raw := createBucket(t, srv)
	if _, err := raw.Put(context.Background(), "k", value(3)); err != nil {
		t.Fatal(err)
	}
	same := func(c counter) (counter, bool, error) { return c, false, nil }
	refuse := errors.New("refused")
	ctx := context.Background()

	// Watched: decided from the cache, at no cost.
	s := start(t, openBucket(t, srv), kvstate.Options{})
	if wrote, err := s.Update(ctx, "k", same); wrote || err != nil {
		t.Fatalf("Update = %v, %v; want nothing written", wrote, err)
	}
	if _, err := s.Update(ctx, "k", func(counter) (counter, bool, error) { return counter{}, true, refuse }); !errors.Is(err, refuse) {
		t.Fatalf("Update = %v, want f's error", err)
	}
	wantStats(t, s, kvstate.Stats{})

	// Without the watcher: one read, no write.
	u := kvstate.New(openBucket(t, srv), codec, kvstate.Options{})
	if wrote, err := u.Update(ctx, "k", same); wrote || err != nil {
		t.Fatalf("Update = %v, %v; want nothing written", wrote, err)
	}
	wantStats(t, u, kvstate.Stats{Gets: 1})

	// Trusting the cache without the watcher: nothing at all.
	tr := kvstate.New(openBucket(t, srv), codec, kvstate.Options{TrustCache: true})
	if wrote, err := tr.Update(ctx, "k", same); wrote || err != nil {
		t.Fatalf("Update = %v, %v; want nothing written", wrote, err)
	}
	wantStats(t, tr, kvstate.Stats{})

	kve, err := raw.Get(ctx, "k")
	if err != nil || kve.Revision() != 1 {
		t.Fatalf("revision %v, %v; want 1, untouched", kve, err)
	}
}

func TestStopAndStart(t *testing.T) {
	srv := natstest.Start(t)
	raw := createBucket(t, srv)
	s := kvstate.New(openBucket(t, srv), codec, kvstate.Options{})
	ctx := context.Background()
	if _, err := raw.Put(ctx, "k", value(1)); err != nil {
		t.Fatal(err)
	}

	// Before Start: reads go to the KV.
	if e, err := s.Get(ctx, "k"); err != nil || e.Value.N != 1 || s.Watching() {
		t.Fatalf("Get = %+v, %v; watching %v", e, err, s.Watching())
	}
	update(t, s, "k", add(1))
	wantStats(t, s, kvstate.Stats{Gets: 2, Updates: 1})

	stopped, cancel := context.WithCancel(ctx)
	cancel()
	if err := s.Start(stopped); !errors.Is(err, context.Canceled) {
		t.Fatalf("Start with a cancelled context: %v", err)
	}
	if s.Watching() {
		t.Fatal("watching after a failed Start")
	}
	if err := s.Start(ctx); err != nil {
		t.Fatal(err)
	}
	if err := s.Start(ctx); err == nil {
		t.Fatal("a second Start succeeded")
	}
	if !s.Watching() {
		t.Fatal("not watching after Start")
	}
	if e, err := s.Get(ctx, "k"); err != nil || e.Value.N != 2 {
		t.Fatalf("Get = %+v, %v", e, err)
	}
	wantStats(t, s, kvstate.Stats{Gets: 2, Updates: 1})

	s.Stop()
	s.Stop()
	if s.Watching() {
		t.Fatal("watching after Stop")
	}
	// Stopped: a write behind its back is found by reading, and the cache
	// keeps what it knew until then.
	if _, err := raw.Put(ctx, "k", value(10)); err != nil {
		t.Fatal(err)
	}
	if e, _ := s.Cached("k"); e.Value.N != 2 {
		t.Fatalf("cached %+v after Stop, want the last value seen", e)
	}
	update(t, s, "k", add(1))
	wantStats(t, s, kvstate.Stats{Gets: 3, Updates: 2})
	if got := stored(t, raw, "k"); got != `{"n":11}` {
		t.Fatalf("stored %s, want n 11", got)
	}
	all, err := s.All(ctx)
	if err != nil || len(all) != 1 || all["k"].Value.N != 11 {
		t.Fatalf("All = %+v, %v", all, err)
	}
	wantStats(t, s, kvstate.Stats{Gets: 4, Updates: 2})

	// And it starts again.
	if err := s.Start(ctx); err != nil {
		t.Fatal(err)
	}
	defer s.Stop()
	if e, _ := s.Cached("k"); e.Value.N != 11 {
		t.Fatalf("cached %+v after a restart, want n 11", e)
	}
}

func TestUnreadableValues(t *testing.T) {
	srv := natstest.Start(t)
	raw := createBucket(t, srv)
	bad := errors.New("mine: bad state")
	watched := start(t, openBucket(t, srv), kvstate.Options{Unreadable: bad})
	unwatched := kvstate.New(openBucket(t, srv), codec, kvstate.Options{Unreadable: bad})
	ctx := context.Background()

	for i, v := range []string{`garbage`, `{}`, `{"n":"x"}`} {
		rev, err := raw.Put(ctx, "k", []byte(v))
		if err != nil {
			t.Fatal(err)
		}
		eventually(t, func() bool { e, _ := watched.Cached("k"); return e.Rev == rev }, "the watcher delivers "+v)
		for name, s := range map[string]*kvstate.Store[counter]{"watched": watched, "unwatched": unwatched} {
			e, err := s.Get(ctx, "k")
			if err != nil {
				t.Fatalf("%s Get on %s: %v", name, v, err)
			}
			var de *kvstate.DecodeError
			if !errors.Is(e.Err, kvstate.ErrUnreadable) || !errors.Is(e.Err, bad) || !errors.As(e.Err, &de) || de.Key != "k" || de.Rev != rev || de.Err == nil {
				t.Fatalf("%s Get on %s: entry error %v, want a DecodeError for k at %d", name, v, e.Err, rev)
			}
			if want := fmt.Sprintf(`mine: bad state: key "k" revision %d: `, rev); len(e.Err.Error()) <= len(want) || e.Err.Error()[:len(want)] != want {
				t.Fatalf("message %q, want it to start with %q", e.Err, want)
			}
			if wrote, err := s.Update(ctx, "k", add(1)); wrote || !errors.Is(err, kvstate.ErrUnreadable) {
				t.Fatalf("%s Update on %s: %v, %v; want ErrUnreadable", name, v, wrote, err)
			}
		}
		if got := stored(t, raw, "k"); got != v {
			t.Fatalf("round %d: stored %s, want %s untouched", i, got, v)
		}
	}
	// Deleting the key ends it.
	if err := raw.Delete(ctx, "k"); err != nil {
		t.Fatal(err)
	}
	update(t, unwatched, "k", add(1))
	eventually(t, func() bool { e, _ := watched.Cached("k"); return e.Err == nil && e.Value.N == 1 }, "the watcher sees the new value")
}

func TestTurns(t *testing.T) {
	srv := natstest.Start(t)
	createBucket(t, srv)
	s := start(t, openBucket(t, srv), kvstate.Options{})
	if k1, k2, other := s.Turn("k"), s.Turn("k"), s.Turn("other"); k1 != k2 || k1 == other {
		t.Fatal("Turn must return one turn per key")
	}

	// Writers of one key in one process, taking turns, never conflict.
	const writers = 16
	var wg sync.WaitGroup
	errs := make(chan error, writers)
	for range writers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			turn := s.Turn("k")
			if err := turn.Lock(context.Background()); err != nil {
				errs <- err
				return
			}
			defer turn.Unlock()
			_, err := s.Update(context.Background(), "k", add(1))
			errs <- err
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
	if e, _ := s.Cached("k"); e.Value.N != writers {
		t.Fatalf("n = %d, want %d", e.Value.N, writers)
	}
	wantStats(t, s, kvstate.Stats{Creates: 1, Updates: writers - 1})

	// A waiter gives up when its context ends.
	turn := s.Turn("k")
	if err := turn.Lock(context.Background()); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Millisecond)
	defer cancel()
	if err := turn.Lock(ctx); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Lock of a held turn: %v, want context.DeadlineExceeded", err)
	}
	turn.Unlock()
	if err := turn.Lock(context.Background()); err != nil {
		t.Fatal(err)
	}
	turn.Unlock()
}

func TestKVErrors(t *testing.T) {
	srv := natstest.Start(t)
	createBucket(t, srv)
	s := start(t, openBucket(t, srv), kvstate.Options{Name: "mine"})
	_, err := s.Update(context.Background(), "not a key", add(1))
	if !errors.Is(err, jetstream.ErrInvalidKey) {
		t.Fatalf("Update on an invalid key: %v, want jetstream.ErrInvalidKey", err)
	}
	u := kvstate.New(openBucket(t, srv), codec, kvstate.Options{Name: "mine"})
	if _, err := u.Get(context.Background(), "not a key"); !errors.Is(err, jetstream.ErrInvalidKey) {
		t.Fatalf("Get on an invalid key: %v, want jetstream.ErrInvalidKey", err)
	}
	enc := kvstate.New(openBucket(t, srv), kvstate.Codec[counter]{
		Encode: func(counter) ([]byte, error) { return nil, errors.New("no") },
		Decode: codec.Decode,
	}, kvstate.Options{})
	if wrote, err := enc.Update(context.Background(), "k", add(1)); wrote || err == nil {
		t.Fatalf("Update with a failing encoder: %v, %v", wrote, err)
	}
}
