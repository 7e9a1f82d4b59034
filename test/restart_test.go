package test

import (
	"context"
	"encoding/json"
	"fmt"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/sluicehq/sluice/messages"
	"github.com/sluicehq/sluice/services/dispatcher"
	"github.com/sluicehq/sluice/services/executor"
)

// The NATS server restarts in the middle of a stream of calls: every call
// JetStream accepted still ends with exactly one stored result.
func TestNATSRestartLosesNothing(t *testing.T) {
	s := startStack(t, stackOptions{yaml: twoRegionYAML(600, 100000, layout{})})
	startDispatcher(t, s, "d1", func(c *dispatcher.Config) { c.AckWait = 3 * time.Second })
	for _, r := range s.Shared.Load().Regions() {
		startExecutor(t, s, r, func(c *executor.Config) { c.AckWait = 3 * time.Second })
	}
	nc := connect(t, s)
	js, _ := jetstream.New(nc)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()

	// 40 calls/s of capacity, 60/s of demand for 6 s; the server restarts
	// after 2 s. Calls published while it is down are refused, not accepted.
	var accepted, refused []string
	restarted := make(chan error, 1)
	start := time.Now()
	go func() {
		time.Sleep(2 * time.Second)
		restarted <- s.RestartNATS()
	}()
	for i := 0; time.Since(start) < 6*time.Second; i++ {
		time.Sleep(time.Until(start.Add(time.Duration(i) * time.Second / 60)))
		id := fmt.Sprintf("restart-%04d", i)
		pubCtx, pubCancel := context.WithTimeout(ctx, 2*time.Second)
		err := publishCall(pubCtx, js, "demo", "standard", id, chatCall(id, "m", 10, `,"timeout_ms":120000`))
		pubCancel()
		if err == nil {
			accepted = append(accepted, id)
		} else {
			// Refused, or stored with its acknowledgement lost: the client
			// cannot know which, but sluice must not answer it twice.
			refused = append(refused, id)
		}
	}
	if err := <-restarted; err != nil {
		t.Fatal(err)
	}
	t.Logf("%d calls accepted across the restart", len(accepted))

	results, err := js.Stream(ctx, messages.StreamResults)
	if err != nil {
		t.Fatal(err)
	}
	for _, id := range accepted {
		for {
			m, err := results.GetLastMsgForSubject(ctx, messages.ResultSubject("demo", id))
			if err == nil {
				var r messages.Result
				if err := json.Unmarshal(m.Data, &r); err != nil || r.Status != messages.StatusOK {
					t.Errorf("call %s: %s", id, m.Data)
				}
				break
			}
			if ctx.Err() != nil {
				t.Fatalf("call %s has no result: %v", id, err)
			}
			time.Sleep(100 * time.Millisecond)
		}
	}
	answeredRefused := 0
	for _, id := range refused {
		if _, err := results.GetLastMsgForSubject(ctx, messages.ResultSubject("demo", id)); err == nil {
			answeredRefused++
		}
	}
	info, err := results.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("%d publishes failed; %d of those had been stored and were answered", len(refused), answeredRefused)
	// One result per subject is kept; had any call been answered twice, the
	// stream's sequence would have run past the number of results.
	want := uint64(len(accepted) + answeredRefused)
	if info.State.Msgs != want || info.State.LastSeq != want {
		t.Fatalf("results stream holds %d messages up to sequence %d for %d answered calls", info.State.Msgs, info.State.LastSeq, want)
	}
}
