package config

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"net/url"
	"reflect"
	"slices"
	"sort"
	"strings"
	"time"

	"go.yaml.in/yaml/v3"

	"github.com/sluicehq/sluice/messages"
	"github.com/sluicehq/sluice/services/limiter"
	"github.com/sluicehq/sluice/services/tokens"
)

// Providers lists the provider dialects deployments may use.
var Providers = []string{"openai", "azure", "anthropic"}

// defaultAPIVersion is the api_version a deployment of a provider gets when
// it sets none.
var defaultAPIVersion = map[string]string{"azure": "2024-10-21", "anthropic": "2023-06-01"}

// FieldError is one problem with one field of the configuration.
type FieldError struct {
	// Field is the path of the field, e.g. pools.gpt-4o-mini.deployments[0].rpm.
	Field   string
	Message string
	// Err is the kind of problem, for errors.Is, when it has one (such
	// as ErrInvalidPrice); nil for most.
	Err error
}

func (e FieldError) Error() string { return e.Field + ": " + e.Message }

// Unwrap returns the kind of problem, such as ErrInvalidPrice, when it
// has one.
func (e FieldError) Unwrap() error { return e.Err }

// ValidationError lists every problem found in a configuration.
type ValidationError struct {
	Problems []FieldError
}

func (e *ValidationError) Error() string {
	msgs := make([]string, len(e.Problems))
	for i, p := range e.Problems {
		msgs[i] = p.Error()
	}
	return "invalid configuration: " + strings.Join(msgs, "; ")
}

// ErrInvalid matches every *ValidationError with errors.Is.
var ErrInvalid = errors.New("invalid configuration")

// Is makes errors.Is(err, ErrInvalid) true.
func (e *ValidationError) Is(target error) bool { return target == ErrInvalid }

// Unwrap returns each problem, so that errors.Is matches the kinds of
// problems found (errors.Is(err, ErrUnknownCurrency)), and errors.As
// finds a FieldError.
func (e *ValidationError) Unwrap() []error {
	errs := make([]error, len(e.Problems))
	for i, p := range e.Problems {
		errs[i] = p
	}
	return errs
}

// Kinds of problems that errors.Is matches in a *ValidationError.
var (
	// ErrInvalidPrice: a price is negative or not a number.
	ErrInvalidPrice = errors.New("invalid price")
	// ErrMissingPrice: a price table lacks its input or output price.
	ErrMissingPrice = errors.New("missing price")
	// ErrUnknownCurrency: prices.currency is no ISO 4217 currency code.
	ErrUnknownCurrency = errors.New("unknown currency")
	// ErrInvalidBudget: a budget is negative, 0, not a number, or names
	// a pool that does not exist or that the team may not use.
	ErrInvalidBudget = errors.New("invalid budget")
	// ErrBudgetTooSmall: a budget is smaller than what one call of a
	// pool it bounds reserves, so that it would refuse every such call.
	ErrBudgetTooSmall = errors.New("budget smaller than one call")
	// ErrUnknownTimeZone: budgets.time_zone is no IANA time zone.
	ErrUnknownTimeZone = errors.New("unknown time zone")
	// ErrInvalidFallback: an at_limit is not refuse, batch or
	// pool:<name>, or moves calls to a tier or a pool the team may not
	// use, or that does not exist.
	ErrInvalidFallback = errors.New("invalid fallback")
	// ErrFallbackLoop: at_limit fallbacks move calls in a loop of pools.
	ErrFallbackLoop = errors.New("fallback loop")
)

// Parse parses YAML strictly, fills defaults and validates. Errors are a
// *ValidationError, or a YAML error that gives the line; both match
// ErrInvalid.
//
// A field left out (or null) gets its default. A field written as 0 (or
// "" or []) keeps it where 0 means something (retry.budget,
// retry.budget_min_per_second, a tier's min_share, and every field whose
// default is 0), and is refused, by name, where the field has another
// default: sluice never replaces a value a person wrote.
func Parse(data []byte) (*Config, error) {
	var c Config
	dec := yaml.NewDecoder(bytes.NewReader(data))
	dec.KnownFields(true)
	if err := dec.Decode(&c); err != nil && !errors.Is(err, io.EOF) {
		return nil, fmt.Errorf("%w: %w", ErrInvalid, err)
	}
	written := writtenFields(data)
	c.noteWritten(written)
	if err := c.validate(written); err != nil {
		return nil, err
	}
	return &c, nil
}

// Marshal encodes the configuration as YAML that Parse reads back, indented
// by two spaces. It is what Apply stores in KV.
func (c *Config) Marshal() ([]byte, error) {
	var b bytes.Buffer
	enc := yaml.NewEncoder(&b)
	enc.SetIndent(2)
	if err := enc.Encode(c); err != nil {
		return nil, err
	}
	if err := enc.Close(); err != nil {
		return nil, err
	}
	return b.Bytes(), nil
}

// Same reports whether two configurations encode the same (Marshal): what
// a service started with a file and the configuration in KV compare by,
// and `sluice config apply` before storing one that is live already.
func Same(a, b *Config) bool {
	x, errA := a.Marshal()
	y, errB := b.Marshal()
	return errA == nil && errB == nil && bytes.Equal(x, y)
}

// Validate fills defaults, checks every field and builds the indexes that
// the accessors use. It returns a *ValidationError naming each bad field.
// A field left at its zero value gets its default (as one left out of the
// YAML does), except where Parse saw a 0 written that holds.
func (c *Config) Validate() error { return c.validate(nil) }

// validate is Validate for a configuration whose YAML wrote the fields
// written names (nil: built in Go): those that are zero but have another
// default are refused.
func (c *Config) validate(written map[string]bool) error {
	v := &validator{written: written}
	c.applyDefaults(v)
	if len(c.Pools) == 0 {
		v.add("pools", "at least one pool is required")
	}
	c.deployments = map[string]*Deployment{}
	for _, name := range sortedKeys(c.Pools) {
		c.validatePool(v, name)
	}
	if len(c.Teams) == 0 {
		v.add("teams", "at least one team is required")
	}
	c.tokens = map[string]string{}
	c.teamNames = sortedKeys(c.Teams)
	for _, name := range c.teamNames {
		c.validateTeam(v, name)
	}
	c.validateTiers(v)
	c.validateGuarantees(v)
	c.validatePrices(v)
	c.validateBudgets(v)
	c.guaranteed = map[string][]string{}
	for pool := range c.Pools {
		c.guaranteed[pool] = c.guaranteedIn(pool)
	}
	v.positive("calls.max_body_bytes", int64(c.Calls.MaxBodyBytes))
	v.positiveDuration("calls.default_timeout", c.Calls.DefaultTimeout)
	v.positiveDuration("calls.max_timeout", c.Calls.MaxTimeout)
	if c.Calls.DefaultTimeout > c.Calls.MaxTimeout {
		v.add("calls.default_timeout", "must not exceed calls.max_timeout")
	}
	v.positiveDuration("admission.burst", c.Admission.Burst)
	v.positiveDuration("admission.lease_ttl", c.Admission.LeaseTTL)
	v.positiveDuration("admission.jitter", c.Admission.Jitter)
	if c.Admission.Jitter > c.Admission.LeaseTTL {
		v.add("admission.jitter", "must not exceed admission.lease_ttl")
	}
	v.positiveDuration("admission.in_flight_lease", c.Admission.InFlightLease)
	v.positive("retry.max_attempts", int64(c.Retry.MaxAttempts))
	v.positiveDuration("retry.base_delay", c.Retry.BaseDelay)
	v.positiveDuration("retry.max_delay", c.Retry.MaxDelay)
	v.positiveDuration("retry.attempt_timeout", c.Retry.AttemptTimeout)
	if c.Retry.BaseDelay > c.Retry.MaxDelay {
		v.add("retry.base_delay", "must not exceed retry.max_delay")
	}
	if c.Retry.Budget < 0 || c.Retry.Budget > 10 {
		v.add("retry.budget", "must be between 0 and 10 (a fraction of first attempts)")
	}
	if c.Retry.BudgetMinPerSecond < 0 {
		v.add("retry.budget_min_per_second", "must not be negative")
	}
	if c.Retry.Budget == 0 && c.Retry.BudgetMinPerSecond == 0 && c.Retry.MaxAttempts > 1 {
		v.add("retry.budget", "is 0 and so is retry.budget_min_per_second: no retry could ever go, and a call that needs one would wait until its deadline; for no retries, set retry.max_attempts: 1")
	}
	v.positiveDuration("health.learned_recovery", c.Health.LearnedRecovery)
	if c.Health.QuotaDisable < 0 {
		v.add("health.quota_disable", "must not be negative (0 means until re-enabled)")
	}
	if r := c.Health.Circuit.FailureRate; r <= 0 || r > 1 {
		v.add("health.circuit.failure_rate", "must be above 0 and at most 1")
	}
	v.positive("health.circuit.min_requests", int64(c.Health.Circuit.MinRequests))
	if c.Health.Circuit.WindowRequests < c.Health.Circuit.MinRequests || c.Health.Circuit.WindowRequests > 10000 {
		v.add("health.circuit.window_requests", "must be at least health.circuit.min_requests and at most 10000")
	}
	v.positiveDuration("health.circuit.window", c.Health.Circuit.Window)
	v.positiveDuration("health.circuit.open_for", c.Health.Circuit.OpenFor)
	v.positive("health.circuit.probes", int64(c.Health.Circuit.Probes))
	if c.Streams.Replicas != 1 && c.Streams.Replicas != 3 && c.Streams.Replicas != 5 {
		v.add("streams.replicas", "must be 1, 3 or 5")
	}
	v.positiveDuration("streams.results_max_age", c.Streams.ResultsMaxAge)
	v.positiveDuration("streams.duplicate_window", c.Streams.DuplicateWindow)
	v.positiveDuration("streams.dead_letter_max_age", c.Streams.DeadLetterMaxAge)
	v.positiveDuration("streams.usage_max_age", c.Streams.UsageMaxAge)
	v.positiveDuration("streams.responses_max_age", c.Streams.ResponsesMaxAge)
	v.positive("streams.max_waiting", int64(c.Streams.MaxWaiting))
	if len(v.problems) > 0 {
		return &ValidationError{Problems: v.problems}
	}
	return nil
}

func (c *Config) validatePool(v *validator, name string) {
	p := c.Pools[name]
	field := "pools." + name
	if p == nil {
		v.add(field, "is empty")
		return
	}
	p.name = name
	if !validPoolName(name) {
		v.add(field, "pool names must be 1 to %d letters, digits, '.', '-' or '_'", messages.MaxModelLen)
	}
	if name == Unknown {
		v.add(field, "%q is reserved: metrics and usage count calls for models no pool serves under it", Unknown)
	}
	if len(p.Deployments) == 0 {
		v.add(field+".deployments", "a pool needs at least one deployment")
	}
	v.positive(field+".default_max_tokens", p.DefaultMaxTokens)
	switch p.CountTokens {
	case "", CountTokensProvider, CountTokensEstimate:
	default:
		v.add(field+".count_tokens", "must be %q or %q, not %q", CountTokensProvider, CountTokensEstimate, p.CountTokens)
	}
	if p.DefaultMaxTokens > tokens.MaxMaxTokens {
		v.add(field+".default_max_tokens", "must be at most %d, as a call's max_tokens", tokens.MaxMaxTokens)
	}
	validatePoolPrices(v, field, p)
	for i, d := range p.Deployments {
		df := fmt.Sprintf("%s.deployments[%d]", field, i)
		if d == nil {
			v.add(df, "is empty")
			continue
		}
		d.pool = name
		setDefault(v, df+".model", &d.Model, name)
		if !messages.ValidToken(d.ID) {
			v.add(df+".id", "must be 1 to 64 letters, digits, '-' or '_'")
		} else if _, dup := c.deployments[d.ID]; dup {
			v.add(df+".id", "duplicate deployment id %q", d.ID)
		} else {
			c.deployments[d.ID] = d
		}
		if !contains(Providers, d.Provider) {
			v.add(df+".provider", "unknown provider %q; known: %s", d.Provider, strings.Join(Providers, ", "))
		}
		if u, err := url.Parse(d.BaseURL); err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			v.add(df+".base_url", "must be an http or https URL")
		}
		if !messages.ValidToken(d.Region) {
			v.add(df+".region", "must be 1 to 64 letters, digits, '-' or '_'")
		}
		if d.Key == "" {
			v.add(df+".key", "names the secret executors use; it is required")
		} else if !isSecretName(d.Key) {
			v.add(df+".key", "must be the name of a secret (letters, digits, '_', '-', '.'), not the secret itself")
		} else if looksLikeSecret(d.Key) {
			v.add(df+".key", "looks like a secret (OpenAI and Anthropic keys begin with sk-): name it instead, e.g. OPENAI_KEY_US_1, and give the secret to the region's executors")
		}
		v.positive(df+".rpm", d.RPM)
		v.positive(df+".tpm", d.TPM)
		if d.MaxInFlight < 0 {
			v.add(df+".max_in_flight", "must not be negative (0 means no bound)")
		}
		if d.TokenBurst < 0 {
			v.add(df+".token_burst", "must not be negative (0 means the default)")
		}
		setDefault(v, df+".weight", &d.Weight, 1)
		if d.Weight < 0 || d.Weight > 1000 {
			v.add(df+".weight", "must be above 0 and at most 1000")
		}
		setDefault(v, df+".api_version", &d.APIVersion, defaultAPIVersion[d.Provider])
		c.validateWindows(v, df, d)
		c.validateRates(v, p, df, d)
	}
}

// maxWindows bounds a deployment's windows; maxWindow bounds each.
const (
	maxWindows = 4
	maxWindow  = time.Hour
)

// validateWindows checks a deployment's windows, and that its limits can
// be paced inside them.
func (c *Config) validateWindows(v *validator, df string, d *Deployment) {
	if d.Windows == nil {
		w := slices.Clone(DefaultWindows)
		d.Windows = &w
	}
	ws := *d.Windows
	if len(ws) > maxWindows {
		v.add(df+".windows", "at most %d windows", maxWindows)
		return
	}
	for k, w := range ws {
		if w < time.Millisecond || w > maxWindow {
			v.add(fmt.Sprintf("%s.windows[%d]", df, k), "must be between 1ms and %v", maxWindow)
			return
		}
		if slices.Contains(ws[:k], w) {
			v.add(fmt.Sprintf("%s.windows[%d]", df, k), "%v is listed twice", w)
			return
		}
	}
	if d.RPM <= 0 || d.TPM <= 0 {
		return // reported already
	}
	if _, err := limiter.Fit(limiter.Enforcement{RPM: float64(d.RPM), TPM: float64(d.TPM), Windows: ws, Jitter: c.Admission.Jitter, Burst: c.Admission.Burst}); err != nil {
		v.add(df+".windows", "rpm %d and tpm %d cannot be paced inside %v with admission.jitter %v: %v", d.RPM, d.TPM, ws, c.Admission.Jitter, err)
		return
	}
	if d.TokenBurst > 0 {
		if _, err := limiter.Fit(limiter.Enforcement{RPM: float64(d.RPM), TPM: float64(d.TPM), Windows: ws, Jitter: c.Admission.Jitter, Burst: c.Admission.Burst, TokenBurst: float64(d.TokenBurst)}); err != nil {
			v.add(df+".token_burst", "%d tokens leave tpm %d no rate inside %v with admission.jitter %v: %v", d.TokenBurst, d.TPM, ws, c.Admission.Jitter, err)
		}
	}
}

// applyDefaults gives every field left out its default.
func (c *Config) applyDefaults(v *validator) {
	c.tierDefaults(v)
	setDefault(v, "calls.max_body_bytes", &c.Calls.MaxBodyBytes, 1<<20)
	setDefault(v, "calls.default_timeout", &c.Calls.DefaultTimeout, 5*time.Minute)
	setDefault(v, "calls.max_timeout", &c.Calls.MaxTimeout, 24*time.Hour)
	setDefault(v, "admission.burst", &c.Admission.Burst, 500*time.Millisecond)
	setDefault(v, "admission.lease_ttl", &c.Admission.LeaseTTL, 100*time.Millisecond)
	setDefault(v, "admission.jitter", &c.Admission.Jitter, 10*time.Millisecond)
	setDefault(v, "retry.max_attempts", &c.Retry.MaxAttempts, 5)
	setDefault(v, "retry.base_delay", &c.Retry.BaseDelay, 250*time.Millisecond)
	setDefault(v, "retry.max_delay", &c.Retry.MaxDelay, 30*time.Second)
	setDefault(v, "retry.attempt_timeout", &c.Retry.AttemptTimeout, 60*time.Second)
	setDefault(v, "admission.in_flight_lease", &c.Admission.InFlightLease, c.Retry.AttemptTimeout+30*time.Second)
	// 0 is a budget: no retries beyond the floor; and a floor: none
	// beyond the budget. Only a field left out gets the default.
	if !c.Retry.budgetWritten {
		setDefault(v, "retry.budget", &c.Retry.Budget, 0.2)
	}
	if !c.Retry.budgetMinWritten {
		setDefault(v, "retry.budget_min_per_second", &c.Retry.BudgetMinPerSecond, 1)
	}
	setDefault(v, "health.learned_recovery", &c.Health.LearnedRecovery, 5*time.Minute)
	setDefault(v, "health.circuit.failure_rate", &c.Health.Circuit.FailureRate, 0.5)
	setDefault(v, "health.circuit.min_requests", &c.Health.Circuit.MinRequests, 10)
	setDefault(v, "health.circuit.window_requests", &c.Health.Circuit.WindowRequests, max(20, c.Health.Circuit.MinRequests))
	setDefault(v, "health.circuit.window", &c.Health.Circuit.Window, 30*time.Second)
	setDefault(v, "health.circuit.open_for", &c.Health.Circuit.OpenFor, 10*time.Second)
	setDefault(v, "health.circuit.probes", &c.Health.Circuit.Probes, 1)
	setDefault(v, "streams.replicas", &c.Streams.Replicas, 1)
	setDefault(v, "streams.results_max_age", &c.Streams.ResultsMaxAge, 24*time.Hour)
	setDefault(v, "streams.duplicate_window", &c.Streams.DuplicateWindow, 10*time.Minute)
	setDefault(v, "streams.dead_letter_max_age", &c.Streams.DeadLetterMaxAge, 7*24*time.Hour)
	setDefault(v, "streams.usage_max_age", &c.Streams.UsageMaxAge, 90*24*time.Hour)
	setDefault(v, "streams.responses_max_age", &c.Streams.ResponsesMaxAge, 30*24*time.Hour)
	setDefault(v, "streams.max_waiting", &c.Streams.MaxWaiting, 100_000)
	for _, name := range sortedKeys(c.Pools) {
		if p := c.Pools[name]; p != nil {
			setDefault(v, "pools."+name+".default_max_tokens", &p.DefaultMaxTokens, 256)
		}
	}
}

// setDefault gives *p the default def when it is zero, as a field left
// out is. A zero that was written (v.written names field) and that the
// default would replace is refused instead, naming the field; *p still
// gets def, so that the checks of other fields see a sound value.
func setDefault[T comparable](v *validator, field string, p *T, def T) {
	var zero T
	if *p != zero || def == zero {
		return
	}
	if v.written[field] {
		what := "0"
		if reflect.ValueOf(zero).Kind() == reflect.String {
			what = "empty"
		}
		v.add(field, "must not be %s: leave it out for the default, %v", what, def)
	}
	*p = def
}

type validator struct {
	problems []FieldError
	written  map[string]bool // the fields the YAML wrote; nil for a configuration built in Go
}

func (v *validator) add(field, format string, args ...any) {
	v.problems = append(v.problems, FieldError{Field: field, Message: fmt.Sprintf(format, args...)})
}

// addKind is add for a problem of a kind errors.Is matches.
func (v *validator) addKind(kind error, field, format string, args ...any) {
	v.problems = append(v.problems, FieldError{Field: field, Message: fmt.Sprintf(format, args...), Err: kind})
}

func (v *validator) positive(field string, n int64) {
	if n <= 0 {
		v.add(field, "must be greater than 0")
	}
}

func (v *validator) positiveDuration(field string, d time.Duration) {
	if d <= 0 {
		v.add(field, "must be a positive duration such as 500ms or 5m")
	}
}

func isSecretName(s string) bool {
	if len(s) > 128 {
		return false
	}
	for _, r := range s {
		if !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '_' || r == '-' || r == '.') {
			return false
		}
	}
	return true
}

// looksLikeSecret catches the common mistake of pasting a key where its
// name belongs: the configuration is stored in KV and seen by every
// service, so a secret must never be in it.
func looksLikeSecret(s string) bool {
	return strings.HasPrefix(strings.ToLower(s), "sk-")
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}

// validPoolName reports whether name can name a pool: pools appear in KV
// keys of the shared state, so they keep to the characters those allow.
func validPoolName(name string) bool {
	if name == "" || len(name) > messages.MaxModelLen {
		return false
	}
	for _, r := range name {
		if !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '.' || r == '-' || r == '_') {
			return false
		}
	}
	return true
}
