package test

import (
	"context"
	"encoding/json"
	"fmt"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/sluicehq/sluice/messages"
	"github.com/sluicehq/sluice/services/dispatcher"
	"github.com/sluicehq/sluice/services/streams"
)

// sharedPoolYAML is pool "m" of one deployment at rpm, teams and tiers as
// given (YAML indented as entries of teams: and as the tiers: section).
func sharedPoolYAML(rpm int64, teams, tiers string) func(string) string {
	return func(fakeURL string) string {
		y := fmt.Sprintf("pools:\n  m:\n    deployments:\n      - {id: only, provider: openai, base_url: %q, region: us-east, key: KEY_ONLY, rpm: %d, tpm: 100000000}\nteams:\n%s", fakeURL+"/v1", rpm, teams)
		if tiers != "" {
			y += "tiers:\n" + tiers
		}
		return y
	}
}

// load publishes calls at a steady rate until stopped.
type load struct {
	mu   sync.Mutex
	ids  []string
	stop chan struct{}
	done chan struct{}
}

// startLoad publishes calls for team on tier at rate per second until the
// returned load is stopped (at the latest when the test ends).
func startLoad(t *testing.T, js jetstream.JetStream, team, tier string, rate float64) *load {
	l := &load{stop: make(chan struct{}), done: make(chan struct{})}
	go func() {
		defer close(l.done)
		l.run(t, js, team, tier, rate, l.stop)
	}()
	t.Cleanup(l.halt)
	return l
}

// halt stops publishing and waits for the last publish to finish.
func (l *load) halt() {
	select {
	case <-l.stop:
	default:
		close(l.stop)
	}
	<-l.done
}

func (l *load) run(t *testing.T, js jetstream.JetStream, team, tier string, rate float64, stop <-chan struct{}) {
	start := time.Now()
	for i := 0; ; i++ {
		select {
		case <-stop:
			return
		case <-time.After(time.Until(start.Add(time.Duration(float64(i) / rate * float64(time.Second))))):
		}
		id := fmt.Sprintf("%s-%s-%05d", team, tier, i)
		if err := publishCall(context.Background(), js, team, tier, id, chatCall(id, "m", 5, `,"timeout_ms":600000`)); err != nil {
			t.Errorf("publish: %v", err)
			return
		}
		l.mu.Lock()
		l.ids = append(l.ids, id)
		l.mu.Unlock()
	}
}

// servedIn counts, per team, the successful results that finished in
// [from, to).
func (l *resultLog) servedIn(from, to time.Time) map[string]int {
	l.mu.Lock()
	defer l.mu.Unlock()
	out := map[string]int{}
	for _, rs := range l.byID {
		for _, r := range rs {
			f := r.Timings.FinishedAt
			if r.Status == messages.StatusOK && !f.Before(from) && f.Before(to) {
				out[r.Team]++
			}
		}
	}
	return out
}

// Two teams with weights 3 and 1 both saturate one pool, through two
// dispatchers: they are served 3:1. (Publishing in step, the two teams'
// calls are dealt out to the dispatchers alternately, so each dispatcher
// holds mostly one team's calls: the shares hold across dispatchers.)
// The share's precision is the scheduler simulator's to check; this is
// the shell's smoke test.
func TestTeamsAreServedByWeight(t *testing.T) {
	s := startStack(t, stackOptions{yaml: sharedPoolYAML(3000, "  a: {pools: {m: {weight: 3}}}\n  b: {pools: {m: {weight: 1}}}\n", "")})
	startDispatcher(t, s, "d1", nil)
	startDispatcher(t, s, "d2", nil)
	startExecutors(t, s)
	nc := connect(t, s)
	js, _ := jetstream.New(nc)
	logA, logB := watchResults(t, nc, "a"), watchResults(t, nc, "b")
	for i := 0; i < 400; i++ {
		for _, team := range []string{"a", "b"} {
			publishBacklog(t, js, team, fmt.Sprintf("%s-%03d", team, i))
		}
	}
	<-js.PublishAsyncComplete()
	expectServedByWeight(t, logA, logB, time.Time{})
}

// The 3:1 shares hold however the calls are spread over dispatchers: here
// one dispatcher holds a backlog of only a's calls and the other, started
// later, only ever sees b's and a's new calls split with the first.
func TestTeamsAreServedByWeightWhereverTheirCallsWait(t *testing.T) {
	s := startStack(t, stackOptions{yaml: sharedPoolYAML(3000, "  a: {pools: {m: {weight: 3}}}\n  b: {pools: {m: {weight: 1}}}\n", "")})
	startDispatcher(t, s, "d1", nil)
	startExecutors(t, s)
	nc := connect(t, s)
	js, _ := jetstream.New(nc)
	logA, logB := watchResults(t, nc, "a"), watchResults(t, nc, "b")
	waiting := watchWaiting(t, nc)
	for i := 0; i < 800; i++ { // 16 s of the whole pool
		publishBacklog(t, js, "a", fmt.Sprintf("a-backlog-%03d", i))
	}
	<-js.PublishAsyncComplete()
	// d1 holds what it did not admit yet: all of a's calls.
	waitUntil(t, "d1 holds a's backlog", 30*time.Second, func() bool {
		return waiting("d1", "a")+len(logA.byIDPrefix("a-")) >= 800
	})
	startDispatcher(t, s, "d2", nil)
	waitUntil(t, "d2 announces itself", 30*time.Second, func() bool { return waiting("d2", "") >= 0 })
	since := time.Now()
	for i := 0; i < 300; i++ {
		publishBacklog(t, js, "b", fmt.Sprintf("b-%03d", i))
	}
	<-js.PublishAsyncComplete()
	expectServedByWeight(t, logA, logB, since)
}

// publishBacklog publishes a call of team that may wait ten minutes.
func publishBacklog(t *testing.T, js jetstream.JetStream, team, id string) {
	t.Helper()
	if _, err := js.PublishAsync("sluice.call."+team+".standard", []byte(chatCall(id, "m", 5, `,"timeout_ms":600000`)), jetstream.WithMsgID(id)); err != nil {
		t.Fatal(err)
	}
}

// watchWaiting follows the dispatchers' announcements; the function it
// returns says how many calls of team (every team: "") a dispatcher last
// said it holds, or -1 before it announced.
func watchWaiting(t *testing.T, nc *nats.Conn) func(dispatcher, team string) int {
	t.Helper()
	var mu sync.Mutex
	held := map[string]map[string]int{}
	sub, err := nc.Subscribe(messages.StateSubject, func(m *nats.Msg) {
		var s messages.DispatcherState
		if json.Unmarshal(m.Data, &s) != nil {
			return
		}
		teams := map[string]int{}
		for _, q := range s.Queues {
			teams[q.Team] += q.Depth
			teams[""] += q.Depth
		}
		mu.Lock()
		held[s.Dispatcher] = teams
		mu.Unlock()
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = sub.Unsubscribe() })
	return func(dispatcher, team string) int {
		mu.Lock()
		defer mu.Unlock()
		teams, ok := held[dispatcher]
		if !ok {
			return -1
		}
		return teams[team]
	}
}

// expectServedByWeight waits for 300 successful results of a and b that
// finished after since, and checks that, past the first 100 (while the
// dispatchers' shares settle), a and b were served 3:1 within 15%.
func expectServedByWeight(t *testing.T, logA, logB *resultLog, since time.Time) {
	t.Helper()
	var served []messages.Result
	waitUntil(t, "300 calls served", 60*time.Second, func() bool {
		served = served[:0]
		for _, r := range append(logA.served(), logB.served()...) {
			if r.Timings.FinishedAt.After(since) {
				served = append(served, r)
			}
		}
		return len(served) >= 300
	})
	sort.Slice(served, func(i, j int) bool { return served[i].Timings.FinishedAt.Before(served[j].Timings.FinishedAt) })
	counts := map[string]int{}
	for _, r := range served[100:300] {
		counts[r.Team]++
	}
	ratio := float64(counts["a"]) / float64(max(counts["b"], 1))
	t.Logf("of results 100 to 300: a %d, b %d: ratio %.2f", counts["a"], counts["b"], ratio)
	if ratio < 2.55 || ratio > 3.45 {
		t.Fatalf("weights 3:1 gave a ratio of %.2f", ratio)
	}
}

// served lists the successful results.
func (l *resultLog) served() []messages.Result {
	l.mu.Lock()
	defer l.mu.Unlock()
	var out []messages.Result
	for _, rs := range l.byID {
		for _, r := range rs {
			if r.Status == messages.StatusOK {
				out = append(out, r)
			}
		}
	}
	return out
}

// A backlog of 5000 batch calls fills the pool; critical calls arriving
// meanwhile go at the next free slot, under a second at p99.
func TestCriticalOvertakesABatchBacklog(t *testing.T) {
	s := startStack(t, stackOptions{yaml: sharedPoolYAML(6000, "  ops: {}\n", "  batch: {max_utilization: 1}\n")})
	startDispatcher(t, s, "d1", nil)
	startDispatcher(t, s, "d2", nil)
	startExecutors(t, s)
	nc := connect(t, s)
	js, _ := jetstream.New(nc)
	log := watchResults(t, nc, "ops")
	ctx := context.Background()
	for i := 0; i < 5000; i++ {
		id := fmt.Sprintf("batch-%05d", i)
		msg := chatCall(id, "m", 5, `,"timeout_ms":600000`)
		if _, err := js.PublishAsync("sluice.call.ops.batch", []byte(msg), jetstream.WithMsgID(id)); err != nil {
			t.Fatal(err)
		}
	}
	<-js.PublishAsyncComplete()
	time.Sleep(time.Second) // the backlog is being drained at 100/s
	var critical []string
	for i := 0; i < 40; i++ {
		id := fmt.Sprintf("critical-%02d", i)
		critical = append(critical, id)
		if err := publishCall(ctx, js, "ops", "critical", id, chatCall(id, "m", 5, "")); err != nil {
			t.Fatal(err)
		}
		time.Sleep(50 * time.Millisecond)
	}
	log.waitFor(t, critical, 30*time.Second)
	var waits []float64
	for _, id := range critical {
		r := log.one(t, id)
		if r.Status != messages.StatusOK {
			t.Fatalf("critical call %s: %+v", id, r.Error)
		}
		waits = append(waits, r.Timings.QueuedMS)
	}
	sort.Float64s(waits)
	p50, p99 := waits[len(waits)/2], waits[len(waits)*99/100]
	pending := 5000 - len(log.byIDPrefix("batch-"))
	t.Logf("critical wait p50 %.1f ms, p99 %.1f ms, with %d batch calls still waiting", p50, p99, pending)
	if pending < 1000 {
		t.Fatalf("only %d batch calls were still waiting: the test must measure during the backlog", pending)
	}
	if p99 >= 1000 {
		t.Fatalf("critical p99 wait %.0f ms; want under 1 s", p99)
	}
}

// byIDPrefix returns the ids with results that start with prefix.
func (l *resultLog) byIDPrefix(prefix string) []string {
	l.mu.Lock()
	defer l.mu.Unlock()
	var out []string
	for id := range l.byID {
		if strings.HasPrefix(id, prefix) {
			out = append(out, id)
		}
	}
	return out
}

// Team a is idle and b uses the whole pool; when a starts, it gets its
// share back within a few seconds.
func TestIdleShareIsLentAndReturned(t *testing.T) {
	s := startStack(t, stackOptions{yaml: sharedPoolYAML(1200, "  a: {}\n  b: {}\n", "")})
	startDispatcher(t, s, "d1", nil)
	startExecutors(t, s)
	nc := connect(t, s)
	js, _ := jetstream.New(nc)
	logA, logB := watchResults(t, nc, "a"), watchResults(t, nc, "b")
	startLoad(t, js, "b", "standard", 40)
	time.Sleep(3 * time.Second)
	before := logB.servedIn(time.Now().Add(-2*time.Second), time.Now())["b"]
	t.Logf("b alone: %d served in 2 s (capacity 40)", before)
	if before < 34 {
		t.Fatalf("b alone should use the whole pool, got %d of 40 in 2 s", before)
	}
	startLoad(t, js, "a", "standard", 40)
	time.Sleep(2 * time.Second)
	from := time.Now()
	time.Sleep(4 * time.Second)
	to := time.Now()
	a, b := logA.servedIn(from, to)["a"], logB.servedIn(from, to)["b"]
	t.Logf("from 2 s after a started: a %d, b %d in %s", a, b, to.Sub(from).Round(time.Millisecond))
	if share := float64(a) / float64(a+b); share < 0.45 || share > 0.55 {
		t.Fatalf("a got %.0f%% of the pool back; with equal weights it should get half", 100*share)
	}
}

// A team with a cap never exceeds it, even with the pool idle.
func TestCapHoldsOnAnIdlePool(t *testing.T) {
	s := startStack(t, stackOptions{yaml: sharedPoolYAML(6000, "  capped: {pools: {m: {cap_rpm: 120}}}\n", "")})
	startDispatcher(t, s, "d1", nil)
	startDispatcher(t, s, "d2", nil)
	startExecutors(t, s)
	nc := connect(t, s)
	js, _ := jetstream.New(nc)
	log := watchResults(t, nc, "capped")
	start := time.Now()
	l := startLoad(t, js, "capped", "standard", 20)
	time.Sleep(5 * time.Second)
	l.halt()
	elapsed := time.Since(start)
	served := log.servedIn(start, time.Now())["capped"]
	// The cap's bucket: burst 0.5 s of 2/s (1 call) + 2/s over the run and
	// the lease time.
	bound := 1 + 2*(elapsed.Seconds()+0.1)
	t.Logf("served %d in %s under a cap of 2/s (bound %.1f)", served, elapsed.Round(time.Millisecond), bound)
	if float64(served) > bound {
		t.Fatalf("served %d, over the cap's bound of %.1f", served, bound)
	}
	if served < 8 {
		t.Fatalf("served %d: the cap should still let 2/s through", served)
	}
}

// A team over its queue limit gets queue_full at once, with a hint to
// back off; the calls it has waiting still meet their deadlines.
func TestQueueLimitAndDeadlines(t *testing.T) {
	// At 6 rpm, a call sent late is handed back and waits 10 s for its
	// next place, past every deadline here. Under the race detector on a
	// busy machine the stack's first publish, lease and claim take tens
	// of milliseconds: a call to a fast pool on the same path warms it
	// first, and admission.jitter leaves the attempt's claim room.
	yaml := func(fakeURL string) string {
		return strings.Replace(sharedPoolYAML(6, "  small: {max_queued: 10}\n  warm: {}\n", "")(fakeURL), "teams:\n",
			fmt.Sprintf("  fast:\n    deployments:\n      - {id: fast, provider: openai, base_url: %q, region: us-east, key: KEY_ONLY, rpm: 6000, tpm: 100000000}\nteams:\n", fakeURL+"/v1"), 1) +
			"admission: {jitter: 100ms}\n"
	}
	s := startStack(t, stackOptions{yaml: yaml})
	startDispatcher(t, s, "d1", nil)
	startExecutors(t, s)
	nc := connect(t, s)
	js, _ := jetstream.New(nc)
	warm := watchResults(t, nc, "warm")
	if err := publishCall(context.Background(), js, "warm", "standard", "warm-up", chatCall("warm-up", "fast", 5, "")); err != nil {
		t.Fatal(err)
	}
	warm.waitFor(t, []string{"warm-up"}, 30*time.Second)
	log := watchResults(t, nc, "small")
	var ids []string
	for i := 0; i < 30; i++ {
		id := fmt.Sprintf("q-%02d", i)
		ids = append(ids, id)
		if err := publishCall(context.Background(), js, "small", "standard", id, chatCall(id, "m", 5, `,"timeout_ms":3000`)); err != nil {
			t.Fatal(err)
		}
	}
	log.waitFor(t, ids, 30*time.Second)
	outcomes := map[string]int{}
	for _, r := range log.exactlyOnce(t, ids) {
		outcomes[r.Outcome()]++
		if r.Error != nil && r.Error.Code == messages.CodeQueueFull {
			if r.Error.RetryAfterMS <= 0 || !strings.Contains(r.Error.Message, "max_queued") || r.Timings.QueuedMS > 100 {
				t.Errorf("queue_full must come at once and say how to back off: %+v (queued %.0f ms)", r.Error, r.Timings.QueuedMS)
			}
		}
	}
	t.Logf("outcomes %v", outcomes)
	if outcomes[string(messages.CodeQueueFull)] < 19 || outcomes[string(messages.CodeDeadlineExceeded)] < 8 || outcomes["ok"] < 1 {
		t.Fatalf("outcomes %v: want about 20 queue_full, the rest waiting until served or their deadline", outcomes)
	}
}

// Every dispatcher restarts while 1000 calls wait: none is lost, none is
// answered twice, and critical calls still go before batch ones.
func TestRestartEveryDispatcherWithAQueue(t *testing.T) {
	s := startStack(t, stackOptions{yaml: sharedPoolYAML(6000, "  ops: {}\n", "  batch: {max_utilization: 1}\n")})
	fast := func(c *dispatcher.Config) { c.AckWait = 3 * time.Second }
	d1 := startDispatcher(t, s, "d1", fast)
	d2 := startDispatcher(t, s, "d2", fast)
	startExecutors(t, s)
	nc := connect(t, s)
	js, _ := jetstream.New(nc)
	log := watchResults(t, nc, "ops")
	var ids, critical, batch []string
	for i := 0; i < 1000; i++ {
		tier := "batch"
		if i >= 800 {
			tier = "critical"
		}
		id := fmt.Sprintf("%s-%04d", tier, i)
		ids = append(ids, id)
		if tier == "critical" {
			critical = append(critical, id)
		} else {
			batch = append(batch, id)
		}
		msg := chatCall(id, "m", 5, `,"timeout_ms":600000`)
		if _, err := js.PublishAsync("sluice.call.ops."+tier, []byte(msg), jetstream.WithMsgID(id)); err != nil {
			t.Fatal(err)
		}
	}
	<-js.PublishAsyncComplete()
	time.Sleep(500 * time.Millisecond)
	d1.Kill()
	if err := d2.Stop(); err != nil {
		t.Fatal(err)
	}
	restarted := time.Now()
	startDispatcher(t, s, "d3", fast)
	startDispatcher(t, s, "d4", fast)
	log.waitFor(t, ids, 90*time.Second)
	got := log.exactlyOnce(t, ids)
	var lastCritical time.Time
	for _, id := range critical {
		if got[id].Status != messages.StatusOK {
			t.Fatalf("%s: %+v", id, got[id].Error)
		}
		if f := got[id].Timings.FinishedAt; f.After(lastCritical) {
			lastCritical = f
		}
	}
	after := 0
	for _, id := range batch {
		if got[id].Status != messages.StatusOK {
			t.Fatalf("%s: %+v", id, got[id].Error)
		}
		if got[id].Timings.FinishedAt.After(lastCritical) {
			after++
		}
	}
	t.Logf("the last critical call finished %s after the restart; %d of %d batch calls finished after it", lastCritical.Sub(restarted).Round(time.Millisecond), after, len(batch))
	if after < len(batch)/2 {
		t.Fatalf("only %d batch calls finished after the last critical one: priorities must hold across the restart", after)
	}
}

// Critical calls published behind a backlog that waits in the calls
// stream itself (more than streams.max_waiting, so the dispatchers hold
// only part of it) reach a dispatcher through the critical lane and are
// served next, long before the calls ahead of them in the stream.
func TestCriticalPassesABacklogInTheStream(t *testing.T) {
	yaml := sharedPoolYAML(600, "  ops: {}\n", "  batch: {max_utilization: 1}\n")
	s := startStack(t, stackOptions{yaml: func(u string) string { return yaml(u) + "streams: {max_waiting: 100}\n" }})
	startDispatcher(t, s, "d1", nil)
	startExecutors(t, s)
	nc := connect(t, s)
	js, _ := jetstream.New(nc)
	log := watchResults(t, nc, "ops")
	ctx := t.Context()
	const backlog = 1000
	for i := 0; i < backlog; i++ {
		id := fmt.Sprintf("batch-%04d", i)
		if _, err := js.PublishAsync("sluice.call.ops.batch", []byte(chatCall(id, "m", 5, `,"timeout_ms":600000`)), jetstream.WithMsgID(id)); err != nil {
			t.Fatal(err)
		}
	}
	<-js.PublishAsyncComplete()
	// The dispatcher holds max_waiting of them; the rest wait in the
	// stream, ahead of anything published now.
	calls, err := js.Stream(ctx, messages.StreamCalls)
	if err != nil {
		t.Fatal(err)
	}
	waitUntil(t, "the dispatcher holds max_waiting calls", 30*time.Second, func() bool {
		c, err := calls.Consumer(ctx, streams.DispatcherConsumer)
		return err == nil && c.CachedInfo().NumAckPending == 100
	})
	var critical []string
	for i := 0; i < 5; i++ {
		id := fmt.Sprintf("critical-%d", i)
		critical = append(critical, id)
		if err := publishCall(ctx, js, "ops", "critical", id, chatCall(id, "m", 5, "")); err != nil {
			t.Fatal(err)
		}
	}
	// At 10 calls/s, the 900 calls ahead in the stream take 90 s.
	log.waitFor(t, critical, 20*time.Second)
	for _, id := range critical {
		if r := log.one(t, id); r.Status != messages.StatusOK {
			t.Fatalf("critical call %s: %+v", id, r.Error)
		}
	}
	if served := len(log.byIDPrefix("batch-")); served > backlog/2 {
		t.Fatalf("%d of %d batch calls were served before the critical calls: the test must measure behind the backlog", served, backlog)
	}
}
