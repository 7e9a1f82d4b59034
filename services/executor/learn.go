package executor

import (
	"context"
	"strings"
	"time"

	"github.com/sluicehq/sluice/messages"
	"github.com/sluicehq/sluice/services/config"
	"github.com/sluicehq/sluice/services/health"
	"github.com/sluicehq/sluice/services/providers"
)

// defaultCooldown is how long a 429 that names no wait cools a deployment:
// short, since the admission limits catch up, but long enough that the
// calls right behind it do not hit the same wall.
const defaultCooldown = time.Second

// learn records what a provider answer taught about dep in the shared
// health state, before the attempt's outcome is published, so that the
// retry it may cause is admitted knowing it. It writes only when the
// lesson is new; a failure to write is logged, never fatal to the call.
func (e *Executor) learn(ctx context.Context, shared *config.Config, dep *config.Deployment, resp *providers.Response) {
	o := observe(e.cfg.Clock(), resp)
	o.Bursty = dep.Bursty()
	if resp.Class == providers.RateLimited {
		e.sends.refused(dep.ID, o.Now)
	}
	if o.Refused {
		// The share refused of what was sent since the last lesson took
		// effect (what dispatchers had admitted before it is sent up to a
		// lease's TTL later).
		h := e.health.Get(dep.ID)
		last := latest(h.StrictRPMAt, h.StrictTPMAt, h.ShortWindowAt)
		o.Sent, o.Refusals = e.sends.since(dep.ID, last.Add(shared.Admission.LeaseTTL), o.Now)
	}
	settings := health.Settings{
		ConfiguredRPM: dep.RPM, ConfiguredTPM: dep.TPM,
		Recovery: shared.Health.LearnedRecovery, QuotaDisable: shared.Health.QuotaDisable,
	}
	targets := []*config.Deployment{dep}
	if o.QuotaExhausted {
		// Billing quota belongs to the key, whatever pool uses it.
		targets = deploymentsWithKey(shared, dep.Key)
	}
	for _, t := range targets {
		settings.ConfiguredRPM, settings.ConfiguredTPM = t.RPM, t.TPM
		if err := e.health.Update(ctx, t.ID, o.Change(settings)); err != nil {
			e.log.Warn("record what the provider said", "deployment", t.ID, "err", err)
		}
	}
}

// observe reads an answer's rate-limit signals.
func observe(now time.Time, resp *providers.Response) health.Observation {
	l := resp.Limits
	o := health.Observation{Now: now}
	o.LimitRequests, o.LimitTokens = l.PerMinute()
	// sluice sends inside the limits in force, so a refusal means the
	// provider allows less than they say: the limits drop (see
	// health.Effective), and the cooldown is short whatever the provider
	// says to wait (health.StrictCooldown).
	switch {
	case resp.Class == providers.RateLimited:
		o.Refused, o.RefusedKind = true, kindOf(resp.ErrorType)
		o.CooldownFor, o.CooldownReason = l.Wait(resp.ErrorType), "429"
		if resp.ErrorType != "" {
			o.CooldownReason += " (" + resp.ErrorType + ")"
		}
		if o.CooldownFor <= 0 {
			o.CooldownFor = defaultCooldown
		}
	case l.RemainingRequests == 0:
		// Azure says what remains but not when it resets.
		o.Refused, o.RefusedKind = true, "requests"
		o.CooldownFor, o.CooldownReason = orDefault(l.ResetRequests), "remaining requests 0"
	case l.RemainingTokens == 0:
		o.Refused, o.RefusedKind = true, "tokens"
		o.CooldownFor, o.CooldownReason = orDefault(l.ResetTokens), "remaining tokens 0"
	}
	o.QuotaExhausted = resp.Class == providers.QuotaExhausted
	return o
}

// kindOf is the dimension a 429's error type names: "requests" or
// "tokens" (OpenAI's types, also in Anthropic's and Azure's messages), or
// "" when it names neither.
func kindOf(errorType string) string {
	switch t := strings.ToLower(errorType); {
	case strings.Contains(t, "token"):
		return "tokens"
	case strings.Contains(t, "request"):
		return "requests"
	}
	return ""
}

func deploymentsWithKey(shared *config.Config, key string) []*config.Deployment {
	var out []*config.Deployment
	for _, p := range shared.Pools {
		for _, d := range p.Deployments {
			if d.Key == key {
				out = append(out, d)
			}
		}
	}
	return out
}

// latest is the latest of ts.
func latest(ts ...time.Time) time.Time {
	var out time.Time
	for _, t := range ts {
		if t.After(out) {
			out = t
		}
	}
	return out
}

func orDefault(d time.Duration) time.Duration {
	if d <= 0 {
		return defaultCooldown
	}
	return d
}

// otherKeyServes reports whether a deployment of dep's pool with another
// key, in rotation now, could serve endpoint.
func (e *Executor) otherKeyServes(shared *config.Config, dep *config.Deployment, endpoint messages.Endpoint) bool {
	pool, ok := shared.Pool(dep.Pool())
	if !ok {
		return false
	}
	now := e.cfg.Clock()
	for _, d := range pool.Deployments {
		if d.Key != dep.Key && providers.Supports(d.Provider, endpoint) && !e.health.Get(d.ID).DisabledNow(now) {
			return true
		}
	}
	return false
}
