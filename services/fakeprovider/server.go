package fakeprovider

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"strconv"
	"sync"
	"sync/atomic"
	"time"
)

// Server is the fake provider. It is an http.Handler; Start serves it on
// an address of its own. All its methods are safe for concurrent use.
type Server struct {
	cfg    Config // defaulted and validated; never changed after New
	log    *slog.Logger
	limits *limiter
	stats  *recorder
	calls  *callCounter
	dice   *dice

	behaviorMu sync.Mutex // serializes setters; readers use the pointer
	behavior   atomic.Pointer[behavior]

	seq atomic.Uint64 // request and completion ids

	storeOnce sync.Once
	responses *responseStore // see stored

	closeOnce sync.Once
	closing   chan struct{} // closed by Close: releases hung calls

	mu      sync.Mutex // guards the fields below
	stop    context.CancelFunc
	stopped chan struct{}
}

// New returns a Server for cfg, with defaults applied to its zero fields.
// The config is copied: changing cfg afterwards has no effect.
func New(cfg Config) (*Server, error) {
	cfg = cfg.withDefaults()
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	s := &Server{
		cfg:     cfg,
		log:     cfg.Logger,
		limits:  newLimiter(cfg),
		stats:   newRecorder(countedSpans(cfg)),
		calls:   newCallCounter(MaxCallIDs, MaxCallIDLen),
		dice:    newDice(cfg.Seed),
		closing: make(chan struct{}),
	}
	b := cfg.behavior()
	s.behavior.Store(&b)
	return s, nil
}

// ServeHTTP routes the endpoints of each dialect (OpenAI, Azure OpenAI,
// Anthropic) and the fake's admin endpoints.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	type route struct {
		method  string
		handler func(http.ResponseWriter, *http.Request)
	}
	// Every answer carries an id, as OpenAI's do, for matching logs.
	w.Header().Set("x-request-id", s.newID("req_"))
	var rt route
	switch r.URL.Path {
	case "/v1/chat/completions":
		rt = route{http.MethodPost, s.handleChat}
	case "/v1/embeddings":
		rt = route{http.MethodPost, s.handleEmbeddings}
	case "/v1/completions":
		rt = route{http.MethodPost, s.handleCompletions}
	case "/v1/messages/count_tokens":
		rt = route{http.MethodPost, s.handleCountTokens}
	case "/v1/responses":
		rt = route{http.MethodPost, s.handleResponses}
	case azureResponses:
		rt = route{http.MethodPost, func(w http.ResponseWriter, r *http.Request) {
			s.serveResponses(w, r, azureDialect{apiVersion: "v1", operation: "Responses_Create"})
		}}
	case "/v1/models":
		rt = route{http.MethodGet, s.handleModels}
	case "/fake/stats":
		rt = route{http.MethodGet, s.handleStats}
	case "/fake/reset":
		rt = route{http.MethodPost, s.handleReset}
	case "/fake/calls":
		rt = route{http.MethodGet, s.handleCalls}
	case "/v1/messages":
		rt = route{http.MethodPost, s.handleMessages}
	default:
		if id := responseIDFromPath(r.URL.Path, "/v1/responses/"); id != "" {
			s.serveStored(w, r, openAIDialect{}, id)
			return
		}
		if id := responseIDFromPath(r.URL.Path, azureResponses+"/"); id != "" {
			s.serveStored(w, r, azureDialect{apiVersion: "v1", operation: "Responses_Get"}, id)
			return
		}
		dep, op, ok := azurePath(r.URL.Path)
		if !ok {
			s.notFound(w, r)
			return
		}
		rt = route{http.MethodPost, func(w http.ResponseWriter, r *http.Request) { s.handleAzure(w, r, dep, op) }}
	}
	if r.Method != rt.method {
		w.Header().Set("Allow", rt.method)
		writeJSON(w, http.StatusMethodNotAllowed, (&apiError{
			message: fmt.Sprintf("Method %s not allowed on %s; use %s.", r.Method, r.URL.Path, rt.method),
			typ:     typeInvalidRequest,
		}).body())
		return
	}
	rt.handler(w, r)
}

// serveStored routes GET and DELETE of a stored response.
func (s *Server) serveStored(w http.ResponseWriter, r *http.Request, d dialect, id string) {
	if r.Method != http.MethodGet && r.Method != http.MethodDelete {
		w.Header().Set("Allow", "GET, DELETE")
		writeJSON(w, http.StatusMethodNotAllowed, (&apiError{
			message: fmt.Sprintf("Method %s not allowed on %s; use GET or DELETE.", r.Method, r.URL.Path),
			typ:     typeInvalidRequest,
		}).body())
		return
	}
	s.handleStoredResponse(w, r, d, id)
}

func (s *Server) notFound(w http.ResponseWriter, r *http.Request) {
	writeJSON(w, http.StatusNotFound, (&apiError{
		message: fmt.Sprintf("Unknown request URL: %s %s. Please check the URL for typos.", r.Method, r.URL.Path),
		typ:     typeInvalidRequest,
		code:    codeUnknownURL,
	}).body())
}

// handleModels lists Config.Models. Like OpenAI it needs a valid key, and
// it is not metered.
func (s *Server) handleModels(w http.ResponseWriter, r *http.Request) {
	if _, ok := s.limits.lookup(bearer(r)); !ok {
		writeJSON(w, errInvalidKey.status, errInvalidKey.body())
		return
	}
	list := modelList{Object: "list", Data: []model{}}
	for _, m := range s.cfg.Models {
		list.Data = append(list.Data, model{ID: m, Object: "model", OwnedBy: "sluice-fakeprovider"})
	}
	writeJSON(w, http.StatusOK, list)
}

func (s *Server) handleStats(w http.ResponseWriter, _ *http.Request) {
	writeJSON(w, http.StatusOK, s.Stats())
}

func (s *Server) handleCalls(w http.ResponseWriter, _ *http.Request) {
	writeJSON(w, http.StatusOK, s.CallCounts())
}

func (s *Server) handleReset(w http.ResponseWriter, _ *http.Request) {
	s.Reset()
	w.WriteHeader(http.StatusNoContent)
}

// Stats returns a snapshot of the counters.
func (s *Server) Stats() Stats { return s.stats.snapshot() }

// RequestsByCallID returns a copy of how many requests carried each
// X-Client-Request-Id value (see CallCounts).
func (s *Server) RequestsByCallID() map[string]int64 { return s.calls.snapshot().Requests }

// CallCounts returns a copy of the requests counted by X-Client-Request-Id,
// with those beyond the bounds. GET /fake/calls serves it as JSON.
func (s *Server) CallCounts() CallCounts { return s.calls.snapshot() }

// MaxRequestsIn is the most requests admitted to key ("" for all keys
// together) in any sliding window (t-span, t] ending at an admission, since
// New or the last Reset, whatever the enforcement model. It answers for
// the spans counted from New on: 1s, 60s, Config.CountSpans and the spans
// of the windows in the Config (not those a later SetKey brings), and
// returns an error for any other. Memory: each key, and the total, keep
// the admissions within each counted span.
func (s *Server) MaxRequestsIn(key string, span time.Duration) (int64, error) {
	return s.stats.maxRequestsIn(key, span)
}

// Reset zeroes the counters (the per-call-id ones too) and refills every
// bucket and empties every window, as if the server had just started.
// Calls in flight are still counted when they end, and their settlement no
// longer touches the new buckets or windows.
func (s *Server) Reset() {
	s.limits.reset()
	s.stats.reset()
	s.calls.reset()
}

// SetKey adds a key or changes its limits, enforcement or OtherUse, at
// once and while calls are in flight. Current bucket levels carry over,
// clamped to the new capacities: lowering a limit takes effect at once,
// raising one does not hand out a fresh burst. Windows keep counting the
// calls already admitted (those of the longest window the key had), and
// calls in flight settle into them. A key that changes model starts the
// new one afresh: empty windows, or full buckets; calls in flight then
// settle into nothing.
func (s *Server) SetKey(key string, kc KeyConfig) error {
	if key == "" {
		return errors.New("fakeprovider: empty key")
	}
	if err := s.cfg.validateKey(kc); err != nil {
		return fmt.Errorf("fakeprovider: key %s: %w", redact(key), err)
	}
	s.limits.set(key, kc.clone())
	return nil
}

// RemoveKey revokes a key: its next calls get 401 (or, with AcceptAnyKey,
// fresh DefaultKey buckets).
func (s *Server) RemoveKey(key string) { s.limits.remove(key) }

// SetLatency changes the fixed latency and the jitter of later calls.
func (s *Server) SetLatency(latency, jitter time.Duration) error {
	return s.update(func(b *behavior) { b.latency, b.latencyJitter = latency, jitter })
}

// SetErrorRate changes the fraction (0..1) of admitted calls answered with
// an injected server error.
func (s *Server) SetErrorRate(rate float64) error {
	return s.update(func(b *behavior) { b.errorRate = rate })
}

// SetErrorStatus changes the status of injected errors: 500..599, or 0 to
// alternate 500 and 503.
func (s *Server) SetErrorStatus(status int) error {
	return s.update(func(b *behavior) { b.errorStatus = status })
}

// SetTimeoutRate changes the fraction (0..1) of admitted calls that hang
// until their client gives up.
func (s *Server) SetTimeoutRate(rate float64) error {
	return s.update(func(b *behavior) { b.timeoutRate = rate })
}

// SetOverloadRate changes the fraction (0..1) of admitted calls answered
// as overloaded (529 for Anthropic, 503 otherwise).
func (s *Server) SetOverloadRate(rate float64) error {
	return s.update(func(b *behavior) { b.overloadRate = rate })
}

// SetChunkDelay changes the pause between streamed chunks.
func (s *Server) SetChunkDelay(d time.Duration) error {
	return s.update(func(b *behavior) { b.chunkDelay = d })
}

func (s *Server) update(f func(*behavior)) error {
	s.behaviorMu.Lock()
	defer s.behaviorMu.Unlock()
	b := *s.behavior.Load()
	f(&b)
	if err := b.validate(); err != nil {
		return fmt.Errorf("fakeprovider: %w", err)
	}
	s.behavior.Store(&b)
	return nil
}

// Start listens on addr (":0" picks a free port) and serves in the
// background until Close. It returns the server's root URL, such as
// "http://127.0.0.1:41234"; OpenAI and Anthropic clients take
// baseURL+"/v1", Azure clients baseURL itself.
func (s *Server) Start(addr string) (baseURL string, err error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.stop != nil {
		return "", errors.New("fakeprovider: already started")
	}
	select {
	case <-s.closing:
		return "", errors.New("fakeprovider: closed")
	default:
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return "", fmt.Errorf("fakeprovider: %w", err)
	}
	ctx, stop := context.WithCancel(context.Background())
	s.stop, s.stopped = stop, make(chan struct{})
	go func() {
		defer close(s.stopped)
		if err := s.Serve(ctx, ln); err != nil {
			s.log.Error("fakeprovider: serve", "err", err)
		}
	}()
	return "http://" + hostPort(ln.Addr()), nil
}

// hostPort turns a listener's address into one a client can dial: an
// unspecified host (":0" listens on all of them) becomes loopback.
func hostPort(a net.Addr) string {
	tcp, ok := a.(*net.TCPAddr)
	if !ok {
		return a.String()
	}
	host := tcp.IP.String()
	if tcp.IP == nil || tcp.IP.IsUnspecified() {
		host = "127.0.0.1"
	}
	return net.JoinHostPort(host, strconv.Itoa(tcp.Port))
}

// shutdownGrace bounds how long Serve waits for calls in flight (slow
// streams, hung calls) once its context is done.
const shutdownGrace = 5 * time.Second

// Serve serves on ln until ctx is done, then shuts down: it waits up to a
// few seconds for calls in flight and closes what remains. It returns nil
// after a shutdown, or the error that stopped serving. It suits a service
// runner such as oklog/run; Start is the shortcut for tests.
func (s *Server) Serve(ctx context.Context, ln net.Listener) error {
	var h http.Handler = s
	if s.cfg.Wrap != nil {
		h = s.cfg.Wrap(s)
	}
	srv := &http.Server{
		Handler:           h,
		ReadHeaderTimeout: 10 * time.Second,
		ErrorLog:          slog.NewLogLogger(s.log.Handler(), slog.LevelDebug),
	}
	served := make(chan struct{})   // Serve has returned
	shutdown := make(chan struct{}) // the shutdown, if any, is over
	go func() {
		defer close(shutdown)
		select {
		case <-ctx.Done():
		case <-served:
			return
		}
		sctx, cancel := context.WithTimeout(context.Background(), shutdownGrace)
		defer cancel()
		if srv.Shutdown(sctx) != nil {
			_ = srv.Close()
		}
	}()
	err := srv.Serve(ln)
	close(served)
	<-shutdown
	if !errors.Is(err, http.ErrServerClosed) {
		return fmt.Errorf("fakeprovider: %w", err)
	}
	return nil
}

// Close releases calls hung by TimeoutRate (they are answered 503) and,
// if Start was used, stops serving. Close is idempotent. With
// httptest.NewServer(fake), call fake.Close before the test server's
// Close, which waits for every call in flight.
func (s *Server) Close() error {
	s.closeOnce.Do(func() { close(s.closing) })
	s.mu.Lock()
	stop, stopped := s.stop, s.stopped
	s.mu.Unlock()
	if stop != nil {
		stop()
		<-stopped
	}
	return nil
}

func (s *Server) newID(prefix string) string {
	return fmt.Sprintf("%sfake%016x", prefix, s.seq.Add(1))
}
