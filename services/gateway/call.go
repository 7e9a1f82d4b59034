package gateway

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/sluicehq/sluice/messages"
	"github.com/sluicehq/sluice/services/config"
	"github.com/sluicehq/sluice/services/providers"
	"github.com/sluicehq/sluice/services/results"
	"github.com/sluicehq/sluice/services/tokens"
)

// route is one of the routes that make calls.
type route struct {
	path     string
	endpoint messages.Endpoint
	dialect  dialect
	// apiKey: the route also takes the token as x-api-key (Anthropic's
	// SDKs send it so).
	apiKey bool
}

var callRoutes = []*route{
	{path: "/v1/chat/completions", endpoint: messages.EndpointChatCompletions, dialect: openAI},
	{path: "/v1/embeddings", endpoint: messages.EndpointEmbeddings, dialect: openAI},
	{path: "/v1/messages", endpoint: messages.EndpointMessages, dialect: anthropic, apiKey: true},
	{path: "/v1/completions", endpoint: messages.EndpointCompletions, dialect: openAI},
	{path: "/v1/messages/count_tokens", endpoint: messages.EndpointCountTokens, dialect: anthropic, apiKey: true},
	{path: "/v1/responses", endpoint: messages.EndpointResponses, dialect: openAI},
}

const (
	// publishTimeout bounds waiting for JetStream to accept a call.
	publishTimeout = 10 * time.Second
	// refetchEvery is how often a waiting call checks whether the NATS
	// connection was re-established meanwhile, and if so looks for its
	// result in the results stream (it may have gone by while the
	// connection was down).
	refetchEvery = 5 * time.Second
)

// exchange is one call through the gateway: the HTTP request, and the
// call it became.
type exchange struct {
	w      http.ResponseWriter
	r      *http.Request
	rt     *route
	team   string
	tier   messages.Tier
	call   *messages.CallRequest
	stream bool
	// giveUp is when the gateway stops waiting for the result: the
	// call's deadline plus Config.ResultGrace.
	giveUp time.Time
	log    *slog.Logger

	cancelOnce sync.Once
	cancelCall func()
	reconnects uint64
	// responseID is the id of the response a streamed Responses call
	// made, as its first event said.
	responseID string
}

// cancel tells sluice, once, that nobody waits for the call any more.
func (x *exchange) cancel() { x.cancelOnce.Do(x.cancelCall) }

// serveCall serves a route that makes calls: it checks who calls and what,
// publishes the call, and relays its result (or its stream).
func (g *Gateway) serveCall(rt *route) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if !allowMethod(w, r, rt.dialect, http.MethodPost) {
			return
		}
		now := time.Now()
		cfg := g.cfg.Shared.Load()
		if cfg == nil {
			writeError(w, rt.dialect, &apiError{Status: http.StatusServiceUnavailable, Code: string(messages.CodeInternal), Message: "sluice has no configuration yet"})
			return
		}
		c, e := identify(cfg, r, rt.apiKey)
		if e != nil {
			writeError(w, rt.dialect, e)
			return
		}
		tier, e := tierOf(c, r)
		if e != nil {
			writeError(w, rt.dialect, e)
			return
		}
		timeout, e := g.timeoutOf(cfg, r, now)
		if e != nil {
			writeError(w, rt.dialect, e)
			return
		}
		body, e := readBody(w, r, cfg.Calls.MaxBodyBytes)
		if e != nil {
			writeError(w, rt.dialect, e)
			return
		}
		model, est, e := check(cfg, c, rt, body)
		if e != nil {
			writeError(w, rt.dialect, e)
			return
		}
		if pool, ok := cfg.Pool(model); ok && rt.endpoint == messages.EndpointCountTokens && pool.EstimatesTokenCounts() {
			answerTokenEstimate(w, rt.dialect, body)
			return
		}
		call := &messages.CallRequest{
			ID:        messages.NewCallID(),
			Model:     model,
			Endpoint:  rt.endpoint,
			Body:      body,
			TimeoutMS: max(1, timeout.Milliseconds()),
		}
		if rt.endpoint == messages.EndpointResponses {
			if e := g.pinPrevious(r.Context(), c.team, model, call); e != nil {
				writeError(w, rt.dialect, e)
				return
			}
		}
		data, err := encodeCall(call)
		if err != nil {
			// The body was checked to be JSON above.
			writeError(w, rt.dialect, &apiError{Status: http.StatusBadRequest, Code: string(messages.CodeInvalidRequest), Message: "malformed JSON: " + err.Error()})
			return
		}
		if e := overPayload(len(body), len(data), g.nc.MaxPayload(), cfg.Calls.MaxBodyBytes); e != nil {
			writeError(w, rt.dialect, e)
			return
		}
		x := &exchange{
			w: w, r: r, rt: rt, team: c.team, tier: tier, call: call, stream: est.Stream,
			giveUp: now.Add(timeout + g.cfg.ResultGrace),
			log:    g.log.With("team", c.team, "tier", tier, "model", model, "call", call.ID, "route", rt.path),
		}
		x.cancelCall = func() { g.cancel(x.team, x.call.ID) }
		w.Header().Set(HeaderCallID, call.ID)
		g.submit(x, data)
	})
}

// readBody reads the request body, up to limit bytes. A body over the
// limit is not read further: the answer closes the connection (else
// net/http would try to read the rest, and a client still sending it
// would never get its answer).
func readBody(w http.ResponseWriter, r *http.Request, limit int) ([]byte, *apiError) {
	if r.ContentLength > int64(limit) {
		w.Header().Set("Connection", "close")
		return nil, tooLarge(r.ContentLength, int64(limit))
	}
	data, err := io.ReadAll(http.MaxBytesReader(w, r.Body, int64(limit)))
	var tooBig *http.MaxBytesError
	if errors.As(err, &tooBig) {
		w.Header().Set("Connection", "close")
		return nil, tooLarge(-1, int64(limit))
	}
	if err != nil {
		return nil, &apiError{Status: http.StatusBadRequest, Code: string(messages.CodeInvalidRequest), Message: "could not read the request body: " + err.Error()}
	}
	return data, nil
}

// tooLarge is the answer to a request body of size bytes (-1: unknown,
// more than limit) over calls.max_body_bytes.
func tooLarge(size, limit int64) *apiError {
	is := "is over that"
	if size >= 0 {
		is = fmt.Sprintf("is %d bytes", size)
	}
	return &apiError{Status: http.StatusRequestEntityTooLarge, Code: string(messages.CodeInvalidRequest),
		Message: fmt.Sprintf("the request body may be at most %d bytes (sluice's calls.max_body_bytes); this one %s", limit, is)}
}

// overPayload is the answer to a request body of body bytes that became
// a call of call bytes, when the call is over the NATS server's
// max_payload: then max_payload, less the call's other fields, is the
// binding limit on the body, below calls.max_body_bytes (a server set up
// with less room than the README asks for). nil when the call fits.
func overPayload(body, call int, maxPayload int64, maxBody int) *apiError {
	if int64(call) <= maxPayload {
		return nil
	}
	may := max(0, maxPayload-int64(call-body))
	return &apiError{Status: http.StatusRequestEntityTooLarge, Code: string(messages.CodeInvalidRequest),
		Message: fmt.Sprintf("the request body may be at most %d bytes here: NATS carries calls of at most %d bytes (its max_payload), less %d for the rest of the call, "+
			"which is less than sluice's calls.max_body_bytes of %d; this one is %d bytes", may, maxPayload, call-body, maxBody, body)}
}

// check validates the body before anything reaches NATS: JSON, model,
// pool, the team's right to it, the route, and the fields sluice reserves
// tokens by (max_tokens, n, best_of, messages, input, prompt,
// instructions, max_output_tokens). It returns
// the pool and the token estimate.
func check(cfg *config.Config, c caller, rt *route, body []byte) (string, tokens.Estimate, *apiError) {
	bad := func(param, format string, args ...any) (string, tokens.Estimate, *apiError) {
		return "", tokens.Estimate{}, &apiError{Status: http.StatusBadRequest, Code: string(messages.CodeInvalidRequest), Param: param, Message: fmt.Sprintf(format, args...)}
	}
	trimmed := bytes.TrimSpace(body)
	if len(trimmed) == 0 || trimmed[0] != '{' {
		return bad("", "the request body must be a JSON object")
	}
	var head struct {
		Model json.RawMessage `json:"model"`
	}
	if err := json.Unmarshal(trimmed, &head); err != nil {
		return bad("", "malformed JSON: %v", err)
	}
	if name := twice(trimmed); name != "" {
		return bad(name, "%s appears twice in the request body", name)
	}
	var model string
	if len(head.Model) == 0 || string(head.Model) == "null" {
		return bad("model", "model is required")
	}
	if err := json.Unmarshal(head.Model, &model); err != nil {
		return bad("model", "model must be a string")
	}
	if model == "" {
		return bad("model", "model is required")
	}
	if len(model) > messages.MaxModelLen {
		return bad("model", "model is longer than %d characters", messages.MaxModelLen)
	}
	pool, ok := cfg.Pool(model)
	if !ok {
		return "", tokens.Estimate{}, &apiError{Status: http.StatusNotFound, Code: "model_not_found", Param: "model",
			Message: fmt.Sprintf("the model %q does not exist: no sluice pool of that name", model)}
	}
	if !c.cfg.AllowsPool(model) {
		return "", tokens.Estimate{}, &apiError{Status: http.StatusForbidden, Code: string(messages.CodeForbidden), Param: "model",
			Message: fmt.Sprintf("team %s may not use the model %q", c.team, model)}
	}
	if !serves(pool, rt.endpoint) {
		return "", tokens.Estimate{}, &apiError{Status: http.StatusNotFound, Code: "model_not_found", Param: "model",
			Message: fmt.Sprintf("the model %q is not served on %s: none of its deployments speaks that API", model, rt.path)}
	}
	est, invalid := tokens.Of(rt.endpoint, trimmed, pool.DefaultMaxTokens)
	if invalid != nil {
		msg := invalid.Message
		return bad(param(invalid.Field), "%s", msg)
	}
	return model, est, nil
}

// readFields are the body's fields the gateway and the dispatchers act
// on: the pool, the team's right to it, and the tokens reserved.
var readFields = [...]string{"model", "max_tokens", "max_completion_tokens", "n", "best_of", "stream", "messages", "input", "prompt", "system",
	"instructions", "max_output_tokens", "previous_response_id"}

// twice names a field of readFields that body (a JSON object) holds more
// than once at its top level, in any case, or is "". encoding/json reads
// names regardless of case and takes the last of duplicates; a provider's
// parser may take the first, or only the lower-case spelling, and would
// then run another model, or generate more tokens, than sluice checked
// and reserved ({"max_tokens":100000,"Max_Tokens":5} reserves 5). The
// body must mean one thing, as a call's envelope must (see package
// messages). Only a body that spells one of the names twice somewhere is
// walked: an SDK's never does.
func twice(body []byte) string {
	if !mentionsTwice(body) {
		return ""
	}
	dec := json.NewDecoder(bytes.NewReader(body))
	if tok, err := dec.Token(); err != nil || tok != json.Delim('{') {
		return ""
	}
	seen := map[string]bool{}
	for dec.More() {
		tok, err := dec.Token()
		if err != nil {
			return ""
		}
		name, _ := tok.(string)
		lower := strings.ToLower(name)
		if seen[lower] && slices.Contains(readFields[:], lower) {
			return name
		}
		seen[lower] = true
		var skip json.RawMessage
		if err := dec.Decode(&skip); err != nil {
			return ""
		}
	}
	return ""
}

// mentionsTwice reports whether body holds a quoted readFields name, in
// any case, twice anywhere: a cheap pass (no allocation) that spares
// twice's walk to bodies that cannot hold a duplicate.
func mentionsTwice(body []byte) bool {
	var count [len(readFields)]int
	for i := 0; ; {
		q := bytes.IndexByte(body[i:], '"')
		if q < 0 {
			return false
		}
		i += q + 1
		for k, name := range readFields {
			if end := i + len(name); end < len(body) && body[end] == '"' && bytes.EqualFold(body[i:end], []byte(name)) {
				if count[k]++; count[k] > 1 {
					return true
				}
			}
		}
	}
}

// serves reports whether any deployment of pool speaks endpoint.
func serves(pool *config.Pool, endpoint messages.Endpoint) bool {
	for _, d := range pool.Deployments {
		if d != nil && providers.Supports(d.Provider, endpoint) {
			return true
		}
	}
	return false
}

// encodeCall is the call's JSON, the body spliced in as the client sent
// it (its spacing kept, no HTML escaping). encoding/json would compact the
// body (a RawMessage), scanning and copying it once more after check has
// parsed it twice: for a 100 KB prompt that took 0.45 ms of the 2.7 ms
// the gateway spent on the request, against 0.02 ms for the splice. check
// has validated the body, so it may go in as it is.
func encodeCall(call *messages.CallRequest) ([]byte, error) {
	body := bytes.TrimSpace(call.Body)
	shell := *call
	shell.Body = json.RawMessage("0")
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(&shell); err != nil {
		return nil, err
	}
	// The first `"body":0` is the key: inside the strings before it
	// (id, model, endpoint) every quote is escaped.
	head, tail, ok := bytes.Cut(buf.Bytes(), []byte(`"body":0`))
	if !ok {
		return nil, errors.New("the encoded call has no body")
	}
	tail = bytes.TrimSuffix(tail, []byte("\n"))
	out := make([]byte, 0, len(head)+len(`"body":`)+len(body)+len(tail))
	out = append(append(append(append(out, head...), `"body":`...), body...), tail...)
	return out, nil
}

// submit subscribes to the call's result (and stream), publishes the call,
// and relays what comes back.
func (g *Gateway) submit(x *exchange, data []byte) {
	if !g.nc.IsConnected() {
		// Rather than queue the call in the reconnect buffer.
		g.unavailable(x, fmt.Errorf("not connected to NATS (%s)", g.nc.Status()))
		return
	}
	resultCh := make(chan *messages.Result, 1)
	rsub, err := g.nc.Subscribe(messages.ResultSubject(x.team, x.call.ID), func(m *nats.Msg) {
		var res messages.Result
		if err := json.Unmarshal(m.Data, &res); err != nil {
			x.log.Warn("undecodable result", "err", err)
			return
		}
		select {
		case resultCh <- &res:
		default: // a duplicate: the first one counts
		}
	})
	if err != nil {
		g.unavailable(x, err)
		return
	}
	defer func() { _ = rsub.Unsubscribe() }()

	var s *streamSub
	if x.stream {
		if s, err = g.subscribeStream(x); err != nil {
			g.unavailable(x, err)
			return
		}
		defer s.close()
	}

	msg := &nats.Msg{Subject: messages.CallSubject(x.team, x.tier), Data: data, Header: nats.Header{}}
	msg.Header.Set(messages.HeaderMsgID, x.call.ID)
	traceCall(x, msg.Header)
	x.reconnects = g.nc.Stats().Reconnects
	pctx, cancel := context.WithTimeout(x.r.Context(), publishTimeout)
	_, err = g.js.PublishMsg(pctx, msg)
	cancel()
	if err != nil {
		// It may have been stored all the same.
		x.cancel()
		if x.r.Context().Err() != nil {
			return
		}
		g.unavailable(x, err)
		return
	}
	x.log.Debug("call submitted", "stream", x.stream)
	if x.stream {
		g.relay(x, resultCh, s)
		return
	}
	g.await(x, resultCh)
}

// unavailable answers a call that could not be submitted.
func (g *Gateway) unavailable(x *exchange, err error) {
	x.log.Warn("could not submit the call", "err", err)
	writeError(x.w, x.rt.dialect, &apiError{Status: http.StatusServiceUnavailable, Code: string(messages.CodeInternal),
		Message: "sluice could not accept the call: " + err.Error()})
}

// await waits for the result of a call that is not streamed, and answers
// it.
func (g *Gateway) await(x *exchange, resultCh <-chan *messages.Result) {
	giveUp := time.NewTimer(time.Until(x.giveUp))
	defer giveUp.Stop()
	tick := time.NewTicker(refetchEvery)
	defer tick.Stop()
	for {
		select {
		case res := <-resultCh:
			g.answer(x, res)
			return
		case <-x.r.Context().Done():
			x.cancel()
			x.log.Debug("the client went away: call canceled")
			return
		case <-giveUp.C:
			x.cancel()
			g.noResult(x)
			return
		case <-tick.C:
			if res := g.refetch(x); res != nil {
				g.answer(x, res)
				return
			}
		}
	}
}

// noResult answers a call whose result did not come by its deadline.
func (g *Gateway) noResult(x *exchange) {
	x.log.Warn("no result by the call's deadline: canceled")
	writeError(x.w, x.rt.dialect, &apiError{Status: http.StatusGatewayTimeout, Code: string(messages.CodeDeadlineExceeded), NoRetry: true,
		Message: "no answer came from sluice within the call's deadline"})
}

// refetch looks for the call's result in the results stream if the NATS
// connection was re-established since it last looked: a result published
// while it was down never reached the subscription.
func (g *Gateway) refetch(x *exchange) *messages.Result {
	n := g.nc.Stats().Reconnects
	if n == x.reconnects {
		return nil
	}
	ctx, cancel := context.WithTimeout(x.r.Context(), refetchEvery)
	defer cancel()
	res, err := results.FetchDirect(ctx, g.nc, g.cfg.JSDomain, x.team, x.call.ID)
	if err != nil {
		return nil
	}
	x.reconnects = n
	return res
}

// answer writes a call's result: the provider's status and body as they
// are, or sluice's error in the route's dialect.
func (g *Gateway) answer(x *exchange, res *messages.Result) {
	setResultHeaders(x.w.Header(), res)
	traceResult(x, res)
	g.remember(x, res)
	if x.rt.endpoint == messages.EndpointResponseDelete && res.Error == nil {
		var id struct {
			ResponseID string `json:"response_id"`
		}
		if json.Unmarshal(x.call.Body, &id) == nil {
			ctx, cancel := context.WithTimeout(context.Background(), pinTimeout)
			if err := g.pins.forget(ctx, x.team, id.ResponseID); err != nil {
				x.log.Warn("could not forget a deleted stored response", "response", id.ResponseID, "err", err)
			}
			cancel()
		}
	}
	switch {
	case res.Error == nil:
		body := res.Body
		if len(body) == 0 {
			body = []byte("{}")
		}
		writeBody(x.w, orDefault(res.HTTPStatus, http.StatusOK), body)
	case (res.Error.Code == messages.CodeProviderError || res.Error.Code == messages.CodeRateLimited) && res.HTTPStatus >= 400 && isJSONObject(res.Body):
		// The provider's own answer: sluice has retried what was worth
		// retrying already.
		x.w.Header().Set("x-should-retry", "false")
		writeBody(x.w, res.HTTPStatus, res.Body)
	case (res.Error.Code == messages.CodeProviderError || res.Error.Code == messages.CodeRateLimited) && len(res.Body) > 0:
		// An answer that was not JSON (a proxy's HTML page, say) is held
		// in the result as a JSON string of its start: passed on, it
		// would be neither the provider's answer nor an error an SDK can
		// read. It is sluice's error then, quoting the start.
		e := fromCallError(res.Error)
		var excerpt string
		if json.Unmarshal(res.Body, &excerpt) == nil && excerpt != "" {
			e.Message += ": " + strconv.Quote(excerpt)
		}
		writeError(x.w, x.rt.dialect, e)
	default:
		writeError(x.w, x.rt.dialect, fromCallError(res.Error))
	}
	x.log.Debug("answered", "outcome", res.Outcome(), "status", res.HTTPStatus)
}

// isJSONObject reports whether body is a JSON object, as providers' error
// answers are.
func isJSONObject(body []byte) bool {
	body = bytes.TrimSpace(body)
	return len(body) > 0 && body[0] == '{'
}

// setResultHeaders sets the x-sluice-* headers of a result.
func setResultHeaders(h http.Header, res *messages.Result) {
	if res.Deployment != "" {
		h.Set(HeaderDeployment, res.Deployment)
	}
	if res.Region != "" {
		h.Set(HeaderRegion, res.Region)
	}
	h.Set(HeaderAttempts, strconv.Itoa(res.Attempts))
	h.Set(HeaderQueuedMS, strconv.FormatFloat(res.Timings.QueuedMS, 'f', -1, 64))
	if res.TraceID != "" {
		h.Set(HeaderTraceID, res.TraceID)
	}
}

// orDefault returns the first of its arguments that is not zero.
func orDefault(v, def int) int {
	if v != 0 {
		return v
	}
	return def
}

// streamSub is the subscription to a call's stream: its events wait in a
// bounded buffer for the client. When the client falls StreamBuffer
// events behind, the call is canceled at once and overflow closed.
type streamSub struct {
	sub      *nats.Subscription
	chunks   chan *nats.Msg
	overflow chan struct{}
	over     atomic.Bool
}

func (g *Gateway) subscribeStream(x *exchange) (*streamSub, error) {
	s := &streamSub{chunks: make(chan *nats.Msg, g.cfg.StreamBuffer), overflow: make(chan struct{})}
	sub, err := g.nc.Subscribe(messages.StreamSubject(x.team, x.call.ID), func(m *nats.Msg) {
		if s.over.Load() {
			return
		}
		select {
		case s.chunks <- m:
		default:
			s.over.Store(true)
			close(s.overflow)
			x.cancel()
		}
	})
	if err != nil {
		return nil, err
	}
	s.sub = sub
	return s, nil
}

func (s *streamSub) close() { _ = s.sub.Unsubscribe() }
