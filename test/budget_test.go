package test

import (
	"context"
	"fmt"
	"math"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/sluicehq/sluice/messages"
	"github.com/sluicehq/sluice/services/budget"
	"github.com/sluicehq/sluice/services/fakeprovider"
	"github.com/sluicehq/sluice/services/status"
	"github.com/sluicehq/sluice/services/tokens"
)

// budgetCall is the call every budget test publishes, and need its
// worst case in tokens, as admission reserves it.
func budgetCall(id, model string) string { return chatCall(id, model, 5, `,"timeout_ms":60000`) }

func budgetNeed(t *testing.T) int64 {
	t.Helper()
	call, bad := messages.DecodeCall([]byte(budgetCall("x", "m")))
	if bad != nil {
		t.Fatal(bad)
	}
	est, bad := tokens.Of(call.Endpoint, call.Body, 5)
	if bad != nil {
		t.Fatal(bad)
	}
	return est.Total()
}

// budgetYAML is pool m (priced, 1 a million tokens in and out) and pool
// cheap, each of one deployment far above the load, and team demo with
// the given budget.
func budgetYAML(teamBudget string) func(string) string {
	return func(fakeURL string) string {
		return fmt.Sprintf(`prices: {currency: EUR}
pools:
  m:
    default_max_tokens: 5
    prices: {input: 1000, output: 1000}
    deployments:
      - {id: m-1, provider: openai, base_url: %[1]q, region: us-east, key: KEY_M, rpm: 60000, tpm: 100000000}
  cheap:
    default_max_tokens: 5
    prices: {input: 1, output: 1}
    deployments:
      - {id: cheap-1, provider: openai, base_url: %[1]q, region: us-east, key: KEY_CHEAP, rpm: 60000, tpm: 100000000}
tiers:
  batch: {max_utilization: 1}
budgets: {warn_at: [0.5]}
teams:
  demo:
    budget:
%[2]s
`, fakeURL+"/v1", teamBudget)
	}
}

// publishAll publishes a call per id at once, to model on tier.
func publishAll(t *testing.T, js jetstream.JetStream, tier, model string, ids []string) {
	t.Helper()
	for _, id := range ids {
		if _, err := js.PublishAsync(messages.CallSubject("demo", messages.Tier(tier)), []byte(budgetCall(id, model)), jetstream.WithMsgID(id)); err != nil {
			t.Fatal(err)
		}
	}
	select {
	case <-js.PublishAsyncComplete():
	case <-time.After(30 * time.Second):
		t.Fatal("publishing timed out")
	}
}

func ids(prefix string, n int) []string {
	out := make([]string, n)
	for i := range out {
		out[i] = fmt.Sprintf("%s-%02d", prefix, i)
	}
	return out
}

// Two dispatchers, 60 calls at once, a money budget just above 20
// calls' worst case: exactly 20 are served and 40 refused
// budget_exhausted, naming the budget and its reset; what was spent
// never exceeds the budget but for what the provider charged beyond
// the reservations, which is counted apart.
func TestBudgetAdmitsExactlyNAcrossDispatchers(t *testing.T) {
	need := budgetNeed(t)
	const n = 20
	// 1,000 EUR a million tokens at the highest price: need tokens cost
	// need/1000 EUR.
	limit := float64(n*need)/1000 + float64(need)/2000
	reg := prometheus.NewRegistry()
	s := startStack(t, stackOptions{
		reg:  reg,
		yaml: budgetYAML(fmt.Sprintf("      day: {cost: %g}\n", limit)),
		// Every call is reserved before any settles; each uses less than
		// it reserved (2 completion tokens of 5).
		fake: fakeprovider.Config{Latency: time.Second, CompletionTokens: 2},
	})
	startDispatcher(t, s, "d1", nil)
	startDispatcher(t, s, "d2", nil)
	startExecutors(t, s)
	nc := connect(t, s)
	js, _ := jetstream.New(nc)
	log := watchResults(t, nc, "demo")
	all := ids("spend", 3*n)
	publishAll(t, js, "standard", "m", all)
	log.waitFor(t, all, 60*time.Second)

	ok, refused := 0, 0
	var used int64
	var cost float64
	for id, r := range log.exactlyOnce(t, all) {
		switch {
		case r.Status == messages.StatusOK:
			ok++
			if r.Usage == nil || r.Cost == nil {
				t.Fatalf("call %s has no usage or cost: %+v", id, r)
			}
			used += r.Usage.TotalTokens
			cost += r.Cost.Total
		case r.Error != nil && r.Error.Code == messages.CodeBudgetExhausted:
			refused++
			b := r.Error.Budget
			if b == nil || b.Team != "demo" || b.Pool != "" || b.Period != "day" || b.Unit != "EUR" || math.Abs(b.Limit-limit) > 1e-6 ||
				b.Spent+b.Reserved+b.Need <= b.Limit || !b.ResetsAt.After(time.Now()) || r.Error.RetryAfterMS <= 0 {
				t.Errorf("call %s refused with %+v (budget %+v)", id, r.Error, b)
			}
		default:
			t.Errorf("call %s: %+v", id, r.Error)
		}
	}
	if ok != n || refused != 2*n {
		t.Fatalf("%d served and %d refused budget_exhausted; want %d and %d", ok, refused, n, 2*n)
	}

	// The count, once every call settled.
	kv, err := js.KeyValue(t.Context(), messages.BucketBudget)
	if err != nil {
		t.Fatal(err)
	}
	ledger := budget.NewLedger(kv, budget.Options{})
	var st budget.State
	waitUntil(t, "every reservation settled", 30*time.Second, func() bool {
		var err error
		st, err = ledger.State(context.Background(), budget.Scope{Team: "demo"})
		return err == nil && st.Day.Reserved == (budget.Amount{})
	})
	limitMicros := int64(limit * 1e6)
	t.Logf("day: spent %+v, over the reservations %+v, limit %d µEUR", st.Day.Spent, st.Day.Over, limitMicros)
	if st.Day.Spent.Micros-st.Day.Over.Micros > limitMicros {
		t.Fatalf("spent %d µEUR (%d of it beyond the reservations), above the budget of %d", st.Day.Spent.Micros, st.Day.Over.Micros, limitMicros)
	}
	// Settled at what the provider reported, not at the reservations.
	if st.Day.Spent.Tokens != used || math.Abs(float64(st.Day.Spent.Micros)-cost*1e6) > n {
		t.Fatalf("the budget counts %+v spent; the results say %d tokens and %g EUR", st.Day.Spent, used, cost)
	}

	// What people see: the refusals and the soft threshold (half of the
	// budget) in the metrics, and the budget in `sluice status`.
	if got := isolationCounter(t, reg, "sluice_budget_refused_total", map[string]string{"team": "demo", "pool": "", "period": "day", "action": "refused"}); got != 2*n {
		t.Errorf("sluice_budget_refused_total: %v, want %d", got, 2*n)
	}
	waitUntil(t, "the threshold counted", 10*time.Second, func() bool {
		return isolationCounter(t, reg, "sluice_budget_thresholds_crossed_total", map[string]string{"team": "demo", "period": "day", "threshold": "0.5"}) == 1
	})
	w, err := status.Watch(t.Context(), nc)
	if err != nil {
		t.Fatal(err)
	}
	defer w.Stop()
	snap, err := w.Snapshot(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	var row *status.Budget
	for i, b := range snap.Budgets {
		if b.Team == "demo" && b.Pool == "" && b.Period == "day" && b.Unit == "EUR" {
			row = &snap.Budgets[i]
		}
	}
	if row == nil || math.Abs(row.Spent-cost) > 1e-6 || row.Reserved != 0 || row.State != "warning" || !row.ResetsAt.After(time.Now()) {
		t.Fatalf("sluice status shows %+v (row %+v), want demo's day budget spent %g EUR, in warning", snap.Budgets, row, cost)
	}
}

// A team whose budget says at_limit: batch has the calls its budget
// cannot hold served in the batch tier; one whose budget in a pool says
// pool:cheap has them served by the cheaper pool.
func TestBudgetFallbacks(t *testing.T) {
	need := budgetNeed(t)
	for _, tc := range []struct {
		name, budget, wantTier, wantDeployment string
	}{
		{"batch", fmt.Sprintf("      day: {tokens: %d}\n      at_limit: batch\n", 2*need), "batch", "m-1"},
		{"cheaper pool", fmt.Sprintf("      pools:\n        m: {day: {tokens: %d}, at_limit: \"pool:cheap\"}\n", 2*need), "standard", "cheap-1"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := startStack(t, stackOptions{yaml: budgetYAML(tc.budget), fake: fakeprovider.Config{Latency: time.Second}})
			startDispatcher(t, s, "d1", nil)
			startExecutors(t, s)
			nc := connect(t, s)
			js, _ := jetstream.New(nc)
			log := watchResults(t, nc, "demo")
			all := ids("fb", 5)
			publishAll(t, js, "standard", "m", all)
			log.waitFor(t, all, 60*time.Second)
			held, moved := 0, 0
			for id, r := range log.exactlyOnce(t, all) {
				switch {
				case r.Status != messages.StatusOK:
					t.Errorf("call %s: %+v", id, r.Error)
				case r.Tier == messages.TierStandard && r.Deployment == "m-1":
					held++
				case string(r.Tier) == tc.wantTier && r.Deployment == tc.wantDeployment:
					moved++
				default:
					t.Errorf("call %s served in tier %s by %s", id, r.Tier, r.Deployment)
				}
			}
			if held != 2 || moved != 3 {
				t.Fatalf("%d served as asked and %d moved (tier %s, deployment %s); want 2 and 3", held, moved, tc.wantTier, tc.wantDeployment)
			}
		})
	}
}
