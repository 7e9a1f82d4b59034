package test

import (
	"fmt"
	"sort"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/sluicehq/sluice/messages"
)

// oneDeploymentYAML is pool "m" with a single deployment.
func oneDeploymentYAML(rpm, tpm int64) func(string) string {
	return func(fakeURL string) string {
		return fmt.Sprintf(`pools:
  m:
    deployments:
      - {id: only, provider: openai, base_url: %q, region: us-east, key: KEY_ONLY, rpm: %d, tpm: %d}
teams:
  demo: {}
`, fakeURL+"/v1", rpm, tpm)
	}
}

// A call that cannot be admitted waits, and is answered deadline_exceeded
// when its deadline passes while waiting; it is never failed early.
func TestDeadlineWhileWaiting(t *testing.T) {
	s := startStack(t, stackOptions{yaml: oneDeploymentYAML(6, 100000)}) // one call per 10 s
	startDispatcher(t, s, "d1", nil)
	startExecutors(t, s)
	nc := connect(t, s)
	js, _ := jetstream.New(nc)
	log := watchResults(t, nc, "demo")
	ctx := t.Context()
	var ids []string
	for i := 0; i < 4; i++ {
		id := fmt.Sprintf("wait-%d", i)
		ids = append(ids, id)
		if err := publishCall(ctx, js, "demo", "standard", id, chatCall(id, "m", 5, `,"timeout_ms":1500`)); err != nil {
			t.Fatal(err)
		}
	}
	log.waitFor(t, ids, 30*time.Second)
	outcomes := map[string]int{}
	for _, r := range log.exactlyOnce(t, ids) {
		outcomes[r.Outcome()]++
		if r.Error != nil && r.Error.Code == messages.CodeDeadlineExceeded {
			if r.Timings.QueuedMS < 1000 {
				t.Errorf("call %s failed after waiting %.0f ms; it should wait until its deadline", r.ID, r.Timings.QueuedMS)
			}
			if r.Attempts != 0 {
				t.Errorf("call %s never reached the provider but reports %d attempts", r.ID, r.Attempts)
			}
		}
	}
	if outcomes["ok"] != 1 || outcomes[string(messages.CodeDeadlineExceeded)] != 3 {
		t.Fatalf("outcomes %v: want the one call that fits ok and three deadline_exceeded", outcomes)
	}
	if st := s.Fake.Stats().Total; st.Received != 1 {
		t.Fatalf("the provider received %d requests, want 1", st.Received)
	}
}

// When a pool is contended, critical calls are admitted before batch calls
// that were waiting longer.
func TestHigherTiersAreAdmittedFirst(t *testing.T) {
	s := startStack(t, stackOptions{yaml: oneDeploymentYAML(600, 1000000)}) // 10/s, burst 5
	startDispatcher(t, s, "d1", nil)
	startExecutors(t, s)
	nc := connect(t, s)
	js, _ := jetstream.New(nc)
	log := watchResults(t, nc, "demo")
	ctx := t.Context()
	var batch, critical []string
	for i := 0; i < 20; i++ {
		id := fmt.Sprintf("batch-%02d", i)
		batch = append(batch, id)
		if err := publishCall(ctx, js, "demo", "batch", id, chatCall(id, "m", 5, "")); err != nil {
			t.Fatal(err)
		}
	}
	time.Sleep(100 * time.Millisecond)
	for i := 0; i < 3; i++ {
		id := fmt.Sprintf("critical-%d", i)
		critical = append(critical, id)
		if err := publishCall(ctx, js, "demo", "critical", id, chatCall(id, "m", 5, "")); err != nil {
			t.Fatal(err)
		}
	}
	all := append(append([]string{}, batch...), critical...)
	log.waitFor(t, all, 60*time.Second)
	got := log.exactlyOnce(t, all)
	var lastCritical time.Time
	for _, id := range critical {
		if f := got[id].Timings.FinishedAt; f.After(lastCritical) {
			lastCritical = f
		}
	}
	var after []string
	for _, id := range batch {
		if got[id].Timings.FinishedAt.After(lastCritical) {
			after = append(after, id)
		}
	}
	sort.Strings(after)
	if len(after) < 10 {
		t.Fatalf("only %d of 20 earlier batch calls finished after the critical ones (%v); critical calls must go first", len(after), after)
	}
	if st := s.Fake.Stats().Total; st.Refused() != 0 {
		t.Fatalf("provider refused %d", st.Refused())
	}
}
