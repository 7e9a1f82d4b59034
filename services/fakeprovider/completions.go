package fakeprovider

import (
	"bytes"
	"encoding/json"
	"net/http"
)

// completionsDefaultMaxTokens is what a legacy completions request
// without max_tokens may generate per completion: 16, as OpenAI documents.
// It is charged at admission in place of Config.DefaultMaxTokens, which is
// chat's.
const completionsDefaultMaxTokens = 16

// maxPrompts bounds the prompts of one batch, as sluice's estimate does.
const maxPrompts = 2048

// handleCompletions serves OpenAI's legacy POST /v1/completions.
func (s *Server) handleCompletions(w http.ResponseWriter, r *http.Request) {
	s.serveCompletions(w, r, openAIDialect{}, "")
}

// serveCompletions serves a legacy completion in dialect d; urlModel is as
// for serveChat. It is charged at admission the prompt (as embeddings'
// input is counted) plus max_tokens (default 16) × best_of (else n) × the
// prompts of the batch, and settled on the usage: each of those
// completions "generates" CompletionTokens of "ok", fewer if max_tokens
// says so (finish_reason "length"). Every prompt gets n choices, indexed
// prompt × n + choice; best_of generates (and reports in usage) best_of
// per prompt and returns n. With "stream": true the answer is OpenAI's
// server-sent events (see streamCompletions).
func (s *Server) serveCompletions(w http.ResponseWriter, r *http.Request, d dialect, urlModel string) {
	c, body, ok := s.begin(w, r, d)
	if !ok {
		return
	}
	req, bad := parseCompletions(body, urlModel)
	c.model = req.model
	if bad != nil {
		c.fail(bad, outInvalid)
		return
	}
	if !c.checkModel(req.model) {
		return
	}
	prompt := embeddingTokens(req.prompts)
	prompts := int64(len(req.prompts))
	if !c.admit(prompt + req.maxTokens*req.bestOf*prompts) {
		return
	}
	if !c.proceed() {
		return
	}
	perChoice, finish := s.cfg.CompletionTokens, "stop"
	if req.maxTokens < perChoice {
		perChoice, finish = req.maxTokens, "length"
	}
	if req.stream {
		c.streamCompletions(req, prompt, perChoice, finish)
		return
	}
	u := usage{PromptTokens: prompt, CompletionTokens: perChoice * req.bestOf * prompts}
	u.TotalTokens = u.PromptTokens + u.CompletionTokens
	resp := textCompletion{
		ID:      s.newID("cmpl-"),
		Object:  "text_completion",
		Created: c.adm.at.Unix(),
		Model:   req.model,
		Choices: []completionChoice{},
	}
	resp.Usage, _ = json.Marshal(u)
	text := completionText(perChoice)
	for p := range prompts {
		for i := range req.n {
			f := finish
			resp.Choices = append(resp.Choices, completionChoice{Index: p*req.n + i, Text: text, FinishReason: &f})
		}
	}
	c.succeed(resp, u)
}

// streamCompletions answers an admitted legacy completion as server-sent
// events in OpenAI's framing: a "data: <chunk>" per token and choice
// ({"object": "text_completion", "choices": [{"text": " ok", "index",
// "logprobs": null, "finish_reason": null}]}), then each choice's
// finish_reason with an empty text, when asked (stream_options.
// include_usage) a last chunk with empty choices and the usage (and
// "usage": null on the others, as OpenAI sends it), then "data: [DONE]".
// Settlement, counting and a client going away are as for chat streams.
func (c *call) streamCompletions(req completionsCall, prompt, perChoice int64, finish string) {
	sse := c.openStream()
	base := textCompletion{
		ID:      c.s.newID("cmpl-"),
		Object:  "text_completion",
		Created: c.adm.at.Unix(),
		Model:   req.model,
	}
	if req.includeUsage {
		base.Usage = json.RawMessage("null")
	}
	var sent int64
	first := true
	send := func(v textCompletion) bool {
		b, _ := json.Marshal(v) // the fake's own types: cannot fail
		ok := sse.send(!first, "", b)
		first = false
		return ok
	}
	chunk := func(choices ...completionChoice) textCompletion {
		ch := base
		ch.Choices = choices
		return ch
	}
	choices := int64(len(req.prompts)) * req.n
	for t := range perChoice {
		for i := range choices {
			if !send(chunk(completionChoice{Index: i, Text: completionToken(t)})) {
				c.abort(prompt, sent)
				return
			}
			sent++
		}
	}
	u := usage{PromptTokens: prompt, CompletionTokens: sent, TotalTokens: prompt + sent}
	c.s.limits.settle(c.adm.ticket, u.TotalTokens)
	c.end(outServed, http.StatusOK, u)
	for i := range choices {
		f := finish
		if !send(chunk(completionChoice{Index: i, FinishReason: &f})) {
			return
		}
	}
	if req.includeUsage {
		final := chunk()
		final.Choices = []completionChoice{}
		final.Usage, _ = json.Marshal(u)
		if !send(final) {
			return
		}
	}
	sse.send(false, "", []byte("[DONE]"))
}

// ---- requests ----

type completionsRequest struct {
	Model         string          `json:"model"`
	Prompt        json.RawMessage `json:"prompt"`
	MaxTokens     *int64          `json:"max_tokens"`
	N             *int64          `json:"n"`
	BestOf        *int64          `json:"best_of"`
	Stream        bool            `json:"stream"`
	StreamOptions *struct {
		IncludeUsage bool `json:"include_usage"`
	} `json:"stream_options"`
}

// completionsCall is a validated legacy completions request.
type completionsCall struct {
	model   string
	prompts []embeddingInput // one per prompt of the batch
	// maxTokens is per completion: the body's, or 16.
	maxTokens    int64
	n, bestOf    int64 // bestOf is n when not given
	stream       bool
	includeUsage bool
}

// parseCompletions validates a legacy completions request; urlModel is as
// for parseChat.
func parseCompletions(body []byte, urlModel string) (completionsCall, *apiError) {
	var req completionsRequest
	if err := json.Unmarshal(body, &req); err != nil {
		return completionsCall{}, decodeError(err)
	}
	if urlModel != "" {
		req.Model = urlModel
	}
	c := completionsCall{model: req.Model, maxTokens: completionsDefaultMaxTokens, n: 1, stream: req.Stream}
	if req.Model == "" {
		return c, invalidRequest("model", codeMissingParam, "Missing required parameter: 'model'.")
	}
	prompts, bad := parsePrompt(req.Prompt)
	if bad != nil {
		return c, bad
	}
	c.prompts = prompts
	if req.MaxTokens != nil {
		if *req.MaxTokens < 0 || *req.MaxTokens > maxTokenParam {
			return c, invalidRequest("max_tokens", codeInvalidValue, "%d is not in 0..%d - 'max_tokens'", *req.MaxTokens, maxTokenParam)
		}
		c.maxTokens = *req.MaxTokens
	}
	if req.N != nil {
		if *req.N < 1 || *req.N > maxChoices {
			return c, invalidRequest("n", codeInvalidValue, "%d is not in 1..%d - 'n'", *req.N, maxChoices)
		}
		c.n = *req.N
	}
	c.bestOf = c.n
	if req.BestOf != nil {
		switch {
		case *req.BestOf < 1 || *req.BestOf > maxChoices:
			return c, invalidRequest("best_of", codeInvalidValue, "%d is not in 1..%d - 'best_of'", *req.BestOf, maxChoices)
		case *req.BestOf < c.n:
			return c, invalidRequest("best_of", codeInvalidValue, "best_of must be greater than or equal to n.")
		case *req.BestOf > 1 && req.Stream:
			return c, invalidRequest("best_of", codeInvalidValue, "Cannot stream results with best_of greater than 1.")
		}
		c.bestOf = *req.BestOf
	}
	c.includeUsage = req.StreamOptions != nil && req.StreamOptions.IncludeUsage
	return c, nil
}

// parsePrompt accepts OpenAI's four shapes of prompt: a string (which may
// be empty), an array of strings, an array of token ids, and an array of
// arrays of token ids; each string or list of ids is one prompt.
func parsePrompt(raw json.RawMessage) ([]embeddingInput, *apiError) {
	raw = bytes.TrimSpace(raw)
	if len(raw) == 0 || string(raw) == "null" {
		return nil, invalidRequest("prompt", codeMissingParam, "Missing required parameter: 'prompt'.")
	}
	invalid := invalidRequest("prompt", codeInvalidValue,
		"'prompt' must be a string, an array of strings, an array of token ids or an array of arrays of token ids, none of the arrays empty.")
	var (
		one     string
		strs    []string
		ids     []int64
		idLists [][]int64
		out     []embeddingInput
	)
	switch {
	case json.Unmarshal(raw, &one) == nil:
		return []embeddingInput{{text: one, isText: true}}, nil
	case json.Unmarshal(raw, &strs) == nil:
		for _, s := range strs {
			out = append(out, embeddingInput{text: s, isText: true})
		}
	case json.Unmarshal(raw, &ids) == nil:
		if len(ids) > 0 {
			out = []embeddingInput{{ids: ids}}
		}
	case json.Unmarshal(raw, &idLists) == nil:
		for _, l := range idLists {
			if len(l) == 0 {
				return nil, invalid
			}
			out = append(out, embeddingInput{ids: l})
		}
	default:
		return nil, invalid
	}
	if len(out) == 0 || len(out) > maxPrompts {
		return nil, invalid
	}
	for _, in := range out {
		for _, id := range in.ids {
			if id < 0 {
				return nil, invalid
			}
		}
	}
	return out, nil
}

// ---- responses ----

// textCompletion is a legacy completion, or one chunk of its stream.
type textCompletion struct {
	ID      string             `json:"id"`
	Object  string             `json:"object"` // "text_completion"
	Created int64              `json:"created"`
	Model   string             `json:"model"`
	Choices []completionChoice `json:"choices"`
	// Usage is the answer's usage; in a stream, null on every chunk but
	// the last when the client asked for usage, absent when it did not.
	Usage json.RawMessage `json:"usage,omitempty"`
}

type completionChoice struct {
	Text         string    `json:"text"`
	Index        int64     `json:"index"`
	Logprobs     *struct{} `json:"logprobs"`
	FinishReason *string   `json:"finish_reason"`
}
