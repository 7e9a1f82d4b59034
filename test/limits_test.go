package test

import (
	"context"
	"encoding/json"
	"fmt"
	"sort"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/sluicehq/sluice/messages"
	"github.com/sluicehq/sluice/services/devstack"
	"github.com/sluicehq/sluice/services/dispatcher"
	"github.com/sluicehq/sluice/services/fakeprovider"
)

// publishPaced publishes n calls at rate per second and returns their ids.
func publishPaced(t *testing.T, js jetstream.JetStream, n int, rate float64, body func(id string) string) []string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Duration(float64(n)/rate*float64(time.Second))+time.Minute)
	defer cancel()
	ids := make([]string, n)
	start := time.Now()
	for i := range ids {
		ids[i] = fmt.Sprintf("call-%05d", i)
		if wait := time.Until(start.Add(time.Duration(float64(i) / rate * float64(time.Second)))); wait > 0 {
			time.Sleep(wait)
		}
		if err := publishCall(ctx, js, "demo", "standard", ids[i], body(ids[i])); err != nil {
			t.Fatalf("publish %s: %v", ids[i], err)
		}
	}
	return ids
}

// The provider allows less than configured and does not say so (no
// rate-limit headers, as with Bedrock): calls are refused, retried with
// growing delays, and each ends with exactly one result, success or
// rate_limited.
func TestRetriesWhenTheProviderAllowsLess(t *testing.T) {
	silent := startSilentProxy(t)
	s := startStack(t, stackOptions{
		yaml: func(string) string {
			return twoRegionYAML(600, 100000, layout{top: "retry: {max_attempts: 4, base_delay: 500ms, max_delay: 4s, budget: 5}\n"})(silent.URL)
		},
	})
	silent.target.Store(s.Fake)
	// The provider really allows 120 RPM per key, a fifth of the configuration.
	for _, dep := range s.Shared.Load().Pools["m"].Deployments {
		if err := s.Fake.SetKey(devstack.DevSecrets(s.Shared.Load())[dep.Key], fakeprovider.KeyConfig{RPM: 120, TPM: 100000}); err != nil {
			t.Fatal(err)
		}
	}
	startDispatcher(t, s, "d1", nil)
	startExecutors(t, s)
	nc := connect(t, s)
	js, _ := jetstream.New(nc)
	log := watchResults(t, nc, "demo")
	retries := watchRetries(t, nc)

	ids := publishPaced(t, js, 80, 200, func(id string) string {
		return chatCall(id, "m", 10, `,"timeout_ms":120000`)
	})
	log.waitFor(t, ids, 90*time.Second)
	got := log.exactlyOnce(t, ids)
	outcomes := map[string]int{}
	retried := 0
	for _, r := range got {
		outcomes[r.Outcome()]++
		if r.Attempts > 1 {
			retried++
		}
		if r.Outcome() != "ok" && r.Outcome() != string(messages.CodeRateLimited) {
			t.Errorf("call %s ended %s: %s", r.ID, r.Outcome(), r.Error.Message)
		}
	}
	st := s.Fake.Stats().Total
	t.Logf("outcomes %v; %d calls retried; provider served %d and refused %d", outcomes, retried, st.Served, st.Refused())
	if retried == 0 || st.Refused() == 0 {
		t.Fatal("the provider allowed less than configured, so calls should have been refused and retried")
	}
	means := retries.meanDelayByAttempt()
	t.Logf("mean delay before each attempt: %v", means)
	if len(means) < 2 || means[0].mean >= means[len(means)-1].mean {
		t.Errorf("delays should grow with the attempt number: %v", means)
	}
}

// retryLog records the retries executors hand back, and the delay each
// asked for.
type retryLog struct {
	mu     sync.Mutex
	delays map[int][]time.Duration // by the attempt the retry is for
}

func watchRetries(t *testing.T, nc *nats.Conn) *retryLog {
	l := &retryLog{delays: map[int][]time.Duration{}}
	sub, err := nc.Subscribe(messages.RetrySubjects, func(m *nats.Msg) {
		var r messages.Retry
		if err := json.Unmarshal(m.Data, &r); err != nil {
			t.Errorf("undecodable retry: %v", err)
			return
		}
		l.mu.Lock()
		l.delays[r.Attempt] = append(l.delays[r.Attempt], time.Until(r.NotBefore))
		l.mu.Unlock()
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = sub.Unsubscribe() })
	return l
}

type attemptDelay struct {
	attempt int
	mean    time.Duration
	n       int
}

func (a attemptDelay) String() string {
	return fmt.Sprintf("#%d:%s(n=%d)", a.attempt, a.mean.Round(time.Millisecond), a.n)
}

// meanDelayByAttempt lists the mean delay per attempt, for attempts with
// enough retries to mean something.
func (l *retryLog) meanDelayByAttempt() []attemptDelay {
	l.mu.Lock()
	defer l.mu.Unlock()
	var out []attemptDelay
	for attempt, ds := range l.delays {
		if len(ds) < 5 {
			continue
		}
		var sum time.Duration
		for _, d := range ds {
			sum += d
		}
		out = append(out, attemptDelay{attempt: attempt, mean: sum / time.Duration(len(ds)), n: len(ds)})
	}
	sort.Slice(out, func(i, j int) bool { return out[i].attempt < out[j].attempt })
	return out
}

// A dispatcher stops (gracefully, or by crashing) in the middle of a stream
// of calls and another starts: every accepted call gets exactly one result.
func TestDispatcherRestartLosesNothing(t *testing.T) {
	for _, crash := range []bool{false, true} {
		name := "graceful"
		if crash {
			name = "crash"
		}
		t.Run(name, func(t *testing.T) {
			s := startStack(t, stackOptions{yaml: twoRegionYAML(600, 100000, layout{})})
			fastFailover := func(c *dispatcher.Config) { c.AckWait = 2 * time.Second }
			first := startDispatcher(t, s, "first", fastFailover)
			startExecutors(t, s)
			nc := connect(t, s)
			js, _ := jetstream.New(nc)
			log := watchResults(t, nc, "demo")

			// 40 calls/s of capacity, 80/s of demand: a queue builds up.
			var ids []string
			done := make(chan struct{})
			go func() {
				defer close(done)
				ids = publishPaced(t, js, 400, 80, func(id string) string {
					return chatCall(id, "m", 10, `,"timeout_ms":120000`)
				})
			}()
			time.Sleep(2 * time.Second)
			if crash {
				first.Kill()
			} else if err := first.Stop(); err != nil {
				t.Fatal(err)
			}
			startDispatcher(t, s, "second", fastFailover)
			<-done
			log.waitFor(t, ids, 90*time.Second)
			for id, r := range log.exactlyOnce(t, ids) {
				if r.Status != messages.StatusOK {
					t.Errorf("call %s: %+v", id, r.Error)
				}
			}
			if refused := s.Fake.Stats().Total.Refused(); refused != 0 {
				t.Errorf("provider refused %d calls across the restart", refused)
			}
		})
	}
}

// A dispatcher whose connection dies while a work publish waits for its
// acknowledgement still finishes: the publish times out rather than hold
// its shutdown for ever. (SLUICE_EXEC is replaced by a subscriber that
// never answers, so the publish is certain to be waiting.)
func TestDispatcherKilledMidPublishStops(t *testing.T) {
	s := startStack(t, stackOptions{yaml: twoRegionYAML(600, 100000, layout{})})
	// Not startDispatcher: its clean-up would wait for ever on a dispatcher
	// that does not stop, where this test should fail.
	d, err := s.StartDispatcher("d1", nil)
	if err != nil {
		t.Fatal(err)
	}
	nc := connect(t, s)
	js, _ := jetstream.New(nc)
	ctx := context.Background()
	if err := js.DeleteStream(ctx, messages.StreamExec); err != nil {
		t.Fatal(err)
	}
	published := make(chan struct{}, 1)
	silent, err := nc.Subscribe(messages.ExecSubjects, func(*nats.Msg) {
		select {
		case published <- struct{}{}:
		default:
		}
	})
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = silent.Unsubscribe() }()
	if err := publishCall(ctx, js, "demo", "standard", "c1", chatCall("c1", "m", 5, "")); err != nil {
		t.Fatal(err)
	}
	select {
	case <-published:
	case <-time.After(10 * time.Second):
		t.Fatal("the dispatcher published no work")
	}

	killed := make(chan struct{})
	go func() { d.Kill(); close(killed) }()
	select {
	case <-killed:
	case <-time.After(30 * time.Second):
		t.Fatal("the dispatcher has not stopped 30 s after its connection was killed")
	}
}
