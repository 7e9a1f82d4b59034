// Package pace owns the schedule a deployment's calls are sent on: the
// rate and capacity (a limiter.Limit) that keep what reaches the provider
// inside every window it enforces, at the limits configured or the lower
// ones the provider taught (package health).
//
// The dispatchers admit calls against it, and `sluice status` measures a
// deployment's headroom against it: both read Of, so status shows the
// headroom the dispatchers see.
package pace

import (
	"slices"
	"time"

	"github.com/sluicehq/sluice/messages"
	"github.com/sluicehq/sluice/services/config"
	"github.com/sluicehq/sluice/services/health"
	"github.com/sluicehq/sluice/services/limiter"
)

// Of is the schedule dep's calls are sent on at now (its key in the shared
// scheduler is the deployment id): the rate and capacity that keep what
// reaches the provider inside every window it enforces (the deployment's
// windows), at the limits configured or lower ones the provider taught
// (h), with admission.jitter of room.
//
// A provider that refused calls sent within the deployment's windows
// enforces something stricter: while that lesson holds, the deployment is
// also paced for a one-second window, which takes away the burst a
// longer window alone would allow (see health.ShortWindow).
func Of(cfg *config.Config, dep *config.Deployment, h messages.DeploymentHealth, now time.Time) limiter.Limit {
	rpm, tpm := health.Effective(dep.RPM, dep.TPM, h, now, cfg.Health.LearnedRecovery)
	windows := dep.EnforcedWindows()
	if dep.Bursty() && health.ShortWindow(h, now, cfg.Health.LearnedRecovery) {
		windows = append([]time.Duration{time.Second}, windows...)
	}
	return fit(cfg, windows, rpm, tpm, float64(dep.TokenBurst))
}

// fit fits windows to rpm and tpm. Configured limits always fit (the
// configuration is refused otherwise); limits learned far below them may
// leave a short window no room, and are then paced for the longest window
// alone, or failing that at half their rate.
func fit(cfg *config.Config, windows []time.Duration, rpm, tpm, tokenBurst float64) limiter.Limit {
	e := limiter.Enforcement{RPM: rpm, TPM: tpm, Windows: windows, Jitter: cfg.Admission.Jitter, Burst: cfg.Admission.Burst, TokenBurst: tokenBurst}
	if l, err := limiter.Fit(e); err == nil {
		return l
	}
	// A learned tpm may leave the token burst no room: the default's.
	if e.TokenBurst > 0 {
		e.TokenBurst = 0
		if l, err := limiter.Fit(e); err == nil {
			return l
		}
	}
	if n := len(e.Windows); n > 1 {
		e.Windows = []time.Duration{slices.Max(e.Windows)}
		if l, err := limiter.Fit(e); err == nil {
			return l
		}
	}
	return limiter.NewLimit(rpm/2, tpm/2, cfg.Admission.Jitter)
}
