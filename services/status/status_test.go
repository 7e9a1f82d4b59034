package status_test

import (
	"context"
	"encoding/json"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/sluicehq/sluice/messages"
	"github.com/sluicehq/sluice/services/config"
	"github.com/sluicehq/sluice/services/health"
	"github.com/sluicehq/sluice/services/pace"
	"github.com/sluicehq/sluice/services/status"
	"github.com/sluicehq/sluice/services/streams"
	"github.com/sluicehq/sluice/test/natstest"
)

// hang bounds waits that only detect a hang.
const hang = 30 * time.Second

const twoRegions = `
teams:
  t: {}
pools:
  m:
    deployments:
      - {id: us-1, provider: openai, base_url: "http://127.0.0.1:1/v1", region: us, key: K1, rpm: 600, tpm: 60000}
      - {id: eu-1, provider: openai, base_url: "http://127.0.0.1:1/v1", region: eu, key: K2, rpm: 600, tpm: 60000}
      - {id: eu-2, provider: openai, base_url: "http://127.0.0.1:1/v1", region: eu, key: K3, rpm: 600, tpm: 60000}
`

// snapshotUntil takes snapshots until ok accepts one.
func snapshotUntil(t *testing.T, ctx context.Context, w *status.Watcher, what string, ok func(*status.Snapshot) bool) *status.Snapshot {
	t.Helper()
	for {
		s, err := w.Snapshot(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if ok(s) {
			return s
		}
		select {
		case <-ctx.Done():
			t.Fatalf("no snapshot showed %s; the last: %+v", what, s)
		case <-time.After(10 * time.Millisecond):
		}
	}
}

func row(s *status.Snapshot, id string) status.Deployment {
	for _, d := range s.Deployments {
		if d.ID == id {
			return d
		}
	}
	return status.Deployment{}
}

// A snapshot shows each deployment's headroom against the pace the
// dispatchers send it at, its learned state and why, the circuits and
// stalled regions dispatchers announce, and their queues added up.
func TestSnapshot(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), hang)
	defer cancel()
	nc := natstest.Connect(t, natstest.Start(t))
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := status.Watch(ctx, nc); !errors.Is(err, status.ErrNoSluice) {
		t.Fatalf("Watch without sluice: %v, want ErrNoSluice", err)
	}
	cfg, err := config.Parse([]byte(twoRegions))
	if err != nil {
		t.Fatal(err)
	}
	res, err := streams.Ensure(ctx, js, cfg.Streams)
	if err != nil {
		t.Fatal(err)
	}
	rev, err := config.Apply(ctx, res.Config, cfg)
	if err != nil {
		t.Fatal(err)
	}
	w, err := status.Watch(ctx, nc)
	if err != nil {
		t.Fatal(err)
	}
	defer w.Stop()

	s, err := w.Snapshot(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if s.ConfigRevision != rev || len(s.Deployments) != 3 || len(s.Dispatchers) != 0 {
		t.Fatalf("snapshot %+v; want revision %d, three deployments, no dispatcher", s, rev)
	}
	us := row(s, "us-1")
	want := pace.Of(cfg, mustDeployment(t, cfg, "us-1"), messages.DeploymentHealth{}, s.At)
	if us.State != health.StateOK || us.PacedRPM != want.RPM || us.PacedTPM != want.TPM || us.HeadroomRequests != 1 || us.HeadroomTokens != 1 {
		t.Fatalf("an unused deployment: %+v; want ok, paced at %+v, all headroom", us, want)
	}

	// What a provider taught shows, with why.
	store := health.NewStore(res.Health)
	if err := store.Start(ctx); err != nil {
		t.Fatal(err)
	}
	defer store.Stop()
	if err := store.Update(ctx, "us-1", func(h *messages.DeploymentHealth) bool {
		h.StrictRPM, h.StrictRPMDrop, h.StrictRPMAt = 600, 0.05, time.Now()
		return true
	}); err != nil {
		t.Fatal(err)
	}
	s = snapshotUntil(t, ctx, w, "us-1 limited", func(s *status.Snapshot) bool { return row(s, "us-1").State == health.StateLimited })
	if us := row(s, "us-1"); us.RPM >= 600 || !strings.Contains(us.Detail, "refused at 600 rpm") {
		t.Fatalf("a deployment held down by a refusal: %+v", us)
	}

	// Dispatchers' announcements: queues add up, an open circuit and a
	// stalled region show on their deployments.
	for _, a := range []messages.DispatcherState{
		{Dispatcher: "d1", Admitted: 5, Queues: []messages.QueueState{{Pool: "m", Tier: messages.TierBatch, Team: "t", Depth: 2, OldestWaitMS: 40}},
			Circuits: []messages.CircuitState{{Scope: "deployment", Name: "eu-1", State: "open"}}},
		{Dispatcher: "d2", Admitted: 7, Queues: []messages.QueueState{{Pool: "m", Tier: messages.TierBatch, Team: "t", Depth: 3, OldestWaitMS: 90}},
			StalledRegions: []string{"eu"}},
	} {
		announce(t, nc, a)
	}
	s = snapshotUntil(t, ctx, w, "both dispatchers", func(s *status.Snapshot) bool { return len(s.Dispatchers) == 2 })
	if s.WaitingTotal != 5 || len(s.Queues) != 1 || s.Queues[0].Depth != 5 || s.Queues[0].OldestWaitMS != 90 {
		t.Fatalf("queues %+v, waiting %d; want one queue of 5, oldest 90 ms", s.Queues, s.WaitingTotal)
	}
	if eu1 := row(s, "eu-1"); eu1.State != "circuit_open" || !strings.Contains(eu1.Detail, "open at d1") {
		t.Errorf("eu-1 with a circuit open at d1: %+v", eu1)
	}
	if eu2 := row(s, "eu-2"); eu2.State != "no_executor" || !strings.Contains(eu2.Detail, "d2") {
		t.Errorf("eu-2 in a region d2 sees stalled: %+v", eu2)
	}
	if us := row(s, "us-1"); us.State != health.StateLimited {
		t.Errorf("us-1: %+v, want still limited", us)
	}
}

func mustDeployment(t *testing.T, cfg *config.Config, id string) *config.Deployment {
	t.Helper()
	d, ok := cfg.Deployment(id)
	if !ok {
		t.Fatalf("no deployment %s", id)
	}
	return d
}

// announce publishes a dispatcher's announcement, as dispatchers do.
func announce(t *testing.T, nc *nats.Conn, s messages.DispatcherState) {
	t.Helper()
	s.At = time.Now()
	data, err := json.Marshal(s)
	if err != nil {
		t.Fatal(err)
	}
	if err := nc.Publish(messages.StateSubject, data); err != nil {
		t.Fatal(err)
	}
}
