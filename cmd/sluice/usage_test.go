package main

import (
	"context"
	"encoding/json"
	"fmt"
	"math"
	"strings"
	"testing"
	"time"

	"github.com/sluicehq/sluice/messages"
	"github.com/sluicehq/sluice/services/client"
	"github.com/sluicehq/sluice/services/usage"
)

// sluice usage --json adds up what the fake provider counted: the calls it
// served and the tokens it reported, per team and tier, with the errors.
func TestUsageMatchesTheProvider(t *testing.T) {
	s := startStack(t, true)
	nc, err := s.Connect("test")
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	c, err := client.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	calls := map[messages.Tier]int{messages.TierStandard: 12, messages.TierBatch: 5, messages.TierCritical: 3}
	for tier, n := range calls {
		for i := 0; i < n; i++ {
			body := fmt.Sprintf(`{"messages":[{"role":"user","content":"call %d"}],"max_tokens":%d}`, i, 5+i)
			res, err := c.Call(ctx, "demo", tier, &messages.CallRequest{Model: "gpt-4o-mini", Body: json.RawMessage(body)})
			if err != nil || res.Status != messages.StatusOK {
				t.Fatalf("call: %v %+v", err, res)
			}
		}
	}
	// Two calls that end in errors, counted as calls of their pool.
	for i := 0; i < 2; i++ {
		res, err := c.Call(ctx, "demo", messages.TierStandard, &messages.CallRequest{Model: "gpt-4o-mini", Body: json.RawMessage(`{"messages":"oops"}`)})
		if err != nil || res.Error == nil {
			t.Fatalf("bad call: %v %+v", err, res)
		}
	}
	fake := s.Fake.Stats().Total

	// Figures reach KV within a flush interval.
	var totals []usage.Total
	deadline := time.Now().Add(3 * usage.FlushEvery)
	for {
		code, out, errOut := runExecute("usage", "--server", s.ClientURL(), "--since", "1h", "--json")
		if code != 0 {
			t.Fatalf("exit %d: %s", code, errOut)
		}
		if err := json.Unmarshal([]byte(out), &totals); err != nil {
			t.Fatalf("%v: %s", err, out)
		}
		var calls int64
		for _, tot := range totals {
			calls += tot.Calls
		}
		if calls == 22 || time.Now().After(deadline) {
			break
		}
		time.Sleep(200 * time.Millisecond)
	}
	var ok, total, prompt, errs int64
	byTier := map[messages.Tier]int64{}
	for _, tot := range totals {
		if tot.Team != "demo" || tot.Pool != "gpt-4o-mini" {
			t.Errorf("unexpected row %+v", tot)
		}
		ok += tot.OK
		total += tot.TotalTokens
		prompt += tot.PromptTokens
		errs += tot.Errors[messages.CodeInvalidRequest]
		byTier[tot.Tier] += tot.OK
	}
	t.Logf("usage: ok %d, tokens %d; the provider served %d with %d tokens", ok, total, fake.Served, fake.TotalTokens)
	if ok != fake.Served || total != fake.TotalTokens || prompt != fake.PromptTokens {
		t.Fatalf("usage says %d ok calls, %d tokens (%d prompt); the provider counted %d, %d (%d)", ok, total, prompt, fake.Served, fake.TotalTokens, fake.PromptTokens)
	}
	if errs != 2 || byTier[messages.TierStandard] != 12 || byTier[messages.TierBatch] != 5 || byTier[messages.TierCritical] != 3 {
		t.Fatalf("errors %d, by tier %v", errs, byTier)
	}
	// The cost is the dev configuration's gpt-4o-mini prices (USD 0.15
	// and 0.60 per million input and output tokens) of what the provider
	// counted.
	var cost float64
	for _, tot := range totals {
		cost += tot.Cost["USD"]
		if len(tot.EstimatedCost) != 0 {
			t.Errorf("estimated costs %v: every answer reported its usage", tot.EstimatedCost)
		}
	}
	want := (float64(fake.PromptTokens)*0.15 + float64(fake.TotalTokens-fake.PromptTokens)*0.60) / 1e6
	if math.Abs(cost-want) > 1e-12 || cost == 0 {
		t.Errorf("usage costs %g USD, want %g for what the provider counted", cost, want)
	}
	// The table a person reads.
	code, out, _ := runExecute("usage", "--server", s.ClientURL())
	if code != 0 || !strings.Contains(out, "demo") || !strings.Contains(out, "invalid_request 2") || !strings.Contains(out, " USD") || !strings.Contains(out, "COST") {
		t.Fatalf("exit %d:\n%s", code, out)
	}
	// By day: a row per UTC day, today's, with its day and cost.
	code, out, errOut := runExecute("usage", "--server", s.ClientURL(), "--by", "day", "--json")
	var daily []usage.Total
	if code != 0 || json.Unmarshal([]byte(out), &daily) != nil {
		t.Fatalf("--by day --json: exit %d: %s%s", code, out, errOut)
	}
	today := time.Now().UTC().Format(time.DateOnly)
	var dailyCost float64
	for _, tot := range daily {
		if tot.Day != today && tot.Day != time.Now().UTC().Add(-time.Hour).Format(time.DateOnly) {
			t.Errorf("row of day %q, want %s: %+v", tot.Day, today, tot)
		}
		dailyCost += tot.Cost["USD"]
	}
	if math.Abs(dailyCost-cost) > 1e-12 {
		t.Errorf("the days cost %g USD, the span %g", dailyCost, cost)
	}
	code, out, _ = runExecute("usage", "--server", s.ClientURL(), "--by", "day")
	if code != 0 || !strings.Contains(out, "DAY") || !strings.Contains(out, today) || !strings.Contains(out, " USD") {
		t.Fatalf("--by day: exit %d:\n%s", code, out)
	}
	if code, _, errOut := runExecute("usage", "--server", s.ClientURL(), "--by", "week"); code == 0 || !strings.Contains(errOut, "day") {
		t.Errorf("--by week: exit %d, %s", code, errOut)
	}
}
