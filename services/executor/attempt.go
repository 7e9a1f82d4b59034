package executor

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"time"
	"unicode/utf8"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/sluicehq/sluice/messages"
	"github.com/sluicehq/sluice/services/providers"
	"github.com/sluicehq/sluice/services/tokens"
	"github.com/sluicehq/sluice/services/tracing"
)

// outcome is how an attempt ended: a terminal result, or a retry.
type outcome struct {
	result *messages.Result
	retry  *messages.Retry
	// class and status are reported to the admitting dispatcher.
	class  messages.Outcome
	status int
	// usedTokens settles the reservation; -1 keeps it as reserved (when
	// the provider's count is unknown, keeping it errs on the safe side).
	usedTokens int64
	// aborted is set when shutdown cut the request off.
	aborted bool
	// duplicate is set when another delivery of the attempt claimed it,
	// unclaimed when the claim could not be made: neither was sent, and
	// neither publishes anything.
	duplicate, unclaimed bool
	// sentAt is when the request went to the provider; receivedAt when
	// the executor received the work, on its first delivery.
	sentAt, receivedAt time.Time
}

// nonJSONExcerpt bounds how much of a non-JSON answer a result carries.
const nonJSONExcerpt = 2048

// attempt makes one provider request for w and judges the answer.
func (e *Executor) attempt(ctx context.Context, msg jetstream.Msg, w *messages.Work, log *slog.Logger) (o outcome) {
	var sentAt time.Time
	defer func() { o.sentAt = sentAt }()
	now := e.cfg.Clock()
	shared := e.cfg.Shared.Load()
	res := e.newResult(w)
	fail := func(class messages.Outcome, used int64, err *messages.Error) outcome {
		res.Error = err
		return outcome{result: res, class: class, status: res.HTTPStatus, usedTokens: used}
	}
	if !now.Before(w.Deadline) {
		return fail(messages.OutcomeNotSent, 0, messages.Errorf(messages.CodeDeadlineExceeded, "the deadline passed before the provider was called"))
	}
	dep, ok := shared.Deployment(w.Deployment)
	if !ok || dep.Region != e.cfg.Region {
		return fail(messages.OutcomeNotSent, 0, messages.Errorf(messages.CodeInternal, "deployment %q is not configured for region %s", w.Deployment, e.cfg.Region))
	}
	res.Provider = dep.Provider
	secret, ok := e.cfg.Secrets(dep.Key)
	if !ok {
		log.Error("no secret for key name; check the executor's secrets", "key_name", dep.Key)
		return fail(messages.OutcomeNotSent, 0, messages.Errorf(messages.CodeInternal, "the executors of region %s hold no secret named %s", e.cfg.Region, dep.Key))
	}
	adapter, err := providers.For(dep.Provider)
	if err != nil {
		return fail(messages.OutcomeNotSent, 0, messages.Errorf(messages.CodeInternal, "%v", err))
	}

	if e.cancels.canceled(w.Call.ID) {
		return fail(messages.OutcomeNotSent, 0, messages.Errorf(messages.CodeCanceled, "the client canceled the call before it was sent"))
	}
	streamed := wantsStream(w.Call.Body)
	streamer, canStream := adapter.(providers.Streamer)
	if streamed && !canStream {
		return fail(messages.OutcomeNotSent, 0, messages.Errorf(messages.CodeInvalidRequest, "%s deployments cannot stream", dep.Provider))
	}

	switch e.awaitSend(ctx, w) {
	case sendLate:
		why := "late"
		if ctx.Err() != nil {
			why = "shutdown"
		}
		return e.handBack(w, why)
	case duplicate:
		return outcome{duplicate: true, class: messages.OutcomeNotSent}
	case unclaimed:
		return outcome{unclaimed: true}
	}
	now = e.cfg.Clock()
	// The request ends at the attempt timeout (the provider's time to
	// answer) or at the call's deadline (the caller's choice), whichever
	// comes first: only the first says something about the provider.
	attemptBy := now.Add(shared.Retry.AttemptTimeout)
	callersDeadline := !attemptBy.Before(w.Deadline)
	reqCtx, cancel := context.WithDeadline(ctx, earliest(attemptBy, w.Deadline))
	defer cancel()
	wasCanceled, unregister := e.cancels.run(w.Call.ID, cancel)
	defer unregister()
	stopKeepAlive := e.keepAlive(msg)
	e.metrics.InFlight.WithLabelValues(e.cfg.Region).Inc()
	start := e.cfg.Clock()
	sentAt = start
	req := providers.Request{
		Endpoint:   w.Call.Endpoint,
		Body:       w.Call.Body,
		Model:      dep.Model,
		BaseURL:    dep.BaseURL,
		APIVersion: dep.APIVersion,
		Secret:     secret,
		RequestID:  w.Call.ID,
	}
	var resp *providers.Response
	chunks := 0
	if streamed {
		resp, err = streamer.Stream(reqCtx, e.cfg.HTTPClient, req, func(ev providers.Event) error {
			if ev.Injected {
				return nil // the usage chunk sluice asked for; the client did not
			}
			chunks++
			m := &nats.Msg{Subject: messages.StreamSubject(w.Team, w.Call.ID), Data: ev.Raw, Header: nats.Header{}}
			m.Header.Set(messages.HeaderStreamSeq, strconv.Itoa(chunks))
			return e.nc.PublishMsg(m)
		})
	} else {
		resp, err = adapter.Do(reqCtx, e.cfg.HTTPClient, req)
	}
	took := e.cfg.Clock().Sub(start)
	e.metrics.InFlight.WithLabelValues(e.cfg.Region).Dec()
	stopKeepAlive()
	res.Timings.ProviderMS = ms(took)
	res.Chunks = chunks
	e.metrics.ProviderLatency.WithLabelValues(dep.ID, dep.Region).Observe(took.Seconds())

	if errors.Is(err, providers.ErrUnsupportedEndpoint) || errors.Is(err, providers.ErrInvalidBody) {
		// Nothing was sent, and sending it again would not help.
		return fail(messages.OutcomeNotSent, 0, messages.Errorf(messages.CodeInvalidRequest, "%v", err))
	}
	if err != nil && wasCanceled() {
		if chunks > 0 {
			// The provider answered part of it: priced at the reservation.
			res.Cost = costOf(dep, w, nil)
		}
		return fail(messages.OutcomeCanceled, e.streamedTokens(w, chunks), messages.Errorf(messages.CodeCanceled, "the client canceled the call after %d chunks", chunks))
	}
	var class messages.Outcome
	if err != nil {
		class = requestFailure(err, reqCtx.Err(), callersDeadline)
	}
	if err != nil && chunks > 0 {
		// Part of the answer is out: another attempt would send it again.
		// The provider reported no usage for it: the reservation prices it.
		res.Cost = costOf(dep, w, nil)
		if class == messages.OutcomeDeadline {
			e.metrics.ProviderRequests.WithLabelValues(dep.ID, dep.Region, string(class)).Inc()
			return fail(class, e.streamedTokens(w, chunks), messages.Errorf(messages.CodeDeadlineExceeded, "the deadline passed after %d chunks of the stream", chunks))
		}
		log.Warn("stream broke off", "chunks", chunks, "err", err)
		return fail(class, e.streamedTokens(w, chunks), messages.Errorf(messages.CodeProviderError, "the stream broke off after %d chunks", chunks))
	}
	if err != nil {
		if ctx.Err() != nil {
			return outcome{aborted: true}
		}
		e.metrics.ProviderRequests.WithLabelValues(dep.ID, dep.Region, string(class)).Inc()
		if class == messages.OutcomeDeadline || !e.cfg.Clock().Before(w.Deadline) {
			return fail(class, -1, messages.Errorf(messages.CodeDeadlineExceeded, "the deadline passed during the provider request"))
		}
		log.Warn("provider request failed", "err", err)
		return e.retryOrGiveUp(w, res, class, 0, messages.Errorf(messages.CodeProviderError, "provider request failed: %s", class))
	}

	e.metrics.ProviderRequests.WithLabelValues(dep.ID, dep.Region, strconv.Itoa(resp.Status)).Inc()
	e.learn(ctx, shared, dep, resp)
	res.HTTPStatus = resp.Status
	res.Body = bodyJSON(resp.Body)
	if streamed && chunks > 0 {
		if resp.Class != providers.Success {
			// The provider sent an error event mid-stream, after an
			// answer it may charge: priced at the reservation.
			res.Cost = costOf(dep, w, nil)
			return fail(messages.OutcomeUnavailable, e.streamedTokens(w, chunks), &messages.Error{Code: messages.CodeProviderError, ProviderStatus: resp.Status,
				Message: fmt.Sprintf("the provider ended the stream with an error (%s) after %d chunks", resp.Class, chunks)})
		}
		res.Usage = resp.Usage
		res.Cost = costOf(dep, w, resp.Usage)
		used := int64(-1)
		if resp.Usage != nil {
			used = resp.Usage.TotalTokens
			e.metrics.TokensUsed.WithLabelValues(shared.TeamLabel(w.Team), dep.Pool(), dep.ID).Add(float64(used))
		}
		return outcome{result: res, class: messages.OutcomeOK, status: resp.Status, usedTokens: used}
	}
	switch resp.Class {
	case providers.Success:
		if !json.Valid(resp.Body) {
			return fail(messages.OutcomeUnavailable, -1, &messages.Error{Code: messages.CodeProviderError, ProviderStatus: resp.Status,
				Message: "the provider answered with something that is not JSON"})
		}
		res.Usage = resp.Usage
		res.Cost = costOf(dep, w, resp.Usage)
		used := int64(-1)
		if resp.Usage != nil {
			used = resp.Usage.TotalTokens
			e.metrics.TokensUsed.WithLabelValues(shared.TeamLabel(w.Team), dep.Pool(), dep.ID).Add(float64(used))
		}
		return outcome{result: res, class: messages.OutcomeOK, status: resp.Status, usedTokens: used}
	case providers.QuotaExhausted:
		quota := &messages.Error{Code: messages.CodeProviderError, ProviderStatus: resp.Status,
			Message: "insufficient_quota: the key's billing quota is spent"}
		// Retrying the key does not help, but another key of the pool may:
		// the key is out of rotation now, so admission will not pick it.
		if e.otherKeyServes(shared, dep, w.Call.Endpoint) {
			return e.retryOrGiveUp(w, res, messages.OutcomeQuota, 0, quota)
		}
		quota.Message += "; no other key serves this pool"
		return fail(messages.OutcomeQuota, 0, quota)
	case providers.RateLimited:
		e.metrics.Provider429s.WithLabelValues(dep.ID).Inc()
		e.usage.Met429(w.Team, dep.Pool(), w.Tier)
		return e.retryOrGiveUp(w, res, messages.OutcomeRateLimited, resp.Limits.Wait(resp.ErrorType),
			&messages.Error{Code: messages.CodeRateLimited, ProviderStatus: resp.Status, Message: "the provider answered 429"})
	case providers.Unavailable:
		return e.retryOrGiveUp(w, res, messages.OutcomeUnavailable, resp.Limits.RetryAfter,
			&messages.Error{Code: messages.CodeProviderError, ProviderStatus: resp.Status, Message: fmt.Sprintf("the provider answered %d", resp.Status)})
	default:
		return fail(messages.OutcomeRejected, 0, &messages.Error{Code: messages.CodeProviderError, ProviderStatus: resp.Status,
			Message: fmt.Sprintf("the provider refused the request with %d", resp.Status)})
	}
}

// retryOrGiveUp hands the call back for another attempt after a backoff,
// unless its attempts are spent or the deadline would pass first.
func (e *Executor) retryOrGiveUp(w *messages.Work, res *messages.Result, class messages.Outcome, hint time.Duration, lastErr *messages.Error) outcome {
	e.metrics.Retries.WithLabelValues(w.Deployment, string(class)).Inc()
	shared := e.cfg.Shared.Load()
	if w.Attempt >= shared.Retry.MaxAttempts {
		res.Error = lastErr
		res.Error.Message = fmt.Sprintf("gave up after %d attempts: %s", w.Attempt, lastErr.Message)
		return outcome{result: res, class: class, status: res.HTTPStatus, usedTokens: -1}
	}
	delay := Backoff(w.Attempt, shared.Retry.BaseDelay, shared.Retry.MaxDelay, hint, e.cfg.Rand)
	notBefore := e.cfg.Clock().Add(delay)
	if !notBefore.Before(w.Deadline) {
		res.Error = &messages.Error{Code: messages.CodeDeadlineExceeded, ProviderStatus: lastErr.ProviderStatus,
			Message: fmt.Sprintf("the deadline would pass before attempt %d (after %s: %s)", w.Attempt+1, delay.Round(time.Millisecond), lastErr.Message)}
		return outcome{result: res, class: class, status: res.HTTPStatus, usedTokens: -1}
	}
	r := &messages.Retry{Ticket: w.Ticket, NotBefore: notBefore}
	r.Attempt = w.Attempt + 1
	r.LastError = lastErr
	r.LastDeployment = w.Deployment
	r.QueuedMS = w.QueuedMS
	return outcome{retry: r, class: class, status: res.HTTPStatus, usedTokens: -1}
}

// finishFor bounds how long an executor keeps trying to publish an
// attempt's outcome (NATS restarting, a stream leader moving): given up,
// the work is delivered again, and a sent attempt then counts as one that
// may have reached the provider, so the call makes one request more.
const finishFor = time.Minute

// finish publishes the attempt's outcome, and reports it to the dispatcher
// that admitted it. A publish that fails is tried again, with growing
// pauses, for finishFor: the outcome is known, and its work, redelivered,
// would cost another provider request.
func (e *Executor) finish(ctx context.Context, msg jetstream.Msg, w *messages.Work, o outcome) error {
	publish := func(ctx context.Context) error { return e.results.Publish(ctx, o.result) }
	if o.retry != nil {
		data, err := json.Marshal(o.retry)
		if err != nil {
			return err
		}
		publish = func(ctx context.Context) error {
			m := &nats.Msg{Subject: messages.RetrySubject(w.Team, w.Tier), Data: data, Header: nats.Header{}}
			m.Header.Set(messages.HeaderMsgID, messages.RetryMsgID(w.Call.ID, o.retry.Attempt, o.retry.Admission))
			tracing.Inject(ctx, m.Header) // the next admission continues the trace
			if _, err := e.js.PublishMsg(ctx, m); err != nil {
				return fmt.Errorf("publish retry: %w", err)
			}
			return nil
		}
	}
	giveUp := e.cfg.Clock().Add(finishFor)
	pause := 100 * time.Millisecond
	for {
		pubCtx, cancel := context.WithTimeout(ctx, 10*time.Second)
		err := publish(pubCtx)
		cancel()
		if err == nil {
			break
		}
		if ctx.Err() != nil || e.cfg.Clock().Add(pause).After(giveUp) {
			return err
		}
		e.log.Warn("publish the attempt's outcome; trying again", "call", w.Call.ID, "err", err)
		// Keep the work ours meanwhile: redelivered, it would be sent
		// again.
		_ = msg.InProgress()
		if !e.sleepUntil(ctx, e.cfg.Clock().Add(pause)) {
			return err
		}
		pause = min(2*pause, 2*time.Second)
	}
	e.report(w, o)
	return nil
}

// report tells the dispatcher that admitted w how its attempt ended.
func (e *Executor) report(w *messages.Work, o outcome) {
	if !messages.ValidToken(w.Dispatcher) {
		return
	}
	data, _ := json.Marshal(messages.AttemptDone{
		CallID: w.Call.ID, Attempt: w.Attempt, Admission: w.Admission, Deployment: w.Deployment,
		Outcome: o.class, Status: o.status,
		ReservedTokens: w.ReservedTokens, UsedTokens: o.usedTokens,
		Cost:   costReported(o),
		SentAt: o.sentAt, ReceivedAt: o.receivedAt,
	})
	// Best effort: a lost report leaves the reservation in place.
	_ = e.nc.Publish(messages.DoneSubject(w.Dispatcher), data)
}

// keepAlive tells JetStream the work is in progress while a long provider
// request runs, so it is not redelivered to another executor meanwhile.
func (e *Executor) keepAlive(msg jetstream.Msg) (stop func()) {
	done := make(chan struct{})
	go func() {
		t := time.NewTicker(e.cfg.AckWait / 3)
		defer t.Stop()
		for {
			select {
			case <-done:
				return
			case <-t.C:
				_ = msg.InProgress()
			}
		}
	}()
	return func() { close(done) }
}

func (e *Executor) newResult(w *messages.Work) *messages.Result {
	return &messages.Result{
		ID:         w.Call.ID,
		Team:       w.Team,
		Tier:       w.Tier,
		Model:      w.Call.Model,
		Attempts:   w.Attempt,
		Deployment: w.Deployment,
		Region:     e.cfg.Region,
		Metadata:   w.Call.Metadata,
		Timings:    messages.Timings{AcceptedAt: w.AcceptedAt, QueuedMS: w.QueuedMS},
	}
}

// bodyJSON is the provider's answer as it came when it is JSON, and
// otherwise a JSON string holding the start of it.
func bodyJSON(b []byte) json.RawMessage {
	if len(b) == 0 {
		return nil
	}
	if json.Valid(b) {
		return b
	}
	if len(b) > nonJSONExcerpt {
		b = b[:nonJSONExcerpt]
	}
	s := string(b)
	if !utf8.ValidString(s) {
		s = string([]rune(s))
	}
	out, _ := json.Marshal(s)
	return out
}

// requestFailure classifies a provider request that ended with err, its
// context having ended with ctxErr (nil while still open). When the
// request's deadline was the call's own (callersDeadline) and it passed,
// the caller's deadline cut it: OutcomeDeadline, which is no failure of
// the provider. When the attempt timeout passed, or another timeout
// struck, the provider did not answer in its time: OutcomeTimeout.
// Anything else is a transport error.
func requestFailure(err, ctxErr error, callersDeadline bool) messages.Outcome {
	switch {
	case errors.Is(ctxErr, context.DeadlineExceeded) && callersDeadline:
		return messages.OutcomeDeadline
	case errors.Is(ctxErr, context.DeadlineExceeded), errors.Is(err, context.DeadlineExceeded):
		return messages.OutcomeTimeout
	}
	return messages.OutcomeTransport
}

func earliest(a, b time.Time) time.Time {
	if a.Before(b) {
		return a
	}
	return b
}

func ms(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }

// wantsStream reports whether a call's body asks for a streamed answer.
func wantsStream(body []byte) bool {
	var b struct {
		Stream bool `json:"stream"`
	}
	return json.Unmarshal(body, &b) == nil && b.Stream
}

// streamedTokens estimates what a stream that stopped early used: the
// prompt, and about a token per chunk sent.
func (e *Executor) streamedTokens(w *messages.Work, chunks int) int64 {
	est, bad := tokens.Of(w.Call.Endpoint, w.Call.Body, 0)
	if bad != nil {
		return -1
	}
	return est.Prompt + int64(chunks)
}
