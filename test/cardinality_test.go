package test

import (
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/sluicehq/sluice/messages"
	"github.com/sluicehq/sluice/services/devstack"
	"github.com/sluicehq/sluice/services/usage"
)

// Names a client makes up, in a subject or a body, add no metric series
// and no usage keys beyond a bounded few: 100 calls to made-up
// sluice.call.<team>.<tier> subjects, calls without a model (malformed
// JSON, a body over the limit) or with an unknown field or model, and
// retries published by hand for made-up names. Each gets one error result
// on its own subject, with the names it had; sluice_calls_total and
// SLUICE_USAGE count them under "unknown"; every roll-up is saved (no
// flush keeps failing), and `sluice usage` adds up to the metric.
func TestMadeUpNamesAddBoundedSeriesAndKeys(t *testing.T) {
	logs := &syncBuffer{}
	reg := prometheus.NewRegistry()
	s := startObservedStack(t, stackOptions{
		yaml: twoRegionYAML(6000, 1000000, layout{top: "calls: {max_body_bytes: 1024}\n"}),
	}, logs, reg)
	services := []*devstack.Service{startDispatcher(t, s, "d1", nil)}
	for _, r := range s.Shared.Load().Regions() {
		services = append(services, startExecutor(t, s, r, nil))
	}
	nc := connect(t, s)
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	ctx := t.Context()

	// Every result, of any team, as the clients that made the calls get
	// them on their own subjects.
	all := &resultLog{byID: map[string][]messages.Result{}, arrived: make(chan struct{}, 1)}
	subjects := map[string]string{} // call id: the subject its result came on
	sub, err := nc.Subscribe("sluice.result.>", func(m *nats.Msg) {
		var r messages.Result
		if err := json.Unmarshal(m.Data, &r); err != nil {
			t.Errorf("undecodable result on %s: %v", m.Subject, err)
			return
		}
		all.mu.Lock()
		subjects[r.ID] = m.Subject
		all.mu.Unlock()
		all.record(r)
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = sub.Unsubscribe() })
	if err := nc.Flush(); err != nil {
		t.Fatal(err)
	}

	// A few good calls first: the series and keys any traffic makes.
	var good []string
	for i := range 3 {
		id := fmt.Sprintf("good-%d", i)
		good = append(good, id)
		if err := publishCall(ctx, js, "demo", "standard", id, chatCall(id, "m", 10, "")); err != nil {
			t.Fatal(err)
		}
	}
	all.waitFor(t, good, 30*time.Second)
	before := callSeries(t, reg)

	type bad struct {
		team, tier, body string
		code             messages.Code
	}
	calls := map[string]bad{}
	for i := range 100 {
		id := fmt.Sprintf("junk-%d", i)
		calls[id] = bad{fmt.Sprintf("junk%d", i), fmt.Sprintf("tier%d", i), chatCall(id, "m", 10, ""), messages.CodeForbidden}
	}
	huge := chatCall("huge", "m", 10, "")
	huge = strings.Replace(huge, "hello there", strings.Repeat("x", 70<<10), 1)
	calls["malformed"] = bad{"demo", "standard", `{"id": "malformed", "model": `, messages.CodeInvalidRequest}
	calls["no-model"] = bad{"demo", "standard", `{"id": "no-model", "body": {"messages": []}}`, ""}
	calls["unknown-field"] = bad{"demo", "standard", chatCall("unknown-field", "m", 10, `,"colour":"red"`), messages.CodeInvalidRequest}
	calls["unknown-model"] = bad{"demo", "standard", chatCall("unknown-model", "gpt-4.1/ünï", 10, ""), ""}
	calls["huge"] = bad{"demo", "standard", huge, messages.CodeInvalidRequest}
	ids := append([]string(nil), good...)
	for id, c := range calls {
		ids = append(ids, id)
		if err := publishCall(ctx, js, c.team, c.tier, id, c.body); err != nil {
			t.Fatalf("%s: %v", id, err)
		}
	}
	// Retries come from services; where NATS does not enforce that,
	// anyone may publish one.
	call, _ := messages.DecodeCall([]byte(chatCall("", "m", 10, "")))
	for id, names := range map[string][2]string{"retry-team": {"junkteam", "standard"}, "retry-tier": {"demo", "junktier"}} {
		call.ID = id
		retry := messages.Retry{Ticket: messages.Ticket{Call: call, Team: names[0], Tier: messages.Tier(names[1]),
			AcceptedAt: time.Now(), Deadline: time.Now().Add(time.Minute), Attempt: 2}}
		data, _ := json.Marshal(retry)
		if _, err := js.Publish(ctx, "sluice.retry."+names[0]+"."+names[1], data, jetstream.WithMsgID(id)); err != nil {
			t.Fatal(err)
		}
		calls[id] = bad{names[0], names[1], "", ""}
		ids = append(ids, id)
	}

	all.waitFor(t, ids, 60*time.Second)
	results := all.exactlyOnce(t, ids)
	all.mu.Lock()
	for id, c := range calls {
		r := results[id]
		if r.Error == nil || (c.code != "" && r.Error.Code != c.code) {
			t.Errorf("%s: %+v, want an error %s", id, r, c.code)
		}
		if want := "sluice.result." + c.team + "." + id; subjects[id] != want || r.Team != c.team {
			t.Errorf("%s: result for team %q on %s, want it on %s", id, r.Team, subjects[id], want)
		}
	}
	all.mu.Unlock()

	// Stopping the services flushes their usage figures.
	for _, svc := range services {
		if err := svc.Stop(); err != nil {
			t.Fatal(err)
		}
	}

	after := callSeries(t, reg)
	if len(after)-len(before) > 8 {
		t.Errorf("sluice_calls_total grew from %d to %d series: %v", len(before), len(after), after)
	}
	for k := range after {
		if strings.Contains(k, "junk") || strings.Contains(k, "tier=tier") {
			t.Errorf("sluice_calls_total has a series for a made-up name: %s", k)
		}
	}
	kv, err := js.KeyValue(ctx, messages.BucketUsage)
	if err != nil {
		t.Fatal(err)
	}
	lister, err := kv.ListKeys(ctx)
	if err != nil {
		t.Fatal(err)
	}
	var keys []string
	for k := range lister.Keys() {
		keys = append(keys, k)
		if strings.Contains(k, "junk") {
			t.Errorf("usage key for a made-up name: %s", k)
		}
	}
	if len(keys) > 16 { // a handful of roll-ups, twice if an hour began meanwhile
		t.Errorf("%d usage keys: %q", len(keys), keys)
	}

	// sluice usage adds up to the metric, per team, tier and outcome.
	now := time.Now()
	totals, err := usage.Query(ctx, kv, now.Add(-2*time.Hour), now.Add(time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	used := map[string]float64{}
	for _, tot := range totals {
		if tot.OK > 0 {
			used[seriesKey(tot.Team, string(tot.Tier), "ok")] += float64(tot.OK)
		}
		for code, n := range tot.Errors {
			used[seriesKey(tot.Team, string(tot.Tier), string(code))] += float64(n)
		}
	}
	if fmt.Sprint(used) != fmt.Sprint(after) {
		t.Errorf("usage totals %v\ndiffer from sluice_calls_total %v", used, after)
	}
	if n := used[seriesKey("unknown", "unknown", "forbidden")]; n != 100 {
		t.Errorf("usage counts %v forbidden calls of unknown teams and tiers, want 100", n)
	}

	// Nothing was left to retry or dropped.
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() == "sluice_usage_merge_failures_total" {
			for _, m := range mf.GetMetric() {
				if m.GetCounter().GetValue() != 0 {
					t.Errorf("usage merge failures: %v", m)
				}
			}
		}
	}
	for _, line := range strings.Split(logs.String(), "\n") {
		if strings.Contains(line, "usage:") {
			t.Errorf("usage logged: %s", line)
		}
	}
}

func seriesKey(team, tier, outcome string) string {
	return "team=" + team + ",tier=" + tier + ",outcome=" + outcome
}

// callSeries is every series of sluice_calls_total, by its labels, with
// its value.
func callSeries(t *testing.T, reg *prometheus.Registry) map[string]float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]float64{}
	for _, mf := range mfs {
		if mf.GetName() != "sluice_calls_total" {
			continue
		}
		for _, m := range mf.GetMetric() {
			l := map[string]string{}
			for _, lp := range m.GetLabel() {
				l[lp.GetName()] = lp.GetValue()
			}
			out[seriesKey(l["team"], l["tier"], l["outcome"])] = m.GetCounter().GetValue()
		}
	}
	return out
}
