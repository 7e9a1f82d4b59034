package main

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/sluicehq/sluice/messages"
	"github.com/sluicehq/sluice/services/health"
	"github.com/sluicehq/sluice/services/status"
)

// sluice status shows the calls waiting per team and tier (over every
// dispatcher), each deployment's headroom and state, and the dispatchers.
func TestStatus(t *testing.T) {
	s := startStack(t, true)
	nc, err := s.Connect("test")
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	js, _ := jetstream.New(nc)
	ctx := context.Background()
	kv, err := js.KeyValue(ctx, messages.BucketHealth)
	if err != nil {
		t.Fatal(err)
	}
	store := health.NewStore(kv)
	if err := store.Start(ctx); err != nil {
		t.Fatal(err)
	}
	defer store.Stop()
	// Every deployment of the pool cools for a minute: calls wait.
	for _, d := range s.Shared.Load().Pools["gpt-4o-mini"].Deployments {
		if err := store.Update(ctx, d.ID, func(h *messages.DeploymentHealth) bool {
			h.CooldownUntil, h.CooldownReason = time.Now().Add(time.Minute), "429 (requests)"
			return true
		}); err != nil {
			t.Fatal(err)
		}
	}
	time.Sleep(100 * time.Millisecond)
	for i := 0; i < 7; i++ {
		tier := messages.TierBatch
		if i < 2 {
			tier = messages.TierCritical
		}
		id := fmt.Sprintf("st-%d", i)
		body := `{"id":"` + id + `","model":"gpt-4o-mini","body":{"messages":[{"role":"user","content":"x"}]}}`
		if _, err := js.Publish(ctx, messages.CallSubject("demo", tier), []byte(body), jetstream.WithMsgID(id)); err != nil {
			t.Fatal(err)
		}
	}

	code, out, errOut := runExecute("status", "--server", s.ClientURL(), "--json")
	if code != 0 {
		t.Fatalf("exit %d: %s", code, errOut)
	}
	var snap status.Snapshot
	if err := json.Unmarshal([]byte(out), &snap); err != nil {
		t.Fatalf("%v: %s", err, out)
	}
	if snap.WaitingTotal != 7 || len(snap.Dispatchers) != 1 || snap.Dispatchers[0].Waiting != 7 {
		t.Fatalf("waiting %d at %+v; want 7 at one dispatcher", snap.WaitingTotal, snap.Dispatchers)
	}
	depth := map[string]int{}
	for _, q := range snap.Queues {
		depth[string(q.Tier)+"/"+q.Team] = q.Depth
		if q.OldestWaitMS <= 0 {
			t.Errorf("queue %+v has no oldest wait", q)
		}
	}
	if depth["critical/demo"] != 2 || depth["batch/demo"] != 5 {
		t.Fatalf("queues %+v", snap.Queues)
	}
	states := map[string]string{}
	for _, d := range snap.Deployments {
		states[d.ID] = d.State
		if d.Pool == "gpt-4o-mini" && (!strings.Contains(d.Detail, "429 (requests)") || d.HeadroomRequests <= 0 || d.ConfiguredRPM != 600) {
			t.Errorf("deployment %+v", d)
		}
	}
	if states["fake-us-east-1"] != "cooling" || states["fake-emb-us-east-1"] != "ok" {
		t.Fatalf("states %v", states)
	}

	// The human view has the same facts.
	code, out, _ = runExecute("status", "--server", s.ClientURL())
	if code != 0 || !strings.Contains(out, "7 calls waiting") || !strings.Contains(out, "cooling") || !strings.Contains(out, "batch") {
		t.Fatalf("exit %d:\n%s", code, out)
	}
}
