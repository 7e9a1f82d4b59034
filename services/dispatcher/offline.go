package dispatcher

import (
	"context"
	"fmt"
	"runtime"
	"strings"
	"time"

	"github.com/sluicehq/sluice/messages"
	"github.com/sluicehq/sluice/services/config"
	"github.com/sluicehq/sluice/services/health"
	"github.com/sluicehq/sluice/services/limiter"
)

// An offline dispatcher has no connection: its scheduler admits against
// in-memory buckets and schedules, through the real leases and pacer, on
// the clock it is given, and hands its decisions to the decider it is
// given. Tests drive it event by event; MeasureScheduler times it.

// newOffline returns an offline dispatcher under cfg.
func newOffline(cfg *config.Config, clock func() time.Time, decide decider) (*Dispatcher, error) {
	c := Config{ID: "offline", Shared: config.NewLive(cfg), Clock: clock}
	if err := c.defaults(); err != nil {
		return nil, err
	}
	d := newDispatcher(c)
	mem := limiter.NewMemory(clock)
	d.shareCapacity(mem, mem, cfg)
	d.health = health.NewStore(nil) // nothing learned: every deployment healthy
	d.decide = decide
	return d, nil
}

// SchedulerLoad is what MeasureScheduler drives: Waiting calls held over
// Teams teams (in two tiers), kept that deep while Admissions are made.
type SchedulerLoad struct {
	Waiting, Teams, Admissions int
}

// SchedulerCost is what MeasureScheduler measured.
type SchedulerCost struct {
	SchedulerLoad
	// PerAdmission is the scheduler's time (applying what was posted and
	// running passes) per call admitted.
	PerAdmission time.Duration
	// BytesPerWaiting is the heap a waiting call holds in the scheduler,
	// with an empty body and no JetStream message.
	BytesPerWaiting float64
	// Passes is how many passes the admissions took.
	Passes int
}

// MeasureScheduler drives one dispatcher's scheduler with no connection
// and on a simulated clock: a pool of four deployments fast enough to
// admit about a thousand calls a pass, Waiting calls over Teams teams of
// different weights, and as many new calls offered after each pass as it
// admitted, until Admissions were made. Only the scheduler's own work is
// timed: nothing waits on a network or a clock.
func MeasureScheduler(load SchedulerLoad) (SchedulerCost, error) {
	out := SchedulerCost{SchedulerLoad: load}
	if load.Waiting <= 0 || load.Teams <= 0 || load.Admissions <= 0 {
		return out, fmt.Errorf("dispatcher: measure: waiting, teams and admissions must be positive: %+v", load)
	}
	var y strings.Builder
	y.WriteString("pools:\n  m:\n    deployments:\n")
	for i := range 4 {
		fmt.Fprintf(&y, "      - {id: d%d, provider: openai, base_url: \"http://provider.invalid/v1\", region: r1, key: K, rpm: 1500000, tpm: 10000000000}\n", i)
	}
	y.WriteString("teams:\n")
	for i := range load.Teams {
		fmt.Fprintf(&y, "  t%d: {pools: {m: {weight: %d}}}\n", i, 1+i%5)
	}
	cfg, err := config.Parse([]byte(y.String()))
	if err != nil {
		return out, err
	}
	now := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	clock := func() time.Time { return now }
	admitted := &countingDecider{}
	d, err := newOffline(cfg, clock, admitted)
	if err != nil {
		return out, err
	}
	n := 0
	offer := func(k int) {
		for range k {
			tier := messages.TierStandard
			if n%4 == 0 {
				tier = messages.TierHigh
			}
			t := messages.Ticket{
				Team: fmt.Sprintf("t%d", n%load.Teams), Tier: tier, AcceptedAt: now, Attempt: 1, Deadline: now.Add(24 * time.Hour),
				Call: messages.CallRequest{ID: fmt.Sprintf("c%d", n), Model: "m", Endpoint: messages.EndpointChatCompletions},
			}
			d.post(callOffered{&waiting{ticket: t, need: limiter.Amount{Requests: 1, Tokens: 100}, since: now, touched: now}, false})
			n++
		}
	}

	before := heapInUse()
	offer(load.Waiting)
	d.applyEvents()
	out.BytesPerWaiting = float64(heapInUse()-before) / float64(load.Waiting)

	var spent time.Duration
	for admitted.n < load.Admissions {
		last := admitted.n
		start := time.Now()
		d.applyEvents()
		wait := d.pass(context.Background())
		spent += time.Since(start)
		out.Passes++
		offer(admitted.n - last)
		now = now.Add(max(wait, time.Millisecond))
	}
	out.PerAdmission = spent / time.Duration(admitted.n)
	return out, nil
}

// heapInUse is the live heap after a collection.
func heapInUse() int64 {
	runtime.GC()
	var m runtime.MemStats
	runtime.ReadMemStats(&m)
	return int64(m.HeapAlloc)
}

// countingDecider counts admissions and drops every decision.
type countingDecider struct{ n int }

func (c *countingDecider) admitted(admission) { c.n++ }
func (c *countingDecider) answered(answer)    {}
