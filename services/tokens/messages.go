package tokens

import (
	"bytes"
	"encoding/json"

	"github.com/sluicehq/sluice/messages"
)

// messagesBody is what the estimate reads of an Anthropic Messages body.
type messagesBody struct {
	Messages  []json.RawMessage `json:"messages"`
	System    json.RawMessage   `json:"system"`
	MaxTokens *int64            `json:"max_tokens"`
	Stream    bool              `json:"stream"`
}

// anthropicMessages estimates an Anthropic Messages body by the chat rule
// (see the package documentation). max_tokens has no default: Anthropic
// refuses a body without it, so sluice refuses it before reserving.
func anthropicMessages(body []byte) (Estimate, *messages.Error) {
	var b messagesBody
	if err := json.Unmarshal(body, &b); err != nil {
		return Estimate{}, bodyError(err)
	}
	if len(b.Messages) == 0 {
		return Estimate{}, messages.FieldError("body.messages", "must be a non-empty array")
	}
	if b.MaxTokens == nil {
		return Estimate{}, messages.FieldError("body.max_tokens", "is required by the Messages API")
	}
	if *b.MaxTokens < 1 || *b.MaxTokens > MaxMaxTokens {
		return Estimate{}, messages.FieldError("body.max_tokens", "must be between 1 and %d", MaxMaxTokens)
	}
	prompt, bad := messagesPrompt(b)
	if bad != nil {
		return Estimate{}, bad
	}
	return Estimate{Prompt: prompt, Completion: *b.MaxTokens, Stream: b.Stream}, nil
}

// messagesPrompt estimates the prompt of a decoded Messages body, which
// has messages.
func messagesPrompt(b messagesBody) (int64, *messages.Error) {
	var prompt int64 = 3
	if sys := bytes.TrimSpace(b.System); len(sys) > 0 && string(sys) != "null" {
		n, err := content(sys, "body.system")
		if err != nil {
			return 0, err
		}
		prompt += 3 + n
	}
	for _, raw := range b.Messages {
		var m chatMessage
		if err := json.Unmarshal(raw, &m); err != nil {
			return 0, messages.FieldError("body.messages", "each message must be an object with a content")
		}
		n, err := content(m.Content, "body.messages")
		if err != nil {
			return 0, err
		}
		prompt += 3 + n
	}
	return prompt, nil
}
