package usage

import (
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/sluicehq/sluice/messages"
	"github.com/sluicehq/sluice/services/kvstate"
)

// FlushEvery is how often a Recorder merges its figures into the bucket.
const FlushEvery = 2 * time.Second

// Recorder collects one service's figures and merges them into the usage
// bucket. It is safe for concurrent use.
type Recorder struct {
	store *kvstate.Store[Record]
	log   *slog.Logger
	clock func() time.Time

	mu      sync.Mutex
	pending map[string]*Record
}

// NewRecorder returns a Recorder writing to bucket kv. clock may be nil
// for time.Now.
func NewRecorder(kv jetstream.KeyValue, log *slog.Logger, clock func() time.Time) *Recorder {
	if clock == nil {
		clock = time.Now
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Recorder{store: newStore(kv), log: log, clock: clock, pending: map[string]*Record{}}
}

// Result records a call's terminal result.
func (r *Recorder) Result(res *messages.Result) {
	r.with(res.Team, res.Model, res.Tier, func(rec *Record) {
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
			rec.CompletionTokens += u.CompletionTokens
			rec.TotalTokens += u.TotalTokens
		}
		rec.Wait.Observe(time.Duration(res.Timings.QueuedMS * float64(time.Millisecond)))
	})
}

// Met429 records a provider 429 met by one of team's attempts.
func (r *Recorder) Met429(team, pool string, tier messages.Tier) {
	r.with(team, pool, tier, func(rec *Record) { rec.RateLimited++ })
}

func (r *Recorder) with(team, pool string, tier messages.Tier, f func(*Record)) {
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

// recordKey names a roll-up. The value holds every field; the key only
// keeps roll-ups apart and lets a query pick hours by prefix.
func recordKey(hour time.Time, team, pool string, tier messages.Tier) string {
	return "h" + hour.Format("2006010215") + "." + team + "." + string(tier) + "." + kvSafe(pool)
}

// kvSafe keeps pool names (already limited to letters, digits, '.', '-'
// and '_') within KV key characters, whatever an older configuration held.
func kvSafe(s string) string {
	return strings.Map(func(r rune) rune {
		if r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '.' || r == '-' || r == '_' {
			return r
		}
		return '_'
	}, s)
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
// merged is kept for the next flush.
func (r *Recorder) Flush(ctx context.Context) error {
	r.mu.Lock()
	pending := r.pending
	r.pending = map[string]*Record{}
	r.mu.Unlock()
	var errs []error
	for key, rec := range pending {
		if err := r.merge(ctx, key, rec); err != nil {
			errs = append(errs, err)
			r.mu.Lock()
			if cur, ok := r.pending[key]; ok {
				rec.Add(cur)
			}
			r.pending[key] = rec
			r.mu.Unlock()
		}
	}
	return errors.Join(errs...)
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
