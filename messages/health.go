package messages

import "time"

// DeploymentHealth is what sluice has learned about one deployment from its
// provider, kept in KV bucket SLUICE_HEALTH under the deployment id. The
// executors that call the deployment write it when what they learn changes;
// every dispatcher watches it and routes accordingly; `sluice status` shows
// it. A missing entry means nothing was learned: configured limits, no
// cooldown.
type DeploymentHealth struct {
	// CooldownUntil: the provider said a limit is exhausted (a 429, or
	// remaining 0) until then; no calls go to the deployment before it.
	CooldownUntil time.Time `json:"cooldown_until,omitzero"`
	// CooldownReason says which signal set the cooldown.
	CooldownReason string `json:"cooldown_reason,omitempty"`
	// LearnedRPM and LearnedTPM are limits the provider reported below the
	// configured ones (0: none learned), as of LearnedAt. The effective
	// limit climbs back to the configured one over health.learned_recovery
	// after LearnedAt; executors refresh LearnedAt while the provider keeps
	// saying less.
	LearnedRPM int64     `json:"learned_rpm,omitempty"`
	LearnedTPM int64     `json:"learned_tpm,omitempty"`
	LearnedAt  time.Time `json:"learned_at,omitzero"`
	// StrictRPM and StrictTPM are the limits in force when the provider
	// last refused (429) or said nothing remained while sluice kept within
	// them, at StrictRPMAt and StrictTPMAt (0: never): it allows less (it
	// enforces a shorter window, or someone else uses the key). From then
	// the limits in force are lower, by StrictRPMDrop and StrictTPMDrop
	// (the share refused of what was sent lately; 0 is 10%), and
	// climb back slowly (see health.Effective).
	StrictRPM     float64   `json:"strict_rpm,omitempty"`
	StrictRPMDrop float64   `json:"strict_rpm_drop,omitempty"`
	StrictRPMAt   time.Time `json:"strict_rpm_at,omitzero"`
	StrictTPM     float64   `json:"strict_tpm,omitempty"`
	StrictTPMDrop float64   `json:"strict_tpm_drop,omitempty"`
	StrictTPMAt   time.Time `json:"strict_tpm_at,omitzero"`
	// ShortWindowAt: the provider refused a burst that the deployment's
	// windows (all longer than a second) allow, so it counts over a second
	// too; from then the deployment is paced for a one-second window as
	// well, for twice health.learned_recovery.
	ShortWindowAt time.Time `json:"short_window_at,omitzero"`
	// Disabled takes the deployment out of rotation (insufficient_quota)
	// until DisabledUntil, or until an operator re-enables it when
	// DisabledUntil is zero.
	Disabled       bool      `json:"disabled,omitempty"`
	DisabledUntil  time.Time `json:"disabled_until,omitzero"`
	DisabledReason string    `json:"disabled_reason,omitempty"`
	DisabledAt     time.Time `json:"disabled_at,omitzero"`
}

// DisabledNow reports whether the deployment is out of rotation at now.
func (h DeploymentHealth) DisabledNow(now time.Time) bool {
	return h.Disabled && (h.DisabledUntil.IsZero() || now.Before(h.DisabledUntil))
}

// CoolingAt reports whether the deployment is cooling down at now.
func (h DeploymentHealth) CoolingAt(now time.Time) bool {
	return now.Before(h.CooldownUntil)
}
