package dispatcher

import (
	"fmt"
	"hash/fnv"
	"math"
	"os"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/sluicehq/sluice/messages"
	"github.com/sluicehq/sluice/services/limiter"
	"github.com/sluicehq/sluice/services/pace"
)

// Properties of sluice's admission, checked on the simulator (see
// simulator_test.go) over a handful of seeds each. A failing seed is
// logged, and replays exactly.

// simFull reports whether the properties run at their full sizes
// (SLUICE_SIM=full): 100,000 admissions per seed for the shares, an hour
// of traffic for exactly-once, three to five seeds each. That takes about
// 25 s, and minutes under the race detector, so the test run (and CI, with
// -race) checks every property on fewer seeds and shorter runs.
func simFull() bool { return os.Getenv("SLUICE_SIM") == "full" }

// simSeeds are the seeds each property runs over.
var simSeeds = []uint64{1, 2, 3, 4, 5}

// poolYAML is pool m of the given deployments (id, rpm, windows YAML or
// ""), and teams and the rest.
func poolYAML(deps [][3]string, rest string) string {
	var b strings.Builder
	b.WriteString("pools:\n  m:\n    deployments:\n")
	for i, d := range deps {
		w := ""
		if d[2] != "" {
			w = ", windows: " + d[2]
		}
		fmt.Fprintf(&b, "      - {id: %s, provider: openai, base_url: \"http://provider.invalid/v1\", region: r%d, key: K%d, rpm: %s, tpm: 100000000%s}\n", d[0], i%2, i, d[1], w)
	}
	b.WriteString(rest)
	return b.String()
}

// spreads are ways calls are spread over dispatchers: evenly at random;
// each team mostly (80%) to a dispatcher of its own; most (70%) of
// everything to the first.
func spreadOf(s *sim, kind int, teams []string) (string, func(string, []*simNode) *simNode) {
	switch kind % 3 {
	case 1:
		return "by team", func(team string, live []*simNode) *simNode {
			if s.rng.Float64() < 0.8 {
				return live[slices.Index(teams, team)%len(live)]
			}
			return live[s.rng.IntN(len(live))]
		}
	case 2:
		return "mostly one", func(_ string, live []*simNode) *simNode {
			if s.rng.Float64() < 0.7 {
				return live[0]
			}
			return live[s.rng.IntN(len(live))]
		}
	}
	return "even", func(_ string, live []*simNode) *simNode { return live[s.rng.IntN(len(live))] }
}

var patterns = []string{"steady", "poisson", "bursty"}

// 1. Teams of weights 1, 2 and 5 with deep queues share a pool by weight,
// within 2% of each team's share over 100,000 admissions, whatever their
// arrival patterns and however their calls are spread over three
// dispatchers.
func TestSimSharesByWeight(t *testing.T) {
	// An admission costs some 30 µs of simulation without the race
	// detector and ten times that with it: -short checks 20,000 of them,
	// for one seed (fewer leave the first announcements' half second,
	// before dispatchers know of each other, too large a part).
	admissions := 100_000
	seeds := simSeeds[:3]
	if !simFull() {
		admissions, seeds = 20_000, seeds[:1]
	}
	for _, seed := range seeds {
		t.Run(fmt.Sprint(seed), func(t *testing.T) {
			teams := []string{"a", "b", "c"}
			weights := []float64{1, 2, 5}
			s := newSim(t, seed, poolYAML([][3]string{{"e", "30000", ""}, {"w", "30000", ""}},
				"teams:\n  a: {pools: {m: {weight: 1}}}\n  b: {pools: {m: {weight: 2}}}\n  c: {pools: {m: {weight: 5}}}\n"), 3)
			spread, f := spreadOf(s, int(seed), teams)
			s.spread = f
			capacity := 1000.0 // calls per second
			var desc []string
			for i, team := range teams {
				p := patterns[s.rng.IntN(len(patterns))]
				desc = append(desc, team+" "+p)
				s.arrive(arrivals{team: team, tier: messages.TierStandard, pattern: p, burst: 50,
					rate: 1.25 * capacity * weights[i] / 8, prefill: 3000})
			}
			s.run(time.Hour, func() bool { return len(s.admissions) >= admissions })
			counts := map[string]int{}
			for _, a := range s.admissions[:admissions] {
				counts[a.team]++
			}
			t.Logf("seed %d, spread %s, arrivals %s: %v in %s simulated (%d passes, %d events)", seed, spread, strings.Join(desc, ", "), counts, s.now.Sub(simStart).Round(time.Second), s.passes, s.seq)
			for i, team := range teams {
				want := weights[i] / 8
				got := float64(counts[team]) / float64(admissions)
				if math.Abs(got/want-1) > 0.02 {
					t.Errorf("team %s (weight %v) had %.4f of the admissions, want %.4f ± 2%%", team, weights[i], got, want)
				}
			}
		})
	}
}

// 2. A critical call offered behind 100,000 waiting batch calls, spread
// over three dispatchers, is admitted within one free slot: at most one
// batch call decided after it was offered goes out before it.
func TestSimCriticalBehindBatch(t *testing.T) {
	seeds := simSeeds
	if !simFull() {
		seeds = seeds[:1]
	}
	for _, seed := range seeds {
		t.Run(fmt.Sprint(seed), func(t *testing.T) {
			s := newSim(t, seed, poolYAML([][3]string{{"e", "3000", ""}, {"w", "3000", ""}},
				"teams:\n  ops: {}\n  bulk: {}\ntiers:\n  batch: {max_utilization: 1}\n"), 3)
			s.arrive(arrivals{team: "bulk", tier: messages.TierBatch, prefill: 100_000})
			s.run(10*time.Second+time.Duration(s.rng.Int64N(int64(time.Second))), nil)
			offered := s.now
			before := len(s.admissions)
			id := s.newCall("ops", messages.TierCritical, 100, time.Hour)
			var crit *simAdmission
			s.onAdmit = func(a simAdmission) {
				if a.call == id {
					crit = &a
				}
			}
			s.run(time.Minute, func() bool { return crit != nil })
			if crit == nil {
				t.Fatal("the critical call was not admitted within a minute")
			}
			ahead := 0
			for _, a := range s.admissions[before:] {
				if a.tier == messages.TierBatch && a.sendAt.Before(crit.sendAt) {
					ahead++
				}
			}
			t.Logf("seed %d: admitted %s after it was offered, sent %s after; %d batch calls decided since go out before it",
				seed, crit.at.Sub(offered), crit.sendAt.Sub(offered), ahead)
			if ahead > 1 {
				t.Errorf("%d batch calls decided after the critical call was offered go out before it, want at most 1", ahead)
			}
		})
	}
}

// 3. Caps, the critical reserve, guarantees and minimum shares hold at
// every instant: in every window of the sends, a capped team's sends and
// a deployment's non-critical sends fit their buckets, and in every ten
// seconds a guaranteed team with a deep queue got its guarantee and the
// batch tier its minimum share.
func TestSimSharesHold(t *testing.T) {
	run, seeds := 3*time.Minute, simSeeds[:3]
	if !simFull() {
		run, seeds = 30*time.Second, seeds[:2]
	}
	for _, seed := range seeds {
		t.Run(fmt.Sprint(seed), func(t *testing.T) {
			s := newSim(t, seed, poolYAML([][3]string{{"e", "3000", ""}, {"w", "3000", ""}}, `teams:
  ops: {}
  capped: {pools: {m: {cap_rpm: 600}}}
  guar: {pools: {m: {guaranteed_rpm: 1200}}}
  big: {pools: {m: {weight: 5}}}
  bulk: {}
tiers:
  critical: {reserve: 0.1}
  batch: {min_share: 0.1, max_utilization: 1}
`), 3)
			teams := []string{"ops", "capped", "guar", "big", "bulk"}
			spread, f := spreadOf(s, int(seed), teams)
			s.spread = f
			p := func() string { return patterns[s.rng.IntN(len(patterns))] }
			s.arrive(arrivals{team: "ops", tier: messages.TierCritical, pattern: p(), burst: 5, rate: 2})
			s.arrive(arrivals{team: "capped", tier: messages.TierHigh, pattern: p(), burst: 50, rate: 30, prefill: 2000})
			s.arrive(arrivals{team: "guar", tier: messages.TierStandard, pattern: p(), burst: 50, rate: 30, prefill: 2000})
			s.arrive(arrivals{team: "big", tier: messages.TierHigh, pattern: p(), burst: 50, rate: 100, prefill: 5000})
			s.arrive(arrivals{team: "bulk", tier: messages.TierBatch, pattern: p(), burst: 50, rate: 30, prefill: 2000})
			s.run(run, nil)

			cfg := s.cfg
			burst, ttl := cfg.Admission.Burst, cfg.Admission.LeaseTTL
			sends := func(keep func(simAdmission) bool) []time.Time {
				var out []time.Time
				for _, a := range s.admissions {
					if keep(a) {
						out = append(out, a.sendAt)
					}
				}
				slices.SortFunc(out, func(a, b time.Time) int { return a.Compare(b) })
				return out
			}
			counts := map[string]int{}
			for _, a := range s.admissions {
				counts[a.team]++
			}
			t.Logf("seed %d, spread %s: %d admissions in %s: %v", seed, spread, len(s.admissions), run, counts)

			// Upper bounds: the cap, and each deployment's non-critical
			// bucket.
			t.Run("cap", func(t *testing.T) {
				capped := sends(func(a simAdmission) bool { return a.team == "capped" })
				checkAtMost(t, "team capped's sends", capped, limiter.NewLimit(600, 0, burst), ttl)
			})
			// The cap binds, not the pool: the team's share of the high
			// tier by weight (a sixth of what the critical calls, the
			// guarantee and batch's share leave: about 670 rpm) is more
			// than its cap, if only by a tenth, so that the high tier's
			// yielding to peers' guarantees and minimum shares may keep it
			// a little below.
			t.Run("cap reached", func(t *testing.T) {
				capped := sends(func(a simAdmission) bool { return a.team == "capped" && a.at.After(simStart.Add(5*time.Second)) })
				want := 0.85 * 600 / 60 * (run - 5*time.Second).Seconds()
				if float64(len(capped)) < want {
					t.Errorf("team capped (high tier, capped at 600 rpm, a deep queue) had %d calls admitted after the first 5s of %s, want at least %.0f (85%% of its cap)", len(capped), run, want)
				}
			})
			t.Run("critical reserve", func(t *testing.T) {
				reserve := cfg.Tiers.Critical.Reserve
				for _, dep := range cfg.Pools["m"].Deployments {
					lim := pace.Of(cfg, dep, messages.DeploymentHealth{}, s.now)
					nc := sends(func(a simAdmission) bool { return a.dep == dep.ID && a.tier != messages.TierCritical })
					checkAtMost(t, "non-critical sends to "+dep.ID, nc, limiter.NewLimit((1-reserve)*lim.RPM, 0, burst), ttl)
				}
				// What the reserve is for: every critical call offered went
				// at once (within the lease's time), and none waits.
				waiting := 0
				for _, n := range s.nodes {
					waiting += n.d.queue.waitingFor("ops")
				}
				if waiting > 0 {
					t.Errorf("%d critical calls waiting at the end", waiting)
				}
			})
			// Lower bounds, once the queues are deep: the guarantee and
			// batch's minimum share, over every ten seconds.
			capacity := 0.0
			for _, dep := range cfg.Pools["m"].Deployments {
				capacity += pace.Of(cfg, dep, messages.DeploymentHealth{}, s.now).RPM
			}
			from, until := simStart.Add(5*time.Second), s.now.Add(-10*time.Second)
			t.Run("guarantee", func(t *testing.T) {
				checkAtLeast(t, "team guar's sends", sends(func(a simAdmission) bool { return a.team == "guar" }), 1200, burst+2*ttl+3*50*time.Millisecond, from, until)
			})
			t.Run("minimum share", func(t *testing.T) {
				checkAtLeast(t, "batch sends", sends(func(a simAdmission) bool { return a.tier == messages.TierBatch }), 0.1*capacity, burst+2*ttl+3*50*time.Millisecond, from, until)
			})
		})
	}
}

// checkAtMost fails t unless, in every window of sends, their count fits
// a bucket of limit l: its capacity plus its rate over the window and one
// lease's time (work is sent up to a lease's time after it was admitted).
func checkAtMost(t *testing.T, what string, sends []time.Time, l limiter.Limit, ttl time.Duration) {
	t.Helper()
	rate := l.RPM / 60
	// The most sends in any window [i, j] less the rate over it: the
	// largest (j - i + 1) - rate × (t_j - t_i), over i ≤ j.
	best, worst, at := math.Inf(-1), math.Inf(-1), 0
	for j, tj := range sends {
		x := float64(j)
		if v := rate*float64(tj.UnixNano())/1e9 - x; v > best {
			best = v
		}
		if excess := best + x + 1 - rate*float64(tj.UnixNano())/1e9; excess > worst {
			worst, at = excess, j
		}
	}
	bound := l.BurstRequests + rate*ttl.Seconds()
	if worst > bound+1e-6 {
		t.Errorf("%s: a window ending at %s holds %.2f more than its rate allows, want at most %.2f", what, sends[at].Sub(simStart), worst, bound)
	}
}

// checkAtLeast fails t unless every ten seconds from from to until hold
// at least rpm's share of sends, less slack's worth of it and 2%. The
// slack is a bucket's capacity, a lease's time between admission and
// send, another for what a peer had admitted before it heard it should
// yield (its deferral frees only what it has not placed yet), and a
// settlement interval per dispatcher: a soft share is charged when
// settlements are written, so each dispatcher may admit that much on
// credit another has spent.
func checkAtLeast(t *testing.T, what string, sends []time.Time, rpm float64, slack time.Duration, from, until time.Time) {
	t.Helper()
	const span = 10 * time.Second
	want := rpm/60*span.Seconds()*0.98 - rpm/60*slack.Seconds()
	least, leastAt := math.MaxInt, time.Time{}
	j := 0
	for i, start := range sends {
		if start.Before(from) || start.After(until) {
			continue
		}
		for j < len(sends) && sends[j].Before(start.Add(span)) {
			j++
		}
		if n := j - i; n < least {
			least, leastAt = n, start
		}
	}
	if float64(least) < want {
		t.Errorf("%s: %d in the ten seconds from %s, want at least %.0f", what, least, leastAt.Sub(simStart), want)
	}
}

// 4. Over an hour of bursty traffic, with 5xx, timeouts, 429s from a key
// shared with an outside user, and dispatchers crashing and coming back,
// no attempt is admitted twice and every call ends exactly once:
// succeeded, given up by its executor, or answered by a dispatcher.
func TestSimOnceAcrossCrashes(t *testing.T) {
	hour, seeds := time.Hour, simSeeds[:3]
	if !simFull() {
		hour, seeds = 5*time.Minute, seeds[:1]
	}
	for _, seed := range seeds {
		t.Run(fmt.Sprint(seed), func(t *testing.T) {
			s := newSim(t, seed, poolYAML([][3]string{{"e", "600", ""}, {"w", "600", ""}},
				"teams:\n  a: {pools: {m: {weight: 1}}}\n  b: {pools: {m: {weight: 3}}}\n  ops: {}\nretry:\n  attempt_timeout: 5s\n"), 3)
			// The key of w is shared with an outside user: sluice is
			// configured for 600 of its 660 rpm, but the outside user
			// sends 120, and the provider refuses what sluice cannot know
			// of, which the executors retry.
			s.providers["w"].rpm, s.providers["w"].outside = 660, 120
			s.p5xx, s.pTimeout = 0.02, 0.005
			teams := []string{"a", "b", "ops"}
			spread, f := spreadOf(s, int(seed), teams)
			s.spread = f
			s.arrive(arrivals{team: "a", tier: messages.TierStandard, pattern: "bursty", burst: 40, rate: 8, timeout: 2 * time.Minute, until: hour})
			s.arrive(arrivals{team: "b", tier: messages.TierBatch, pattern: "poisson", rate: 8, timeout: 2 * time.Minute, until: hour})
			s.arrive(arrivals{team: "ops", tier: messages.TierCritical, pattern: "steady", rate: 1, timeout: time.Minute, until: hour})
			// Two crashes at seeded times; the first comes back a minute
			// later under a new id.
			for i := range 2 {
				at := time.Duration(s.rng.Int64N(int64(hour * 3 / 4)))
				s.at(simStart.Add(at), func() {
					if live := s.up(); len(live) > 1 {
						s.crash(live[s.rng.IntN(len(live))], time.Duration(1-i)*time.Minute)
					}
				})
			}
			s.run(hour+10*time.Minute, nil)
			t.Logf("seed %d, spread %s: %d calls, %d admissions, %d passes; outcomes %v; answers %v; %d crashes, %d calls redelivered; 429s %v",
				seed, spread, s.calls, len(s.admissions), s.passes, s.outcomes, s.answers, s.crashes, s.redelivered, s.tooMany)
			for key, n := range s.attempts {
				if n != 1 {
					t.Errorf("attempt %s admitted %d times", key, n)
				}
			}
			ended := 0
			for id, n := range s.terminal {
				ended++
				if n != 1 {
					t.Errorf("call %s ended %d times", id, n)
				}
			}
			if ended != s.calls {
				t.Errorf("%d of %d calls ended", ended, s.calls)
			}
		})
	}
}

// 5. Configured with the provider's limits, sluice draws no 429 from a
// provider that counts a sliding minute, fixed seconds, a token bucket
// (admission.burst deep), or sliding seconds and minutes, alone or on a
// key shared with an outside user (sluice configured for what it leaves).
func TestSimProviderLimits(t *testing.T) {
	seeds := simSeeds[:3]
	if !simFull() {
		seeds = seeds[:1]
	}
	for _, seed := range seeds {
		t.Run(fmt.Sprint(seed), func(t *testing.T) {
			s := newSim(t, seed, poolYAML([][3]string{{"minute", "1200", "[1m]"}, {"seconds", "1200", "[1s]"}, {"bucket", "1200", "[]"}, {"openai", "1200", ""}, {"shared", "1200", ""}},
				"teams:\n  a: {}\n  b: {pools: {m: {weight: 2}}}\n"), 3)
			// The shared key's limit is 1,500 rpm, of which an outside user
			// sends 300, evenly.
			s.providers["shared"].rpm, s.providers["shared"].outside = 1500, 300
			spread, f := spreadOf(s, int(seed), []string{"a", "b"})
			s.spread = f
			s.arrive(arrivals{team: "a", tier: messages.TierStandard, pattern: "bursty", burst: 100, rate: 50, prefill: 1000})
			s.arrive(arrivals{team: "b", tier: messages.TierStandard, pattern: "poisson", rate: 50, prefill: 1000})
			run := 5 * time.Minute
			if !simFull() {
				run = time.Minute
			}
			s.run(run, nil)
			out := s.providers["shared"]
			t.Logf("seed %d, spread %s: %d admissions; sent %v; 429s %v; the outside user sent %d, %d refused",
				seed, spread, len(s.admissions), s.sent, s.tooMany, out.outsideSent, out.outsideRefused)
			if out.outsideRefused > 0 {
				t.Errorf("the outside user had %d of its %d requests refused: sluice took more than its part of the key", out.outsideRefused, out.outsideSent)
			}
			for id, n := range s.tooMany {
				t.Errorf("%d 429s from %s (%s): sluice sent past the provider's limit", n, id, s.providers[id].kind)
			}
		})
	}
}

// The simulator replays a seed exactly: the same admissions, in the same
// order, to the same deployments at the same send times, through crashes,
// failures and retries.
func TestSimReplays(t *testing.T) {
	digest := func(seed uint64, run time.Duration) (uint64, int) {
		s := newSim(t, seed, poolYAML([][3]string{{"e", "1200", ""}, {"w", "600", "[]"}},
			"teams:\n  a: {pools: {m: {weight: 1}}}\n  b: {pools: {m: {weight: 3}}}\n  ops: {}\nretry:\n  attempt_timeout: 5s\n"), 3)
		s.providers["w"].rpm = 500
		s.p5xx, s.pTimeout = 0.03, 0.01
		s.arrive(arrivals{team: "a", tier: messages.TierStandard, pattern: "bursty", burst: 30, rate: 15, timeout: time.Minute})
		s.arrive(arrivals{team: "b", tier: messages.TierBatch, pattern: "poisson", rate: 15, timeout: time.Minute})
		s.arrive(arrivals{team: "ops", tier: messages.TierCritical, pattern: "steady", rate: 1, timeout: time.Minute})
		s.at(simStart.Add(time.Minute+time.Duration(s.rng.Int64N(int64(time.Minute)))), func() { s.crash(s.nodes[s.rng.IntN(3)], 20*time.Second) })
		s.run(run, nil)
		h := fnv.New64a()
		for _, a := range s.admissions {
			fmt.Fprintf(h, "%s %s %s %s %d|", a.at.Format(time.RFC3339Nano), a.node, a.attempt, a.dep, a.sendAt.UnixNano())
		}
		return h.Sum64(), len(s.admissions)
	}
	run, seeds := 4*time.Minute, simSeeds[:2]
	if !simFull() {
		run, seeds = time.Minute, seeds[:1]
	}
	for _, seed := range seeds {
		a, n := digest(seed, run)
		b, m := digest(seed, run)
		if a != b || n != m {
			t.Errorf("seed %d ran twice: %d admissions (digest %x), then %d (%x)", seed, n, a, m, b)
		}
	}
}
