package health

import (
	"testing"
	"time"

	"github.com/sluicehq/sluice/messages"
)

func TestEffectiveRecoversLinearly(t *testing.T) {
	at := time.Unix(1000, 0)
	h := messages.DeploymentHealth{LearnedRPM: 100, LearnedTPM: 0, LearnedAt: at}
	cases := []struct {
		after time.Duration
		rpm   float64
	}{{0, 100}, {time.Minute, 150}, {2 * time.Minute, 200}, {time.Hour, 200}}
	for _, c := range cases {
		rpm, tpm := Effective(200, 5000, h, at.Add(c.after), 2*time.Minute)
		if rpm != c.rpm || tpm != 5000 {
			t.Errorf("after %v: rpm %v tpm %v, want %v and the configured 5000", c.after, rpm, tpm, c.rpm)
		}
	}
	// A learned limit at or above the configuration is no limit at all.
	if rpm, _ := Effective(200, 5000, messages.DeploymentHealth{LearnedRPM: 900, LearnedAt: at}, at, time.Minute); rpm != 200 {
		t.Fatalf("headers must never raise a limit: %v", rpm)
	}
}

func TestObservationChanges(t *testing.T) {
	now := time.Unix(1000, 0)
	s := Settings{ConfiguredRPM: 600, ConfiguredTPM: 100000, Recovery: 5 * time.Minute}

	var h messages.DeploymentHealth
	if (Observation{Now: now, LimitRequests: 600, LimitTokens: -1}).Change(s)(&h) {
		t.Fatal("a provider confirming the configuration teaches nothing")
	}
	if (Observation{Now: now, LimitRequests: 5000}).Change(s)(&h) {
		t.Fatal("a provider allowing more than configured must not raise the limit")
	}
	if !(Observation{Now: now, LimitRequests: 120, LimitTokens: -1}).Change(s)(&h) || h.LearnedRPM != 120 || !h.LearnedAt.Equal(now) {
		t.Fatalf("a lower limit is learned: %+v", h)
	}
	// The same report a moment later is not worth a write...
	if (Observation{Now: now.Add(time.Second), LimitRequests: 120}).Change(s)(&h) {
		t.Fatal("repeating a learned limit must not write")
	}
	// ...but once recovery has climbed past it, it is refreshed.
	if !(Observation{Now: now.Add(time.Minute), LimitRequests: 120}).Change(s)(&h) || !h.LearnedAt.Equal(now.Add(time.Minute)) {
		t.Fatalf("a limit the provider still reports must stop the recovery: %+v", h)
	}

	// Cooldowns extend, never shorten, and small extensions are skipped.
	var c messages.DeploymentHealth
	if !(Observation{Now: now, CooldownFor: 2 * time.Second, CooldownReason: "429"}).Change(s)(&c) || !c.CooldownUntil.Equal(now.Add(2*time.Second)) {
		t.Fatalf("cooldown: %+v", c)
	}
	if (Observation{Now: now, CooldownFor: time.Second}).Change(s)(&c) {
		t.Fatal("a shorter cooldown must not shorten the known one")
	}
	if (Observation{Now: now, CooldownFor: 2*time.Second + 10*time.Millisecond}).Change(s)(&c) {
		t.Fatal("a cooldown a few ms longer is not worth a write")
	}
	if !(Observation{Now: now, CooldownFor: time.Hour}).Change(s)(&c) || c.CooldownUntil.After(now.Add(MaxCooldown)) {
		t.Fatalf("a cooldown is clamped to MaxCooldown: %v", c.CooldownUntil)
	}

	// Quota: disabled until re-enabled, or for QuotaDisable.
	var q messages.DeploymentHealth
	if !(Observation{Now: now, QuotaExhausted: true}).Change(s)(&q) || !q.DisabledNow(now.Add(24*time.Hour)) {
		t.Fatalf("insufficient_quota disables until re-enabled: %+v", q)
	}
	if (Observation{Now: now, QuotaExhausted: true}).Change(s)(&q) {
		t.Fatal("a disabled deployment is not disabled again")
	}
	s.QuotaDisable = time.Hour
	var q2 messages.DeploymentHealth
	(Observation{Now: now, QuotaExhausted: true}).Change(s)(&q2)
	if !q2.DisabledNow(now.Add(59*time.Minute)) || q2.DisabledNow(now.Add(61*time.Minute)) {
		t.Fatalf("quota_disable bounds the time out of rotation: %+v", q2)
	}
}
