package fakeprovider

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net/http"
)

// handleMessages serves Anthropic's POST /v1/messages. It is charged like
// a chat completion: the prompt (the system prompt counted as one more
// message) plus max_tokens, which Anthropic requires, at admission, and
// settled on the usage. The reply is CompletionTokens of "ok", fewer if
// max_tokens says so (stop_reason "max_tokens" rather than "end_turn").
// With "stream": true the reply is server-sent events in Anthropic's
// framing (see streamMessages), after the same admission.
func (s *Server) handleMessages(w http.ResponseWriter, r *http.Request) {
	c, body, ok := s.begin(w, r, anthropicDialect{})
	if !ok {
		return
	}
	req, bad := parseMessages(body)
	c.model = req.model
	if bad != nil {
		c.fail(bad, outInvalid)
		return
	}
	if !c.checkModel(req.model) {
		return
	}
	prompt := chatPromptTokens(req.messages)
	if !c.admit(prompt + req.maxTokens) {
		return
	}
	if !c.proceed() {
		return
	}
	out, stop := s.cfg.CompletionTokens, "end_turn"
	if req.maxTokens < out {
		out, stop = req.maxTokens, "max_tokens"
	}
	if req.stream {
		c.streamMessages(req, prompt, out, stop)
		return
	}
	u := usage{PromptTokens: prompt, CompletionTokens: out, TotalTokens: prompt + out}
	c.succeed(anthropicMessage{
		ID:      s.newID("msg_"),
		Type:    "message",
		Role:    "assistant",
		Content: []anthropicBlock{{Type: "text", Text: completionText(out)}},
		Model:   req.model,
		// StopSequence is null unless a stop sequence ended the reply.
		StopReason: stop,
		Usage:      anthropicUsage{InputTokens: prompt, OutputTokens: out},
	}, u)
}

// handleCountTokens serves Anthropic's POST /v1/messages/count_tokens: the
// prompt of a Messages body, counted by the Messages rule (the system
// prompt as one more message), answered {"input_tokens": N}. Anthropic
// meters token counting by requests alone: it is admitted as one request
// and no tokens, and served with no usage. Faults and latency apply as to
// any call.
func (s *Server) handleCountTokens(w http.ResponseWriter, r *http.Request) {
	c, body, ok := s.begin(w, r, anthropicDialect{})
	if !ok {
		return
	}
	req, bad := parseMessagesBody(body, true)
	c.model = req.model
	if bad != nil {
		c.fail(bad, outInvalid)
		return
	}
	if !c.checkModel(req.model) {
		return
	}
	if !c.admit(0) {
		return
	}
	if !c.proceed() {
		return
	}
	c.succeed(anthropicTokenCount{InputTokens: chatPromptTokens(req.messages)}, usage{})
}

// anthropicTokenCount is count_tokens' answer.
type anthropicTokenCount struct {
	InputTokens int64 `json:"input_tokens"`
}

// ---- requests ----

type messagesRequest struct {
	Model     string            `json:"model"`
	MaxTokens *int64            `json:"max_tokens"`
	Messages  []json.RawMessage `json:"messages"`
	System    json.RawMessage   `json:"system"`
	Stream    bool              `json:"stream"`
}

// messagesCall is a validated Messages request.
type messagesCall struct {
	model     string
	maxTokens int64
	// messages holds the system prompt, when there is one, then the
	// conversation: the token estimate counts the system prompt like a
	// message.
	messages []promptMessage
	stream   bool
}

func parseMessages(body []byte) (messagesCall, *apiError) {
	return parseMessagesBody(body, false)
}

// parseMessagesBody validates a Messages request, or with counting a
// count_tokens one: the same body without max_tokens or stream, which
// Anthropic refuses there as extra inputs.
func parseMessagesBody(body []byte, counting bool) (messagesCall, *apiError) {
	var req messagesRequest
	if err := json.Unmarshal(body, &req); err != nil {
		if e := decodeError(err); e != errBadJSON {
			return messagesCall{}, e
		}
		return messagesCall{}, anthropicInvalid("There was an error parsing the body of your request: it is not valid JSON.")
	}
	c := messagesCall{model: req.Model, stream: req.Stream}
	if counting {
		switch {
		case req.Model == "":
			return c, anthropicInvalid("model: Field required")
		case req.MaxTokens != nil:
			return c, anthropicInvalid("max_tokens: Extra inputs are not permitted")
		}
		var top map[string]json.RawMessage
		if json.Unmarshal(body, &top) == nil {
			if _, ok := top["stream"]; ok {
				return c, anthropicInvalid("stream: Extra inputs are not permitted")
			}
		}
		one := int64(1)
		req.MaxTokens = &one
	}
	switch {
	case req.Model == "":
		return c, anthropicInvalid("model: Field required")
	case req.MaxTokens == nil:
		return c, anthropicInvalid("max_tokens: Field required")
	case *req.MaxTokens < 1:
		return c, anthropicInvalid("max_tokens: Input should be greater than or equal to 1")
	case *req.MaxTokens > maxTokenParam:
		return c, anthropicInvalid("max_tokens: %d > %d, which is the maximum allowed number of output tokens for %s", *req.MaxTokens, maxTokenParam, req.Model)
	case req.Messages == nil:
		return c, anthropicInvalid("messages: Field required")
	case len(req.Messages) == 0:
		return c, anthropicInvalid("messages: at least one message is required")
	}
	c.maxTokens = *req.MaxTokens
	if sys := bytes.TrimSpace(req.System); len(sys) > 0 && string(sys) != "null" {
		texts, err := anthropicContent(sys, "system")
		if err != nil {
			return c, err
		}
		c.messages = append(c.messages, promptMessage{texts: texts})
	}
	for i, raw := range req.Messages {
		var m struct {
			Role    string          `json:"role"`
			Content json.RawMessage `json:"content"`
		}
		if err := json.Unmarshal(raw, &m); err != nil {
			return c, anthropicInvalid("messages.%d: Input should be a valid dictionary", i)
		}
		if m.Role != "user" && m.Role != "assistant" {
			return c, anthropicInvalid("messages.%d.role: Input should be 'user' or 'assistant'", i)
		}
		content := bytes.TrimSpace(m.Content)
		if len(content) == 0 || string(content) == "null" {
			return c, anthropicInvalid("messages.%d.content: Field required", i)
		}
		texts, err := anthropicContent(content, fmt.Sprintf("messages.%d.content", i))
		if err != nil {
			return c, err
		}
		c.messages = append(c.messages, promptMessage{texts: texts})
	}
	return c, nil
}

// anthropicContent reads content given as a string or as an array of
// blocks, returning the texts the estimate counts: the string, or the text
// of each "text" block (images, tool use and the like count nothing).
func anthropicContent(raw json.RawMessage, path string) ([]string, *apiError) {
	switch raw[0] {
	case '"':
		var s string
		if err := json.Unmarshal(raw, &s); err != nil {
			return nil, anthropicInvalid("%s: Input should be a valid string", path)
		}
		return []string{s}, nil
	case '[':
		var blocks []struct {
			Type *string `json:"type"`
			Text *string `json:"text"`
		}
		if err := json.Unmarshal(raw, &blocks); err != nil {
			return nil, anthropicInvalid("%s: Input should be a valid list of content blocks", path)
		}
		var texts []string
		for i, b := range blocks {
			if b.Type == nil || *b.Type == "" {
				return nil, anthropicInvalid("%s.%d.type: Field required", path, i)
			}
			if *b.Type != "text" {
				continue
			}
			if b.Text == nil {
				return nil, anthropicInvalid("%s.%d.text: Field required", path, i)
			}
			texts = append(texts, *b.Text)
		}
		return texts, nil
	default:
		return nil, anthropicInvalid("%s: Input should be a valid string or list of content blocks", path)
	}
}

// ---- responses ----

type anthropicMessage struct {
	ID           string           `json:"id"`
	Type         string           `json:"type"` // "message"
	Role         string           `json:"role"` // "assistant"
	Content      []anthropicBlock `json:"content"`
	Model        string           `json:"model"`
	StopReason   string           `json:"stop_reason"`
	StopSequence *string          `json:"stop_sequence"`
	Usage        anthropicUsage   `json:"usage"`
}

type anthropicBlock struct {
	Type string `json:"type"`
	Text string `json:"text"`
}

type anthropicUsage struct {
	InputTokens  int64 `json:"input_tokens"`
	OutputTokens int64 `json:"output_tokens"`
}
