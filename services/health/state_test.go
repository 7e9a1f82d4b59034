package health

import (
	"strings"
	"testing"
	"time"

	"github.com/sluicehq/sluice/messages"
)

// A deployment's state is the first of disabled, cooling and limited that
// holds, else ok; each ends when what taught it does.
func TestStateOf(t *testing.T) {
	now := time.Now()
	recovery := 5 * time.Minute
	for _, c := range []struct {
		name string
		h    messages.DeploymentHealth
		want string
	}{
		{"nothing learned", messages.DeploymentHealth{}, StateOK},
		{"disabled while cooling and limited", messages.DeploymentHealth{Disabled: true, CooldownUntil: now.Add(time.Minute), LearnedRPM: 30, LearnedAt: now}, StateDisabled},
		{"disabled until a time passed", messages.DeploymentHealth{Disabled: true, DisabledUntil: now.Add(-time.Second)}, StateOK},
		{"cooling while limited", messages.DeploymentHealth{CooldownUntil: now.Add(time.Minute), LearnedRPM: 30, LearnedAt: now}, StateCooling},
		{"cooled down", messages.DeploymentHealth{CooldownUntil: now.Add(-time.Second)}, StateOK},
		{"a lower limit reported", messages.DeploymentHealth{LearnedTPM: 500, LearnedAt: now}, StateLimited},
		{"a lower limit recovered", messages.DeploymentHealth{LearnedRPM: 30, LearnedAt: now.Add(-2 * recovery)}, StateOK},
		{"refused within the limits", messages.DeploymentHealth{StrictRPM: 60, StrictRPMDrop: 0.05, StrictRPMAt: now}, StateLimited},
	} {
		if got := StateOf(60, 1000, c.h, now, recovery); got != c.want {
			t.Errorf("%s: %s, want %s", c.name, got, c.want)
		}
	}
}

// LimitedBecause names each lesson that holds the limits down.
func TestLimitedBecause(t *testing.T) {
	now := time.Now()
	h := messages.DeploymentHealth{LearnedRPM: 30, LearnedAt: now.Add(-12 * time.Second), StrictTPM: 900, StrictTPMAt: now.Add(-3 * time.Second)}
	got := LimitedBecause(h, now)
	for _, want := range []string{"the provider reported less than configured 12s ago", "the provider refused at 900 tpm, within the limits in force, 3s ago"} {
		if !strings.Contains(got, want) {
			t.Errorf("LimitedBecause = %q; want it to say %q", got, want)
		}
	}
	if got := LimitedBecause(messages.DeploymentHealth{}, now); got != "" {
		t.Errorf("nothing learned: %q", got)
	}
}
