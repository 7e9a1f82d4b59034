package concurrency_test

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/sluicehq/sluice/services/concurrency"
)

func TestAcquireUpToMaxThenFull(t *testing.T) {
	e := newEnv(t)
	a := e.open("a", concurrency.Options{})
	lease := e.lease(time.Minute)
	for i := range 3 {
		acquire(t, a, 3, fmt.Sprint("c", i), lease)
	}
	full(t, a, 3, "c3", lease)
	wantCounts(t, a, 3, 3)

	if !a.Release(dep, "c1") {
		t.Fatal("Release(c1) = false, want true")
	}
	if a.Release(dep, "c1") {
		t.Fatal("second Release(c1) = true, want false")
	}
	if a.Release("other", "c1") || a.Release(dep, "never") {
		t.Fatal("Release of an unknown call = true")
	}
	wantCounts(t, a, 2, 3)
	acquire(t, a, 3, "c3", lease)
	full(t, a, 3, "c4", lease)
	if got := e.stored(dep); len(got) != 1 || got["a"].N != 3 {
		t.Fatalf("stored %v, want a's block of 3", got)
	}
}

func TestSameCallHoldsOneSlot(t *testing.T) {
	e := newEnv(t)
	a := e.open("a", concurrency.Options{})
	acquire(t, a, 2, "c1", e.lease(5*time.Second))
	acquire(t, a, 2, "c1", e.lease(time.Second)) // an earlier end changes nothing
	acquire(t, a, 2, "c1", e.lease(time.Minute)) // a later one extends it
	wantCounts(t, a, 1, 1)
	acquire(t, a, 2, "c2", e.lease(5*time.Second))
	full(t, a, 2, "c3", e.lease(5*time.Second))

	// c2's lease passes; c1's, extended, does not.
	e.clock.Advance(5 * time.Second)
	wantCounts(t, a, 1, 2)
	acquire(t, a, 2, "c3", e.lease(5*time.Second))
	full(t, a, 2, "c4", e.lease(5*time.Second))
}

func TestBlockGrowsAndShrinks(t *testing.T) {
	e := newEnv(t)
	// Renewal is due every 3s.
	a := e.open("a", concurrency.Options{BlockTTL: 9 * time.Second})
	lease := e.lease(time.Minute)

	// Each growth takes what is missing plus a quarter of the calls in
	// flight, rounded up, but at most half of what is left free.
	steps := []struct{ call, held int }{{1, 2}, {2, 2}, {3, 4}, {4, 4}, {5, 7}}
	for _, s := range steps {
		acquire(t, a, 10, fmt.Sprint("c", s.call), lease)
		wantCounts(t, a, s.call, s.held)
	}
	if ops := a.Ops(); ops != 3 {
		t.Errorf("%d KV operations for 5 calls, want 3 (the growths)", ops)
	}
	for i := 2; i <= 5; i++ {
		a.Release(dep, fmt.Sprint("c", i))
	}
	tick(t, a) // not due: nothing shrinks
	wantCounts(t, a, 1, 7)

	// The first renewal keeps the peak since the block was written (5,
	// plus spare); the next ones follow the calls in flight down.
	for i, held := range []int{7, 2, 2, 0} {
		if i == 2 {
			a.Release(dep, "c1")
		}
		e.clock.Advance(3 * time.Second)
		tick(t, a)
		if got := a.Held(dep); got != held {
			t.Fatalf("after renewal %d: Held = %d, want %d", i+1, got, held)
		}
	}
	if got := e.stored(dep); len(got) != 0 {
		t.Fatalf("an idle holder left %v in the KV, want no block", got)
	}
}

func TestSpareLeavesFreeSlotsToOthers(t *testing.T) {
	e := newEnv(t)
	a, b := e.open("a", concurrency.Options{}), e.open("b", concurrency.Options{})
	lease := e.lease(time.Minute)
	for i := range 3 {
		acquire(t, a, 4, fmt.Sprint("a", i), lease)
	}
	// a has 3 calls in flight: its spare must not take the last slot.
	wantCounts(t, a, 3, 3)
	acquire(t, b, 4, "b0", lease)
	full(t, b, 4, "b1", lease)
	full(t, a, 4, "a3", lease)
}

func TestHoldersNeverExceedMaxTogether(t *testing.T) {
	e := newEnv(t)
	const max, goroutines, rounds = 5, 4, 150
	// Renewals and shrinks come due as the goroutines move the clock.
	opts := concurrency.Options{BlockTTL: 300 * time.Millisecond, ClockSkew: -1}
	holders := []*holder{e.open("a", opts), e.open("b", opts), e.open("c", opts)}

	// Every stored state must hold the invariant: writes drop expired
	// blocks, so all the stored blocks count.
	w, err := e.kv.Watch(context.Background(), dep)
	if err != nil {
		t.Fatal(err)
	}
	var checked, seen atomic.Int64
	watchDone := make(chan struct{})
	go func() {
		defer close(watchDone)
		for kve := range w.Updates() {
			if kve == nil || kve.Operation() != jetstream.KeyValuePut {
				continue
			}
			sum := 0
			for _, b := range decode(t, kve.Value()) {
				sum += b.N
			}
			if sum > max {
				t.Errorf("revision %d holds %d slots, more than %d: %s", kve.Revision(), sum, max, kve.Value())
			}
			checked.Add(1)
			seen.Store(int64(kve.Revision()))
		}
	}()

	var inFlight atomic.Int64
	var admitted, refused, contended [3]atomic.Int64
	var wg sync.WaitGroup
	for hi, h := range holders {
		for g := range goroutines {
			wg.Go(func() {
				for r := range rounds {
					call := fmt.Sprintf("%d-%d", g, r)
					err := h.Acquire(context.Background(), dep, max, call, e.lease(time.Second))
					e.clock.Advance(time.Millisecond)
					switch {
					case err == nil:
						admitted[hi].Add(1)
						// Counted between admission and release, so never
						// more than the slots actually held.
						if n := inFlight.Add(1); n > max {
							t.Errorf("%d calls in flight, more than %d", n, max)
						}
						time.Sleep(time.Duration(rand.N(200)) * time.Microsecond)
						inFlight.Add(-1)
						h.Release(dep, call)
					case errors.Is(err, concurrency.ErrFull):
						refused[hi].Add(1)
						// Wait before the next try, as a dispatcher would.
						time.Sleep(time.Duration(rand.N(200)) * time.Microsecond)
					case errors.Is(err, concurrency.ErrContention):
						contended[hi].Add(1)
					default:
						t.Errorf("Acquire: %v", err)
					}
					if r%10 == 0 {
						if err := h.Tick(context.Background()); err != nil && !errors.Is(err, concurrency.ErrContention) {
							t.Errorf("Tick: %v", err)
						}
					}
				}
			})
		}
	}
	wg.Wait()
	// Let the checker see the last revision.
	last, err := e.kv.Get(context.Background(), dep)
	if err != nil {
		t.Fatal(err)
	}
	eventually(t, func() bool { return seen.Load() >= int64(last.Revision()) }, "the checker sees the last state")
	_ = w.Stop()
	<-watchDone

	total := int64(0)
	for i, h := range holders {
		t.Logf("%s: %d admitted, %d refused, %d gave up on contention, %d KV operations, %d conflicts",
			h.Holder(), admitted[i].Load(), refused[i].Load(), contended[i].Load(), h.Ops(), h.Conflicts())
		total += admitted[i].Load()
	}
	t.Logf("%d stored states checked", checked.Load())
	if total < max {
		t.Fatalf("only %d calls admitted in all", total)
	}
}

// meddler is a KV bucket through which another holder writes value to the
// key right before Slots' next write reaches the server, so that the
// server (a real one) answers with a real conflict.
type meddler struct {
	jetstream.KeyValue
	mu    sync.Mutex
	value []byte // written before the next write; nil when disarmed
}

func (m *meddler) arm(value string) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.value = []byte(value)
}

func (m *meddler) meddle(ctx context.Context, key string) error {
	m.mu.Lock()
	value := m.value
	m.value = nil
	m.mu.Unlock()
	if value == nil {
		return nil
	}
	_, err := m.KeyValue.Put(ctx, key, value)
	return err
}

func (m *meddler) Create(ctx context.Context, key string, value []byte, opts ...jetstream.KVCreateOpt) (uint64, error) {
	if err := m.meddle(ctx, key); err != nil {
		return 0, err
	}
	return m.KeyValue.Create(ctx, key, value, opts...)
}

func (m *meddler) Update(ctx context.Context, key string, value []byte, rev uint64) (uint64, error) {
	if err := m.meddle(ctx, key); err != nil {
		return 0, err
	}
	return m.KeyValue.Update(ctx, key, value, rev)
}

func (m *meddler) Put(ctx context.Context, key string, value []byte) (uint64, error) {
	if err := m.meddle(ctx, key); err != nil {
		return 0, err
	}
	return m.KeyValue.Put(ctx, key, value)
}

func TestConcurrentWriterWins(t *testing.T) {
	e := newEnv(t)
	m := &meddler{}
	a := e.openWith("a", concurrency.Options{}, func(kv jetstream.KeyValue) jetstream.KeyValue {
		m.KeyValue = kv
		return m
	})
	far := e.t0.Add(time.Hour).UnixNano()

	// z creates the key first and takes 2 of 3 slots: a's Create fails, a
	// reads the key again and takes the last slot.
	m.arm(fmt.Sprintf(`{"holders":{"z":{"n":2,"exp":%d}}}`, far))
	acquire(t, a, 3, "a0", e.lease(time.Minute))
	wantCounts(t, a, 1, 1)
	if a.Conflicts() != 1 {
		t.Fatalf("%d conflicts, want 1", a.Conflicts())
	}

	// a needs a second slot and, as far as it knows, none is free: it
	// writes its want. Meanwhile z shrinks to 1: a's Update, at a stale
	// revision, fails; a reads again and grows into the free slot.
	m.arm(fmt.Sprintf(`{"holders":{"z":{"n":1,"exp":%d},"a":{"n":1,"exp":%d,"want":1}}}`, far, e.stored(dep)["a"].Exp))
	acquire(t, a, 3, "a1", e.lease(time.Minute))
	if a.Conflicts() != 2 {
		t.Fatalf("%d conflicts, want 2", a.Conflicts())
	}
	full(t, a, 3, "a2", e.lease(time.Minute))
	if got := e.stored(dep); got["z"].N != 1 || got["a"].N != 2 {
		t.Fatalf("stored %v, want z's block of 1 and a's of 2", got)
	}
}
