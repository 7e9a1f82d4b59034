package fakeprovider

import (
	"encoding/json"
	"net/http"
	"time"
)

// stream answers an admitted chat call as server-sent events, in OpenAI's
// framing: a "data: <chunk>\n\n" event per chunk (the role first, then one
// content delta per token and choice, then each choice's finish_reason),
// when asked a last chunk with empty choices and the usage, then
// "data: [DONE]\n\n". Every event is flushed, and ChunkDelay is waited
// before each one after the first.
//
// A client that goes away mid-stream ends the call as stream_aborted; the
// tokens are settled against what was sent, as a provider bills what it
// generated.
func (c *call) stream(req chatCall, prompt, perChoice int64, finish string) {
	h := c.w.Header()
	c.d.setRateHeaders(h, c.view, c.s.cfg.Clock())
	c.d.setCallHeaders(h, c.start)
	h.Set("Content-Type", "text/event-stream; charset=utf-8")
	h.Set("Cache-Control", "no-cache")
	c.w.WriteHeader(http.StatusOK)

	rc := http.NewResponseController(c.w)
	delay := c.s.behavior.Load().chunkDelay
	base := chatChunk{
		ID:      c.s.newID("chatcmpl-"),
		Object:  "chat.completion.chunk",
		Created: c.adm.at.Unix(),
		Model:   req.model,
	}
	if req.includeUsage {
		base.Usage = json.RawMessage("null")
	}
	var sent int64 // completion tokens sent, over all choices
	first := true
	// send writes one event; false means the client is gone.
	send := func(data []byte) bool {
		if !first && delay > 0 {
			t := time.NewTimer(delay)
			select {
			case <-t.C:
			case <-c.r.Context().Done():
				t.Stop()
			}
		}
		first = false
		if c.r.Context().Err() != nil {
			return false
		}
		if _, err := c.w.Write(append(append([]byte("data: "), data...), '\n', '\n')); err != nil {
			return false
		}
		return rc.Flush() == nil
	}
	chunk := func(choices ...chunkChoice) []byte {
		ch := base
		ch.Choices = choices
		b, _ := json.Marshal(ch) // the fake's own types: cannot fail
		return b
	}
	aborted := func() {
		u := usage{PromptTokens: prompt, CompletionTokens: sent, TotalTokens: prompt + sent}
		c.s.limits.settle(c.adm.ticket, u.TotalTokens)
		c.end(outStreamAborted, http.StatusOK, u)
	}

	empty := ""
	for i := range req.n {
		if !send(chunk(chunkChoice{Index: i, Delta: delta{Role: "assistant", Content: &empty}})) {
			aborted()
			return
		}
	}
	for t := range perChoice {
		text := completionToken(t)
		for i := range req.n {
			if !send(chunk(chunkChoice{Index: i, Delta: delta{Content: &text}})) {
				aborted()
				return
			}
			sent++
		}
	}

	// Everything was generated: settle and count the call before the
	// closing events, so that a client that has read [DONE] finds both.
	u := usage{PromptTokens: prompt, CompletionTokens: sent, TotalTokens: prompt + sent}
	c.s.limits.settle(c.adm.ticket, u.TotalTokens)
	c.end(outServed, http.StatusOK, u)

	for i := range req.n {
		if !send(chunk(chunkChoice{Index: i, Delta: delta{}, FinishReason: &finish})) {
			return
		}
	}
	if req.includeUsage {
		final := base
		final.Choices = []chunkChoice{}
		final.Usage, _ = json.Marshal(u)
		b, _ := json.Marshal(final)
		if !send(b) {
			return
		}
	}
	send([]byte("[DONE]"))
}
