//go:build linux

package test

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/sluicehq/sluice/messages"
	"github.com/sluicehq/sluice/services/results"
)

// clusterLoad publishes calls at a steady rate, as team search, each until
// JetStream accepts it (see publishCallUntilAccepted), and remembers which
// were accepted.
type clusterLoad struct {
	wg       sync.WaitGroup
	mu       sync.Mutex
	accepted []string
	failed   map[string]error
	stop     chan struct{}
	stopped  chan struct{}
	repeats  atomic.Int64 // publishes repeated after a failed acknowledgement
}

// startClusterLoad publishes one call every interval, for pools in turn,
// until halt.
func startClusterLoad(ctx context.Context, t *testing.T, js jetstream.JetStream, prefix string, interval time.Duration, pools ...string) *clusterLoad {
	t.Helper()
	l := &clusterLoad{failed: map[string]error{}, stop: make(chan struct{}), stopped: make(chan struct{})}
	go func() {
		defer close(l.stopped)
		tick := time.NewTicker(interval)
		defer tick.Stop()
		for i := 0; ; i++ {
			select {
			case <-l.stop:
				return
			case <-tick.C:
			}
			id := fmt.Sprintf("%s-%04d", prefix, i)
			pool := pools[i%len(pools)]
			l.wg.Add(1)
			go func() {
				defer l.wg.Done()
				// Long enough to outlast a failover: the call must get in.
				pubCtx, cancel := context.WithTimeout(ctx, 30*time.Second)
				defer cancel()
				err := publishCallUntilAccepted(pubCtx, js, "search", "standard", id, chatCall(id, pool, 8, ""), &l.repeats)
				l.mu.Lock()
				defer l.mu.Unlock()
				if err != nil {
					l.failed[id] = err
				} else {
					l.accepted = append(l.accepted, id)
				}
			}()
		}
	}()
	return l
}

// halt stops publishing, waits for the calls under way to be accepted,
// and returns the ids JetStream accepted.
func (l *clusterLoad) halt(t *testing.T) []string {
	t.Helper()
	close(l.stop)
	<-l.stopped
	l.wg.Wait()
	l.mu.Lock()
	defer l.mu.Unlock()
	for id, err := range l.failed {
		t.Errorf("call %s was never accepted: %v", id, err)
	}
	return append([]string(nil), l.accepted...)
}

// checkEveryCallAnsweredOnce waits until each accepted call has a result,
// then checks that each got exactly one, successful, and that the results
// stream holds it.
func checkEveryCallAnsweredOnce(ctx context.Context, t *testing.T, cc *clusterConn, log *resultLog, ids []string, timeout time.Duration) {
	t.Helper()
	if len(ids) == 0 {
		t.Fatal("no call was accepted")
	}
	log.waitFor(t, ids, timeout)
	// Let a late duplicate show itself.
	time.Sleep(time.Second)
	got := log.exactlyOnce(t, ids)
	for id, r := range got {
		if r.Status != messages.StatusOK {
			t.Errorf("call %s: %s %+v", id, r.Status, r.Error)
		}
	}
	for _, id := range ids {
		var err error
		waitUntil(t, "the stored result of "+id, 10*time.Second, func() bool {
			_, err = results.FetchDirect(ctx, cc.Conn, "", "search", id)
			return err == nil
		})
	}
	t.Logf("%d calls, each answered once", len(ids))
}

// otherHubs is the client URLs of the hub servers but one.
func (c *natsCluster) otherHubs(but string) string {
	var urls []string
	for _, h := range c.hubs {
		if h.name != but {
			urls = append(urls, h.clientURL)
		}
	}
	return strings.Join(urls, ",")
}

func (c *natsCluster) hub(name string) *natsNode {
	c.t.Helper()
	for _, h := range c.hubs {
		if h.name == name {
			return h
		}
	}
	c.t.Fatalf("no hub server %q", name)
	return nil
}

// warmUp makes one call per region and waits for its result, so that a
// test starts with every service ready.
func warmUp(ctx context.Context, t *testing.T, js jetstream.JetStream, log *resultLog) {
	t.Helper()
	var ids []string
	for _, r := range clusterRegions {
		id := "warm-up-" + r
		if err := publishCallUntilAccepted(ctx, js, "search", "standard", id, chatCall(id, "m-"+r, 8, ""), nil); err != nil {
			t.Fatal(err)
		}
		ids = append(ids, id)
	}
	log.waitFor(t, ids, 30*time.Second)
}

// A hub server killed (SIGKILL) under a steady stream of calls, and
// started again a few seconds later: the two left hold every stream's
// quorum, dispatchers and clients reconnect to them, the leaf nodes
// attached to it reconnect to another, the server catches up when it is
// back, and every call JetStream accepted is answered exactly once.
func TestClusterHubServerKilledUnderLoad(t *testing.T) {
	c := startNATSCluster(t)
	c.startSluice(2, 1, 20*time.Millisecond)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()

	pub := c.connect("search", c.hubURLs())
	js := pub.jetStream(t, "")
	warmUp(ctx, t, js, watchResults(t, pub.Conn, "search"))

	// The victim leads the calls stream, where every call enters.
	op := c.connect("operator", c.hubURLs())
	victim := streamLeader(ctx, t, op.jetStream(t, ""), messages.StreamCalls)
	t.Logf("killing %s, leader of %s", victim, messages.StreamCalls)

	// Results are watched from the servers that stay, so that what the
	// test sees is what sluice sent, not its own reconnection.
	watcher := c.connect("search", c.otherHubs(victim))
	log := watchResults(t, watcher.Conn, "search")

	// The publisher uses every hub server, as an application would.
	load := startClusterLoad(ctx, t, js, "hubkill", 100*time.Millisecond, "m-us-east", "m-eu-west")
	time.Sleep(2 * time.Second)
	hub := c.hub(victim)
	hub.proc.kill()
	time.Sleep(3 * time.Second)
	hub.proc.start(t)
	c.waitHealthy(hub, 60*time.Second)
	time.Sleep(2 * time.Second)
	ids := load.halt(t)

	checkEveryCallAnsweredOnce(ctx, t, watcher, log, ids, 90*time.Second)
	t.Logf("%d publishes were repeated (same call id) after a failed acknowledgement", load.repeats.Load())
	for _, v := range c.serviceViolations() {
		t.Error(v)
	}
}

// A region's leaf node killed (SIGKILL) under a steady stream of calls
// and started again: the calls for that region wait in the hub's
// SLUICE_EXEC meanwhile, the region's executors reconnect to the leaf
// node when it is back and serve them, and every call is answered exactly
// once; the other region is served throughout.
func TestClusterLeafNodeRestarted(t *testing.T) {
	c := startNATSCluster(t)
	c.startSluice(1, 1, 20*time.Millisecond)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()

	pub := c.connect("search", c.hubURLs())
	js := pub.jetStream(t, "")
	warmUp(ctx, t, js, watchResults(t, pub.Conn, "search"))
	watcher := c.connect("search", c.hubURLs())
	log := watchResults(t, watcher.Conn, "search")

	leaf := c.leafs["us-east"]
	load := startClusterLoad(ctx, t, js, "leafkill", 100*time.Millisecond, "m-us-east", "m-eu-west")
	time.Sleep(2 * time.Second)
	leaf.proc.kill()
	time.Sleep(3 * time.Second)

	// While us-east is cut off, eu-west is still served.
	var euWest []string
	load.mu.Lock()
	for _, id := range load.accepted {
		var n int
		if _, err := fmt.Sscanf(id, "leafkill-%d", &n); err == nil && n%2 == 1 {
			euWest = append(euWest, id)
		}
	}
	load.mu.Unlock()
	served := 0
	for _, id := range euWest {
		if len(log.byIDSnapshot(id)) > 0 {
			served++
		}
	}

	leaf.proc.start(t)
	c.waitLeafUp(leaf, 30*time.Second)
	time.Sleep(2 * time.Second)
	ids := load.halt(t)

	checkEveryCallAnsweredOnce(ctx, t, watcher, log, ids, 90*time.Second)
	if served == 0 {
		t.Errorf("no eu-west call was served while us-east's leaf node was down (of %d)", len(euWest))
	}
	for _, v := range c.serviceViolations() {
		t.Error(v)
	}
}

// byIDSnapshot is the results of id received so far.
func (l *resultLog) byIDSnapshot(id string) []messages.Result {
	l.mu.Lock()
	defer l.mu.Unlock()
	return append([]messages.Result(nil), l.byID[id]...)
}
