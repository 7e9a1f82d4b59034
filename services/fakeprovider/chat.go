package fakeprovider

import (
	"net/http"
	"strings"
)

// handleChat serves POST /v1/chat/completions.
func (s *Server) handleChat(w http.ResponseWriter, r *http.Request) {
	s.serveChat(w, r, openAIDialect{}, "")
}

// serveChat serves a chat completion in dialect d. urlModel is the model
// the URL names (Azure's deployment), which replaces the body's; "" when
// the body must name it.
func (s *Server) serveChat(w http.ResponseWriter, r *http.Request, d dialect, urlModel string) {
	c, body, ok := s.begin(w, r, d)
	if !ok {
		return
	}
	req, bad := parseChat(body, urlModel)
	c.model = req.model
	if bad != nil {
		c.fail(bad, outInvalid)
		return
	}
	if !c.checkModel(req.model) {
		return
	}
	// Charged at admission as OpenAI does: the prompt plus the most the
	// completions may use, whatever they turn out to use.
	prompt := chatPromptTokens(req.messages)
	allowance := s.cfg.DefaultMaxTokens
	if req.hasMaxTokens {
		allowance = req.maxTokens
	}
	if !c.admit(prompt + allowance*req.n) {
		return
	}
	if !c.proceed() {
		return
	}
	// Each choice "generates" CompletionTokens unless max_tokens cuts it
	// short, which OpenAI reports as finish_reason "length".
	perChoice, finish := s.cfg.CompletionTokens, "stop"
	if req.hasMaxTokens && req.maxTokens < perChoice {
		perChoice, finish = req.maxTokens, "length"
	}
	if req.stream {
		c.stream(req, prompt, perChoice, finish)
		return
	}
	u := usage{PromptTokens: prompt, CompletionTokens: perChoice * req.n}
	u.TotalTokens = u.PromptTokens + u.CompletionTokens
	resp := chatCompletion{
		ID:      s.newID("chatcmpl-"),
		Object:  "chat.completion",
		Created: c.adm.at.Unix(),
		Model:   req.model,
		Usage:   u,
	}
	text := completionText(perChoice)
	for i := range req.n {
		resp.Choices = append(resp.Choices, chatChoice{
			Index:        i,
			Message:      assistantMessage{Role: "assistant", Content: text},
			FinishReason: finish,
		})
	}
	c.succeed(resp, u)
}

// completionText is the deterministic reply of n tokens: "ok ok ok".
// Streamed, it is sent as "ok" then " ok" per token, so that the chunks
// concatenate to the same text.
func completionText(n int64) string {
	var b strings.Builder
	for i := range n {
		b.WriteString(completionToken(i))
	}
	return b.String()
}

func completionToken(i int64) string {
	if i == 0 {
		return "ok"
	}
	return " ok"
}
