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
