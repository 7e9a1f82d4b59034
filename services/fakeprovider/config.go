package fakeprovider

import (
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"net/http"
	"slices"
	"time"
)

// Defaults applied by New to the zero fields of a Config.
const (
	DefaultQuantum          = time.Second
	DefaultMaxTokens        = 256
	DefaultCompletionTokens = 16
	DefaultDimensions       = 8
)

// Values of Config.RateLimitBody.
const (
	// RateLimitBodyGemini answers 429s with Google's error object.
	RateLimitBodyGemini = "gemini"
	// RateLimitBodyGeminiArray wraps it in a one-element array, as some of
	// Google's OpenAI-compatible endpoints do.
	RateLimitBodyGeminiArray = "gemini-array"
)

// Bounds on configured and requested sizes. They keep every bucket level
// inside an int64 in fixed point (see unitsPerToken) and are far above
// anything a real provider grants or a real model accepts.
const (
	maxLimit      = 100_000_000_000 // per minute, requests or tokens
	maxTokenParam = 1 << 20         // max_tokens, CompletionTokens, DefaultMaxTokens
	maxDimensions = 4096
	maxChoices    = 128
)

// KeyConfig is what one API key is allowed.
type KeyConfig struct {
	// RPM is the key's requests per minute. Zero means no request limit;
	// the x-ratelimit-*-requests headers are then left out, as providers
	// do for a dimension they do not meter.
	RPM int64 `json:"rpm"`
	// TPM is the key's tokens per minute, charged at admission (see the
	// package documentation). Zero means no token limit.
	TPM int64 `json:"tpm"`
	// InsufficientQuota makes every call on the key answer 429 with code
	// insufficient_quota: the billing quota is spent and no retry helps.
	InsufficientQuota bool `json:"insufficient_quota"`

	// Enforce overrides Config.Enforce for this key: EnforceBucket,
	// EnforceWindows, or "" for the Config's.
	Enforce string `json:"enforce,omitempty"`
	// Windows, when set, are this key's windows in place of
	// Config.Windows; only for a key that enforces windows.
	Windows []Window `json:"windows,omitempty"`
	// RetryAfter overrides Config.RetryAfter for this key; only for a key
	// that enforces windows.
	RetryAfter string `json:"retry_after,omitempty"`
	// OtherUse is the share, in [0, 1), of every limit of the key used by
	// a consumer sluice cannot see (another tool, a colleague's script):
	// the key admits only the rest, 1-OtherUse of each rate and capacity
	// in either model (rounded down, at a millionth's resolution), while
	// its rate-limit headers still report the configured limits and
	// remaining counts what is left of the reduced capacity, as a
	// provider counting the other consumer's calls would.
	OtherUse float64 `json:"other_use,omitempty"`
}

// validate checks the key's fields on their own; Config.validateKey checks
// them against the Config's defaults.
func (k KeyConfig) validate() error {
	var errs []error
	if k.RPM < 0 || k.RPM > maxLimit {
		errs = append(errs, fmt.Errorf("rpm %d outside 0..%d", k.RPM, int64(maxLimit)))
	}
	if k.TPM < 0 || k.TPM > maxLimit {
		errs = append(errs, fmt.Errorf("tpm %d outside 0..%d", k.TPM, int64(maxLimit)))
	}
	if !(k.OtherUse >= 0 && k.OtherUse < 1) { // also refuses NaN
		errs = append(errs, fmt.Errorf("other_use %v outside [0, 1)", k.OtherUse))
	}
	if err := validateEnforce("enforce", k.Enforce); err != nil {
		errs = append(errs, err)
	}
	if err := validateRetryAfter("retry_after", k.RetryAfter); err != nil {
		errs = append(errs, err)
	}
	if err := validateWindows("windows", k.Windows); err != nil {
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}

// validateKey checks kc on its own and, if that holds, resolved against
// c's defaults, which must be valid.
func (c Config) validateKey(kc KeyConfig) error {
	if err := kc.validate(); err != nil {
		return err
	}
	_, err := c.keyModel(kc)
	return err
}

// validateEnforcement checks the Config's own enforcement fields.
func (c Config) validateEnforcement() error {
	var errs []error
	if err := validateEnforce("config.Enforce", c.Enforce); err != nil {
		errs = append(errs, err)
	}
	if err := validateRetryAfter("config.RetryAfter", c.RetryAfter); err != nil {
		errs = append(errs, err)
	}
	if err := validateWindows("config.Windows", c.Windows); err != nil {
		errs = append(errs, err)
	}
	for i, d := range c.CountSpans {
		if d < minSpan || d > maxSpan {
			errs = append(errs, fmt.Errorf("config.CountSpans[%d] %v outside %v..%v", i, d, minSpan, maxSpan))
		}
	}
	return errors.Join(errs...)
}

// Config configures a Server. The zero value of every field but Keys and
// AcceptAnyKey is usable: New fills in the defaults documented here.
type Config struct {
	// Keys maps an API key (the bearer token) to its limits. Keys appear
	// as they are in Stats and /fake/stats: they are the fake's own, not
	// secrets.
	Keys map[string]KeyConfig
	// AcceptAnyKey admits keys missing from Keys with DefaultKey's limits.
	// Each distinct key still gets buckets of its own, as each real key
	// would. Without it an unknown key is answered 401.
	AcceptAnyKey bool
	// DefaultKey holds the limits of keys admitted by AcceptAnyKey.
	DefaultKey KeyConfig

	// Enforce is how keys' limits are enforced, unless a key says
	// otherwise: EnforceBucket (the default, "") or EnforceWindows. See the
	// package documentation.
	Enforce string
	// Windows are the sliding windows of keys that enforce windows and
	// give none of their own. Default: one window of DefaultWindowSpan
	// (1m) with the limits derived from the key's RPM and TPM.
	Windows []Window
	// RetryAfter is the retry hint of a window's refusal: RetryAfterFit
	// (the default, "") or RetryAfterReset. Buckets always hint a fit.
	RetryAfter string
	// CountSpans are the spans, besides 1s, 60s and those of the
	// configured windows, that MaxRequestsIn answers for.
	CountSpans []time.Duration

	// Quantum is the period over which limits are enforced: a bucket holds
	// limit*Quantum/1m and refills at limit/1m. Default 1s, which refuses a
	// burst of more than a sixtieth of the minute's limit as real providers
	// do; 1m gives plain per-minute buckets. At most 1m, microsecond
	// precision.
	Quantum time.Duration
	// DefaultMaxTokens is the completion allowance charged at admission for
	// a chat request that sets neither max_tokens nor
	// max_completion_tokens. Default 256.
	DefaultMaxTokens int64
	// CompletionTokens is how many tokens each choice "generates" before
	// stopping on its own; max_tokens can only cut it shorter. Default 16.
	CompletionTokens int64
	// Dimensions is the length of embedding vectors when the request does
	// not ask for one. Default 8.
	Dimensions int
	// Models, when set, is the list served by GET /v1/models, and a call
	// naming another model gets 404 model_not_found. When empty, any model
	// name is accepted and the list is empty.
	Models []string

	// Latency is added to every admitted call before it is answered.
	Latency time.Duration
	// LatencyJitter adds a uniformly drawn extra delay in [0, LatencyJitter).
	LatencyJitter time.Duration
	// ErrorRate is the fraction (0..1) of admitted calls answered with an
	// injected server error instead of a result.
	ErrorRate float64
	// ErrorStatus is the status of injected errors: 500 to 599, or 0 to
	// alternate 500 and 503.
	ErrorStatus int
	// TimeoutRate is the fraction (0..1) of admitted calls that hang until
	// the client gives up, to simulate a provider timing out.
	TimeoutRate float64
	// OverloadRate is the fraction (0..1) of admitted calls answered as
	// overloaded: the provider is busy, which says nothing of the key's
	// limits. Anthropic answers 529 overloaded_error, the OpenAI dialects
	// 503. Drawn after ErrorRate; the tokens are refunded.
	OverloadRate float64
	// RateLimitBody, when RateLimitBodyGemini or RateLimitBodyGeminiArray,
	// makes every 429 of a rate limit answer as Google's APIs do, in any
	// dialect: a RESOURCE_EXHAUSTED body whose RetryInfo gives the wait in
	// whole seconds ("17s"), and no rate-limit or retry-after headers. The
	// default "" answers in the dialect's own way.
	RateLimitBody string
	// ChunkDelay is the pause before each streamed chunk after the first;
	// in a Messages stream, before each content_block_delta after the
	// first, the other events coming at once.
	ChunkDelay time.Duration

	// Clock drives the buckets and the statistics windows. Default
	// time.Now; tests inject a manual clock. Latency and chunk delays are
	// real waits regardless, since they exist to be felt by clients.
	Clock func() time.Time
	// Seed seeds the generator behind ErrorRate, TimeoutRate and
	// LatencyJitter, so that a run is reproducible. The same seed and the
	// same sequence of calls give the same faults.
	Seed uint64
	// Logger receives one debug record per call. Default: discard.
	Logger *slog.Logger
	// Arrived, when set, is called as each request to a metered endpoint
	// arrives, with its X-Client-Request-Id ("" when it has none) and the
	// Clock's reading its admission counts at, so that a benchmark can
	// tell how late after its send time a request reached the provider.
	// It runs on the request's goroutine: it must be quick.
	Arrived func(clientRequestID string, at time.Time)
	// Wrap, when set, wraps the handler Serve serves, so that a test may
	// watch the HTTP boundary itself: every request as it arrives and what
	// the provider answered it.
	Wrap func(http.Handler) http.Handler
}

// withDefaults returns a copy of c with its zero fields defaulted and its
// maps and slices copied, so that the caller may reuse c freely.
func (c Config) withDefaults() Config {
	if c.Quantum == 0 {
		c.Quantum = DefaultQuantum
	}
	if c.DefaultMaxTokens == 0 {
		c.DefaultMaxTokens = DefaultMaxTokens
	}
	if c.CompletionTokens == 0 {
		c.CompletionTokens = DefaultCompletionTokens
	}
	if c.Dimensions == 0 {
		c.Dimensions = DefaultDimensions
	}
	if c.Clock == nil {
		c.Clock = time.Now
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	keys := make(map[string]KeyConfig, len(c.Keys))
	for k, v := range c.Keys {
		keys[k] = v.clone()
	}
	c.Keys = keys
	c.DefaultKey = c.DefaultKey.clone()
	c.Models = append([]string(nil), c.Models...)
	c.Windows = append([]Window(nil), c.Windows...)
	c.CountSpans = append([]time.Duration(nil), c.CountSpans...)
	return c
}

// clone copies kc's slices, so that the caller may reuse them.
func (kc KeyConfig) clone() KeyConfig {
	if kc.Windows != nil {
		kc.Windows = append([]Window(nil), kc.Windows...)
	}
	return kc
}

// validate reports every problem of a defaulted Config at once.
func (c Config) validate() error {
	var errs []error
	if len(c.Keys) == 0 && !c.AcceptAnyKey {
		errs = append(errs, errors.New("no Keys and AcceptAnyKey is false: every call would be refused"))
	}
	// Keys are checked against the Config's enforcement only when that is
	// valid: a key's windows derived from a bad span would say nothing
	// more.
	enforcement := c.validateEnforcement()
	if enforcement != nil {
		errs = append(errs, enforcement)
	}
	validateKey := func(kc KeyConfig) error {
		if enforcement != nil {
			return kc.validate()
		}
		return c.validateKey(kc)
	}
	for _, k := range slices.Sorted(maps.Keys(c.Keys)) {
		if k == "" {
			errs = append(errs, errors.New("config.Keys: empty key"))
			continue
		}
		if err := validateKey(c.Keys[k]); err != nil {
			errs = append(errs, fmt.Errorf("config.Keys[%s]: %w", redact(k), err))
		}
	}
	if err := validateKey(c.DefaultKey); err != nil {
		errs = append(errs, fmt.Errorf("config.DefaultKey: %w", err))
	}
	if c.Quantum < time.Microsecond || c.Quantum > time.Minute {
		errs = append(errs, fmt.Errorf("config.Quantum %v outside 1µs..1m", c.Quantum))
	}
	if c.DefaultMaxTokens < 1 || c.DefaultMaxTokens > maxTokenParam {
		errs = append(errs, fmt.Errorf("config.DefaultMaxTokens %d outside 1..%d", c.DefaultMaxTokens, maxTokenParam))
	}
	if c.CompletionTokens < 1 || c.CompletionTokens > maxTokenParam {
		errs = append(errs, fmt.Errorf("config.CompletionTokens %d outside 1..%d", c.CompletionTokens, maxTokenParam))
	}
	if c.Dimensions < 1 || c.Dimensions > maxDimensions {
		errs = append(errs, fmt.Errorf("config.Dimensions %d outside 1..%d", c.Dimensions, maxDimensions))
	}
	switch c.RateLimitBody {
	case "", RateLimitBodyGemini, RateLimitBodyGeminiArray:
	default:
		errs = append(errs, fmt.Errorf("config.RateLimitBody %q is none of \"\", %q, %q", c.RateLimitBody, RateLimitBodyGemini, RateLimitBodyGeminiArray))
	}
	for _, m := range c.Models {
		if m == "" {
			errs = append(errs, errors.New("config.Models: empty model name"))
		}
	}
	if err := c.behavior().validate(); err != nil {
		errs = append(errs, err)
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("fakeprovider: invalid config: %w", err)
	}
	return nil
}
