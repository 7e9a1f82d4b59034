package dispatcher

import (
	"context"
	"time"

	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/trace"

	"github.com/sluicehq/sluice/messages"
	"github.com/sluicehq/sluice/services/config"
	"github.com/sluicehq/sluice/services/tracing"
)

// traceAdmission records, once a waiting call is admitted, its wait in the
// queue (sluice.queue, from acceptance to now) and its admission
// (sluice.admit: the deployment chosen), both children of the trace
// context its message came with: a client's or the gateway's traceparent
// for a call, the executor's for a retry. A call that came without one
// starts a trace here: its queue span is the root, and the admission its
// child. It returns the admission's context, which the work's headers
// carry to the executor, and the function that ends the admission span
// once JetStream stored the work (err nil) or did not.
//
// The queue span is made after the fact, with its start time given: a
// waiting call costs no span while it waits, and one that never gets
// admitted (answered by the deadline, a dispatcher that stopped) leaves
// none.
func (d *Dispatcher) traceAdmission(w *waiting, dep *config.Deployment, sendAt, now time.Time) (context.Context, func(error)) {
	t := &w.ticket
	ctx := tracing.Extract(context.Background(), w.msg.Headers())
	// A first attempt waited from its acceptance by JetStream; a retry
	// from when it came back (its backoff lies before).
	since := w.since
	if t.Attempt == 1 && t.Admission == 0 && !t.AcceptedAt.IsZero() && t.AcceptedAt.Before(since) {
		since = t.AcceptedAt
	}
	// Attributes are set only on recorded spans: untraced, admission
	// allocates nothing for them.
	qctx, queued := d.tracer.Start(ctx, tracing.SpanQueue, trace.WithTimestamp(since))
	if queued.IsRecording() {
		queued.SetAttributes(tracing.CallAttributes(t)...)
	}
	queued.End(trace.WithTimestamp(now))
	if !trace.SpanContextFromContext(ctx).IsValid() {
		ctx = qctx
	}
	ctx, admit := d.tracer.Start(ctx, tracing.SpanAdmit, trace.WithTimestamp(now))
	if admit.IsRecording() {
		admit.SetAttributes(tracing.CallAttributes(t)...)
		admit.SetAttributes(
			tracing.AttrDeployment.String(dep.ID),
			tracing.AttrRegion.String(dep.Region),
			tracing.AttrGenAIProviderName.String(tracing.GenAIProvider(dep.Provider)),
			tracing.AttrGenAIRequestModel.String(dep.Model),
			tracing.AttrReservedTokens.Int64(int64(w.need.Tokens)),
			tracing.AttrSendDelayMS.Float64(ms(sendAt.Sub(now))),
		)
	}
	return ctx, func(err error) {
		if err != nil {
			admit.RecordError(err)
			admit.SetStatus(codes.Error, "the work was not stored: "+err.Error())
		}
		admit.End()
	}
}

// traceResult starts the span of an error result the dispatcher answers
// a call with (bad input, deadline passed while waiting, work no executor
// took, ...), in the trace the headers of the call's message (or work)
// carry, or a new one. The result publish under its context carries its
// trace id.
func (d *Dispatcher) traceResult(ctx context.Context, h map[string][]string, t *messages.Ticket, e *messages.Error) (context.Context, trace.Span) {
	ctx = tracing.Extract(ctx, h)
	ctx, span := d.tracer.Start(ctx, tracing.SpanResult, trace.WithSpanKind(trace.SpanKindProducer))
	if !span.IsRecording() {
		return ctx, span
	}
	span.SetAttributes(tracing.CallAttributes(t)...)
	if e != nil {
		span.SetAttributes(tracing.AttrErrorCode.String(string(e.Code)))
		span.SetStatus(codes.Error, e.Message)
	}
	return ctx, span
}
