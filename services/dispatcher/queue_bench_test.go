package dispatcher

import (
	"fmt"
	"math/rand/v2"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/sluicehq/sluice/messages"
	"github.com/sluicehq/sluice/services/limiter"
)

// Issue 11: a deep backlog must not make each admission slower than the
// logarithm of the queue. BenchmarkQueueAdmission fills a queue the way
// intake does and then does, per admitted call, what an admission pass
// does with the queue: fairest (skipping a few stuck teams), served,
// remove; and a push of a new call, so the depth stays where it was.
// BenchmarkQueueGauges and BenchmarkQueueFairestStuck measure what
// announcements ask of the queue, and fairest late in a pass with many
// teams stuck.
//
//	go test ./services/dispatcher/ -run '^$' -bench 'Queue' -benchtime 1s -count 3
//
// ns/admission is the queue's own cost per admitted call; B/waiting the
// heap a waiting call holds (its waiting record, its ticket's strings, and
// the queue's bookkeeping; no body, no JetStream message), and
// queueB/waiting the bookkeeping alone.

var benchPools = []string{"gpt-4o", "claude-sonnet"}

// benchQueue is a queue of n calls over teams teams, with the team names.
type benchQueue struct {
	q          *queue
	teams      []string
	rng        *rand.Rand
	now        time.Time
	seq        int
	perWaiting float64 // heap bytes per waiting call, everything
	perQueued  float64 // heap bytes per waiting call, the queue's own
}

// call makes a waiting call as intake would: its strings are its own, as
// decoding a ticket makes them. Deadlines are mostly the default timeout,
// some a timeout_ms, some an absolute time.
func (bq *benchQueue) call(team string, pool string, tier messages.Tier) *waiting {
	bq.seq++
	accepted := bq.now.Add(-time.Duration(bq.rng.IntN(int(time.Minute))))
	var deadline time.Time
	switch bq.rng.IntN(10) {
	case 0, 1:
		deadline = accepted.Add(30 * time.Second)
	case 2:
		deadline = accepted.Add(90*time.Second + time.Duration(bq.rng.IntN(int(10*time.Minute))))
	default:
		deadline = accepted.Add(5 * time.Minute)
	}
	return &waiting{
		ticket: messages.Ticket{
			Call: messages.CallRequest{
				ID:       fmt.Sprintf("%08x-7c1e-4b2a-9d3f-%012x", bq.seq, bq.seq*7919),
				Model:    strings.Clone(pool),
				Endpoint: messages.Endpoint(strings.Clone("chat.completions")),
			},
			Team: strings.Clone(team), Tier: messages.Tier(strings.Clone(string(tier))),
			AcceptedAt: accepted, Deadline: deadline, Attempt: 1,
		},
		need:  limiter.Amount{Requests: 1, Tokens: 1200},
		since: accepted, touched: accepted,
	}
}

func (bq *benchQueue) randomCall() *waiting {
	return bq.call(bq.teams[bq.rng.IntN(len(bq.teams))], benchPools[bq.rng.IntN(len(benchPools))], messages.Tiers[bq.rng.IntN(len(messages.Tiers))])
}

func newBenchQueue(n, teams int) *benchQueue {
	bq := &benchQueue{q: newQueue(), rng: rand.New(rand.NewPCG(uint64(n), uint64(teams))), now: time.Unix(1_800_000_000, 0)}
	for i := range teams {
		bq.teams = append(bq.teams, fmt.Sprintf("team-%04d", i))
	}
	calls := make([]*waiting, n)
	var before, made, filled runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	for i := range calls {
		calls[i] = bq.randomCall()
	}
	runtime.GC()
	runtime.ReadMemStats(&made)
	for _, w := range calls {
		bq.q.push(w)
	}
	runtime.GC()
	runtime.ReadMemStats(&filled)
	bq.perWaiting = float64(int64(filled.HeapAlloc)-int64(before.HeapAlloc)) / float64(n)
	bq.perQueued = float64(int64(filled.HeapAlloc)-int64(made.HeapAlloc)) / float64(n)
	runtime.KeepAlive(calls)
	return bq
}

// weightOf gives teams weights 1, 2 and 3.
func weightOf(team string) float64 { return float64(1 + int(team[len(team)-1])%3) }

func BenchmarkQueueAdmission(b *testing.B) {
	for _, n := range []int{1_000, 10_000, 100_000} {
		for _, teams := range []int{10, 100, 1_000} {
			b.Run(fmt.Sprintf("waiting=%d/teams=%d", n, teams), func(b *testing.B) {
				bq := newBenchQueue(n, teams)
				q := bq.q
				// A pass has a few stuck teams: each pass (here every 64
				// admissions) three others.
				stuck := map[string]bool{}
				skip := func(team string) bool { return stuck[team] }
				admitted := 0
				for i := 0; b.Loop(); i++ {
					if i%64 == 0 {
						clear(stuck)
						for range 3 {
							stuck[bq.teams[bq.rng.IntN(len(bq.teams))]] = true
						}
					}
					pool := benchPools[i%len(benchPools)]
					tier := messages.Tiers[(i/len(benchPools))%len(messages.Tiers)]
					w := q.fairest(pool, tier, skip)
					if w == nil {
						continue // every team waiting here is stuck
					}
					q.served(w, weightOf(w.ticket.Team))
					q.remove(w)
					admitted++
					// The same record comes back as a new call of a random
					// team, so the loop measures the queue, not allocation.
					team := bq.teams[bq.rng.IntN(len(bq.teams))]
					w.ticket.Team = team
					w.ticket.Deadline = bq.now.Add(5 * time.Minute)
					w.ticket.AcceptedAt, w.since = bq.now, bq.now
					q.push(w)
				}
				if q.len() != n {
					b.Fatalf("depth %d, want %d", q.len(), n)
				}
				b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(max(admitted, 1)), "ns/admission")
				b.ReportMetric(bq.perWaiting, "B/waiting")
				b.ReportMetric(bq.perQueued, "queueB/waiting")
			})
		}
	}
}

// BenchmarkQueueGauges is what an announcement asks of the queue: depth
// for every pool and tier, once a second deadlineUsed for each, and what
// a max_queued check asks: oldestOf, here of ten teams. ns/op is one round.
func BenchmarkQueueGauges(b *testing.B) {
	for _, n := range []int{10_000, 100_000} {
		bq := newBenchQueue(n, 1_000)
		q := bq.q
		var sink float64
		each := func(f func(pool string, tier messages.Tier)) {
			for _, pool := range q.poolNames() {
				for _, tier := range messages.Tiers {
					f(pool, tier)
				}
			}
		}
		b.Run(fmt.Sprintf("depth/waiting=%d/teams=1000", n), func(b *testing.B) {
			for b.Loop() {
				each(func(pool string, tier messages.Tier) { sink += float64(len(q.depth(pool, tier))) })
			}
		})
		b.Run(fmt.Sprintf("deadlineUsed/waiting=%d/teams=1000", n), func(b *testing.B) {
			for b.Loop() {
				each(func(pool string, tier messages.Tier) { sink += q.deadlineUsed(pool, tier, bq.now) })
			}
		})
		b.Run(fmt.Sprintf("oldestOf/waiting=%d/teams=1000", n), func(b *testing.B) {
			for b.Loop() {
				for _, team := range bq.teams[:10] {
					sink += float64(q.oldestOf(team).Unix())
				}
			}
		})
		runtime.KeepAlive(sink)
	}
}

// BenchmarkQueueFairestStuck is fairest alone late in a pass that has
// found many teams stuck (their calls need deployments that are full):
// it passes over each stuck team ahead of the one it returns. Stuck teams
// are served no more in the pass, so they gather at the head of the fair
// order; here the stuck teams are the first in it, the worst case.
func BenchmarkQueueFairestStuck(b *testing.B) {
	bq := newBenchQueue(100_000, 1_000)
	pool, tier := benchPools[0], messages.TierStandard
	for _, stuckTeams := range []int{1, 10, 100, 500} {
		b.Run(fmt.Sprintf("waiting=100000/teams=1000/stuck=%d", stuckTeams), func(b *testing.B) {
			stuck := map[string]bool{}
			skip := func(team string) bool { return stuck[team] }
			for range stuckTeams {
				stuck[bq.q.fairest(pool, tier, skip).ticket.Team] = true
			}
			for b.Loop() {
				if bq.q.fairest(pool, tier, skip) == nil {
					b.Fatal("no call")
				}
			}
		})
	}
}
