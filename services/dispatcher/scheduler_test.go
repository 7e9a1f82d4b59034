package dispatcher

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/sluicehq/sluice/messages"
	"github.com/sluicehq/sluice/services/config"
	"github.com/sluicehq/sluice/services/limiter"
)

// scheduler drives an offline dispatcher's scheduler (see offline.go)
// event by event on a manual clock: calls offered and canceled through its
// inbox, passes run when asked, and every decision recorded, none carried
// out.
type scheduler struct {
	t   *testing.T
	now time.Time
	d   *Dispatcher
	got *decisions
	// decided are the calls decided so far, by id: admitted or answered.
	decided map[string]int
}

// schedulerYAML is a pool m of one deployment at rpm, and teams.
func schedulerYAML(rpm int, teams, extra string) string {
	return fmt.Sprintf(`pools:
  m:
    deployments:
      - {id: only, provider: openai, base_url: "http://provider.invalid/v1", region: us-east, key: KEY, rpm: %d, tpm: 100000000}
teams:
%s%s`, rpm, teams, extra)
}

func newScheduler(t *testing.T, yaml string) *scheduler {
	t.Helper()
	cfg, err := config.Parse([]byte(yaml))
	if err != nil {
		t.Fatal(err)
	}
	s := &scheduler{t: t, now: time.Date(2026, 12, 4, 12, 0, 0, 0, time.UTC), got: &decisions{}, decided: map[string]int{}}
	if s.d, err = newOffline(cfg, func() time.Time { return s.now }, s.got); err != nil {
		t.Fatal(err)
	}
	return s
}

// offer posts n calls of team in tier, with ids prefix-0 on, each
// needing tokens, with the given time to their deadline.
func (s *scheduler) offer(prefix, team string, tier messages.Tier, n int, tokens int64, timeout time.Duration) []string {
	ids := make([]string, n)
	for i := range ids {
		ids[i] = fmt.Sprintf("%s-%d", prefix, i)
		t := messages.Ticket{
			Team: team, Tier: tier, AcceptedAt: s.now, Attempt: 1, Deadline: s.now.Add(timeout),
			Call: messages.CallRequest{ID: ids[i], Model: "m", Endpoint: messages.EndpointChatCompletions},
		}
		s.d.post(callOffered{&waiting{ticket: t, need: limiter.Amount{Requests: 1, Tokens: float64(tokens)}, since: s.now, touched: s.now}, true})
	}
	return ids
}

// step applies what was posted and runs one pass; it returns what the
// pass decided, and how long the scheduler would sleep.
func (s *scheduler) step() ([]admission, []answer, time.Duration) {
	s.d.applyEvents()
	wait := s.d.pass(context.Background())
	adm, ans := s.got.admissions, s.got.answers
	s.got.admissions, s.got.answers = nil, nil
	for _, a := range adm {
		s.decided[a.w.ticket.Call.ID]++
	}
	for _, a := range ans {
		s.decided[a.w.ticket.Call.ID]++
	}
	return adm, ans, wait
}

// run steps, moving the clock by each pass's wait, until until returns
// true or limit passes (then the test fails); it returns every admission.
func (s *scheduler) run(limit time.Duration, until func(adm []admission, ans []answer) bool) []admission {
	s.t.Helper()
	end := s.now.Add(limit)
	var all []admission
	for {
		adm, ans, wait := s.step()
		all = append(all, adm...)
		if until(adm, ans) {
			return all
		}
		if !s.now.Before(end) {
			s.t.Fatalf("not done after %s of simulated time", limit)
		}
		s.now = s.now.Add(wait)
	}
}

// once fails the test unless every id was decided exactly once.
func (s *scheduler) once(ids ...[]string) {
	s.t.Helper()
	for _, list := range ids {
		for _, id := range list {
			if n := s.decided[id]; n != 1 {
				s.t.Errorf("call %s decided %d times, want once", id, n)
			}
		}
	}
}

// Two teams of weights 3 and 1 with deep queues share the pool 3:1,
// admission by admission; every call is admitted once.
func TestSchedulerSharesByWeight(t *testing.T) {
	s := newScheduler(t, schedulerYAML(6000, "  a: {pools: {m: {weight: 3}}}\n  b: {pools: {m: {weight: 1}}}\n", ""))
	a := s.offer("a", "a", messages.TierStandard, 900, 10, time.Hour)
	b := s.offer("b", "b", messages.TierStandard, 300, 10, time.Hour)
	n := 0
	all := s.run(time.Hour, func(adm []admission, _ []answer) bool {
		n += len(adm)
		return n == 1200
	})
	// Each prefix of the admissions is split 3:1, within one call of each
	// team's fair-queuing turn.
	counts := map[string]int{}
	for i, x := range all {
		counts[x.w.ticket.Team]++
		if k := i + 1; k%4 == 0 {
			if got, want := counts["a"], 3*k/4; got < want-1 || got > want+1 {
				t.Fatalf("after %d admissions team a had %d, want %d±1 (3:1)", k, got, want)
			}
		}
	}
	s.once(a, b)
}

// A critical call offered behind 100,000 waiting batch calls is the next
// call admitted.
func TestSchedulerCriticalGoesFirst(t *testing.T) {
	s := newScheduler(t, schedulerYAML(600, "  ops: {}\n  bulk: {}\n", "tiers:\n  batch: {max_utilization: 1}\n"))
	s.offer("bulk", "bulk", messages.TierBatch, 100_000, 10, time.Hour)
	// Ten seconds in, the pool is busy with batch calls.
	start := s.now
	s.run(time.Minute, func([]admission, []answer) bool { return s.now.Sub(start) >= 10*time.Second })
	crit := s.offer("crit", "ops", messages.TierCritical, 1, 10, time.Hour)
	adm := s.run(time.Minute, func(adm []admission, _ []answer) bool { return len(adm) > 0 })
	first := adm[0]
	if first.w.ticket.Call.ID != crit[0] {
		t.Fatalf("first admitted after the critical call was offered: %s (tier %s), want %s", first.w.ticket.Call.ID, first.w.ticket.Tier, crit[0])
	}
	s.once(crit)
}

// A team's cap holds at every instant: in any window, what it was
// admitted fits the capped bucket (its capacity plus its rate over the
// window and one lease's time), however deep its queue and however idle
// the pool.
func TestSchedulerCapHolds(t *testing.T) {
	s := newScheduler(t, schedulerYAML(60000, "  capped: {pools: {m: {cap_rpm: 600}}}\n", ""))
	s.offer("c", "capped", messages.TierStandard, 2000, 10, time.Hour)
	start := s.now
	var sends []time.Time
	s.run(2*time.Minute, func(adm []admission, _ []answer) bool {
		for _, a := range adm {
			sends = append(sends, a.sendAt)
		}
		return s.now.Sub(start) >= time.Minute
	})
	cfg := s.d.cfg.Shared.Load()
	lim := limiter.NewLimit(600, 0, cfg.Admission.Burst)
	ttl := cfg.Admission.LeaseTTL
	for i := range sends {
		for j := i; j < len(sends); j++ {
			window := sends[j].Sub(sends[i])
			bound := lim.BurstRequests + lim.RPM/60*(window+ttl).Seconds()
			if float64(j-i+1) > bound+1e-9 {
				t.Fatalf("%d calls of the capped team sent within %s: the cap allows %.1f", j-i+1, window, bound)
			}
		}
	}
	if len(sends) < 550 {
		t.Fatalf("%d calls admitted in a minute under a 600 rpm cap with a deep queue, want about 600", len(sends))
	}
}

// A call still waiting at its deadline is answered deadline_exceeded, and
// a canceled one canceled; neither is admitted.
func TestSchedulerDeadlineAndCancel(t *testing.T) {
	s := newScheduler(t, schedulerYAML(6, "  a: {}\n", ""))
	first := s.offer("first", "a", messages.TierStandard, 1, 10, time.Hour)
	if adm, _, _ := s.step(); len(adm) != 1 {
		t.Fatalf("the first call on an idle pool: %d admitted, want 1", len(adm))
	}
	late := s.offer("late", "a", messages.TierStandard, 1, 10, time.Second)
	gone := s.offer("gone", "a", messages.TierStandard, 1, 10, time.Hour)
	s.d.post(callCanceled{gone[0]})
	_, ans, _ := s.step()
	if len(ans) != 1 || ans[0].w.ticket.Call.ID != gone[0] || ans[0].err.Code != messages.CodeCanceled {
		t.Fatalf("after the cancel: answers %+v, want %s canceled", ans, gone[0])
	}
	var got *messages.Error
	s.run(time.Minute, func(adm []admission, ans []answer) bool {
		if len(adm) > 0 {
			t.Fatalf("admitted %s: the pool had no room before its deadline", adm[0].w.ticket.Call.ID)
		}
		for _, a := range ans {
			got = a.err
		}
		return got != nil
	})
	if got.Code != messages.CodeDeadlineExceeded {
		t.Fatalf("answer %+v, want deadline_exceeded", got)
	}
	s.once(first, late, gone)
}

// A team with max_queued calls waiting has the next one refused with
// queue_full and when to try again; a retry of a call already let in is
// queued whatever waits.
func TestSchedulerQueueLimit(t *testing.T) {
	s := newScheduler(t, schedulerYAML(6, "  a: {max_queued: 3}\n", ""))
	s.offer("first", "a", messages.TierStandard, 1, 10, time.Hour)
	s.step() // admitted: the pool is now full for ten seconds
	s.offer("w", "a", messages.TierStandard, 3, 10, time.Hour)
	over := s.offer("over", "a", messages.TierStandard, 1, 10, time.Hour)
	_, ans, _ := s.step()
	if len(ans) != 1 || ans[0].w.ticket.Call.ID != over[0] || ans[0].err.Code != messages.CodeQueueFull || ans[0].err.RetryAfterMS <= 0 {
		t.Fatalf("answers %+v, want %s queue_full with a retry-after", ans, over[0])
	}
	retry := messages.Ticket{Team: "a", Tier: messages.TierStandard, AcceptedAt: s.now, Attempt: 2, Deadline: s.now.Add(time.Hour),
		Call: messages.CallRequest{ID: "retried", Model: "m", Endpoint: messages.EndpointChatCompletions}}
	s.d.post(callOffered{&waiting{ticket: retry, need: limiter.Amount{Requests: 1, Tokens: 10}, since: s.now, touched: s.now}, false})
	if _, ans, _ := s.step(); len(ans) != 0 {
		t.Fatalf("a retry was answered %+v: it must queue", ans[0].err)
	}
	if n := s.d.queue.waitingFor("a"); n != 4 {
		t.Fatalf("%d calls waiting, want the 3 and the retry", n)
	}
	s.once(over)
}

// MeasureScheduler admits what it is asked to, from a queue as deep as
// asked, and reports what it measured.
func TestMeasureScheduler(t *testing.T) {
	got, err := MeasureScheduler(SchedulerLoad{Waiting: 2000, Teams: 50, Admissions: 3000})
	if err != nil {
		t.Fatal(err)
	}
	if got.PerAdmission <= 0 || got.BytesPerWaiting <= 0 || got.Passes < 2 {
		t.Fatalf("measured %+v: want a time per admission, bytes per waiting call and several passes", got)
	}
	if _, err := MeasureScheduler(SchedulerLoad{Waiting: 0, Teams: 1, Admissions: 1}); err == nil {
		t.Fatal("no waiting calls: want an error")
	}
}

// With capacity for a whole backlog at once, a pass admits at most
// passAdmissions calls of a pool and asks for the next pass at once, so a
// critical call offered meanwhile waits for that many admissions, not for
// the backlog.
func TestSchedulerPassesAreShortUnderABacklog(t *testing.T) {
	s := newScheduler(t, schedulerYAML(60_000_000, "  ops: {}\n  bulk: {}\n", "tiers:\n  batch: {max_utilization: 1}\n"))
	bulk := s.offer("bulk", "bulk", messages.TierBatch, 1000, 10, time.Hour)
	adm, _, wait := s.step()
	if len(adm) != passAdmissions || wait != 0 {
		t.Fatalf("first pass admitted %d and would sleep %s; want %d and no sleep", len(adm), wait, passAdmissions)
	}
	crit := s.offer("crit", "ops", messages.TierCritical, 1, 10, time.Hour)
	if adm, _, _ = s.step(); len(adm) == 0 || adm[0].w.ticket.Call.ID != crit[0] {
		t.Fatalf("the pass after the critical call was offered admitted %d calls, first %v; want %s first", len(adm), adm, crit[0])
	}
	s.run(time.Minute, func([]admission, []answer) bool { return s.d.queue.len() == 0 })
	s.once(bulk, crit)
}

// onAdmission records decisions, and calls f after each admission, as a
// call arriving while the pass runs would.
type onAdmission struct {
	*decisions
	f func(n int)
	n int
}

func (o *onAdmission) admitted(a admission) {
	o.decisions.admitted(a)
	o.n++
	o.f(o.n)
}

// A critical call posted while a pass admits a backlog ends that pass
// after the admission under way: it is the first of the next pass, not
// behind the rest of this one.
func TestSchedulerCriticalCallEndsAPass(t *testing.T) {
	s := newScheduler(t, schedulerYAML(60_000_000, "  ops: {}\n  bulk: {}\n", "tiers:\n  batch: {max_utilization: 1}\n"))
	var crit []string
	hook := &onAdmission{decisions: s.got, f: func(n int) {
		if n == 3 {
			crit = s.offer("crit", "ops", messages.TierCritical, 1, 10, time.Hour)
		}
	}}
	s.d.decide = hook
	bulk := s.offer("bulk", "bulk", messages.TierBatch, 100, 10, time.Hour)
	adm, _, wait := s.step()
	if len(adm) != 3 || wait != 0 {
		t.Fatalf("the pass during which a critical call was posted admitted %d calls and would sleep %s; want 3, and no sleep", len(adm), wait)
	}
	if adm, _, _ = s.step(); len(adm) == 0 || adm[0].w.ticket.Call.ID != crit[0] {
		t.Fatalf("the next pass admitted %d calls, first %v; want %s first", len(adm), adm, crit[0])
	}
	s.run(time.Minute, func([]admission, []answer) bool { return s.d.queue.len() == 0 })
	s.once(bulk, crit)
}
