// Package status owns the live view of a running sluice that `sluice
// status` shows: what every dispatcher holds (announced on
// sluice.dispatchers.state), and the shared state in KV (configuration,
// deployments' send schedules, what providers taught, what teams spent of
// their budgets), gathered into one Snapshot.
//
// A deployment's headroom is what its schedule in KV could send at once
// against the pace the dispatchers send it at (pace.Of): status measures
// it with the dispatchers' own pace, reading only KV and announcements.
package status

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"slices"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/sluicehq/sluice/messages"
	"github.com/sluicehq/sluice/services/budget"
	"github.com/sluicehq/sluice/services/config"
	"github.com/sluicehq/sluice/services/health"
	"github.com/sluicehq/sluice/services/limiter"
	"github.com/sluicehq/sluice/services/pace"
)

// Snapshot is sluice's state at one moment.
type Snapshot struct {
	At             time.Time    `json:"at"`
	ConfigRevision uint64       `json:"config_revision"`
	Dispatchers    []Dispatcher `json:"dispatchers"`
	Queues         []Queue      `json:"queues"`
	Deployments    []Deployment `json:"deployments"`
	WaitingTotal   int          `json:"waiting_total"`
	// Budgets are the bounds of the teams' budgets in their current day
	// and month; none when no team has one.
	Budgets []Budget `json:"budgets,omitempty"`
}

// Budget is one bound of a team's budget: its day or its month, in
// tokens or in money, over every pool (Pool empty) or in one pool.
type Budget struct {
	Team string `json:"team"`
	Pool string `json:"pool,omitempty"`
	// Period is "day" or "month", PeriodID the current one ("2026-12-04",
	// "2026-12") in budgets.time_zone.
	Period   string `json:"period"`
	PeriodID string `json:"period_id"`
	// Unit is "tokens" or the currency.
	Unit string `json:"unit"`
	// Limit is the budget; Spent what settled calls spent; Reserved the
	// worst case of calls admitted and not finished; Over what providers
	// charged beyond calls' reservations (part of Spent).
	Limit    float64 `json:"limit"`
	Spent    float64 `json:"spent"`
	Reserved float64 `json:"reserved"`
	Over     float64 `json:"over,omitempty"`
	// Used is Spent / Limit.
	Used float64 `json:"used"`
	// State is "ok"; "warning" once Spent passed the lowest soft
	// threshold (budgets.warn_at), Detail saying which; or "exhausted"
	// when Spent and Reserved leave no room.
	State    string    `json:"state"`
	Detail   string    `json:"detail,omitempty"`
	ResetsAt time.Time `json:"resets_at"`
}

// Dispatcher is one dispatcher that announced itself.
type Dispatcher struct {
	ID       string `json:"id"`
	Waiting  int    `json:"waiting"`
	Admitted uint64 `json:"admitted"`
}

// Queue is the calls one team has waiting in one pool and tier, over all
// dispatchers.
type Queue struct {
	Pool         string        `json:"pool"`
	Tier         messages.Tier `json:"tier"`
	Team         string        `json:"team"`
	Depth        int           `json:"depth"`
	OldestWaitMS float64       `json:"oldest_wait_ms"`
}

// Deployment is one deployment's headroom and state.
type Deployment struct {
	ID     string `json:"id"`
	Pool   string `json:"pool"`
	Region string `json:"region"`
	// State is ok, limited (the limits in force are below the configured
	// ones: see health.LimitedBecause), cooling, disabled (see
	// health.StateOf), circuit_open (a breaker of the deployment or its
	// region is open or half-open at some dispatcher: Detail says which),
	// or no_executor (its region's executors take no work, as some
	// dispatcher sees it).
	State  string `json:"state"`
	Detail string `json:"detail,omitempty"`
	// HeadroomRequests and HeadroomTokens are what its schedule could send
	// at once now, as a fraction of its capacity (below 0 while it is
	// booked ahead).
	HeadroomRequests float64 `json:"headroom_requests"`
	HeadroomTokens   float64 `json:"headroom_tokens"`
	// RPM and TPM are the limits in force: configured, or lower as the
	// provider taught; PacedRPM and PacedTPM the rates sluice sends at to
	// stay inside the windows the provider enforces.
	RPM           float64 `json:"rpm"`
	TPM           float64 `json:"tpm"`
	PacedRPM      float64 `json:"paced_rpm"`
	PacedTPM      float64 `json:"paced_tpm"`
	ConfiguredRPM int64   `json:"configured_rpm"`
	ConfiguredTPM int64   `json:"configured_tpm"`
}

// Watcher keeps the parts of a Snapshot that are pushed: dispatchers'
// announcements and the KV buckets it watches.
type Watcher struct {
	js        jetstream.JetStream
	sub       *nats.Subscription
	schedules *limiter.KVScheduler
	health    *health.Store
	cfgKV     jetstream.KeyValue
	// budgetKV is SLUICE_BUDGET; nil when it does not exist yet.
	budgetKV jetstream.KeyValue
	mu       sync.Mutex
	latest   map[string]heard
	started  time.Time
}

type heard struct {
	at    time.Time
	state messages.DispatcherState
}

// ErrNoSluice is returned by Watch when the NATS server holds no sluice
// configuration.
var ErrNoSluice = errors.New("status: no sluice configuration on this NATS server")

// Watch starts following nc's sluice. Stop it with Stop.
func Watch(ctx context.Context, nc *nats.Conn) (*Watcher, error) {
	js, err := jetstream.New(nc)
	if err != nil {
		return nil, err
	}
	w := &Watcher{js: js, latest: map[string]heard{}, started: time.Now()}
	if w.cfgKV, err = js.KeyValue(ctx, messages.BucketConfig); err != nil {
		return nil, fmt.Errorf("%w (%v)", ErrNoSluice, err)
	}
	scheduleKV, err := js.KeyValue(ctx, messages.BucketSchedule)
	if err != nil {
		return nil, fmt.Errorf("status: %w", err)
	}
	healthKV, err := js.KeyValue(ctx, messages.BucketHealth)
	if err != nil {
		return nil, fmt.Errorf("status: %w", err)
	}
	w.schedules = limiter.NewKVScheduler(scheduleKV, limiter.KVOptions{})
	if err := w.schedules.Start(ctx); err != nil {
		return nil, err
	}
	w.health = health.NewStore(healthKV)
	if err := w.health.Start(ctx); err != nil {
		w.schedules.Stop()
		return nil, err
	}
	if kv, err := js.KeyValue(ctx, messages.BucketBudget); err == nil {
		// Absent before a dispatcher that counts budgets ran.
		w.budgetKV = kv
	}
	w.sub, err = nc.Subscribe(messages.StateSubject, func(m *nats.Msg) {
		var s messages.DispatcherState
		if json.Unmarshal(m.Data, &s) != nil || s.Dispatcher == "" {
			return
		}
		w.mu.Lock()
		w.latest[s.Dispatcher] = heard{at: time.Now(), state: s}
		w.mu.Unlock()
	})
	if err != nil {
		w.Stop()
		return nil, err
	}
	return w, nil
}

// Stop stops following.
func (w *Watcher) Stop() {
	if w.sub != nil {
		_ = w.sub.Unsubscribe()
	}
	w.health.Stop()
	w.schedules.Stop()
}

// Settled reports whether the Watcher has listened long enough to have
// heard every running dispatcher at least once.
func (w *Watcher) Settled() bool { return time.Since(w.started) > 1200*time.Millisecond }

// Snapshot gathers what is known now.
func (w *Watcher) Snapshot(ctx context.Context) (*Snapshot, error) {
	cfg, rev, err := config.Fetch(ctx, w.cfgKV)
	if err != nil {
		return nil, fmt.Errorf("status: live configuration: %w", err)
	}
	now := time.Now()
	s := &Snapshot{At: now, ConfigRevision: rev}

	circuits := map[string][]string{} // deployment or region -> "open at d1"
	stalled := map[string][]string{}  // region -> dispatchers that see it stalled
	queues := map[[3]string]*Queue{}
	w.mu.Lock()
	for id, h := range w.latest {
		if now.Sub(h.at) > 2*time.Second {
			delete(w.latest, id)
			continue
		}
		d := Dispatcher{ID: id, Admitted: h.state.Admitted}
		for _, q := range h.state.Queues {
			d.Waiting += q.Depth
			k := [3]string{q.Pool, string(q.Tier), q.Team}
			agg, ok := queues[k]
			if !ok {
				agg = &Queue{Pool: q.Pool, Tier: q.Tier, Team: q.Team}
				queues[k] = agg
			}
			agg.Depth += q.Depth
			agg.OldestWaitMS = max(agg.OldestWaitMS, q.OldestWaitMS)
		}
		for _, c := range h.state.Circuits {
			circuits[c.Scope+":"+c.Name] = append(circuits[c.Scope+":"+c.Name], c.State+" at "+id)
		}
		for _, r := range h.state.StalledRegions {
			stalled[r] = append(stalled[r], id)
		}
		s.Dispatchers = append(s.Dispatchers, d)
		s.WaitingTotal += d.Waiting
	}
	w.mu.Unlock()
	sort.Slice(s.Dispatchers, func(i, j int) bool { return s.Dispatchers[i].ID < s.Dispatchers[j].ID })
	for _, q := range queues {
		s.Queues = append(s.Queues, *q)
	}
	sort.Slice(s.Queues, func(i, j int) bool {
		a, b := s.Queues[i], s.Queues[j]
		if a.Pool != b.Pool {
			return a.Pool < b.Pool
		}
		if a.Tier != b.Tier {
			return a.Tier.Rank() < b.Tier.Rank()
		}
		return a.Team < b.Team
	})

	for _, pool := range cfg.Pools {
		for _, dep := range pool.Deployments {
			h := w.health.Get(dep.ID)
			lim := pace.Of(cfg, dep, h, now)
			rpm, tpm := health.Effective(dep.RPM, dep.TPM, h, now, cfg.Health.LearnedRecovery)
			avail, err := w.schedules.Free(ctx, dep.ID, lim)
			if err != nil {
				return nil, err
			}
			row := Deployment{
				ID: dep.ID, Pool: dep.Pool(), Region: dep.Region, State: health.StateOK,
				HeadroomRequests: avail.Requests / lim.BurstRequests, HeadroomTokens: avail.Tokens / lim.BurstTokens,
				RPM: rpm, TPM: tpm, PacedRPM: lim.RPM, PacedTPM: lim.TPM, ConfiguredRPM: dep.RPM, ConfiguredTPM: dep.TPM,
			}
			learned := health.StateOf(dep.RPM, dep.TPM, h, now, cfg.Health.LearnedRecovery)
			switch {
			case learned == health.StateDisabled:
				row.State, row.Detail = learned, h.DisabledReason
			case learned == health.StateCooling:
				row.State = learned
				row.Detail = fmt.Sprintf("%s, %s more", h.CooldownReason, h.CooldownUntil.Sub(now).Round(time.Millisecond))
			case len(circuits["deployment:"+dep.ID]) > 0:
				row.State, row.Detail = "circuit_open", fmt.Sprint(circuits["deployment:"+dep.ID])
			case len(circuits["region:"+dep.Region]) > 0:
				row.State, row.Detail = "circuit_open", "region "+dep.Region+": "+fmt.Sprint(circuits["region:"+dep.Region])
			case len(stalled[dep.Region]) > 0:
				sort.Strings(stalled[dep.Region])
				row.State, row.Detail = "no_executor", "no executor of region "+dep.Region+" takes work (seen by "+strings.Join(stalled[dep.Region], ", ")+")"
			case learned == health.StateLimited:
				row.State, row.Detail = learned, health.LimitedBecause(h, now)
			}
			s.Deployments = append(s.Deployments, row)
		}
	}
	sort.Slice(s.Deployments, func(i, j int) bool { return s.Deployments[i].ID < s.Deployments[j].ID })
	if s.Budgets, err = w.budgets(ctx, cfg, now); err != nil {
		return nil, err
	}
	return s, nil
}

// budgets lists the bounds of every team's budgets under cfg, with what
// SLUICE_BUDGET counts of them at now.
func (w *Watcher) budgets(ctx context.Context, cfg *config.Config, now time.Time) ([]Budget, error) {
	var scopes []budget.Scope
	for _, team := range slices.Sorted(maps.Keys(cfg.Teams)) {
		b := cfg.Teams[team].Budget
		if b == nil {
			continue
		}
		if b.Day != nil || b.Month != nil {
			scopes = append(scopes, budget.Scope{Team: team})
		}
		for _, pool := range slices.Sorted(maps.Keys(b.Pools)) {
			if b.Pools[pool] != nil {
				scopes = append(scopes, budget.Scope{Team: team, Pool: pool})
			}
		}
	}
	if len(scopes) == 0 {
		return nil, nil
	}
	loc := cfg.BudgetLocation()
	counts := map[budget.Scope]budget.State{}
	if w.budgetKV != nil {
		ledger := budget.NewLedger(w.budgetKV, budget.Options{Location: func() *time.Location { return loc }, Clock: func() time.Time { return now }})
		var err error
		if counts, err = ledger.States(ctx); err != nil && !errors.Is(err, budget.ErrUnreadable) {
			return nil, fmt.Errorf("status: budgets: %w", err)
		}
	}
	warnAt := cfg.WarnAt()
	var out []Budget
	for _, scope := range scopes {
		st := counts[scope].At(now, loc)
		var charge budget.Charge
		for _, c := range budget.Charges(cfg, scope.Team, scope.Pool) {
			if c.Scope == scope {
				charge = c
			}
		}
		for _, p := range []struct {
			span  budget.Span
			c     budget.Counter
			limit budget.Amount
		}{{budget.Day, st.Day, charge.Limits.Day}, {budget.Month, st.Month, charge.Limits.Month}} {
			period := budget.PeriodOf(p.span, now, loc)
			for _, u := range []struct {
				unit                         string
				limit, spent, reserved, over float64
			}{
				{"tokens", float64(p.limit.Tokens), float64(p.c.Spent.Tokens), float64(p.c.Reserved.Tokens), float64(p.c.Over.Tokens)},
				{cfg.Currency(), float64(p.limit.Micros) / 1e6, float64(p.c.Spent.Micros) / 1e6, float64(p.c.Reserved.Micros) / 1e6, float64(p.c.Over.Micros) / 1e6},
			} {
				if u.limit <= 0 {
					continue
				}
				row := Budget{
					Team: scope.Team, Pool: scope.Pool, Period: p.span.String(), PeriodID: period.ID(), Unit: u.unit,
					Limit: u.limit, Spent: u.spent, Reserved: u.reserved, Over: u.over, Used: u.spent / u.limit,
					State: "ok", ResetsAt: period.End,
				}
				switch {
				case u.spent+u.reserved >= u.limit:
					row.State = "exhausted"
				case len(warnAt) > 0 && row.Used >= warnAt[0]:
					row.State = "warning"
					passed := warnAt[0]
					for _, t := range warnAt {
						if row.Used >= t {
							passed = t
						}
					}
					row.Detail = fmt.Sprintf("past %g%% of the budget", 100*passed)
				}
				out = append(out, row)
			}
		}
	}
	return out, nil
}
