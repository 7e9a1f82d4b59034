package dispatcher

import (
	"context"
	"encoding/json"
	"sort"
	"sync"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/sluicehq/sluice/messages"
)

// Dispatchers announce what they hold on messages.StateSubject every
// stateEvery, and forget a peer not heard from for stateExpiry.
const (
	stateEvery  = 500 * time.Millisecond
	stateExpiry = 3 * stateEvery
)

// peers is what the other dispatchers last announced.
type peers struct {
	mu    sync.Mutex
	state map[string]peerState
}

type peerState struct {
	heard time.Time
	// waiting counts each team's waiting calls at the peer.
	waiting map[string]int
	// served, starved and hungry are the peer's demand (see crossfair.go).
	served  map[queueKey]float64
	starved []queueKey
	hungry  map[string]bool
}

func newPeers() *peers { return &peers{state: map[string]peerState{}} }

// onState records a peer's announcement.
func (d *Dispatcher) onState(m *nats.Msg) {
	var s messages.DispatcherState
	if err := json.Unmarshal(m.Data, &s); err != nil {
		return
	}
	d.notePeer(s)
}

// notePeer records a peer's announcement, decoded; this dispatcher's own
// is ignored.
func (d *Dispatcher) notePeer(s messages.DispatcherState) {
	if s.Dispatcher == d.cfg.ID {
		return
	}
	p := peerState{heard: d.cfg.Clock(), waiting: map[string]int{}, served: map[queueKey]float64{}, hungry: map[string]bool{}}
	for _, q := range s.Queues {
		p.waiting[q.Team] += q.Depth
		if q.Starved {
			p.starved = append(p.starved, queueKey{q.Pool, q.Tier, q.Team})
		}
	}
	for _, r := range s.Served {
		p.served[queueKey{r.Pool, r.Tier, r.Team}] += r.PerSecond
	}
	for _, id := range s.Hungry {
		p.hungry[id] = true
	}
	d.peers.mu.Lock()
	d.peers.state[s.Dispatcher] = p
	d.peers.mu.Unlock()
}

// elsewhere is how many calls team has waiting at the other dispatchers,
// and how many other dispatchers are alive.
func (d *Dispatcher) elsewhere(team string) (waiting, dispatchers int) {
	now := d.cfg.Clock()
	d.peers.mu.Lock()
	defer d.peers.mu.Unlock()
	for id, p := range d.peers.state {
		if now.Sub(p.heard) > stateExpiry {
			delete(d.peers.state, id)
			continue
		}
		waiting += p.waiting[team]
		dispatchers++
	}
	return waiting, dispatchers
}

// announce publishes this dispatcher's state until ctx ends: every
// stateEvery, and early (at most every urgentGap) when a team starves.
func (d *Dispatcher) announce(ctx context.Context) {
	t := time.NewTicker(stateEvery)
	defer t.Stop()
	var last time.Time
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		case <-d.demand.urgent:
			if wait := urgentGap - time.Since(last); wait > 0 {
				select {
				case <-ctx.Done():
					return
				case <-time.After(wait):
				}
			}
		}
		s, ok := d.askState(ctx)
		if !ok {
			return
		}
		data, err := json.Marshal(s)
		if err == nil {
			_ = d.nc.Publish(messages.StateSubject, data)
		}
		last = time.Now()
	}
}

// state is what this dispatcher holds now. Only the scheduler calls it
// (see askState).
func (d *Dispatcher) state() messages.DispatcherState {
	now := d.cfg.Clock()
	s := messages.DispatcherState{Dispatcher: d.cfg.ID, At: now, Admitted: d.admittedTotal}
	d.metrics.QueueOldest.Reset()
	// The deadline gauge looks at every waiting call: once a second is enough for a gauge, and announcements (every stateEvery,
	// and at once on urgent demand) need not pay it each time.
	gauges := now.Sub(d.deadlineGaugeAt) >= time.Second
	if gauges {
		d.deadlineGaugeAt = now
		d.metrics.QueueDeadlineUsed.Reset()
	}
	for _, pool := range d.queue.poolNames() {
		for _, tier := range messages.Tiers {
			var oldest time.Duration
			for team, depth := range d.queue.depth(pool, tier) {
				s.Queues = append(s.Queues, messages.QueueState{
					Pool: pool, Tier: tier, Team: team, Depth: depth.n,
					OldestWaitMS: ms(now.Sub(depth.oldest)),
				})
				oldest = max(oldest, now.Sub(depth.oldest))
			}
			if oldest > 0 {
				d.metrics.QueueOldest.WithLabelValues(pool, string(tier)).Set(oldest.Seconds())
				if gauges {
					d.metrics.QueueDeadlineUsed.WithLabelValues(pool, string(tier)).Set(d.queue.deadlineUsed(pool, tier, now))
				}
			}
		}
	}
	sort.Slice(s.Queues, func(i, j int) bool {
		a, b := s.Queues[i], s.Queues[j]
		if a.Pool != b.Pool {
			return a.Pool < b.Pool
		}
		if a.Tier != b.Tier {
			return a.Tier.Rank() < b.Tier.Rank()
		}
		return a.Team < b.Team
	})
	d.demand.announce(&s, now)
	s.StalledRegions = d.regions.list()
	for key, b := range d.breakers {
		if b.state == circuitClosed {
			continue
		}
		c := messages.CircuitState{Scope: "deployment", Name: key, State: b.state.String()}
		if name, ok := cutRegion(key); ok {
			c.Scope, c.Name = "region", name
		}
		if b.state == circuitOpen {
			c.OpenUntil = b.openUntil
		}
		s.Circuits = append(s.Circuits, c)
	}
	sort.Slice(s.Circuits, func(i, j int) bool { return s.Circuits[i].Name < s.Circuits[j].Name })
	return s
}
