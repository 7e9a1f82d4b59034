package test

import (
	"encoding/json"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/sluicehq/sluice/messages"
)

// standInPeer announces, like a dispatcher would, that it holds calls it
// cannot get capacity for, until stopped.
type standInPeer struct {
	mu    sync.Mutex
	state messages.DispatcherState
	stop  chan struct{}
	done  chan struct{}
}

func startStandInPeer(t *testing.T, nc *nats.Conn) *standInPeer {
	p := &standInPeer{stop: make(chan struct{}), done: make(chan struct{})}
	go func() {
		defer close(p.done)
		tick := time.NewTicker(200 * time.Millisecond)
		defer tick.Stop()
		for {
			p.mu.Lock()
			s := p.state
			p.mu.Unlock()
			s.At = time.Now()
			if s.Dispatcher != "" {
				data, _ := json.Marshal(s)
				_ = nc.Publish(messages.StateSubject, data)
			}
			select {
			case <-p.stop:
				return
			case <-tick.C:
			}
		}
	}()
	t.Cleanup(p.halt)
	return p
}

// claim makes the peer announce team's calls of pool and tier starved, on
// the deployments hungry.
func (p *standInPeer) claim(pool string, tier messages.Tier, team string, hungry ...string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.state = messages.DispatcherState{
		Dispatcher: "stand-in",
		Queues:     []messages.QueueState{{Pool: pool, Tier: tier, Team: team, Depth: 50, Starved: true}},
		Hungry:     hungry,
	}
}

func (p *standInPeer) halt() {
	select {
	case <-p.stop:
	default:
		close(p.stop)
	}
	<-p.done
}

// A dispatcher holding only batch calls leaves the pool to a peer whose
// standard calls are starved on the same deployment, and takes it back
// when the peer's claim lapses; a peer short of other deployments does not
// hold it back.
func TestLowerTiersYieldToAPeersHigherTier(t *testing.T) {
	s := startStack(t, stackOptions{yaml: sharedPoolYAML(1200, "  ops: {}\n", "  batch: {max_utilization: 1}\n")})
	startDispatcher(t, s, "d1", nil)
	startExecutors(t, s)
	nc := connect(t, s)
	js, _ := jetstream.New(nc)
	log := watchResults(t, nc, "ops")
	peer := startStandInPeer(t, nc)
	peer.claim("m", messages.TierStandard, "ops", "elsewhere")

	var ids []string
	for i := 0; i < 200; i++ {
		id := fmt.Sprintf("batch-%03d", i)
		ids = append(ids, id)
		if _, err := js.PublishAsync("sluice.call.ops.batch", []byte(chatCall(id, "m", 5, `,"timeout_ms":600000`)), jetstream.WithMsgID(id)); err != nil {
			t.Fatal(err)
		}
	}
	<-js.PublishAsyncComplete()
	time.Sleep(2 * time.Second)
	before := len(log.byIDPrefix("batch-"))
	t.Logf("peer short of another deployment: %d batch calls served in 2 s (capacity 40)", before)
	if before < 20 {
		t.Fatalf("a peer short of another deployment held batch calls back: %d served in 2 s", before)
	}

	peer.claim("m", messages.TierStandard, "ops", "only")
	claimed := time.Now()
	time.Sleep(3500 * time.Millisecond)
	peer.halt()
	log.waitFor(t, ids, 30*time.Second)
	// Count the calls admitted while the claim stood, from when it had
	// surely arrived (admission: acceptance plus the wait for it).
	during := 0
	for _, id := range ids {
		r := log.one(t, id)
		if r.Status != messages.StatusOK {
			t.Fatalf("call %s: %+v", id, r.Error)
		}
		admitted := r.Timings.AcceptedAt.Add(time.Duration(r.Timings.QueuedMS * float64(time.Millisecond)))
		if admitted.After(claimed.Add(500*time.Millisecond)) && admitted.Before(claimed.Add(3500*time.Millisecond)) {
			during++
		}
	}
	t.Logf("peer starved on the same deployment: %d batch calls admitted in the 3 s after its claim arrived", during)
	if during > 0 {
		t.Fatalf("%d batch calls were admitted while a peer's standard calls starved on their deployment", during)
	}
}
