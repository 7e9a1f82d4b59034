package tracing

import (
	"context"
	"net/http"
	"testing"

	"go.opentelemetry.io/otel/trace"
)

func TestEnabled(t *testing.T) {
	for _, c := range []struct {
		env  map[string]string
		want bool
	}{
		{map[string]string{}, false},
		{map[string]string{"OTEL_SERVICE_NAME": "x"}, false},
		{map[string]string{"OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4318"}, true},
		{map[string]string{"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://c:4318/v1/traces"}, true},
		{map[string]string{"OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4318", "OTEL_SDK_DISABLED": "true"}, false},
		{map[string]string{"OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4318", "OTEL_TRACES_EXPORTER": "none"}, false},
	} {
		if got := Enabled(func(k string) string { return c.env[k] }); got != c.want {
			t.Errorf("Enabled(%v) = %v, want %v", c.env, got, c.want)
		}
	}
}

func TestFromEnvOff(t *testing.T) {
	t.Setenv("OTEL_EXPORTER_OTLP_ENDPOINT", "")
	t.Setenv("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "")
	p, err := FromEnv(context.Background(), ServiceGateway)
	if err != nil {
		t.Fatal(err)
	}
	_, span := p.Tracer(Scope).Start(context.Background(), "x")
	if span.IsRecording() {
		t.Error("tracing off records spans")
	}
	if err := p.Shutdown(context.Background()); err != nil {
		t.Error(err)
	}
}

func TestFromEnvRefusesGRPC(t *testing.T) {
	t.Setenv("OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:1")
	t.Setenv("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc")
	if _, err := FromEnv(context.Background(), ServiceGateway); err == nil {
		t.Error("FromEnv took protocol grpc, which its exporter does not speak")
	}
}

// The context read from a call's headers is the one written into the
// work's, and reaches an HTTP request unchanged.
func TestPropagation(t *testing.T) {
	const tp = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
	in := map[string][]string{"traceparent": {tp}, "tracestate": {"k=v"}}
	ctx := Extract(context.Background(), in)
	sc := trace.SpanContextFromContext(ctx)
	if !sc.IsValid() || sc.TraceID().String() != "0af7651916cd43dd8448eb211c80319c" || !sc.IsRemote() {
		t.Fatalf("extracted %v", sc)
	}
	out := map[string][]string{}
	Inject(ctx, out)
	if out["traceparent"][0] != tp || out["tracestate"][0] != "k=v" {
		t.Errorf("injected %v", out)
	}
	h := http.Header{}
	InjectHTTP(ctx, h)
	if h.Get("traceparent") != tp {
		t.Errorf("HTTP headers %v", h)
	}
	none := map[string][]string{}
	Inject(context.Background(), none)
	if len(none) != 0 {
		t.Errorf("a context without a trace injected %v", none)
	}
	if id := TraceID(ctx); id != "" {
		t.Errorf("TraceID of a remote, unrecorded span context = %q, want empty", id)
	}
}
