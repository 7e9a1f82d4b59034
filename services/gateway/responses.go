package gateway

import (
	"encoding/json"
	"fmt"
	"net/http"
	"sync"
	"time"

	"github.com/sluicehq/sluice/messages"
	"github.com/sluicehq/sluice/services/tokens"
)

// Stored responses. A provider keeps a Responses API response with the
// key (the deployment) that made it: GET and DELETE /v1/responses/{id},
// and a call that continues it with previous_response_id, find it only
// there. The gateway remembers, for each response it relayed, the pool and
// the deployment of its result, and sends these calls there alone (the
// call's Deployment, which the dispatchers honour: such a call waits for
// that deployment rather than go elsewhere). The memory is this gateway's
// own, MaxPinnedResponses at most, the oldest forgotten first: a
// response made through another gateway, or before a restart, is unknown
// here (404 not_found); a NATS client pins a call itself, with the
// deployment of the result that made the response.

// MaxPinnedResponses bounds the responses a gateway remembers.
const MaxPinnedResponses = 100_000

// pin is where a stored response lives.
type pin struct {
	pool, deployment string
}

// pins remembers the deployment of each response relayed, per team.
type pins struct {
	mu    sync.Mutex
	byID  map[pinKey]pin
	order []pinKey // oldest first; may hold forgotten keys
}

type pinKey struct{ team, id string }

func newPins() *pins { return &pins{byID: map[pinKey]pin{}} }

func (p *pins) put(team, id string, where pin) {
	p.mu.Lock()
	defer p.mu.Unlock()
	k := pinKey{team, id}
	if _, ok := p.byID[k]; !ok {
		for len(p.byID) >= MaxPinnedResponses && len(p.order) > 0 {
			delete(p.byID, p.order[0])
			p.order = p.order[1:]
		}
		p.order = append(p.order, k)
	}
	p.byID[k] = where
	if len(p.order) > 2*MaxPinnedResponses {
		// Drop the forgotten keys that deletions left behind.
		kept := p.order[:0]
		for _, k := range p.order {
			if _, ok := p.byID[k]; ok {
				kept = append(kept, k)
			}
		}
		p.order = kept
	}
}

func (p *pins) get(team, id string) (pin, bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	where, ok := p.byID[pinKey{team, id}]
	return where, ok
}

func (p *pins) forget(team, id string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	delete(p.byID, pinKey{team, id})
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
	if id != "" {
		g.pins.put(x.team, id, pin{pool: x.call.Model, deployment: res.Deployment})
	}
}

// pinPrevious pins a Responses call with a previous_response_id to the
// deployment that holds that response, or answers why it cannot go.
func (g *Gateway) pinPrevious(team, model string, call *messages.CallRequest) *apiError {
	var b struct {
		Previous *string `json:"previous_response_id"`
	}
	if json.Unmarshal(call.Body, &b) != nil || b.Previous == nil || *b.Previous == "" {
		return nil
	}
	where, ok := g.pins.get(team, *b.Previous)
	if !ok {
		return &apiError{Status: http.StatusNotFound, Code: "not_found", Param: "previous_response_id",
			Message: fmt.Sprintf("previous response %q is not known to this sluice gateway: it relays calls that continue a response only to the deployment that stored it, which it learns by relaying that response", *b.Previous)}
	}
	if where.pool != model {
		return &apiError{Status: http.StatusBadRequest, Code: string(messages.CodeInvalidRequest), Param: "previous_response_id",
			Message: fmt.Sprintf("previous response %q was made by pool %q, whose deployment holds it; continue it on model %q", *b.Previous, where.pool, where.pool)}
	}
	call.Deployment = where.deployment
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
	where, known := g.pins.get(c.team, id)
	if !tokens.ValidResponseID(id) || !known {
		writeError(w, openAI, &apiError{Status: http.StatusNotFound, Code: "not_found",
			Message: fmt.Sprintf("response %q is not known to this sluice gateway (it knows the responses it relayed, and sends these calls to the deployment that stored them)", id)})
		return
	}
	if !c.cfg.AllowsPool(where.pool) {
		writeError(w, openAI, &apiError{Status: http.StatusForbidden, Code: string(messages.CodeForbidden),
			Message: fmt.Sprintf("team %s may no longer use the model %q", c.team, where.pool)})
		return
	}
	body, _ := json.Marshal(map[string]string{"model": where.pool, "response_id": id})
	call := &messages.CallRequest{
		ID:         messages.NewCallID(),
		Model:      where.pool,
		Endpoint:   rt.endpoint,
		Body:       body,
		TimeoutMS:  max(1, timeout.Milliseconds()),
		Deployment: where.deployment,
	}
	data, err := encodeCall(call)
	if err != nil {
		writeError(w, openAI, &apiError{Status: http.StatusInternalServerError, Code: string(messages.CodeInternal), Message: err.Error()})
		return
	}
	x := &exchange{
		w: w, r: r, rt: rt, team: c.team, tier: tier, call: call,
		giveUp: now.Add(timeout + g.cfg.ResultGrace),
		log:    g.log.With("team", c.team, "tier", tier, "model", where.pool, "call", call.ID, "route", rt.path),
	}
	x.cancelCall = func() { g.cancel(x.team, x.call.ID) }
	w.Header().Set(HeaderCallID, call.ID)
	g.submit(x, data)
}
