package dispatcher

import (
	"context"
	"encoding/json"
	"sync"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/sluicehq/sluice/messages"
	"github.com/sluicehq/sluice/services/limiter"
)

// settlements accumulates corrections to the shared limiter state per
// deployment (settled reservations, refunds of work that never ran), so
// that they cost one write per deployment per interval instead of one per
// call.
type settlements struct {
	mu      sync.Mutex
	pending map[string]limiter.Amount
}

func newSettlements() *settlements {
	return &settlements{pending: map[string]limiter.Amount{}}
}

func (s *settlements) add(deployment string, delta limiter.Amount) {
	s.mu.Lock()
	p := s.pending[deployment]
	p.Requests += delta.Requests
	p.Tokens += delta.Tokens
	s.pending[deployment] = p
	s.mu.Unlock()
}

func (s *settlements) drain() map[string]limiter.Amount {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := s.pending
	s.pending = map[string]limiter.Amount{}
	return out
}

// refund gives a reservation that was not spent back to the shared state.
func (d *Dispatcher) refund(deployment string, a limiter.Amount) {
	d.settle.add(deployment, a)
}

// onDone receives an executor's report of an attempt this dispatcher
// admitted, and corrects its reservation when the provider's count is
// known: a refund when it counted less than reserved, a charge when more.
func (d *Dispatcher) onDone(m *nats.Msg) {
	var done messages.AttemptDone
	if err := json.Unmarshal(m.Data, &done); err != nil || done.Deployment == "" {
		d.log.Warn("undecodable attempt report", "subject", m.Subject)
		return
	}
	if done.UsedTokens >= 0 {
		d.settle.add(done.Deployment, limiter.Amount{Tokens: float64(done.ReservedTokens - done.UsedTokens)})
	}
	if d.slots.Release(done.Deployment, attemptKey(done.CallID, done.Attempt)) {
		d.poke()
	}
	d.judge(done)
}

// judge feeds an attempt's outcome to the breakers of its deployment and
// region.
func (d *Dispatcher) judge(done messages.AttemptDone) {
	cfg := d.cfg.Shared.Load()
	dep, ok := cfg.Deployment(done.Deployment)
	if !ok {
		return
	}
	var failed *bool
	switch {
	case done.Outcome.Failed():
		failed = new(true)
	case done.Outcome == messages.OutcomeOK, done.Outcome == messages.OutcomeRejected:
		failed = new(false)
	}
	key := attemptKey(done.CallID, done.Attempt)
	now := d.cfg.Clock()
	d.mu.Lock()
	defer d.mu.Unlock()
	for _, scope := range []struct{ kind, name, key string }{
		{"deployment", dep.ID, dep.ID},
		{"region", dep.Region, regionKey(dep.Region)},
	} {
		if state, changed := d.breakerOf(scope.key).record(now, cfg.Health.Circuit, key, failed); changed {
			d.log.Warn("circuit "+state.String(), scope.kind, scope.name)
			d.metrics.CircuitTransitions.WithLabelValues(scope.kind, scope.name, state.String()).Inc()
			d.poke()
		}
	}
}

// settleLoop writes settlements and returns expired leases every
// SettleInterval until ctx ends.
func (d *Dispatcher) settleLoop(ctx context.Context) {
	t := time.NewTicker(d.cfg.SettleInterval)
	defer t.Stop()
	report := time.NewTicker(time.Second)
	defer report.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-report.C:
			d.reportDeployments()
		case <-t.C:
			opCtx, cancel := context.WithTimeout(ctx, 5*time.Second)
			_ = d.leases.Expire(opCtx)
			d.flushSettlements(opCtx)
			cancel()
			d.countLimiterOps()
		}
	}
}

// flushSettlements writes accumulated corrections to the shared state and
// wakes the scheduler when capacity came back.
func (d *Dispatcher) flushSettlements(ctx context.Context) {
	cfg := d.cfg.Shared.Load()
	now := d.cfg.Clock()
	refunded := false
	for id, delta := range d.settle.drain() {
		dep, ok := cfg.Deployment(id)
		if !ok || (delta.Requests == 0 && delta.Tokens == 0) {
			continue
		}
		if err := d.shared.Adjust(ctx, id, d.limitOf(cfg, dep, now), delta); err != nil {
			d.log.Warn("settle", "deployment", id, "err", err)
			d.settle.add(id, delta)
			continue
		}
		if delta.Requests > 0 || delta.Tokens > 0 {
			refunded = true
		}
	}
	if refunded {
		d.poke()
	}
}

// countLimiterOps moves the KV limiter's operation counts into metrics.
func (d *Dispatcher) countLimiterOps() {
	kv, ok := d.shared.(*limiter.KV)
	if !ok {
		return
	}
	ops, conflicts := kv.Ops(), kv.Conflicts()
	d.metrics.LimiterOps.WithLabelValues("op").Add(float64(ops - d.countedOps))
	d.metrics.LimiterOps.WithLabelValues("conflict").Add(float64(conflicts - d.countedConflicts))
	d.countedOps, d.countedConflicts = ops, conflicts
}

// deploymentStates are the values of the sluice_deployment_state label.
var deploymentStates = []string{"ok", "cooling", "disabled", "circuit_open", "circuit_half_open"}

// reportDeployments sets the deployment state and limit gauges.
func (d *Dispatcher) reportDeployments() {
	cfg := d.cfg.Shared.Load()
	now := d.cfg.Clock()
	d.mu.Lock()
	defer d.mu.Unlock()
	for _, pool := range cfg.Pools {
		for _, dep := range pool.Deployments {
			state := "ok"
			h := d.health.Get(dep.ID)
			switch {
			case h.DisabledNow(now):
				state = "disabled"
			case h.CoolingAt(now):
				state = "cooling"
			default:
				for _, key := range []string{dep.ID, regionKey(dep.Region)} {
					switch d.breakerOf(key).state {
					case circuitOpen:
						state = "circuit_open"
					case circuitHalfOpen:
						if state == "ok" {
							state = "circuit_half_open"
						}
					}
				}
			}
			for _, s := range deploymentStates {
				v := 0.0
				if s == state {
					v = 1
				}
				d.metrics.DeploymentState.WithLabelValues(dep.ID, s).Set(v)
			}
			lim := d.limitOf(cfg, dep, now)
			d.metrics.DeploymentLimit.WithLabelValues(dep.ID, "requests").Set(lim.RPM)
			d.metrics.DeploymentLimit.WithLabelValues(dep.ID, "tokens").Set(lim.TPM)
		}
	}
}
