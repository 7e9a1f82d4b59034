// Package status owns the live view of a running sluice that `sluice
// status` shows: what every dispatcher holds (announced on
// sluice.dispatchers.state), and the shared state in KV (configuration,
// deployments' send schedules, what providers taught), gathered into one
// Snapshot.
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
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/sluicehq/sluice/messages"
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
	mu        sync.Mutex
	latest    map[string]heard
	started   time.Time
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
	return s, nil
}
