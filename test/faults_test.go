//go:build linux

package test

import (
	"context"
	"syscall"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/sluicehq/sluice/services/fakeprovider"
)

// Each fault test runs sluice as processes (see faults_harness_test.go)
// at about nine tenths of its capacity (two regions x two keys of 300
// RPM, enforced by the provider over every 1 s and 60 s window), breaks
// one part with SIGKILL while calls flow, and checks what subscribers and
// the provider saw: every accepted call has exactly one result, each
// result's attempts equal the requests the provider got for its call,
// and no key got more than its limits allow in any window.

const (
	faultRPM = 300
	// faultLoadEvery publishes 18 calls a second against 20 of capacity.
	faultLoadEvery = time.Second / 18
)

func faultKey() fakeprovider.KeyConfig {
	return fakeprovider.KeyConfig{Enforce: fakeprovider.EnforceWindows, Windows: []fakeprovider.Window{{Span: time.Second}, {Span: time.Minute}}}
}

func anyRegion(int) string { return "" }

// An executor killed twice mid-flow: the work it held comes back after
// AckWait. What it had claimed may have reached the provider: it counts
// as an attempt and the call goes on with the next; what it had not is
// late by then, and goes back through admission, never out in a burst.
func TestFaultExecutorKilled(t *testing.T) {
	t.Parallel()
	// Half a second at the provider keeps calls in the victim's hands.
	s := startFaultStack(t, faultOptions{rpm: faultRPM, latency: 500 * time.Millisecond, key: faultKey()})
	s.startDispatcher("d1")
	s.startDispatcher("d2")
	victim := s.startExecutor("us-east")
	s.startExecutor("us-east")
	s.startExecutor("eu-west")
	nc := s.connect()
	js, _ := jetstream.New(nc)
	log := watchResults(t, nc, "demo")
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()

	load := startFaultLoad(ctx, t, js, "exec-kill", faultLoadEvery, anyRegion)
	for range 2 {
		time.Sleep(5 * time.Second)
		victim.kill()
		victim = s.startExecutor("us-east")
	}
	time.Sleep(5 * time.Second)
	ids := load.halt()
	got := s.checkExact(t, log, ids, 2*time.Minute)
	// The kills met attempts under way: they came back, counted.
	again := 0
	for _, r := range got {
		if r.Attempts > 1 {
			again++
		}
	}
	t.Logf("%d calls needed another attempt after an executor died sending theirs", again)
	if again == 0 {
		t.Error("no call lost an attempt to the kills: the test did not kill an executor with calls in hand")
	}
}

// A dispatcher killed twice: the calls it held come back to the others
// after AckWait, and its leases of the schedules are lost, never spent
// twice.
func TestFaultDispatcherKilled(t *testing.T) {
	t.Parallel()
	s := startFaultStack(t, faultOptions{rpm: faultRPM, latency: 50 * time.Millisecond, key: faultKey()})
	victim := s.startDispatcher("d1")
	s.startDispatcher("d2")
	s.startDispatcher("d3")
	s.startExecutor("us-east")
	s.startExecutor("eu-west")
	nc := s.connect()
	js, _ := jetstream.New(nc)
	log := watchResults(t, nc, "demo")
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()

	load := startFaultLoad(ctx, t, js, "disp-kill", faultLoadEvery, anyRegion)
	time.Sleep(5 * time.Second)
	victim.kill()
	time.Sleep(2 * time.Second)
	victim.start(t)
	time.Sleep(5 * time.Second)
	s.dispatchers["d2"].kill()
	time.Sleep(5 * time.Second)
	ids := load.halt()
	s.checkExact(t, log, ids, 2*time.Minute)
}

// The NATS server killed and started again on its store: work-queue
// de-duplication does not survive (the server rebuilds it only from what
// is still stored), so a call redelivered to a dispatcher is admitted
// again; the attempt's claim stops its duplicate work before the
// provider, and the results stream refuses a second result.
func TestFaultNATSServerRestarted(t *testing.T) {
	t.Parallel()
	s := startFaultStack(t, faultOptions{rpm: faultRPM, latency: 50 * time.Millisecond, key: faultKey()})
	s.startDispatcher("d1")
	s.startDispatcher("d2")
	s.startExecutor("us-east")
	s.startExecutor("eu-west")
	nc := s.connect()
	js, _ := jetstream.New(nc)
	log := watchResults(t, nc, "demo")
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()

	load := startFaultLoad(ctx, t, js, "nats-kill", faultLoadEvery, anyRegion)
	time.Sleep(8 * time.Second)
	s.nats.kill()
	time.Sleep(2 * time.Second)
	s.nats.start(t)
	s.waitNATS(30 * time.Second)
	time.Sleep(8 * time.Second)
	ids := load.halt()
	s.checkExact(t, log, ids, 2*time.Minute)
}

// A region's executors stopped for a minute while calls are admitted,
// then started again: nothing is admitted to the region while it takes
// no work; calls that may go elsewhere do; the work that waited there
// past its send time goes back through admission; calls that must be
// served there wait for it, and go out at the schedule's pace when it
// is back, not in a burst.
func TestFaultRegionStoppedForAMinute(t *testing.T) {
	t.Parallel()
	s := startFaultStack(t, faultOptions{rpm: faultRPM, latency: 50 * time.Millisecond, key: faultKey()})
	s.startDispatcher("d1")
	s.startDispatcher("d2")
	east := s.startExecutor("us-east")
	s.startExecutor("eu-west")
	nc := s.connect()
	js, _ := jetstream.New(nc)
	log := watchResults(t, nc, "demo")
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()

	// One call in three may be served only in us-east.
	load := startFaultLoad(ctx, t, js, "region-stop", faultLoadEvery, func(i int) string {
		if i%3 == 0 {
			return `,"regions":["us-east"]`
		}
		return ""
	})
	time.Sleep(5 * time.Second)
	east.signal(syscall.SIGKILL, time.Minute)
	time.Sleep(time.Minute)
	s.startExecutor("us-east")
	time.Sleep(10 * time.Second)
	ids := load.halt()
	s.checkExact(t, log, ids, 3*time.Minute)
}
