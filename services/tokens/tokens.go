// Package tokens owns the token estimate that a call reserves against a
// deployment's TPM limit before the provider has counted anything.
//
// Providers charge TPM at admission from the prompt's size and max_tokens
// (times n), and report the real usage afterwards. sluice does the same: it
// reserves the estimate, and settles it against the reported usage. The
// estimate needs no tokenizer: it is OpenAI's rule of thumb (about four bytes
// of English text per token) plus the per-message overhead of the chat
// format:
//
//	chat:       3 + ceil(len(content)/4) per message (+1 with a name), +3 for
//	            the reply, + max_tokens (or the pool's default) × n
//	messages:   Anthropic's Messages API, by the chat rule: 3 +
//	            ceil(len(content)/4) per message, the system prompt (when
//	            present) counted as one more message, +3 for the reply, +
//	            max_tokens, which Anthropic requires (there is no n, and
//	            messages carry no names)
//	embeddings: ceil(len(text)/4) per input string, or the count of token ids
//	completions: (OpenAI's legacy API) the prompt as embeddings' input is
//	            counted (strings, or token ids), + max_tokens (default 16, as
//	            OpenAI documents, not the pool's default) × best_of (when
//	            given; else n) × the number of prompts in a batch
//	count_tokens: (Anthropic's) nothing: it is metered by requests alone and
//	            generates nothing; its body is checked as a Messages body
//	            without max_tokens
//	responses:  (OpenAI's Responses API) the chat rule, instructions (when
//	            given) counted as one message, a string input as one, each
//	            item of an array input as one (its input_text, output_text
//	            and text parts, or a function_call_output's output), +
//	            max_output_tokens (else the pool's default_max_tokens)
//	GET and DELETE of a stored response: nothing (one request); the body
//	            names it, {"response_id": "resp_..."}
//
// Content given as parts (blocks, for Anthropic) counts the text of its
// "text" parts; images and tool blocks count nothing.
//
// Underestimates are corrected at settlement; the fake provider counts with
// the same rule, so tests can compare the two exactly.
package tokens

import (
	"bytes"
	"encoding/json"
	"errors"

	"github.com/sluicehq/sluice/messages"
)

// Bounds on request fields that a provider would refuse anyway.
const (
	MaxN         = 128
	MaxMaxTokens = 10_000_000
)

// Estimate is what a call reserves.
type Estimate struct {
	// Prompt is the estimated prompt size in tokens.
	Prompt int64
	// Completion is the most the provider may generate: max_tokens × n.
	Completion int64
	// Stream is true when the body asks for a streamed answer.
	Stream bool
}

// Total is the reservation: Prompt + Completion.
func (e Estimate) Total() int64 { return e.Prompt + e.Completion }

// Of validates a provider request body for endpoint and estimates its
// tokens. defaultMaxTokens stands in for max_tokens when the body sets
// none, held to [0, MaxMaxTokens] as a body's max_tokens is, so that no
// default times n can overflow into a negative reservation.
// Errors are invalid_request naming the field, e.g. "body.messages".
func Of(endpoint messages.Endpoint, body []byte, defaultMaxTokens int64) (Estimate, *messages.Error) {
	switch endpoint {
	case messages.EndpointChatCompletions:
		return chat(body, defaultMaxTokens)
	case messages.EndpointEmbeddings:
		return embeddings(body)
	case messages.EndpointMessages:
		return anthropicMessages(body)
	case messages.EndpointCompletions:
		return completions(body)
	case messages.EndpointCountTokens:
		return countTokens(body)
	case messages.EndpointResponses:
		return responses(body, defaultMaxTokens)
	case messages.EndpointResponseGet, messages.EndpointResponseDelete:
		return storedResponse(body)
	default:
		return Estimate{}, messages.FieldError("endpoint", "unknown endpoint %q", endpoint)
	}
}

// Text is the estimate for a piece of text: ceil(len/4) tokens.
func Text(s string) int64 { return (int64(len(s)) + 3) / 4 }

type chatBody struct {
	Messages            []json.RawMessage `json:"messages"`
	MaxTokens           *int64            `json:"max_tokens"`
	MaxCompletionTokens *int64            `json:"max_completion_tokens"`
	N                   *int64            `json:"n"`
	Stream              bool              `json:"stream"`
}

type chatMessage struct {
	Content json.RawMessage `json:"content"`
	Name    string          `json:"name"`
}

type contentPart struct {
	Type string `json:"type"`
	Text string `json:"text"`
}

func chat(body []byte, defaultMaxTokens int64) (Estimate, *messages.Error) {
	var b chatBody
	if err := json.Unmarshal(body, &b); err != nil {
		return Estimate{}, bodyError(err)
	}
	if len(b.Messages) == 0 {
		return Estimate{}, messages.FieldError("body.messages", "must be a non-empty array")
	}
	var prompt int64 = 3
	for _, raw := range b.Messages {
		var m chatMessage
		if err := json.Unmarshal(raw, &m); err != nil {
			return Estimate{}, messages.FieldError("body.messages", "each message must be an object with a content")
		}
		prompt += 3
		if m.Name != "" {
			prompt++
		}
		n, err := content(m.Content, "body.messages")
		if err != nil {
			return Estimate{}, err
		}
		prompt += n
	}
	maxTokens := min(max(defaultMaxTokens, 0), MaxMaxTokens)
	for _, f := range []struct {
		name string
		v    *int64
	}{{"body.max_tokens", b.MaxTokens}, {"body.max_completion_tokens", b.MaxCompletionTokens}} {
		if f.v == nil {
			continue
		}
		if *f.v < 1 || *f.v > MaxMaxTokens {
			return Estimate{}, messages.FieldError(f.name, "must be between 1 and %d", MaxMaxTokens)
		}
		maxTokens = *f.v
	}
	n := int64(1)
	if b.N != nil {
		if *b.N < 1 || *b.N > MaxN {
			return Estimate{}, messages.FieldError("body.n", "must be between 1 and %d", MaxN)
		}
		n = *b.N
	}
	return Estimate{Prompt: prompt, Completion: maxTokens * n, Stream: b.Stream}, nil
}

// content estimates a message's content: a string, or parts of which
// the "text" ones count. field names the body field in errors.
func content(raw json.RawMessage, field string) (int64, *messages.Error) {
	raw = bytes.TrimSpace(raw)
	if len(raw) == 0 || string(raw) == "null" {
		return 0, nil
	}
	switch raw[0] {
	case '"':
		var s string
		if err := json.Unmarshal(raw, &s); err != nil {
			return 0, messages.FieldError(field, "content: %v", err)
		}
		return Text(s), nil
	case '[':
		var parts []contentPart
		if err := json.Unmarshal(raw, &parts); err != nil {
			return 0, messages.FieldError(field, "content parts must be objects")
		}
		var n int64
		for _, p := range parts {
			if p.Type == "text" {
				n += Text(p.Text)
			}
		}
		return n, nil
	default:
		return 0, messages.FieldError(field, "content must be a string or an array of parts")
	}
}

func embeddings(body []byte) (Estimate, *messages.Error) {
	var b struct {
		Input  json.RawMessage `json:"input"`
		Stream bool            `json:"stream"`
	}
	if err := json.Unmarshal(body, &b); err != nil {
		return Estimate{}, bodyError(err)
	}
	in := bytes.TrimSpace(b.Input)
	if len(in) == 0 || string(in) == "null" {
		return Estimate{}, messages.FieldError("body.input", "is required")
	}
	est, bad := embeddingInput(in)
	est.Stream = b.Stream
	return est, bad
}

// embeddingInput estimates an embeddings input: a string, strings, token
// ids, or lists of token ids.
func embeddingInput(in json.RawMessage) (Estimate, *messages.Error) {
	var s string
	if json.Unmarshal(in, &s) == nil {
		return Estimate{Prompt: Text(s)}, nil
	}
	var strs []string
	if json.Unmarshal(in, &strs) == nil && len(strs) > 0 {
		var n int64
		for _, s := range strs {
			n += Text(s)
		}
		return Estimate{Prompt: n}, nil
	}
	var ids []int64
	if json.Unmarshal(in, &ids) == nil && len(ids) > 0 {
		return Estimate{Prompt: int64(len(ids))}, nil
	}
	var idLists [][]int64
	if json.Unmarshal(in, &idLists) == nil && len(idLists) > 0 {
		var n int64
		for _, l := range idLists {
			n += int64(len(l))
		}
		return Estimate{Prompt: n}, nil
	}
	return Estimate{}, messages.FieldError("body.input", "must be a string, an array of strings, or token ids")
}

func bodyError(err error) *messages.Error {
	var typeErr *json.UnmarshalTypeError
	if errors.As(err, &typeErr) && typeErr.Field != "" {
		return messages.FieldError("body."+typeErr.Field, "must be %s", typeErr.Type.String())
	}
	return messages.FieldError("body", "is not valid JSON: %v", err)
}
