package budget_test

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/sluicehq/sluice/messages"
	"github.com/sluicehq/sluice/services/budget"
	"github.com/sluicehq/sluice/services/config"
	"github.com/sluicehq/sluice/services/streams"
	"github.com/sluicehq/sluice/test/natstest"
)

// syncClock is a manual clock that goroutines may read.
type syncClock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *syncClock) now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *syncClock) set(t time.Time) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = t
}

// ensure creates sluice's streams and buckets on srv, as a dispatcher
// does.
func ensure(t *testing.T, srv *server.Server) {
	t.Helper()
	js, err := jetstream.New(natstest.Connect(t, srv))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := streams.Ensure(t.Context(), js, config.Streams{Replicas: 1, ResultsMaxAge: time.Hour, DuplicateWindow: time.Minute, DeadLetterMaxAge: time.Hour, UsageMaxAge: time.Hour, ResponsesMaxAge: time.Hour, MaxWaiting: 1000}); err != nil {
		t.Fatal(err)
	}
}

// dispatcher is one dispatcher's Ledger: its own NATS connection, its
// own store and cache, as another process would have.
func dispatcher(t *testing.T, srv *server.Server, clock func() time.Time, loc *time.Location, watch bool) *budget.Ledger {
	t.Helper()
	js, err := jetstream.New(natstest.Connect(t, srv))
	if err != nil {
		t.Fatal(err)
	}
	kv, err := js.KeyValue(t.Context(), messages.BucketBudget)
	if err != nil {
		t.Fatal(err)
	}
	l := budget.NewLedger(kv, budget.Options{Clock: clock, Location: func() *time.Location { return loc }})
	if watch {
		if err := l.Start(t.Context()); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(l.Stop)
	}
	return l
}

// Several dispatchers (connections, stores, goroutines of their own)
// reserve at once against a team budget in a pool set just above N
// calls' worst case: exactly N are admitted, what is reserved never
// goes above the budget, and the team's own scope, which had room, holds
// exactly the N calls: every refusal by the pool's budget released what
// the team's had taken. Settling then frees what was not spent.
func TestConcurrentDispatchersAdmitExactlyN(t *testing.T) {
	srv := natstest.Start(t)
	ensure(t, srv)
	c := &syncClock{t: time.Date(2026, 12, 4, 10, 0, 0, 0, time.UTC)}
	const n = 25
	need := budget.Amount{Tokens: 1000, Micros: 20_000}
	team := budget.Charge{Scope: budget.Scope{Team: "search"}, Limits: budget.Limits{Month: budget.Amount{Tokens: 1e9, Micros: 1e12}}}
	pool := budget.Charge{Scope: budget.Scope{Team: "search", Pool: "gpt-4o"},
		Limits: budget.Limits{Day: budget.Amount{Tokens: n*1000 + 999}, Month: budget.Amount{Micros: n*20_000 + 19_999}}}
	var ledgers []*budget.Ledger
	for i := range 4 {
		ledgers = append(ledgers, dispatcher(t, srv, c.now, time.UTC, i%2 == 0))
	}
	ctx, cancel := context.WithTimeout(t.Context(), 60*time.Second)
	defer cancel()
	var admitted, refused atomic.Int64
	holds := make(chan budget.Hold, 100)
	var wg sync.WaitGroup
	errs := make(chan error, 100)
	for i := range 12 {
		l := ledgers[i%len(ledgers)]
		wg.Go(func() {
			for range 5 {
				h, err := l.Reserve(ctx, []budget.Charge{team, pool}, need)
				var r *budget.Refusal
				switch {
				case errors.As(err, &r):
					refused.Add(1)
					if r.Scope != pool.Scope {
						errs <- errors.New("refused by " + r.Scope.String())
					}
				case err != nil:
					errs <- err
				default:
					admitted.Add(1)
					holds <- h
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	close(holds)
	for err := range errs {
		t.Fatal(err)
	}
	if admitted.Load() != n || refused.Load() != 60-n {
		t.Fatalf("admitted %d and refused %d of 60, want exactly %d admitted", admitted.Load(), refused.Load(), n)
	}
	reader := dispatcher(t, srv, c.now, time.UTC, false)
	ps, err := reader.State(ctx, pool.Scope)
	if err != nil {
		t.Fatal(err)
	}
	if ps.Day.Reserved.Tokens != n*1000 || ps.Month.Reserved.Micros != n*20_000 || ps.Day.Admitted != n {
		t.Fatalf("the pool's count: %+v", ps)
	}
	if ps.Day.Committed().Tokens > pool.Limits.Day.Tokens || ps.Month.Committed().Micros > pool.Limits.Month.Micros {
		t.Fatalf("overspent: %+v against %+v", ps, pool.Limits)
	}
	ts, err := reader.State(ctx, team.Scope)
	if err != nil {
		t.Fatal(err)
	}
	if ts.Month.Reserved != (budget.Amount{Tokens: n * 1000, Micros: n * 20_000}) {
		t.Fatalf("the team's count holds %+v, want exactly the %d admitted calls: refusals by the pool must release the team's part", ts.Month.Reserved, n)
	}
	// Settle every call at half its worst case, from any dispatcher: the
	// pool's budget has room for more again.
	i := 0
	for h := range holds {
		if _, err := ledgers[i%len(ledgers)].Settle(ctx, h, &budget.Amount{Tokens: 500, Micros: 10_000}); err != nil {
			t.Fatal(err)
		}
		i++
	}
	ps, _ = reader.State(ctx, pool.Scope)
	if !ps.Day.Reserved.IsZero() || ps.Day.Spent.Tokens != n*500 || ps.Month.Spent.Micros != n*10_000 {
		t.Fatalf("after settling: %+v", ps)
	}
	if _, err := ledgers[0].Reserve(ctx, []budget.Charge{team, pool}, need); err != nil {
		t.Fatalf("after settling at half, a call does not fit: %v", err)
	}
}

// Settling through the KV: less than reserved frees the rest, more is
// charged in full with its excess shown, no usage charges the
// reservation; a threshold crossed is reported by the one settlement
// that crossed it; a release charges nothing.
func TestSettleThroughTheKV(t *testing.T) {
	srv := natstest.Start(t)
	ensure(t, srv)
	c := &syncClock{t: time.Date(2026, 12, 4, 10, 0, 0, 0, time.UTC)}
	a, b := dispatcher(t, srv, c.now, time.UTC, true), dispatcher(t, srv, c.now, time.UTC, false)
	ctx := t.Context()
	ch := []budget.Charge{{Scope: budget.Scope{Team: "t"}, Limits: budget.Limits{Day: budget.Amount{Tokens: 10_000}}, WarnAt: []float64{0.5}}}
	need := budget.Amount{Tokens: 3000}
	h1, err := a.Reserve(ctx, ch, need)
	if err != nil {
		t.Fatal(err)
	}
	h2, err := b.Reserve(ctx, ch, need)
	if err != nil {
		t.Fatal(err)
	}
	h3, err := a.Reserve(ctx, ch, need)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := b.Reserve(ctx, ch, need); !errors.Is(err, budget.ErrExhausted) {
		t.Fatalf("a fourth call of 3000 in 10000: %v", err)
	}
	st, err := b.Settle(ctx, h1, &budget.Amount{Tokens: 1000}) // less
	if err != nil || len(st.Crossed()) != 0 {
		t.Fatal(err, st)
	}
	st, err = a.Settle(ctx, h2, &budget.Amount{Tokens: 4500}) // more: 5500 spent crosses 0.5
	if err != nil {
		t.Fatal(err)
	}
	if st.Scopes[0].Over.Tokens != 1500 || len(st.Crossed()) != 1 || st.Crossed()[0].Scope.Team != "t" || st.Crossed()[0].Threshold != 0.5 {
		t.Fatalf("settled more: %+v, crossed %+v", st, st.Crossed())
	}
	st, err = b.Settle(ctx, h3, nil) // no usage
	if err != nil || !st.Scopes[0].Estimated || st.Scopes[0].Charged != need || len(st.Crossed()) != 0 {
		t.Fatalf("settled without usage: %+v %v", st, err)
	}
	h4, err := a.Reserve(ctx, ch, budget.Amount{Tokens: 1500})
	if err != nil {
		t.Fatal(err)
	}
	if err := b.Release(ctx, h4); err != nil {
		t.Fatal(err)
	}
	s, err := b.State(ctx, ch[0].Scope)
	if err != nil {
		t.Fatal(err)
	}
	if s.Day.Spent.Tokens != 1000+4500+3000 || s.Day.Over.Tokens != 1500 || !s.Day.Reserved.IsZero() || s.Day.Warned != 0.5 {
		t.Fatalf("count %+v", s.Day)
	}
	// 8500 spent: 1500 fit, 1501 do not.
	if _, err := a.Reserve(ctx, ch, budget.Amount{Tokens: 1501}); !errors.Is(err, budget.ErrExhausted) {
		t.Fatalf("1501 more: %v", err)
	}
	if _, err := b.Reserve(ctx, ch, budget.Amount{Tokens: 1500}); err != nil {
		t.Fatalf("1500 more: %v", err)
	}
}

// A month's budget that is spent in Paris admits again at midnight of
// the first in Paris, on a manual clock, while it is still the last day
// of the month in UTC; the refusal said when.
func TestMonthResetsInTheBudgetsZone(t *testing.T) {
	srv := natstest.Start(t)
	ensure(t, srv)
	paris := zone(t, "Europe/Paris")
	c := &syncClock{t: time.Date(2026, 12, 31, 20, 0, 0, 0, time.UTC)}
	a, b := dispatcher(t, srv, c.now, paris, true), dispatcher(t, srv, c.now, paris, true)
	ctx := t.Context()
	ch := []budget.Charge{{Scope: budget.Scope{Team: "t", Pool: "gpt-4.1"}, Limits: budget.Limits{Month: budget.Amount{Micros: 1_000_000}}}}
	h, err := a.Reserve(ctx, ch, budget.Amount{Micros: 600_000})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := a.Settle(ctx, h, &budget.Amount{Micros: 900_000}); err != nil {
		t.Fatal(err)
	}
	c.set(time.Date(2026, 12, 31, 22, 59, 59, 0, time.UTC)) // 23:59:59 in Paris
	_, err = b.Reserve(ctx, ch, budget.Amount{Micros: 200_000})
	var r *budget.Refusal
	if !errors.As(err, &r) || !r.Money || r.Spent.Micros != 900_000 || r.Limit.Micros != 1_000_000 || r.Scope != ch[0].Scope ||
		!r.ResetsAt().Equal(time.Date(2026, 12, 31, 23, 0, 0, 0, time.UTC)) {
		t.Fatalf("before midnight in Paris: %v (%+v)", err, r)
	}
	t.Log(err)
	c.set(time.Date(2026, 12, 31, 23, 0, 0, 0, time.UTC)) // midnight in Paris, 2027
	if _, err := b.Reserve(ctx, ch, budget.Amount{Micros: 1_000_000}); err != nil {
		t.Fatalf("at midnight in Paris: %v", err)
	}
	// b wrote last: its cache has it (a's watcher may be a moment behind).
	s, err := b.State(ctx, ch[0].Scope)
	if err != nil {
		t.Fatal(err)
	}
	if s.Month.Period != "2027-01" || s.Month.Reserved.Micros != 1_000_000 || !s.Month.Spent.IsZero() || s.PrevMonth.Period != "2026-12" || s.PrevMonth.Spent.Micros != 900_000 {
		t.Fatalf("after the reset: %+v", s)
	}
}

// A count nobody can read is an error that names it, never a fresh
// budget.
func TestUnreadableCount(t *testing.T) {
	srv := natstest.Start(t)
	ensure(t, srv)
	js, _ := jetstream.New(natstest.Connect(t, srv))
	kv, _ := js.KeyValue(t.Context(), messages.BucketBudget)
	scope := budget.Scope{Team: "t"}
	if _, err := kv.Put(t.Context(), scope.Key(), []byte("not json")); err != nil {
		t.Fatal(err)
	}
	l := dispatcher(t, srv, time.Now, time.UTC, false)
	_, err := l.Reserve(t.Context(), []budget.Charge{{Scope: scope, Limits: budget.Limits{Day: budget.Amount{Tokens: 10}}}}, budget.Amount{Tokens: 1})
	if !errors.Is(err, budget.ErrUnreadable) {
		t.Fatalf("reserve on an unreadable count: %v", err)
	}
	if _, err := l.State(t.Context(), scope); !errors.Is(err, budget.ErrUnreadable) {
		t.Fatalf("state of an unreadable count: %v", err)
	}
	// The others are listed all the same.
	other := budget.Scope{Team: "u", Pool: "gpt-4.1"}
	if _, err := l.Reserve(t.Context(), []budget.Charge{{Scope: other}}, budget.Amount{Tokens: 7}); err != nil {
		t.Fatal(err)
	}
	states, err := l.States(t.Context())
	if !errors.Is(err, budget.ErrUnreadable) || len(states) != 1 || states[other].Day.Reserved.Tokens != 7 {
		t.Fatalf("states: %+v, %v", states, err)
	}
}

// Keys name their scopes and back; pool names may hold dots.
func TestScopeKeys(t *testing.T) {
	for _, s := range []budget.Scope{{Team: "search"}, {Team: "search", Pool: "gpt-4o"}, {Team: "a_b-c", Pool: "gpt-4.1.mini"}} {
		got, ok := budget.ScopeOfKey(s.Key())
		if !ok || got != s {
			t.Errorf("%s: %+v %v", s.Key(), got, ok)
		}
	}
	for _, k := range []string{"", "team.", "team.a.b", "pool.a", "pool..m", "pool.a.", "other.a"} {
		if s, ok := budget.ScopeOfKey(k); ok {
			t.Errorf("%q is scope %+v", k, s)
		}
	}
}

// A refusal is never made on a stale view: a dispatcher whose watched
// cache is a moment behind another's release confirms its refusal on
// the stored count, and admits the call that fits.
func TestNoRefusalOnAStaleCache(t *testing.T) {
	srv := natstest.Start(t)
	ensure(t, srv)
	c := &syncClock{t: time.Date(2026, 12, 4, 10, 0, 0, 0, time.UTC)}
	a, b := dispatcher(t, srv, c.now, time.UTC, true), dispatcher(t, srv, c.now, time.UTC, true)
	ctx := t.Context()
	ch := []budget.Charge{{Scope: budget.Scope{Team: "t"}, Limits: budget.Limits{Day: budget.Amount{Tokens: 1000}}}}
	for i := range 100 {
		h, err := a.Reserve(ctx, ch, budget.Amount{Tokens: 1000})
		if err != nil {
			t.Fatalf("round %d: %v", i, err)
		}
		if err := b.Release(ctx, h); err != nil {
			t.Fatal(err)
		}
	}
}

// A hold whose settlement never comes (its dispatcher is gone) is
// charged at its worst case once its hour of expiry has come, and the
// budget it held is free again for others.
func TestHoldOfADeadDispatcherExpires(t *testing.T) {
	srv := natstest.Start(t)
	ensure(t, srv)
	c := &syncClock{t: time.Date(2026, 12, 4, 10, 0, 0, 0, time.UTC)}
	dead, alive := dispatcher(t, srv, c.now, time.UTC, false), dispatcher(t, srv, c.now, time.UTC, true)
	ctx := t.Context()
	ch := []budget.Charge{{Scope: budget.Scope{Team: "t", Pool: "m"}, Limits: budget.Limits{Day: budget.Amount{Tokens: 1000}}}}
	if _, err := dead.ReserveUntil(ctx, ch, budget.Amount{Tokens: 800}, c.now().Add(5*time.Minute)); err != nil {
		t.Fatal(err)
	}
	if _, err := alive.ReserveUntil(ctx, ch, budget.Amount{Tokens: 800}, c.now().Add(5*time.Minute)); !errors.Is(err, budget.ErrExhausted) {
		t.Fatalf("while the dead dispatcher's hold stands: %v", err)
	}
	c.set(time.Date(2026, 12, 4, 11, 0, 0, 0, time.UTC))
	s, err := alive.State(ctx, ch[0].Scope)
	if err != nil || s.Day.Expired.Tokens != 800 || s.Day.Spent.Tokens != 800 || !s.Day.Reserved.IsZero() {
		t.Fatalf("after its expiry: %+v %v", s.Day, err)
	}
	// Charged at its worst case: 200 of the day are left.
	if _, err := alive.Reserve(ctx, ch, budget.Amount{Tokens: 200}); err != nil {
		t.Fatal(err)
	}
}
