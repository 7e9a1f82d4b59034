package health

import (
	"time"

	"github.com/sluicehq/sluice/messages"
)

// Bounds that keep learning from turning noise into writes, and hostile
// headers into damage.
const (
	// MaxCooldown bounds any cooldown a provider's answer can set.
	MaxCooldown = 10 * time.Minute
	// cooldownSlack: a cooldown that ends less than this after the known
	// one is not worth a write.
	cooldownSlack = 50 * time.Millisecond
	// learnedSlack: a reported limit within this fraction of what is
	// already in force is not worth a write.
	learnedSlack = 0.02
)

// Observation is what one provider answer taught about a deployment.
type Observation struct {
	Now time.Time
	// CooldownFor is how long a limit the provider reported exhausted
	// stays exhausted (0: none is).
	CooldownFor    time.Duration
	CooldownReason string
	// LimitRequests and LimitTokens are the per-minute limits the
	// provider reported, or -1 (or 0) when it did not.
	LimitRequests, LimitTokens int64
	// QuotaExhausted is set for insufficient_quota.
	QuotaExhausted bool
}

// Settings are the configured values learning is measured against.
type Settings struct {
	ConfiguredRPM, ConfiguredTPM int64
	// Recovery is how long a learned limit takes to climb back to the
	// configured one (health.learned_recovery).
	Recovery time.Duration
	// QuotaDisable is how long insufficient_quota disables the deployment;
	// 0 is until an operator re-enables it.
	QuotaDisable time.Duration
}

// Change returns the update Store.Update applies for o: it reports false,
// costing no write, when o teaches nothing new.
func (o Observation) Change(s Settings) func(*messages.DeploymentHealth) bool {
	return func(h *messages.DeploymentHealth) bool {
		changed := false
		if o.CooldownFor > 0 {
			until := o.Now.Add(min(o.CooldownFor, MaxCooldown))
			if until.After(h.CooldownUntil.Add(cooldownSlack)) {
				h.CooldownUntil, h.CooldownReason = until, o.CooldownReason
				changed = true
			}
		}
		rpm, tpm := Effective(s.ConfiguredRPM, s.ConfiguredTPM, *h, o.Now, s.Recovery)
		learnRPM := lower(o.LimitRequests, s.ConfiguredRPM, rpm)
		learnTPM := lower(o.LimitTokens, s.ConfiguredTPM, tpm)
		if learnRPM > 0 || learnTPM > 0 {
			// Keep what the other dimension had learned, recovered to now,
			// so that refreshing one does not reset the other's recovery.
			if learnRPM == 0 && h.LearnedRPM > 0 && rpm < float64(s.ConfiguredRPM) {
				learnRPM = int64(rpm)
			}
			if learnTPM == 0 && h.LearnedTPM > 0 && tpm < float64(s.ConfiguredTPM) {
				learnTPM = int64(tpm)
			}
			h.LearnedRPM, h.LearnedTPM, h.LearnedAt = learnRPM, learnTPM, o.Now
			changed = true
		}
		if o.QuotaExhausted && !h.DisabledNow(o.Now) {
			h.Disabled, h.DisabledAt = true, o.Now
			h.DisabledReason = "insufficient_quota: the key's billing quota is spent"
			h.DisabledUntil = time.Time{}
			if s.QuotaDisable > 0 {
				h.DisabledUntil = o.Now.Add(s.QuotaDisable)
			}
			changed = true
		}
		return changed
	}
}

// lower returns reported when it is a limit below the configured one that
// is not already (within learnedSlack) the limit in force; 0 otherwise.
// Headers never raise a limit: a report above the configuration is
// ignored.
func lower(reported, configured int64, inForce float64) int64 {
	if reported <= 0 || reported >= configured {
		return 0
	}
	if diff := inForce - float64(reported); diff <= float64(reported)*learnedSlack && diff >= -float64(reported)*learnedSlack {
		return 0
	}
	return reported
}

// Effective is the limit pair to admit against at now: the configured
// limits, or lower ones a provider reported, climbing back linearly to the
// configured ones over recovery after they were last reported.
func Effective(configuredRPM, configuredTPM int64, h messages.DeploymentHealth, now time.Time, recovery time.Duration) (rpm, tpm float64) {
	f := 1.0
	if recovery > 0 && !h.LearnedAt.IsZero() {
		f = min(1, max(0, float64(now.Sub(h.LearnedAt))/float64(recovery)))
	}
	return recovered(configuredRPM, h.LearnedRPM, f), recovered(configuredTPM, h.LearnedTPM, f)
}

func recovered(configured, learned int64, f float64) float64 {
	if learned <= 0 || learned >= configured {
		return float64(configured)
	}
	return float64(learned) + float64(configured-learned)*f
}
