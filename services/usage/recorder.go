package usage

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"log/slog"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/sluicehq/sluice/messages"
	"github.com/sluicehq/sluice/services/config"
	"github.com/sluicehq/sluice/services/kvstate"
	"github.com/sluicehq/sluice/services/telemetry"
)

// FlushEvery is how often a Recorder merges its figures into the bucket.
const FlushEvery = 2 * time.Second

// Recorder collects one service's figures and merges them into the usage
// bucket. It is safe for concurrent use.
//
// Roll-ups take only names the configuration knows: a team, tier or pool
// (the model a call asked for) it does not know is recorded as
// config.Unknown, so that names a client makes up add no keys beyond one.
type Recorder struct {
	store   *kvstate.Store[Record]
	shared  *config.Live
	metrics *telemetry.Metrics
	log     *slog.Logger
	clock   func() time.Time

	mu      sync.Mutex
	pending map[string]*Record
	// dropped are the keys of this hour whose roll-ups the bucket
	// refused for good, logged once each.
	dropped map[string]bool
}

// RecorderConfig configures a Recorder.
type RecorderConfig struct {
	// Shared is the live configuration, whose teams and pools name the
	// roll-ups. Nil: every team and pool is config.Unknown.
	Shared *config.Live
	// Metrics counts the roll-ups that could not be merged
	// (UsageMergeFailures). Nil: a private set.
	Metrics *telemetry.Metrics
	// Log receives what could not be merged. Nil: discarded.
	Log *slog.Logger
	// Clock gives the hour of a roll-up. Nil: time.Now.
	Clock func() time.Time
}

// NewRecorder returns a Recorder writing to bucket kv.
func NewRecorder(kv jetstream.KeyValue, c RecorderConfig) *Recorder {
	if c.Clock == nil {
		c.Clock = time.Now
	}
	if c.Log == nil {
		c.Log = slog.New(slog.DiscardHandler)
	}
	if c.Metrics == nil {
		c.Metrics = telemetry.New(nil)
	}
	return &Recorder{store: newStore(kv), shared: c.Shared, metrics: c.Metrics, log: c.Log, clock: c.Clock,
		pending: map[string]*Record{}, dropped: map[string]bool{}}
}

// Result records a call's terminal result, under the pool of the model it
// asked for.
func (r *Recorder) Result(res *messages.Result) {
	var cfg *config.Config
	if r.shared != nil {
		cfg = r.shared.Load()
	}
	wait := time.Duration(res.Timings.QueuedMS * float64(time.Millisecond))
	target := config.DefaultTargetWait[res.Tier]
	if cfg != nil && res.Tier.Valid() && cfg.Tiers.Policy(res.Tier).TargetWait > 0 {
		target = cfg.Tiers.Policy(res.Tier).TargetWait
	}
	arrived := res.Timings.AcceptedAt
	if arrived.IsZero() {
		arrived = r.clock()
	}
	region := ""
	if res.Region != "" && res.Attempts > 0 {
		region = regionLabel(cfg, res.Deployment, res.Region)
	}
	r.with(res.Team, res.Model, res.Tier, func(rec *Record) {
		switch {
		case Unserved(res):
			rec.Unserved++
		case target > 0 && wait > target:
			rec.Late++
		}
		if rec.ByMinute == nil {
			rec.ByMinute = make([]int64, Minutes)
		}
		rec.ByMinute[arrived.UTC().Minute()]++
		if region != "" {
			if rec.Regions == nil {
				rec.Regions = map[string]int64{}
			}
			rec.Regions[region]++
		}
		rec.Calls++
		rec.Attempts += int64(res.Attempts)
		if res.Error == nil {
			rec.OK++
		} else {
			if rec.Errors == nil {
				rec.Errors = map[messages.Code]int64{}
			}
			rec.Errors[res.Error.Code]++
		}
		if u := res.Usage; u != nil {
			rec.PromptTokens += u.PromptTokens
			rec.CachedPromptTokens += u.CachedTokens()
			rec.CompletionTokens += u.CompletionTokens
			rec.TotalTokens += u.TotalTokens
		}
		rec.AddCost(res.Cost)
		rec.Wait.Observe(wait)
	})
}

// regionLabel is region if a deployment of cfg is in it (looked up by
// the result's deployment first: no walk of every pool for most
// results), else config.Unknown.
func regionLabel(cfg *config.Config, deployment, region string) string {
	if cfg != nil {
		if d, ok := cfg.Deployment(deployment); ok && d.Region == region {
			return region
		}
		for _, p := range cfg.Pools {
			for _, d := range p.Deployments {
				if d.Region == region {
					return region
				}
			}
		}
	}
	return config.Unknown
}

// Met429 records a provider 429 met by one of team's attempts.
func (r *Recorder) Met429(team, pool string, tier messages.Tier) {
	r.with(team, pool, tier, func(rec *Record) { rec.RateLimited++ })
}

func (r *Recorder) with(team, pool string, tier messages.Tier, f func(*Record)) {
	var cfg *config.Config
	if r.shared != nil {
		cfg = r.shared.Load()
	}
	team, pool, tier = cfg.TeamLabel(team), cfg.PoolLabel(pool), messages.Tier(config.TierLabel(tier))
	hour := r.clock().UTC().Truncate(time.Hour)
	key := recordKey(hour, team, pool, tier)
	r.mu.Lock()
	defer r.mu.Unlock()
	rec, ok := r.pending[key]
	if !ok {
		rec = &Record{Hour: hour, Team: team, Pool: pool, Tier: tier}
		r.pending[key] = rec
	}
	f(rec)
}

// recordKey names a roll-up: h<yyyymmddhh>.<team>.<tier>.<pool>, each name
// one key token (see keyToken). The value holds every field; the key only
// keeps roll-ups apart and lets a query pick hours by prefix.
func recordKey(hour time.Time, team, pool string, tier messages.Tier) string {
	return "h" + hour.Format("2006010215") + "." + keyToken(team) + "." + keyToken(string(tier)) + "." + keyToken(pool)
}

// maxToken bounds a key token: a longer encoding is replaced by a hash.
const maxToken = 128

// keyToken encodes name as one token of a KV key, so that every name makes
// a valid key and distinct names distinct keys. ASCII letters, digits, '-'
// and '_' stand for themselves (so team names, and pool names without a
// '.', read as they are), every other byte is '=' and its two hex digits
// in upper case ("gpt-4.1" is "gpt-4=2E1"), and the empty name is "=". An
// encoding longer than maxToken is "==" and the hex SHA-256 of the name
// instead: no other encoding begins "==".
func keyToken(name string) string {
	if name == "" {
		return "="
	}
	const hexDigits = "0123456789ABCDEF"
	var b strings.Builder
	for i := 0; i < len(name); i++ {
		c := name[i]
		if c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' || c == '_' {
			b.WriteByte(c)
			continue
		}
		b.WriteByte('=')
		b.WriteByte(hexDigits[c>>4])
		b.WriteByte(hexDigits[c&0xF])
	}
	if b.Len() > maxToken {
		sum := sha256.Sum256([]byte(name))
		return "==" + hex.EncodeToString(sum[:])
	}
	return b.String()
}

// Run flushes every FlushEvery until ctx ends, then once more.
func (r *Recorder) Run(ctx context.Context) {
	t := time.NewTicker(FlushEvery)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			flushCtx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			if err := r.Flush(flushCtx); err != nil {
				r.log.Warn("usage: last flush", "err", err)
			}
			return
		case <-t.C:
			if err := r.Flush(ctx); err != nil {
				r.log.Warn("usage: flush", "err", err)
			}
		}
	}
}

// Flush merges what was recorded into the bucket. What could not be
// merged for a reason that may pass (NATS unreachable, contention) is
// kept for the next flush, and returned as the error. What the bucket
// refuses for a reason retrying cannot fix (an invalid key, a value over
// its limit) is dropped: logged once per key and hour, and counted.
func (r *Recorder) Flush(ctx context.Context) error {
	r.mu.Lock()
	pending := r.pending
	r.pending = map[string]*Record{}
	r.mu.Unlock()
	var errs []error
	for key, rec := range pending {
		err := r.merge(ctx, key, rec)
		switch {
		case err == nil:
		case refused(err):
			r.metrics.UsageMergeFailures.WithLabelValues("dropped").Inc()
			r.mu.Lock()
			first := !r.dropped[key]
			r.dropped[key] = true
			r.mu.Unlock()
			if first {
				r.log.Error("usage: the bucket refuses this roll-up; dropping it", "key", key, "team", rec.Team, "pool", rec.Pool, "tier", rec.Tier, "calls", rec.Calls, "err", err)
			}
		default:
			r.metrics.UsageMergeFailures.WithLabelValues("retried").Inc()
			errs = append(errs, err)
			r.mu.Lock()
			if cur, ok := r.pending[key]; ok {
				rec.Add(cur)
			}
			r.pending[key] = rec
			r.mu.Unlock()
		}
	}
	r.forgetDropped()
	return errors.Join(errs...)
}

// forgetDropped forgets the dropped keys of past hours: no roll-up is
// recorded for them any more.
func (r *Recorder) forgetDropped() {
	current := "h" + r.clock().UTC().Format("2006010215") + "."
	r.mu.Lock()
	defer r.mu.Unlock()
	for key := range r.dropped {
		if !strings.HasPrefix(key, current) {
			delete(r.dropped, key)
		}
	}
}

// refused reports whether the bucket refused a write for a reason that
// retrying cannot fix.
func refused(err error) bool {
	if errors.Is(err, jetstream.ErrInvalidKey) || errors.Is(err, nats.ErrBadSubject) || errors.Is(err, nats.ErrMaxPayload) {
		return true
	}
	var api *jetstream.APIError
	if errors.As(err, &api) {
		switch api.ErrorCode {
		case jetstream.JSErrCodeStreamMessageExceedsMaximum, jetstream.JSErrCodeBadRequest:
			return true
		}
	}
	return false
}

// merge adds rec to the stored roll-up with compare-and-swap.
func (r *Recorder) merge(ctx context.Context, key string, rec *Record) error {
	_, err := r.store.Update(ctx, key, func(stored Record) (Record, bool, error) {
		merged := Record{Hour: rec.Hour, Team: rec.Team, Pool: rec.Pool, Tier: rec.Tier}
		merged.Add(&stored)
		merged.Add(rec)
		return merged, true, nil
	})
	return err
}

// newStore is the roll-ups in kv. A value nobody can read is replaced by
// the next merge rather than blocking the figures that keep coming.
func newStore(kv jetstream.KeyValue) *kvstate.Store[Record] {
	return kvstate.New(kv, kvstate.Codec[Record]{
		Encode: func(r Record) ([]byte, error) { return json.Marshal(r) },
		Decode: func(data []byte) (Record, error) {
			var r Record
			if json.Unmarshal(data, &r) != nil {
				return Record{}, nil
			}
			return r, nil
		},
	}, kvstate.Options{Name: "usage"})
}
