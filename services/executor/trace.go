package executor

import (
	"context"
	"encoding/json"
	"log/slog"
	"net/http"

	"github.com/nats-io/nats.go/jetstream"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/trace"

	"github.com/sluicehq/sluice/messages"
	"github.com/sluicehq/sluice/services/tracing"
)

// tracedAttempt runs e.attempt inside the attempt's span: a GenAI client
// span ("chat gpt-4o-mini"), child of the admission whose work this is
// (the trace context of the work's headers). The provider request carries
// this span's traceparent (see traceTransport). It returns the outcome and
// the context of the span, under which the outcome is published.
//
// The span starts when the executor takes the work, so it holds the wait
// for the send time too; the event "sent" marks the request going out.
func (e *Executor) tracedAttempt(ctx context.Context, msg jetstream.Msg, w *messages.Work, log *slog.Logger) (outcome, context.Context) {
	op := tracing.GenAIOperation(w.Call.Endpoint)
	dep, known := e.cfg.Shared.Load().Deployment(w.Deployment)
	name := op
	if known && dep.Model != "" {
		name += " " + dep.Model
	}
	ctx, span := e.tracer.Start(ctx, name, trace.WithSpanKind(trace.SpanKindClient))
	defer span.End()
	if span.IsRecording() {
		// Set only on recorded spans: untraced, attempts allocate nothing
		// for them.
		span.SetAttributes(tracing.CallAttributes(&w.Ticket)...)
		span.SetAttributes(
			tracing.AttrGenAIOperationName.String(op),
			tracing.AttrDeployment.String(w.Deployment),
			tracing.AttrRegion.String(e.cfg.Region),
		)
		if known {
			provider := tracing.GenAIProvider(dep.Provider)
			span.SetAttributes(
				tracing.AttrGenAIProviderName.String(provider),
				tracing.AttrGenAISystem.String(provider),
				tracing.AttrGenAIRequestModel.String(dep.Model))
		}
	}
	o := e.attempt(ctx, msg, w, log)
	if !span.IsRecording() {
		return o, ctx
	}
	if !o.sentAt.IsZero() {
		span.AddEvent("sent", trace.WithTimestamp(o.sentAt))
	}
	if o.class != "" {
		span.SetAttributes(tracing.AttrOutcome.String(string(o.class)))
	}
	if o.status != 0 {
		span.SetAttributes(tracing.AttrHTTPStatusCode.Int(o.status))
	}
	var failed *messages.Error
	switch {
	case o.result != nil:
		failed = o.result.Error
		if u := o.result.Usage; u != nil {
			span.SetAttributes(tracing.AttrGenAIInputTokens.Int64(u.PromptTokens), tracing.AttrGenAIOutputTokens.Int64(u.CompletionTokens))
		}
		if m := responseModel(o.result.Body); m != "" {
			span.SetAttributes(tracing.AttrGenAIResponseModel.String(m))
		}
	case o.retry != nil && !o.retry.Late:
		failed = o.retry.LastError
	}
	if failed != nil {
		span.SetAttributes(tracing.AttrErrorType.String(string(failed.Code)), tracing.AttrErrorCode.String(string(failed.Code)))
		span.SetStatus(codes.Error, failed.Message)
	}
	return o, ctx
}

// tracedFinish publishes the attempt's outcome (e.finish) inside a span of
// its own: sluice.result for a terminal result, sluice.retry for a call
// handed back to admission, whose message carries this span's context so
// that the next admission continues the trace.
func (e *Executor) tracedFinish(ctx context.Context, msg jetstream.Msg, w *messages.Work, o outcome) error {
	name := tracing.SpanResult
	if o.retry != nil {
		name = tracing.SpanRetry
	}
	ctx, span := e.tracer.Start(ctx, name, trace.WithSpanKind(trace.SpanKindProducer))
	defer span.End()
	if span.IsRecording() {
		span.SetAttributes(tracing.AttrCallID.String(w.Call.ID), tracing.AttrAttempt.Int(w.Attempt))
	}
	if o.result != nil && o.result.Error != nil && span.IsRecording() {
		span.SetAttributes(tracing.AttrErrorCode.String(string(o.result.Error.Code)))
		span.SetStatus(codes.Error, o.result.Error.Message)
	}
	err := e.finish(ctx, msg, w, o)
	if err != nil {
		span.RecordError(err)
		span.SetStatus(codes.Error, "publish the outcome: "+err.Error())
	}
	return err
}

// responseModel is the model a provider's answer names (OpenAI's and
// Anthropic's answers both have a top-level "model").
func responseModel(body []byte) string {
	var b struct {
		Model string `json:"model"`
	}
	if len(body) == 0 || body[0] != '{' || json.Unmarshal(body, &b) != nil {
		return ""
	}
	return b.Model
}

// traceTransport sends the trace context of each request's context (the
// attempt's span) to the provider as traceparent and tracestate.
type traceTransport struct{ base http.RoundTripper }

// withTraceContext returns a copy of c whose requests carry their
// context's traceparent; c itself is left alone, since the caller may
// share it.
func withTraceContext(c *http.Client) *http.Client {
	traced := *c
	base := c.Transport
	if base == nil {
		base = http.DefaultTransport
	}
	traced.Transport = traceTransport{base: base}
	return &traced
}

func (t traceTransport) RoundTrip(r *http.Request) (*http.Response, error) {
	if trace.SpanContextFromContext(r.Context()).IsValid() {
		// A RoundTripper must not change the request it was given.
		r = r.Clone(r.Context())
		tracing.InjectHTTP(r.Context(), r.Header)
	}
	return t.base.RoundTrip(r)
}

// CloseIdleConnections lets http.Client.CloseIdleConnections reach the
// transport underneath.
func (t traceTransport) CloseIdleConnections() {
	if c, ok := t.base.(interface{ CloseIdleConnections() }); ok {
		c.CloseIdleConnections()
	}
}
