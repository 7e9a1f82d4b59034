package concurrency_test

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/sluicehq/sluice/services/concurrency"
)

func TestShrinkingMaxAdmitsNothingBeyondIt(t *testing.T) {
	e := newEnv(t)
	a := e.open("a", concurrency.Options{})
	lease := e.lease(time.Minute)
	for i := range 4 {
		acquire(t, a, 5, fmt.Sprint("c", i), lease)
	}
	wantCounts(t, a, 4, 4)

	// The maximum drops to 3 while 4 calls are in flight: they carry on,
	// and nothing more is admitted until fewer than 3 remain.
	full(t, a, 3, "c4", lease)
	tick(t, a) // cannot shrink below the calls in flight
	wantCounts(t, a, 4, 4)
	a.Release(dep, "c0")
	tick(t, a) // shrinks to the new maximum
	wantCounts(t, a, 3, 3)
	full(t, a, 3, "c4", lease)
	a.Release(dep, "c1")
	acquire(t, a, 3, "c4", lease)
	wantCounts(t, a, 3, 3)
	full(t, a, 3, "c5", lease)
	if got := e.stored(dep)["a"].N; got != 3 {
		t.Fatalf("stored block of %d, want 3", got)
	}
}

func TestShrinkingMaxShrinksEveryBlock(t *testing.T) {
	e := newEnv(t)
	a, b := e.open("a", concurrency.Options{}), e.open("b", concurrency.Options{})
	lease := e.lease(time.Minute)
	for i := range 3 {
		acquire(t, a, 8, fmt.Sprint("a", i), lease)
	}
	acquire(t, b, 8, "b0", lease)
	acquire(t, b, 8, "b1", lease)
	wantCounts(t, a, 3, 4)
	wantCounts(t, b, 2, 2)
	// A holder admits within its block from what it knows of the others'
	// blocks: let the watchers catch up, as they do within milliseconds.
	sees := func(h *holder, other string, n int) func() bool {
		return func() bool {
			snap, err := h.Snapshot(context.Background())
			if err != nil {
				return false
			}
			for _, blk := range snap[dep] {
				if blk.Holder == other && blk.Slots == n {
					return true
				}
			}
			return false
		}
	}
	eventually(t, sees(a, "b", 2), "a sees b's block")
	eventually(t, sees(b, "a", 4), "b sees a's block")
	sum := func() int {
		n := 0
		for _, blk := range e.stored(dep) {
			n += blk.N
		}
		return n
	}

	// The maximum drops to 4 with 5 calls in flight: the blocks shrink to
	// the calls in flight, no further; nothing is admitted.
	full(t, a, 4, "a3", lease)
	full(t, b, 4, "b2", lease)
	tick(t, a)
	tick(t, b)
	if got := sum(); got != 5 {
		t.Fatalf("stored blocks %v add up to %d, want the 5 calls in flight", e.stored(dep), got)
	}
	// As a's calls end, its block shrinks to what b leaves.
	a.Release(dep, "a0")
	a.Release(dep, "a1")
	tick(t, a)
	if got := sum(); got != 4 {
		t.Fatalf("stored blocks %v add up to %d, want 4", e.stored(dep), got)
	}
	wantCounts(t, a, 1, 2)
	acquire(t, a, 4, "a3", lease)
	full(t, a, 4, "a4", lease)
}

func TestMaxZeroIsUnbounded(t *testing.T) {
	e := newEnv(t)
	a := e.open("a", concurrency.Options{})
	for i := range 1000 {
		acquire(t, a, 0, fmt.Sprint("c", i), e.lease(time.Minute))
	}
	wantCounts(t, a, 1000, 0)
	if ops := a.Ops(); ops != 0 {
		t.Fatalf("%d KV operations, want 0", ops)
	}
	if got := e.stored(dep); got != nil {
		t.Fatalf("stored %v, want nothing", got)
	}
}

func TestMaxZeroDropsTheBlock(t *testing.T) {
	e := newEnv(t)
	a := e.open("a", concurrency.Options{})
	acquire(t, a, 4, "c0", e.lease(time.Minute))
	acquire(t, a, 0, "c1", e.lease(time.Minute))
	tick(t, a)
	if got := e.stored(dep); len(got) != 0 {
		t.Fatalf("stored %v after the bound was lifted, want no block", got)
	}
	wantCounts(t, a, 2, 0)
}

func TestCallsWithinBlockCostNoKVOperation(t *testing.T) {
	e := newEnv(t)
	a := e.open("a", concurrency.Options{})
	lease := e.lease(time.Minute)
	acquire(t, a, 10, "long", lease)
	acquire(t, a, 10, "warm", lease)
	a.Release(dep, "warm")
	ops := a.Ops()
	for i := range 200 {
		call := fmt.Sprint("c", i)
		acquire(t, a, 10, call, e.lease(time.Minute))
		if !a.Release(dep, call) {
			t.Fatalf("Release(%s) = false", call)
		}
		if i%50 == 0 {
			tick(t, a) // nothing due
		}
	}
	if got := a.Ops() - ops; got != 0 {
		t.Fatalf("200 calls within the block cost %d KV operations, want 0", got)
	}
}

func TestWaitingHolderGetsItsFairShare(t *testing.T) {
	e := newEnv(t)
	a, b := e.open("a", concurrency.Options{}), e.open("b", concurrency.Options{})
	lease := e.lease(time.Minute)
	for i := range 5 {
		acquire(t, a, 5, fmt.Sprint("a", i), lease)
	}
	wantCounts(t, a, 5, 5)

	// b is refused and says that it wants a slot; once.
	full(t, b, 5, "b0", lease)
	if got := e.stored(dep)["b"]; got.N != 0 || got.Want != 1 {
		t.Fatalf("b's stored block %+v, want no slots and a want of 1", got)
	}
	ops := b.Ops()
	full(t, b, 5, "b0", lease)
	if b.Ops() != ops {
		t.Fatal("a second refusal wrote the same want again")
	}

	// With wants of 5 and 1 over 5 slots, a's fair share is 4: once a has
	// heard of b's want, it admits no fifth call, and gives the slot back
	// when a call ends.
	eventually(t, func() bool {
		snap, err := a.Snapshot(context.Background())
		return err == nil && len(snap[dep]) == 2 && snap[dep][1].Want == 1
	}, "a sees b's want")
	a.Release(dep, "a0")
	full(t, a, 5, "a5", lease)
	tick(t, a)
	wantCounts(t, a, 4, 4)
	eventually(t, func() bool { return b.Acquire(context.Background(), dep, 5, "b0", lease) == nil }, "b gets a slot")
	wantCounts(t, b, 1, 1)
	full(t, b, 5, "b1", lease)
}

func TestWantLastsWhileRefused(t *testing.T) {
	e := newEnv(t)
	a, b := e.open("a", concurrency.Options{}), e.open("b", concurrency.Options{})
	acquire(t, a, 1, "a0", e.lease(time.Hour))
	full(t, b, 1, "b0", e.lease(time.Minute))
	// Renewal is due BlockTTL/3 after the write: b renews its want, since it
	// was refused in the window...
	e.clock.Advance(4 * time.Second)
	tick(t, b)
	if got := e.stored(dep)["b"]; got.N != 0 || got.Want != 1 || got.Exp != e.t0.Add(14*time.Second).UnixNano() {
		t.Fatalf("b's stored block %+v, want a want of 1 renewed until %v", got, e.t0.Add(14*time.Second))
	}
	// ... and drops it after a window without refusals.
	e.clock.Advance(4 * time.Second)
	tick(t, b)
	if got, ok := e.stored(dep)["b"]; ok {
		t.Fatalf("b's stored block %+v, want none", got)
	}
}

func TestInvalidArguments(t *testing.T) {
	e := newEnv(t)
	if _, err := concurrency.New(e.kv, "", concurrency.Options{}); !errors.Is(err, concurrency.ErrInvalidArgument) {
		t.Errorf("New with no holder: err = %v, want ErrInvalidArgument", err)
	}
	a := e.open("a", concurrency.Options{})
	ctx := context.Background()
	lease := e.lease(time.Minute)
	for _, c := range []struct {
		dep, call string
		max       int
		lease     time.Time
	}{
		{"", "c", 1, lease},
		{dep, "", 1, lease},
		{dep, "c", -1, lease},
		{dep, "c", 1, e.clock.Now()},
		{dep, "c", 0, e.clock.Now().Add(-time.Second)},
	} {
		if err := a.Acquire(ctx, c.dep, c.max, c.call, c.lease); !errors.Is(err, concurrency.ErrInvalidArgument) {
			t.Errorf("Acquire(%q, %d, %q, %v): err = %v, want ErrInvalidArgument", c.dep, c.max, c.call, c.lease, err)
		}
	}
	cancelled, cancel := context.WithCancel(ctx)
	cancel()
	if err := a.Acquire(cancelled, dep, 1, "c", lease); !errors.Is(err, context.Canceled) {
		t.Errorf("Acquire with a cancelled context: err = %v, want context.Canceled", err)
	}
	if err := a.Tick(cancelled); !errors.Is(err, context.Canceled) {
		t.Errorf("Tick with a cancelled context: err = %v, want context.Canceled", err)
	}
	if err := a.Acquire(ctx, "not a key", 1, "c", lease); err == nil {
		t.Error("Acquire on an invalid KV key succeeded")
	}
	wantCounts(t, a, 0, 0)
	if err := a.Start(ctx); err == nil {
		t.Error("a second Start succeeded")
	}
}

func TestUnreadableState(t *testing.T) {
	e := newEnv(t)
	a := e.open("a", concurrency.Options{})
	for _, bad := range []string{
		`garbage`,
		`{}`,
		`{"holders":{"x":{"n":1}}}`,
		`{"holders":{"x":{"n":-1,"exp":5}}}`,
		`{"holders":{"x":{"n":1,"exp":5,"want":-2}}}`,
	} {
		if _, err := e.kv.Put(context.Background(), dep, []byte(bad)); err != nil {
			t.Fatal(err)
		}
		if err := a.Acquire(context.Background(), dep, 2, "c", e.lease(time.Minute)); !errors.Is(err, concurrency.ErrBadState) {
			t.Errorf("with %s stored: err = %v, want ErrBadState", bad, err)
		}
	}
	// Deleting the key resets it.
	if err := e.kv.Delete(context.Background(), dep); err != nil {
		t.Fatal(err)
	}
	eventually(t, func() bool { return a.Acquire(context.Background(), dep, 2, "c", e.lease(time.Minute)) == nil }, "a writes the key again")
}

func TestWithoutWatcher(t *testing.T) {
	e := newEnv(t)
	b := e.open("b", concurrency.Options{})
	acquire(t, b, 3, "b0", e.lease(time.Minute))

	a, err := concurrency.New(e.kv, "a", concurrency.Options{Clock: e.clock.Now})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	if err := a.Acquire(ctx, dep, 3, "a0", e.lease(time.Minute)); err != nil {
		t.Fatal(err)
	}
	// Without the watcher, every write reads the key first; the first
	// also reads it to find a block left by an earlier life of a.
	if ops := a.Ops(); ops != 3 {
		t.Errorf("%d KV operations for the first call, want 3 (Get, Get, Update)", ops)
	}
	if err := a.Acquire(ctx, dep, 3, "a1", e.lease(time.Minute)); !errors.Is(err, concurrency.ErrFull) {
		t.Errorf("Acquire(a1) = %v, want ErrFull", err)
	}
	snap, err := a.Snapshot(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if got := snap[dep]; len(got) != 2 || got[0].Holder != "a" || got[0].Slots != 1 || got[1].Holder != "b" || got[1].Slots != 2 || !got[0].Live || !got[1].Live {
		t.Errorf("Snapshot = %+v, want a with 1 slot and b with 2, both live", got)
	}
	a.Release(dep, "a0")
	if err := a.Stop(ctx); err != nil {
		t.Fatal(err)
	}
	if _, ok := e.stored(dep)["a"]; ok {
		t.Error("Stop left a's block")
	}
}

func TestSnapshotShowsDeadBlocks(t *testing.T) {
	e := newEnv(t)
	a, b := e.open("a", concurrency.Options{}), e.open("b", concurrency.Options{})
	acquire(t, a, 4, "a0", e.lease(time.Second))
	a.kill()
	eventually(t, func() bool {
		snap, err := b.Snapshot(context.Background())
		return err == nil && len(snap[dep]) == 1
	}, "b sees a's block")
	e.clock.Advance(time.Second + 10*time.Second + time.Second)
	snap, err := b.Snapshot(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	want := concurrency.Block{Holder: "a", Slots: 2, Want: 1, Expires: e.t0.Add(11 * time.Second), Live: false}
	if got := snap[dep]; len(got) != 1 || !got[0].Expires.Equal(want.Expires) || got[0].Holder != want.Holder || got[0].Slots != want.Slots || got[0].Want != want.Want || got[0].Live {
		t.Fatalf("Snapshot = %+v, want [%+v]", got, want)
	}
}
