package gateway

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/sluicehq/sluice/messages"
	"github.com/sluicehq/sluice/services/tokens"
)

// Stored responses. A provider keeps a Responses API response with the
// key (the deployment) that made it: GET and DELETE /v1/responses/{id},
// and a call that continues it with previous_response_id, find it only
// there. The gateway remembers, for each response it relayed, the pool and
// the deployment of its result, and sends these calls there alone (the
// call's Deployment, which the dispatchers honour: such a call waits for
// that deployment rather than go elsewhere). The memory is KV bucket
// SLUICE_RESPONSES, which every gateway shares, so that a response made
// through one gateway is found through any other and after a restart, for
// streams.responses_max_age; a response sluice did not relay is unknown
// (404 not_found). A NATS client pins a call itself, with the deployment
// of the result that made the response.

// pinTimeout bounds one read or write of SLUICE_RESPONSES.
const pinTimeout = 5 * time.Second

// pins reads and writes SLUICE_RESPONSES, which a dispatcher creates; the
// bucket is opened on first use, and again after a failure.
type pins struct {
	js jetstream.JetStream

	mu sync.Mutex // guards kv, never held across a network call
	kv jetstream.KeyValue
}

func newPins(js jetstream.JetStream) *pins { return &pins{js: js} }

func (p *pins) bucket(ctx context.Context) (jetstream.KeyValue, error) {
	p.mu.Lock()
	kv := p.kv
	p.mu.Unlock()
	if kv != nil {
		return kv, nil
	}
	kv, err := p.js.KeyValue(ctx, messages.BucketResponses)
	if err != nil {
		return nil, fmt.Errorf("open bucket %s (a dispatcher creates it): %w", messages.BucketResponses, err)
	}
	p.mu.Lock()
	p.kv = kv
	p.mu.Unlock()
	return kv, nil
}

// put remembers that team's response id lives at where.
func (p *pins) put(ctx context.Context, team, id string, where messages.StoredResponse) error {
	kv, err := p.bucket(ctx)
	if err != nil {
		return err
	}
	data, err := json.Marshal(where)
	if err != nil {
		return err
	}
	_, err = kv.Put(ctx, messages.StoredResponseKey(team, id), data)
	return err
}

// get says where team's response id lives; found is false when no
// gateway relayed it (or it was deleted, or forgotten with age).
func (p *pins) get(ctx context.Context, team, id string) (where messages.StoredResponse, found bool, err error) {
	kv, err := p.bucket(ctx)
	if err != nil {
		return where, false, err
	}
	e, err := kv.Get(ctx, messages.StoredResponseKey(team, id))
	if errors.Is(err, jetstream.ErrKeyNotFound) {
		return where, false, nil
	}
	if err != nil {
		return where, false, err
	}
	if err := json.Unmarshal(e.Value(), &where); err != nil || where.Pool == "" || where.Deployment == "" {
		return where, false, fmt.Errorf("the entry of response %q in %s is not a stored response's: %q", id, messages.BucketResponses, e.Value())
	}
	return where, true, nil
}

// forget drops team's response id, deleted at its provider.
func (p *pins) forget(ctx context.Context, team, id string) error {
	kv, err := p.bucket(ctx)
	if err != nil {
		return err
	}
	return kv.Delete(ctx, messages.StoredResponseKey(team, id))
}

// unknownResponse is the answer to a call on a response no gateway
// relayed.
func unknownResponse(id, param string) *apiError {
	return &apiError{Status: http.StatusNotFound, Code: "not_found", Param: param,
		Message: fmt.Sprintf("response %q is not known to sluice: it sends calls on a stored response to the deployment that stored it, which it learns by relaying that response", id)}
}

// pinTrouble is the answer when SLUICE_RESPONSES cannot be read.
func pinTrouble(err error) *apiError {
	return &apiError{Status: http.StatusServiceUnavailable, Code: string(messages.CodeInternal),
		Message: fmt.Sprintf("sluice cannot tell which deployment holds the response: %v", err)}
}

// responseID is the "id" of a response object (a Responses API answer),
// or of the "response" an event of its stream carries; "" when it has
// none that can be a stored response's.
func responseID(data []byte) string {
	var v struct {
		ID       string `json:"id"`
		Object   string `json:"object"`
		Response *struct {
			ID string `json:"id"`
		} `json:"response"`
	}
	if json.Unmarshal(data, &v) != nil {
		return ""
	}
	id := v.ID
	if v.Response != nil {
		id = v.Response.ID
	} else if v.Object != "response" {
		return ""
	}
	if !tokens.ValidResponseID(id) {
		return ""
	}
	return id
}

// remember pins the response a call made to the deployment that made it.
func (g *Gateway) remember(x *exchange, res *messages.Result) {
	if x.rt.endpoint != messages.EndpointResponses || res.Error != nil || res.Deployment == "" {
		return
	}
	id := x.responseID
	if id == "" {
		id = responseID(res.Body)
	}
	if id == "" {
		return
	}
	// Not the request's context: a client gone before its answer may
	// still continue the response later.
	ctx, cancel := context.WithTimeout(context.Background(), pinTimeout)
	defer cancel()
	if err := g.pins.put(ctx, x.team, id, messages.StoredResponse{Pool: x.call.Model, Deployment: res.Deployment}); err != nil {
		x.log.Warn("could not remember the deployment of a stored response: calls that continue it will get 404", "response", id, "deployment", res.Deployment, "err", err)
	}
}

// pinPrevious pins a Responses call with a previous_response_id to the
// deployment that holds that response, or answers why it cannot go.
func (g *Gateway) pinPrevious(ctx context.Context, team, model string, call *messages.CallRequest) *apiError {
	var b struct {
		Previous *string `json:"previous_response_id"`
	}
	if json.Unmarshal(call.Body, &b) != nil || b.Previous == nil || *b.Previous == "" {
		return nil
	}
	if !tokens.ValidResponseID(*b.Previous) {
		return unknownResponse(*b.Previous, "previous_response_id")
	}
	ctx, cancel := context.WithTimeout(ctx, pinTimeout)
	defer cancel()
	where, ok, err := g.pins.get(ctx, team, *b.Previous)
	switch {
	case err != nil:
		return pinTrouble(err)
	case !ok:
		return unknownResponse(*b.Previous, "previous_response_id")
	case where.Pool != model:
		return &apiError{Status: http.StatusBadRequest, Code: string(messages.CodeInvalidRequest), Param: "previous_response_id",
			Message: fmt.Sprintf("previous response %q was made by pool %q, whose deployment holds it; continue it on model %q", *b.Previous, where.Pool, where.Pool)}
	}
	call.Deployment = where.Deployment
	return nil
}

// storedRoute is GET and DELETE /v1/responses/{response_id}.
var storedRoute = map[string]*route{
	http.MethodGet:    {path: "/v1/responses/{response_id}", endpoint: messages.EndpointResponseGet, dialect: openAI},
	http.MethodDelete: {path: "/v1/responses/{response_id}", endpoint: messages.EndpointResponseDelete, dialect: openAI},
}

// serveStored serves GET and DELETE of a stored response: a call, pinned
// to the deployment that made the response, through admission like any
// other (one request, no tokens). The provider's answer comes back as it
// is; DELETE's success forgets the pin.
func (g *Gateway) serveStored(w http.ResponseWriter, r *http.Request) {
	rt, ok := storedRoute[r.Method]
	if !ok {
		w.Header().Set("Allow", "GET, DELETE")
		writeError(w, openAI, &apiError{Status: http.StatusMethodNotAllowed, Code: "method_not_allowed",
			Message: fmt.Sprintf("%s is not allowed on %s; use GET or DELETE", r.Method, r.URL.Path)})
		return
	}
	now := time.Now()
	cfg := g.cfg.Shared.Load()
	if cfg == nil {
		writeError(w, openAI, &apiError{Status: http.StatusServiceUnavailable, Code: string(messages.CodeInternal), Message: "sluice has no configuration yet"})
		return
	}
	c, e := identify(cfg, r, false)
	if e != nil {
		writeError(w, openAI, e)
		return
	}
	tier, e := tierOf(c, r)
	if e != nil {
		writeError(w, openAI, e)
		return
	}
	timeout, e := g.timeoutOf(cfg, r, now)
	if e != nil {
		writeError(w, openAI, e)
		return
	}
	id := r.PathValue("response_id")
	if !tokens.ValidResponseID(id) {
		writeError(w, openAI, unknownResponse(id, ""))
		return
	}
	ctx, cancel := context.WithTimeout(r.Context(), pinTimeout)
	where, known, err := g.pins.get(ctx, c.team, id)
	cancel()
	switch {
	case err != nil:
		writeError(w, openAI, pinTrouble(err))
		return
	case !known:
		writeError(w, openAI, unknownResponse(id, ""))
		return
	}
	if !c.cfg.AllowsPool(where.Pool) {
		writeError(w, openAI, &apiError{Status: http.StatusForbidden, Code: string(messages.CodeForbidden),
			Message: fmt.Sprintf("team %s may no longer use the model %q", c.team, where.Pool)})
		return
	}
	body, _ := json.Marshal(map[string]string{"model": where.Pool, "response_id": id})
	call := &messages.CallRequest{
		ID:         messages.NewCallID(),
		Model:      where.Pool,
		Endpoint:   rt.endpoint,
		Body:       body,
		TimeoutMS:  max(1, timeout.Milliseconds()),
		Deployment: where.Deployment,
	}
	data, err := encodeCall(call)
	if err != nil {
		writeError(w, openAI, &apiError{Status: http.StatusInternalServerError, Code: string(messages.CodeInternal), Message: err.Error()})
		return
	}
	x := &exchange{
		w: w, r: r, rt: rt, team: c.team, tier: tier, call: call,
		giveUp: now.Add(timeout + g.cfg.ResultGrace),
		log:    g.log.With("team", c.team, "tier", tier, "model", where.Pool, "call", call.ID, "route", rt.path),
	}
	x.cancelCall = func() { g.cancel(x.team, x.call.ID) }
	w.Header().Set(HeaderCallID, call.ID)
	g.submit(x, data)
}
