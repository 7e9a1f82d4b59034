package tracing

import (
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"testing"

	"go.opentelemetry.io/otel/trace"
	coltracepb "go.opentelemetry.io/proto/otlp/collector/trace/v1"
	"google.golang.org/protobuf/proto"
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

// The standard environment alone turns tracing on: spans reach the OTLP
// endpoint it names, under the service's default name, or under
// OTEL_SERVICE_NAME.
func TestFromEnvExports(t *testing.T) {
	for _, c := range []struct{ serviceName, want string }{
		{"", ServiceExecutor},
		{"edge-executor", "edge-executor"},
	} {
		got := make(chan string, 16)
		srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			body, _ := io.ReadAll(r.Body)
			var req coltracepb.ExportTraceServiceRequest
			if r.URL.Path != "/v1/traces" || proto.Unmarshal(body, &req) != nil {
				http.Error(w, "bad export", http.StatusBadRequest)
				return
			}
			for _, rs := range req.GetResourceSpans() {
				for _, kv := range rs.GetResource().GetAttributes() {
					if kv.GetKey() == "service.name" {
						got <- kv.GetValue().GetStringValue()
					}
				}
			}
		}))
		t.Setenv("OTEL_EXPORTER_OTLP_ENDPOINT", srv.URL)
		t.Setenv("OTEL_SERVICE_NAME", c.serviceName)
		p, err := FromEnv(context.Background(), ServiceExecutor)
		if err != nil {
			t.Fatal(err)
		}
		_, span := p.Tracer(Scope).Start(context.Background(), "x")
		if !span.IsRecording() {
			t.Fatal("tracing on does not record spans")
		}
		span.End()
		if err := p.Shutdown(context.Background()); err != nil {
			t.Fatal(err)
		}
		srv.Close()
		select {
		case name := <-got:
			if name != c.want {
				t.Errorf("OTEL_SERVICE_NAME=%q: service.name %q, want %q", c.serviceName, name, c.want)
			}
		default:
			t.Errorf("OTEL_SERVICE_NAME=%q: no span reached the endpoint", c.serviceName)
		}
	}
}
