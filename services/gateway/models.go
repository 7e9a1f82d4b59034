package gateway

import (
	"fmt"
	"net/http"
	"sort"
	"strings"
	"time"

	"github.com/sluicehq/sluice/messages"
	"github.com/sluicehq/sluice/services/config"
)

// model is an entry of OpenAI's model list: one pool.
type model struct {
	ID      string `json:"id"`
	Object  string `json:"object"`
	Created int64  `json:"created"`
	OwnedBy string `json:"owned_by"`
}

func poolModel(name string) model {
	return model{ID: name, Object: "model", OwnedBy: "sluice"}
}

// anthropicModel is an entry of Anthropic's model list: one pool. A pool
// has no creation time; created_at is the Unix epoch, as OpenAI's created
// is 0.
type anthropicModel struct {
	Type        string    `json:"type"` // "model"
	ID          string    `json:"id"`
	DisplayName string    `json:"display_name"`
	CreatedAt   time.Time `json:"created_at"`
}

func poolAnthropicModel(name string) anthropicModel {
	return anthropicModel{Type: "model", ID: name, DisplayName: name, CreatedAt: time.Unix(0, 0).UTC()}
}

// anthropicModelList is Anthropic's page of models. The gateway answers
// every pool in one page: has_more is false.
type anthropicModelList struct {
	Data    []anthropicModel `json:"data"`
	HasMore bool             `json:"has_more"`
	FirstID *string          `json:"first_id"`
	LastID  *string          `json:"last_id"`
}

// speaksAnthropic reports whether the client of a models route is an
// Anthropic one: it sends anthropic-version (Anthropic's SDKs always do)
// or its key as x-api-key.
func speaksAnthropic(r *http.Request) bool {
	return strings.TrimSpace(r.Header.Get("anthropic-version")) != "" || strings.TrimSpace(r.Header.Get("x-api-key")) != ""
}

// serveModels lists the pools the caller's team may use, sorted by name,
// in OpenAI's format or, to a client that speaks Anthropic, Anthropic's.
func (g *Gateway) serveModels(w http.ResponseWriter, r *http.Request) {
	cfg, c, d, ok := g.modelsCaller(w, r)
	if !ok {
		return
	}
	names := make([]string, 0, len(cfg.Pools))
	for name := range cfg.Pools {
		if c.cfg.AllowsPool(name) {
			names = append(names, name)
		}
	}
	sort.Strings(names)
	if d == anthropic {
		list := anthropicModelList{Data: make([]anthropicModel, 0, len(names))}
		for _, name := range names {
			list.Data = append(list.Data, poolAnthropicModel(name))
		}
		if len(names) > 0 {
			list.FirstID, list.LastID = &names[0], &names[len(names)-1]
		}
		writeJSON(w, http.StatusOK, list)
		return
	}
	data := make([]model, 0, len(names))
	for _, name := range names {
		data = append(data, poolModel(name))
	}
	writeJSON(w, http.StatusOK, map[string]any{"object": "list", "data": data})
}

// serveModel answers one pool the caller's team may use.
func (g *Gateway) serveModel(w http.ResponseWriter, r *http.Request) {
	cfg, c, d, ok := g.modelsCaller(w, r)
	if !ok {
		return
	}
	name := r.PathValue("model")
	if _, exists := cfg.Pool(name); !exists || !c.cfg.AllowsPool(name) {
		writeError(w, d, &apiError{Status: http.StatusNotFound, Code: "model_not_found", Param: "model",
			Message: fmt.Sprintf("the model %q does not exist, or your team may not use it", name)})
		return
	}
	if d == anthropic {
		writeJSON(w, http.StatusOK, poolAnthropicModel(name))
		return
	}
	writeJSON(w, http.StatusOK, poolModel(name))
}

// modelsCaller checks the method and identifies the caller of a models
// route, and tells which dialect it speaks; errors are answered in it.
func (g *Gateway) modelsCaller(w http.ResponseWriter, r *http.Request) (*config.Config, caller, dialect, bool) {
	d := openAI
	if speaksAnthropic(r) {
		d = anthropic
	}
	if !allowMethod(w, r, d, http.MethodGet) {
		return nil, caller{}, d, false
	}
	cfg := g.cfg.Shared.Load()
	if cfg == nil {
		writeError(w, d, &apiError{Status: http.StatusServiceUnavailable, Code: string(messages.CodeInternal), Message: "sluice has no configuration yet"})
		return nil, caller{}, d, false
	}
	c, e := identify(cfg, r, true)
	if e != nil {
		writeError(w, d, e)
		return nil, caller{}, d, false
	}
	return cfg, c, d, true
}
