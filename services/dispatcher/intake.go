package dispatcher

import (
	"bytes"
	"cmp"
	"context"
	"encoding/json"
	"fmt"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/sluicehq/sluice/messages"
	"github.com/sluicehq/sluice/services/budget"
	"github.com/sluicehq/sluice/services/config"
	"github.com/sluicehq/sluice/services/limiter"
	"github.com/sluicehq/sluice/services/results"
	"github.com/sluicehq/sluice/services/streams"
	"github.com/sluicehq/sluice/services/tokens"
)

// retryEarly is how early a retry may be taken before its NotBefore rather
// than delayed again: less than this is not worth another redelivery.
const retryEarly = 5 * time.Millisecond

// intake receives every call and retry from JetStream. It answers bad input
// at once, delays early retries through JetStream, and queues the rest.
func (d *Dispatcher) intake(msg jetstream.Msg) {
	meta, err := msg.Metadata()
	if err != nil {
		d.deadLetter(msg, "no_metadata", err.Error())
		return
	}
	kind, team, tier, err := messages.ParseCallSubject(msg.Subject())
	if err != nil {
		d.deadLetter(msg, "bad_subject", err.Error())
		return
	}
	if tier == messages.TierCritical && d.criticalLane && meta.Consumer == streams.DispatcherConsumer {
		// The critical lane has this one (or had it: it stays stored
		// until both lanes acknowledge it).
		_ = msg.Ack()
		return
	}
	switch kind {
	case messages.KindCall:
		d.intakeCall(msg, meta, team, tier)
	case messages.KindRetry:
		d.intakeRetry(msg, team, tier)
	}
}

func (d *Dispatcher) intakeCall(msg jetstream.Msg, meta *jetstream.MsgMetadata, team string, tier messages.Tier) {
	cfg := d.cfg.Shared.Load()
	t := messages.Ticket{Team: team, Tier: tier, AcceptedAt: meta.Timestamp, Attempt: 1}

	var call messages.CallRequest
	var bad *messages.Error
	// calls.max_body_bytes bounds the body as the client sent it (as the
	// gateway bounds an HTTP request's body), not the call around it.
	limit := cfg.Calls.MaxBodyBytes
	if n := len(msg.Data()); n > limit+messages.MaxEnvelopeBytes {
		bad = messages.FieldError("body", "the call message is %d bytes: its body may be at most %d bytes (calls.max_body_bytes), and the rest of the call at most %d", n, limit, messages.MaxEnvelopeBytes)
	} else {
		call, bad = messages.DecodeCall(msg.Data())
		if n := len(call.Body); bad == nil && n > limit {
			bad = messages.FieldError("body", "is %d bytes; a call's body may be at most %d bytes (calls.max_body_bytes)", n, limit)
		}
	}
	// The id decides where the answer goes, so settle it first, even for a
	// call that is otherwise bad: the id in the body, else Nats-Msg-Id.
	// One that is no token is refused, and answered where its client
	// listens when a subject can carry it (see messages.AnswerID).
	msgID := msg.Headers().Get(messages.HeaderMsgID)
	if sent := cmp.Or(call.ID, msgID); bad == nil && !messages.ValidToken(sent) && sent != "" {
		// Only Nats-Msg-Id gets here: DecodeCall refused a bad id in the body.
		bad = messages.FieldError("id", "Nats-Msg-Id %q, the call's id, must be 1 to 64 letters, digits, '-' or '_'", sent)
	}
	call.ID = messages.AnswerID(call.ID, msgID, meta.Sequence.Stream)
	t.Call = call

	// A redelivered call may have ended already, on a dispatcher that died
	// before acknowledging it, or have its first attempt under way: an
	// executor claimed it, and continues the call.
	if meta.NumDelivered > 1 {
		if _, err := results.FetchFrom(context.Background(), d.stream, team, call.ID); err == nil {
			_ = msg.Ack()
			return
		}
		if messages.ValidToken(call.ID) && d.claimed(team, call.ID, 1, 0) {
			_ = msg.Ack()
			return
		}
	}
	var est tokens.Estimate
	if bad == nil {
		est, bad = d.check(cfg, &t)
	}
	if bad != nil {
		d.reject(msg, &t, bad)
		return
	}
	hold, bad, err := d.holdBudget(cfg, &t, &est)
	if err != nil {
		_ = msg.NakWithDelay(time.Second)
		return
	}
	if bad != nil {
		d.reject(msg, &t, bad)
		return
	}
	d.enqueue(msg, t, est.Total(), true, hold)
}

// check validates a decoded call against the configuration and fixes its
// deadline. It returns the call's token estimate, or the error to answer
// with.
func (d *Dispatcher) check(cfg *config.Config, t *messages.Ticket) (est tokens.Estimate, _ *messages.Error) {
	teamCfg, ok := cfg.Teams[t.Team]
	if !ok {
		return est, messages.Errorf(messages.CodeForbidden, "team %q is not configured", t.Team)
	}
	if !t.Tier.Valid() {
		return est, messages.FieldError("tier", "unknown tier %q in the subject; tiers are critical, high, standard, batch", t.Tier)
	}
	if !teamCfg.AllowsTier(t.Tier) {
		return est, messages.Errorf(messages.CodeForbidden, "team %q may not use tier %s", t.Team, t.Tier)
	}
	pool, ok := cfg.Pool(t.Call.Model)
	if !ok {
		return est, messages.Errorf(messages.CodeUnknownModel, "no pool serves model %q", t.Call.Model)
	}
	if !teamCfg.AllowsPool(pool.Name()) {
		return est, messages.Errorf(messages.CodeForbidden, "team %q may not use model %q", t.Team, t.Call.Model)
	}
	if len(candidates(pool, t.Call)) == 0 {
		if len(candidates(pool, messages.CallRequest{Endpoint: t.Call.Endpoint})) == 0 {
			return est, messages.FieldError("endpoint", "no deployment of %q serves %s", t.Call.Model, t.Call.Endpoint)
		}
		if t.Call.Deployment != "" && len(candidates(pool, messages.CallRequest{Endpoint: t.Call.Endpoint, Deployment: t.Call.Deployment})) == 0 {
			return est, messages.FieldError("deployment", "pool %q has no deployment %q that serves %s", t.Call.Model, t.Call.Deployment, t.Call.Endpoint)
		}
		return est, messages.FieldError("regions", "no deployment of %q serves regions %v", t.Call.Model, t.Call.Regions)
	}
	var bad *messages.Error
	est, bad = tokens.Of(t.Call.Endpoint, t.Call.Body, pool.DefaultMaxTokens)
	if bad != nil {
		return est, bad
	}
	if bad := neverFits(pool.Name(), candidates(pool, t.Call), t.Call.Regions, est.Total(), estimated(est)); bad != nil {
		return est, bad
	}
	if est.Stream && t.Call.Endpoint == messages.EndpointEmbeddings {
		return est, messages.FieldError("body.stream", "embeddings do not stream")
	}
	if d.wasCanceled(t.Call.ID) {
		return est, messages.Errorf(messages.CodeCanceled, "the client canceled the call before it was admitted")
	}
	t.Deadline = t.Call.DeadlineFrom(t.AcceptedAt, cfg.Calls.DefaultTimeout)
	if t.Deadline.Sub(t.AcceptedAt) > cfg.Calls.MaxTimeout {
		return est, messages.FieldError("deadline", "is more than %s after the call was accepted", cfg.Calls.MaxTimeout)
	}
	if !d.cfg.Clock().Before(t.Deadline) {
		return est, messages.Errorf(messages.CodeDeadlineExceeded, "the deadline %s had passed when the call was read", t.Deadline.Format(time.RFC3339Nano))
	}
	return est, nil
}

// checkQueueLimit refuses a new call of a team that has max_queued calls
// waiting already, across all dispatchers (as they last announced), with
// when to try again: about as long as its oldest waiting call has waited.
// Only the scheduler calls it.
func (d *Dispatcher) checkQueueLimit(cfg *config.Config, team string) *messages.Error {
	limit := cfg.Teams[team].MaxQueued
	elsewhere, _ := d.elsewhere(team)
	here := d.queue.waitingFor(team)
	oldest := d.queue.oldestOf(team)
	n := here + elsewhere
	if n < limit {
		return nil
	}
	backoff := time.Second
	if !oldest.IsZero() {
		backoff = min(max(d.cfg.Clock().Sub(oldest), time.Second), time.Minute)
	}
	return &messages.Error{
		Code:         messages.CodeQueueFull,
		Message:      fmt.Sprintf("team %s has %d calls waiting, its limit is %d (teams.%s.max_queued); try again in %s", team, n, limit, team, backoff.Round(time.Millisecond)),
		RetryAfterMS: backoff.Milliseconds(),
	}
}

func (d *Dispatcher) intakeRetry(msg jetstream.Msg, team string, tier messages.Tier) {
	var r messages.Retry
	if err := json.Unmarshal(msg.Data(), &r); err != nil || !messages.ValidToken(r.Call.ID) || r.Team != team || r.Tier != tier {
		d.deadLetter(msg, "undecodable_retry", "retry does not decode to a ticket for its subject")
		return
	}
	now := d.cfg.Clock()
	if wait := r.NotBefore.Sub(now); wait > retryEarly && now.Before(r.Deadline) {
		// Delayed redelivery: JetStream holds the retry, not this process;
		// never past the deadline, which is answered on redelivery.
		_ = msg.NakWithDelay(min(wait, r.Deadline.Sub(now)+retryEarly))
		return
	}
	cfg := d.cfg.Shared.Load()
	// Only services publish retries, but where NATS does not enforce it
	// anyone may: a retry of a team or tier the configuration does not
	// know would be queued (and counted) under names nobody configured.
	if _, ok := cfg.Teams[team]; !ok {
		d.reject(msg, &r.Ticket, messages.Errorf(messages.CodeForbidden, "team %q is not configured", team))
		return
	}
	if !tier.Valid() {
		d.reject(msg, &r.Ticket, messages.FieldError("tier", "unknown tier %q in the subject; tiers are critical, high, standard, batch", tier))
		return
	}
	if d.wasCanceled(r.Call.ID) {
		d.reject(msg, &r.Ticket, messages.Errorf(messages.CodeCanceled, "the client canceled the call while it waited to retry"))
		return
	}
	pool, ok := cfg.Pool(r.Call.Model)
	if !ok {
		d.reject(msg, &r.Ticket, messages.Errorf(messages.CodeUnknownModel, "no pool serves model %q any more", r.Call.Model))
		return
	}
	if !now.Before(r.Deadline) {
		why := "the deadline passed while waiting to retry"
		if dep, ok := cfg.Deployment(r.LastDeployment); ok && r.Late {
			why = "the deadline passed while the call waited to be sent: no executor of region " + dep.Region + " took its work in time"
		}
		d.reject(msg, &r.Ticket, messages.Errorf(messages.CodeDeadlineExceeded, "%s", why))
		return
	}
	est, bad := tokens.Of(r.Call.Endpoint, r.Call.Body, pool.DefaultMaxTokens)
	if bad != nil {
		d.reject(msg, &r.Ticket, bad)
		return
	}
	// Handed back twice (an executor and the sweep, after a NATS restart
	// forgot the first), the same admission may be here again after its
	// work was claimed: that attempt is under way already.
	if d.claimed(team, r.Call.ID, r.Attempt, r.Admission) {
		_ = msg.Ack()
		return
	}
	// Each attempt reserves its own worst case: the one before settled
	// what it spent.
	hold, bad, err := d.holdBudget(cfg, &r.Ticket, &est)
	if err != nil {
		_ = msg.NakWithDelay(time.Second)
		return
	}
	if bad != nil {
		d.reject(msg, &r.Ticket, bad)
		return
	}
	d.enqueue(msg, r.Ticket, est.Total(), false, hold)
}

// claimed reports whether an executor claimed the given admission of the
// given attempt of a call (see package attempts): it was sent, or is
// being sent, and needs no admission. A failed lookup says no: admitted
// again, its work is dropped at the claim.
func (d *Dispatcher) claimed(team, callID string, attempt, admission int) bool {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	_, err := d.claims.Lookup(ctx, team, callID, attempt, admission)
	return err == nil
}

// enqueue hands a valid call to the scheduler, which holds it until it is
// admitted (see offer); fresh when it is a new call, not a retry.
func (d *Dispatcher) enqueue(msg jetstream.Msg, t messages.Ticket, tokens int64, fresh bool, hold *budget.Hold) {
	now := d.cfg.Clock()
	t.Call.Body = shareBody(msg.Data(), t.Call.Body)
	d.post(callOffered{&waiting{msg: msg, ticket: t, need: limiter.Amount{Requests: 1, Tokens: float64(tokens)}, since: now, touched: now, hold: hold}, fresh})
}

// reject answers a call with an error result and acknowledges it.
func (d *Dispatcher) reject(msg jetstream.Msg, t *messages.Ticket, e *messages.Error) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	ctx, span := d.traceResult(ctx, msg.Headers(), t, e)
	defer span.End()
	r := &messages.Result{
		ID:       t.Call.ID,
		Team:     t.Team,
		Tier:     t.Tier,
		Model:    t.Call.Model,
		Error:    e,
		Attempts: t.Attempt - 1,
		Metadata: t.Call.Metadata,
		Timings:  messages.Timings{AcceptedAt: t.AcceptedAt, QueuedMS: t.QueuedMS},
	}
	if err := d.results.Publish(ctx, r); err != nil {
		d.log.Error("publish error result; the call will be redelivered", "call", t.Call.ID, "err", err)
		_ = msg.Nak()
		return
	}
	_ = msg.Ack()
}

// deadLetter stores a message that cannot be answered and removes it from
// the calls stream.
func (d *Dispatcher) deadLetter(msg jetstream.Msg, reason, why string) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	d.log.Warn("dead-lettering", "subject", msg.Subject(), "reason", reason, "why", why)
	if err := d.results.DeadLetter(ctx, reason, msg.Subject(), msg.Data(), why); err != nil {
		d.log.Error("dead-letter", "err", err)
		_ = msg.Nak()
		return
	}
	_ = msg.Term()
}

// shareBody returns body as the same bytes within data, the message it
// was decoded from, when they are there (decoding copies them): a waiting
// call holds its message until it is acknowledged, and so holds its body
// once rather than twice.
func shareBody(data []byte, body json.RawMessage) json.RawMessage {
	if len(body) == 0 {
		return body
	}
	if i := bytes.Index(data, body); i >= 0 {
		return data[i : i+len(body) : i+len(body)]
	}
	return body
}
