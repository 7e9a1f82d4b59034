package regions_test

import (
	"context"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/sluicehq/sluice/messages"
	"github.com/sluicehq/sluice/services/regions"
	"github.com/sluicehq/sluice/services/streams"
	"github.com/sluicehq/sluice/test/natstest"
)

// hang bounds waits that only detect a hang.
const hang = 30 * time.Second

// probeUntil probes region until ok accepts the reading.
func probeUntil(t *testing.T, exec jetstream.Stream, region string, ok func(regions.Reading) bool) regions.Reading {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), hang)
	defer cancel()
	for {
		r, err := regions.Probe(ctx, exec, region, time.Now())
		if err != nil {
			t.Fatal(err)
		}
		if ok(r) {
			return r
		}
		select {
		case <-ctx.Done():
			t.Fatalf("region %s: reading %+v never came to what was expected", region, r)
		case <-time.After(10 * time.Millisecond):
		}
	}
}

// A region is served while an executor asks for work or acknowledged some
// lately, and stalled when it is not served and work waits for it.
func TestProbe(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), hang)
	defer cancel()
	js, err := jetstream.New(natstest.Connect(t, natstest.Start(t)))
	if err != nil {
		t.Fatal(err)
	}

	// Without SLUICE_EXEC no executor serves anything.
	served, err := regions.Served(ctx, js, []string{"r1"}, 0)
	if err != nil || len(served) != 0 {
		t.Fatalf("without SLUICE_EXEC: served %v, %v", served, err)
	}

	exec, err := js.CreateStream(ctx, jetstream.StreamConfig{
		Name: messages.StreamExec, Subjects: []string{messages.ExecSubjects}, Retention: jetstream.WorkQueuePolicy,
	})
	if err != nil {
		t.Fatal(err)
	}
	// No consumer: no executor ever started there; work would wait.
	r, err := regions.Probe(ctx, exec, "r1", time.Now())
	if err != nil {
		t.Fatal(err)
	}
	if r.Consumer || r.Served() || !r.Stalled() {
		t.Fatalf("no consumer: %+v served %v stalled %v, want not served, stalled", r, r.Served(), r.Stalled())
	}

	cons, err := exec.CreateOrUpdateConsumer(ctx, jetstream.ConsumerConfig{
		Durable: streams.ExecConsumer("r1"), FilterSubject: messages.ExecSubject("r1"), AckPolicy: jetstream.AckExplicitPolicy,
	})
	if err != nil {
		t.Fatal(err)
	}
	// A consumer nobody pulls from and no work: not served, but nothing
	// waits for it either.
	r, err = regions.Probe(ctx, exec, "r1", time.Now())
	if err != nil {
		t.Fatal(err)
	}
	if !r.Consumer || r.Served() || r.Stalled() {
		t.Fatalf("idle consumer: %+v served %v stalled %v, want not served, not stalled", r, r.Served(), r.Stalled())
	}
	if served, err := regions.Served(ctx, js, []string{"r1"}, 0); err != nil || served["r1"] {
		t.Fatalf("idle consumer: served %v, %v", served, err)
	}

	// Work waits, no one takes it: stalled.
	if _, err := js.Publish(ctx, messages.ExecSubject("r1"), []byte("w1")); err != nil {
		t.Fatal(err)
	}
	r = probeUntil(t, exec, "r1", func(r regions.Reading) bool { return r.Pending > 0 })
	if r.Served() || !r.Stalled() {
		t.Fatalf("work waiting: %+v served %v stalled %v, want stalled", r, r.Served(), r.Stalled())
	}

	// An executor takes the work and acknowledges it: served, though it
	// asks for nothing more.
	batch, err := cons.Fetch(1, jetstream.FetchMaxWait(hang))
	if err != nil {
		t.Fatal(err)
	}
	for m := range batch.Messages() {
		if err := m.DoubleAck(ctx); err != nil {
			t.Fatal(err)
		}
	}
	r = probeUntil(t, exec, "r1", func(r regions.Reading) bool { return r.Acked })
	if !r.Served() || r.Stalled() || r.Asking != 0 {
		t.Fatalf("acknowledged lately: %+v served %v stalled %v, want served", r, r.Served(), r.Stalled())
	}
	// ... but not once Active has passed since.
	if r := regions.Read(mustInfo(t, cons), time.Now().Add(regions.Active)); r.Served() {
		t.Fatalf("acknowledged %s ago: %+v served", regions.Active, r)
	}

	// An idle executor asking for work: served, and Served says so.
	msgs, err := cons.Messages()
	if err != nil {
		t.Fatal(err)
	}
	defer msgs.Stop()
	go func() {
		for {
			m, err := msgs.Next()
			if err != nil {
				return
			}
			_ = m.Ack()
		}
	}()
	probeUntil(t, exec, "r1", func(r regions.Reading) bool { return r.Asking > 0 })
	if at := regions.Read(mustInfo(t, cons), time.Now().Add(regions.Active)); at.Asking == 0 || !at.Served() {
		t.Fatalf("asking for work: %+v served %v, want served whenever it last acknowledged", at, at.Served())
	}
	served, err = regions.Served(ctx, js, []string{"r1", "r2"}, 0)
	if err != nil || !served["r1"] || served["r2"] {
		t.Fatalf("served %v, %v; want r1 only", served, err)
	}
}

func mustInfo(t *testing.T, cons jetstream.Consumer) *jetstream.ConsumerInfo {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), hang)
	defer cancel()
	info, err := cons.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	return info
}
