package test

import (
	"fmt"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/sluicehq/sluice/messages"
)

// Responses calls over NATS pinned to one deployment (as a call that
// continues a stored response is) go only there: with it saturated, they
// wait for it and meet their deadline rather than go to the other
// deployment, which has room; an unknown deployment is refused, naming
// the field.
func TestResponsesPinnedDeploymentWaits(t *testing.T) {
	deps := []dep{
		{id: "us-1", region: "us-east", rpm: 6000, tpm: 1_000_000},
		{id: "eu-1", region: "eu-west", rpm: 60, tpm: 1_000_000}, // one call a second
	}
	s := startStack(t, stackOptions{yaml: poolYAML(deps, layout{})})
	startDispatcher(t, s, "d1", nil)
	startExecutors(t, s)
	nc := connect(t, s)
	js, _ := jetstream.New(nc)
	log := watchResults(t, nc, "demo")
	var ids []string
	for i := range 6 {
		id := fmt.Sprintf("pinned-%d", i)
		ids = append(ids, id)
		call := fmt.Sprintf(`{"id":%q,"model":"m","endpoint":"/v1/responses","deployment":"eu-1","timeout_ms":2500,"body":{"input":"hi","max_output_tokens":16}}`, id)
		if err := publishCall(t.Context(), js, "demo", "standard", id, call); err != nil {
			t.Fatal(err)
		}
	}
	log.waitFor(t, ids, 30*time.Second)
	outcomes := map[string]int{}
	for _, r := range log.exactlyOnce(t, ids) {
		outcomes[r.Outcome()]++
		if r.Status == messages.StatusOK && r.Deployment != "eu-1" {
			t.Errorf("call %s pinned to eu-1 was served by %s", r.ID, r.Deployment)
		}
	}
	if served := servedBy(s, s.Fake, "us-1")["us-1"]; served != 0 {
		t.Fatalf("us-1 served %d calls pinned to eu-1", served)
	}
	if outcomes["ok"] == 0 || outcomes[string(messages.CodeDeadlineExceeded)] == 0 {
		t.Fatalf("outcomes %v: some calls fit eu-1 in time, the others must wait for it and meet their deadline", outcomes)
	}

	const unknown = "pinned-unknown"
	if err := publishCall(t.Context(), js, "demo", "standard", unknown,
		`{"id":"pinned-unknown","model":"m","endpoint":"/v1/responses","deployment":"nowhere","body":{"input":"hi"}}`); err != nil {
		t.Fatal(err)
	}
	// A deployment the call's regions exclude is the regions' fault.
	const elsewhere = "pinned-elsewhere"
	if err := publishCall(t.Context(), js, "demo", "standard", elsewhere,
		`{"id":"pinned-elsewhere","model":"m","endpoint":"/v1/responses","deployment":"eu-1","regions":["us-east"],"body":{"input":"hi"}}`); err != nil {
		t.Fatal(err)
	}
	log.waitFor(t, []string{unknown, elsewhere}, 30*time.Second)
	for id, field := range map[string]string{unknown: "deployment", elsewhere: "regions"} {
		if r := log.one(t, id); r.Error == nil || r.Error.Code != messages.CodeInvalidRequest || r.Error.Field != field {
			t.Errorf("call %s: %+v, want invalid_request naming field %s", id, r.Error, field)
		}
	}
}
