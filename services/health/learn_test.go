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
// once by the share refused of what was sent lately, lets them climb back
// quickly to just below where the provider refused, holds them there for
// the recovery, and only then lets them climb further; its cooldown is
// short whatever the provider says to wait.
func TestRefusalLowersTheLimitsInForce(t *testing.T) {
	now := time.Unix(1000, 0)
	s := Settings{ConfiguredRPM: 600, ConfiguredTPM: 100000, Recovery: 5 * time.Minute}
	var h messages.DeploymentHealth
	// 8 refused of the last 100 sent: the provider allows about 8% less.
	refusal := Observation{Now: now, Refused: true, RefusedKind: "requests", CooldownFor: time.Minute, CooldownReason: "429",
		Sent: 100, Refusals: 8}
	if !refusal.Change(s)(&h) {
		t.Fatal("a refusal teaches")
	}
	if !h.CooldownUntil.Equal(now.Add(strictRefusalCooldown)) {
		t.Fatalf("cooldown until %v, want %v: a retry-after of a minute must not cool for a minute", h.CooldownUntil, now.Add(strictRefusalCooldown))
	}
	for _, c := range []struct {
		after time.Duration
		rpm   float64
	}{
		{0, 552},                                // 8% less at once
		{5 * time.Second, 567},                  // halfway to 97%
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
	again.Sent, again.Refusals = 50, 2
	inForce, _ := Effective(600, 100000, h, again.Now, s.Recovery)
	again.Change(s)(&h)
	if math.Abs(h.StrictRPM-inForce) > 1e-9 {
		t.Fatalf("ceiling %v, want what was in force (%v)", h.StrictRPM, inForce)
	}
	if rpm, _ := Effective(600, 100000, h, again.Now, s.Recovery); math.Abs(rpm-0.96*inForce) > 1e-9 {
		t.Fatalf("after a second lesson %v rpm, want %v", rpm, 0.96*inForce)
	}
	// A refusal that names no dimension lowers both.
	var both messages.DeploymentHealth
	(Observation{Now: now, Refused: true, Sent: 20, Refusals: 1}).Change(s)(&both)
	if rpm, tpm := Effective(600, 100000, both, now, s.Recovery); rpm != 570 || tpm != 95000 {
		t.Fatalf("an unnamed refusal: %v rpm, %v tpm; want both 5%% lower", rpm, tpm)
	}
}

// What one lesson takes is the share refused, at least 1% and at most 10%;
// a refusal whose share was not counted takes 10%, as does a lesson stored
// before lessons had a share.
func TestALessonTakesTheShareRefused(t *testing.T) {
	now := time.Unix(1000, 0)
	s := Settings{ConfiguredRPM: 6000, ConfiguredTPM: 1000000, Recovery: 5 * time.Minute}
	for _, c := range []struct {
		sent, refused int
		rpm           float64
	}{
		{1000, 1, 5940}, // a lone refusal among many: a late request
		{100, 3, 5820},
		{100, 40, 5400}, // at most 10% at once
		{0, 0, 5400},    // not counted
	} {
		var h messages.DeploymentHealth
		(Observation{Now: now, Refused: true, RefusedKind: "requests", Sent: c.sent, Refusals: c.refused}).Change(s)(&h)
		if rpm, _ := Effective(6000, 1000000, h, now, s.Recovery); math.Abs(rpm-c.rpm) > 1e-6 {
			t.Errorf("%d refused of %d sent: %v rpm, want %v", c.refused, c.sent, rpm, c.rpm)
		}
		// Ten seconds on, a drop of at most 3% stays where it was, a
		// larger one is back at 97% of where the provider refused.
		want := max(c.rpm, 0.97*6000)
		if rpm, _ := Effective(6000, 1000000, h, now.Add(strictClimb), s.Recovery); math.Abs(rpm-want) > 1e-6 {
			t.Errorf("%d refused of %d sent, 10 s later: %v rpm, want %v", c.refused, c.sent, rpm, want)
		}
	}
	old := messages.DeploymentHealth{StrictRPM: 6000, StrictRPMAt: now}
	if rpm, _ := Effective(6000, 1000000, old, now, s.Recovery); rpm != 5400 {
		t.Errorf("a lesson without a share: %v rpm, want 5400", rpm)
	}
}

// A refusal soon after a lesson, with too few requests sent since to tell
// what share the provider refuses, waits for more to be sent.
func TestALessonNeedsEnoughSent(t *testing.T) {
	now := time.Unix(1000, 0)
	s := Settings{ConfiguredRPM: 300, ConfiguredTPM: 1000000, Recovery: 5 * time.Minute}
	var h messages.DeploymentHealth
	(Observation{Now: now, Refused: true, RefusedKind: "requests", Sent: 50, Refusals: 5}).Change(s)(&h)
	first := h.StrictRPMAt
	(Observation{Now: now.Add(2 * time.Second), Refused: true, RefusedKind: "requests", Sent: 8, Refusals: 2}).Change(s)(&h)
	if !h.StrictRPMAt.Equal(first) {
		t.Fatalf("1 in 4 of 8 sent taught a lesson: %+v", h)
	}
	(Observation{Now: now.Add(5 * time.Second), Refused: true, RefusedKind: "requests", Sent: 20, Refusals: 1}).Change(s)(&h)
	if !h.StrictRPMAt.Equal(now.Add(5 * time.Second)) {
		t.Fatalf("1 of 20 sent is enough to tell: %+v", h)
	}
	(Observation{Now: now.Add(16 * time.Second), Refused: true, RefusedKind: "requests", Sent: 3, Refusals: 1}).Change(s)(&h)
	if !h.StrictRPMAt.Equal(now.Add(16 * time.Second)) {
		t.Fatalf("a refusal long after the last lesson teaches, however few were sent: %+v", h)
	}
}

// Lone refusals (requests that reached the provider late) do not
// compound into a large loss: each takes 1%, and the lost limit comes back
// after the recovery.
func TestLoneRefusalsCostLittle(t *testing.T) {
	now := time.Unix(1000, 0)
	s := Settings{ConfiguredRPM: 6000, ConfiguredTPM: 1000000, Recovery: 5 * time.Minute}
	var h messages.DeploymentHealth
	// One late request every 20 s for 5 minutes, among the 100 a second
	// sent.
	for i := range 15 {
		at := now.Add(time.Duration(i) * 20 * time.Second)
		(Observation{Now: at, Refused: true, RefusedKind: "requests", Sent: 1000, Refusals: 1}).Change(s)(&h)
	}
	end := now.Add(5 * time.Minute)
	if rpm, _ := Effective(6000, 1000000, h, end, s.Recovery); rpm < 0.86*6000 || rpm > 0.99*6000 {
		t.Fatalf("after 15 lone refusals: %v rpm, want 1%% less for each", rpm)
	}
	if rpm, _ := Effective(6000, 1000000, h, end.Add(2*s.Recovery), s.Recovery); rpm != 6000 {
		t.Fatalf("%v rpm once refusals stopped for twice the recovery, want the configured 6000", rpm)
	}
}

// Against a provider that allows a fifth less than configured, lessons on
// the share it refuses bring the limits in force under what it allows
// within seconds, and keep at least 95% of it.
func TestLessonsFindAStricterProvider(t *testing.T) {
	for _, rpm := range []int64{300, 6000} {
		now := time.Unix(1000, 0)
		s := Settings{ConfiguredRPM: rpm, ConfiguredTPM: 1000000, Recovery: 5 * time.Minute}
		allowed := 0.8 * float64(rpm) / 60 // per second
		var h messages.DeploymentHealth
		last := 0
		// Each second: what is in force is sent (99% of it, as the pace
		// keeps), and what the provider allows of it is served; the
		// executor reports a refusal with what it sent since the last
		// lesson took effect.
		var sent, refused []float64
		lastRefusal := -1
		for sec := range 60 {
			at := now.Add(time.Duration(sec) * time.Second)
			inForce, _ := Effective(rpm, 1000000, h, at, s.Recovery)
			rate := 0.99 * inForce / 60
			sent = append(sent, rate)
			refused = append(refused, max(0, rate-allowed))
			if refused[sec] < 1e-9 {
				continue
			}
			lastRefusal = sec
			var n, k float64
			for i := last; i <= sec; i++ {
				n, k = n+sent[i], k+refused[i]
			}
			before := h.StrictRPMAt
			(Observation{Now: at, Refused: true, RefusedKind: "requests", Sent: int(n), Refusals: max(1, int(k))}).Change(s)(&h)
			if !h.StrictRPMAt.Equal(before) {
				last = sec + 1
			}
		}
		if lastRefusal >= 30 {
			t.Errorf("%d rpm: the provider still refused at %d s", rpm, lastRefusal)
		}
		inForce, _ := Effective(rpm, 1000000, h, now.Add(time.Minute), s.Recovery)
		used := 0.99 * inForce / 60 / allowed
		t.Logf("%d rpm: last refusal at %d s, then %.1f%% of what the provider allows", rpm, lastRefusal, 100*used)
		if used < 0.95 || used > 1 {
			t.Errorf("%d rpm: %.1f%% of what the provider allows sent, want 95%% to 100%%", rpm, 100*used)
		}
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
