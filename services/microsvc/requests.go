package microsvc

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/micro"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/sluicehq/sluice/messages"
	"github.com/sluicehq/sluice/services/client"
	"github.com/sluicehq/sluice/services/config"
	"github.com/sluicehq/sluice/services/telemetry"
)

// Endpoint names the request endpoint in `nats micro info`; QueueGroup is
// the queue group every instance serves it in.
const (
	Endpoint   = "call"
	QueueGroup = "sluice-requests"
)

// requestPrefix starts every request subject.
var requestPrefix = strings.TrimSuffix(messages.RequestSubjects, ">")

// Config configures Requests.
type Config struct {
	// Shared is the live configuration: calls.default_timeout and
	// calls.max_timeout bound how long a request waits.
	Shared *config.Live
	// JSDomain is the JetStream domain of the hub, for an instance
	// connected to a leaf node.
	JSDomain string
	// ResultGrace is how long past a call's deadline a request still
	// waits for its result before it answers deadline_exceeded. Default
	// 30s.
	ResultGrace time.Duration
	// MaxInFlight is how many requests one instance awaits at once; more
	// are answered queue_full. Default 10000.
	MaxInFlight int
	// ShutdownGrace is how long requests in flight may still get their
	// result once Run's context ends. Default 10s.
	ShutdownGrace time.Duration
	// Metadata is added to the service's metadata (e.g. id).
	Metadata   map[string]string
	Logger     *slog.Logger
	Registerer prometheus.Registerer
}

// Requests serves sluice.request.<team>.<tier>; see the package doc.
type Requests struct {
	nc      *nats.Conn
	client  *client.Client
	cfg     Config
	log     *slog.Logger
	metrics *telemetry.Requests

	// waitCtx ends the waits of requests in flight (ShutdownGrace after
	// Run's context).
	waitCtx  context.Context
	stopWait context.CancelFunc
	wg       sync.WaitGroup

	inFlight  atomic.Int64
	mu        sync.Mutex
	submitted int
	canceled  int
	noResult  int
	results   map[string]int
}

// New returns the request endpoint on nc; Run serves it.
func New(nc *nats.Conn, cfg Config) (*Requests, error) {
	if cfg.Shared == nil {
		return nil, errors.New("microsvc: Config.Shared is required")
	}
	if cfg.ResultGrace <= 0 {
		cfg.ResultGrace = 30 * time.Second
	}
	if cfg.MaxInFlight <= 0 {
		cfg.MaxInFlight = 10000
	}
	if cfg.ShutdownGrace <= 0 {
		cfg.ShutdownGrace = 10 * time.Second
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	var opts []client.Option
	if cfg.JSDomain != "" {
		opts = append(opts, client.WithDomain(cfg.JSDomain))
	}
	c, err := client.New(nc, opts...)
	if err != nil {
		return nil, fmt.Errorf("microsvc: %w", err)
	}
	waitCtx, stopWait := context.WithCancel(context.Background())
	return &Requests{
		nc: nc, client: c, cfg: cfg,
		log:     cfg.Logger.With("component", "requests"),
		metrics: telemetry.NewRequests(cfg.Registerer),
		waitCtx: waitCtx, stopWait: stopWait,
		results: map[string]int{},
	}, nil
}

// Run registers sluice-requests with its endpoint and serves it until ctx
// ends; then it takes no new request, and lets those in flight get their
// result for up to Config.ShutdownGrace (their calls are not canceled).
func (r *Requests) Run(ctx context.Context) error {
	defer r.stopWait()
	mcfg, err := microConfig(Info{Kind: KindRequests, Metadata: r.cfg.Metadata})
	if err != nil {
		return err
	}
	mcfg.StatsHandler = func(*micro.Endpoint) any { return r.stats() }
	svc, err := micro.AddService(r.nc, mcfg)
	if err != nil {
		return fmt.Errorf("microsvc: register %s: %w", mcfg.Name, err)
	}
	err = svc.AddEndpoint(Endpoint, micro.HandlerFunc(r.handle),
		micro.WithEndpointSubject(messages.RequestSubjects),
		micro.WithEndpointQueueGroup(QueueGroup),
		micro.WithEndpointMetadata(map[string]string{
			"format": "request: a call as on sluice.call.<team>.<tier>; reply: its result as on sluice.result.<team>.<id>",
			"cancel": messages.HeaderCancelAfter + ": <duration> cancels the call when no result came by then",
		}))
	if err != nil {
		_ = svc.Stop()
		return fmt.Errorf("microsvc: endpoint %s: %w", messages.RequestSubjects, err)
	}
	r.log.Info("serving requests", "subject", messages.RequestSubjects)
	<-ctx.Done()
	_ = svc.Stop()
	done := make(chan struct{})
	go func() {
		r.wg.Wait()
		close(done)
	}()
	grace := time.NewTimer(r.cfg.ShutdownGrace)
	defer grace.Stop()
	select {
	case <-done:
	case <-grace.C:
		r.log.Warn("requests still waiting at shutdown get no reply; their calls go on", "in_flight", r.inFlight.Load())
		r.stopWait()
		<-done
	}
	return nil
}

// stats is the endpoint's stats data.
func (r *Requests) stats() any {
	r.mu.Lock()
	defer r.mu.Unlock()
	return map[string]any{
		"in_flight": r.inFlight.Load(),
		"submitted": r.submitted,
		"results":   maps.Clone(r.results),
		"canceled":  r.canceled,
		"no_result": r.noResult,
	}
}

// handle takes one request: it refuses what cannot be submitted at once
// (so that micro counts it as an error), and awaits the rest in a
// goroutine of its own (micro calls handle for one request at a time).
func (r *Requests) handle(req micro.Request) {
	now := time.Now()
	res := &messages.Result{Status: messages.StatusError, Timings: messages.Timings{FinishedAt: now}}
	refuse := func(e *messages.Error) {
		res.Error = e
		r.refuse(req, res)
	}
	if req.Reply() == "" {
		r.log.Debug("a message without a reply subject on the request subject: ignored", "subject", req.Subject())
		return
	}
	team, tier, ok := strings.Cut(strings.TrimPrefix(req.Subject(), requestPrefix), ".")
	if !ok || strings.Contains(tier, ".") {
		refuse(messages.FieldError("subject", "%q is not sluice.request.<team>.<tier>", req.Subject()))
		return
	}
	res.Team, res.Tier = team, messages.Tier(tier)
	if err := messages.CheckCallAddress(team, messages.Tier(tier), ""); err != nil {
		res.Team, res.Tier = "", ""
		refuse(messages.FieldError("subject", "%v", err))
		return
	}
	hdr := req.Headers()
	msgID := hdr.Get(messages.HeaderMsgID)
	call, e := messages.DecodeCall(req.Data())
	switch {
	case messages.ValidToken(call.ID):
		res.ID = call.ID
	case call.ID == "" && messages.ValidToken(msgID):
		res.ID = msgID
	}
	if e != nil {
		refuse(e)
		return
	}
	if call.ID == "" && msgID != "" && !messages.ValidToken(msgID) {
		refuse(messages.FieldError("id", "the %s header %q must be 1 to 64 letters, digits, '-' or '_'", messages.HeaderMsgID, msgID))
		return
	}
	if call.ID == "" {
		call.ID = msgID
	}
	if call.ID == "" {
		call.ID = messages.NewCallID()
	}
	res.ID, res.Model, res.Metadata = call.ID, call.Model, call.Metadata
	var cancelAfter time.Duration
	if v := hdr.Get(messages.HeaderCancelAfter); v != "" {
		d, err := time.ParseDuration(v)
		if err != nil || d <= 0 {
			refuse(messages.FieldError(messages.HeaderCancelAfter, "must be a positive duration such as 5s or 1500ms, not %q", v))
			return
		}
		cancelAfter = d
	}
	cfg := r.cfg.Shared.Load()
	if cfg == nil {
		refuse(messages.Errorf(messages.CodeInternal, "sluice has no configuration yet"))
		return
	}
	if n := r.inFlight.Add(1); n > int64(r.cfg.MaxInFlight) {
		r.inFlight.Add(-1)
		e := messages.Errorf(messages.CodeQueueFull, "this sluice request endpoint awaits %d requests already; try again, or publish on %s", r.cfg.MaxInFlight, messages.CallSubject(team, messages.Tier(tier)))
		e.RetryAfterMS = 1000
		refuse(e)
		return
	}
	r.metrics.InFlight.Inc()
	deadline := call.DeadlineFrom(now, cfg.Calls.DefaultTimeout)
	if most := now.Add(cfg.Calls.MaxTimeout); deadline.After(most) {
		deadline = most
	}
	p := &pending{
		reply: req.Reply(), team: team, tier: messages.Tier(tier), call: &call,
		arrived: now, cancelAfter: cancelAfter, giveUp: deadline.Add(r.cfg.ResultGrace),
	}
	r.wg.Add(1)
	go r.await(p)
}

// pending is a request whose call is submitted and awaited.
type pending struct {
	reply       string
	team        string
	tier        messages.Tier
	call        *messages.CallRequest
	arrived     time.Time
	cancelAfter time.Duration
	giveUp      time.Time
}

// await submits p's call, waits for its result, and replies.
func (r *Requests) await(p *pending) {
	defer r.wg.Done()
	defer r.metrics.InFlight.Dec()
	defer r.inFlight.Add(-1)
	log := r.log.With("team", p.team, "tier", p.tier, "call", p.call.ID)
	r.mu.Lock()
	r.submitted++
	r.mu.Unlock()

	ctx, cancel := context.WithDeadline(r.waitCtx, p.giveUp)
	defer cancel()
	var canceled atomic.Bool
	if p.cancelAfter > 0 {
		t := time.AfterFunc(time.Until(p.arrived.Add(p.cancelAfter)), func() {
			canceled.Store(true)
			r.cancel(p, log)
		})
		defer t.Stop()
	}
	res, err := r.client.Call(ctx, p.team, p.tier, p.call)
	if canceled.Load() {
		r.mu.Lock()
		r.canceled++
		r.mu.Unlock()
	}
	switch {
	case err == nil:
	case r.waitCtx.Err() != nil:
		log.Warn("shutting down: no reply to the request; the call goes on")
		return
	case ctx.Err() != nil:
		r.mu.Lock()
		r.noResult++
		r.mu.Unlock()
		log.Warn("no result by the call's deadline")
		res = r.errorResult(p, messages.Errorf(messages.CodeDeadlineExceeded, "no result came within the call's deadline (and %s)", r.cfg.ResultGrace))
	default:
		// It may have been stored all the same: nobody would wait for it.
		r.cancel(p, log)
		log.Warn("could not submit the call", "err", err)
		res = r.errorResult(p, messages.Errorf(messages.CodeInternal, "sluice could not accept the call: %v", err))
	}
	r.count(res)
	data, err := json.Marshal(res)
	if err != nil {
		log.Error("encode the result", "err", err)
		return
	}
	msg := &nats.Msg{Subject: p.reply, Data: data, Header: replyHeaders(res)}
	if err := r.nc.PublishMsg(msg); err != nil {
		log.Warn("could not reply", "err", err)
	}
}

// cancel cancels p's call.
func (r *Requests) cancel(p *pending, log *slog.Logger) {
	ctx, cancel := context.WithTimeout(r.waitCtx, 5*time.Second)
	defer cancel()
	if err := r.client.Cancel(ctx, p.team, p.call.ID); err != nil {
		log.Warn("could not cancel the call", "err", err)
	}
}

// errorResult is the error Result the endpoint itself answers for p.
func (r *Requests) errorResult(p *pending, e *messages.Error) *messages.Result {
	return &messages.Result{
		ID: p.call.ID, Team: p.team, Tier: p.tier, Model: p.call.Model, Status: messages.StatusError,
		Error: e, Metadata: p.call.Metadata, Timings: messages.Timings{FinishedAt: time.Now()},
	}
}

// refuse answers a request that was not submitted, through micro so that
// it counts the error.
func (r *Requests) refuse(req micro.Request, res *messages.Result) {
	r.count(res)
	data, err := json.Marshal(res)
	if err != nil {
		r.log.Error("encode the result", "err", err)
		return
	}
	h := replyHeaders(res)
	err = req.Error(h.Get(micro.ErrorCodeHeader), h.Get(micro.ErrorHeader), data, micro.WithHeaders(micro.Headers(h)))
	if err != nil {
		r.log.Warn("could not reply", "err", err)
	}
}

// count counts a reply.
func (r *Requests) count(res *messages.Result) {
	outcome := res.Outcome()
	r.metrics.Answered.WithLabelValues(outcome).Inc()
	r.mu.Lock()
	r.results[outcome]++
	r.mu.Unlock()
}

// replyHeaders are the headers of the reply carrying res.
func replyHeaders(res *messages.Result) nats.Header {
	h := nats.Header{}
	if res.ID != "" {
		h.Set(messages.HeaderCallID, res.ID)
	}
	if res.Error != nil {
		msg := res.Error.Message
		if msg == "" {
			msg = string(res.Error.Code)
		}
		h.Set(micro.ErrorHeader, strings.Join(strings.Fields(msg), " "))
		h.Set(micro.ErrorCodeHeader, strconv.Itoa(statusOf(res.Error.Code)))
	}
	return h
}

// statusOf is the HTTP status the gateway answers an error code with.
func statusOf(code messages.Code) int {
	switch code {
	case messages.CodeInvalidRequest:
		return http.StatusBadRequest
	case messages.CodeForbidden:
		return http.StatusForbidden
	case messages.CodeUnknownModel:
		return http.StatusNotFound
	case messages.CodeQueueFull, messages.CodeRateLimited, messages.CodeBudgetExhausted:
		return http.StatusTooManyRequests
	case messages.CodeCanceled:
		return 499
	case messages.CodeProviderError:
		return http.StatusBadGateway
	case messages.CodeDeadlineExceeded:
		return http.StatusGatewayTimeout
	default:
		return http.StatusInternalServerError
	}
}
