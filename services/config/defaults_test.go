package config

import (
	"errors"
	"fmt"
	"reflect"
	"strconv"
	"strings"
	"testing"
	"time"

	"go.yaml.in/yaml/v3"

	"github.com/sluicehq/sluice/messages"
)

// defaultsBase is a valid configuration that leaves every defaulted field
// out: one pool m with an openai deployment ([0]) and an azure one ([1]),
// and one team t with a quota in m.
const defaultsBase = `
pools:
  m:
    prices: {input: 1, output: 2}
    deployments:
      - {id: d0, provider: openai, base_url: "http://127.0.0.1:1/v1", region: r1, key: K0, rpm: 600, tpm: 100000, prices: {input: 1.5}}
      - {id: d1, provider: azure, base_url: "https://x.openai.azure.com", region: r1, key: K1, rpm: 600, tpm: 100000, prices: {output: 3}}
teams:
  t:
    pools:
      m: {guaranteed_rpm: 10}
`

// withField is defaultsBase with the field at path (such as
// pools.m.deployments[1].weight) set to value, a YAML literal.
func withField(t *testing.T, path, value string) []byte {
	t.Helper()
	var root map[string]any
	if err := yaml.Unmarshal([]byte(defaultsBase), &root); err != nil {
		t.Fatal(err)
	}
	var wrapped map[string]any
	if err := yaml.Unmarshal([]byte("v: "+value), &wrapped); err != nil {
		t.Fatal(err)
	}
	v := wrapped["v"]
	var node any = root
	parts := strings.Split(path, ".")
	for i, part := range parts {
		name, index := part, -1
		if j := strings.IndexByte(part, '['); j >= 0 {
			name = part[:j]
			index, _ = strconv.Atoi(strings.TrimSuffix(part[j+1:], "]"))
		}
		m := node.(map[string]any)
		last := i == len(parts)-1
		if last && index < 0 {
			m[name] = v
			break
		}
		if index >= 0 {
			list := m[name].([]any)
			if last {
				list[index] = v
				break
			}
			node = list[index]
			continue
		}
		if _, ok := m[name]; !ok || m[name] == nil {
			m[name] = map[string]any{}
		}
		node = m[name]
	}
	out, err := yaml.Marshal(root)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// refusedField reports whether err is a validation error that names field.
func refusedField(err error, field string) bool {
	var ve *ValidationError
	if !errors.Is(err, ErrInvalid) || !errors.As(err, &ve) {
		return false
	}
	for _, p := range ve.Problems {
		if p.Field == field {
			return true
		}
	}
	return false
}

// Every field that gets a default when it is left out keeps a 0 (or an
// empty string or list) that a person wrote, where it means something, or
// refuses it, naming the field: a written value is never silently replaced.
func TestZeroIsNotADefault(t *testing.T) {
	pol := func(c *Config) *TierPolicy { return &c.Tiers.Standard }
	dep := func(i int) func(c *Config) *Deployment {
		return func(c *Config) *Deployment { return c.Pools["m"].Deployments[i] }
	}
	for _, tc := range []struct {
		field string
		zero  string // the zero as YAML
		def   any    // the value when the field is left out
		holds bool   // written zero holds; otherwise it is refused
		get   func(c *Config) any
		held  any // what a written zero that holds reads as, if not the zero
	}{
		{"calls.max_body_bytes", "0", 1 << 20, false, func(c *Config) any { return c.Calls.MaxBodyBytes }, nil},
		{"calls.default_timeout", "0s", 5 * time.Minute, false, func(c *Config) any { return c.Calls.DefaultTimeout }, nil},
		{"calls.max_timeout", "0s", 24 * time.Hour, false, func(c *Config) any { return c.Calls.MaxTimeout }, nil},
		{"admission.burst", "0s", 500 * time.Millisecond, false, func(c *Config) any { return c.Admission.Burst }, nil},
		{"admission.lease_ttl", "0s", 100 * time.Millisecond, false, func(c *Config) any { return c.Admission.LeaseTTL }, nil},
		{"admission.jitter", "0s", 10 * time.Millisecond, false, func(c *Config) any { return c.Admission.Jitter }, nil},
		{"admission.in_flight_lease", "0s", 90 * time.Second, false, func(c *Config) any { return c.Admission.InFlightLease }, nil},
		{"retry.max_attempts", "0", 5, false, func(c *Config) any { return c.Retry.MaxAttempts }, nil},
		{"retry.base_delay", "0s", 250 * time.Millisecond, false, func(c *Config) any { return c.Retry.BaseDelay }, nil},
		{"retry.max_delay", "0s", 30 * time.Second, false, func(c *Config) any { return c.Retry.MaxDelay }, nil},
		{"retry.attempt_timeout", "0s", 60 * time.Second, false, func(c *Config) any { return c.Retry.AttemptTimeout }, nil},
		{"retry.budget", "0", 0.2, true, func(c *Config) any { return c.Retry.Budget }, nil},
		{"retry.budget_min_per_second", "0", 1.0, true, func(c *Config) any { return c.Retry.BudgetMinPerSecond }, nil},
		{"health.learned_recovery", "0s", 5 * time.Minute, false, func(c *Config) any { return c.Health.LearnedRecovery }, nil},
		{"health.circuit.failure_rate", "0", 0.5, false, func(c *Config) any { return c.Health.Circuit.FailureRate }, nil},
		{"health.circuit.min_requests", "0", 10, false, func(c *Config) any { return c.Health.Circuit.MinRequests }, nil},
		{"health.circuit.window_requests", "0", 20, false, func(c *Config) any { return c.Health.Circuit.WindowRequests }, nil},
		{"health.circuit.window", "0s", 30 * time.Second, false, func(c *Config) any { return c.Health.Circuit.Window }, nil},
		{"health.circuit.open_for", "0s", 10 * time.Second, false, func(c *Config) any { return c.Health.Circuit.OpenFor }, nil},
		{"health.circuit.probes", "0", 1, false, func(c *Config) any { return c.Health.Circuit.Probes }, nil},
		{"streams.replicas", "0", 1, false, func(c *Config) any { return c.Streams.Replicas }, nil},
		{"streams.results_max_age", "0s", 24 * time.Hour, false, func(c *Config) any { return c.Streams.ResultsMaxAge }, nil},
		{"streams.duplicate_window", "0s", 10 * time.Minute, false, func(c *Config) any { return c.Streams.DuplicateWindow }, nil},
		{"streams.dead_letter_max_age", "0s", 7 * 24 * time.Hour, false, func(c *Config) any { return c.Streams.DeadLetterMaxAge }, nil},
		{"streams.usage_max_age", "0s", 90 * 24 * time.Hour, false, func(c *Config) any { return c.Streams.UsageMaxAge }, nil},
		{"streams.responses_max_age", "0s", 30 * 24 * time.Hour, false, func(c *Config) any { return c.Streams.ResponsesMaxAge }, nil},
		{"streams.max_waiting", "0", 100_000, false, func(c *Config) any { return c.Streams.MaxWaiting }, nil},
		{"tiers.standard.min_share", "0", 0.05, true, func(c *Config) any { return pol(c).MinShare }, nil},
		{"tiers.batch.max_utilization", "0", 0.7, false, func(c *Config) any { return c.Tiers.Batch.MaxUtilization }, nil},
		{"tiers.critical.target_wait", "0s", time.Second, false, func(c *Config) any { return c.Tiers.Critical.TargetWait }, nil},
		{"tiers.high.target_wait", "0s", 5 * time.Second, false, func(c *Config) any { return c.Tiers.High.TargetWait }, nil},
		{"tiers.standard.target_wait", "0s", 30 * time.Second, false, func(c *Config) any { return c.Tiers.Standard.TargetWait }, nil},
		{"tiers.batch.target_wait", "0s", time.Hour, false, func(c *Config) any { return c.Tiers.Batch.TargetWait }, nil},
		{"pools.m.default_max_tokens", "0", int64(256), false, func(c *Config) any { return c.Pools["m"].DefaultMaxTokens }, nil},
		{"pools.m.deployments[0].model", `""`, "m", false, func(c *Config) any { return dep(0)(c).Model }, nil},
		{"pools.m.deployments[0].weight", "0", 1.0, false, func(c *Config) any { return dep(0)(c).Weight }, nil},
		{"pools.m.deployments[0].api_version", `""`, "", true, func(c *Config) any { return dep(0)(c).APIVersion }, nil}, // openai has none
		{"pools.m.deployments[1].api_version", `""`, "2024-10-21", false, func(c *Config) any { return dep(1)(c).APIVersion }, nil},
		{"teams.t.default_tier", `""`, messages.TierStandard, false, func(c *Config) any { return c.Teams["t"].DefaultTier }, nil},
		{"teams.t.max_queued", "0", 10000, false, func(c *Config) any { return c.Teams["t"].MaxQueued }, nil},
		{"teams.t.pools.m.weight", "0", 1.0, false, func(c *Config) any { return c.Teams["t"].Pools["m"].Weight }, nil},
		// An empty list of tiers is every tier, as none is: configurations
		// stored in KV before sluice left empty fields out say tiers: [].
		{"teams.t.tiers", "[]", true, true, func(c *Config) any { return c.Teams["t"].AllowsTier(messages.TierBatch) }, true},
	} {
		t.Run(tc.field, func(t *testing.T) {
			absent, err := Parse([]byte(defaultsBase))
			if err != nil {
				t.Fatal(err)
			}
			if got := tc.get(absent); got != tc.def {
				t.Errorf("left out: %v (%T), want the default %v (%T)", got, got, tc.def, tc.def)
			}
			// A null is a field left out.
			null, err := Parse(withField(t, tc.field, "null"))
			if err != nil {
				t.Errorf("null: %v", err)
			} else if got := tc.get(null); got != tc.def {
				t.Errorf("null: %v, want the default %v", got, tc.def)
			}
			written, err := Parse(withField(t, tc.field, tc.zero))
			switch {
			case tc.holds && err != nil:
				t.Errorf("%s: %s refused: %v", tc.field, tc.zero, err)
			case tc.holds && tc.held != nil:
				if got := tc.get(written); got != tc.held {
					t.Errorf("%s: %s became %v, want %v", tc.field, tc.zero, got, tc.held)
				}
			case tc.holds:
				if got := tc.get(written); !reflect.ValueOf(got).IsZero() {
					t.Errorf("%s: %s became %v", tc.field, tc.zero, got)
				}
			case !refusedField(err, tc.field):
				got := any(nil)
				if written != nil {
					got = tc.get(written)
				}
				t.Errorf("%s: %s was not refused by name (err %v, value %v)", tc.field, tc.zero, err, got)
			}
		})
	}
}

// A zero that holds survives what Apply does with a configuration: Marshal,
// stored, parsed again by every service. A configuration built in Go, where
// a zero field means its default, keeps meaning that on the same way.
func TestZeroThatHoldsSurvivesMarshal(t *testing.T) {
	cfg, err := Parse(withField(t, "retry", "{budget: 0}"))
	if err != nil {
		t.Fatal(err)
	}
	data, err := cfg.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	again, err := Parse(data)
	if err != nil {
		t.Fatalf("%v\n%s", err, data)
	}
	if again.Retry.Budget != 0 || again.Retry.BudgetMinPerSecond != 1 {
		t.Errorf("after Marshal and Parse, retry %+v, want budget 0 and the default floor 1\n%s", again.Retry, data)
	}
	cfg, err = Parse(withField(t, "tiers", "{standard: {min_share: 0}}"))
	if err != nil {
		t.Fatal(err)
	}
	if data, err = cfg.Marshal(); err != nil {
		t.Fatal(err)
	}
	if again, err = Parse(data); err != nil || again.Tiers.Standard.MinShare != 0 {
		t.Errorf("tiers.standard.min_share 0 after Marshal and Parse: %v, %v\n%s", again.Tiers.Standard.MinShare, err, data)
	}

	// Built in Go, not validated: zero fields are defaults, even through
	// Marshal and Parse (as Apply does).
	built := &Config{
		Pools: map[string]*Pool{"m": {Deployments: []*Deployment{{ID: "d0", Provider: "azure", BaseURL: "https://x.openai.azure.com", Region: "r1", Key: "K0", RPM: 600, TPM: 100000}}}},
		Teams: map[string]*Team{"t": {Pools: TeamPools{"m": {}}}},
	}
	if data, err = built.Marshal(); err != nil {
		t.Fatal(err)
	}
	again, err = Parse(data)
	if err != nil {
		t.Fatalf("a configuration built in Go, marshalled: %v\n%s", err, data)
	}
	if err := built.Validate(); err != nil {
		t.Fatal(err)
	}
	if again.Retry != built.Retry || again.Tiers.Standard.MinShare != 0.05 || again.Teams["t"].Pools["m"].Weight != 1 || again.Pools["m"].Deployments[0].APIVersion != "2024-10-21" {
		t.Errorf("a configuration built in Go lost its defaults through Marshal and Parse:\n%s", data)
	}
}

// With no retry budget and no floor, no retry could ever go: a call that
// needs one would wait until its deadline. That is refused; max_attempts: 1
// is how to say no retries.
func TestNoRetryBudgetAtAllIsRefused(t *testing.T) {
	_, err := Parse(withField(t, "retry", "{budget: 0, budget_min_per_second: 0}"))
	if !refusedField(err, "retry.budget") || !strings.Contains(err.Error(), "max_attempts") {
		t.Fatalf("err %v", err)
	}
	if _, err := Parse(withField(t, "retry", "{budget: 0, budget_min_per_second: 0, max_attempts: 1}")); err != nil {
		t.Fatalf("no retries at all, said so: %v", err)
	}
}

// A key misspelt in a team's quota is refused, as anywhere else, rather
// than leaving the quota at its defaults.
func TestUnknownQuotaFieldIsRefused(t *testing.T) {
	_, err := Parse(withField(t, "teams.t.pools.m", "{wieght: 3}"))
	if !errors.Is(err, ErrInvalid) || !strings.Contains(err.Error(), "wieght") {
		t.Fatalf("err %v", err)
	}
}

// Every field of the configuration, written as its zero, either holds or
// is refused by name: a guard over the table above, so that a field added
// later with a default cannot silently replace what a person wrote.
func TestEveryWrittenZeroHoldsOrIsRefused(t *testing.T) {
	keys := map[reflect.Type][]string{
		reflect.TypeOf(map[string]*Pool{}): {"m"},
		reflect.TypeOf(map[string]*Team{}): {"t"},
		reflect.TypeOf(TeamPools{}):        {"m"},
		reflect.TypeOf([]*Deployment{}):    {"[0]", "[1]"},
	}
	var fields []string
	var walk func(t reflect.Type, path string)
	walk = func(typ reflect.Type, path string) {
		for i := range typ.NumField() {
			f := typ.Field(i)
			name, _, _ := strings.Cut(f.Tag.Get("yaml"), ",")
			if !f.IsExported() || name == "" || name == "-" {
				continue
			}
			p := strings.TrimPrefix(path+"."+name, ".")
			ft := f.Type
			if ft.Kind() == reflect.Pointer {
				ft = ft.Elem()
			}
			if ft.Kind() == reflect.Struct {
				walk(ft, p)
				continue
			}
			fields = append(fields, p)
			for _, k := range keys[ft] {
				sep := "."
				if strings.HasPrefix(k, "[") {
					sep = ""
				}
				elem := ft.Elem()
				if elem.Kind() == reflect.Pointer {
					elem = elem.Elem()
				}
				walk(elem, p+sep+k)
			}
		}
	}
	walk(reflect.TypeOf(Config{}), "")
	if len(fields) < 60 {
		t.Fatalf("only %d fields found: %v", len(fields), fields)
	}
	for _, field := range fields {
		typ, ok := fieldType(t, field)
		if !ok {
			t.Fatalf("no field %s", field)
		}
		zero := "0"
		switch {
		case typ == reflect.TypeOf(time.Duration(0)):
			zero = "0s"
		case typ.Kind() == reflect.String:
			zero = `""`
		case typ.Kind() == reflect.Slice:
			zero = "[]"
		case typ.Kind() == reflect.Map:
			zero = "{}"
		case typ.Kind() == reflect.Bool:
			zero = "false"
		}
		t.Run(field, func(t *testing.T) {
			cfg, err := Parse(withField(t, field, zero))
			if err != nil {
				if !refusedField(err, field) {
					t.Errorf("%s: %s refused, but not by name: %v", field, zero, err)
				}
				return
			}
			v, _, _ := lookupIn(reflect.ValueOf(cfg).Elem(), field)
			if v.Kind() == reflect.Pointer {
				v = v.Elem()
			}
			if !v.IsZero() && !(v.Kind() == reflect.Slice || v.Kind() == reflect.Map) || (v.Kind() == reflect.Slice || v.Kind() == reflect.Map) && v.Len() != 0 {
				t.Errorf("%s: %s was written, and became %v", field, zero, v)
			}
		})
	}
}

// fieldType returns the type of the field at path in a Config.
func fieldType(t *testing.T, path string) (reflect.Type, bool) {
	t.Helper()
	cfg, err := Parse([]byte(defaultsBase))
	if err != nil {
		t.Fatal(err)
	}
	_, typ, ok := lookupIn(reflect.ValueOf(cfg).Elem(), path)
	return typ, ok
}

// lookupIn follows path (yaml names, map keys, [i]) from v.
func lookupIn(v reflect.Value, path string) (reflect.Value, reflect.Type, bool) {
	var typ reflect.Type
	for _, part := range strings.Split(path, ".") {
		name, index := part, -1
		if j := strings.IndexByte(part, '['); j >= 0 {
			name = part[:j]
			index, _ = strconv.Atoi(strings.TrimSuffix(part[j+1:], "]"))
		}
		for v.Kind() == reflect.Pointer {
			if v.IsNil() { // a section left out (a team's budget): its type
				v = reflect.New(v.Type().Elem())
			}
			v = v.Elem()
		}
		switch v.Kind() {
		case reflect.Map:
			v = v.MapIndex(reflect.ValueOf(name))
			typ = v.Type()
		case reflect.Struct:
			found := false
			for i := range v.NumField() {
				tag, _, _ := strings.Cut(v.Type().Field(i).Tag.Get("yaml"), ",")
				if tag == name && v.Type().Field(i).IsExported() {
					typ = v.Type().Field(i).Type
					v = v.Field(i)
					found = true
					break
				}
			}
			if !found {
				return reflect.Value{}, nil, false
			}
		default:
			panic(fmt.Sprintf("%s: %v at %s", path, v.Kind(), part))
		}
		if index >= 0 {
			for v.Kind() == reflect.Pointer {
				v = v.Elem()
			}
			v = v.Index(index)
			typ = v.Type()
		}
	}
	if typ.Kind() == reflect.Pointer && typ.Elem().Kind() == reflect.Slice {
		typ = typ.Elem()
	}
	return v, typ, true
}

// storedBefore is what sluice stored in KV before it left fields at their
// zero out of what Marshal writes: every field, zeros included. Services
// upgraded while it is live must read it, meaning the same.
const storedBefore = `pools:
  m:
    deployments:
      - id: d0
        provider: openai
        base_url: http://127.0.0.1:1/v1
        api_version: ""
        region: r1
        model: m
        key: K0
        rpm: 600
        tpm: 100000
        max_in_flight: 0
        weight: 1
        windows:
          - 1s
          - 1m0s
    default_max_tokens: 256
teams:
  t:
    tiers: []
    default_tier: standard
    max_queued: 10000
  u:
    tiers: []
    default_tier: standard
    max_queued: 10000
    pools:
      m:
        weight: 1
        guaranteed_rpm: 0
        guaranteed_tpm: 0
        cap_rpm: 0
        cap_tpm: 0
tiers:
  critical:
    reserve: 0
    min_share: 0
    max_utilization: 0
    off_peak: []
  high:
    reserve: 0
    min_share: 0.1
    max_utilization: 0
    off_peak: []
  standard:
    reserve: 0
    min_share: 0
    max_utilization: 0
    off_peak: []
  batch:
    reserve: 0
    min_share: 0
    max_utilization: 0.7
    off_peak: []
calls:
  max_body_bytes: 1048576
  default_timeout: 5m0s
  max_timeout: 24h0m0s
admission:
  burst: 500ms
  lease_ttl: 100ms
  jitter: 10ms
  in_flight_lease: 1m30s
retry:
  max_attempts: 5
  base_delay: 250ms
  max_delay: 30s
  attempt_timeout: 1m0s
  budget: 0.2
  budget_min_per_second: 1
streams:
  replicas: 1
  results_max_age: 24h0m0s
  duplicate_window: 10m0s
  dead_letter_max_age: 168h0m0s
  usage_max_age: 2160h0m0s
  max_waiting: 100000
  responses_max_age: 720h0m0s
health:
  learned_recovery: 5m0s
  quota_disable: 0s
  circuit:
    failure_rate: 0.5
    min_requests: 10
    window_requests: 20
    window: 30s
    open_for: 10s
    probes: 1
`

func TestConfigurationStoredBeforeStillParses(t *testing.T) {
	cfg, err := Parse([]byte(storedBefore))
	if err != nil {
		t.Fatal(err)
	}
	if !cfg.Teams["t"].AllowsTier(messages.TierBatch) || cfg.Tiers.Standard.MinShare != 0 || cfg.Tiers.High.MinShare != 0.1 ||
		cfg.Retry.Budget != 0.2 || cfg.Pools["m"].Deployments[0].APIVersion != "" || cfg.Teams["u"].Pools["m"].Weight != 1 {
		t.Errorf("read differently: %+v %+v", cfg.Tiers, cfg.Retry)
	}
	data, err := cfg.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	again, err := Parse(data)
	if err != nil || again.Tiers.Standard.MinShare != 0 || !again.Teams["t"].AllowsTier(messages.TierBatch) {
		t.Fatalf("written again and read back: %v\n%s", err, data)
	}
}
