package config_test

import (
	"bytes"
	"errors"
	"os"
	"strings"
	"testing"

	"github.com/sluicehq/sluice/messages"
	"github.com/sluicehq/sluice/services/config"
	"github.com/sluicehq/sluice/services/tokens"
)

// Parse reads YAML that people write: it never panics, refuses with an
// error that matches ErrInvalid and says what is wrong, and what it
// accepts keeps the bounds the services rely on, and survives what Apply
// does with it: Marshal, stored, parsed again by every service, to the
// same configuration.
func FuzzParse(f *testing.F) {
	example, err := os.ReadFile("../../deploy/sluice.example.yaml")
	if err != nil {
		f.Fatal(err)
	}
	const dep = `{id: d1, provider: openai, base_url: "http://127.0.0.1:1/v1", region: r1, key: K1, rpm: 60, tpm: 1000}`
	for _, seed := range []string{
		string(example),
		"teams:\n  t: {}\npools:\n  m:\n    deployments:\n      - " + dep + "\n",
		"teams:\n  t: {tiers: [batch], pools: [m]}\npools:\n  m:\n    default_max_tokens: 10000000\n    deployments:\n      - " + dep + "\n",
		"teams:\n  t: {}\npools:\n  m:\n    default_max_tokens: 9223372036854775807\n    deployments:\n      - " + dep + "\n",
		"teams:\n  t: {}\npools:\n  m:\n    default_max_tokens: -1\n    deployments:\n      - " + dep + "\n",
		"teams:\n  t: {}\npools:\n  m:\n    deployments:\n      - {id: d1, provider: anthropic, base_url: \"https://api.anthropic.com/v1\", region: r1, key: K1, rpm: 60, tpm: 1000, windows: []}\n",
		"teams:\n  t: {}\npools:\n  m:\n    deployments:\n      - {id: d1, provider: azure, base_url: \"https://x.openai.azure.com\", region: r1, key: K1, rpm: 9223372036854775807, tpm: 9223372036854775807, windows: [1ms, 1h]}\n",
		"teams:\n  t: {}\npools:\n  m:\n    deployments:\n      - {id: d1, provider: openai, base_url: \"http://h\", region: r1, key: sk-abc, rpm: 60, tpm: 1000}\n",
		"teams:\n  t: {}\npools:\n  m:\n    deployments:\n      - " + dep + "\ntiers:\n  batch: {off_peak: [\"18:00-08:00 Europe/Berlin\", \"25:00-01:00\", \"08:00-08:00\", \"00:00-01:00 ../../etc/passwd\"]}\n",
		"teams:\n  t: {tokens: [\"sha256:0000\"]}\npools:\n  m:\n    deployments:\n      - " + dep + "\ncalls: {default_timeout: 48h, max_timeout: 24h}\nretry: {budget: 0, budget_min_per_second: 0}\n",
		"teams:\n  t.x: {}\npools:\n  m*: {deployments: []}\n",
		"teams:\n  t: {}\npools:\n  m:\n    deployments:\n      - " + dep + "\nunknown: 1\n",
		"teams: &a [*a]\n",
		"a: &a [x, x]\nb: &b [*a, *a, *a]\nc: [*b, *b, *b]\n",
		"pools: {m: null}\nteams: {t: null}\n",
		"pools:\n  m:\n    deployments: [null]\n",
		"", "---\n", "[]", "null", ":", "\t", "\xff",
	} {
		f.Add([]byte(seed))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		cfg, err := config.Parse(data)
		if err != nil {
			if !errors.Is(err, config.ErrInvalid) || !strings.Contains(err.Error(), ": ") {
				t.Fatalf("refusal %q does not match ErrInvalid or says nothing", err)
			}
			var ve *config.ValidationError
			if errors.As(err, &ve) {
				for _, p := range ve.Problems {
					if p.Field == "" || p.Message == "" {
						t.Fatalf("a problem without a field or a message: %+v", p)
					}
				}
			}
			return
		}
		checkBounds(t, cfg)
		once, err := cfg.Marshal()
		if err != nil {
			t.Fatalf("an accepted configuration does not encode: %v", err)
		}
		again, err := config.Parse(once)
		if err != nil {
			t.Fatalf("an accepted configuration, encoded, is refused: %v\n%s", err, once)
		}
		twice, err := again.Marshal()
		if err != nil || !bytes.Equal(once, twice) {
			t.Fatalf("an accepted configuration changed on its way through Marshal and Parse (%v):\n%s\nthen\n%s", err, once, twice)
		}
	})
}

// checkBounds holds an accepted configuration to what validation promises.
func checkBounds(t *testing.T, cfg *config.Config) {
	t.Helper()
	if len(cfg.Pools) == 0 || len(cfg.Teams) == 0 {
		t.Fatalf("accepted without pools or teams")
	}
	for name, p := range cfg.Pools {
		if name == "" || len(name) > messages.MaxModelLen || strings.ContainsAny(name, "*> \t\n") {
			t.Fatalf("accepted pool name %q", name)
		}
		if p.DefaultMaxTokens < 1 || p.DefaultMaxTokens > tokens.MaxMaxTokens {
			t.Fatalf("pool %s: default_max_tokens %d", name, p.DefaultMaxTokens)
		}
		for _, d := range p.Deployments {
			if !messages.ValidToken(d.ID) || !messages.ValidToken(d.Region) || d.RPM < 1 || d.TPM < 1 || d.MaxInFlight < 0 {
				t.Fatalf("pool %s: accepted deployment %+v", name, d)
			}
			if got, ok := cfg.Deployment(d.ID); !ok || got != d {
				t.Fatalf("deployment %s is not indexed", d.ID)
			}
		}
	}
	for name, team := range cfg.Teams {
		if !messages.ValidToken(name) {
			t.Fatalf("accepted team name %q", name)
		}
		if !team.AllowsTier(team.DefaultTier) || team.MaxQueued < 0 {
			t.Fatalf("team %s: default tier %q, max_queued %d", name, team.DefaultTier, team.MaxQueued)
		}
	}
	if c := cfg.Calls; c.MaxBodyBytes < 1 || c.DefaultTimeout <= 0 || c.DefaultTimeout > c.MaxTimeout {
		t.Fatalf("accepted calls %+v", c)
	}
}
