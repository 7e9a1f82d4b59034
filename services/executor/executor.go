// Package executor owns the provider side of a region: it consumes the work
// that dispatchers admitted for its region, calls the provider with the
// secret only it holds, and ends each attempt in one of three ways: a
// terminal result, a retry handed back to the dispatchers on
// sluice.retry.<team>.<tier> (which they delay by JetStream's delayed
// redelivery, then admit again), or (when it cannot even read the work) a
// dead letter.
//
// Executors of one region share a durable consumer, so any number of them
// can run; a crashed executor's work is redelivered to another after the
// consumer's AckWait.
package executor

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net/http"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
	"go.opentelemetry.io/otel/trace"

	"github.com/sluicehq/sluice/messages"
	"github.com/sluicehq/sluice/services/attempts"
	"github.com/sluicehq/sluice/services/config"
	"github.com/sluicehq/sluice/services/health"
	"github.com/sluicehq/sluice/services/providers"
	"github.com/sluicehq/sluice/services/results"
	"github.com/sluicehq/sluice/services/streams"
	"github.com/sluicehq/sluice/services/telemetry"
	"github.com/sluicehq/sluice/services/tracing"
	"github.com/sluicehq/sluice/services/usage"
)

// Config configures an executor.
type Config struct {
	// Region whose work this executor takes. Required.
	Region string
	// Shared is the shared configuration. Required.
	Shared *config.Live
	// Secrets resolves key names to provider secrets. Required.
	Secrets Secrets
	// JSDomain is the JetStream domain of the hub, when the executor is
	// connected to its region's leaf node; empty otherwise.
	JSDomain string
	// Concurrency bounds the provider requests this executor has open.
	// Default 64.
	Concurrency int
	// AckWait is how long the work of a crashed executor stays invisible
	// before another executor gets it. Long requests are kept alive with
	// progress acknowledgements. Default 30s.
	AckWait time.Duration
	// ShutdownGrace is how long Run lets in-flight requests finish after
	// its context ends; unfinished work is handed back for another
	// executor. Default 15s.
	ShutdownGrace time.Duration
	// HTTPClient calls the providers. Default providers.NewHTTPClient().
	HTTPClient *http.Client
	Logger     *slog.Logger
	// Registerer receives the metrics. Default: none.
	Registerer prometheus.Registerer
	// Clock and Rand are injectable for tests. Defaults time.Now and
	// math/rand/v2.Float64.
	Clock func() time.Time
	Rand  func() float64
	// TracerProvider records the attempt spans (see trace.go). Default:
	// none (a no-op); trace context is passed on to the provider anyway.
	TracerProvider trace.TracerProvider
}

func (c *Config) defaults() error {
	if !messages.ValidToken(c.Region) {
		return fmt.Errorf("executor: region %q must be 1 to 64 letters, digits, '-' or '_'", c.Region)
	}
	if c.Shared == nil || c.Shared.Load() == nil {
		return errors.New("executor: shared configuration is required")
	}
	if c.Secrets == nil {
		return errors.New("executor: a secrets source is required")
	}
	if c.Concurrency <= 0 {
		c.Concurrency = 64
	}
	if c.AckWait <= 0 {
		c.AckWait = 30 * time.Second
	}
	if c.ShutdownGrace <= 0 {
		c.ShutdownGrace = 15 * time.Second
	}
	if c.HTTPClient == nil {
		c.HTTPClient = providers.NewHTTPClient()
	}
	c.HTTPClient = withTraceContext(c.HTTPClient)
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	if c.Clock == nil {
		c.Clock = time.Now
	}
	if c.Rand == nil {
		c.Rand = rand.Float64
	}
	return nil
}

// Executor runs the work of one region.
type Executor struct {
	cfg     Config
	nc      *nats.Conn
	js      jetstream.JetStream
	log     *slog.Logger
	metrics *telemetry.Metrics
	results *results.Publisher
	stream  jetstream.Stream // SLUICE_RESULTS, for redelivery checks
	health  *health.Store
	usage   *usage.Recorder
	cancels *cancels
	claims  *attempts.Store
	tracer  trace.Tracer
	// sends counts what was sent to each deployment lately, and refused,
	// for the share a refusal lowers its limits by.
	sends sendCounts
}

// New returns an executor that uses nc. Run starts it.
func New(nc *nats.Conn, cfg Config) (*Executor, error) {
	if err := cfg.defaults(); err != nil {
		return nil, err
	}
	js, err := streams.JetStream(nc, cfg.JSDomain)
	if err != nil {
		return nil, fmt.Errorf("executor: %w", err)
	}
	m := telemetry.New(cfg.Registerer)
	return &Executor{
		cfg:     cfg,
		nc:      nc,
		js:      js,
		log:     cfg.Logger.With("service", "executor", "region", cfg.Region),
		metrics: m,
		results: results.NewPublisher(js, m, cfg.Shared, cfg.Clock),
		cancels: newCancels(),
		tracer:  tracing.Tracer(cfg.TracerProvider),
	}, nil
}

// Run consumes the region's work until ctx ends, then stops taking work,
// lets in-flight requests finish for up to ShutdownGrace, and returns.
func (e *Executor) Run(ctx context.Context) error {
	// Executors use sluice's streams and never create or change them
	// (dispatchers and `sluice config apply` do), so that an executor's
	// NATS user, at the edge, needs no permission to.
	res, err := streams.Await(ctx, 30*time.Second, func(reason error) {
		e.log.Warn("waiting for sluice's streams: a dispatcher or `sluice config apply` creates them", "reason", reason)
	}, func(ctx context.Context) (*streams.Resources, error) { return streams.Open(ctx, e.js) })
	if ctx.Err() != nil {
		return nil
	}
	if err != nil {
		return err
	}
	e.stream = res.Results
	e.claims = attempts.New(e.js, res.Attempts)
	e.usage = usage.NewRecorder(res.Usage, usage.RecorderConfig{Shared: e.cfg.Shared, Metrics: e.metrics, Log: e.log, Clock: e.cfg.Clock})
	e.results.RecordTo(e.usage)
	usageCtx, stopUsage := context.WithCancel(context.Background())
	usageDone := make(chan struct{})
	go func() { defer close(usageDone); e.usage.Run(usageCtx) }()
	// Stopping the recorder flushes it, after the last result.
	defer func() { stopUsage(); <-usageDone }()
	e.health = health.NewStore(res.Health)
	if err := e.health.Start(ctx); err != nil {
		return err
	}
	defer e.health.Stop()
	cons, err := streams.EnsureConsumer(ctx, res.Exec, streams.ExecConsumerConfig(e.cfg.Shared.Load().Streams, e.cfg.Region, e.cfg.AckWait))
	if err != nil {
		return err
	}
	cancelSub, err := e.nc.Subscribe(messages.CancelSubjects, e.cancels.onCancel)
	if err != nil {
		return fmt.Errorf("executor: subscribe cancellations: %w", err)
	}
	defer func() { _ = cancelSub.Unsubscribe() }()

	// Work runs on its own context, so that shutdown lets it finish
	// instead of cutting provider requests off mid-flight.
	workCtx, cancelWork := context.WithCancel(context.Background())
	defer cancelWork()
	var wg sync.WaitGroup
	// Stop does not wait for a callback under way: stopping, under mu,
	// keeps a late one from adding to wg once shutdown waits on it. Such a
	// message goes back to JetStream for another executor.
	var mu sync.Mutex
	stopping := false
	slots := make(chan struct{}, e.cfg.Concurrency)
	cc, err := cons.Consume(func(msg jetstream.Msg) {
		mu.Lock()
		if stopping {
			mu.Unlock()
			_ = msg.Nak()
			return
		}
		wg.Add(1)
		mu.Unlock()
		slots <- struct{}{}
		go func() {
			defer func() { <-slots; wg.Done() }()
			e.handle(workCtx, msg)
		}()
	},
		jetstream.PullMaxMessages(e.cfg.Concurrency),
		streams.PullExpiry,
		jetstream.ConsumeErrHandler(func(_ jetstream.ConsumeContext, err error) {
			if !errors.Is(err, jetstream.ErrNoHeartbeat) {
				e.log.Warn("consume", "err", err)
			}
		}))
	if err != nil {
		return fmt.Errorf("executor: consume: %w", err)
	}
	e.log.Info("executor started", "concurrency", e.cfg.Concurrency)
	<-ctx.Done()

	cc.Stop()
	mu.Lock()
	stopping = true
	mu.Unlock()
	done := make(chan struct{})
	go func() { wg.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(e.cfg.ShutdownGrace):
		e.log.Warn("shutdown grace over; handing unfinished work back")
		cancelWork()
		<-done
	}
	// Let the providers see this executor go, rather than keep its idle
	// keep-alive connections open until they time out.
	e.cfg.HTTPClient.CloseIdleConnections()
	e.log.Info("executor stopped")
	return nil
}

// handle runs one attempt of one call.
func (e *Executor) handle(ctx context.Context, msg jetstream.Msg) {
	received := e.cfg.Clock()
	var w messages.Work
	if err := decodeWork(msg.Data(), &w); err != nil {
		e.log.Error("undecodable work; dead-lettering", "subject", msg.Subject(), "err", err)
		if err := e.results.DeadLetter(ctx, "undecodable_work", msg.Subject(), msg.Data(), err.Error()); err != nil {
			e.log.Error("dead-letter", "err", err)
			_ = msg.Nak()
			return
		}
		_ = msg.Term()
		return
	}
	log := e.log.With("call", w.Call.ID, "attempt", w.Attempt, "deployment", w.Deployment)
	// The admission's trace context, which the attempt continues.
	ctx = tracing.Extract(ctx, msg.Headers())

	// A redelivered attempt may already have been answered, or sent, by
	// an executor that died before acknowledging it.
	lost, answered, ok := e.redelivered(ctx, msg, &w)
	switch {
	case !ok:
		_ = msg.NakWithDelay(time.Second)
		return
	case answered:
		_ = msg.Ack()
		return
	}
	var a outcome
	if lost != nil {
		a = *lost
	} else {
		a, ctx = e.tracedAttempt(ctx, msg, &w, log)
	}
	if meta, err := msg.Metadata(); err == nil && meta.NumDelivered == 1 {
		a.receivedAt = received
	}
	switch {
	case a.unclaimed:
		// Not sent, and not known to be: delivered again, it is late and
		// goes back to admission.
		_ = msg.NakWithDelay(time.Second)
		return
	case a.duplicate:
		// Another delivery of this attempt claimed it: the call is its.
		e.report(&w, a)
		_ = msg.Ack()
		return
	case ctx.Err() != nil && a.aborted:
		// Shutdown cut the request off: hand the work to another executor.
		_ = msg.Nak()
		return
	}
	if err := e.tracedFinish(ctx, msg, &w, a); err != nil {
		log.Error("publish outcome; work will be redelivered", "err", err)
		_ = msg.Nak()
		return
	}
	if err := msg.Ack(); err != nil {
		log.Warn("ack", "err", err)
	}
}

func decodeWork(data []byte, w *messages.Work) error {
	if err := json.Unmarshal(data, w); err != nil {
		return err
	}
	if !messages.ValidToken(w.Call.ID) || !messages.ValidToken(w.Team) || !w.Tier.Valid() || w.Deployment == "" {
		return errors.New("work lacks a valid call id, team, tier or deployment")
	}
	return nil
}
