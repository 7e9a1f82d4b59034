package pace

import (
	"math"
	"testing"
	"time"

	"github.com/sluicehq/sluice/messages"
	"github.com/sluicehq/sluice/services/config"
	"github.com/sluicehq/sluice/services/limiter"
)

const twoDeployments = `
teams:
  t: {}
pools:
  m:
    deployments:
      - {id: windowed, provider: openai, base_url: "http://127.0.0.1:1/v1", region: r1, key: K1, rpm: 600, tpm: 60000}
      - {id: minute, provider: openai, base_url: "http://127.0.0.1:1/v1", region: r1, key: K2, rpm: 600, tpm: 60000, windows: [1m]}
`

func parse(t *testing.T) *config.Config {
	t.Helper()
	cfg, err := config.Parse([]byte(twoDeployments))
	if err != nil {
		t.Fatal(err)
	}
	return cfg
}

func deployment(t *testing.T, cfg *config.Config, id string) *config.Deployment {
	t.Helper()
	d, ok := cfg.Deployment(id)
	if !ok {
		t.Fatalf("no deployment %s", id)
	}
	return d
}

// inside reports whether a schedule of l, its sends up to jitter late,
// keeps a window of span w to the requests rpm allows in it.
func inside(l limiter.Limit, rpm float64, w, jitter time.Duration) bool {
	allowed := math.Ceil(rpm * w.Minutes())
	return l.BurstRequests+l.RPM/60*(w+jitter).Seconds() < allowed+1
}

// With nothing learned, a deployment is paced at its configured limits,
// inside each of its windows.
func TestConfiguredLimitsArePacedInsideTheirWindows(t *testing.T) {
	cfg := parse(t)
	now := time.Now()
	dep := deployment(t, cfg, "windowed")
	l := Of(cfg, dep, messages.DeploymentHealth{}, now)
	if l.RPM <= 0 || l.RPM > 600 || l.TPM <= 0 || l.TPM > 60000 {
		t.Fatalf("pace %+v: rates must be positive and at most the configured ones", l)
	}
	for _, w := range dep.EnforcedWindows() {
		if !inside(l, 600, w, cfg.Admission.Jitter) {
			t.Errorf("pace %+v sends more than 600 rpm allows in %v", l, w)
		}
	}
}

// Limits the provider reported lower are paced at, not the configured
// ones.
func TestLearnedLimitsLowerThePace(t *testing.T) {
	cfg := parse(t)
	now := time.Now()
	dep := deployment(t, cfg, "windowed")
	h := messages.DeploymentHealth{LearnedRPM: 300, LearnedTPM: 30000, LearnedAt: now}
	l := Of(cfg, dep, h, now)
	configured := Of(cfg, dep, messages.DeploymentHealth{}, now)
	if l.RPM > 300 || l.TPM > 30000 || l.RPM >= configured.RPM {
		t.Fatalf("pace %+v with 300 rpm learned (configured pace %+v)", l, configured)
	}
	for _, w := range dep.EnforcedWindows() {
		if !inside(l, 300, w, cfg.Admission.Jitter) {
			t.Errorf("pace %+v sends more than the learned 300 rpm allows in %v", l, w)
		}
	}
}

// A deployment with only a one-minute window is sent bursts; once the
// provider taught that it counts over a second too, it is paced inside a
// second as well, until the lesson expires.
func TestAShortWindowLessonTakesAwayTheBurst(t *testing.T) {
	cfg := parse(t)
	now := time.Now()
	dep := deployment(t, cfg, "minute")
	bursty := Of(cfg, dep, messages.DeploymentHealth{}, now)
	if inside(bursty, 600, time.Second, cfg.Admission.Jitter) {
		t.Fatalf("pace %+v for windows [1m] leaves no burst beyond a second's share", bursty)
	}
	taught := messages.DeploymentHealth{ShortWindowAt: now}
	l := Of(cfg, dep, taught, now)
	if !inside(l, 600, time.Second, cfg.Admission.Jitter) || !inside(l, 600, time.Minute, cfg.Admission.Jitter) {
		t.Fatalf("pace %+v after a short-window lesson is not inside both one second and one minute", l)
	}
	later := now.Add(2*cfg.Health.LearnedRecovery + time.Second)
	if got := Of(cfg, dep, taught, later); got != bursty {
		t.Fatalf("pace %+v after the lesson expired, want the bursty %+v", got, bursty)
	}
}

// Limits learned so far below the configured ones that a window leaves
// them no room are still paced: for the longest window alone, or at half
// their rate, never above them.
func TestLimitsNoWindowFitsAreStillPaced(t *testing.T) {
	cfg := parse(t)
	now := time.Now()
	dep := deployment(t, cfg, "windowed")
	h := messages.DeploymentHealth{LearnedRPM: 1, LearnedTPM: 1, LearnedAt: now}
	l := Of(cfg, dep, h, now)
	if err := l.Validate(); err != nil {
		t.Fatalf("pace %+v: %v", l, err)
	}
	if l.RPM <= 0 || l.RPM > 1 || l.TPM <= 0 || l.TPM > 1 {
		t.Fatalf("pace %+v for 1 rpm and 1 tpm learned", l)
	}
}
