// Package bench owns `sluice bench`: it starts sluice in one process on an
// embedded NATS server with a zero-latency fake provider, and measures, in
// one run, what sluice costs over its parts:
//
//   - the raw JetStream baseline: publish, consume and acknowledge the same
//     number of messages, with nothing else running;
//   - end-to-end calls per second through sluice;
//   - the latency sluice adds over calling the fake provider directly, at a
//     fixed moderate rate;
//   - KV operations of the shared limiter per call.
//
// Numbers from a small, noisy machine vary from run to run; the ratios to
// the baseline measured in the same run travel better than the absolutes.
package bench

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"runtime"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/sluicehq/sluice/messages"
	"github.com/sluicehq/sluice/services/devstack"
	"github.com/sluicehq/sluice/services/executor"
	"github.com/sluicehq/sluice/services/fakeprovider"
)

// Options configure a run.
type Options struct {
	// Calls is the number of calls (and baseline messages) for the
	// throughput measurement. Default 20000.
	Calls int
	// Rate is the fixed rate, in calls per second, of the latency
	// measurement. Default 200.
	Rate float64
	// LatencyCalls is the number of calls the latency measurement makes,
	// through sluice and directly each. Default 2000.
	LatencyCalls int
	// Dispatchers is the number of dispatchers. Default 1.
	Dispatchers int
	// Concurrency of the executor of each region. Default 256.
	Concurrency int
	Logger      *slog.Logger
}

func (o *Options) defaults() {
	if o.Calls <= 0 {
		o.Calls = 20000
	}
	if o.Rate <= 0 {
		o.Rate = 200
	}
	if o.LatencyCalls <= 0 {
		o.LatencyCalls = 2000
	}
	if o.Dispatchers <= 0 {
		o.Dispatchers = 1
	}
	if o.Concurrency <= 0 {
		o.Concurrency = 256
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
}

// Report is what a run measured.
type Report struct {
	Machine     Machine     `json:"machine"`
	Baseline    Throughput  `json:"baseline_jetstream"`
	EndToEnd    Throughput  `json:"end_to_end"`
	Latency     Latency     `json:"added_latency"`
	KVOpsPerCal float64     `json:"kv_ops_per_call"`
	Options     OptionsEcho `json:"options"`
}

// Machine describes where the run happened.
type Machine struct {
	GOMAXPROCS int    `json:"gomaxprocs"`
	NumCPU     int    `json:"num_cpu"`
	GoVersion  string `json:"go_version"`
	OS         string `json:"os"`
}

// OptionsEcho records the options a report was made with.
type OptionsEcho struct {
	Calls        int     `json:"calls"`
	Rate         float64 `json:"rate"`
	LatencyCalls int     `json:"latency_calls"`
	Dispatchers  int     `json:"dispatchers"`
}

// Throughput is a count over a time.
type Throughput struct {
	Count     int     `json:"count"`
	Seconds   float64 `json:"seconds"`
	PerSecond float64 `json:"per_second"`
}

// Latency compares calls through sluice with direct calls at one rate.
type Latency struct {
	Rate      float64 `json:"rate"`
	Calls     int     `json:"calls"`
	DirectP50 float64 `json:"direct_p50_ms"`
	DirectP99 float64 `json:"direct_p99_ms"`
	SluiceP50 float64 `json:"sluice_p50_ms"`
	SluiceP99 float64 `json:"sluice_p99_ms"`
	AddedP50  float64 `json:"added_p50_ms"`
	AddedP99  float64 `json:"added_p99_ms"`
}

func machine() Machine {
	return Machine{GOMAXPROCS: runtime.GOMAXPROCS(0), NumCPU: runtime.NumCPU(), GoVersion: runtime.Version(), OS: runtime.GOOS + "/" + runtime.GOARCH}
}

// benchYAML has limits far above what the machine can push, so the run
// measures sluice's overhead, not its limiting.
func benchYAML(fakeURL string) string {
	var b strings.Builder
	b.WriteString("pools:\n  bench:\n    deployments:\n")
	for _, r := range []string{"us-east", "eu-west"} {
		for k := 1; k <= 2; k++ {
			fmt.Fprintf(&b, "      - {id: %s-%d, provider: openai, base_url: %q, region: %s, key: KEY_%s_%d, rpm: 100000000, tpm: 100000000000}\n",
				r, k, fakeURL+"/v1", r, strings.ToUpper(strings.ReplaceAll(r, "-", "_")), k)
		}
	}
	b.WriteString("teams:\n  bench: {}\n")
	return b.String()
}

const callBody = `{"messages":[{"role":"user","content":"hello"}],"max_tokens":8}`

// Run measures. It takes about Calls/throughput + LatencyCalls/Rate*2
// seconds plus start-up.
func Run(ctx context.Context, o Options) (*Report, error) {
	o.defaults()
	rep := &Report{
		Machine: machine(),
		Options: OptionsEcho{Calls: o.Calls, Rate: o.Rate, LatencyCalls: o.LatencyCalls, Dispatchers: o.Dispatchers},
	}
	reg := prometheus.NewRegistry()
	stack, err := devstack.Start(devstack.Options{
		NATSPort: -1, ConfigYAML: benchYAML, Registerer: reg, Logger: o.Logger,
		Fake: fakeprovider.Config{AcceptAnyKey: true},
	})
	if err != nil {
		return nil, err
	}
	defer stack.Close()

	o.Logger.Info("measuring the JetStream baseline", "messages", o.Calls)
	if rep.Baseline, err = baseline(ctx, stack, o.Calls); err != nil {
		return nil, fmt.Errorf("baseline: %w", err)
	}

	services, err := startSluice(stack, "bench", o.Dispatchers)
	if err != nil {
		return nil, err
	}
	defer services.stop()

	nc, err := stack.Connect("sluice bench")
	if err != nil {
		return nil, err
	}
	defer nc.Close()
	w, err := newWaiter(nc)
	if err != nil {
		return nil, err
	}
	defer w.close()

	// Warm up: connections, consumers, the limiter's first keys.
	if _, err := sluiceLatency(ctx, nc, w, 50, 500, "warm"); err != nil {
		return nil, fmt.Errorf("warm-up: %w", err)
	}
	opsBefore := kvOps(reg)

	o.Logger.Info("measuring end-to-end throughput", "calls", o.Calls)
	if rep.EndToEnd, err = throughput(ctx, nc, w, o.Calls); err != nil {
		return nil, fmt.Errorf("throughput: %w", err)
	}
	time.Sleep(100 * time.Millisecond) // let the dispatchers count their last operations
	rep.KVOpsPerCal = (kvOps(reg) - opsBefore) / float64(o.Calls)

	o.Logger.Info("measuring added latency", "rate", o.Rate, "calls", o.LatencyCalls)
	direct, err := directLatency(ctx, stack.FakeURL, o.LatencyCalls, o.Rate)
	if err != nil {
		return nil, fmt.Errorf("direct latency: %w", err)
	}
	through, err := sluiceLatency(ctx, nc, w, o.LatencyCalls, o.Rate, "lat")
	if err != nil {
		return nil, fmt.Errorf("latency: %w", err)
	}
	rep.Latency = Latency{
		Rate: o.Rate, Calls: o.LatencyCalls,
		DirectP50: percentile(direct, 50), DirectP99: percentile(direct, 99),
		SluiceP50: percentile(through, 50), SluiceP99: percentile(through, 99),
	}
	rep.Latency.AddedP50 = rep.Latency.SluiceP50 - rep.Latency.DirectP50
	rep.Latency.AddedP99 = rep.Latency.SluiceP99 - rep.Latency.DirectP99
	return rep, nil
}

// baseline publishes n messages to a plain work-queue stream, consumes and
// acknowledges them: the floor under anything built on JetStream.
func baseline(ctx context.Context, stack *devstack.Stack, n int) (Throughput, error) {
	nc, err := stack.Connect("sluice bench baseline")
	if err != nil {
		return Throughput{}, err
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		return Throughput{}, err
	}
	s, err := js.CreateStream(ctx, jetstream.StreamConfig{
		Name: "BENCH_BASELINE", Subjects: []string{"bench.baseline"},
		Retention: jetstream.WorkQueuePolicy, Storage: jetstream.FileStorage,
	})
	if err != nil {
		return Throughput{}, err
	}
	defer func() { _ = js.DeleteStream(context.Background(), "BENCH_BASELINE") }()
	cons, err := s.CreateConsumer(ctx, jetstream.ConsumerConfig{Durable: "bench", AckPolicy: jetstream.AckExplicitPolicy, MaxAckPending: 20000})
	if err != nil {
		return Throughput{}, err
	}
	payload := bytes.Repeat([]byte("x"), 200)
	var acked atomic.Int64
	done := make(chan struct{})
	start := time.Now()
	cc, err := cons.Consume(func(m jetstream.Msg) {
		_ = m.Ack()
		if acked.Add(1) == int64(n) {
			close(done)
		}
	}, jetstream.PullMaxMessages(1024))
	if err != nil {
		return Throughput{}, err
	}
	defer cc.Stop()
	for i := 0; i < n; i++ {
		if _, err := js.PublishAsync("bench.baseline", payload); err != nil {
			return Throughput{}, err
		}
	}
	select {
	case <-done:
	case <-ctx.Done():
		return Throughput{}, ctx.Err()
	case <-time.After(5 * time.Minute):
		return Throughput{}, errors.New("baseline messages did not all arrive")
	}
	return rate(n, time.Since(start)), nil
}

// throughput submits n calls as fast as JetStream takes them and waits for
// all their results.
func throughput(ctx context.Context, nc *nats.Conn, w *waiter, n int) (Throughput, error) {
	js, err := jetstream.New(nc, jetstream.WithPublishAsyncMaxPending(4096))
	if err != nil {
		return Throughput{}, err
	}
	ids := make([]string, n)
	for i := range ids {
		ids[i] = fmt.Sprintf("tp-%d-%d", time.Now().UnixNano(), i)
	}
	all := w.expect(ids)
	start := time.Now()
	for _, id := range ids {
		if _, err := js.PublishMsgAsync(callMsg(id)); err != nil {
			return Throughput{}, err
		}
	}
	select {
	case <-all:
	case <-ctx.Done():
		return Throughput{}, ctx.Err()
	case <-time.After(10 * time.Minute):
		return Throughput{}, errors.New("not every call got a result")
	}
	return rate(n, time.Since(start)), nil
}

// sluiceLatency makes n calls at rate per second, each timed from publish
// to result.
func sluiceLatency(ctx context.Context, nc *nats.Conn, w *waiter, n int, perSecond float64, prefix string) ([]time.Duration, error) {
	js, err := jetstream.New(nc)
	if err != nil {
		return nil, err
	}
	out := make([]time.Duration, n)
	var wg sync.WaitGroup
	errs := make(chan error, n)
	start := time.Now()
	for i := 0; i < n; i++ {
		time.Sleep(time.Until(start.Add(time.Duration(float64(i) / perSecond * float64(time.Second)))))
		id := fmt.Sprintf("%s-%d-%d", prefix, time.Now().UnixNano(), i)
		done := w.expect([]string{id})
		sent := time.Now()
		if _, err := js.PublishMsgAsync(callMsg(id)); err != nil {
			return nil, err
		}
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			select {
			case <-done:
				out[i] = time.Since(sent)
			case <-ctx.Done():
				errs <- ctx.Err()
			case <-time.After(time.Minute):
				errs <- errors.New("a call got no result within a minute")
			}
		}(i)
	}
	wg.Wait()
	close(errs)
	if err := <-errs; err != nil {
		return nil, err
	}
	return out, nil
}

// directLatency calls the fake provider over HTTP at the same rate, with the
// same body: what a caller without sluice would see.
func directLatency(ctx context.Context, fakeURL string, n int, perSecond float64) ([]time.Duration, error) {
	client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 256}}
	body := []byte(`{"model":"bench",` + callBody[1:])
	out := make([]time.Duration, n)
	var wg sync.WaitGroup
	errs := make(chan error, n)
	start := time.Now()
	for i := 0; i < n; i++ {
		time.Sleep(time.Until(start.Add(time.Duration(float64(i) / perSecond * float64(time.Second)))))
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			sent := time.Now()
			req, _ := http.NewRequestWithContext(ctx, http.MethodPost, fakeURL+"/v1/chat/completions", bytes.NewReader(body))
			req.Header.Set("Authorization", "Bearer sk-bench-direct")
			req.Header.Set("Content-Type", "application/json")
			resp, err := client.Do(req)
			if err != nil {
				errs <- err
				return
			}
			var v map[string]any
			err = json.NewDecoder(resp.Body).Decode(&v)
			resp.Body.Close()
			if err != nil || resp.StatusCode != http.StatusOK {
				errs <- fmt.Errorf("direct call: status %d: %v", resp.StatusCode, err)
				return
			}
			out[i] = time.Since(sent)
		}(i)
	}
	wg.Wait()
	close(errs)
	if err := <-errs; err != nil {
		return nil, err
	}
	return out, nil
}

func callMsg(id string) *nats.Msg {
	m := &nats.Msg{
		Subject: messages.CallSubject("bench", messages.TierStandard),
		Data:    []byte(`{"id":"` + id + `","model":"bench","body":` + callBody + `}`),
		Header:  nats.Header{},
	}
	m.Header.Set(messages.HeaderMsgID, id)
	return m
}

// waiter routes results, received on one wildcard subscription, to whoever
// expects them.
type waiter struct {
	sub     *nats.Subscription
	mu      sync.Mutex
	pending map[string]*group
}

type group struct {
	left int
	done chan struct{}
}

func newWaiter(nc *nats.Conn) (*waiter, error) {
	w := &waiter{pending: map[string]*group{}}
	sub, err := nc.Subscribe(messages.ResultSubject("bench", "*"), func(m *nats.Msg) {
		id := m.Subject[strings.LastIndexByte(m.Subject, '.')+1:]
		w.mu.Lock()
		g, ok := w.pending[id]
		if ok {
			delete(w.pending, id)
			g.left--
			if g.left == 0 {
				close(g.done)
			}
		}
		w.mu.Unlock()
	})
	if err != nil {
		return nil, err
	}
	if err := sub.SetPendingLimits(-1, -1); err != nil {
		return nil, err
	}
	w.sub = sub
	return w, nc.Flush()
}

// expect returns a channel closed once every id has a result.
func (w *waiter) expect(ids []string) <-chan struct{} {
	g := &group{left: len(ids), done: make(chan struct{})}
	w.mu.Lock()
	for _, id := range ids {
		w.pending[id] = g
	}
	w.mu.Unlock()
	return g.done
}

func (w *waiter) close() { _ = w.sub.Unsubscribe() }

func rate(n int, d time.Duration) Throughput {
	return Throughput{Count: n, Seconds: d.Seconds(), PerSecond: float64(n) / d.Seconds()}
}

// percentile p of ds, in milliseconds.
func percentile(ds []time.Duration, p float64) float64 {
	s := append([]time.Duration(nil), ds...)
	sort.Slice(s, func(i, j int) bool { return s[i] < s[j] })
	idx := int(float64(len(s)-1) * p / 100)
	return float64(s[idx].Microseconds()) / 1000
}

// kvOps reads the limiter's KV operation count from the registry.
func kvOps(reg *prometheus.Registry) float64 {
	return counter(reg, "sluice_limiter_kv_ops_total", "kind", "op")
}

// running are the services a benchmark started, in order.
type running []*devstack.Service

// stop stops them, the last started first: a gateway (started last) waits
// for its calls in flight while the services behind it still run.
func (r *running) stop() {
	for i := len(*r) - 1; i >= 0; i-- {
		_ = (*r)[i].Stop()
	}
}

// startSluice starts n dispatchers, named prefix-1 ... prefix-n, and an
// executor for each region of the configuration; on an error it stops
// what it started.
func startSluice(stack *devstack.Stack, prefix string, n int) (running, error) {
	return startSluiceTuned(stack, prefix, n, nil)
}

// startSluiceTuned is startSluice, its executors tuned by tune (if not
// nil).
func startSluiceTuned(stack *devstack.Stack, prefix string, n int, tune func(*executor.Config)) (running, error) {
	var r running
	for i := 1; i <= n; i++ {
		svc, err := stack.StartDispatcher(fmt.Sprintf("%s-%d", prefix, i), nil)
		if err != nil {
			r.stop()
			return nil, err
		}
		r = append(r, svc)
	}
	for _, region := range stack.Shared.Load().Regions() {
		svc, err := stack.StartExecutor(region, tune)
		if err != nil {
			r.stop()
			return nil, err
		}
		r = append(r, svc)
	}
	return r, nil
}
