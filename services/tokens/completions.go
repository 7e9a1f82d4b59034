package tokens

import (
	"bytes"
	"encoding/json"

	"github.com/sluicehq/sluice/messages"
)

// CompletionsDefaultMaxTokens is what a legacy completions body without
// max_tokens may generate per completion: 16, as OpenAI documents (and
// vLLM follows). It stands in for the pool's default_max_tokens, which is
// for chat: a provider generating at most 16 tokens is reserved 16.
const CompletionsDefaultMaxTokens = 16

// MaxPrompts bounds the prompts of one legacy completions body, each of
// which gets its own n (or best_of) completions.
const MaxPrompts = 2048

// completionsBody is what the estimate reads of a legacy completions body.
type completionsBody struct {
	Prompt    json.RawMessage `json:"prompt"`
	MaxTokens *int64          `json:"max_tokens"`
	N         *int64          `json:"n"`
	BestOf    *int64          `json:"best_of"`
	Stream    bool            `json:"stream"`
}

// completions estimates a legacy completions body: the prompt (a string,
// strings, token ids, or lists of token ids, counted as embeddings' input
// is), plus max_tokens (default 16) × the completions generated per
// prompt, best_of when given (the provider generates that many and
// returns the best n), else n, × the number of prompts: each prompt of a
// batch gets its own.
func completions(body []byte) (Estimate, *messages.Error) {
	var b completionsBody
	if err := json.Unmarshal(body, &b); err != nil {
		return Estimate{}, bodyError(err)
	}
	in := bytes.TrimSpace(b.Prompt)
	if len(in) == 0 || string(in) == "null" {
		return Estimate{}, messages.FieldError("body.prompt", "is required")
	}
	prompt, prompts, bad := promptInput(in)
	if bad != nil {
		return Estimate{}, bad
	}
	maxTokens := int64(CompletionsDefaultMaxTokens)
	if b.MaxTokens != nil {
		// 0 is allowed: with echo, a completion of nothing scores the prompt.
		if *b.MaxTokens < 0 || *b.MaxTokens > MaxMaxTokens {
			return Estimate{}, messages.FieldError("body.max_tokens", "must be between 0 and %d", MaxMaxTokens)
		}
		maxTokens = *b.MaxTokens
	}
	n := int64(1)
	if b.N != nil {
		if *b.N < 1 || *b.N > MaxN {
			return Estimate{}, messages.FieldError("body.n", "must be between 1 and %d", MaxN)
		}
		n = *b.N
	}
	generated := n
	if b.BestOf != nil {
		if *b.BestOf < 1 || *b.BestOf > MaxN {
			return Estimate{}, messages.FieldError("body.best_of", "must be between 1 and %d", MaxN)
		}
		if *b.BestOf < n {
			return Estimate{}, messages.FieldError("body.best_of", "must be at least n (%d): the provider generates best_of completions and returns the best n", n)
		}
		generated = *b.BestOf
	}
	return Estimate{Prompt: prompt, Completion: maxTokens * generated * prompts, Stream: b.Stream}, nil
}

// promptInput estimates a completions prompt and counts its prompts: a
// string or a list of token ids is one prompt; a list of strings, or of
// lists of token ids, is a batch, none of it empty.
func promptInput(in json.RawMessage) (tokens, prompts int64, bad *messages.Error) {
	invalid := messages.FieldError("body.prompt", "must be a string, an array of strings, an array of token ids, or an array of arrays of token ids, none of them empty")
	var s string
	if json.Unmarshal(in, &s) == nil {
		return Text(s), 1, nil
	}
	var strs []string
	if json.Unmarshal(in, &strs) == nil && len(strs) > 0 {
		if len(strs) > MaxPrompts {
			return 0, 0, messages.FieldError("body.prompt", "at most %d prompts", MaxPrompts)
		}
		for _, s := range strs {
			tokens += Text(s)
		}
		return tokens, int64(len(strs)), nil
	}
	var ids []int64
	if json.Unmarshal(in, &ids) == nil && len(ids) > 0 {
		return int64(len(ids)), 1, nil
	}
	var idLists [][]int64
	if json.Unmarshal(in, &idLists) == nil && len(idLists) > 0 {
		if len(idLists) > MaxPrompts {
			return 0, 0, messages.FieldError("body.prompt", "at most %d prompts", MaxPrompts)
		}
		for _, l := range idLists {
			if len(l) == 0 {
				return 0, 0, invalid
			}
			tokens += int64(len(l))
		}
		return tokens, int64(len(idLists)), nil
	}
	return 0, 0, invalid
}

// countTokens checks an Anthropic count_tokens body, which is a Messages
// body without max_tokens, and reserves nothing: Anthropic meters token
// counting by requests alone (the one request is the call's), and it
// generates nothing. It does not stream.
func countTokens(body []byte) (Estimate, *messages.Error) {
	_, bad := CountTokensInput(body)
	return Estimate{}, bad
}

// CountTokensInput is sluice's estimate of the input tokens of an
// Anthropic count_tokens body (the Messages rule, without max_tokens):
// what a pool that estimates token counts answers, with no provider
// request. The body's errors are countTokens'.
func CountTokensInput(body []byte) (int64, *messages.Error) {
	var b messagesBody
	if err := json.Unmarshal(body, &b); err != nil {
		return 0, bodyError(err)
	}
	if b.Stream {
		return 0, messages.FieldError("body.stream", "count_tokens does not stream")
	}
	if b.MaxTokens != nil {
		return 0, messages.FieldError("body.max_tokens", "count_tokens takes no max_tokens: it generates nothing")
	}
	if len(b.Messages) == 0 {
		return 0, messages.FieldError("body.messages", "must be a non-empty array")
	}
	return messagesPrompt(b)
}
