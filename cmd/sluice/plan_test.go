package main

import (
	"bytes"
	"strings"
	"testing"
	"time"

	"github.com/sluicehq/sluice/messages"
	"github.com/sluicehq/sluice/services/config"
	"github.com/sluicehq/sluice/services/plan"
	"github.com/sluicehq/sluice/services/usage"
)

func TestPlanHelpAndSpans(t *testing.T) {
	for _, args := range [][]string{{"plan", "-h"}, {"plan", "--help"}, {"help", "plan"}} {
		code, out, _ := runExecute(args...)
		if code != 0 || !strings.Contains(out, "usage: sluice plan") || !strings.Contains(out, "-since SPAN") || !strings.Contains(out, "-html FILE") {
			t.Errorf("%v: exit %d\n%s", args, code, out)
		}
	}
	if code, _, errOut := runExecute("plan", "--since", "7x"); code != 2 || !strings.Contains(errOut, "7d") {
		t.Errorf("a bad span: exit %d, %s", code, errOut)
	}
	for in, want := range map[string]time.Duration{"7d": 7 * 24 * time.Hour, "1h": time.Hour, "1d12h": 36 * time.Hour, "90m": 90 * time.Minute} {
		var s spanFlag
		if err := s.Set(in); err != nil || time.Duration(s) != want {
			t.Errorf("%s read as %v, %v; want %v", in, time.Duration(s), err, want)
		}
	}
	for _, bad := range []string{"d", "-1d", "7dd", "x"} {
		var s spanFlag
		if err := s.Set(bad); err == nil {
			t.Errorf("%q read as %v", bad, time.Duration(s))
		}
	}
}

// The table shows what the plan holds: each pool's need and its regions,
// the hours with calls, and every team with a '-' for its budget.
func TestPrintPlan(t *testing.T) {
	cfg, err := config.Parse([]byte(`
teams: {a: {}}
pools:
  m:
    deployments:
      - {id: d1, provider: openai, base_url: "http://127.0.0.1:1/v1", region: us, key: K1, rpm: 10, tpm: 1000}
`))
	if err != nil {
		t.Fatal(err)
	}
	hour := time.Date(2026, 12, 1, 9, 0, 0, 0, time.UTC)
	by := make([]int64, usage.Minutes)
	by[3] = 100
	p := plan.Build([]usage.Record{{Hour: hour, Team: "a", Pool: "m", Tier: messages.TierStandard, Calls: 100, Attempts: 100, OK: 90,
		Late: 30, Unserved: 10, TotalTokens: 9000, ByMinute: by, Regions: map[string]int64{"us": 90}}}, cfg, hour, hour.Add(time.Hour))
	var b bytes.Buffer
	printPlan(&b, p)
	out := b.String()
	for _, want := range []string{
		"pool m: 10 RPM, 1000 TPM configured; 100 calls offered, 40 unmet (30 late, 10 unserved)",
		"09:00", "to serve all demand within target: 50 RPM (+40), 5000 TPM (+4000), as 2026-12-01 09:00 UTC needed",
		"us", "BUDGET", "teams:\n  a:\n    pools:\n      m: {weight: 1}",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("no %q in\n%s", want, out)
		}
	}
}
