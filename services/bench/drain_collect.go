package bench

import (
	"bytes"
	"context"
	"encoding/json"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/sluicehq/sluice/messages"
)

// drainMsg is call i of a phase, its id prefix-i (the prefix names the
// phase to the collector), with a deadline far beyond any run.
func drainMsg(prefix string, i int, tier messages.Tier) *nats.Msg {
	id := prefix + "-" + strconv.Itoa(i)
	m := &nats.Msg{
		Subject: messages.CallSubject("bench", tier),
		Data:    []byte(`{"id":"` + id + `","model":"bench","body":` + callBody + `,"timeout_ms":3600000}`),
		Header:  nats.Header{},
	}
	m.Header.Set(messages.HeaderMsgID, id)
	return m
}

// collector routes the results of the drain run, received on one
// subscription, to the phase their id names.
type collector struct {
	window   atomic.Pointer[inFlight]
	backlog  *backlogCount
	critical *criticalCalls
}

func newCollector(backlog int) *collector {
	return &collector{
		backlog:  &backlogCount{seen: make([]bool, backlog), done: make(chan struct{})},
		critical: &criticalCalls{sent: map[int]time.Time{}},
	}
}

var okStatus = []byte(`"status":"ok"`)

func (c *collector) receive(m *nats.Msg) {
	id := m.Subject[strings.LastIndexByte(m.Subject, '.')+1:]
	prefix, num, _ := strings.Cut(id, "-")
	i, err := strconv.Atoi(num)
	if err != nil {
		return
	}
	ok := bytes.Contains(m.Data, okStatus)
	switch prefix {
	case "dw", "db":
		if w := c.window.Load(); w != nil {
			w.result(ok)
		}
	case "dq":
		c.backlog.result(i, ok)
	case "dc":
		c.critical.result(i, m.Data)
	}
}

// inFlight is a closed loop's calls in flight.
type inFlight struct {
	slots  chan struct{}
	left   int64
	failed atomic.Int64
	done   chan struct{}
}

func (w *inFlight) result(ok bool) {
	if !ok {
		w.failed.Add(1)
	}
	select {
	case <-w.slots:
	default:
	}
	if atomic.AddInt64(&w.left, -1) == 0 {
		close(w.done)
	}
}

// backlogCount counts the backlog's results, each once.
type backlogCount struct {
	mu     sync.Mutex
	seen   []bool
	got    atomic.Int64
	failed atomic.Int64
	last   time.Time
	done   chan struct{}
}

func (b *backlogCount) result(i int, ok bool) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if i < 0 || i >= len(b.seen) || b.seen[i] {
		return
	}
	b.seen[i] = true
	b.last = time.Now()
	if !ok {
		b.failed.Add(1)
	}
	if b.got.Add(1) == int64(len(b.seen)) {
		close(b.done)
	}
}

func (b *backlogCount) lastAt() time.Time {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.last
}

// criticalCalls are the critical calls of the drain, and their waits.
type criticalCalls struct {
	mu      sync.Mutex
	sent    map[int]time.Time
	queued  []float64
	results []float64
	failed  int
	// unanswered counts the calls without a result at the end.
	unanswered int
}

// publish sends critical calls at rate until stop is closed, then waits
// a little for their results: those still without one are counted as
// unanswered.
func (c *criticalCalls) publish(ctx context.Context, js jetstream.JetStream, rate float64, stop <-chan struct{}) error {
	start := time.Now()
	n := 0
	for ; ; n++ {
		select {
		case <-stop:
			return c.wait(ctx, n)
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(time.Until(start.Add(time.Duration(float64(n) / rate * float64(time.Second))))):
		}
		c.mu.Lock()
		c.sent[n] = time.Now()
		c.mu.Unlock()
		if _, err := js.PublishMsgAsync(drainMsg("dc", n, messages.TierCritical)); err != nil {
			return err
		}
	}
}

// wait waits up to criticalGrace for the results of the n calls sent,
// and counts those still without one as unanswered.
func (c *criticalCalls) wait(ctx context.Context, n int) error {
	deadline := time.Now().Add(criticalGrace)
	for {
		c.mu.Lock()
		got := len(c.queued) + c.failed
		if got >= n || time.Now().After(deadline) {
			c.unanswered = len(c.sent)
			c.mu.Unlock()
			return nil
		}
		c.mu.Unlock()
		if ctx.Err() != nil {
			return ctx.Err()
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// criticalGrace is how long the critical calls' results are waited for
// once the drain is over.
const criticalGrace = 5 * time.Second

func (c *criticalCalls) result(i int, data []byte) {
	now := time.Now()
	var r messages.Result
	err := json.Unmarshal(data, &r)
	c.mu.Lock()
	defer c.mu.Unlock()
	sent, ok := c.sent[i]
	if !ok {
		return
	}
	delete(c.sent, i)
	if err != nil || r.Status != messages.StatusOK {
		c.failed++
		return
	}
	c.queued = append(c.queued, r.Timings.QueuedMS)
	c.results = append(c.results, float64(now.Sub(sent).Microseconds())/1000)
}

func (c *criticalCalls) waits(rate float64) CriticalWaits {
	c.mu.Lock()
	defer c.mu.Unlock()
	w := CriticalWaits{Rate: rate, Calls: len(c.queued) + c.failed + c.unanswered, Failed: c.failed, Unanswered: c.unanswered}
	w.QueuedP50MS, w.QueuedP99MS, w.QueuedMaxMS = quantiles(c.queued)
	w.ResultP50MS, w.ResultP99MS, w.ResultMaxMS = quantiles(c.results)
	return w
}

// quantiles are the p50, p99 and maximum of xs (zeros when empty).
func quantiles(xs []float64) (p50, p99, most float64) {
	if len(xs) == 0 {
		return 0, 0, 0
	}
	s := append([]float64(nil), xs...)
	sort.Float64s(s)
	at := func(p float64) float64 { return s[int(float64(len(s)-1)*p/100)] }
	return at(50), at(99), s[len(s)-1]
}
