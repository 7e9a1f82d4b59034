package tokens

import (
	"bytes"
	"encoding/json"

	"github.com/sluicehq/sluice/messages"
)

// responsesBody is what the estimate reads of an OpenAI Responses body.
type responsesBody struct {
	Input           json.RawMessage `json:"input"`
	Instructions    json.RawMessage `json:"instructions"`
	MaxOutputTokens *int64          `json:"max_output_tokens"`
	Stream          bool            `json:"stream"`
}

// responsesItem is what the estimate reads of one input item: a message
// (its content, a string or parts), or an item that carries an output
// string (function_call_output).
type responsesItem struct {
	Content json.RawMessage `json:"content"`
	Output  json.RawMessage `json:"output"`
}

// responsesPart is a content part of an input message: input_text,
// output_text (an earlier answer given back) and text count their text.
type responsesPart struct {
	Type string `json:"type"`
	Text string `json:"text"`
}

// responses estimates an OpenAI Responses body by the chat rule:
// instructions, when given, count as one message, a string input as one
// message, and each item of an array input as one message (its text
// parts, or a function_call_output's output string), + 3 for the reply;
// plus max_output_tokens, else defaultMaxTokens, as chat's max_tokens.
// The context a previous_response_id brings is not in the body: the
// provider's usage settles it.
func responses(body []byte, defaultMaxTokens int64) (Estimate, *messages.Error) {
	var b responsesBody
	if err := json.Unmarshal(body, &b); err != nil {
		return Estimate{}, bodyError(err)
	}
	in := bytes.TrimSpace(b.Input)
	if len(in) == 0 || string(in) == "null" {
		return Estimate{}, messages.FieldError("body.input", "is required")
	}
	prompt, bad := responsesPrompt(in, b.Instructions)
	if bad != nil {
		return Estimate{}, bad
	}
	maxTokens := min(max(defaultMaxTokens, 0), MaxMaxTokens)
	if b.MaxOutputTokens != nil {
		if *b.MaxOutputTokens < 1 || *b.MaxOutputTokens > MaxMaxTokens {
			return Estimate{}, messages.FieldError("body.max_output_tokens", "must be between 1 and %d", MaxMaxTokens)
		}
		maxTokens = *b.MaxOutputTokens
	}
	return Estimate{Prompt: prompt, Completion: maxTokens, Stream: b.Stream}, nil
}

// responsesPrompt estimates a Responses body's input (not empty, not
// null) and instructions.
func responsesPrompt(in, instructions json.RawMessage) (int64, *messages.Error) {
	var prompt int64 = 3
	if ins := bytes.TrimSpace(instructions); len(ins) > 0 && string(ins) != "null" {
		var s string
		if err := json.Unmarshal(ins, &s); err != nil {
			return 0, messages.FieldError("body.instructions", "must be a string")
		}
		prompt += 3 + Text(s)
	}
	var s string
	if json.Unmarshal(in, &s) == nil {
		return prompt + 3 + Text(s), nil
	}
	var items []json.RawMessage
	if err := json.Unmarshal(in, &items); err != nil || len(items) == 0 {
		return 0, messages.FieldError("body.input", "must be a string or a non-empty array of input items")
	}
	for _, raw := range items {
		var it responsesItem
		if err := json.Unmarshal(raw, &it); err != nil {
			return 0, messages.FieldError("body.input", "each input item must be an object")
		}
		prompt += 3
		n, bad := responsesContent(it)
		if bad != nil {
			return 0, bad
		}
		prompt += n
	}
	return prompt, nil
}

// responsesContent counts one input item's text.
func responsesContent(it responsesItem) (int64, *messages.Error) {
	c := bytes.TrimSpace(it.Content)
	if len(c) == 0 || string(c) == "null" {
		var out string
		if json.Unmarshal(it.Output, &out) == nil {
			return Text(out), nil
		}
		return 0, nil
	}
	switch c[0] {
	case '"':
		var s string
		if err := json.Unmarshal(c, &s); err != nil {
			return 0, messages.FieldError("body.input", "content: %v", err)
		}
		return Text(s), nil
	case '[':
		var parts []responsesPart
		if err := json.Unmarshal(c, &parts); err != nil {
			return 0, messages.FieldError("body.input", "content parts must be objects")
		}
		var n int64
		for _, p := range parts {
			if p.Type == "input_text" || p.Type == "output_text" || p.Type == "text" {
				n += Text(p.Text)
			}
		}
		return n, nil
	default:
		return 0, messages.FieldError("body.input", "content must be a string or an array of parts")
	}
}

// MaxResponseIDLen bounds a stored response's id.
const MaxResponseIDLen = 256

// storedResponse checks the body of a GET or DELETE of a stored response,
// {"response_id": "resp_..."}, and reserves no tokens: one request.
func storedResponse(body []byte) (Estimate, *messages.Error) {
	var b struct {
		ResponseID *string `json:"response_id"`
	}
	if err := json.Unmarshal(body, &b); err != nil {
		return Estimate{}, bodyError(err)
	}
	if b.ResponseID == nil || !ValidResponseID(*b.ResponseID) {
		return Estimate{}, messages.FieldError("body.response_id", "must be a response id: 1 to %d letters, digits, '-' or '_'", MaxResponseIDLen)
	}
	return Estimate{}, nil
}

// ValidResponseID reports whether id can be a stored response's id (and
// so a path segment): 1 to MaxResponseIDLen letters, digits, '-' or '_'.
func ValidResponseID(id string) bool {
	if id == "" || len(id) > MaxResponseIDLen {
		return false
	}
	for _, r := range id {
		if !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '-' || r == '_') {
			return false
		}
	}
	return true
}
