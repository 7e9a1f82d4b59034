package test

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"go.opentelemetry.io/otel/exporters/otlp/otlptrace/otlptracehttp"
	"go.opentelemetry.io/otel/trace"
	coltracepb "go.opentelemetry.io/proto/otlp/collector/trace/v1"
	commonpb "go.opentelemetry.io/proto/otlp/common/v1"
	tracepb "go.opentelemetry.io/proto/otlp/trace/v1"
	"google.golang.org/protobuf/proto"

	"github.com/sluicehq/sluice/messages"
	"github.com/sluicehq/sluice/services/devstack"
	"github.com/sluicehq/sluice/services/fakeprovider"
	"github.com/sluicehq/sluice/services/gateway"
	"github.com/sluicehq/sluice/services/results"
	"github.com/sluicehq/sluice/services/streams"
	"github.com/sluicehq/sluice/services/tracing"
)

// span is one span an OTLP receiver got, flattened.
type span struct {
	service, name          string
	traceID, id, parent    string
	kind                   tracepb.Span_SpanKind
	status                 tracepb.Status_StatusCode
	attrs                  map[string]string
	start, end             time.Time
	resourceServiceNameSet bool
}

// otlpReceiver is an OTLP/HTTP trace receiver: it decodes every
// ExportTraceServiceRequest the exporters post and keeps the spans.
type otlpReceiver struct {
	URL string
	mu  sync.Mutex
	got []span
}

func startOTLPReceiver(t *testing.T) *otlpReceiver {
	t.Helper()
	rcv := &otlpReceiver{}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/v1/traces" || r.Header.Get("Content-Type") != "application/x-protobuf" {
			t.Errorf("OTLP receiver: unexpected %s %s (%s)", r.Method, r.URL.Path, r.Header.Get("Content-Type"))
			http.Error(w, "no", http.StatusNotFound)
			return
		}
		body, err := io.ReadAll(r.Body)
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		var req coltracepb.ExportTraceServiceRequest
		if err := proto.Unmarshal(body, &req); err != nil {
			t.Errorf("OTLP receiver: undecodable export: %v", err)
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		rcv.add(&req)
		out, _ := proto.Marshal(&coltracepb.ExportTraceServiceResponse{})
		w.Header().Set("Content-Type", "application/x-protobuf")
		_, _ = w.Write(out)
	}))
	t.Cleanup(srv.Close)
	rcv.URL = srv.URL
	return rcv
}

func (rcv *otlpReceiver) add(req *coltracepb.ExportTraceServiceRequest) {
	rcv.mu.Lock()
	defer rcv.mu.Unlock()
	for _, rs := range req.GetResourceSpans() {
		res := attrMap(rs.GetResource().GetAttributes())
		service, named := res["service.name"]
		for _, ss := range rs.GetScopeSpans() {
			for _, s := range ss.GetSpans() {
				rcv.got = append(rcv.got, span{
					service: service, resourceServiceNameSet: named,
					name:    s.GetName(),
					traceID: hex.EncodeToString(s.GetTraceId()),
					id:      hex.EncodeToString(s.GetSpanId()),
					parent:  hex.EncodeToString(s.GetParentSpanId()),
					kind:    s.GetKind(),
					status:  s.GetStatus().GetCode(),
					attrs:   attrMap(s.GetAttributes()),
					start:   time.Unix(0, int64(s.GetStartTimeUnixNano())),
					end:     time.Unix(0, int64(s.GetEndTimeUnixNano())),
				})
			}
		}
	}
}

// trace returns the spans of traceID received so far.
func (rcv *otlpReceiver) trace(traceID string) []span {
	rcv.mu.Lock()
	defer rcv.mu.Unlock()
	var out []span
	for _, s := range rcv.got {
		if s.traceID == traceID {
			out = append(out, s)
		}
	}
	return out
}

func attrMap(kvs []*commonpb.KeyValue) map[string]string {
	m := map[string]string{}
	for _, kv := range kvs {
		v := kv.GetValue()
		switch v.GetValue().(type) {
		case *commonpb.AnyValue_IntValue:
			m[kv.GetKey()] = fmt.Sprint(v.GetIntValue())
		case *commonpb.AnyValue_DoubleValue:
			m[kv.GetKey()] = fmt.Sprint(v.GetDoubleValue())
		case *commonpb.AnyValue_BoolValue:
			m[kv.GetKey()] = fmt.Sprint(v.GetBoolValue())
		default:
			m[kv.GetKey()] = v.GetStringValue()
		}
	}
	return m
}

// tracedStack is a stack whose services export their spans, through the
// real OTLP/HTTP exporter, to an in-process receiver; and whose fake
// provider records the traceparent of every request it gets.
type tracedStack struct {
	*devstack.Stack
	rcv       *otlpReceiver
	providers map[string]*tracing.Provider

	mu           sync.Mutex
	traceparents []string // of the requests the provider got
	// failOnce is a trace id whose first provider request is answered
	// 503, as an overloaded provider would.
	failOnce string
}

func startTracedStack(t *testing.T) *tracedStack {
	t.Helper()
	return startStackTracing(t, true)
}

// startStackTracing is startTracedStack, with the services' tracing on or
// off (the provider still records traceparents).
func startStackTracing(t *testing.T, on bool) *tracedStack {
	t.Helper()
	ts := &tracedStack{rcv: startOTLPReceiver(t), providers: map[string]*tracing.Provider{}}
	ctx := context.Background()
	for _, service := range []string{tracing.ServiceGateway, tracing.ServiceDispatcher, tracing.ServiceExecutor} {
		exp, err := otlptracehttp.New(ctx, otlptracehttp.WithEndpointURL(ts.rcv.URL+"/v1/traces"))
		if err != nil {
			t.Fatal(err)
		}
		p, err := tracing.New(ctx, exp, service)
		if err != nil {
			t.Fatal(err)
		}
		ts.providers[service] = p
	}
	s, err := devstack.Start(devstack.Options{
		NATSPort: -1, StoreDir: t.TempDir(),
		Fake: fakeprovider.Config{Wrap: func(h http.Handler) http.Handler {
			return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				fail := false
				if tp := r.Header.Get("traceparent"); tp != "" {
					ts.mu.Lock()
					ts.traceparents = append(ts.traceparents, tp)
					if ts.failOnce != "" && strings.Contains(tp, "-"+ts.failOnce+"-") {
						fail, ts.failOnce = true, ""
					}
					ts.mu.Unlock()
				}
				if fail {
					w.Header().Set("Content-Type", "application/json")
					w.WriteHeader(http.StatusServiceUnavailable)
					_, _ = io.WriteString(w, `{"error":{"message":"overloaded","type":"server_error"}}`)
					return
				}
				h.ServeHTTP(w, r)
			})
		}},
		TracerProvider: func(service string) trace.TracerProvider {
			if !on {
				return nil
			}
			return ts.providers[service]
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	ts.Stack = s
	t.Cleanup(func() {
		s.Close()
		for _, p := range ts.providers {
			_ = p.Shutdown(context.Background())
		}
	})
	startDispatcher(t, s, "d1", nil)
	startExecutors(t, s)
	return ts
}

// spans waits until the trace holds a span of every name in want (each
// service's spans are flushed while it waits), and returns the trace.
func (ts *tracedStack) spans(t *testing.T, traceID string, want ...string) []span {
	t.Helper()
	var got []span
	waitUntil(t, fmt.Sprintf("spans %v of trace %s", want, traceID), 20*time.Second, func() bool {
		for _, p := range ts.providers {
			_ = p.ForceFlush(context.Background())
		}
		got = ts.rcv.trace(traceID)
		for _, name := range want {
			if findSpan(got, name) == nil {
				return false
			}
		}
		return true
	})
	return got
}

// providerTraceparents are the traceparents the provider got, of traceID
// (all of them for "").
func (ts *tracedStack) providerTraceparents(traceID string) []string {
	ts.mu.Lock()
	defer ts.mu.Unlock()
	var out []string
	for _, tp := range ts.traceparents {
		if traceID == "" || strings.Contains(tp, "-"+traceID+"-") {
			out = append(out, tp)
		}
	}
	return out
}

func findSpan(spans []span, name string) *span {
	for i := range spans {
		if spans[i].name == name {
			return &spans[i]
		}
	}
	return nil
}

// newTraceparent is a sampled W3C traceparent of a new trace, with its
// trace and parent span ids.
func newTraceparent(t *testing.T) (header, traceID, spanID string) {
	t.Helper()
	b := make([]byte, 24)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	traceID, spanID = hex.EncodeToString(b[:16]), hex.EncodeToString(b[16:])
	return "00-" + traceID + "-" + spanID + "-01", traceID, spanID
}

// checkCallTrace checks the spans of one call that succeeded: they form one trace, rooted at root (the incoming
// span id), across dispatcher and executor, whose attempt span carries
// the GenAI attributes, and the provider got that span's traceparent.
func checkCallTrace(t *testing.T, ts *tracedStack, spans []span, traceID, root string, res *messages.Result) {
	t.Helper()
	ids := map[string]bool{}
	for _, s := range spans {
		ids[s.id] = true
		if !s.resourceServiceNameSet {
			t.Errorf("span %s has no service.name", s.name)
		}
	}
	for _, s := range spans {
		if s.parent != root && !ids[s.parent] {
			t.Errorf("span %s (%s) has parent %q, neither the incoming span %s nor a span of the trace", s.name, s.service, s.parent, root)
		}
		if s.end.Before(s.start) {
			t.Errorf("span %s ends before it starts", s.name)
		}
	}
	// Work an executor took late goes back through admission, so a call
	// may have several admissions and attempts: follow the links back
	// from its result.
	byID := func(id, what string) *span {
		for i := range spans {
			if spans[i].id == id {
				return &spans[i]
			}
		}
		t.Fatalf("no span %s (the %s) in the trace; have %v", id, what, spanNames(spans))
		return nil
	}
	check := func(s *span, name, service string) {
		if s.name != name || s.service != service {
			t.Errorf("span %s is %s/%s, want %s/%s", s.id, s.service, s.name, service, name)
		}
		if s.attrs["sluice.call.id"] != res.ID {
			t.Errorf("span %q: sluice.call.id = %q, want %q", s.name, s.attrs["sluice.call.id"], res.ID)
		}
	}
	result := findSpan(spans, tracing.SpanResult)
	if result == nil {
		t.Fatalf("no span %q in the trace; have %v", tracing.SpanResult, spanNames(spans))
	}
	check(result, tracing.SpanResult, tracing.ServiceExecutor)
	attempt := byID(result.parent, "result's parent")
	check(attempt, "chat gpt-4o-mini", tracing.ServiceExecutor)
	admit := byID(attempt.parent, "attempt's parent")
	check(admit, tracing.SpanAdmit, tracing.ServiceDispatcher)
	var queue *span
	for i := range spans {
		if q := &spans[i]; q.name == tracing.SpanQueue && q.attrs["sluice.admission"] == admit.attrs["sluice.admission"] &&
			q.attrs["sluice.attempt"] == admit.attrs["sluice.attempt"] {
			queue = q
		}
	}
	if queue == nil {
		t.Fatalf("no queue span of the admission %s", admit.id)
	}
	check(queue, tracing.SpanQueue, tracing.ServiceDispatcher)
	if queue.parent != admit.parent && queue.id != admit.parent {
		t.Errorf("the admission's parent %s is neither the queue span's parent %s nor the queue span", admit.parent, queue.parent)
	}
	if admit.attrs["sluice.deployment"] != res.Deployment {
		t.Errorf("admission span: sluice.deployment = %q, the result's deployment is %q", admit.attrs["sluice.deployment"], res.Deployment)
	}
	if attempt.kind != tracepb.Span_SPAN_KIND_CLIENT {
		t.Errorf("attempt span kind %v, want client", attempt.kind)
	}
	for k, v := range map[string]string{
		"gen_ai.operation.name":      "chat",
		"gen_ai.provider.name":       "openai",
		"gen_ai.system":              "openai",
		"gen_ai.request.model":       "gpt-4o-mini",
		"gen_ai.response.model":      "gpt-4o-mini",
		"gen_ai.usage.input_tokens":  fmt.Sprint(res.Usage.PromptTokens),
		"gen_ai.usage.output_tokens": fmt.Sprint(res.Usage.CompletionTokens),
		"http.response.status_code":  "200",
		"sluice.deployment":          res.Deployment,
	} {
		if got := attempt.attrs[k]; got != v {
			t.Errorf("attempt span: %s = %q, want %q", k, got, v)
		}
	}
	tps := ts.providerTraceparents(traceID)
	if len(tps) != res.Attempts {
		t.Fatalf("the provider got %d requests with a traceparent of trace %s, want one per attempt, %d (all it got: %v)", len(tps), traceID, res.Attempts, ts.providerTraceparents(""))
	}
	if want := "00-" + traceID + "-" + attempt.id + "-01"; tps[len(tps)-1] != want {
		t.Errorf("the provider's last request had traceparent %s, want the last attempt span's %s", tps[len(tps)-1], want)
	}
}

// countSpans counts the spans named name whose parent is parent.
func countSpans(spans []span, name, parent string) int {
	n := 0
	for _, s := range spans {
		if s.name == name && s.parent == parent {
			n++
		}
	}
	return n
}

func spanNames(spans []span) []string {
	var out []string
	for _, s := range spans {
		out = append(out, s.service+"/"+s.name)
	}
	return out
}

// TestTraceGateway: a call through the gateway with a traceparent is one
// trace across gateway, dispatcher and executor, reaching the provider,
// and its result names the trace.
func TestTraceGateway(t *testing.T) {
	ts := startTracedStack(t)
	url := startGateway(t, ts.Stack, nil)
	header, traceID, parent := newTraceparent(t)

	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	resp := gatewayPost(ctx, t, url, "/v1/chat/completions",
		`{"model":"gpt-4o-mini","messages":[{"role":"user","content":"hello"}],"max_tokens":20}`,
		"traceparent", header, "tracestate", "vendor=abc")
	body := readAll(t, resp)
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("status %d: %s", resp.StatusCode, body)
	}
	callID := resp.Header.Get(gateway.HeaderCallID)
	js, err := streams.JetStream(connect(t, ts.Stack), "")
	if err != nil {
		t.Fatal(err)
	}
	res, err := results.Fetch(ctx, js, "demo", callID)
	if err != nil {
		t.Fatal(err)
	}
	if res.TraceID != traceID || resp.Header.Get(gateway.HeaderTraceID) != traceID {
		t.Errorf("the result's trace_id is %q and the answer's %s %q, want the incoming traceparent's %s", res.TraceID, gateway.HeaderTraceID, resp.Header.Get(gateway.HeaderTraceID), traceID)
	}

	spans := ts.spans(t, traceID, "POST /v1/chat/completions", tracing.SpanQueue, tracing.SpanAdmit, "chat gpt-4o-mini", tracing.SpanResult)
	gw := findSpan(spans, "POST /v1/chat/completions")
	if gw.service != tracing.ServiceGateway || gw.parent != parent || gw.kind != tracepb.Span_SPAN_KIND_SERVER {
		t.Errorf("gateway span: service %q, parent %s, kind %v; want %s, the incoming %s, server", gw.service, gw.parent, gw.kind, tracing.ServiceGateway, parent)
	}
	if gw.attrs["http.response.status_code"] != "200" {
		t.Errorf("gateway span: http.response.status_code = %q", gw.attrs["http.response.status_code"])
	}
	if n := countSpans(spans, tracing.SpanQueue, gw.id); n != 1 {
		t.Errorf("%d queue spans are children of the gateway's span %s, want 1 (the first admission's)", n, gw.id)
	}
	// The gateway's span is the root within sluice; the incoming span is
	// the client's.
	checkCallTrace(t, ts, spans, traceID, parent, res)
}

// TestTraceNATS: a call published over NATS with a traceparent header
// continues that trace, and one without starts a trace at the
// dispatcher; either way the result names its trace.
func TestTraceNATS(t *testing.T) {
	ts := startTracedStack(t)
	nc := connect(t, ts.Stack)
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	log := watchResults(t, nc, "demo")
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()

	header, traceID, parent := newTraceparent(t)
	msg := &nats.Msg{Subject: messages.CallSubject("demo", messages.TierStandard), Header: nats.Header{},
		Data: []byte(chatCall("traced-1", "gpt-4o-mini", 20, ""))}
	msg.Header.Set("Nats-Msg-Id", "traced-1")
	// Set, not Header.Set: a client in another language sends the
	// lower-case W3C name as it is.
	msg.Header["traceparent"] = []string{header}
	if _, err := js.PublishMsg(ctx, msg); err != nil {
		t.Fatal(err)
	}
	if err := publishCall(ctx, js, "demo", "standard", "untraced-1", chatCall("untraced-1", "gpt-4o-mini", 20, "")); err != nil {
		t.Fatal(err)
	}
	// A call the dispatcher refuses is answered in its trace too.
	badHeader, badTrace, badParent := newTraceparent(t)
	bad := &nats.Msg{Subject: messages.CallSubject("demo", messages.TierStandard), Header: nats.Header{},
		Data: []byte(chatCall("refused-1", "no-such-pool", 20, ""))}
	bad.Header.Set("Nats-Msg-Id", "refused-1")
	bad.Header["traceparent"] = []string{badHeader}
	if _, err := js.PublishMsg(ctx, bad); err != nil {
		t.Fatal(err)
	}
	log.waitFor(t, []string{"traced-1", "untraced-1", "refused-1"}, 20*time.Second)

	res := log.one(t, "traced-1")
	if res.Error != nil {
		t.Fatalf("call failed: %v", res.Error)
	}
	if res.TraceID != traceID {
		t.Errorf("the result's trace_id is %q, want the incoming traceparent's %s", res.TraceID, traceID)
	}
	spans := ts.spans(t, traceID, tracing.SpanQueue, tracing.SpanAdmit, "chat gpt-4o-mini", tracing.SpanResult)
	if n := countSpans(spans, tracing.SpanQueue, parent); n != 1 {
		t.Errorf("%d queue spans are children of the incoming span %s, want 1 (the first admission's)", n, parent)
	}
	checkCallTrace(t, ts, spans, traceID, parent, &res)

	fresh := log.one(t, "untraced-1")
	if len(fresh.TraceID) != 32 || fresh.TraceID == traceID {
		t.Fatalf("a call without a traceparent has trace_id %q, want a trace of its own", fresh.TraceID)
	}
	spans = ts.spans(t, fresh.TraceID, tracing.SpanQueue, tracing.SpanAdmit, "chat gpt-4o-mini", tracing.SpanResult)
	if n := countSpans(spans, tracing.SpanQueue, ""); n != 1 {
		t.Errorf("%d queue spans of a call without a traceparent have no parent, want 1: the trace starts at its first admission", n)
	}
	checkCallTrace(t, ts, spans, fresh.TraceID, "", &fresh)

	refused := log.one(t, "refused-1")
	if refused.Error == nil || refused.Error.Code != messages.CodeUnknownModel {
		t.Fatalf("the call of an unknown pool got %+v, want unknown_model", refused.Error)
	}
	if refused.TraceID != badTrace {
		t.Errorf("the refused call's trace_id is %q, want its traceparent's %s", refused.TraceID, badTrace)
	}
	r := findSpan(ts.spans(t, badTrace, tracing.SpanResult), tracing.SpanResult)
	if r.service != tracing.ServiceDispatcher || r.parent != badParent || r.status != tracepb.Status_STATUS_CODE_ERROR ||
		r.attrs["sluice.error.code"] != string(messages.CodeUnknownModel) {
		t.Errorf("the refusal's span: service %s, parent %s, status %v, attributes %v; want %s, the incoming %s, an error, unknown_model",
			r.service, r.parent, r.status, r.attrs, tracing.ServiceDispatcher, badParent)
	}
}

// TestTraceRetry: a retried call stays one trace: the failed attempt is an
// error span, its retry is its child, and the next admission the retry's.
func TestTraceRetry(t *testing.T) {
	ts := startTracedStack(t)
	nc := connect(t, ts.Stack)
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	log := watchResults(t, nc, "demo")
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	header, traceID, parent := newTraceparent(t)
	ts.mu.Lock()
	ts.failOnce = traceID
	ts.mu.Unlock()
	msg := &nats.Msg{Subject: messages.CallSubject("demo", messages.TierStandard), Header: nats.Header{},
		Data: []byte(chatCall("retried-1", "gpt-4o-mini", 20, ""))}
	msg.Header.Set("Nats-Msg-Id", "retried-1")
	msg.Header["traceparent"] = []string{header}
	if _, err := js.PublishMsg(ctx, msg); err != nil {
		t.Fatal(err)
	}
	log.waitFor(t, []string{"retried-1"}, 25*time.Second)
	res := log.one(t, "retried-1")
	if res.Error != nil || res.Attempts != 2 {
		t.Fatalf("result: error %v after %d attempts; want a success at the second", res.Error, res.Attempts)
	}
	if res.TraceID != traceID {
		t.Errorf("the result's trace_id is %q, want %s", res.TraceID, traceID)
	}
	spans := ts.spans(t, traceID, tracing.SpanRetry, tracing.SpanResult)
	checkCallTrace(t, ts, spans, traceID, parent, &res)

	// (Work taken late is handed back as a retry too, from an attempt
	// span that sent nothing: find the one the provider failed.)
	var failed, retry *span
	for i := range spans {
		if s := &spans[i]; s.name == "chat gpt-4o-mini" && s.attrs["http.response.status_code"] == "503" {
			failed = s
		}
	}
	if failed == nil {
		t.Fatalf("no attempt span with status 503; have %v", spanNames(spans))
	}
	if failed.status != tracepb.Status_STATUS_CODE_ERROR || failed.attrs["sluice.attempt"] != "1" || failed.attrs["error.type"] != string(messages.CodeProviderError) {
		t.Errorf("the failed attempt's span: status %v, attributes %v; want an error, attempt 1, error.type provider_error", failed.status, failed.attrs)
	}
	for i := range spans {
		if s := &spans[i]; s.name == tracing.SpanRetry && s.parent == failed.id {
			retry = s
		}
	}
	if retry == nil {
		t.Fatalf("no retry span is a child of the failed attempt %s", failed.id)
	}
	if n := countSpans(spans, tracing.SpanAdmit, retry.id); n != 1 {
		t.Errorf("%d admissions are children of the retry span, want 1", n)
	}
	if first := ts.providerTraceparents(traceID)[0]; first != "00-"+traceID+"-"+failed.id+"-01" {
		t.Errorf("the failed request had traceparent %s, want the failed attempt span's", first)
	}
}

// TestTraceOff: with tracing off, no span is exported and results carry
// no trace_id, but a caller's traceparent still reaches the provider.
func TestTraceOff(t *testing.T) {
	ts := startStackTracing(t, false)
	url := startGateway(t, ts.Stack, nil)
	header, traceID, parent := newTraceparent(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	resp := gatewayPost(ctx, t, url, "/v1/chat/completions",
		`{"model":"gpt-4o-mini","messages":[{"role":"user","content":"hello"}],"max_tokens":20}`, "traceparent", header)
	if body := readAll(t, resp); resp.StatusCode != http.StatusOK {
		t.Fatalf("status %d: %s", resp.StatusCode, body)
	}
	js, err := streams.JetStream(connect(t, ts.Stack), "")
	if err != nil {
		t.Fatal(err)
	}
	res, err := results.Fetch(ctx, js, "demo", resp.Header.Get(gateway.HeaderCallID))
	if err != nil {
		t.Fatal(err)
	}
	if res.TraceID != "" {
		t.Errorf("tracing off, the result has trace_id %q", res.TraceID)
	}
	// Untraced, sluice makes no span of its own: the provider's parent is
	// the caller's span.
	if tps := ts.providerTraceparents(traceID); len(tps) != 1 || tps[0] != header {
		t.Errorf("the provider got traceparents %v of the trace, want the caller's %s (parent %s)", tps, header, parent)
	}
	for _, p := range ts.providers {
		_ = p.ForceFlush(ctx)
	}
	if n := len(ts.rcv.trace(traceID)); n != 0 {
		t.Errorf("tracing off, %d spans were exported", n)
	}
}
