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

	// A provider stricter than the limits in force: they drop at once to
	// strictDrop of what they were, climb back over strictClimb to
	// strictHold of it, just below where the provider refused, and only
	// then, over Settings.Recovery, back to the configured limits, probing
	// for more. A refusal within strictReaction of the last lesson teaches
	// nothing new: it was sent before that lesson took effect.
	strictDrop     = 0.90
	strictHold     = 0.97
	strictClimb    = 10 * time.Second
	strictReaction = time.Second
	// StrictCooldown bounds the cooldown of a refusal while sluice kept
	// within the limits in force: the limits drop instead, and the
	// provider's window has room again as soon as what sluice sent before
	// leaves it, whatever its retry-after says.
	StrictCooldown = time.Second
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
	// Refused is set for a rate-limit 429, or a remaining of 0: the
	// provider allows no more now, though sluice kept within the limits
	// in force, so it allows less than they say. RefusedKind is
	// "requests" or "tokens" when the provider said which, else "".
	Refused     bool
	RefusedKind string
	// Bursty is set when the deployment's windows are all longer than a
	// second, so that sluice sends it bursts: a refusal then first teaches
	// that the provider counts over a second too (ShortWindowAt), and
	// lowers the limits only if refusals go on.
	Bursty bool
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
		cooldown := min(o.CooldownFor, MaxCooldown)
		if o.Refused {
			cooldown = min(cooldown, StrictCooldown)
		}
		if cooldown > 0 {
			until := o.Now.Add(cooldown)
			if until.After(h.CooldownUntil.Add(cooldownSlack)) {
				h.CooldownUntil, h.CooldownReason = until, o.CooldownReason
				changed = true
			}
		}
		rpm, tpm := Effective(s.ConfiguredRPM, s.ConfiguredTPM, *h, o.Now, s.Recovery)
		if o.Refused && o.Bursty && !ShortWindow(*h, o.Now, s.Recovery) {
			h.ShortWindowAt, changed = o.Now, true
		} else if o.Refused && (h.ShortWindowAt.IsZero() || o.Now.Sub(h.ShortWindowAt) >= strictReaction) {
			// What was in force when the provider refused is the new
			// ceiling, in the dimension it refused (both when it did not
			// say), unless that dimension learned it a moment ago.
			fresh := func(at time.Time) bool { return at.IsZero() || o.Now.Sub(at) >= strictReaction }
			if o.RefusedKind != "tokens" && fresh(h.StrictRPMAt) {
				h.StrictRPM, h.StrictRPMAt, changed = rpm, o.Now, true
			}
			if o.RefusedKind != "requests" && fresh(h.StrictTPMAt) {
				h.StrictTPM, h.StrictTPMAt, changed = tpm, o.Now, true
			}
			rpm, tpm = Effective(s.ConfiguredRPM, s.ConfiguredTPM, *h, o.Now, s.Recovery)
		}
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
// limits, or lower ones the provider taught. A limit it reported climbs
// back linearly to the configured one over recovery after it was last
// reported. A refusal while sluice kept within the limits in force (see
// messages.DeploymentHealth.StrictRPM) drops them to 90% at once; they
// climb back over 10 s to 97% of where the provider refused, stay there
// for recovery, and only then, over recovery again, climb to the
// configured ones: refusals stop, most of the real capacity stays in use,
// and sluice finds out slowly whether the provider allows more again.
func Effective(configuredRPM, configuredTPM int64, h messages.DeploymentHealth, now time.Time, recovery time.Duration) (rpm, tpm float64) {
	f := 1.0
	if recovery > 0 && !h.LearnedAt.IsZero() {
		f = min(1, max(0, float64(now.Sub(h.LearnedAt))/float64(recovery)))
	}
	rpm, tpm = recovered(configuredRPM, h.LearnedRPM, f), recovered(configuredTPM, h.LearnedTPM, f)
	if !h.StrictRPMAt.IsZero() {
		rpm = min(rpm, strictLimit(float64(configuredRPM), h.StrictRPM, now.Sub(h.StrictRPMAt), recovery))
	}
	if !h.StrictTPMAt.IsZero() {
		tpm = min(tpm, strictLimit(float64(configuredTPM), h.StrictTPM, now.Sub(h.StrictTPMAt), recovery))
	}
	return rpm, tpm
}

// strictLimit is the limit in force since after a refusal at ceiling
// (none when ceiling is 0).
func strictLimit(configured, ceiling float64, since, recovery time.Duration) float64 {
	if ceiling <= 0 {
		return configured
	}
	ceiling = min(ceiling, configured)
	low, hold := strictDrop*ceiling, strictHold*ceiling
	switch {
	case since < strictClimb:
		return low + (hold-low)*max(0, float64(since))/float64(strictClimb)
	case since < strictClimb+recovery:
		return hold
	case recovery <= 0:
		return configured
	}
	f := min(1, float64(since-strictClimb-recovery)/float64(recovery))
	return hold + (configured-hold)*f
}

// ShortWindow reports whether the provider taught that it counts over a
// second too, and the lesson still holds at now: for twice recovery after
// it refused a burst (messages.DeploymentHealth.ShortWindowAt), and while
// a refusal still holds the limits in force below the configured ones
// (see Effective).
func ShortWindow(h messages.DeploymentHealth, now time.Time, recovery time.Duration) bool {
	if !h.ShortWindowAt.IsZero() && now.Sub(h.ShortWindowAt) < 2*recovery {
		return true
	}
	for _, d := range []struct {
		ceiling float64
		at      time.Time
	}{{h.StrictRPM, h.StrictRPMAt}, {h.StrictTPM, h.StrictTPMAt}} {
		if !d.at.IsZero() && d.ceiling > 0 && now.Sub(d.at) < strictClimb+2*recovery {
			return true
		}
	}
	return false
}

func recovered(configured, learned int64, f float64) float64 {
	if learned <= 0 || learned >= configured {
		return float64(configured)
	}
	return float64(learned) + float64(configured-learned)*f
}
