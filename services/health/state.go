package health

import (
	"fmt"
	"strings"
	"time"

	"github.com/sluicehq/sluice/messages"
)

// A deployment's state by what its provider taught (see StateOf), as
// `sluice health` and `sluice status` show it.
const (
	StateOK       = "ok"
	StateLimited  = "limited"
	StateCooling  = "cooling"
	StateDisabled = "disabled"
)

// StateOf is the state of a deployment configured at configuredRPM and
// configuredTPM, at now, by what was learned about it (h), the first of:
// disabled (out of rotation, by insufficient_quota), cooling (a limit the
// provider said is exhausted), limited (the limits in force are below
// the configured ones, see Effective and LimitedBecause), ok. Circuit
// breakers and regions without executors are the dispatchers' to tell.
func StateOf(configuredRPM, configuredTPM int64, h messages.DeploymentHealth, now time.Time, recovery time.Duration) string {
	switch {
	case h.DisabledNow(now):
		return StateDisabled
	case h.CoolingAt(now):
		return StateCooling
	}
	if rpm, tpm := Effective(configuredRPM, configuredTPM, h, now, recovery); rpm < float64(configuredRPM) || tpm < float64(configuredTPM) {
		return StateLimited
	}
	return StateOK
}

// LimitedBecause says why a deployment's limits in force are below the
// configured ones: the provider reported lower limits, or refused calls
// sent within the limits in force (it allows less than they say).
func LimitedBecause(h messages.DeploymentHealth, now time.Time) string {
	var parts []string
	if !h.LearnedAt.IsZero() && (h.LearnedRPM > 0 || h.LearnedTPM > 0) {
		parts = append(parts, "the provider reported less than configured "+now.Sub(h.LearnedAt).Round(time.Second).String()+" ago")
	}
	for _, d := range []struct {
		what    string
		ceiling float64
		at      time.Time
	}{{"rpm", h.StrictRPM, h.StrictRPMAt}, {"tpm", h.StrictTPM, h.StrictTPMAt}} {
		if !d.at.IsZero() && d.ceiling > 0 {
			parts = append(parts, fmt.Sprintf("the provider refused at %.0f %s, within the limits in force, %s ago: lowered, climbing back",
				d.ceiling, d.what, now.Sub(d.at).Round(time.Second)))
		}
	}
	return strings.Join(parts, "; ")
}
