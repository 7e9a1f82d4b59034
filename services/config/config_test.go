package config

import (
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/sluicehq/sluice/messages"
)

func TestExampleConfigLoads(t *testing.T) {
	cfg, err := Load("../../deploy/sluice.example.yaml")
	if err != nil {
		t.Fatal(err)
	}
	d, ok := cfg.Deployment("oai-eu-1")
	if !ok || d.Region != "eu-west" || d.Pool() != "gpt-4o-mini" || d.RPM != 5000 {
		t.Fatalf("deployment oai-eu-1: %+v", d)
	}
	emb, _ := cfg.Deployment("oai-emb-us-1")
	if emb.Model != "text-embedding-3-small" {
		t.Fatalf("model defaults to the pool name, got %q", emb.Model)
	}
	if got := cfg.Regions(); strings.Join(got, ",") != "eu-west,us-east" {
		t.Fatalf("regions %v", got)
	}
	if !cfg.Teams["analytics"].AllowsTier(messages.TierBatch) || cfg.Teams["search"].AllowsTier(messages.TierBatch) {
		t.Fatal("tier permissions")
	}
	if cfg.Teams["analytics"].AllowsPool("text-embedding-3-small") || !cfg.Teams["search"].AllowsPool("text-embedding-3-small") {
		t.Fatal("pool permissions")
	}
	az, _ := cfg.Deployment("azure-eu-1")
	if r, ok := az.Rates(); !ok || r != (Rates{Currency: "USD", Input: 0.15, CachedInput: 0.075, Output: 0.66}) {
		t.Fatalf("azure-eu-1's prices: the pool's with its own output price, got %+v", r)
	}
}

const minimal = `
teams:
  t: {}
pools:
  m:
    deployments:
      - {id: d1, provider: openai, base_url: "http://127.0.0.1:1/v1", region: r1, key: K1, rpm: 60, tpm: 1000}
`

// withTeam adds a team to minimal.
func withTeam(team string) string {
	return strings.Replace(minimal, "  t: {}\n", "  t: {}\n"+team, 1)
}

func TestDefaults(t *testing.T) {
	cfg, err := Parse([]byte(minimal))
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Retry.MaxAttempts != 5 || cfg.Admission.Burst != 500*time.Millisecond || cfg.Streams.Replicas != 1 ||
		cfg.Calls.DefaultTimeout != 5*time.Minute || cfg.Pools["m"].DefaultMaxTokens != 256 {
		t.Fatalf("defaults not applied: %+v", cfg)
	}
	if !cfg.Teams["t"].AllowsTier(messages.TierCritical) || !cfg.Teams["t"].AllowsPool("m") {
		t.Fatal("a team with no lists may use every tier and pool")
	}
	// What Marshal writes, Parse reads back the same.
	data, err := cfg.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	again, err := Parse(data)
	if err != nil {
		t.Fatalf("re-parse: %v\n%s", err, data)
	}
	if again.Retry != cfg.Retry || len(again.Pools["m"].Deployments) != 1 {
		t.Fatal("round trip changed the configuration")
	}
}

func TestInvalidConfigNamesTheField(t *testing.T) {
	cases := []struct {
		name, yaml, field string
	}{
		{"unknown provider", strings.Replace(minimal, "provider: openai", "provider: openia", 1), "pools.m.deployments[0].provider"},
		{"zero rpm", strings.Replace(minimal, "rpm: 60", "rpm: 0", 1), "pools.m.deployments[0].rpm"},
		{"negative tpm", strings.Replace(minimal, "tpm: 1000", "tpm: -5", 1), "pools.m.deployments[0].tpm"},
		{"bad url", strings.Replace(minimal, `"http://127.0.0.1:1/v1"`, "localhost", 1), "pools.m.deployments[0].base_url"},
		{"bad region", strings.Replace(minimal, "region: r1", `region: "eu west"`, 1), "pools.m.deployments[0].region"},
		{"secret instead of name", strings.Replace(minimal, "key: K1", `key: "sk-abc def"`, 1), "pools.m.deployments[0].key"},
		{"secret pasted as the name", strings.Replace(minimal, "key: K1", `key: sk-proj-Abc123_def`, 1), "pools.m.deployments[0].key"},
		{"duplicate deployment", minimal + `
  m2:
    deployments:
      - {id: d1, provider: openai, base_url: "http://x/v1", region: r1, key: K1, rpm: 1, tpm: 1}
`, "pools.m2.deployments[0].id"},
		{"pool with no deployment", minimal + "  empty: {deployments: []}\n", "pools.empty.deployments"},
		{"no pools", "teams: {t: {}}\n", "pools"},
		{"unknown tier", withTeam("  u: {tiers: [urgent]}\n"), "teams.u.tiers[0]"},
		{"team with unknown pool", withTeam("  u: {pools: [nope]}\n"), "teams.u.pools.nope"},
		{"bad team name", withTeam("  \"a.b\": {}\n"), "teams.a.b"},
		{"team named unknown", withTeam("  unknown: {}\n"), "teams.unknown"},
		{"pool named unknown", minimal + `
  unknown:
    deployments:
      - {id: d9, provider: openai, base_url: "http://x/v1", region: r1, key: K9, rpm: 1, tpm: 1}
`, "pools.unknown"},
		{"replicas", minimal + "streams: {replicas: 2}\n", "streams.replicas"},
		{"negative duration", minimal + "retry: {base_delay: -1s}\n", "retry.base_delay"},
		{"negative target wait", minimal + "tiers: {high: {target_wait: -5s}}\n", "tiers.high.target_wait"},
		{"zero target wait", minimal + "tiers: {batch: {target_wait: 0s}}\n", "tiers.batch.target_wait"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Parse([]byte(tc.yaml))
			var verr *ValidationError
			if !errors.As(err, &verr) || !errors.Is(err, ErrInvalid) {
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
}

func TestUnknownFieldIsRefusedWithItsLine(t *testing.T) {
	_, err := Parse([]byte(minimal + "retyr: {}\n"))
	if err == nil || !strings.Contains(err.Error(), "retyr") || !strings.Contains(err.Error(), "line") {
		t.Fatalf("want an error naming the field and line, got %v", err)
	}
	if !errors.Is(err, ErrInvalid) {
		t.Errorf("a YAML error should match ErrInvalid: %v", err)
	}
}
