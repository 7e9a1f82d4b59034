// Package config owns sluice's shared configuration: the pools of
// deployments that serve each model, the teams that may call them, and the
// settings of admission, retries and streams. Every service (dispatchers,
// executors, gateways) uses the same configuration, stored in the KV
// bucket SLUICE_CONFIG and watched for changes (Apply, Fetch, Watch);
// provider secrets are never part of it: a deployment names its key, and
// only the executors of its region resolve that name to a secret.
//
// Configuration is YAML. Load parses it strictly (unknown fields are errors),
// fills defaults, and validates it; every error names the field it is about,
// such as pools.gpt-4o-mini.deployments[1].rpm, and all of them are
// collected in one *ValidationError, which errors.Is matches with
// ErrInvalid and with the kind of each problem that has one
// (ErrInvalidPrice, ErrMissingPrice, ErrUnknownCurrency, ErrInvalidBudget,
// ErrBudgetTooSmall, ErrUnknownTimeZone, ErrInvalidFallback,
// ErrFallbackLoop).
//
// Prices: a pool's price table (Pool.Prices: per million input, cached
// input and output tokens, and per request), overridden entry by entry
// by a deployment's (Deployment.Prices), in the one currency of
// prices.currency (an ISO 4217 code, default USD), gives each deployment
// its Rates, by which executors cost every answer (Rates.Cost from the
// provider's usage, Rates.Estimate from the reservation when there is
// none).
//
// Budgets: a team's budget (Team.Budget) bounds what it spends, in
// tokens and in money, per calendar day and month of budgets.time_zone
// (BudgetLocation), in all its pools and in some of them, and says what
// happens to a call a budget cannot hold (Fallback, PoolFallback);
// package budget keeps the count.
package config

import (
	"fmt"
	"os"
	"slices"
	"sort"
	"sync/atomic"
	"time"
)

// Config is the shared configuration.
type Config struct {
	// Pools maps a model name, as clients ask for it, to the deployments
	// that serve it.
	Pools map[string]*Pool `yaml:"pools"`
	// Teams maps a team name (the <team> of sluice.call.<team>.<tier>) to
	// what it may do, and its share of each pool.
	Teams map[string]*Team `yaml:"teams"`
	// Tiers sets how the priority tiers share a contended pool.
	Tiers Tiers `yaml:"tiers"`
	// Calls bounds what a call may ask for.
	Calls Calls `yaml:"calls"`
	// Admission tunes the shared limiter.
	Admission Admission `yaml:"admission"`
	// Retry tunes how failed attempts are retried.
	Retry Retry `yaml:"retry"`
	// Streams tunes the JetStream streams sluice creates.
	Streams Streams `yaml:"streams"`
	// Health tunes how sluice reacts to what providers say and do:
	// cooldowns, learned limits, disabled keys and circuit breakers.
	Health Health `yaml:"health"`
	// Prices sets the currency of the pools' and deployments' price
	// tables, by which every result's cost is computed.
	Prices Prices `yaml:"prices,omitempty"`
	// Budgets sets the time zone of the teams' budgets (Team.Budget) and
	// their soft thresholds.
	Budgets Budgets `yaml:"budgets,omitempty"`

	deployments map[string]*Deployment
	tokens      map[string]string // gateway token hash -> team
	teamNames   []string          // sorted; admission reads it per call
	// guaranteed lists, per pool, the teams with a guarantee there,
	// sorted: admission looks at them for every call.
	guaranteed map[string][]string
}

// Pool is a logical model served by one or more deployments.
type Pool struct {
	Deployments []*Deployment `yaml:"deployments"`
	// DefaultMaxTokens is reserved for a chat call whose body sets no
	// max_tokens. Default 256.
	DefaultMaxTokens int64 `yaml:"default_max_tokens,omitempty"`
	// CountTokens is how Anthropic's /v1/messages/count_tokens is
	// answered: CountTokensProvider (the default, "") sends it to a
	// deployment through admission like any call, as the provider's own
	// count; CountTokensEstimate answers at the gateway with sluice's
	// estimate (see package tokens), which costs no provider request.
	CountTokens string `yaml:"count_tokens,omitempty"`
	// Prices is what the pool's deployments charge, per million tokens
	// and per request, in prices.currency: the results of its calls then
	// carry their cost, and usage adds it up. Nil: the pool's calls
	// carry no cost (unless a deployment has prices of its own).
	Prices *Price `yaml:"prices,omitempty"`

	name string
}

// The ways a pool answers count_tokens (Pool.CountTokens).
const (
	CountTokensProvider = "provider"
	CountTokensEstimate = "estimate"
)

// EstimatesTokenCounts reports whether the gateway answers count_tokens
// on p with sluice's estimate rather than the provider's count.
func (p *Pool) EstimatesTokenCounts() bool { return p.CountTokens == CountTokensEstimate }

// Deployment is one (provider, region, key, model) with its own limits.
type Deployment struct {
	// ID names the deployment in results, metrics and limiter state.
	ID string `yaml:"id"`
	// Provider is the API dialect: openai (also any OpenAI-compatible API),
	// azure (Azure OpenAI) or anthropic.
	Provider string `yaml:"provider"`
	// BaseURL is the API root: https://api.openai.com/v1,
	// https://<resource>.openai.azure.com, https://api.anthropic.com/v1.
	BaseURL string `yaml:"base_url"`
	// APIVersion is Azure OpenAI's api-version, or Anthropic's
	// anthropic-version. Defaults 2024-10-21 and 2023-06-01.
	APIVersion string `yaml:"api_version,omitempty"`
	// Region is where the executors that call this deployment run.
	Region string `yaml:"region"`
	// Model is the provider's name for the model; it replaces the pool name
	// in the body sent to the provider. For Azure it is the deployment name
	// in the URL. Default: the pool name.
	Model string `yaml:"model,omitempty"`
	// Key names the secret the region's executors use. It is a name, never
	// the secret itself.
	Key string `yaml:"key"`
	// RPM and TPM are the provider's limits for this deployment.
	RPM int64 `yaml:"rpm"`
	TPM int64 `yaml:"tpm"`
	// MaxInFlight bounds the calls open at once on this deployment; 0
	// means no bound.
	MaxInFlight int `yaml:"max_in_flight"`
	// Weight scales this deployment's share when deployments have equal
	// headroom. Default 1.
	Weight float64 `yaml:"weight,omitempty"`
	// Windows are the sliding windows over which the provider counts this
	// deployment's requests and tokens: in a window of span w it allows
	// ceil(rpm*w/1m) requests and floor(tpm*w/1m) tokens, and sluice paces
	// what it sends to stay inside every one (see admission.jitter).
	// Default [1s, 1m]: per-minute limits that the provider also enforces
	// over each second, as OpenAI does. [1m] is a provider that counts
	// only the minute, which lets sluice send bursts; [100ms, 1m] one
	// with a shorter window; [] one that enforces only a token bucket of
	// the rate, which sluice then fills to admission.burst.
	Windows *[]time.Duration `yaml:"windows,omitempty"`
	// TokenBurst is the tokens a call may reserve on this deployment
	// without its schedule idling before it. A call reserving more waits
	// (reservation - burst) / rate after the call before it, which the
	// refund of what it did not use does not give back: against a
	// one-second window, calls that each reserve a good part of tpm/60
	// go about half as often as their usage allows. Set it to a typical
	// call's reservation (prompt + max_tokens) for such calls; the rate
	// drops by what it takes of the shortest window. Default 0: a tenth
	// of a second's tokens, at most half the shortest window's.
	TokenBurst int64 `yaml:"token_burst,omitempty"`
	// Prices overrides the entries of the pool's price table that it
	// sets, for this deployment (another region's or key's prices).
	Prices *Price `yaml:"prices,omitempty"`

	pool string
	// rates are the prices in effect, set by validation; nil when none.
	rates *Rates
}

// DefaultWindows are the windows a deployment that names none is paced
// for: one second and one minute.
var DefaultWindows = []time.Duration{time.Second, time.Minute}

// EnforcedWindows returns the windows the deployment is paced for.
func (d *Deployment) EnforcedWindows() []time.Duration {
	if d.Windows == nil {
		return DefaultWindows
	}
	return *d.Windows
}

// Bursty reports whether the deployment's windows are all longer than a
// second (or none), so that its pace sends bursts.
func (d *Deployment) Bursty() bool {
	ws := d.EnforcedWindows()
	return len(ws) == 0 || slices.Min(ws) > time.Second
}

// Calls bounds calls.
type Calls struct {
	// MaxBodyBytes is the largest call message accepted. Default 1 MiB.
	MaxBodyBytes int `yaml:"max_body_bytes,omitempty"`
	// DefaultTimeout is the deadline of a call that sets none. Default 5m.
	DefaultTimeout time.Duration `yaml:"default_timeout,omitempty"`
	// MaxTimeout caps any call's deadline. Default 24h.
	MaxTimeout time.Duration `yaml:"max_timeout,omitempty"`
}

// Admission tunes the shared limiter.
type Admission struct {
	// Burst is the capacity of a bucket as time at its sustained rate:
	// of the team and tier shares (caps, guarantees, minimum shares, the
	// critical reserve, the batch gate), and of deployments whose windows
	// are [] (a token bucket provider). Deployments with windows get the
	// burst their windows leave room for. Default 500ms.
	Burst time.Duration `yaml:"burst,omitempty"`
	// LeaseTTL is how far ahead of its send time a call may be admitted,
	// so how long admitted work may wait at an executor before it is sent,
	// and how long a dispatcher may hold capacity it took from a shared
	// bucket before spending it. Default 100ms.
	LeaseTTL time.Duration `yaml:"lease_ttl,omitempty"`
	// Jitter is how late after its scheduled send time a request may
	// reach the provider. Executors do not send work more than half of it
	// late (it goes back through admission instead), which leaves the
	// other half for the path to the provider, and every deployment's
	// pace leaves this much room in each of its windows: a 1s window
	// loses about Jitter/1s of its rate. Default 10ms.
	Jitter time.Duration `yaml:"jitter,omitempty"`
	// InFlightLease is how long a call holds its deployment's in-flight
	// slot (max_in_flight) when its attempt never reports back, as when its
	// executor is killed mid-call. It should cover the wait in the
	// region's queue plus retry.attempt_timeout. Default: attempt_timeout
	// plus 30s.
	InFlightLease time.Duration `yaml:"in_flight_lease,omitempty"`
}

// Retry tunes retries of attempts that failed with 429, 5xx or a timeout.
type Retry struct {
	// MaxAttempts bounds provider requests per call. Default 5.
	MaxAttempts int `yaml:"max_attempts,omitempty"`
	// BaseDelay and MaxDelay bound the exponential backoff with full
	// jitter: attempt n waits a random time in [0, min(MaxDelay,
	// BaseDelay*2^(n-1))], and at least what the provider asked for.
	// Defaults 250ms and 30s.
	BaseDelay time.Duration `yaml:"base_delay,omitempty"`
	MaxDelay  time.Duration `yaml:"max_delay,omitempty"`
	// AttemptTimeout bounds one provider request. Default 60s.
	AttemptTimeout time.Duration `yaml:"attempt_timeout,omitempty"`
	// Budget bounds retries, per pool, to this fraction of first attempts
	// (plus BudgetMinPerSecond), so that an outage never becomes a retry
	// storm: a retry over budget waits. Default 0.2.
	Budget float64 `yaml:"budget,omitempty"`
	// BudgetMinPerSecond lets a trickle of retries through when there is
	// little traffic. Default 1.
	//
	// In YAML, 0 holds for both (no retries beyond the floor, or none
	// beyond the fraction), though not for both at once; in Go, where
	// a zero field is its default, they can only be made 0 through Parse.
	BudgetMinPerSecond float64 `yaml:"budget_min_per_second,omitempty"`

	// budgetWritten and budgetMinWritten say that the YAML wrote 0 for
	// Budget and BudgetMinPerSecond, so that it holds rather than
	// defaults.
	budgetWritten, budgetMinWritten bool
}

// Health tunes the reactions to providers' signals.
type Health struct {
	// LearnedRecovery is how long a limit learned below the configured one
	// takes to climb back to it, once the provider stops saying less.
	// Default 5m.
	LearnedRecovery time.Duration `yaml:"learned_recovery,omitempty"`
	// QuotaDisable is how long insufficient_quota keeps a key out of
	// rotation; 0 means until an operator re-enables it.
	QuotaDisable time.Duration `yaml:"quota_disable"`
	// Circuit configures the breaker of each deployment and region.
	Circuit Circuit `yaml:"circuit"`
}

// Circuit configures circuit breakers: a deployment (or a region) whose
// last WindowRequests attempts (those within Window) fail (5xx, timeouts,
// transport errors) at FailureRate or more, with at least MinRequests of
// them, is opened: no calls go to it for OpenFor; then up to Probes calls
// test it (half-open), and a success closes it again. Counting the last
// attempts rather than a span of time means a busy deployment that starts
// failing is judged on its recent answers, not diluted by a minute of
// earlier successes.
type Circuit struct {
	FailureRate    float64       `yaml:"failure_rate,omitempty"`    // default 0.5
	MinRequests    int           `yaml:"min_requests,omitempty"`    // default 10
	WindowRequests int           `yaml:"window_requests,omitempty"` // default 20
	Window         time.Duration `yaml:"window,omitempty"`          // default 30s
	OpenFor        time.Duration `yaml:"open_for,omitempty"`        // default 10s
	Probes         int           `yaml:"probes,omitempty"`          // default 1
}

// Streams tunes sluice's JetStream resources.
type Streams struct {
	// Replicas of every stream and bucket: 1 on one server, 3 in a cluster.
	// Default 1.
	Replicas int `yaml:"replicas,omitempty"`
	// ResultsMaxAge is how long results stay fetchable. Default 24h.
	ResultsMaxAge time.Duration `yaml:"results_max_age,omitempty"`
	// DuplicateWindow is how long a call id is remembered, so that a call
	// published twice within it runs once. Default 10m.
	DuplicateWindow time.Duration `yaml:"duplicate_window,omitempty"`
	// DeadLetterMaxAge is how long dead letters are kept. Default 7 days.
	DeadLetterMaxAge time.Duration `yaml:"dead_letter_max_age,omitempty"`
	// UsageMaxAge is how long hourly usage roll-ups are kept. Default 90
	// days.
	UsageMaxAge time.Duration `yaml:"usage_max_age,omitempty"`
	// MaxWaiting bounds the calls that may wait for admission in the
	// dispatchers, across all of them, and again the critical calls
	// (which have a lane of their own: see streams.CallsConfig); the
	// rest wait in stream SLUICE_CALLS. Default 100000.
	MaxWaiting int `yaml:"max_waiting,omitempty"`
	// ResponsesMaxAge is how long the gateways remember which deployment
	// holds a stored Responses API response (OpenAI keeps them 30 days).
	// Default 720h.
	ResponsesMaxAge time.Duration `yaml:"responses_max_age,omitempty"`
}

// Load reads, parses and validates the configuration file at path.
func Load(path string) (*Config, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("config: %w", err)
	}
	cfg, err := Parse(data)
	if err != nil {
		return nil, fmt.Errorf("config %s: %w", path, err)
	}
	return cfg, nil
}

// Pool returns the pool called name.
func (c *Config) Pool(name string) (*Pool, bool) {
	p, ok := c.Pools[name]
	return p, ok
}

// Deployment returns the deployment with id.
func (c *Config) Deployment(id string) (*Deployment, bool) {
	d, ok := c.deployments[id]
	return d, ok
}

// Regions lists the regions deployments are in, sorted.
func (c *Config) Regions() []string {
	seen := map[string]bool{}
	var out []string
	for _, d := range c.deployments {
		if !seen[d.Region] {
			seen[d.Region] = true
			out = append(out, d.Region)
		}
	}
	sort.Strings(out)
	return out
}

// Name is the pool's name.
func (p *Pool) Name() string { return p.name }

// Pool is the name of the pool the deployment serves.
func (d *Deployment) Pool() string { return d.pool }

// Live holds the configuration services use now. It is safe for concurrent
// use; Store swaps in a new, validated configuration for every reader, and
// Watch keeps it up to date with the configuration stored in KV.
type Live struct {
	p atomic.Pointer[liveValue]
}

// liveValue is a configuration and the KV revision it came from, swapped
// together.
type liveValue struct {
	cfg *Config
	rev uint64
}

// NewLive returns a Live holding c.
func NewLive(c *Config) *Live {
	l := &Live{}
	l.Store(c)
	return l
}

// Load returns the configuration in use.
func (l *Live) Load() *Config {
	if v := l.p.Load(); v != nil {
		return v.cfg
	}
	return nil
}

// Store makes c the configuration in use, as one that did not come from
// KV (revision 0).
func (l *Live) Store(c *Config) { l.StoreRevision(c, 0) }

// StoreRevision makes c, stored in KV at revision rev, the configuration
// in use.
func (l *Live) StoreRevision(c *Config, rev uint64) { l.p.Store(&liveValue{cfg: c, rev: rev}) }

// Revision is the KV revision of the configuration in use: 0 if it did not
// come from KV (a file, say).
func (l *Live) Revision() uint64 {
	if v := l.p.Load(); v != nil {
		return v.rev
	}
	return 0
}
