package gateway

import (
	"net/http"

	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/trace"

	"github.com/sluicehq/sluice/messages"
	"github.com/sluicehq/sluice/services/tracing"
)

// traced gives each request of a route that makes calls a server span,
// continuing the traceparent of the request's headers, or starting a
// trace. submit copies the span's context into the call's NATS headers,
// which carry it on to the dispatcher, the executor and the provider.
func (g *Gateway) traced(route string, h http.Handler) http.Handler {
	tracer := tracing.Tracer(g.cfg.TracerProvider)
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		ctx := tracing.ExtractHTTP(r.Context(), r.Header)
		ctx, span := tracer.Start(ctx, r.Method+" "+route, trace.WithSpanKind(trace.SpanKindServer), trace.WithAttributes(
			tracing.AttrHTTPMethod.String(r.Method),
			tracing.AttrHTTPRoute.String(route),
		))
		defer span.End()
		if !span.IsRecording() {
			h.ServeHTTP(w, r.WithContext(ctx))
			return
		}
		sw := &statusWriter{ResponseWriter: w}
		h.ServeHTTP(sw, r.WithContext(ctx))
		status := sw.status
		if status == 0 {
			status = http.StatusOK
		}
		span.SetAttributes(tracing.AttrHTTPStatusCode.Int(status))
		// As the HTTP conventions say for a server: 5xx is its failure,
		// 4xx the client's (the call's result span says more).
		if status >= 500 {
			span.SetStatus(codes.Error, http.StatusText(status))
		}
	})
}

// traceCall notes the call a traced request became, and puts the trace
// context into the call message's headers.
func traceCall(x *exchange, h map[string][]string) {
	ctx := x.r.Context()
	if span := trace.SpanFromContext(ctx); span.IsRecording() {
		span.SetAttributes(
			tracing.AttrCallID.String(x.call.ID),
			tracing.AttrTeam.String(x.team),
			tracing.AttrTier.String(string(x.tier)),
			tracing.AttrPool.String(x.call.Model),
		)
	}
	tracing.Inject(ctx, h)
}

// traceResult marks the request's span with the call's outcome.
func traceResult(x *exchange, res *messages.Result) {
	span := trace.SpanFromContext(x.r.Context())
	if !span.IsRecording() || res.Error == nil {
		return
	}
	span.SetAttributes(tracing.AttrErrorCode.String(string(res.Error.Code)))
	span.SetStatus(codes.Error, res.Error.Message)
}

// statusWriter remembers the status written, for the span.
type statusWriter struct {
	http.ResponseWriter
	status int
}

func (s *statusWriter) WriteHeader(code int) {
	if s.status == 0 {
		s.status = code
	}
	s.ResponseWriter.WriteHeader(code)
}

func (s *statusWriter) Write(b []byte) (int, error) {
	if s.status == 0 {
		s.status = http.StatusOK
	}
	return s.ResponseWriter.Write(b)
}

// Unwrap lets http.ResponseController reach the connection (flushes,
// write deadlines).
func (s *statusWriter) Unwrap() http.ResponseWriter { return s.ResponseWriter }
