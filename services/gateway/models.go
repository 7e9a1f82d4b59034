package gateway

import (
	"fmt"
	"net/http"
	"sort"

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

// serveModels lists the pools the caller's team may use, in OpenAI's
// format, sorted by name.
func (g *Gateway) serveModels(w http.ResponseWriter, r *http.Request) {
	cfg, c, ok := g.modelsCaller(w, r)
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
	data := make([]model, 0, len(names))
	for _, name := range names {
		data = append(data, poolModel(name))
	}
	writeJSON(w, http.StatusOK, map[string]any{"object": "list", "data": data})
}

// serveModel answers one pool the caller's team may use.
func (g *Gateway) serveModel(w http.ResponseWriter, r *http.Request) {
	cfg, c, ok := g.modelsCaller(w, r)
	if !ok {
		return
	}
	name := r.PathValue("model")
	if _, exists := cfg.Pool(name); !exists || !c.cfg.AllowsPool(name) {
		writeError(w, openAI, &apiError{Status: http.StatusNotFound, Code: "model_not_found", Param: "model",
			Message: fmt.Sprintf("the model %q does not exist, or your team may not use it", name)})
		return
	}
	writeJSON(w, http.StatusOK, poolModel(name))
}

// modelsCaller checks the method and identifies the caller of a models
// route.
func (g *Gateway) modelsCaller(w http.ResponseWriter, r *http.Request) (*config.Config, caller, bool) {
	if !allowMethod(w, r, openAI, http.MethodGet) {
		return nil, caller{}, false
	}
	cfg := g.cfg.Shared.Load()
	if cfg == nil {
		writeError(w, openAI, &apiError{Status: http.StatusServiceUnavailable, Code: string(messages.CodeInternal), Message: "sluice has no configuration yet"})
		return nil, caller{}, false
	}
	c, e := identify(cfg, r, true)
	if e != nil {
		writeError(w, openAI, e)
		return nil, caller{}, false
	}
	return cfg, c, true
}
