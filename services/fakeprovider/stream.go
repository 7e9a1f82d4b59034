package fakeprovider

import (
	"encoding/json"
	"net/http"
	"time"
)

// sseWriter writes an admitted call's answer as server-sent events. Every
// event is flushed as written.
type sseWriter struct {
	c     *call
	rc    *http.ResponseController
	delay time.Duration
}

// openStream writes the headers of a streamed answer (the dialect's
// rate-limit and call headers, text/event-stream) and its 200 status.
func (c *call) openStream() *sseWriter {
	h := c.w.Header()
	c.d.setRateHeaders(h, c.view, c.s.cfg.Clock())
	c.d.setCallHeaders(h, c.start)
	h.Set("Content-Type", "text/event-stream; charset=utf-8")
	h.Set("Cache-Control", "no-cache")
	c.w.WriteHeader(http.StatusOK)
	return &sseWriter{c: c, rc: http.NewResponseController(c.w), delay: c.s.behavior.Load().chunkDelay}
}

// send writes one event, "event: <name>\n" (when name is not empty) then
// "data: <data>\n\n", after waiting ChunkDelay when wait is set. It
// returns false when the client is gone.
func (s *sseWriter) send(wait bool, name string, data []byte) bool {
	ctx := s.c.r.Context()
	if wait && s.delay > 0 {
		t := time.NewTimer(s.delay)
		select {
		case <-t.C:
		case <-ctx.Done():
			t.Stop()
		}
	}
	if ctx.Err() != nil {
		return false
	}
	var ev []byte
	if name != "" {
		ev = append(append(append(ev, "event: "...), name...), '\n')
	}
	ev = append(append(append(ev, "data: "...), data...), '\n', '\n')
	if _, err := s.c.w.Write(ev); err != nil {
		return false
	}
	return s.rc.Flush() == nil
}

// abort ends a stream whose client went away: the call is counted
// stream_aborted, and its tokens are settled against what was sent, as a
// provider bills what it generated.
func (c *call) abort(prompt, sent int64) {
	u := usage{PromptTokens: prompt, CompletionTokens: sent, TotalTokens: prompt + sent}
	c.s.limits.settle(c.adm.ticket, u.TotalTokens)
	c.end(outStreamAborted, http.StatusOK, u)
}

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
	sse := c.openStream()
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
		ok := sse.send(!first, "", data)
		first = false
		return ok
	}
	chunk := func(choices ...chunkChoice) []byte {
		ch := base
		ch.Choices = choices
		b, _ := json.Marshal(ch) // the fake's own types: cannot fail
		return b
	}

	empty := ""
	for i := range req.n {
		if !send(chunk(chunkChoice{Index: i, Delta: delta{Role: "assistant", Content: &empty}})) {
			c.abort(prompt, sent)
			return
		}
	}
	for t := range perChoice {
		text := completionToken(t)
		for i := range req.n {
			if !send(chunk(chunkChoice{Index: i, Delta: delta{Content: &text}})) {
				c.abort(prompt, sent)
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
