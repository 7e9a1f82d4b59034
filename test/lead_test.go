package test

import (
	"encoding/json"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/sluicehq/sluice/messages"
)

// The first call a fresh dispatcher admits to a region is given room to
// reach its executor: before any executor has told the dispatcher how long
// work takes to get there, its send time is the longest lead (half of
// admission.lease_ttl, 50 ms) after admission, as TCP starts from a
// conservative retransmission timeout; the real lead is learned from the
// first reports. (At the 2 ms it started from, every first call of a
// fresh stack reached its executor after its send_by and was handed back.)
func TestFirstCallsGetTheLongestLead(t *testing.T) {
	// Published after its lease and its slot, the work's send time is the
	// lead less those round trips after DispatchedAt: far above this.
	const atLeast = 20 * time.Millisecond
	for run := range 3 {
		s := startStack(t, stackOptions{yaml: twoRegionYAML(600, 100000, layout{})})
		nc := connect(t, s)
		var mu sync.Mutex
		ahead := map[string]time.Duration{} // call id -> send time after dispatch
		if _, err := nc.Subscribe(messages.ExecSubjects, func(m *nats.Msg) {
			var w messages.Work
			if json.Unmarshal(m.Data, &w) == nil {
				mu.Lock()
				if _, seen := ahead[w.Call.ID]; !seen {
					ahead[w.Call.ID] = w.SendAt.Sub(w.DispatchedAt)
				}
				mu.Unlock()
			}
		}); err != nil {
			t.Fatal(err)
		}
		if err := nc.Flush(); err != nil {
			t.Fatal(err)
		}
		startDispatcher(t, s, "d1", nil)
		startExecutors(t, s)
		js, _ := jetstream.New(nc)
		log := watchResults(t, nc, "demo")
		var ids []string
		for _, region := range []string{"us-east", "eu-west"} {
			id := fmt.Sprintf("first-%d-%s", run, region)
			ids = append(ids, id)
			if err := publishCall(t.Context(), js, "demo", "standard", id, chatCall(id, "m", 5, `,"regions":["`+region+`"]`)); err != nil {
				t.Fatal(err)
			}
		}
		log.waitFor(t, ids, 30*time.Second)
		log.exactlyOnce(t, ids)
		mu.Lock()
		for _, id := range ids {
			if d, ok := ahead[id]; !ok || d < atLeast {
				t.Errorf("run %d: call %s's first work was due %v after its dispatch, want at least %v", run, id, d, atLeast)
			}
		}
		mu.Unlock()
	}
}
