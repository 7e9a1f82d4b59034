// Package results owns the end of every call: publishing its one terminal
// result, fetching a stored result, and dead-lettering what cannot be
// answered at all.
//
// A result is published on sluice.answer.<team>.<call id> with
// Nats-Msg-Id set to the call id and Nats-Expected-Last-Subject-Sequence
// set to 0. Stream SLUICE_RESULTS stores it as sluice.result.<team>.<call
// id> and republishes there only what it stored. So when two services race
// to answer the same call (a dispatcher redelivered after a crash, work run
// twice after a NATS restart), the server keeps the first answer and
// refuses the others, for as long as the first is stored
// (streams.results_max_age; also across server restarts and outside the
// duplicate window), and a subscriber of the call's result subject
// receives that one answer.
package results

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/sluicehq/sluice/messages"
	"github.com/sluicehq/sluice/services/config"
	"github.com/sluicehq/sluice/services/streams"
	"github.com/sluicehq/sluice/services/telemetry"
	"github.com/sluicehq/sluice/services/tracing"
)

// Publisher publishes terminal results and dead letters.
type Publisher struct {
	js      jetstream.JetStream
	metrics *telemetry.Metrics
	shared  *config.Live
	now     func() time.Time
	usage   Recorder
}

// Recorder takes every result stored (not one refused because the call
// was answered already), for the usage figures.
type Recorder interface {
	Result(*messages.Result)
}

// RecordTo makes p record every result it stores to rec.
func (p *Publisher) RecordTo(rec Recorder) { p.usage = rec }

// NewPublisher returns a Publisher. shared is the live configuration,
// whose teams label the results counted in metrics: a team or tier it does
// not know is counted as config.Unknown (nil: every team is). now may be
// nil for time.Now.
func NewPublisher(js jetstream.JetStream, metrics *telemetry.Metrics, shared *config.Live, now func() time.Time) *Publisher {
	if now == nil {
		now = time.Now
	}
	return &Publisher{js: js, metrics: metrics, shared: shared, now: now}
}

// Publish is Answer for callers that need not know whether theirs was the
// call's result: a call answered already is not an error.
func (p *Publisher) Publish(ctx context.Context, r *messages.Result) error {
	_, err := p.Answer(ctx, r)
	return err
}

// Answer stamps the result's finishing time (and, when the span of ctx is
// recorded, the trace id) and publishes it as the call's
// terminal result. It returns once JetStream has stored it (stored true),
// or refused it because the call has a stored result already (stored
// false, err nil): a duplicate of an earlier publish, or another result for
// the call, whatever its Nats-Msg-Id. Only a stored result is counted in
// the metrics and recorded for usage, and only it reaches the subscribers
// of the call's result subject. The metrics count it under the names the
// configuration knows (see config.Unknown); the result itself, and where
// it goes, keep the names the call had. stored is false too when the stored result
// is this caller's own earlier publish whose acknowledgement was lost.
//
// Errors: encoding r, and the publish's (NATS unreachable, ctx ended,
// no stream); the result may then have been stored or not: publish it
// again, or fetch it.
func (p *Publisher) Answer(ctx context.Context, r *messages.Result) (stored bool, err error) {
	r.Timings.FinishedAt = p.now()
	if !r.Timings.AcceptedAt.IsZero() {
		r.Timings.TotalMS = ms(r.Timings.FinishedAt.Sub(r.Timings.AcceptedAt))
	}
	if r.Error != nil {
		r.Status = messages.StatusError
	} else {
		r.Status = messages.StatusOK
	}
	if r.TraceID == "" {
		// The span of ctx is the one publishing the result: its trace is the call's.
		r.TraceID = tracing.TraceID(ctx)
	}
	data, err := json.Marshal(r)
	if err != nil {
		return false, fmt.Errorf("results: encode %s: %w", r.ID, err)
	}
	msg := &nats.Msg{Subject: messages.AnswerSubject(r.Team, r.ID), Data: data, Header: nats.Header{}}
	msg.Header.Set(messages.HeaderMsgID, r.ID)
	stored, err = streams.PublishFirst(ctx, p.js, msg)
	if err != nil {
		return false, fmt.Errorf("results: publish %s: %w", r.ID, err)
	}
	if !stored {
		return false, nil
	}
	var cfg *config.Config
	if p.shared != nil {
		cfg = p.shared.Load()
	}
	p.metrics.Calls.WithLabelValues(cfg.TeamLabel(r.Team), config.TierLabel(r.Tier), r.Outcome()).Inc()
	if p.usage != nil {
		p.usage.Result(r)
	}
	return true, nil
}

// DeadLetter stores a message that could not be answered, with the reason,
// on sluice.dlq.<reason>.
func (p *Publisher) DeadLetter(ctx context.Context, reason string, subject string, data []byte, why string) error {
	msg := &nats.Msg{Subject: messages.DeadLetterSubject(reason), Data: data, Header: nats.Header{}}
	msg.Header.Set(messages.HeaderDeadLetterReason, why)
	msg.Header.Set(messages.HeaderDeadLetterSubject, subject)
	if _, err := p.js.PublishMsg(ctx, msg); err != nil {
		return fmt.Errorf("results: dead-letter: %w", err)
	}
	p.metrics.DeadLetters.WithLabelValues(reason).Inc()
	return nil
}

// ErrNotFound is returned by Fetch when no result is stored for the call.
var ErrNotFound = errors.New("results: no result stored for this call")

// Fetch returns the stored result of a call, or ErrNotFound. It is how a
// client that reconnects, or a dispatcher handed a redelivered call, finds
// out whether the call already ended.
func Fetch(ctx context.Context, js jetstream.JetStream, team, callID string) (*messages.Result, error) {
	s, err := js.Stream(ctx, messages.StreamResults)
	if err != nil {
		return nil, fmt.Errorf("results: %w", err)
	}
	return FetchFrom(ctx, s, team, callID)
}

// FetchFrom is Fetch on an already looked-up results stream.
func FetchFrom(ctx context.Context, results jetstream.Stream, team, callID string) (*messages.Result, error) {
	m, err := results.GetLastMsgForSubject(ctx, messages.ResultSubject(team, callID))
	if errors.Is(err, jetstream.ErrMsgNotFound) {
		return nil, ErrNotFound
	}
	if err != nil {
		return nil, fmt.Errorf("results: fetch %s: %w", callID, err)
	}
	var r messages.Result
	if err := json.Unmarshal(m.Data, &r); err != nil {
		return nil, fmt.Errorf("results: decode %s: %w", callID, err)
	}
	return &r, nil
}

func ms(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }

// FetchDirect is Fetch with one direct-get request to the results stream
// and nothing else, so that it needs no more permission than publishing
// on $JS.API.DIRECT.GET.SLUICE_RESULTS.sluice.result.<team>.> (with the
// JetStream domain, when one is given, as in $JS.<domain>.API....): what
// a team's NATS user is granted.
func FetchDirect(ctx context.Context, nc *nats.Conn, domain, team, callID string) (*messages.Result, error) {
	prefix := "$JS.API."
	if domain != "" {
		prefix = "$JS." + domain + ".API."
	}
	subject := prefix + "DIRECT.GET." + messages.StreamResults + "." + messages.ResultSubject(team, callID)
	m, err := nc.RequestWithContext(ctx, subject, nil)
	if err != nil {
		return nil, fmt.Errorf("results: fetch %s: %w", callID, err)
	}
	if status := m.Header.Get("Status"); status != "" {
		if status == "404" {
			return nil, ErrNotFound
		}
		return nil, fmt.Errorf("results: fetch %s: status %s %s", callID, status, m.Header.Get("Description"))
	}
	var r messages.Result
	if err := json.Unmarshal(m.Data, &r); err != nil {
		return nil, fmt.Errorf("results: decode %s: %w", callID, err)
	}
	return &r, nil
}
