package test

import (
	"fmt"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/sluicehq/sluice/messages"
	"github.com/sluicehq/sluice/services/devstack"
	"github.com/sluicehq/sluice/services/fakeprovider"
	"github.com/sluicehq/sluice/services/health"
)

// insufficient_quota takes the key out of rotation until an operator
// re-enables it: the call that met it moves to another key, later calls
// go to the other deployments, and after re-enabling the key serves again.
func TestInsufficientQuotaTakesTheKeyOutOfRotation(t *testing.T) {
	deps := []dep{
		{id: "broke", region: "us-east", rpm: 6000, tpm: 1_000_000},
		{id: "fine", region: "us-east", rpm: 6000, tpm: 1_000_000},
	}
	s := startStack(t, stackOptions{yaml: poolYAML(deps, layout{})})
	secrets := devstack.DevSecrets(s.Shared.Load())
	broke, _ := s.Shared.Load().Deployment("broke")
	if err := s.Fake.SetKey(secrets[broke.Key], fakeprovider.KeyConfig{RPM: 6000, TPM: 1_000_000, InsufficientQuota: true}); err != nil {
		t.Fatal(err)
	}
	startDispatcher(t, s, "d1", nil)
	startExecutors(t, s)
	nc := connect(t, s)
	js, _ := jetstream.New(nc)
	log := watchResults(t, nc, "demo")

	// Enough calls that, spread at random, some try the broke key first.
	var ids []string
	for i := 0; i < 20; i++ {
		id := fmt.Sprintf("q-%02d", i)
		ids = append(ids, id)
		if err := publishCall(t.Context(), js, "demo", "standard", id, chatCall(id, "m", 5, "")); err != nil {
			t.Fatal(err)
		}
		time.Sleep(20 * time.Millisecond)
	}
	log.waitFor(t, ids, 30*time.Second)
	moved := 0
	for _, r := range log.exactlyOnce(t, ids) {
		if r.Status != messages.StatusOK || r.Deployment != "fine" {
			t.Errorf("call %s: %s on %s: %+v", r.ID, r.Status, r.Deployment, r.Error)
		}
		if r.Attempts > 1 {
			moved++
		}
	}
	brokeStats := s.Fake.Stats().Keys[secrets[broke.Key]]
	t.Logf("%d calls met insufficient_quota and moved to the other key; the broke key saw %d requests", moved, brokeStats.Received)
	if moved == 0 || brokeStats.Received > 3 || int64(moved) != brokeStats.InsufficientQuota {
		t.Fatalf("the broke key should be out of rotation after its first answers; it saw %d requests, %d calls moved", brokeStats.Received, moved)
	}

	// The operator fixes billing and re-enables the key.
	if err := s.Fake.SetKey(secrets[broke.Key], fakeprovider.KeyConfig{RPM: 6000, TPM: 1_000_000}); err != nil {
		t.Fatal(err)
	}
	kv, err := js.KeyValue(t.Context(), messages.BucketHealth)
	if err != nil {
		t.Fatal(err)
	}
	store := health.NewStore(kv)
	if err := store.Start(t.Context()); err != nil {
		t.Fatal(err)
	}
	defer store.Stop()
	if !store.Get("broke").DisabledNow(time.Now()) {
		t.Fatalf("health says %+v; want broke disabled", store.Get("broke"))
	}
	if err := store.Enable(t.Context(), "broke"); err != nil {
		t.Fatal(err)
	}
	var more []string
	for i := 0; i < 20; i++ {
		id := fmt.Sprintf("after-%02d", i)
		more = append(more, id)
		if err := publishCall(t.Context(), js, "demo", "standard", id, chatCall(id, "m", 5, "")); err != nil {
			t.Fatal(err)
		}
		time.Sleep(20 * time.Millisecond)
	}
	log.waitFor(t, more, 30*time.Second)
	byDeployment := map[string]int{}
	for _, r := range log.exactlyOnce(t, append(ids, more...)) {
		if r.Status == messages.StatusOK && len(r.ID) > 6 && r.ID[:6] == "after-" {
			byDeployment[r.Deployment]++
		}
	}
	if byDeployment["broke"] == 0 || byDeployment["broke"]+byDeployment["fine"] != len(more) {
		t.Fatalf("after re-enabling, calls by deployment: %v", byDeployment)
	}
}
