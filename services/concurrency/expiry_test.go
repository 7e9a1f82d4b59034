package concurrency_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/sluicehq/sluice/services/concurrency"
)

func TestCallLeaseExpiresWithoutRelease(t *testing.T) {
	e := newEnv(t)
	a := e.open("a", concurrency.Options{})
	acquire(t, a, 1, "c1", e.lease(5*time.Second))
	full(t, a, 1, "c2", e.lease(5*time.Second))
	ops := a.Ops()

	// c1's executor died: no report ever comes.
	e.clock.Advance(5*time.Second - 1)
	full(t, a, 1, "c2", e.lease(5*time.Second))
	e.clock.Advance(1)
	wantCounts(t, a, 0, 1)
	acquire(t, a, 1, "c2", e.lease(5*time.Second))
	if got := a.Ops() - ops; got != 0 {
		t.Errorf("reusing an expired call's slot cost %d KV operations, want 0", got)
	}
	if a.Release(dep, "c1") {
		t.Error("Release of an expired call = true, want false")
	}
	wantCounts(t, a, 1, 1)
}

func TestStopReturnsSlotsAtOnce(t *testing.T) {
	e := newEnv(t)
	a, b := e.open("a", concurrency.Options{}), e.open("b", concurrency.Options{})
	lease := e.lease(30 * time.Second)
	for i := range 4 {
		acquire(t, a, 4, fmt.Sprint("a", i), lease)
	}
	full(t, b, 4, "b0", lease)
	a.Release(dep, "a0")
	a.Release(dep, "a1")

	if err := a.Stop(context.Background()); err != nil {
		t.Fatal(err)
	}
	// The two calls still in flight keep their slots until their leases
	// end; the two released ones come back at once, with no clock moving.
	if got := e.stored(dep)["a"]; got.N != 2 || got.Exp != lease.UnixNano() {
		t.Fatalf("after Stop, a's block is %+v, want 2 slots until the leases end (%d)", got, lease.UnixNano())
	}
	long := e.lease(time.Hour)
	eventually(t, func() bool { return b.Acquire(context.Background(), dep, 4, "b0", long) == nil }, "b takes a returned slot")
	acquire(t, b, 4, "b1", long)
	full(t, b, 4, "b2", long)

	// The calls a left behind end with their leases (plus the clock skew
	// allowed).
	e.clock.Advance(30*time.Second + time.Second - 1)
	full(t, b, 4, "b2", long)
	e.clock.Advance(1)
	acquire(t, b, 4, "b2", long)
	acquire(t, b, 4, "b3", long)
	if got := e.stored(dep); len(got) != 1 || got["b"].N != 4 {
		t.Fatalf("stored %v, want only b's block of 4", got)
	}
}

func TestStopWithNothingInFlightRemovesTheBlock(t *testing.T) {
	e := newEnv(t)
	a := e.open("a", concurrency.Options{})
	acquire(t, a, 4, "a0", e.lease(time.Minute))
	a.Release(dep, "a0")
	if err := a.Stop(context.Background()); err != nil {
		t.Fatal(err)
	}
	if got := e.stored(dep); len(got) != 0 {
		t.Fatalf("after Stop, stored %v, want no block", got)
	}
	ops := a.Ops()
	if err := a.Stop(context.Background()); err != nil {
		t.Fatal(err)
	}
	if a.Ops() != ops {
		t.Fatal("a second Stop wrote again")
	}
}

func TestDeadHolderSlotsReturnAfterItsLeases(t *testing.T) {
	e := newEnv(t)
	a, b := e.open("a", concurrency.Options{}), e.open("b", concurrency.Options{})
	for i := range 3 {
		acquire(t, a, 3, fmt.Sprint("a", i), e.lease(30*time.Second))
	}
	a.kill()

	// a's block lasts BlockTTL (10s) plus the lease span (30s) after it was
	// written, and b allows 1s of clock skew. Past BlockTTL alone, a's calls
	// may still be running on their executors: their slots stay taken.
	e.clock.Advance(10*time.Second + time.Second)
	full(t, b, 3, "b0", e.lease(30*time.Second))
	e.clock.Advance(30*time.Second - 1)
	full(t, b, 3, "b0", e.lease(30*time.Second))
	e.clock.Advance(1)
	for i := range 3 {
		acquire(t, b, 3, fmt.Sprint("b", i), e.lease(30*time.Second))
	}
	// b's write dropped a's dead block.
	if got := e.stored(dep); len(got) != 1 || got["b"].N != 3 {
		t.Fatalf("stored %v, want only b's block of 3", got)
	}
}

func TestBlockCoversTheLongestLease(t *testing.T) {
	e := newEnv(t)
	a, b := e.open("a", concurrency.Options{}), e.open("b", concurrency.Options{})
	acquire(t, a, 2, "long", e.lease(time.Minute))
	// A short call grows the block: its expiry must still cover the long
	// call's lease.
	acquire(t, a, 2, "short", e.lease(time.Second))
	a.kill()
	e.clock.Advance(time.Minute + time.Second - 1)
	full(t, b, 2, "b0", e.lease(time.Second))
	e.clock.Advance(1)
	acquire(t, b, 2, "b0", e.lease(time.Second))
	acquire(t, b, 2, "b1", e.lease(time.Second))
}

func TestIdleBlockOfDeadHolderReturnsAfterBlockTTL(t *testing.T) {
	e := newEnv(t)
	a, b := e.open("a", concurrency.Options{}), e.open("b", concurrency.Options{})
	// Short leases: a's block outlives them by BlockTTL.
	for i := range 3 {
		acquire(t, a, 3, fmt.Sprint("a", i), e.lease(time.Second))
	}
	a.kill()
	e.clock.Advance(time.Second + 10*time.Second + time.Second - 1)
	full(t, b, 3, "b0", e.lease(time.Second))
	e.clock.Advance(1)
	acquire(t, b, 3, "b0", e.lease(time.Second))
}

func TestRestartedHolderWaitsForItsOldCalls(t *testing.T) {
	e := newEnv(t)
	old := e.open("d1", concurrency.Options{})
	acquire(t, old, 2, "c1", e.lease(30*time.Second))
	acquire(t, old, 2, "c2", e.lease(30*time.Second))
	old.kill()

	// The same dispatcher id, restarted: the calls of its earlier life may
	// still be running, so its old block counts as calls in flight.
	d1 := e.open("d1", concurrency.Options{})
	full(t, d1, 2, "c3", e.lease(30*time.Second))
	wantCounts(t, d1, 2, 2)
	// The old block expires BlockTTL plus the lease span after its write.
	e.clock.Advance(40*time.Second - 1)
	full(t, d1, 2, "c3", e.lease(30*time.Second))
	e.clock.Advance(1)
	acquire(t, d1, 2, "c3", e.lease(30*time.Second))
	acquire(t, d1, 2, "c4", e.lease(30*time.Second))
	wantCounts(t, d1, 2, 2)
}

func TestLoopRenewsAndShrinks(t *testing.T) {
	e := newEnv(t)
	// The loop ticks on the wall clock; what it decides follows the manual
	// one. BlockTTL 9s: renewal is due 3s after each write.
	a := e.open("a", concurrency.Options{BlockTTL: 9 * time.Second, TickEvery: time.Millisecond})
	b := e.open("b", concurrency.Options{BlockTTL: 9 * time.Second})
	acquire(t, a, 3, "c1", e.lease(5*time.Second))
	blockIs := func(n int, exp time.Time) func() bool {
		return func() bool {
			got, ok := e.stored(dep)["a"]
			return ok && got.N == n && got.Exp == exp.UnixNano()
		}
	}
	// c1 in flight with 1 spare; BlockTTL plus the 5s span after the write.
	eventually(t, blockIs(2, e.t0.Add(14*time.Second)), "a's first block is stored")

	e.clock.Advance(4 * time.Second)
	eventually(t, blockIs(2, e.t0.Add(18*time.Second)), "the loop renews a's block")

	// c1's lease passes at 5s. The next renewal still keeps the peak of
	// the window before it; the one after that finds a idle.
	e.clock.Advance(4 * time.Second)
	eventually(t, blockIs(2, e.t0.Add(22*time.Second)), "the loop renews a's block again")
	if got := a.InFlight(dep); got != 0 {
		t.Fatalf("InFlight = %d after the lease passed, want 0", got)
	}
	e.clock.Advance(4 * time.Second)
	eventually(t, func() bool { _, ok := e.stored(dep)["a"]; return !ok }, "the loop removes a's idle block")
	eventually(t, func() bool { return b.Acquire(context.Background(), dep, 3, "b0", e.lease(time.Second)) == nil }, "b takes a slot")
	acquire(t, b, 3, "b1", e.lease(time.Second))
	acquire(t, b, 3, "b2", e.lease(time.Second))
}
