package health

import (
	"math"
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

// A refusal while sluice kept within the limits in force lowers them at
// once, lets them climb back quickly to just below where the provider
// refused, and only slowly beyond; its cooldown is short whatever the
// provider says to wait.
func TestRefusalLowersTheLimitsInForce(t *testing.T) {
	now := time.Unix(1000, 0)
	s := Settings{ConfiguredRPM: 600, ConfiguredTPM: 100000, Recovery: 5 * time.Minute}
	var h messages.DeploymentHealth
	refusal := Observation{Now: now, Refused: true, RefusedKind: "requests", CooldownFor: time.Minute, CooldownReason: "429"}
	if !refusal.Change(s)(&h) {
		t.Fatal("a refusal teaches")
	}
	if !h.CooldownUntil.Equal(now.Add(StrictCooldown)) {
		t.Fatalf("cooldown until %v, want %v: a retry-after of a minute must not cool for a minute", h.CooldownUntil, now.Add(StrictCooldown))
	}
	for _, c := range []struct {
		after time.Duration
		rpm   float64
	}{
		{0, 540},                                // 90% at once
		{5 * time.Second, 561},                  // halfway to 97%
		{10 * time.Second, 582},                 // 97% of where it refused
		{10*time.Second + 150*time.Second, 582}, // held there for recovery
		{10*time.Second + 450*time.Second, 591}, // then slowly to the configured
		{time.Hour, 600},
	} {
		rpm, tpm := Effective(600, 100000, h, now.Add(c.after), s.Recovery)
		if math.Abs(rpm-c.rpm) > 1e-6 || tpm != 100000 {
			t.Errorf("%v after: %v rpm and %v tpm, want %v and the configured tokens (the provider refused requests)", c.after, rpm, tpm, c.rpm)
		}
	}
	// Refusals right after a lesson were sent before it took effect.
	again := refusal
	again.Now = now.Add(500 * time.Millisecond)
	before := h
	again.Change(s)(&h)
	if h.StrictRPM != before.StrictRPM || !h.StrictRPMAt.Equal(before.StrictRPMAt) {
		t.Fatalf("a refusal 500ms after the lesson lowered again: %+v", h)
	}
	// One later is a new lesson, from what is in force then.
	again.Now = now.Add(2 * time.Second)
	inForce, _ := Effective(600, 100000, h, again.Now, s.Recovery)
	again.Change(s)(&h)
	if math.Abs(h.StrictRPM-inForce) > 1e-9 {
		t.Fatalf("ceiling %v, want what was in force (%v)", h.StrictRPM, inForce)
	}
	if rpm, _ := Effective(600, 100000, h, again.Now, s.Recovery); math.Abs(rpm-0.9*inForce) > 1e-9 {
		t.Fatalf("after a second lesson %v rpm, want %v", rpm, 0.9*inForce)
	}
	// A refusal that names no dimension lowers both.
	var both messages.DeploymentHealth
	(Observation{Now: now, Refused: true}).Change(s)(&both)
	if rpm, tpm := Effective(600, 100000, both, now, s.Recovery); rpm != 540 || tpm != 90000 {
		t.Fatalf("an unnamed refusal: %v rpm, %v tpm; want both at 90%%", rpm, tpm)
	}
}

// A deployment paced with bursts (its windows all longer than a second)
// that the provider refuses learns first that the provider counts over a
// second too, its limits untouched; refusals after that lower them.
func TestBurstRefusalTeachesAShortWindowFirst(t *testing.T) {
	now := time.Unix(1000, 0)
	s := Settings{ConfiguredRPM: 600, ConfiguredTPM: 100000, Recovery: 5 * time.Minute}
	var h messages.DeploymentHealth
	if ShortWindow(h, now, s.Recovery) {
		t.Fatal("nothing learned yet")
	}
	refusal := Observation{Now: now, Refused: true, Bursty: true, CooldownFor: time.Second}
	refusal.Change(s)(&h)
	if !ShortWindow(h, now, s.Recovery) || !h.StrictRPMAt.IsZero() {
		t.Fatalf("a refused burst: %+v; want a short window learned and no limit lowered", h)
	}
	if rpm, _ := Effective(600, 100000, h, now, s.Recovery); rpm != 600 {
		t.Fatalf("limits in force %v, want the configured 600", rpm)
	}
	refusal.Now = now.Add(2 * time.Second)
	refusal.Change(s)(&h)
	if rpm, _ := Effective(600, 100000, h, refusal.Now, s.Recovery); rpm != 540 {
		t.Fatalf("a refusal with the short window in force: %v rpm, want 540", rpm)
	}
	if !ShortWindow(h, now.Add(9*time.Minute), s.Recovery) || ShortWindow(h, now.Add(11*time.Minute), s.Recovery) {
		t.Fatal("the short window holds twice the recovery after the last lesson")
	}
}
