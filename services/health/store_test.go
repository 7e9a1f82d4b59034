package health_test

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/sluicehq/sluice/messages"
	"github.com/sluicehq/sluice/services/health"
	"github.com/sluicehq/sluice/test/natstest"
)

func bucket(t *testing.T, js jetstream.JetStream) jetstream.KeyValue {
	kv, err := js.CreateOrUpdateKeyValue(context.Background(), jetstream.KeyValueConfig{Bucket: messages.BucketHealth})
	if err != nil {
		t.Fatal(err)
	}
	return kv
}

// Two stores on separate connections, like an executor and a dispatcher:
// what one writes the other sees, and racing writers both land.
func TestStoresShareWhatIsLearned(t *testing.T) {
	srv := natstest.Start(t)
	ctx := context.Background()
	js1, _ := jetstream.New(natstest.Connect(t, srv))
	js2, _ := jetstream.New(natstest.Connect(t, srv))
	writer, reader := health.NewStore(bucket(t, js1)), health.NewStore(bucket(t, js2))
	for _, s := range []*health.Store{writer, reader} {
		if err := s.Start(ctx); err != nil {
			t.Fatal(err)
		}
		defer s.Stop()
	}
	until := time.Now().Add(time.Minute).Round(0)
	if err := writer.Update(ctx, "dep-1", func(h *messages.DeploymentHealth) bool {
		h.CooldownUntil, h.CooldownReason = until, "429"
		return true
	}); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(5 * time.Second)
	for !reader.Get("dep-1").CooldownUntil.Equal(until) {
		if time.Now().After(deadline) {
			t.Fatalf("the other store never saw the cooldown: %+v", reader.Get("dep-1"))
		}
		time.Sleep(10 * time.Millisecond)
	}
	// Both write from stale caches at once: compare-and-swap keeps both.
	errs := make(chan error, 2)
	go func() {
		errs <- writer.Update(ctx, "dep-1", func(h *messages.DeploymentHealth) bool { h.LearnedRPM = 100; return true })
	}()
	go func() {
		errs <- reader.Update(ctx, "dep-1", func(h *messages.DeploymentHealth) bool { h.Disabled = true; return true })
	}()
	for i := 0; i < 2; i++ {
		if err := <-errs; err != nil {
			t.Fatal(err)
		}
	}
	kve, err := bucket(t, js1).Get(ctx, "dep-1")
	if err != nil {
		t.Fatal(err)
	}
	got := string(kve.Value())
	for _, want := range []string{`"learned_rpm":100`, `"disabled":true`, `"cooldown_reason":"429"`} {
		if !strings.Contains(got, want) {
			t.Fatalf("stored %s lacks %s", got, want)
		}
	}
	// Enable puts it back in rotation; a change that changes nothing writes nothing.
	if err := reader.Enable(ctx, "dep-1"); err != nil {
		t.Fatal(err)
	}
	rev := revision(t, js1, "dep-1")
	if err := reader.Update(ctx, "dep-1", func(*messages.DeploymentHealth) bool { return false }); err != nil {
		t.Fatal(err)
	}
	if revision(t, js1, "dep-1") != rev {
		t.Fatal("an update with nothing to write must not write")
	}
}

func revision(t *testing.T, js jetstream.JetStream, key string) uint64 {
	kve, err := bucket(t, js).Get(context.Background(), key)
	if err != nil {
		t.Fatal(err)
	}
	return kve.Revision()
}
