package usage

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"strings"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/sluicehq/sluice/messages"
)

// Total is one team's use of one pool at one tier over a span of hours
// (or one day of it, Day), with the queue-wait percentiles people ask
// for. Hour is the first hour with a roll-up.
type Total struct {
	Record
	// Day is the UTC day (2006-01-02) the total is of, when the query
	// was by day; "" for a total of the whole span.
	Day       string  `json:"day,omitempty"`
	WaitP50MS float64 `json:"wait_p50_ms"`
	WaitP99MS float64 `json:"wait_p99_ms"`
}

// Period is how a query splits its span.
type Period string

// The periods of a query.
const (
	// Whole adds up the whole span: one total per team, pool and tier.
	Whole Period = ""
	// Daily adds up each UTC day of the span apart.
	Daily Period = "day"
)

// Query adds up the roll-ups of the hours that overlap [since, until), per
// team, pool and tier, sorted.
func Query(ctx context.Context, kv jetstream.KeyValue, since, until time.Time) ([]Total, error) {
	return QueryBy(ctx, kv, since, until, Whole)
}

// QueryBy is Query with each period of the span added up apart (Daily:
// per UTC day, the first and last days holding only the hours of the span),
// sorted by period, then team, pool and tier.
func QueryBy(ctx context.Context, kv jetstream.KeyValue, since, until time.Time, by Period) ([]Total, error) {
	if by != Whole && by != Daily {
		return nil, fmt.Errorf("usage: unknown period %q (want %q)", by, Daily)
	}
	records, err := Records(ctx, kv, since, until)
	if err != nil {
		return nil, err
	}
	totals := map[string]*Total{}
	for i := range records {
		rec := &records[i]
		hour := rec.Hour
		var day string
		if by == Daily {
			day = hour.Format(time.DateOnly)
		}
		k := day + "\x00" + rec.Team + "\x00" + rec.Pool + "\x00" + string(rec.Tier)
		t, ok := totals[k]
		if !ok {
			t = &Total{Record: Record{Team: rec.Team, Pool: rec.Pool, Tier: rec.Tier, Hour: hour}, Day: day}
			totals[k] = t
		}
		t.Add(rec)
		if hour.Before(t.Hour) {
			t.Hour = hour
		}
	}
	out := make([]Total, 0, len(totals))
	for _, t := range totals {
		t.WaitP50MS = float64(t.Wait.Quantile(0.5)) / float64(time.Millisecond)
		t.WaitP99MS = float64(t.Wait.Quantile(0.99)) / float64(time.Millisecond)
		out = append(out, *t)
	}
	sort.Slice(out, func(i, j int) bool {
		a, b := out[i], out[j]
		if a.Day != b.Day {
			return a.Day < b.Day
		}
		if a.Team != b.Team {
			return a.Team < b.Team
		}
		if a.Pool != b.Pool {
			return a.Pool < b.Pool
		}
		return tierOrder(a.Tier) < tierOrder(b.Tier)
	})
	return out, nil
}

// Records returns the hourly roll-ups of the hours that overlap [since,
// until), each with its hour (from its key), unsorted: what a capacity
// plan reads (services/plan).
func Records(ctx context.Context, kv jetstream.KeyValue, since, until time.Time) ([]Record, error) {
	lister, err := kv.ListKeys(ctx)
	if err != nil {
		if errors.Is(err, jetstream.ErrNoKeysFound) {
			return nil, nil
		}
		return nil, fmt.Errorf("usage: list: %w", err)
	}
	first, last := since.UTC().Truncate(time.Hour), until.UTC()
	store := newStore(kv)
	var out []Record
	for key := range lister.Keys() {
		hour, ok := hourOf(key)
		if !ok || hour.Before(first) || !hour.Before(last) {
			continue
		}
		e, err := store.Get(ctx, key)
		if err != nil {
			return nil, err
		}
		if !e.Exists {
			continue
		}
		rec := e.Value
		rec.Hour = hour
		out = append(out, rec)
	}
	return out, nil
}

// hourOf reads the hour a roll-up key names. Only the hour is read from
// a key: the value holds every name, so keys written by older versions
// (names as they were, a pool's '.' included) read the same.
func hourOf(key string) (time.Time, bool) {
	stamp, _, ok := strings.Cut(strings.TrimPrefix(key, "h"), ".")
	if !ok || !strings.HasPrefix(key, "h") {
		return time.Time{}, false
	}
	t, err := time.Parse("2006010215", stamp)
	return t, err == nil
}

// tierOrder sorts the tiers highest first, and an unknown one last.
func tierOrder(t messages.Tier) int {
	if r := t.Rank(); r >= 0 {
		return r
	}
	return len(messages.Tiers)
}
