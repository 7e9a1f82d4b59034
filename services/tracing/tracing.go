// Package tracing owns sluice's OpenTelemetry tracing: the TracerProvider
// each service is given, built from the standard OTEL_* environment
// (OTLP over HTTP), and the way W3C trace context travels with a call
// through NATS message headers (messages.TraceCarrier) and HTTP headers.
//
// Tracing is off unless OTEL_EXPORTER_OTLP_ENDPOINT or
// OTEL_EXPORTER_OTLP_TRACES_ENDPOINT is set: services then get a no-op
// TracerProvider and spend nothing on spans. Trace context arriving with
// a call is still passed on, so a caller's trace reaches the provider
// whether sluice records spans or not.
package tracing

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"net/http"
	"os"
	"strings"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/exporters/otlp/otlptrace/otlptracehttp"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/sdk/resource"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/trace"
	"go.opentelemetry.io/otel/trace/noop"

	"github.com/sluicehq/sluice/messages"
)

// Default service names (OTEL_SERVICE_NAME overrides them).
const (
	ServiceGateway    = "sluice-gateway"
	ServiceDispatcher = "sluice-dispatcher"
	ServiceExecutor   = "sluice-executor"
)

// Scope is the instrumentation scope of sluice's spans.
const Scope = "github.com/sluicehq/sluice"

// Provider is a service's TracerProvider and what flushing and stopping
// it takes. The zero of an off Provider is a no-op.
type Provider struct {
	trace.TracerProvider
	sdk *sdktrace.TracerProvider
}

// Enabled reports whether the environment (read by getenv) asks for
// traces: an OTLP endpoint is set, and neither OTEL_SDK_DISABLED=true nor
// OTEL_TRACES_EXPORTER=none says otherwise.
func Enabled(getenv func(string) string) bool {
	if strings.EqualFold(getenv("OTEL_SDK_DISABLED"), "true") || strings.EqualFold(getenv("OTEL_TRACES_EXPORTER"), "none") {
		return false
	}
	return getenv("OTEL_EXPORTER_OTLP_ENDPOINT") != "" || getenv("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT") != ""
}

// FromEnv returns the TracerProvider of service (one of the Service
// names): off (a no-op) unless Enabled(os.Getenv), else exporting over
// OTLP/HTTP as the OTEL_EXPORTER_OTLP_* variables say (endpoint,
// headers, timeout, compression, TLS), sampled as OTEL_TRACES_SAMPLER
// says (default: parent-based, always on).
func FromEnv(ctx context.Context, service string) (*Provider, error) {
	if !Enabled(os.Getenv) {
		return Off(), nil
	}
	// The exporter speaks OTLP/HTTP with protobuf only: refuse another
	// protocol rather than send what a gRPC receiver cannot read.
	if p := cmp.Or(os.Getenv("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL"), os.Getenv("OTEL_EXPORTER_OTLP_PROTOCOL")); p != "" && p != "http/protobuf" {
		return nil, fmt.Errorf("tracing: OTLP protocol %q: sluice exports traces over OTLP/HTTP (http/protobuf) only", p)
	}
	exp, err := otlptracehttp.New(ctx)
	if err != nil {
		return nil, fmt.Errorf("tracing: %w", err)
	}
	return New(ctx, exp, service)
}

// Off is the Provider of a service that does not trace.
func Off() *Provider { return &Provider{TracerProvider: noop.NewTracerProvider()} }

// New returns a Provider that exports the spans of service to exp in
// batches. The resource's service.name is service unless
// OTEL_SERVICE_NAME (or service.name in OTEL_RESOURCE_ATTRIBUTES) says
// otherwise.
func New(ctx context.Context, exp sdktrace.SpanExporter, service string) (*Provider, error) {
	res, err := resource.New(ctx,
		resource.WithTelemetrySDK(),
		resource.WithAttributes(attribute.String("service.name", service)),
		resource.WithFromEnv(), // last, so that the environment wins
	)
	if err != nil && !errors.Is(err, resource.ErrPartialResource) {
		return nil, fmt.Errorf("tracing: resource: %w", err)
	}
	tp := sdktrace.NewTracerProvider(sdktrace.WithBatcher(exp), sdktrace.WithResource(res))
	return &Provider{TracerProvider: tp, sdk: tp}, nil
}

// ForceFlush exports the spans ended so far.
func (p *Provider) ForceFlush(ctx context.Context) error {
	if p == nil || p.sdk == nil {
		return nil
	}
	return p.sdk.ForceFlush(ctx)
}

// Shutdown exports what is left and stops the provider.
func (p *Provider) Shutdown(ctx context.Context) error {
	if p == nil || p.sdk == nil {
		return nil
	}
	return p.sdk.Shutdown(ctx)
}

// Tracer is tp's tracer for sluice's spans; a nil tp gives a no-op one,
// so that services configured without tracing cost nothing.
func Tracer(tp trace.TracerProvider) trace.Tracer {
	if tp == nil {
		tp = noop.NewTracerProvider()
	}
	return tp.Tracer(Scope)
}

// propagator reads and writes W3C traceparent and tracestate. It is a
// stateless value, so every service shares it; sluice never consults the
// global propagator, which an embedding program may have set otherwise.
var propagator = propagation.TraceContext{}

// Inject writes the trace context of ctx into the headers of a NATS
// message (a nats.Header); nothing when ctx carries none.
func Inject(ctx context.Context, h map[string][]string) {
	if h == nil || !trace.SpanContextFromContext(ctx).IsValid() {
		return
	}
	propagator.Inject(ctx, messages.TraceCarrier(h))
}

// Extract returns ctx with the remote trace context a NATS message's
// headers carry, if any.
func Extract(ctx context.Context, h map[string][]string) context.Context {
	if len(h) == 0 {
		return ctx
	}
	return propagator.Extract(ctx, messages.TraceCarrier(h))
}

// ExtractHTTP returns ctx with the remote trace context of an HTTP
// request's headers, if any.
func ExtractHTTP(ctx context.Context, h http.Header) context.Context {
	return propagator.Extract(ctx, propagation.HeaderCarrier(h))
}

// InjectHTTP writes the trace context of ctx into an HTTP request's
// headers; nothing when ctx carries none.
func InjectHTTP(ctx context.Context, h http.Header) {
	if !trace.SpanContextFromContext(ctx).IsValid() {
		return
	}
	propagator.Inject(ctx, propagation.HeaderCarrier(h))
}

// TraceID is the trace id of the span of ctx when that span is recorded,
// empty otherwise (tracing off, or the trace not sampled).
func TraceID(ctx context.Context) string {
	span := trace.SpanFromContext(ctx)
	if !span.IsRecording() {
		return ""
	}
	return span.SpanContext().TraceID().String()
}
