package main

import (
	"context"
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/sluicehq/sluice/messages"
	"github.com/sluicehq/sluice/services/health"
)

// sluice health shows what providers taught sluice (cooldowns, learned
// limits, disabled keys), and -enable puts a disabled key back.
func TestHealth(t *testing.T) {
	s := startStack(t, false)
	nc, err := s.Connect("test")
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	js, _ := jetstream.New(nc)
	kv, err := js.KeyValue(context.Background(), messages.BucketHealth)
	if err != nil {
		t.Fatal(err)
	}
	store := health.NewStore(kv)
	if err := store.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	defer store.Stop()
	now := time.Now()
	for id, h := range map[string]messages.DeploymentHealth{
		"fake-us-east-1": {Disabled: true, DisabledReason: "insufficient_quota: the key's billing quota is spent", DisabledAt: now},
		"fake-us-east-2": {CooldownUntil: now.Add(time.Hour), CooldownReason: "429 (requests)"},
		"fake-eu-west-1": {LearnedRPM: 300, LearnedAt: now},
	} {
		if err := store.Update(context.Background(), id, func(x *messages.DeploymentHealth) bool { *x = h; return true }); err != nil {
			t.Fatal(err)
		}
	}

	code, out, errOut := runExecute("health", "--server", s.ClientURL(), "--json")
	if code != 0 {
		t.Fatalf("exit %d: %s", code, errOut)
	}
	var rows []deploymentHealth
	if err := json.Unmarshal([]byte(out), &rows); err != nil {
		t.Fatalf("%v: %s", err, out)
	}
	states := map[string]string{}
	for _, r := range rows {
		states[r.Deployment] = r.State
		if r.Deployment == "fake-eu-west-1" && (r.EffectiveRPM > 301 || r.ConfiguredRPM != 600) {
			t.Errorf("learned limit: %+v", r)
		}
	}
	want := map[string]string{"fake-us-east-1": "disabled", "fake-us-east-2": "cooling", "fake-eu-west-1": "limited", "fake-eu-west-2": "ok"}
	for id, st := range want {
		if states[id] != st {
			t.Errorf("%s: state %q, want %q", id, states[id], st)
		}
	}

	code, out, errOut = runExecute("health", "--server", s.ClientURL(), "--enable", "fake-us-east-1")
	if code != 0 || !strings.Contains(errOut, "back in rotation") {
		t.Fatalf("enable: exit %d: %s", code, errOut)
	}
	for _, line := range strings.Split(out, "\n") {
		if strings.HasPrefix(line, "fake-us-east-1 ") && !strings.Contains(line, " ok ") {
			t.Errorf("after -enable: %s", line)
		}
		if strings.HasPrefix(line, "fake-us-east-2 ") && !strings.Contains(line, "429 (requests)") {
			t.Errorf("the table should say why a deployment cools: %s", line)
		}
	}
	if code, _, errOut := runExecute("health", "--server", s.ClientURL(), "--enable", "nope"); code != 1 || !strings.Contains(errOut, "nope") {
		t.Fatalf("enabling an unknown deployment: exit %d: %s", code, errOut)
	}
}
