package concurrency_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/sluicehq/sluice/services/concurrency"
	"github.com/sluicehq/sluice/services/limiter/limitertest"
	"github.com/sluicehq/sluice/test/natstest"
)

// dep is the deployment most tests use.
const dep = "oai-us-1"

var buckets atomic.Int64

// env is one test's NATS server, KV bucket and manual clock, shared by the
// holders it opens.
type env struct {
	t      *testing.T
	srv    *server.Server
	bucket string
	kv     jetstream.KeyValue // on a connection of the test's own
	clock  *limitertest.ManualClock
	t0     time.Time
}

func newEnv(t *testing.T) *env {
	t.Helper()
	srv := natstest.Start(t)
	bucket := fmt.Sprintf("concurrency_%d", buckets.Add(1))
	js, err := jetstream.New(natstest.Connect(t, srv))
	if err != nil {
		t.Fatal(err)
	}
	kv, err := js.CreateKeyValue(context.Background(), jetstream.KeyValueConfig{Bucket: bucket})
	if err != nil {
		t.Fatalf("create KV bucket: %v", err)
	}
	c := limitertest.NewManualClock()
	return &env{t: t, srv: srv, bucket: bucket, kv: kv, clock: c, t0: c.Now()}
}

// holder is one dispatcher's Slots, on a connection of its own.
type holder struct {
	*concurrency.Slots
	nc     *nats.Conn
	killed bool
}

// open returns started Slots for id, stopped when the test ends unless
// killed. Unless opts say otherwise, it reads the manual clock, has a
// BlockTTL of 10s and runs no loop: tests call Tick.
func (e *env) open(id string, opts concurrency.Options) *holder {
	e.t.Helper()
	return e.openWith(id, opts, nil)
}

// openWith is open with the KV bucket passed through wrap, when not nil.
func (e *env) openWith(id string, opts concurrency.Options, wrap func(jetstream.KeyValue) jetstream.KeyValue) *holder {
	e.t.Helper()
	nc := natstest.Connect(e.t, e.srv)
	js, err := jetstream.New(nc)
	if err != nil {
		e.t.Fatal(err)
	}
	kv, err := js.KeyValue(context.Background(), e.bucket)
	if err != nil {
		e.t.Fatalf("open KV bucket: %v", err)
	}
	if wrap != nil {
		kv = wrap(kv)
	}
	if opts.Clock == nil {
		opts.Clock = e.clock.Now
	}
	if opts.BlockTTL == 0 {
		opts.BlockTTL = 10 * time.Second
	}
	if opts.TickEvery == 0 {
		opts.TickEvery = -1
	}
	s, err := concurrency.New(kv, id, opts)
	if err != nil {
		e.t.Fatal(err)
	}
	if err := s.Start(context.Background()); err != nil {
		e.t.Fatalf("start: %v", err)
	}
	h := &holder{Slots: s, nc: nc}
	e.t.Cleanup(func() {
		if !h.killed {
			if err := s.Stop(context.Background()); err != nil {
				e.t.Errorf("stop %s: %v", id, err)
			}
		}
	})
	return h
}

// kill makes h die as a crashed process would: no Stop, no more renewals,
// its connection gone.
func (h *holder) kill() {
	h.killed = true
	h.nc.Close()
}

// wireBlock is a block as stored.
type wireBlock struct {
	N    int   `json:"n"`
	Exp  int64 `json:"exp"`
	Want int   `json:"want"`
}

// stored reads the blocks stored for key.
func (e *env) stored(key string) map[string]wireBlock {
	e.t.Helper()
	kve, err := e.kv.Get(context.Background(), key)
	if errors.Is(err, jetstream.ErrKeyNotFound) {
		return nil
	}
	if err != nil {
		e.t.Fatalf("get %q: %v", key, err)
	}
	return decode(e.t, kve.Value())
}

func decode(t *testing.T, data []byte) map[string]wireBlock {
	t.Helper()
	var w struct {
		Holders map[string]wireBlock `json:"holders"`
	}
	if err := json.Unmarshal(data, &w); err != nil {
		t.Fatalf("decode %s: %v", data, err)
	}
	return w.Holders
}

// lease returns a lease ending d from the manual clock's now.
func (e *env) lease(d time.Duration) time.Time { return e.clock.Now().Add(d) }

func acquire(t *testing.T, h *holder, max int, call string, lease time.Time) {
	t.Helper()
	if err := h.Acquire(context.Background(), dep, max, call, lease); err != nil {
		t.Fatalf("%s: Acquire(%s, max %d): %v", h.Holder(), call, max, err)
	}
}

func full(t *testing.T, h *holder, max int, call string, lease time.Time) {
	t.Helper()
	if err := h.Acquire(context.Background(), dep, max, call, lease); !errors.Is(err, concurrency.ErrFull) {
		t.Fatalf("%s: Acquire(%s, max %d) = %v, want ErrFull", h.Holder(), call, max, err)
	}
}

func tick(t *testing.T, h *holder) {
	t.Helper()
	if err := h.Tick(context.Background()); err != nil {
		t.Fatalf("%s: Tick: %v", h.Holder(), err)
	}
}

func wantCounts(t *testing.T, h *holder, inFlight, held int) {
	t.Helper()
	if got := h.InFlight(dep); got != inFlight {
		t.Errorf("%s: InFlight = %d, want %d", h.Holder(), got, inFlight)
	}
	if got := h.Held(dep); got != held {
		t.Errorf("%s: Held = %d, want %d", h.Holder(), got, held)
	}
}

// eventually polls cond until it holds, for what holders learn through
// their KV watchers or loops. The deadline only bounds a failing test.
func eventually(t *testing.T, cond func() bool, what string) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting until %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}
