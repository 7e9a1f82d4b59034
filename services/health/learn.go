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

	// A provider stricter than the limits in force: they drop at once by
	// the share it refused of what was sent to the deployment lately (a
	// provider allowing a fifth less refuses about a fifth of what sluice
	// sends), at least strictMinDrop (a lone refusal among many requests: a
	// request that reached the provider late; dropping 1% doubles the
	// lateness a one-second window tolerates) and at most strictMaxDrop at
	// once (further lessons lower them further while refusals go on).
	// After a large drop they climb back over strictClimb to just below
	// where the provider refused (strictHoldGap; a share refused counts
	// whole requests, so at a few a second it overstates how much less the
	// provider allows), after a small one they stay where they dropped.
	// They hold there for Settings.Recovery, and only then climb back,
	// over Settings.Recovery again, to the configured limits, probing for
	// more.
	// A refusal within strictReaction of the last lesson teaches nothing
	// new: it was sent before that lesson took effect; nor does one with
	// fewer than strictMinSent requests counted since a lesson less than
	// StrictSample ago, too few to tell its share.
	strictMinDrop  = 0.01
	strictMaxDrop  = 0.10
	strictHoldGap  = 0.03
	strictClimb    = 10 * time.Second
	strictReaction = time.Second
	strictMinSent  = 20
	// StrictSample is how far back an executor counts what it sent a
	// deployment for the share refused (Observation.Sent), and no further
	// back than its last lesson.
	StrictSample = 10 * time.Second
	// StrictCooldown bounds the cooldown of a refused burst of a deployment
	// paced with bursts (Observation.Bursty), while its provider's short
	// window empties; strictRefusalCooldown that of any other refusal
	// while sluice kept within the limits in force: the limits drop
	// instead, and the provider's window has room again as soon as what
	// sluice sent before leaves it, whatever its retry-after says.
	StrictCooldown        = time.Second
	strictRefusalCooldown = 100 * time.Millisecond
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
	// Sent and Refusals are what the observer sent the deployment lately
	// (this request included), and how many of those requests it refused,
	// since its last lesson took effect and within StrictSample. Their
	// ratio is how much a refusal lowers the limits; with Sent 0 (not
	// counted) a refusal lowers them by the most one lesson may.
	Sent, Refusals int
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
		burst := o.Refused && o.Bursty && !ShortWindow(*h, o.Now, s.Recovery)
		switch {
		case burst:
			cooldown = min(cooldown, StrictCooldown)
		case o.Refused:
			cooldown = min(cooldown, strictRefusalCooldown)
		}
		if cooldown > 0 {
			until := o.Now.Add(cooldown)
			if until.After(h.CooldownUntil.Add(cooldownSlack)) {
				h.CooldownUntil, h.CooldownReason = until, o.CooldownReason
				changed = true
			}
		}
		rpm, tpm := Effective(s.ConfiguredRPM, s.ConfiguredTPM, *h, o.Now, s.Recovery)
		if burst {
			h.ShortWindowAt, changed = o.Now, true
		} else if o.Refused && (h.ShortWindowAt.IsZero() || o.Now.Sub(h.ShortWindowAt) >= strictReaction) {
			// What was in force when the provider refused is the new
			// ceiling, in the dimension it refused (both when it did not
			// say), lowered by the share refused, unless that dimension
			// learned it a moment ago.
			drop := o.drop()
			fresh := func(at time.Time) bool {
				if at.IsZero() {
					return true
				}
				since := o.Now.Sub(at)
				return since >= strictReaction && (o.Sent == 0 || o.Sent >= strictMinSent || since >= StrictSample)
			}
			if o.RefusedKind != "tokens" && fresh(h.StrictRPMAt) {
				h.StrictRPM, h.StrictRPMDrop, h.StrictRPMAt, changed = rpm, drop, o.Now, true
			}
			if o.RefusedKind != "requests" && fresh(h.StrictTPMAt) {
				h.StrictTPM, h.StrictTPMDrop, h.StrictTPMAt, changed = tpm, drop, o.Now, true
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

// drop is the share a refusal lowers the limits in force by.
func (o Observation) drop() float64 {
	if o.Sent <= 0 {
		return strictMaxDrop
	}
	return min(max(float64(o.Refusals)/float64(o.Sent), strictMinDrop), strictMaxDrop)
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
// messages.DeploymentHealth.StrictRPM) lowers them at once by the share
// the provider refused of what was sent lately (1% to 10%); after a drop
// of more than 3% they climb back over 10 s to 97% of where the provider
// refused; they stay there for recovery, and only then, over recovery
// again, climb to the configured ones: refusals stop, most of the real
// capacity stays in use, a lone refusal costs 1%, and sluice finds out
// slowly whether the provider allows more again.
func Effective(configuredRPM, configuredTPM int64, h messages.DeploymentHealth, now time.Time, recovery time.Duration) (rpm, tpm float64) {
	f := 1.0
	if recovery > 0 && !h.LearnedAt.IsZero() {
		f = min(1, max(0, float64(now.Sub(h.LearnedAt))/float64(recovery)))
	}
	rpm, tpm = recovered(configuredRPM, h.LearnedRPM, f), recovered(configuredTPM, h.LearnedTPM, f)
	if !h.StrictRPMAt.IsZero() {
		rpm = min(rpm, strictLimit(float64(configuredRPM), h.StrictRPM, h.StrictRPMDrop, now.Sub(h.StrictRPMAt), recovery))
	}
	if !h.StrictTPMAt.IsZero() {
		tpm = min(tpm, strictLimit(float64(configuredTPM), h.StrictTPM, h.StrictTPMDrop, now.Sub(h.StrictTPMAt), recovery))
	}
	return rpm, tpm
}

// strictLimit is the limit in force since after a refusal at ceiling
// that lowered it by drop (none when ceiling is 0; strictMaxDrop when drop
// is 0, as lessons recorded before drops were).
func strictLimit(configured, ceiling, drop float64, since, recovery time.Duration) float64 {
	if ceiling <= 0 {
		return configured
	}
	if drop <= 0 || drop > strictMaxDrop {
		drop = strictMaxDrop
	}
	ceiling = min(ceiling, configured)
	low, hold := (1-drop)*ceiling, (1-min(drop, strictHoldGap))*ceiling
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
