package config

import (
	"errors"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/sluicehq/sluice/messages"
)

const quotas = `
pools:
  m:
    deployments:
      - {id: d1, provider: openai, base_url: "http://127.0.0.1:1/v1", region: r1, key: K1, rpm: 600, tpm: 100000}
  e:
    deployments:
      - {id: d2, provider: openai, base_url: "http://127.0.0.1:1/v1", region: r1, key: K2, rpm: 600, tpm: 100000}
teams:
  search:
    tiers: [critical, high, standard]
    max_queued: 50
    pools:
      m: {weight: 3, guaranteed_rpm: 200, cap_rpm: 400}
  analytics:
    tiers: [batch]
    pools: [m]
  everyone: {}
tiers:
  critical: {reserve: 0.1}
  standard: {min_share: 0.1}
  batch: {max_utilization: 0.6, off_peak: ["18:00-08:00 Europe/Berlin"]}
`

func TestTeamQuotasAndTiers(t *testing.T) {
	cfg, err := Parse([]byte(quotas))
	if err != nil {
		t.Fatal(err)
	}
	search := cfg.Teams["search"]
	q, ok := search.Quota("m")
	if !ok || q.Weight != 3 || q.GuaranteedRPM != 200 || q.CapRPM != 400 {
		t.Fatalf("search quota: %+v %v", q, ok)
	}
	if _, ok := search.Quota("e"); ok || search.AllowsPool("e") {
		t.Fatal("search did not list pool e")
	}
	if search.MaxQueued != 50 || search.DefaultTier != messages.TierStandard {
		t.Fatalf("search: %+v", search)
	}
	analytics := cfg.Teams["analytics"]
	if q, ok := analytics.Quota("m"); !ok || q.Weight != 1 || q.CapRPM != 0 {
		t.Fatalf("a pool listed by name gets the default quota: %+v", q)
	}
	if analytics.DefaultTier != messages.TierBatch || analytics.MaxQueued != 10000 {
		t.Fatalf("analytics defaults: %+v", analytics)
	}
	if q, ok := cfg.Teams["everyone"].Quota("e"); !ok || q.Weight != 1 {
		t.Fatal("a team without pools may use every pool")
	}
	if cfg.Tiers.Critical.Reserve != 0.1 || cfg.Tiers.Standard.MinShare != 0.1 || cfg.Tiers.Batch.MaxUtilization != 0.6 {
		t.Fatalf("tiers: %+v", cfg.Tiers)
	}
	// 18:00-08:00 in Berlin (UTC+1 in November).
	berlinEvening := time.Date(2026, 11, 25, 20, 0, 0, 0, time.UTC) // 21:00 in Berlin
	berlinNoon := time.Date(2026, 11, 25, 11, 0, 0, 0, time.UTC)    // 12:00 in Berlin
	berlinDawn := time.Date(2026, 11, 25, 6, 30, 0, 0, time.UTC)    // 07:30 in Berlin
	if !cfg.Tiers.Batch.OffPeakAt(berlinEvening) || cfg.Tiers.Batch.OffPeakAt(berlinNoon) || !cfg.Tiers.Batch.OffPeakAt(berlinDawn) {
		t.Fatal("off-peak window across midnight, in its time zone")
	}
	// Round trip keeps quotas and windows.
	data, err := cfg.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	again, err := Parse(data)
	if err != nil {
		t.Fatalf("%v\n%s", err, data)
	}
	if q, _ := again.Teams["search"].Quota("m"); q.Weight != 3 || !again.Tiers.Batch.OffPeakAt(berlinEvening) {
		t.Fatal("round trip lost quotas or windows")
	}
}

func TestDefaultTiers(t *testing.T) {
	cfg, err := Parse([]byte(minimal))
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Tiers.Critical.Reserve != 0 || cfg.Tiers.Standard.MinShare != 0.05 || cfg.Tiers.Batch.MaxUtilization != 0.7 {
		t.Fatalf("default tiers: %+v", cfg.Tiers)
	}
}

func TestBadQuotasNameTheField(t *testing.T) {
	cases := []struct{ name, from, to, field string }{
		{"weight", "weight: 3,", "weight: -1,", "teams.search.pools.m.weight"},
		{"cap below guarantee", "cap_rpm: 400", "cap_rpm: 100", "teams.search.pools.m.cap_rpm"},
		{"guarantees above capacity", "guaranteed_rpm: 200", "guaranteed_rpm: 580", "teams.search.pools.m.guaranteed_rpm"},
		{"negative guarantee", "guaranteed_rpm: 200", "guaranteed_rpm: -2", "teams.search.pools.m.guaranteed_rpm"},
		{"team with no pool", "pools: [m]", "pools: []", "teams.analytics.pools"},
		{"default tier not allowed", "tiers: [batch]", "tiers: [batch]\n    default_tier: critical", "teams.analytics.default_tier"},
		{"reserve on another tier", "standard: {min_share: 0.1}", "standard: {min_share: 0.1, reserve: 0.2}", "tiers.standard.reserve"},
		{"shares above the pool", "standard: {min_share: 0.1}", "standard: {min_share: 0.95}", "tiers"},
		{"deferral on another tier", "standard: {min_share: 0.1}", "standard: {max_utilization: 0.5}", "tiers.standard.max_utilization"},
		{"bad window", `"18:00-08:00 Europe/Berlin"`, `"6pm-8am"`, "tiers.batch.off_peak[0]"},
		{"bad zone", `"18:00-08:00 Europe/Berlin"`, `"18:00-08:00 Mars/Olympus"`, "tiers.batch.off_peak[0]"},
		{"utilization", "max_utilization: 0.6", "max_utilization: 1.5", "tiers.batch.max_utilization"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			src := strings.Replace(quotas, tc.from, tc.to, 1)
			if src == quotas {
				t.Fatalf("the case did not change the configuration")
			}
			_, err := Parse([]byte(src))
			var verr *ValidationError
			if !errors.As(err, &verr) {
				t.Fatalf("want a ValidationError, got %v", err)
			}
			for _, p := range verr.Problems {
				if p.Field == tc.field {
					return
				}
			}
			t.Fatalf("no problem names %s: %v", tc.field, err)
		})
	}
	// A tier that does not exist is an unknown field.
	if _, err := Parse([]byte(strings.Replace(quotas, "tiers:\n  critical:", "tiers:\n  urgent: {}\n  critical:", 1))); err == nil || !strings.Contains(err.Error(), "urgent") {
		t.Fatalf("an unknown tier must be refused by name: %v", err)
	}
}

func TestGatewayTokens(t *testing.T) {
	h := HashToken("sk-team-a")
	cfg, err := Parse([]byte(strings.Replace(quotas, "  everyone: {}", "  everyone: {tokens: [\""+h+"\"]}", 1)))
	if err != nil {
		t.Fatal(err)
	}
	if team, ok := cfg.TeamOfToken("sk-team-a"); !ok || team != "everyone" {
		t.Fatalf("token maps to %q %v", team, ok)
	}
	if _, ok := cfg.TeamOfToken("sk-other"); ok {
		t.Fatal("an unknown token must map to no team")
	}
	for _, bad := range []string{`["sk-team-a"]`, `["sha256:abc"]`} {
		_, err := Parse([]byte(strings.Replace(quotas, "  everyone: {}", "  everyone: {tokens: "+bad+"}", 1)))
		var verr *ValidationError
		if !errors.As(err, &verr) || verr.Problems[0].Field != "teams.everyone.tokens[0]" {
			t.Fatalf("token %s: %v", bad, err)
		}
	}
	twice := strings.Replace(quotas, "  everyone: {}", "  everyone: {tokens: [\""+h+"\"]}\n  again: {tokens: [\""+h+"\"]}", 1)
	if _, err := Parse([]byte(twice)); err == nil || !strings.Contains(err.Error(), "same token") {
		t.Fatalf("one token for two teams: %v", err)
	}
}

// The teams admission looks at for guarantees: those with one in the
// pool, sorted; and every team, sorted, the same list each time.
func TestGuaranteedTeamsAndTeamNames(t *testing.T) {
	cfg, err := Parse([]byte(withTeam("  z:\n    pools:\n      m: {guaranteed_tpm: 100}\n  b: {}\n  a:\n    pools:\n      m: {guaranteed_rpm: 10}\n")))
	if err != nil {
		t.Fatal(err)
	}
	if got := cfg.GuaranteedTeams("m"); !slices.Equal(got, []string{"a", "z"}) {
		t.Errorf("GuaranteedTeams(m) = %v, want [a z]", got)
	}
	if got := cfg.GuaranteedTeams("other"); len(got) != 0 {
		t.Errorf("GuaranteedTeams(other) = %v, want none", got)
	}
	if got := cfg.TeamNames(); !slices.Equal(got, []string{"a", "b", "t", "z"}) {
		t.Errorf("TeamNames() = %v, want [a b t z]", got)
	}
}
