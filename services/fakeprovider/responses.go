package fakeprovider

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"sync"
)

// minOutputTokens is the least max_output_tokens OpenAI's Responses API
// takes.
const minOutputTokens = 16

// MaxStoredResponses bounds the responses the fake keeps (for GET, DELETE
// and previous_response_id), over all keys; the oldest go first.
const MaxStoredResponses = 4096

// handleResponses serves OpenAI's POST /v1/responses.
func (s *Server) handleResponses(w http.ResponseWriter, r *http.Request) {
	s.serveResponses(w, r, openAIDialect{})
}

// serveResponses serves a Responses API call in dialect d (the body names
// the model, Azure's deployment included). It is charged at admission the
// input (the chat rule: instructions as one message, a string input as
// one, each input item as one) plus max_output_tokens (else
// Config.DefaultMaxTokens, as chat's max_tokens), and settled on the
// usage: it "generates" CompletionTokens of "ok", fewer if
// max_output_tokens says so (status "incomplete"). With
// previous_response_id, the response the key stored must exist (else 400
// previous_response_not_found), and its input and output count in this
// one's input_tokens, as OpenAI bills a conversation's context. Unless
// "store": false, the response is stored under the key that made it, for
// GET and DELETE /v1/responses/{id} and for later previous_response_id.
func (s *Server) serveResponses(w http.ResponseWriter, r *http.Request, d dialect) {
	c, body, ok := s.begin(w, r, d)
	if !ok {
		return
	}
	req, bad := parseResponses(body)
	c.model = req.model
	if bad != nil {
		c.fail(bad, outInvalid)
		return
	}
	if !c.checkModel(req.model) {
		return
	}
	var context int64
	if req.previous != "" {
		prev, ok := s.stored().get(c.key, req.previous)
		if !ok {
			c.fail(invalidRequest("previous_response_id", "previous_response_not_found",
				"Previous response with id '%s' not found.", req.previous), outInvalid)
			return
		}
		context = prev.context
	}
	allowance := s.cfg.DefaultMaxTokens
	if req.hasMaxOutput {
		allowance = req.maxOutput
	}
	if !c.admit(req.prompt + allowance) {
		return
	}
	if !c.proceed() {
		return
	}
	out, status := s.cfg.CompletionTokens, "completed"
	if req.hasMaxOutput && req.maxOutput < out {
		out, status = req.maxOutput, "incomplete"
	}
	if req.stream {
		c.streamResponse(req, context, out, status)
		return
	}
	u := responsesUsage{InputTokens: req.prompt + context, OutputTokens: out}
	u.TotalTokens = u.InputTokens + u.OutputTokens
	resp := s.newResponse(c, req, status, completionText(out), u)
	if req.store {
		s.stored().put(c.key, resp.ID, storedResponse{context: u.TotalTokens, resp: resp})
	}
	c.succeed(resp, usage{PromptTokens: u.InputTokens, CompletionTokens: u.OutputTokens, TotalTokens: u.TotalTokens})
}

// newResponse is the response object of an answered call.
func (s *Server) newResponse(c *call, req responsesCall, status, text string, u responsesUsage) responseObject {
	resp := responseObject{
		ID:                 s.newID("resp_"),
		Object:             "response",
		CreatedAt:          c.adm.at.Unix(),
		Status:             status,
		Model:              req.model,
		Instructions:       req.instructions,
		PreviousResponseID: req.previousOrNil(),
		Store:              req.store,
		Output: []responseItem{{
			Type:    "message",
			ID:      s.newID("msg_"),
			Status:  status,
			Role:    "assistant",
			Content: []responsePart{{Type: "output_text", Text: text, Annotations: []struct{}{}}},
		}},
		Tools:      []struct{}{},
		ToolChoice: "auto",
		Usage:      &u,
	}
	if req.hasMaxOutput {
		resp.MaxOutputTokens = &req.maxOutput
	}
	if status == "incomplete" {
		resp.IncompleteDetails = &incompleteDetails{Reason: "max_output_tokens"}
	}
	return resp
}

// streamResponse answers an admitted Responses call as OpenAI's typed
// server-sent events, each "event: <type>" and "data: <json>" with that
// "type" and a sequence_number: response.created and
// response.in_progress (the response, in_progress, without output or
// usage), response.output_item.added, response.content_part.added, one
// response.output_text.delta per token, response.output_text.done,
// response.content_part.done, response.output_item.done, then
// response.completed (or response.incomplete when max_output_tokens cut
// it) with the whole response and its usage. There is no [DONE]. The
// call is settled and counted before the last event, and stored, as a
// plain one; a client that goes away is as for chat streams.
func (c *call) streamResponse(req responsesCall, context, out int64, status string) {
	sse := c.openStream()
	prompt := req.prompt + context
	resp := c.s.newResponse(c, req, status, "", responsesUsage{})
	item := resp.Output[0]
	inProgress := resp
	inProgress.Status, inProgress.Output, inProgress.Usage, inProgress.IncompleteDetails = "in_progress", []responseItem{}, nil, nil
	var seq int64
	first := true
	send := func(typ string, fields map[string]any) bool {
		fields["type"], fields["sequence_number"] = typ, seq
		seq++
		b, _ := json.Marshal(fields) // the fake's own types: cannot fail
		ok := sse.send(!first, typ, b)
		first = false
		return ok
	}
	openItem := item
	openItem.Status, openItem.Content = "in_progress", []responsePart{}
	emptyPart := responsePart{Type: "output_text", Text: "", Annotations: []struct{}{}}
	var sent int64
	for _, ev := range []struct {
		typ    string
		fields map[string]any
	}{
		{"response.created", map[string]any{"response": inProgress}},
		{"response.in_progress", map[string]any{"response": inProgress}},
		{"response.output_item.added", map[string]any{"output_index": 0, "item": openItem}},
		{"response.content_part.added", map[string]any{"item_id": item.ID, "output_index": 0, "content_index": 0, "part": emptyPart}},
	} {
		if !send(ev.typ, ev.fields) {
			c.abort(prompt, sent)
			return
		}
	}
	for t := range out {
		if !send("response.output_text.delta", map[string]any{"item_id": item.ID, "output_index": 0, "content_index": 0,
			"delta": completionToken(t), "logprobs": []struct{}{}}) {
			c.abort(prompt, sent)
			return
		}
		sent++
	}
	text := completionText(out)
	u := responsesUsage{InputTokens: prompt, OutputTokens: sent, TotalTokens: prompt + sent}
	c.s.limits.settle(c.adm.ticket, u.TotalTokens)
	c.end(outServed, http.StatusOK, usage{PromptTokens: u.InputTokens, CompletionTokens: u.OutputTokens, TotalTokens: u.TotalTokens})
	item.Content = []responsePart{{Type: "output_text", Text: text, Annotations: []struct{}{}}}
	resp.Output, resp.Usage = []responseItem{item}, &u
	if req.store {
		c.s.stored().put(c.key, resp.ID, storedResponse{context: u.TotalTokens, resp: resp})
	}
	last := "response.completed"
	if status == "incomplete" {
		last = "response.incomplete"
	}
	for _, ev := range []struct {
		typ    string
		fields map[string]any
	}{
		{"response.output_text.done", map[string]any{"item_id": item.ID, "output_index": 0, "content_index": 0, "text": text, "logprobs": []struct{}{}}},
		{"response.content_part.done", map[string]any{"item_id": item.ID, "output_index": 0, "content_index": 0, "part": item.Content[0]}},
		{"response.output_item.done", map[string]any{"output_index": 0, "item": item}},
		{last, map[string]any{"response": resp}},
	} {
		if !send(ev.typ, ev.fields) {
			return
		}
	}
}

// handleStoredResponse serves GET and DELETE /v1/responses/{id}: the
// response the key stored, or its deletion; 404 for an id the key did not
// store (another key's responses are not its own). It is admitted as one
// request and no tokens, and served with no usage.
func (s *Server) handleStoredResponse(w http.ResponseWriter, r *http.Request, d dialect, id string) {
	c, _, ok := s.begin(w, r, d)
	if !ok {
		return
	}
	if !c.admit(0) {
		return
	}
	stored, found := s.stored().get(c.key, id)
	if !found {
		c.fail(&apiError{status: http.StatusNotFound, typ: typeInvalidRequest,
			message: fmt.Sprintf("Response with id '%s' not found.", id)}, outInvalid)
		return
	}
	c.model = stored.resp.Model
	if r.Method == http.MethodDelete {
		s.stored().remove(c.key, id)
		c.succeed(deletedResponse{ID: id, Object: "response", Deleted: true}, usage{})
		return
	}
	c.succeed(stored.resp, usage{})
}

// ---- the store ----

// storedResponse is a response kept for its key.
type storedResponse struct {
	// context is what the response's input and output add to a later
	// call's input.
	context int64
	resp    responseObject
}

// responseStore keeps responses per key, at most MaxStoredResponses.
type responseStore struct {
	mu    sync.Mutex
	byKey map[string]map[string]storedResponse
	order []storedRef // oldest first
}

type storedRef struct{ key, id string }

// stored is the server's response store, made on first use.
func (s *Server) stored() *responseStore {
	s.storeOnce.Do(func() { s.responses = &responseStore{byKey: map[string]map[string]storedResponse{}} })
	return s.responses
}

func (st *responseStore) put(key, id string, r storedResponse) {
	st.mu.Lock()
	defer st.mu.Unlock()
	for len(st.order) >= MaxStoredResponses {
		old := st.order[0]
		st.order = st.order[1:]
		delete(st.byKey[old.key], old.id)
	}
	m := st.byKey[key]
	if m == nil {
		m = map[string]storedResponse{}
		st.byKey[key] = m
	}
	m[id] = r
	st.order = append(st.order, storedRef{key, id})
}

func (st *responseStore) get(key, id string) (storedResponse, bool) {
	st.mu.Lock()
	defer st.mu.Unlock()
	r, ok := st.byKey[key][id]
	return r, ok
}

func (st *responseStore) remove(key, id string) {
	st.mu.Lock()
	defer st.mu.Unlock()
	delete(st.byKey[key], id)
	// Its place in order is dropped when it comes up: deleting an id
	// already gone is a no-op.
}

// ---- requests ----

type responsesRequest struct {
	Model              string          `json:"model"`
	Input              json.RawMessage `json:"input"`
	Instructions       *string         `json:"instructions"`
	MaxOutputTokens    *int64          `json:"max_output_tokens"`
	PreviousResponseID *string         `json:"previous_response_id"`
	Store              *bool           `json:"store"`
	Stream             bool            `json:"stream"`
}

// responsesCall is a validated Responses request.
type responsesCall struct {
	model        string
	prompt       int64
	instructions *string
	maxOutput    int64
	hasMaxOutput bool
	previous     string
	store        bool
	stream       bool
}

func (c responsesCall) previousOrNil() *string {
	if c.previous == "" {
		return nil
	}
	return &c.previous
}

// parseResponses validates a Responses request and counts its input by
// the chat rule (see the package documentation).
func parseResponses(body []byte) (responsesCall, *apiError) {
	var req responsesRequest
	if err := json.Unmarshal(body, &req); err != nil {
		return responsesCall{}, decodeError(err)
	}
	c := responsesCall{model: req.Model, instructions: req.Instructions, store: req.Store == nil || *req.Store, stream: req.Stream}
	if req.PreviousResponseID != nil {
		c.previous = *req.PreviousResponseID
	}
	if req.Model == "" {
		return c, invalidRequest("model", codeMissingParam, "Missing required parameter: 'model'.")
	}
	if req.MaxOutputTokens != nil {
		if *req.MaxOutputTokens < minOutputTokens {
			return c, invalidRequest("max_output_tokens", "integer_below_min_value",
				"Invalid 'max_output_tokens': integer below minimum value. Expected a value >= %d, but got %d instead.", minOutputTokens, *req.MaxOutputTokens)
		}
		if *req.MaxOutputTokens > maxTokenParam {
			return c, invalidRequest("max_output_tokens", codeInvalidValue, "max_output_tokens is too large: %d.", *req.MaxOutputTokens)
		}
		c.maxOutput, c.hasMaxOutput = *req.MaxOutputTokens, true
	}
	c.prompt = tokensForReply
	if c.instructions != nil && *c.instructions != "" {
		c.prompt += tokensPerMessage + textTokens(*c.instructions)
	}
	in := bytes.TrimSpace(req.Input)
	if len(in) == 0 || string(in) == "null" {
		return c, invalidRequest("input", codeMissingParam, "Missing required parameter: 'input'.")
	}
	var s string
	if json.Unmarshal(in, &s) == nil {
		c.prompt += tokensPerMessage + textTokens(s)
		return c, nil
	}
	var items []struct {
		Content json.RawMessage `json:"content"`
		Output  json.RawMessage `json:"output"`
	}
	if err := json.Unmarshal(in, &items); err != nil || len(items) == 0 {
		return c, invalidRequest("input", codeInvalidValue, "Invalid 'input': expected a string or a non-empty array of input items.")
	}
	for i, it := range items {
		c.prompt += tokensPerMessage
		n, bad := responsesContentTokens(it.Content, it.Output, i)
		if bad != nil {
			return c, bad
		}
		c.prompt += n
	}
	return c, nil
}

// responsesContentTokens counts one input item: a message's string
// content or its input_text, output_text and text parts, or a
// function_call_output's output string.
func responsesContentTokens(content, output json.RawMessage, i int) (int64, *apiError) {
	content = bytes.TrimSpace(content)
	if len(content) == 0 || string(content) == "null" {
		var out string
		if json.Unmarshal(output, &out) == nil {
			return textTokens(out), nil
		}
		return 0, nil
	}
	var s string
	if json.Unmarshal(content, &s) == nil {
		return textTokens(s), nil
	}
	var parts []struct {
		Type string `json:"type"`
		Text string `json:"text"`
	}
	if err := json.Unmarshal(content, &parts); err != nil {
		return 0, invalidRequest(fmt.Sprintf("input[%d].content", i), codeInvalidType,
			"Invalid type for 'input[%d].content': expected a string or an array of content parts.", i)
	}
	var n int64
	for _, p := range parts {
		switch p.Type {
		case "input_text", "output_text", "text":
			n += textTokens(p.Text)
		}
	}
	return n, nil
}

// responseIDFromPath is the id of /v1/responses/{id}, or "".
func responseIDFromPath(path, prefix string) string {
	id, ok := strings.CutPrefix(path, prefix)
	if !ok || id == "" || strings.Contains(id, "/") {
		return ""
	}
	return id
}

// ---- responses ----

// responseObject is a Responses API response.
type responseObject struct {
	ID                 string             `json:"id"`
	Object             string             `json:"object"` // "response"
	CreatedAt          int64              `json:"created_at"`
	Status             string             `json:"status"` // completed, incomplete, in_progress
	Model              string             `json:"model"`
	Instructions       *string            `json:"instructions"`
	MaxOutputTokens    *int64             `json:"max_output_tokens"`
	PreviousResponseID *string            `json:"previous_response_id"`
	IncompleteDetails  *incompleteDetails `json:"incomplete_details"`
	Error              *struct{}          `json:"error"`
	Store              bool               `json:"store"`
	Output             []responseItem     `json:"output"`
	ParallelToolCalls  bool               `json:"parallel_tool_calls"`
	Tools              []struct{}         `json:"tools"`
	ToolChoice         string             `json:"tool_choice"`
	Usage              *responsesUsage    `json:"usage"`
}

type incompleteDetails struct {
	Reason string `json:"reason"`
}

type responseItem struct {
	Type    string         `json:"type"` // "message"
	ID      string         `json:"id"`
	Status  string         `json:"status"`
	Role    string         `json:"role"`
	Content []responsePart `json:"content"`
}

type responsePart struct {
	Type        string     `json:"type"` // "output_text"
	Text        string     `json:"text"`
	Annotations []struct{} `json:"annotations"`
}

// responsesUsage is the Responses API's usage.
type responsesUsage struct {
	InputTokens         int64        `json:"input_tokens"`
	InputTokensDetails  cachedTokens `json:"input_tokens_details"`
	OutputTokens        int64        `json:"output_tokens"`
	OutputTokensDetails reasoning    `json:"output_tokens_details"`
	TotalTokens         int64        `json:"total_tokens"`
}

type cachedTokens struct {
	CachedTokens int64 `json:"cached_tokens"`
}

type reasoning struct {
	ReasoningTokens int64 `json:"reasoning_tokens"`
}

// deletedResponse answers DELETE /v1/responses/{id}.
type deletedResponse struct {
	ID      string `json:"id"`
	Object  string `json:"object"`
	Deleted bool   `json:"deleted"`
}
