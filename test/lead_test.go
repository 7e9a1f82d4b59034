package test

import (
	"fmt"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
)

// The first calls a fresh dispatcher admits to each region are sent when
// admission said, not handed back late: before any executor has told it
// how long work takes to reach the region, a dispatcher gives a call the
// longest lead (half of admission.lease_ttl), as TCP starts from a
// conservative retransmission timeout, and learns the real one from the
// first reports.
func TestFirstCallsAreSentOnTime(t *testing.T) {
	for run := range 3 {
		reg := prometheus.NewRegistry()
		s := startStack(t, stackOptions{yaml: twoRegionYAML(600, 100000, layout{}), reg: reg})
		startDispatcher(t, s, "d1", nil)
		startExecutors(t, s)
		nc := connect(t, s)
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
		families, err := reg.Gather()
		if err != nil {
			t.Fatal(err)
		}
		for _, f := range families {
			if f.GetName() != "sluice_late_work_total" {
				continue
			}
			for _, m := range f.GetMetric() {
				if v := m.GetCounter().GetValue(); v != 0 {
					t.Errorf("run %d: %v of the first calls handed back (%v)", run, v, m.GetLabel())
				}
			}
		}
	}
}
