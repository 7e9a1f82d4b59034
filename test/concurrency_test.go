package test

import (
	"fmt"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/sluicehq/sluice/messages"
	"github.com/sluicehq/sluice/services/executor"
	"github.com/sluicehq/sluice/services/fakeprovider"
)

// A deployment allows one call in flight. Its executor is killed in the
// middle of a call, so that call never reports back: its slot returns on
// its own when its lease ends, and the next call goes then, not before
// and not never.
func TestKilledExecutorsSlotReturnsWithinItsLease(t *testing.T) {
	const lease = 3 * time.Second
	yaml := func(fakeURL string) string {
		return fmt.Sprintf(`pools:
  m:
    deployments:
      - {id: only, provider: openai, base_url: %q, region: us-east, key: KEY_ONLY, rpm: 6000, tpm: 1000000, max_in_flight: 1}
teams:
  demo: {}
admission: {in_flight_lease: %s}
`, fakeURL+"/v1", lease)
	}
	s := startStack(t, stackOptions{yaml: yaml, fake: fakeprovider.Config{Latency: time.Minute}})
	startDispatcher(t, s, "d1", nil)
	victim := startExecutor(t, s, "us-east", func(c *executor.Config) { c.ShutdownGrace = 100 * time.Millisecond })
	nc := connect(t, s)
	js, _ := jetstream.New(nc)
	log := watchResults(t, nc, "demo")

	if err := publishCall(t.Context(), js, "demo", "standard", "stuck", chatCall("stuck", "m", 5, `,"timeout_ms":300000`)); err != nil {
		t.Fatal(err)
	}
	for s.Fake.Stats().Total.Received < 1 {
		time.Sleep(5 * time.Millisecond)
	}
	admitted := time.Now() // the slot was taken a moment before this
	victim.Kill()
	if err := s.Fake.SetLatency(0, 0); err != nil {
		t.Fatal(err)
	}
	startExecutor(t, s, "us-east", nil)

	if err := publishCall(t.Context(), js, "demo", "standard", "next", chatCall("next", "m", 5, `,"timeout_ms":300000`)); err != nil {
		t.Fatal(err)
	}
	log.waitFor(t, []string{"next"}, 30*time.Second)
	done := time.Now()
	r := log.one(t, "next")
	if r.Status != messages.StatusOK {
		t.Fatalf("next call: %+v", r.Error)
	}
	waited := done.Sub(admitted)
	t.Logf("the next call finished %s after the stuck one was admitted (lease %s)", waited.Round(time.Millisecond), lease)
	if waited < lease-500*time.Millisecond {
		t.Errorf("the next call went after %s: the stuck call's slot was free before its lease ended", waited)
	}
	if waited > lease+3*time.Second {
		t.Errorf("the next call went after %s: the stuck call's slot did not return with its lease", waited)
	}
}
