package bench

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"runtime"
	"strings"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/sluicehq/sluice/messages"
	"github.com/sluicehq/sluice/services/devstack"
	"github.com/sluicehq/sluice/services/fakeprovider"
	"github.com/sluicehq/sluice/services/streams"
)

// DrainOptions configure the drain run: a backlog of batch calls, all
// published at once, drained by the dispatchers against a fast provider
// with limits far above what the machine can push, while critical calls
// keep arriving at a modest rate.
type DrainOptions struct {
	// Backlog is the number of batch calls published at once. Default
	// 100000.
	Backlog int
	// BaselineCalls is the number of calls of the unsaturated end-to-end
	// measurement. Default 10000.
	BaselineCalls int
	// Window bounds the baseline's calls in flight, so that no backlog
	// builds up while it is measured. Default 256.
	Window int
	// CriticalRate is the rate, in calls per second, of the critical calls
	// published while the backlog drains. Default 20.
	CriticalRate float64
	// Duration bounds the drain, from the end of publishing: a backlog
	// not drained by then is left, and the rate is of what drained.
	// Default 60s, so that the default run takes about two minutes
	// however slowly the backlog drains.
	Duration time.Duration
	// Dispatchers is the number of dispatchers. Default 2.
	Dispatchers int
	Logger      *slog.Logger
}

func (o *DrainOptions) defaults() {
	if o.Backlog <= 0 {
		o.Backlog = 100_000
	}
	if o.BaselineCalls <= 0 {
		o.BaselineCalls = 10_000
	}
	if o.Window <= 0 {
		o.Window = 256
	}
	if o.CriticalRate <= 0 {
		o.CriticalRate = 20
	}
	if o.Duration <= 0 {
		o.Duration = 60 * time.Second
	}
	if o.Dispatchers <= 0 {
		o.Dispatchers = 2
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
}

// The targets of issue 11 the drain run checks.
const (
	// DrainTargetRatio is the least drain rate, as a share of the
	// unsaturated end-to-end rate.
	DrainTargetRatio = 0.5
	// CriticalTargetP99MS is the most critical calls may wait at p99
	// while the backlog drains.
	CriticalTargetP99MS = 50.0
)

// DrainReport is what the drain run measured.
type DrainReport struct {
	Machine     Machine `json:"machine"`
	Dispatchers int     `json:"dispatchers"`
	// Baseline is the unsaturated end-to-end rate: calls published with
	// at most Window in flight, from publish to result received.
	Baseline DrainBaseline `json:"baseline"`
	Drain    DrainRate     `json:"drain"`
	// Ratio is Drain.PerSecond over Baseline.PerSecond.
	Ratio    float64       `json:"ratio"`
	Critical CriticalWaits `json:"critical"`
	Memory   DrainMemory   `json:"memory"`
	// AfterPublish is where the backlog was when it was all published,
	// AtEnd when the drain was over.
	AfterPublish Backlog `json:"after_publish"`
	AtEnd        Backlog `json:"at_end"`
	// ProviderRefused counts the fake provider's 429s: there should be
	// none, its limits are far above the load, so that the dispatchers
	// (and the machine), not the provider, bound the drain.
	ProviderRefused int64 `json:"provider_429s"`
	// DrainTargetMet: Ratio >= DrainTargetRatio; CriticalTargetMet:
	// Critical.QueuedP99MS <= CriticalTargetP99MS, every critical call
	// answered.
	DrainTargetMet    bool `json:"drain_target_met"`
	CriticalTargetMet bool `json:"critical_target_met"`
}

// DrainBaseline is the unsaturated end-to-end measurement.
type DrainBaseline struct {
	Calls     int     `json:"calls"`
	Window    int     `json:"window"`
	Seconds   float64 `json:"seconds"`
	PerSecond float64 `json:"per_second"`
	Failed    int64   `json:"failed"`
	// CPUMicrosPerCall is the CPU the whole process (NATS, sluice, fake
	// provider and the bench's own client) used per call.
	CPUMicrosPerCall float64 `json:"cpu_us_per_call"`
}

// DrainRate is the backlog's measurement.
type DrainRate struct {
	Backlog int `json:"backlog"`
	// PublishSeconds is how long publishing the backlog took, to the
	// last acknowledgement from JetStream.
	PublishSeconds float64 `json:"publish_seconds"`
	// WaitingAfterPublish is how many backlog calls had no result yet
	// when the last was published: the backlog the drain starts from.
	WaitingAfterPublish int `json:"waiting_after_publish"`
	// Drained counts the backlog's results after publishing; Left the
	// calls still without one when the drain's time was up (0: the whole
	// backlog drained).
	Drained int `json:"drained"`
	Left    int `json:"left"`
	// Seconds is from the end of publishing to the last result (to the
	// end of the drain's time, if calls were left), and PerSecond the
	// results received in it per second: the drain rate.
	Seconds   float64 `json:"seconds"`
	PerSecond float64 `json:"per_second"`
	// OverallPerSecond is the backlog's results over the time from the
	// first publish to the last of them (or the end), publishing
	// included.
	OverallPerSecond float64 `json:"overall_per_second"`
	Failed           int64   `json:"failed"`
	CPUMicrosPerCall float64 `json:"cpu_us_per_call"`
}

// CriticalWaits are the waits of the critical calls published while the
// backlog drained, in milliseconds: queued is the admission wait sluice
// reports (Timings.QueuedMS), result the time from publish to result.
// Their percentiles are of the calls answered.
type CriticalWaits struct {
	Rate   float64 `json:"rate"`
	Calls  int     `json:"calls"`
	Failed int     `json:"failed"`
	// Unanswered counts the calls still without a result a few seconds
	// after the drain was over: they waited longer than any answered.
	Unanswered  int     `json:"unanswered"`
	QueuedP50MS float64 `json:"queued_p50_ms"`
	QueuedP99MS float64 `json:"queued_p99_ms"`
	QueuedMaxMS float64 `json:"queued_max_ms"`
	ResultP50MS float64 `json:"resultsp50_ms"`
	ResultP99MS float64 `json:"resultsp99_ms"`
	ResultMaxMS float64 `json:"resultsmax_ms"`
}

// DrainMemory is the heap of the whole process (NATS server, sluice, the
// bench's client alike: they share one process), in use after a
// collection, before the backlog and when it was all published.
type DrainMemory struct {
	HeapBeforeBytes uint64 `json:"heap_before_bytes"`
	HeapPeakBytes   uint64 `json:"heap_peak_bytes"`
	Waiting         int    `json:"waiting"`
	// BytesPerWaiting is the growth of the heap over the calls waiting:
	// an upper bound on what a waiting call costs the dispatchers, as it
	// includes what the embedded NATS server holds of it.
	BytesPerWaiting float64 `json:"bytes_per_waiting_call"`
	// StreamBytesPerWaiting is what the calls stream stores per message
	// at the same moment, for scale.
	StreamBytesPerWaiting float64 `json:"stream_bytes_per_waiting_call"`
}

// Backlog is where the calls without a result were at one moment.
type Backlog struct {
	// NotDelivered counts the calls the calls stream holds that the
	// dispatchers' consumer has not delivered yet; HeldByDispatchers
	// those it delivered and the dispatchers have not acknowledged yet
	// (waiting in their queues, or being admitted).
	NotDelivered      uint64 `json:"not_delivered"`
	HeldByDispatchers int    `json:"held_by_dispatchers"`
	// AtExecutors counts the admitted work waiting for, or held by, the
	// executors, over every region.
	AtExecutors uint64 `json:"at_executors"`
}

// drainYAML is benchYAML with room for the whole backlog: the team's
// queue limit and the calls that may wait across the dispatchers.
func drainYAML(backlog int) func(string) string {
	room := backlog + 50_000
	return func(fakeURL string) string {
		y := strings.Replace(benchYAML(fakeURL), "  bench: {}\n", fmt.Sprintf("  bench: {max_queued: %d}\n", room), 1)
		return y + fmt.Sprintf("streams:\n  max_waiting: %d\n", room)
	}
}

// RunDrain measures, in one run on the same stack: the unsaturated
// end-to-end rate; then the rate at which a backlog of o.Backlog batch
// calls, published at once, drains; and the waits of critical calls
// published at a modest rate meanwhile.
func RunDrain(ctx context.Context, o DrainOptions) (*DrainReport, error) {
	o.defaults()
	reg := prometheus.NewRegistry()
	stack, err := devstack.Start(devstack.Options{
		NATSPort: -1, ConfigYAML: drainYAML(o.Backlog), Registerer: reg, Logger: o.Logger,
		Fake: fakeprovider.Config{AcceptAnyKey: true},
	})
	if err != nil {
		return nil, err
	}
	defer stack.Close()
	services, err := startSluice(stack, "drain", o.Dispatchers)
	if err != nil {
		return nil, err
	}
	defer services.stop()

	nc, err := stack.Connect("sluice bench drain")
	if err != nil {
		return nil, err
	}
	defer nc.Close()
	col := newCollector(o.Backlog)
	sub, err := nc.Subscribe(messages.ResultSubject("bench", "*"), col.receive)
	if err != nil {
		return nil, err
	}
	defer func() { _ = sub.Unsubscribe() }()
	if err := sub.SetPendingLimits(-1, -1); err != nil {
		return nil, err
	}
	if err := nc.Flush(); err != nil {
		return nil, err
	}
	js, err := jetstream.New(nc, jetstream.WithPublishAsyncMaxPending(4096))
	if err != nil {
		return nil, err
	}

	rep := &DrainReport{Machine: machine(), Dispatchers: o.Dispatchers}
	// Warm up: connections, consumers, the limiter's first keys.
	if _, err := windowed(ctx, js, col, "dw", 500, o.Window); err != nil {
		return nil, fmt.Errorf("warm-up: %w", err)
	}
	settle()
	o.Logger.Info("measuring the unsaturated end-to-end rate", "calls", o.BaselineCalls, "window", o.Window)
	if rep.Baseline, err = windowed(ctx, js, col, "db", o.BaselineCalls, o.Window); err != nil {
		return nil, fmt.Errorf("baseline: %w", err)
	}
	settle()
	o.Logger.Info("draining a backlog", "calls", o.Backlog, "critical_rate", o.CriticalRate)
	if err := drain(ctx, stack, js, col, o, rep); err != nil {
		return nil, err
	}
	rep.ProviderRefused = stack.Fake.Stats().Total.Refused()
	rep.Ratio = ratio(rep.Drain.PerSecond, rep.Baseline.PerSecond)
	rep.DrainTargetMet = rep.Ratio >= DrainTargetRatio
	rep.CriticalTargetMet = rep.Critical.Calls > 0 && rep.Critical.Unanswered == 0 && rep.Critical.QueuedP99MS <= CriticalTargetP99MS
	return rep, nil
}

// stallWait lets a publish wait for JetStream to catch up with the
// publishes in flight, rather than fail after nats.go's 200ms: on a busy
// machine the backlog is published faster than it is stored.
var stallWait = jetstream.WithStallWait(time.Minute)

// windowed makes n calls, keeping at most window in flight, and times them
// from the first publish to the last result.
func windowed(ctx context.Context, js jetstream.JetStream, col *collector, prefix string, n, window int) (DrainBaseline, error) {
	w := &inFlight{slots: make(chan struct{}, window), left: int64(n), done: make(chan struct{})}
	col.window.Store(w)
	defer col.window.Store(nil)
	cpu := processCPU()
	start := time.Now()
	for i := 0; i < n; i++ {
		select {
		case w.slots <- struct{}{}:
		case <-ctx.Done():
			return DrainBaseline{}, ctx.Err()
		case <-time.After(time.Minute):
			return DrainBaseline{}, errors.New("no result for a minute")
		}
		if _, err := js.PublishMsgAsync(drainMsg(prefix, i, messages.TierBatch), stallWait); err != nil {
			return DrainBaseline{}, err
		}
	}
	select {
	case <-w.done:
	case <-ctx.Done():
		return DrainBaseline{}, ctx.Err()
	case <-time.After(time.Minute):
		return DrainBaseline{}, errors.New("not every call got a result")
	}
	took := time.Since(start)
	return DrainBaseline{
		Calls: n, Window: window, Seconds: took.Seconds(), PerSecond: float64(n) / took.Seconds(),
		Failed: w.failed.Load(), CPUMicrosPerCall: float64((processCPU() - cpu).Microseconds()) / float64(n),
	}, nil
}

// drain publishes the backlog as fast as JetStream takes it, and critical
// calls at o.CriticalRate from the first publish to the last result.
func drain(ctx context.Context, stack *devstack.Stack, js jetstream.JetStream, col *collector, o DrainOptions, rep *DrainReport) error {
	// Critical calls on a connection of their own, so that they do not
	// queue in the client behind the backlog's publishes.
	cnc, err := stack.Connect("sluice bench drain critical")
	if err != nil {
		return err
	}
	defer cnc.Close()
	cjs, err := jetstream.New(cnc)
	if err != nil {
		return err
	}

	var before runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	cpu := processCPU()
	start := time.Now()
	stopCritical := make(chan struct{})
	criticalDone := make(chan error, 1)
	go func() { criticalDone <- col.critical.publish(ctx, cjs, o.CriticalRate, stopCritical) }()
	stop := func() error {
		close(stopCritical)
		return <-criticalDone
	}

	for i := 0; i < o.Backlog; i++ {
		if _, err := js.PublishMsgAsync(drainMsg("dq", i, messages.TierBatch), stallWait); err != nil {
			_ = stop()
			return err
		}
	}
	select {
	case <-js.PublishAsyncComplete():
	case <-ctx.Done():
		_ = stop()
		return ctx.Err()
	}
	published := time.Now()
	doneAtPublish := col.backlog.got.Load()

	// The peak: every call published, the fewest yet drained.
	var peak runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&peak)
	waiting := o.Backlog - int(col.backlog.got.Load())
	var streamBytes uint64
	rep.AfterPublish, streamBytes = where(ctx, js, stack)
	rep.Memory = DrainMemory{HeapBeforeBytes: before.HeapInuse, HeapPeakBytes: peak.HeapInuse, Waiting: waiting}
	if waiting > 0 {
		rep.Memory.BytesPerWaiting = (float64(peak.HeapInuse) - float64(before.HeapInuse)) / float64(waiting)
		rep.Memory.StreamBytesPerWaiting = float64(streamBytes) / float64(max(waiting, 1))
	}

	var last time.Time
	select {
	case <-col.backlog.done:
		last = col.backlog.lastAt()
	case <-ctx.Done():
		_ = stop()
		return ctx.Err()
	case last = <-time.After(time.Until(published.Add(o.Duration))):
	}
	got := int(col.backlog.got.Load())
	cpuUsed := processCPU() - cpu
	rep.AtEnd, _ = where(ctx, js, stack)
	if err := stop(); err != nil {
		return fmt.Errorf("critical calls: %w", err)
	}
	drained := got - int(doneAtPublish)
	rep.Drain = DrainRate{
		Backlog: o.Backlog, PublishSeconds: published.Sub(start).Seconds(), WaitingAfterPublish: o.Backlog - int(doneAtPublish),
		Drained: drained, Left: o.Backlog - got, Seconds: last.Sub(published).Seconds(),
		OverallPerSecond: float64(got) / last.Sub(start).Seconds(), Failed: col.backlog.failed.Load(),
	}
	if got > 0 {
		rep.Drain.CPUMicrosPerCall = float64(cpuUsed.Microseconds()) / float64(got)
	}
	if s := last.Sub(published).Seconds(); s > 0 {
		rep.Drain.PerSecond = float64(drained) / s
	}
	rep.Critical = col.critical.waits(o.CriticalRate)
	return nil
}

// where finds where the calls without a result are, and what the calls
// stream stores.
func where(ctx context.Context, js jetstream.JetStream, stack *devstack.Stack) (b Backlog, streamBytes uint64) {
	if name, err := js.StreamNameBySubject(ctx, messages.CallSubject("bench", messages.TierBatch)); err == nil {
		if s, err := js.Stream(ctx, name); err == nil {
			streamBytes = s.CachedInfo().State.Bytes
			if c, err := s.Consumer(ctx, streams.DispatcherConsumer); err == nil {
				b.NotDelivered, b.HeldByDispatchers = c.CachedInfo().NumPending, c.CachedInfo().NumAckPending
			}
		}
	}
	for _, region := range stack.Shared.Load().Regions() {
		name, err := js.StreamNameBySubject(ctx, messages.ExecSubject(region))
		if err != nil {
			continue
		}
		if c, err := js.Consumer(ctx, name, streams.ExecConsumer(region)); err == nil {
			b.AtExecutors += c.CachedInfo().NumPending + uint64(c.CachedInfo().NumAckPending)
		}
	}
	return b, streamBytes
}
