package test

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/sluicehq/sluice/messages"
	"github.com/sluicehq/sluice/services/dispatcher"
)

// Calls that only a region none of whose executors runs may serve end,
// once their deadline has passed, with exactly one deadline_exceeded
// result naming the region, and leave nothing in SLUICE_EXEC (work
// admitted there before the region was seen stalled goes back to
// admission once it is late): a region that never comes back strands no
// call, and one that comes back late does not run calls whose answer was
// given.
func TestWorkNoExecutorTakesEndsAtItsDeadline(t *testing.T) {
	s := startStack(t, stackOptions{yaml: twoRegionYAML(600, 1_000_000, layout{})})
	sweepFast := func(c *dispatcher.Config) {
		c.SweepInterval = 200 * time.Millisecond
		c.StrandedGrace = time.Second
	}
	startDispatcher(t, s, "d1", sweepFast)
	startDispatcher(t, s, "d2", sweepFast)
	startExecutor(t, s, "us-east", nil) // eu-west has none
	nc := connect(t, s)
	js, _ := jetstream.New(nc)
	log := watchResults(t, nc, "demo")
	ctx := context.Background()

	var stranded, served []string
	for i := 0; i < 20; i++ {
		id := fmt.Sprintf("eu-%02d", i)
		stranded = append(stranded, id)
		// 3 s: the dispatchers see eu-west stalled at their second reading
		// (a second apart) and name it; a call whose deadline passes before
		// (a busy machine delivered it late) could not.
		if err := publishCall(ctx, js, "demo", "standard", id, chatCall(id, "m", 5, `,"regions":["eu-west"],"timeout_ms":3000`)); err != nil {
			t.Fatal(err)
		}
		id = fmt.Sprintf("us-%02d", i)
		served = append(served, id)
		if err := publishCall(ctx, js, "demo", "standard", id, chatCall(id, "m", 5, `,"regions":["us-east"],"timeout_ms":3000`)); err != nil {
			t.Fatal(err)
		}
	}
	log.waitFor(t, append(append([]string{}, stranded...), served...), 20*time.Second)
	for _, id := range served {
		if r := log.one(t, id); r.Status != messages.StatusOK {
			t.Fatalf("call %s in a region with an executor: %+v", id, r.Error)
		}
	}
	for _, id := range stranded {
		r := log.one(t, id)
		if r.Error == nil || r.Error.Code != messages.CodeDeadlineExceeded || !strings.Contains(r.Error.Message, "eu-west") {
			t.Fatalf("stranded call %s: status %s error %+v; want deadline_exceeded naming eu-west", id, r.Status, r.Error)
		}
	}
	t.Logf("stranded call answered: %s", log.one(t, stranded[0]).Error.Message)

	exec, err := js.Stream(ctx, messages.StreamExec)
	if err != nil {
		t.Fatal(err)
	}
	// The sweep deletes each message right after answering its call.
	left := -1
	for wait := time.Now().Add(5 * time.Second); left != 0 && time.Now().Before(wait); time.Sleep(50 * time.Millisecond) {
		info, err := exec.Info(ctx, jetstream.WithSubjectFilter(messages.ExecSubject("eu-west")))
		if err != nil {
			t.Fatal(err)
		}
		left = int(info.State.Subjects[messages.ExecSubject("eu-west")])
	}
	if left != 0 {
		t.Fatalf("%d stranded work messages are still in SLUICE_EXEC", left)
	}

	// An executor of eu-west that starts now finds nothing to run.
	startExecutor(t, s, "eu-west", nil)
	time.Sleep(time.Second)
	log.exactlyOnce(t, append(stranded, served...))
	if got := s.Fake.Stats().Total.Received; got != int64(len(served)) {
		t.Fatalf("the provider saw %d requests; want only the %d served in us-east", got, len(served))
	}
}

// Calls that may go to any region go around one whose executors take no
// work, and use it again once an executor of it runs.
func TestCallsGoAroundARegionWithNoExecutor(t *testing.T) {
	s := startStack(t, stackOptions{yaml: twoRegionYAML(6000, 10_000_000, layout{})})
	startDispatcher(t, s, "d1", func(c *dispatcher.Config) {
		c.SweepInterval = 200 * time.Millisecond
		c.StrandedGrace = time.Second
	})
	startExecutor(t, s, "us-east", nil) // eu-west has none yet
	nc := connect(t, s)
	js, _ := jetstream.New(nc)
	log := watchResults(t, nc, "demo")
	ctx := context.Background()
	waitStalled(t, nc, "eu-west")

	send := func(prefix string) map[string]int {
		var ids []string
		for i := 0; i < 40; i++ {
			id := fmt.Sprintf("%s-%02d", prefix, i)
			ids = append(ids, id)
			if err := publishCall(ctx, js, "demo", "standard", id, chatCall(id, "m", 5, `,"timeout_ms":3000`)); err != nil {
				t.Fatal(err)
			}
		}
		log.waitFor(t, ids, 20*time.Second)
		byRegion := map[string]int{}
		for _, id := range ids {
			r := log.one(t, id)
			if r.Status != messages.StatusOK {
				t.Fatalf("call %s went to %s and failed: %+v", id, r.Region, r.Error)
			}
			byRegion[r.Region]++
		}
		return byRegion
	}
	if got := send("without"); got["eu-west"] != 0 {
		t.Fatalf("with no executor in eu-west, calls went there: %v", got)
	}

	startExecutor(t, s, "eu-west", nil)
	waitStalled(t, nc)
	got := send("with")
	t.Logf("after an executor of eu-west started: %v", got)
	if got["eu-west"] == 0 {
		t.Fatalf("eu-west got no calls once its executor ran: %v", got)
	}
}

// waitStalled waits until a dispatcher announces exactly the stalled
// regions given.
func waitStalled(t *testing.T, nc *nats.Conn, regions ...string) {
	t.Helper()
	sub, err := nc.SubscribeSync(messages.StateSubject)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = sub.Unsubscribe() }()
	want := strings.Join(regions, ",")
	for deadline := time.Now().Add(15 * time.Second); time.Now().Before(deadline); {
		m, err := sub.NextMsg(time.Second)
		if err != nil {
			continue
		}
		var st messages.DispatcherState
		if json.Unmarshal(m.Data, &st) == nil && strings.Join(st.StalledRegions, ",") == want {
			return
		}
	}
	t.Fatalf("no dispatcher announced stalled regions [%s] within 15 s", want)
}
