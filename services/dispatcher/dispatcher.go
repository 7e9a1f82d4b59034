// Package dispatcher owns admission: it consumes calls, validates them
// against the configuration, holds those that cannot go yet, admits each
// on the send schedule of one of the deployments serving its model and
// against the shares people allocated (caps, guarantees, minimum shares,
// the critical reserve, the batch gate), and publishes the call to that
// deployment's region with the time it may be sent. The deployment is
// drawn at random in proportion to weight times headroom (see route.go).
//
// One goroutine, the scheduler, owns the waiting calls and decides (see
// inbox.go, pass.go and decisions.go); the others receive calls, attempt
// reports, cancellations and peers' announcements and post them to it.
//
// Any number of dispatchers share two durable consumers (every call, and
// the critical lane: see streams.CallsConfig), the deployments' schedules (KV SLUICE_SCHEDULE) and the shares' buckets (KV
// SLUICE_LIMITER). A waiting call stays unacknowledged in the dispatcher
// that holds it, so if that dispatcher dies JetStream hands the call to
// another; a call is acknowledged only once its work is stored in
// SLUICE_EXEC or its terminal result in SLUICE_RESULTS.
//
// To keep the shared state off the hot-key cliff (many writers doing
// compare-and-swap on one key), each dispatcher leases small blocks of
// capacity and stretches of schedule, and spends them locally; see the
// limiter package.
package dispatcher

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/google/uuid"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
	"go.opentelemetry.io/otel/trace"

	"github.com/sluicehq/sluice/messages"
	"github.com/sluicehq/sluice/services/attempts"
	"github.com/sluicehq/sluice/services/budget"
	"github.com/sluicehq/sluice/services/concurrency"
	"github.com/sluicehq/sluice/services/config"
	"github.com/sluicehq/sluice/services/health"
	"github.com/sluicehq/sluice/services/limiter"
	"github.com/sluicehq/sluice/services/results"
	"github.com/sluicehq/sluice/services/streams"
	"github.com/sluicehq/sluice/services/telemetry"
	"github.com/sluicehq/sluice/services/tracing"
	"github.com/sluicehq/sluice/services/usage"
)

// Config configures a dispatcher.
type Config struct {
	// ID names this dispatcher in logs, metrics and the subject executors
	// report to (sluice.done.<id>): 1 to 64 letters, digits, '-' or '_'.
	// Default: a random id. Two dispatchers must not share one.
	ID string
	// Shared is the shared configuration. Required.
	Shared *config.Live
	// Limiter holds the shared buckets of teams' and tiers' shares.
	// Default: the KV-backed limiter on SLUICE_LIMITER, which is what lets
	// several dispatchers share them; tests may pass an in-memory one.
	Limiter limiter.Limiter
	// Scheduler holds the deployments' send schedules. Default: the
	// KV-backed scheduler on SLUICE_SCHEDULE; tests may pass an
	// in-memory one.
	Scheduler limiter.Scheduler
	// JSDomain is the JetStream domain of the hub, when the dispatcher is
	// connected to a leaf node with a JetStream of its own; empty
	// otherwise.
	JSDomain string
	// AckWait is how long the calls of a crashed dispatcher stay invisible
	// before another dispatcher gets them. Default 30s.
	AckWait time.Duration
	// SettleInterval is how often token settlements are written to the
	// shared state, batched per deployment. Default 50ms.
	SettleInterval time.Duration
	// SweepInterval is how often the sweeping dispatcher looks for work
	// that no executor took (see stranded.go). Default 10s.
	SweepInterval time.Duration
	// StrandedGrace is how long past its call's deadline work may wait for
	// an executor before the sweep answers it. It must outlast an attempt
	// that is finishing. Default 30s.
	StrandedGrace time.Duration
	Logger        *slog.Logger
	// Registerer receives the metrics. Default: none.
	Registerer prometheus.Registerer
	// Clock is injectable for tests. Default time.Now.
	Clock func() time.Time
	// TracerProvider records the queue, admission and result spans (see
	// trace.go). Default: none (a no-op); trace context is passed on to
	// the work anyway.
	TracerProvider trace.TracerProvider
}

func (c *Config) defaults() error {
	if c.Shared == nil || c.Shared.Load() == nil {
		return errors.New("dispatcher: shared configuration is required")
	}
	if c.ID == "" {
		c.ID = uuid.NewString()[:8]
	}
	if !messages.ValidToken(c.ID) {
		return fmt.Errorf("dispatcher: id %q must be 1 to 64 letters, digits, '-' or '_'", c.ID)
	}
	if c.AckWait <= 0 {
		c.AckWait = streams.DefaultAckWait
	}
	if c.SettleInterval <= 0 {
		c.SettleInterval = 50 * time.Millisecond
	}
	if c.SweepInterval <= 0 {
		c.SweepInterval = 10 * time.Second
	}
	if c.StrandedGrace <= 0 {
		c.StrandedGrace = 30 * time.Second
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	if c.Clock == nil {
		c.Clock = time.Now
	}
	return nil
}

// Dispatcher admits calls. Create it with New and start it with Run.
type Dispatcher struct {
	cfg     Config
	nc      *nats.Conn
	js      jetstream.JetStream
	log     *slog.Logger
	metrics *telemetry.Metrics
	results *results.Publisher
	stream  jetstream.Stream // SLUICE_RESULTS
	tracer  trace.Tracer
	// criticalLane: SLUICE_CALLS has the critical lane (see
	// streams.CallsConfig), so the critical calls DispatcherConsumer
	// delivers are copies, acknowledged unread. Set before intake runs.
	criticalLane bool

	// buckets are the shared buckets of teams' and tiers' shares (caps,
	// guarantees, minimum shares, the batch gate), leased through leases.
	buckets limiter.Limiter
	leases  *limiter.Leases
	settle  *settlements
	// schedules are the deployments' send schedules, placed on through
	// pacer; scheduled accumulates their settlements.
	schedules limiter.Scheduler
	pacer     *limiter.Pacer
	scheduled *settlements
	health    *health.Store
	slots     *concurrency.Slots
	// ledger counts teams' budgets (see teambudget.go); nil offline.
	ledger *budget.Ledger
	usage  *usage.Recorder
	// countedOps and countedConflicts are the KV limiter's counts already
	// added to metrics; only settleLoop touches them.
	countedOps, countedConflicts uint64

	// The scheduler goroutine alone owns queue, breakers, budgets,
	// admittedTotal, deadlineGaugeAt, reported and demand; the other
	// goroutines post to inbox (see inbox.go).
	inbox inbox
	// decide carries out what the scheduler decides (see decisions.go).
	decide decider
	queue  *queue
	// breakers by deployment id and regionKey; budgets by pool.
	breakers map[string]*breaker
	budgets  map[string]*retryBudget
	// admittedTotal counts admissions; passes counts passes, to take the
	// pools in turn.
	admittedTotal uint64
	passes        uint64
	// deadlineGaugeAt is when state last set the deadline gauge.
	deadlineGaugeAt time.Time
	// reported are the deployments whose gauges were last set.
	reported map[string]bool
	// demand is what this dispatcher tells its peers.
	demand   demand
	peers    *peers
	regions  *regionState
	canceled canceledCalls

	rmu sync.Mutex // guards reservations
	// reservations of admitted attempts, by attempt key, until they report.
	reservations map[string]*reservation
	wake         chan struct{}
	sweepNow     chan struct{}
	leads        *leads
	claims       *attempts.Store
	// inflight counts publishes to SLUICE_EXEC not yet acknowledged.
	inflight sync.WaitGroup
	// rng orders deployments and jitters retries in route.go: the global
	// source, or a seeded one in a simulation. Only the scheduler uses it.
	rng randomness
}

// publishAckTimeout bounds the wait for JetStream to acknowledge a work
// publish: long enough to ride out a stream leader election.
const publishAckTimeout = 10 * time.Second

// New returns a dispatcher that uses nc.
func New(nc *nats.Conn, cfg Config) (*Dispatcher, error) {
	if err := cfg.defaults(); err != nil {
		return nil, err
	}
	js, err := streams.JetStream(nc, cfg.JSDomain,
		jetstream.WithPublishAsyncMaxPending(4096),
		// Without a timeout, a work publish whose connection dies before
		// its ack never resolves, and Run, waiting for it, never returns.
		// Timed out, the call is redelivered and its work deduplicated.
		jetstream.WithPublishAsyncTimeout(publishAckTimeout))
	if err != nil {
		return nil, fmt.Errorf("dispatcher: %w", err)
	}
	d := newDispatcher(cfg)
	d.nc, d.js = nc, js
	d.results = results.NewPublisher(js, d.metrics, cfg.Shared, cfg.Clock)
	d.decide = carrier{d}
	return d, nil
}

// newDispatcher returns a dispatcher with its parts that need no network:
// what the scheduler owns, and what it learns from the other goroutines.
// New adds the connection; Run the shared state, from JetStream.
func newDispatcher(cfg Config) *Dispatcher {
	return &Dispatcher{
		cfg:      cfg,
		log:      cfg.Logger.With("service", "dispatcher", "dispatcher", cfg.ID),
		metrics:  telemetry.New(cfg.Registerer),
		tracer:   tracing.Tracer(cfg.TracerProvider),
		queue:    newQueue(),
		breakers: map[string]*breaker{},
		budgets:  map[string]*retryBudget{},

		reservations: map[string]*reservation{},
		peers:        newPeers(),
		regions:      newRegionState(),
		demand:       newDemand(),
		canceled:     canceledCalls{gone: map[string]time.Time{}},
		wake:         make(chan struct{}, 1),
		sweepNow:     make(chan struct{}, 1),
		leads:        newLeads(),
		settle:       newSettlements(),
		scheduled:    newSettlements(),
		rng:          globalRand{},
	}
}

// shareCapacity makes the dispatcher admit against buckets and schedules,
// through this process's leases and pacer.
func (d *Dispatcher) shareCapacity(buckets limiter.Limiter, schedules limiter.Scheduler, live *config.Config) {
	d.buckets, d.schedules = buckets, schedules
	d.leases = limiter.NewLeases(buckets, limiter.LeaseOptions{Clock: d.cfg.Clock, TTL: live.Admission.LeaseTTL})
	d.pacer = limiter.NewPacer(schedules, limiter.PacerOptions{Clock: d.cfg.Clock, Horizon: live.Admission.LeaseTTL})
}

// Run dispatches until ctx ends. On the way out it stops taking calls,
// hands the calls it holds back to JetStream for the other dispatchers,
// returns unspent leased capacity, and waits for its publishes to settle.
func (d *Dispatcher) Run(ctx context.Context) error {
	live := d.cfg.Shared.Load()
	res, err := streams.Ensure(ctx, d.js, live.Streams)
	if err != nil {
		return err
	}
	d.stream = res.Results
	d.claims = attempts.New(d.js, res.Attempts)
	d.usage = usage.NewRecorder(res.Usage, usage.RecorderConfig{Shared: d.cfg.Shared, Metrics: d.metrics, Log: d.log, Clock: d.cfg.Clock})
	d.results.RecordTo(d.usage)
	d.health = health.NewStore(res.Health)
	if err := d.health.Start(ctx); err != nil {
		return err
	}
	defer d.health.Stop()
	d.ledger = budget.NewLedger(res.Budget, budget.Options{
		Location: func() *time.Location { return d.cfg.Shared.Load().BudgetLocation() },
		Clock:    d.cfg.Clock,
	})
	if err := d.ledger.Start(ctx); err != nil {
		return fmt.Errorf("dispatcher: budgets: %w", err)
	}
	defer d.ledger.Stop()
	if d.slots, err = concurrency.New(res.Concurrency, d.cfg.ID, concurrency.Options{Clock: d.cfg.Clock, Logger: d.log}); err != nil {
		return fmt.Errorf("dispatcher: %w", err)
	}
	if err := d.slots.Start(ctx); err != nil {
		return fmt.Errorf("dispatcher: concurrency slots: %w", err)
	}

	buckets := d.cfg.Limiter
	if buckets == nil {
		kv := limiter.NewKV(res.Limiter, limiter.KVOptions{Clock: d.cfg.Clock})
		if err := kv.Start(ctx); err != nil {
			return fmt.Errorf("dispatcher: limiter: %w", err)
		}
		defer kv.Stop()
		buckets = kv
	}
	schedules := d.cfg.Scheduler
	if schedules == nil {
		kv := limiter.NewKVScheduler(res.Schedule, limiter.KVOptions{Clock: d.cfg.Clock})
		if err := kv.Start(ctx); err != nil {
			return fmt.Errorf("dispatcher: schedules: %w", err)
		}
		defer kv.Stop()
		schedules = kv
	}
	d.shareCapacity(buckets, schedules, live)

	lanes := []jetstream.ConsumerConfig{streams.DispatcherConsumerConfig(live.Streams, d.cfg.AckWait)}
	if d.criticalLane = streams.HasCriticalLane(res.Calls); d.criticalLane {
		lanes = append(lanes, streams.CriticalConsumerConfig(live.Streams, d.cfg.AckWait))
	} else {
		d.log.Warn("stream " + messages.StreamCalls + " has work-queue retention (made by an older sluice): critical calls wait behind other tiers' backlog in it; delete it while it is empty, and a service makes it again with the critical lane")
	}
	var cons []jetstream.Consumer
	for _, lane := range lanes {
		c, err := streams.EnsureConsumer(ctx, res.Calls, lane)
		if err != nil {
			return err
		}
		cons = append(cons, c)
	}
	doneSub, err := d.nc.Subscribe(messages.DoneSubject(d.cfg.ID), d.onDone)
	if err != nil {
		return fmt.Errorf("dispatcher: subscribe attempt reports: %w", err)
	}
	stateSub, err := d.nc.Subscribe(messages.StateSubject, d.onState)
	if err != nil {
		_ = doneSub.Unsubscribe()
		return fmt.Errorf("dispatcher: subscribe dispatcher states: %w", err)
	}
	defer func() { _ = stateSub.Unsubscribe() }()
	cancelSub, err := d.nc.Subscribe(messages.CancelSubjects, d.onCancel)
	if err != nil {
		return fmt.Errorf("dispatcher: subscribe cancellations: %w", err)
	}
	defer func() { _ = cancelSub.Unsubscribe() }()
	var consuming []jetstream.ConsumeContext
	stopConsuming := func() {
		for _, cc := range consuming {
			cc.Stop()
			<-cc.Closed()
		}
	}
	for i, c := range cons {
		// The critical lane pulls less at a time: its calls are few, and
		// each waits for none pulled with it.
		batch := 1024
		if i > 0 {
			batch = 64
		}
		cc, err := c.Consume(d.intake,
			jetstream.PullMaxMessages(batch),
			streams.PullExpiry,
			jetstream.ConsumeErrHandler(func(_ jetstream.ConsumeContext, err error) {
				if !errors.Is(err, jetstream.ErrNoHeartbeat) {
					d.log.Warn("consume", "consumer", c.CachedInfo().Name, "err", err)
				}
			}))
		if err != nil {
			stopConsuming()
			_ = doneSub.Unsubscribe()
			return fmt.Errorf("dispatcher: consume %s: %w", c.CachedInfo().Name, err)
		}
		consuming = append(consuming, cc)
	}
	d.log.Info("dispatcher started")

	loopCtx, stopLoop := context.WithCancel(context.Background())
	var loops sync.WaitGroup
	loops.Add(6)
	go func() { defer loops.Done(); d.schedule(loopCtx) }()
	go func() { defer loops.Done(); d.sweepLoop(loopCtx, res.Exec) }()
	go func() { defer loops.Done(); d.watchRegions(loopCtx, res.Exec) }()
	go func() { defer loops.Done(); d.settleLoop(loopCtx) }()
	go func() { defer loops.Done(); d.announce(loopCtx) }()
	go func() { defer loops.Done(); d.usage.Run(loopCtx) }()

	<-ctx.Done()
	stopConsuming()
	stopLoop()
	loops.Wait()

	// Hand every held call back, and those posted but not yet queued:
	// another dispatcher gets them at once. The scheduler has stopped.
	held := d.queue.all()
	for _, w := range held {
		d.queue.remove(w)
		d.releaseBudget(w.hold)
		_ = w.msg.Nak()
	}
	handedBack := len(held) + d.handBackPosted()
	d.inflight.Wait()
	_ = doneSub.Unsubscribe()
	stopCtx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	_ = d.leases.Flush(stopCtx)
	_ = d.pacer.Flush(stopCtx)
	_ = d.slots.Stop(stopCtx)
	d.flushSettlements(stopCtx)
	d.countLimiterOps()
	if err := d.usage.Flush(stopCtx); err != nil {
		d.log.Warn("usage: last flush", "err", err)
	}
	d.log.Info("dispatcher stopped", "handed_back", handedBack)
	return nil
}

// poke wakes the scheduler.
func (d *Dispatcher) poke() {
	select {
	case d.wake <- struct{}{}:
	default:
	}
}
