// Package gateway is sluice's HTTP front door: an OpenAI-compatible API
// (and, on /v1/messages, an Anthropic-compatible one) that lets existing
// applications use sluice by changing one base URL. Each request becomes a
// call over NATS, published and awaited like any client's (see package
// messages); sluice does the limiting, routing, queueing and retries behind
// it.
//
// # Routes
//
//	POST /v1/chat/completions        OpenAI chat completions; "stream": true relays server-sent events
//	POST /v1/completions             OpenAI legacy completions; "stream": true relays server-sent events
//	POST /v1/embeddings              OpenAI embeddings
//	POST /v1/responses               OpenAI Responses API; "stream": true relays its typed events;
//	                                 previous_response_id goes to the deployment that stored it
//	GET, DELETE /v1/responses/{id}   a stored response, at the deployment that stored it
//	POST /v1/messages                Anthropic Messages, to pools served by anthropic deployments
//	POST /v1/messages/count_tokens   Anthropic token counting, answered by the provider
//	GET  /v1/models                  the pools the caller's team may use, as OpenAI's model list,
//	                                 or Anthropic's to a client that speaks Anthropic
//	GET  /v1/models/{model}          one of them
//	GET  /healthz               alive
//	GET  /readyz                NATS connected and a configuration loaded
//
// # Identity
//
// "Authorization: Bearer <token>" (or "x-api-key: <token>" on /v1/messages,
// /v1/messages/count_tokens and /v1/models) names the team: teams list the SHA-256 hashes of their
// tokens in the configuration (teams.<team>.tokens). The tier is the
// X-Sluice-Tier header, or the team's default tier. The call's deadline is
// X-Sluice-Timeout (a Go duration such as "30s", or seconds), else the
// OpenAI SDKs' X-Stainless-Timeout (seconds), else the request context's
// deadline, else Config.DefaultTimeout or the configuration's
// calls.default_timeout.
//
// # Answers
//
// A provider's answer, success or error, comes back with its status and
// body unchanged. sluice's own errors come back in the client's dialect:
// OpenAI's {"error":{"message","type","param","code"}}, or Anthropic's
// {"type":"error","error":{"type","message"}} on /v1/messages and every
// path under it, and on /v1/models to a client that speaks Anthropic (an
// anthropic-version or x-api-key header). Every answer
// to a call carries x-sluice-call-id, and once the call has a result
// x-sluice-deployment, x-sluice-region, x-sluice-attempts and
// x-sluice-queued-ms.
//
// # Streams
//
// A streamed call's events arrive on sluice.stream.<team>.<id>, numbered
// by Sluice-Seq, and are written to the client one by one, each followed
// by a blank line and flushed. A gap in the numbering, a client too slow
// to keep up (Config.StreamBuffer events behind, or one write taking more
// than Config.WriteTimeout), or the call failing mid-stream ends the
// stream early: the gateway cancels the call (sluice.cancel.<team>.<id>),
// and writes an error event in the client's dialect where it still can.
// A client that goes away cancels its call too.
package gateway

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
	"go.opentelemetry.io/otel/trace"

	"github.com/sluicehq/sluice/messages"
	"github.com/sluicehq/sluice/services/config"
	"github.com/sluicehq/sluice/services/streams"
	"github.com/sluicehq/sluice/services/telemetry"
)

// Config configures a Gateway.
type Config struct {
	// Addr is where Listen (or Run) listens. Default localhost:8080.
	Addr string
	// Shared is the live configuration: teams, tokens, pools, limits.
	// Required.
	Shared *config.Live
	Logger *slog.Logger
	// Registerer receives the gateway's metrics. Default: none.
	Registerer prometheus.Registerer
	// JSDomain is the JetStream domain of the hub, when the gateway is
	// connected to a leaf node with a JetStream of its own; empty
	// otherwise.
	JSDomain string

	// ReadHeaderTimeout bounds reading a request's headers. Default 10s.
	ReadHeaderTimeout time.Duration
	// ReadTimeout bounds reading a whole request, body included. Default
	// 60s. It does not bound the wait for the answer.
	ReadTimeout time.Duration
	// WriteTimeout bounds each write to a client: an answer, or one
	// chunk of a stream. It is set per write (a call may wait in sluice's
	// queue far longer than any server-wide write timeout could allow),
	// so a stream may last as long as its call's deadline while a client
	// that stops reading is found out within WriteTimeout. Default 30s.
	WriteTimeout time.Duration
	// IdleTimeout bounds how long a keep-alive connection waits for its
	// next request. Default 120s.
	IdleTimeout time.Duration
	// MaxHeaderBytes bounds a request's headers. Default 64 KiB.
	MaxHeaderBytes int
	// ShutdownGrace is how long Run lets in-flight calls finish once its
	// context ends; calls still open then are canceled. Default 30s.
	ShutdownGrace time.Duration

	// DefaultTimeout is the deadline of a call whose request sets none.
	// Default 0: the configuration's calls.default_timeout.
	DefaultTimeout time.Duration
	// ResultGrace is how long past a call's deadline the gateway still
	// waits for its result (sluice answers deadline_exceeded at the
	// deadline; this covers the trip back) before it answers 504 itself.
	// Default 5s.
	ResultGrace time.Duration
	// StreamBuffer bounds the events of one stream waiting to be written
	// to a slow client; one more ends the stream. Default 1024.
	StreamBuffer int
	// TracerProvider records a span per call request (see trace.go).
	// Default: none (a no-op); a request's traceparent is passed on to
	// the call anyway.
	TracerProvider trace.TracerProvider
}

func (c *Config) defaults() error {
	if c.Shared == nil {
		return errors.New("gateway: shared configuration is required")
	}
	if c.Addr == "" {
		c.Addr = "localhost:8080"
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	setDefault(&c.ReadHeaderTimeout, 10*time.Second)
	setDefault(&c.ReadTimeout, 60*time.Second)
	setDefault(&c.WriteTimeout, 30*time.Second)
	setDefault(&c.IdleTimeout, 120*time.Second)
	setDefault(&c.ShutdownGrace, 30*time.Second)
	setDefault(&c.ResultGrace, 5*time.Second)
	setDefault(&c.MaxHeaderBytes, 64<<10)
	setDefault(&c.StreamBuffer, 1024)
	if c.DefaultTimeout < 0 {
		return fmt.Errorf("gateway: DefaultTimeout %v is negative", c.DefaultTimeout)
	}
	return nil
}

func setDefault[T time.Duration | int](v *T, def T) {
	if *v <= 0 {
		*v = def
	}
}

// Gateway serves the HTTP API. It is safe for concurrent use.
type Gateway struct {
	cfg     Config
	nc      *nats.Conn
	js      jetstream.JetStream
	log     *slog.Logger
	metrics *telemetry.Gateway
	handler http.Handler
	// active counts requests being served, so that Run can wait for
	// their cancellations to go out before it returns.
	active sync.WaitGroup

	// pins: where each stored response relayed lives (see responses.go).
	pins *pins

	mu sync.Mutex
	ln net.Listener
}

// New returns a gateway that calls sluice over nc. Run serves it; Handler
// is its HTTP handler alone.
func New(nc *nats.Conn, cfg Config) (*Gateway, error) {
	if err := cfg.defaults(); err != nil {
		return nil, err
	}
	js, err := streams.JetStream(nc, cfg.JSDomain)
	if err != nil {
		return nil, fmt.Errorf("gateway: %w", err)
	}
	g := &Gateway{
		cfg:     cfg,
		nc:      nc,
		js:      js,
		log:     cfg.Logger.With("service", "gateway"),
		metrics: telemetry.NewGateway(cfg.Registerer),
		pins:    newPins(js),
	}
	g.handler = g.routes()
	return g, nil
}

// Handler is the gateway's HTTP handler: every route, with metrics. Run
// serves it with the configured timeouts; tests and embedders may serve
// it themselves.
func (g *Gateway) Handler() http.Handler { return g.handler }

// Listen binds Config.Addr now, so that a caller learns the address (a
// port of 0 picks a free one) and a taken port fails before Run. Run
// listens itself when Listen was not called.
func (g *Gateway) Listen() (net.Addr, error) {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.ln != nil {
		return g.ln.Addr(), nil
	}
	ln, err := net.Listen("tcp", g.cfg.Addr)
	if err != nil {
		return nil, fmt.Errorf("gateway: listen: %w", err)
	}
	g.ln = ln
	return ln.Addr(), nil
}

// Run serves HTTP until ctx ends, then shuts down gracefully: it stops
// accepting connections, lets in-flight calls (streams included) finish
// for up to ShutdownGrace, then closes the connections of the rest, whose
// calls are canceled. It does not close the NATS connection.
func (g *Gateway) Run(ctx context.Context) error {
	if _, err := g.Listen(); err != nil {
		return err
	}
	g.mu.Lock()
	ln := g.ln
	g.mu.Unlock()
	srv := &http.Server{
		Handler:           g.handler,
		ReadHeaderTimeout: g.cfg.ReadHeaderTimeout,
		ReadTimeout:       g.cfg.ReadTimeout,
		IdleTimeout:       g.cfg.IdleTimeout,
		MaxHeaderBytes:    g.cfg.MaxHeaderBytes,
		ErrorLog:          slog.NewLogLogger(g.log.Handler(), slog.LevelDebug),
	}
	served := make(chan error, 1)
	go func() { served <- srv.Serve(ln) }()
	g.log.Info("gateway serving", "url", "http://"+ln.Addr().String())
	select {
	case err := <-served:
		return fmt.Errorf("gateway: %w", err)
	case <-ctx.Done():
	}
	g.log.Info("gateway shutting down: finishing in-flight calls", "grace", g.cfg.ShutdownGrace)
	sctx, cancel := context.WithTimeout(context.Background(), g.cfg.ShutdownGrace)
	defer cancel()
	if err := srv.Shutdown(sctx); err != nil {
		g.log.Warn("calls still open after the shutdown grace: closing their connections and canceling them", "grace", g.cfg.ShutdownGrace)
		_ = srv.Close()
	}
	<-served
	// Closing connections cancels the requests' contexts; wait (briefly)
	// for their handlers to publish the cancellations.
	done := make(chan struct{})
	go func() { g.active.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		g.log.Warn("handlers still running after shutdown")
	}
	g.log.Info("gateway stopped")
	return nil
}

// routes builds the handler.
func (g *Gateway) routes() http.Handler {
	mux := http.NewServeMux()
	for _, rt := range callRoutes {
		mux.Handle(rt.path, g.traced(rt.path, g.instrument(rt.path, g.serveCall(rt))))
	}
	// Anthropic's routes answer in its dialect, unknown ones included.
	mux.Handle("/v1/messages/", g.instrument("other", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		writeError(w, anthropic, &apiError{Status: http.StatusNotFound, Code: "unknown_url",
			Message: fmt.Sprintf("sluice's gateway has no route %s %s; it serves /v1/messages and /v1/messages/count_tokens", r.Method, r.URL.Path)})
	})))
	mux.Handle("/v1/responses/{response_id}", g.traced("/v1/responses/{response_id}", g.instrument("/v1/responses/{response_id}", http.HandlerFunc(g.serveStored))))
	mux.Handle("/v1/models", g.instrument("/v1/models", http.HandlerFunc(g.serveModels)))
	mux.Handle("/v1/models/{model}", g.instrument("/v1/models/{model}", http.HandlerFunc(g.serveModel)))
	mux.Handle("/healthz", g.instrument("/healthz", http.HandlerFunc(g.serveHealth)))
	mux.Handle("/readyz", g.instrument("/readyz", http.HandlerFunc(g.serveReady)))
	mux.Handle("/", g.instrument("other", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		writeError(w, openAI, &apiError{Status: http.StatusNotFound, Code: "unknown_url",
			Message: fmt.Sprintf("sluice's gateway has no route %s %s; it serves /v1/chat/completions, /v1/completions, /v1/embeddings, /v1/responses, /v1/messages, /v1/messages/count_tokens and /v1/models", r.Method, r.URL.Path)})
	})))
	return mux
}

// serveHealth answers that the process is alive.
func (g *Gateway) serveHealth(w http.ResponseWriter, r *http.Request) {
	if !allowMethod(w, r, openAI, http.MethodGet) {
		return
	}
	writeJSON(w, http.StatusOK, map[string]string{"status": "ok"})
}

// serveReady answers whether calls can be served: NATS connected and a
// configuration loaded.
func (g *Gateway) serveReady(w http.ResponseWriter, r *http.Request) {
	if !allowMethod(w, r, openAI, http.MethodGet) {
		return
	}
	nats := "connected"
	if !g.nc.IsConnected() {
		nats = g.nc.Status().String()
	}
	cfg := "loaded"
	if g.cfg.Shared.Load() == nil {
		cfg = "none"
	}
	status, code := "ok", http.StatusOK
	if nats != "connected" || cfg != "loaded" {
		status, code = "unavailable", http.StatusServiceUnavailable
	}
	writeJSON(w, code, map[string]string{"status": status, "nats": nats, "config": cfg})
}

// cancel tells sluice that nobody waits for call id of team any more. It
// is best effort: core NATS, no answer.
func (g *Gateway) cancel(team, id string) {
	if err := g.nc.Publish(messages.CancelSubject(team, id), nil); err != nil {
		g.log.Warn("could not publish a cancellation", "team", team, "call", id, "err", err)
	}
}
