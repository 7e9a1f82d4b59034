package test

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/sluicehq/sluice/messages"
	"github.com/sluicehq/sluice/services/fakeprovider"
	"github.com/sluicehq/sluice/services/plan"
	"github.com/sluicehq/sluice/services/usage"
)

// End to end, sluice plan --since 1h --json reads what the stack's calls
// left in the roll-ups: a burst larger than the pool (whose keys the
// provider limits to half what the configuration says, so that attempts
// meet 429s), calls that wait past standard's 300ms target, calls whose
// 300ms deadline passes while they wait, and a team whose max_queued of 1
// refuses the rest of its burst. The plan counts each of them as the
// results say, against the configured capacity, and asks for more RPM.
func TestPlanFromTheStacksUsage(t *testing.T) {
	yaml := twoRegionYAML(150, 1_000_000, layout{
		teams: "  small: {max_queued: 1}\n",
		top:   "tiers:\n  standard: {target_wait: 300ms}\n",
	})
	s := startStack(t, stackOptions{yaml: yaml, fake: fakeprovider.Config{AcceptAnyKey: true, DefaultKey: fakeprovider.KeyConfig{RPM: 75, TPM: 1_000_000}}})
	startDispatcher(t, s, "d1", nil)
	startExecutors(t, s)
	nc := connect(t, s)
	js, _ := jetstream.New(nc)
	demo, small := watchResults(t, nc, "demo"), watchResults(t, nc, "small")

	var demoIDs, smallIDs []string
	for i := range 40 {
		id := fmt.Sprintf("burst-%d", i)
		demoIDs = append(demoIDs, id)
		if err := publishCall(t.Context(), js, "demo", "standard", id, chatCall(id, "m", 20, "")); err != nil {
			t.Fatal(err)
		}
	}
	for i := range 3 {
		id := fmt.Sprintf("short-%d", i)
		demoIDs = append(demoIDs, id)
		if err := publishCall(t.Context(), js, "demo", "standard", id, chatCall(id, "m", 20, `,"timeout_ms":300`)); err != nil {
			t.Fatal(err)
		}
	}
	for i := range 4 {
		id := fmt.Sprintf("small-%d", i)
		smallIDs = append(smallIDs, id)
		if err := publishCall(t.Context(), js, "small", "standard", id, chatCall(id, "m", 20, "")); err != nil {
			t.Fatal(err)
		}
	}
	demo.waitFor(t, demoIDs, 60*time.Second)
	small.waitFor(t, smallIDs, 60*time.Second)
	results := map[string][]messages.Result{"demo": {}, "small": {}}
	for _, r := range demo.exactlyOnce(t, demoIDs) {
		results["demo"] = append(results["demo"], r)
	}
	for _, r := range small.exactlyOnce(t, smallIDs) {
		results["small"] = append(results["small"], r)
	}
	// What the plan should find, from the results.
	type want struct{ calls, late, unserved, attempts int64 }
	wants := map[string]*want{"demo": {}, "small": {}}
	var total want
	regions := map[string]int64{}
	for team, rs := range results {
		w := wants[team]
		for i := range rs {
			r := &rs[i]
			w.calls++
			w.attempts += int64(r.Attempts)
			switch {
			case usage.Unserved(r):
				w.unserved++
			case r.Timings.QueuedMS > 300:
				w.late++
			}
			if r.Attempts > 0 && r.Region != "" {
				regions[r.Region]++
			}
		}
		total.calls += w.calls
		total.late += w.late
		total.unserved += w.unserved
		total.attempts += w.attempts
	}
	if total.late == 0 || total.unserved == 0 || wants["small"].unserved == 0 {
		t.Fatalf("the calls did not make the demand this test needs: %+v, demo %+v, small %+v", total, *wants["demo"], *wants["small"])
	}

	bin := buildSluice(t)
	page := filepath.Join(t.TempDir(), "plan.html")
	sluicePlan := func() (string, plan.Plan) {
		t.Helper()
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		cmd := exec.CommandContext(ctx, bin, "plan", "--server", s.ClientURL(), "--since", "1h", "--json", "--html", page)
		out, err := cmd.Output()
		if err != nil {
			t.Fatalf("sluice plan: %v\n%s", err, out)
		}
		var p plan.Plan
		if err := json.Unmarshal(out, &p); err != nil {
			t.Fatalf("%v: %s", err, out)
		}
		return string(out), p
	}
	var raw string
	var p plan.Plan
	for deadline := time.Now().Add(5 * usage.FlushEvery); ; {
		raw, p = sluicePlan()
		if len(p.Pools) == 1 && p.Pools[0].Calls == total.calls || time.Now().After(deadline) {
			break
		}
		time.Sleep(100 * time.Millisecond) // poll until the roll-ups are flushed
	}
	if len(p.Pools) != 1 {
		t.Fatalf("pools %+v", p.Pools)
	}
	pl := p.Pools[0]
	if pl.Name != "m" || pl.RPM != 600 || pl.TPM != 4_000_000 || pl.Calls != total.calls || pl.Late != total.late || pl.Unserved != total.unserved ||
		pl.Unmet != total.late+total.unserved || pl.Attempts != total.attempts {
		t.Errorf("pool %+v\nwant %d calls, %d late, %d unserved, %d attempts", pl.Figures, total.calls, total.late, total.unserved, total.attempts)
	}
	if st := s.Fake.Stats().Total; pl.Provider429s == 0 || pl.Provider429s != st.Refused() {
		t.Errorf("%d provider 429s in the plan, the provider answered %d", pl.Provider429s, st.Refused())
	}
	var hourCalls, capacity int64
	for _, h := range pl.HoursOfDay {
		hourCalls += h.Calls
		if h.Calls > 0 {
			capacity += h.CapacityCalls
		}
	}
	if hourCalls != total.calls || capacity%(600*60) != 0 || capacity == 0 {
		t.Errorf("hours of day hold %d calls, capacity %d", hourCalls, capacity)
	}
	// The burst came within a minute, or two if it straddled one.
	if pl.PeakRPM < int64(len(demoIDs)+len(smallIDs))/2 || pl.Need.ExtraRPM <= 0 || pl.Need.RPM != 600+pl.Need.ExtraRPM || pl.Need.Hour.IsZero() ||
		pl.Need.UpToRPM < 600+200*(total.late+total.unserved) { // each unmet call within 300ms, had they come at once

		t.Errorf("peak %d, need %+v: the burst went unmet, so the plan should ask for more", pl.PeakRPM, pl.Need)
	}
	var extra int64
	for _, r := range pl.Regions {
		if r.RPM != 300 || r.Calls != regions[r.Name] {
			t.Errorf("region %+v, the results say %d calls", r, regions[r.Name])
		}
		extra += r.ExtraRPM
	}
	if len(pl.Regions) != 2 || extra < pl.Need.ExtraRPM {
		t.Errorf("regions %+v share less than the %d RPM more", pl.Regions, pl.Need.ExtraRPM)
	}
	teams := map[string]plan.Team{}
	for _, tm := range p.Teams {
		teams[tm.Team] = tm
	}
	for name, w := range wants {
		tm := teams[name]
		if tm.Calls != w.calls || tm.Late != w.late || tm.Unserved != w.unserved || !tm.Entitlement.Allowed || tm.Entitlement.Weight != 1 || tm.Entitlement.WeightShare != 0.5 || tm.Budget != nil {
			t.Errorf("team %s %+v, want %+v", name, tm, *w)
		}
	}
	if !strings.Contains(raw, `"budget": null`) {
		t.Error("no budget field ready in the JSON")
	}
	html, err := os.ReadFile(page)
	if err != nil || !strings.Contains(string(html), `<svg class="day" data-pool="m"`) || !strings.Contains(string(html), fmt.Sprintf(`data-calls="%d"`, wants["small"].calls)) {
		t.Errorf("the page: %v\n%.500s", err, html)
	}
}
