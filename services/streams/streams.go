// Package streams owns sluice's JetStream resources: the streams that carry
// calls, work, results, attempt claims and dead letters, the KV buckets
// that hold shared state (send schedules, share buckets, health, in-flight
// slots, usage, budgets, stored responses) and the configuration, and the durable
// consumers the services share.
//
// Whichever service starts first creates them; creation is idempotent and
// safe when several services start at once, so no service needs an install
// step before it runs.
package streams

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/sluicehq/sluice/messages"
	"github.com/sluicehq/sluice/services/config"
)

// Consumer names.
const (
	// DispatcherConsumer is the durable consumer on SLUICE_CALLS that every
	// dispatcher pulls from: every call and retry, in stream order.
	DispatcherConsumer = "dispatchers"
	// CriticalConsumer is the durable consumer on SLUICE_CALLS of the
	// critical lane: the calls and retries of tier critical only, so
	// that they reach a dispatcher ahead of a backlog of other tiers that
	// waits in the stream (see CallsConfig).
	CriticalConsumer = "dispatchers_critical"
)

// DefaultAckWait is the AckWait of the dispatchers' consumers when
// nothing sets another: how long the calls of a dispatcher that died stay
// invisible before JetStream hands them to another.
const DefaultAckWait = 30 * time.Second

// ExecConsumer is the durable consumer on SLUICE_EXEC that the executors of
// region pull from.
func ExecConsumer(region string) string { return "exec_" + region }

// Resources are the handles Ensure returns.
type Resources struct {
	Calls       jetstream.Stream
	Exec        jetstream.Stream
	Results     jetstream.Stream
	DeadLetters jetstream.Stream
	Attempts    jetstream.Stream
	Limiter     jetstream.KeyValue
	Schedule    jetstream.KeyValue
	Config      jetstream.KeyValue
	Health      jetstream.KeyValue
	Concurrency jetstream.KeyValue
	Usage       jetstream.KeyValue
	// Budget is SLUICE_BUDGET, made by Ensure; Open leaves it nil (only
	// dispatchers use it).
	Budget    jetstream.KeyValue
	Responses jetstream.KeyValue
}

// Ensure creates or updates every stream and bucket to match cfg and
// returns them. It is idempotent: running it again, or in several processes
// at once, leaves one set of resources.
func Ensure(ctx context.Context, js jetstream.JetStream, cfg config.Streams) (*Resources, error) {
	var r Resources
	var err error
	dupWindow := cfg.DuplicateWindow
	if r.Calls, err = ensureCalls(ctx, js, cfg); err != nil {
		return nil, err
	}
	if r.Exec, err = ensureStream(ctx, js, jetstream.StreamConfig{
		Name:        messages.StreamExec,
		Description: "sluice: admitted work per region, until an executor finishes it",
		Subjects:    []string{messages.ExecSubjects},
		Retention:   jetstream.WorkQueuePolicy,
		Storage:     jetstream.FileStorage,
		Replicas:    cfg.Replicas,
		Duplicates:  dupWindow,
	}); err != nil {
		return nil, err
	}
	if r.Results, err = ensureStream(ctx, js, ResultsConfig(cfg)); err != nil {
		return nil, err
	}
	if r.DeadLetters, err = ensureStream(ctx, js, jetstream.StreamConfig{
		Name:        messages.StreamDeadLetters,
		Description: "sluice: messages that could not be answered",
		Subjects:    []string{messages.DeadLetterSubjects},
		Retention:   jetstream.LimitsPolicy,
		Storage:     jetstream.FileStorage,
		Replicas:    cfg.Replicas,
		MaxAge:      cfg.DeadLetterMaxAge,
	}); err != nil {
		return nil, err
	}
	if r.Attempts, err = ensureStream(ctx, js, AttemptsConfig(cfg)); err != nil {
		return nil, err
	}
	// The buckets: each keeps one value per key (History 1) on file, but
	// the configuration, which keeps its last ten for `sluice config`.
	for _, b := range []struct {
		into        *jetstream.KeyValue
		name, about string
		history     uint8
		ttl         time.Duration
		maxBytes    int64
	}{
		{into: &r.Limiter, name: messages.BucketLimiter, about: "the token buckets of teams' and tiers' shares"},
		{into: &r.Schedule, name: messages.BucketSchedule, about: "each deployment's send schedule"},
		{into: &r.Health, name: messages.BucketHealth, about: "what providers taught about each deployment"},
		{into: &r.Concurrency, name: messages.BucketConcurrency, about: "in-flight slots leased by each dispatcher, per deployment"},
		{into: &r.Usage, name: messages.BucketUsage, about: "usage per hour, team, pool and tier", ttl: cfg.UsageMaxAge},
		{into: &r.Budget, name: messages.BucketBudget, about: "what teams spent and hold reserved against their budgets", ttl: BudgetMaxAge},
		{into: &r.Responses, name: messages.BucketResponses, about: "the deployment of each stored Responses API response the gateways relayed",
			ttl: cfg.ResponsesMaxAge, maxBytes: ResponsesMaxBytes},
		{into: &r.Config, name: messages.BucketConfig, about: "live configuration", history: 10},
	} {
		kv, err := ensureBucket(ctx, js, jetstream.KeyValueConfig{
			Bucket:      b.name,
			Description: "sluice: " + b.about,
			History:     max(b.history, 1),
			TTL:         b.ttl,
			MaxBytes:    b.maxBytes,
			Storage:     jetstream.FileStorage,
			Replicas:    cfg.Replicas,
		})
		if err != nil {
			return nil, err
		}
		*b.into = kv
	}
	return &r, nil
}

// CallsConfig is stream SLUICE_CALLS: accepted calls and retries, until a
// dispatcher settles them.
//
// Its retention is by interest: a message is removed once every consumer
// whose filter takes it has acknowledged it. Two consumers take calls
// (see Ensure): DispatcherConsumer takes every call and retry, in stream
// order, so that one of any subject, a tier nobody knows among them, is
// answered; CriticalConsumer takes tier critical alone, so that a
// critical call published behind a backlog of 100,000 batch calls
// reaches a dispatcher at once instead of after them. A dispatcher
// handles a critical call from the critical lane and acknowledges the
// copy DispatcherConsumer delivers at once (see HasCriticalLane). A
// work-queue stream could not do that: its consumers' filters may not
// overlap, and no filter says "every tier but critical".
//
// An interest stream with no consumer stores nothing it is sent, so
// Ensure creates both consumers with the stream, before any service
// publishes a call.
func CallsConfig(cfg config.Streams) jetstream.StreamConfig {
	return jetstream.StreamConfig{
		Name:        messages.StreamCalls,
		Description: "sluice: accepted calls and retries, until a dispatcher settles them",
		Subjects:    []string{messages.CallSubjects, messages.RetrySubjects},
		Retention:   jetstream.InterestPolicy,
		Storage:     jetstream.FileStorage,
		Replicas:    cfg.Replicas,
		Duplicates:  cfg.DuplicateWindow,
	}
}

// ensureCalls creates or updates SLUICE_CALLS and its two consumers.
//
// A stream made by a sluice from before the critical lane has
// work-queue retention, which JetStream cannot change in place. It is
// kept as it is, with its one consumer: calls of every tier then share
// one lane (HasCriticalLane says false), as they did, until an operator
// deletes the stream while it is empty and a service makes it again.
func ensureCalls(ctx context.Context, js jetstream.JetStream, cfg config.Streams) (jetstream.Stream, error) {
	s, err := racing(ctx, "stream "+messages.StreamCalls, func(ctx context.Context) (jetstream.Stream, error) {
		want := CallsConfig(cfg)
		old, err := js.Stream(ctx, want.Name)
		switch {
		case err == nil && old.CachedInfo().Config.Retention == jetstream.WorkQueuePolicy:
			want.Retention = jetstream.WorkQueuePolicy
		case err != nil && !errors.Is(err, jetstream.ErrStreamNotFound):
			return nil, err
		}
		return js.CreateOrUpdateStream(ctx, want)
	}, jetstream.ErrStreamNameAlreadyInUse)
	if err != nil {
		return nil, err
	}
	lanes := []jetstream.ConsumerConfig{DispatcherConsumerConfig(cfg, DefaultAckWait)}
	if HasCriticalLane(s) {
		lanes = append(lanes, CriticalConsumerConfig(cfg, DefaultAckWait))
	}
	for _, c := range lanes {
		if err := createConsumer(ctx, s, c); err != nil {
			return nil, err
		}
	}
	return s, nil
}

// HasCriticalLane reports whether the calls stream s has the critical
// lane (see CallsConfig): false for a work-queue stream made by an older
// sluice.
func HasCriticalLane(s jetstream.Stream) bool {
	return s.CachedInfo().Config.Retention == jetstream.InterestPolicy
}

// ResultsConfig is stream SLUICE_RESULTS: one terminal result per call,
// kept for cfg.ResultsMaxAge.
//
// Services publish results on sluice.answer.<team>.<id>; the stream's
// subject transform stores each as sluice.result.<team>.<id>, and it
// republishes on that subject only what it stored. Publishers require the
// result subject to be empty (Nats-Expected-Last-Subject-Sequence: 0), so
// a second result for a call is refused for as long as the first is
// stored, not only for the duplicate window. A call id may have several
// tokens (sluice.answer.<team>.dot.id, the refusal of a call whose id is
// not a token, answered where its client listens: see
// messages.AnswerID), so the filter is sluice.answer.*.>. Ensure updates
// a stream made before answers had their own subject (subjects
// sluice.result.*.*, no transform), or before ids could have several
// tokens (sluice.answer.*.*), in place: its stored results keep their
// subjects, and stay fetchable and counted by that check.
func ResultsConfig(cfg config.Streams) jetstream.StreamConfig {
	return jetstream.StreamConfig{
		Name:        messages.StreamResults,
		Description: "sluice: terminal results, one per call",
		Subjects:    []string{messages.AnswerSubjects},
		SubjectTransform: &jetstream.SubjectTransformConfig{
			Source:      messages.AnswerSubjects,
			Destination: "sluice.result.{{wildcard(1)}}.>",
		},
		RePublish: &jetstream.RePublish{
			Source:      "sluice.result.>",
			Destination: "sluice.result.>",
		},
		Retention:         jetstream.LimitsPolicy,
		Storage:           jetstream.FileStorage,
		Replicas:          cfg.Replicas,
		MaxAge:            cfg.ResultsMaxAge,
		MaxMsgsPerSubject: 1,
		Duplicates:        min(cfg.DuplicateWindow, cfg.ResultsMaxAge),
		AllowDirect:       true,
	}
}

// AttemptsConfig is stream SLUICE_ATTEMPTS: one claim per attempt an
// executor is about to send (see package attempts). A claim is a
// de-duplication record, so it is kept for the duplicate window, as long as
// SLUICE_CALLS and SLUICE_EXEC de-duplicate what they are sent.
func AttemptsConfig(cfg config.Streams) jetstream.StreamConfig {
	return jetstream.StreamConfig{
		Name:              messages.StreamAttempts,
		Description:       "sluice: attempts claimed by executors, one per attempt, for the duplicate window",
		Subjects:          []string{messages.AttemptSubjects},
		Retention:         jetstream.LimitsPolicy,
		Storage:           jetstream.FileStorage,
		Replicas:          cfg.Replicas,
		MaxAge:            cfg.DuplicateWindow,
		MaxMsgsPerSubject: 1,
		Duplicates:        cfg.DuplicateWindow,
		AllowDirect:       true,
	}
}

// DispatcherConsumerConfig is the durable consumer every dispatcher shares.
// Calls wait for admission un-acknowledged in a dispatcher's memory and are
// kept alive with InProgress; if that dispatcher dies, JetStream hands them
// to another after ackWait.
func DispatcherConsumerConfig(cfg config.Streams, ackWait time.Duration) jetstream.ConsumerConfig {
	return jetstream.ConsumerConfig{
		Durable:       DispatcherConsumer,
		Description:   "sluice dispatchers: calls waiting for admission",
		AckPolicy:     jetstream.AckExplicitPolicy,
		AckWait:       ackWait,
		MaxAckPending: cfg.MaxWaiting,
		MaxDeliver:    -1,
		Replicas:      cfg.Replicas,
	}
}

// CriticalConsumerConfig is the durable consumer of the critical lane,
// which every dispatcher shares too: the calls and retries of tier
// critical, held as DispatcherConsumerConfig's are.
func CriticalConsumerConfig(cfg config.Streams, ackWait time.Duration) jetstream.ConsumerConfig {
	c := DispatcherConsumerConfig(cfg, ackWait)
	c.Durable = CriticalConsumer
	c.Description = "sluice dispatchers: critical calls waiting for admission"
	c.FilterSubjects = []string{messages.CallSubject("*", messages.TierCritical), messages.RetrySubject("*", messages.TierCritical)}
	return c
}

// BudgetMaxAge is how long SLUICE_BUDGET keeps a key nobody changed: a
// budget's count lives at most a month and its previous one, so a key
// idle for 40 days counts nothing current any more (its month ended
// before) and may go, which bounds the bucket by the scopes in use.
const BudgetMaxAge = 40 * 24 * time.Hour

// ResponsesMaxBytes bounds bucket SLUICE_RESPONSES (about 100 bytes an
// entry: ten million responses). A full bucket refuses new entries: the
// gateway then answers those responses as usual and logs that it could
// not remember them, and calls that continue them get 404.
const ResponsesMaxBytes = 1 << 30

// PullExpiry is how long each pull request of the services' Consume waits
// on the server. A pull request that reaches a clustered consumer before
// it has a leader (just created, or its leader moved), or that is lost
// across a leaf node, is dropped without a word; the Consume notices only
// when its heartbeats (half the expiry) stop coming, and pulls again. At
// nats.go's default of 30 s, the first work of a cluster's region waited
// 30 s for its executor; 5 s bounds that, for one request every 5 s from
// each idle consumer.
const PullExpiry = jetstream.PullExpiry(5 * time.Second)

// ExecConsumerConfig is the durable consumer the executors of region share.
// Each executor bounds its own concurrency by how much it pulls; the
// consumer's MaxAckPending only bounds the region as a whole.
func ExecConsumerConfig(cfg config.Streams, region string, ackWait time.Duration) jetstream.ConsumerConfig {
	return jetstream.ConsumerConfig{
		Durable:       ExecConsumer(region),
		Description:   "sluice executors of region " + region,
		FilterSubject: messages.ExecSubject(region),
		AckPolicy:     jetstream.AckExplicitPolicy,
		AckWait:       ackWait,
		MaxAckPending: 20_000,
		MaxDeliver:    -1,
		Replicas:      cfg.Replicas,
	}
}

// ensureStream creates or updates a stream.
func ensureStream(ctx context.Context, js jetstream.JetStream, cfg jetstream.StreamConfig) (jetstream.Stream, error) {
	return racing(ctx, "stream "+cfg.Name, func(ctx context.Context) (jetstream.Stream, error) {
		return js.CreateOrUpdateStream(ctx, cfg)
	}, jetstream.ErrStreamNameAlreadyInUse)
}

func ensureBucket(ctx context.Context, js jetstream.JetStream, cfg jetstream.KeyValueConfig) (jetstream.KeyValue, error) {
	return racing(ctx, "bucket "+cfg.Bucket, func(ctx context.Context) (jetstream.KeyValue, error) {
		return js.CreateOrUpdateKeyValue(ctx, cfg)
	}, jetstream.ErrStreamNameAlreadyInUse, jetstream.ErrBucketExists)
}

// createConsumer creates a durable consumer unless it exists: a service
// that only needs the consumer to exist leaves the settings of the
// services that use it (the dispatchers' AckWait) as they are.
func createConsumer(ctx context.Context, s jetstream.Stream, cfg jetstream.ConsumerConfig) error {
	_, err := racing(ctx, "consumer "+cfg.Durable, func(ctx context.Context) (jetstream.Consumer, error) {
		c, err := s.CreateConsumer(ctx, cfg)
		if errors.Is(err, jetstream.ErrConsumerExists) {
			// It exists with other settings, a dispatcher's: keep them.
			return s.Consumer(ctx, cfg.Durable)
		}
		return c, err
	})
	return err
}

// EnsureConsumer creates or updates a durable consumer, tolerating a race
// with another service doing the same. It gives up when ctx ends.
func EnsureConsumer(ctx context.Context, s jetstream.Stream, cfg jetstream.ConsumerConfig) (jetstream.Consumer, error) {
	return racing(ctx, "consumer "+cfg.Durable, func(ctx context.Context) (jetstream.Consumer, error) {
		return s.CreateOrUpdateConsumer(ctx, cfg)
	}, jetstream.ErrConsumerExists)
}

// firstAttemptTimeout bounds the first create-or-update request; each
// retry after a timeout waits twice as long, up to maxAttemptTimeout. A
// dropped answer (below) is thus found out quickly, while a busy cluster,
// whose meta group and the new stream's own group each need a round of
// consensus, still gets the seconds it needs. Retrying is harmless: the
// request is idempotent.
const (
	firstAttemptTimeout = time.Second
	maxAttemptTimeout   = 16 * time.Second
)

// transientFor is how long racing retries errors of a cluster that is not
// ready (clusterNotReady): long enough for a hub cluster to form or a
// server to restart, short enough that a cluster too small for the
// configured replicas is reported rather than waited on in silence.
const transientFor = time.Minute

// errCodeNoPeers is nats-server's JSClusterNoPeersErrF: no servers to
// place a replicated stream on, as while a cluster is still forming or
// one of its servers is restarting.
const errCodeNoPeers jetstream.ErrorCode = 10005

// clusterNotReady reports whether err is the JetStream of a cluster that
// cannot place or change a stream yet, but may soon.
func clusterNotReady(err error) bool {
	var jsErr jetstream.JetStreamError
	if !errors.As(err, &jsErr) || jsErr.APIError() == nil {
		return false
	}
	apiErr := jsErr.APIError()
	return apiErr.Code == 503 || apiErr.ErrorCode == errCodeNoPeers
}

// racing runs a create-or-update until it succeeds, ctx ends, or it fails
// in a way trying again cannot mend.
//
// Two services racing to create the same resource both find it missing
// and both create it; the loser gets one of lostRace, and succeeds by
// trying again, now as an update. On a cluster the loser may get no answer
// at all: nats-server answers one of several concurrent creations of the
// same clustered stream and drops the others, so a request that times out
// is also tried again, after a jittered pause, while ctx lasts. So are,
// for a while, the errors of a cluster still forming (clusterNotReady).
func racing[T any](ctx context.Context, what string, createOrUpdate func(context.Context) (T, error), lostRace ...error) (T, error) {
	var zero T
	var lastErr error
	pause, timeout := 100*time.Millisecond, firstAttemptTimeout
	start := time.Now()
	for attempt := 0; ; attempt++ {
		attemptCtx, cancel := context.WithTimeout(ctx, timeout)
		v, err := createOrUpdate(attemptCtx)
		cancel()
		if err == nil {
			return v, nil
		}
		lastErr = err
		lost := false
		for _, target := range lostRace {
			lost = lost || errors.Is(err, target)
		}
		timedOut := ctx.Err() == nil && (errors.Is(err, context.DeadlineExceeded) || errors.Is(err, nats.ErrTimeout) ||
			errors.Is(err, jetstream.ErrNoStreamResponse) || errors.Is(err, nats.ErrNoResponders))
		transient := ctx.Err() == nil && time.Since(start) < transientFor && clusterNotReady(err)
		if !(lost && attempt < 5) && !timedOut && !transient {
			break
		}
		if timedOut || transient {
			select {
			case <-ctx.Done():
				return zero, fmt.Errorf("streams: ensure %s: %w (before that: %v)", what, ctx.Err(), lastErr)
			case <-time.After(pause/2 + rand.N(pause/2+1)):
			}
			pause = min(2*pause, 2*time.Second)
			timeout = min(2*timeout, maxAttemptTimeout)
		}
	}
	return zero, fmt.Errorf("streams: ensure %s: %w", what, lastErr)
}

// JetStream returns the JetStream of domain through nc: the hub's, for a
// service connected to a regional leaf node (domain is then the hub's
// JetStream domain); the local one when domain is empty.
func JetStream(nc *nats.Conn, domain string, opts ...jetstream.JetStreamOpt) (jetstream.JetStream, error) {
	if domain == "" {
		return jetstream.New(nc, opts...)
	}
	return jetstream.NewWithDomain(nc, domain, opts...)
}
