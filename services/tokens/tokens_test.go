package tokens

import (
	"errors"
	"testing"

	"github.com/sluicehq/sluice/messages"
)

func TestEstimate(t *testing.T) {
	cases := []struct {
		name     string
		endpoint messages.Endpoint
		body     string
		prompt   int64
		total    int64
	}{
		// 3 (reply) + 3 + ceil(2/4)=1 per message; max_tokens default 100.
		{"one message", messages.EndpointChatCompletions, `{"messages":[{"role":"user","content":"hi"}]}`, 7, 107},
		{"max_tokens and n", messages.EndpointChatCompletions, `{"messages":[{"role":"user","content":"12345678"}],"max_tokens":10,"n":3}`, 8, 38},
		{"max_completion_tokens", messages.EndpointChatCompletions, `{"messages":[{"role":"user","content":""}],"max_completion_tokens":5}`, 6, 11},
		{"name adds one", messages.EndpointChatCompletions, `{"messages":[{"role":"user","name":"bo","content":"abcd"}],"max_tokens":1}`, 8, 9},
		{"content parts", messages.EndpointChatCompletions, `{"messages":[{"role":"user","content":[{"type":"text","text":"abcdefgh"},{"type":"image_url","image_url":{"url":"x"}}]}],"max_tokens":1}`, 8, 9},
		{"null content", messages.EndpointChatCompletions, `{"messages":[{"role":"assistant","content":null}],"max_tokens":1}`, 6, 7},
		{"embedding string", messages.EndpointEmbeddings, `{"input":"abcdefghi"}`, 3, 3},
		{"embedding strings", messages.EndpointEmbeddings, `{"input":["abcd","abcde"]}`, 3, 3},
		{"embedding ids", messages.EndpointEmbeddings, `{"input":[1,2,3,4]}`, 4, 4},
		{"embedding id lists", messages.EndpointEmbeddings, `{"input":[[1,2],[3]]}`, 3, 3},
		// Messages: 3 (reply) + 3 + ceil(len/4) per message; max_tokens is
		// the completion, whatever the default.
		{"messages string", messages.EndpointMessages, `{"model":"c","max_tokens":10,"messages":[{"role":"user","content":"hello"}]}`, 8, 18},
		{"messages system string", messages.EndpointMessages, `{"max_tokens":1,"system":"be brief","messages":[{"role":"user","content":"hi"}]}`, 12, 13},
		{"messages system blocks", messages.EndpointMessages, `{"max_tokens":1,"system":[{"type":"text","text":"abcd"},{"type":"text","text":"efgh"}],"messages":[{"role":"user","content":"hi"}]}`, 12, 13},
		{"messages blocks", messages.EndpointMessages, `{"max_tokens":2,"messages":[{"role":"user","content":[{"type":"text","text":"abcdefgh"},{"type":"image","source":{}}]},{"role":"assistant","content":"ok"}]}`, 12, 14},
		{"messages null system", messages.EndpointMessages, `{"max_tokens":1,"system":null,"messages":[{"role":"user","content":"hi"}]}`, 7, 8},
		// Legacy completions: the prompt as embeddings count it, + max_tokens
		// (16 by default, whatever the pool's) × best_of or n × prompts.
		{"completions string, default max_tokens", messages.EndpointCompletions, `{"model":"m","prompt":"abcdefghi"}`, 3, 3 + 16},
		{"completions max_tokens and n", messages.EndpointCompletions, `{"prompt":"abcd","max_tokens":10,"n":3}`, 1, 1 + 30},
		{"completions best_of", messages.EndpointCompletions, `{"prompt":"abcd","max_tokens":10,"n":2,"best_of":5}`, 1, 1 + 50},
		{"completions strings batch", messages.EndpointCompletions, `{"prompt":["abcd","abcde"],"max_tokens":4,"n":2}`, 3, 3 + 2*4*2},
		{"completions token ids", messages.EndpointCompletions, `{"prompt":[1,2,3,4],"max_tokens":2}`, 4, 6},
		{"completions token id lists", messages.EndpointCompletions, `{"prompt":[[1,2],[3]],"max_tokens":2}`, 3, 3 + 4},
		{"completions max_tokens zero", messages.EndpointCompletions, `{"prompt":"abcd","max_tokens":0,"echo":true}`, 1, 1},
		// count_tokens reserves nothing: it is metered by requests alone.
		{"count_tokens", messages.EndpointCountTokens, `{"model":"c","system":"be brief","messages":[{"role":"user","content":"hello"}]}`, 0, 0},
		// Responses: the chat rule over instructions and input, +
		// max_output_tokens or the pool's default (100 here).
		{"responses string", messages.EndpointResponses, `{"model":"m","input":"abcdefgh","max_output_tokens":20}`, 8, 28},
		{"responses instructions, default max", messages.EndpointResponses, `{"input":"abcd","instructions":"be brief"}`, 12, 12 + 100},
		{"responses items", messages.EndpointResponses, `{"input":[{"role":"user","content":"abcd"},{"type":"message","role":"user","content":[{"type":"input_text","text":"abcdefgh"},{"type":"input_image","image_url":"x"}]},{"type":"function_call_output","call_id":"c","output":"abcd"},{"type":"item_reference","id":"x"}],"max_output_tokens":16}`, 3 + 4 + 5 + 4 + 3, 19 + 16},
		{"stored response get", messages.EndpointResponseGet, `{"model":"m","response_id":"resp_abc-1"}`, 0, 0},
		{"stored response delete", messages.EndpointResponseDelete, `{"response_id":"resp_abc"}`, 0, 0},
		{"responses null instructions", messages.EndpointResponses, `{"input":"abcd","instructions":null,"max_output_tokens":16,"stream":true}`, 7, 23},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			est, err := Of(tc.endpoint, []byte(tc.body), 100)
			if err != nil {
				t.Fatal(err)
			}
			if est.Prompt != tc.prompt || est.Total() != tc.total {
				t.Fatalf("prompt %d total %d, want %d %d", est.Prompt, est.Total(), tc.prompt, tc.total)
			}
		})
	}
}

func TestEstimateRefusesBadBodies(t *testing.T) {
	cases := []struct {
		name     string
		endpoint messages.Endpoint
		body     string
		field    string
	}{
		{"no messages", messages.EndpointChatCompletions, `{}`, "body.messages"},
		{"messages not array", messages.EndpointChatCompletions, `{"messages":"hi"}`, "body.messages"},
		{"message not object", messages.EndpointChatCompletions, `{"messages":[3]}`, "body.messages"},
		{"content number", messages.EndpointChatCompletions, `{"messages":[{"content":3}]}`, "body.messages"},
		{"max_tokens zero", messages.EndpointChatCompletions, `{"messages":[{"content":"x"}],"max_tokens":0}`, "body.max_tokens"},
		{"max_tokens huge", messages.EndpointChatCompletions, `{"messages":[{"content":"x"}],"max_tokens":99999999999}`, "body.max_tokens"},
		{"n too big", messages.EndpointChatCompletions, `{"messages":[{"content":"x"}],"n":1000}`, "body.n"},
		{"n string", messages.EndpointChatCompletions, `{"messages":[{"content":"x"}],"n":"2"}`, "body.n"},
		{"no input", messages.EndpointEmbeddings, `{}`, "body.input"},
		{"input object", messages.EndpointEmbeddings, `{"input":{"a":1}}`, "body.input"},
		{"not json", messages.EndpointEmbeddings, `{"input":`, "body"},
		{"messages without max_tokens", messages.EndpointMessages, `{"messages":[{"role":"user","content":"x"}]}`, "body.max_tokens"},
		{"messages max_tokens zero", messages.EndpointMessages, `{"max_tokens":0,"messages":[{"role":"user","content":"x"}]}`, "body.max_tokens"},
		{"messages max_tokens huge", messages.EndpointMessages, `{"max_tokens":99999999999,"messages":[{"role":"user","content":"x"}]}`, "body.max_tokens"},
		{"messages empty", messages.EndpointMessages, `{"max_tokens":1,"messages":[]}`, "body.messages"},
		{"messages content number", messages.EndpointMessages, `{"max_tokens":1,"messages":[{"content":3}]}`, "body.messages"},
		{"messages system number", messages.EndpointMessages, `{"max_tokens":1,"system":3,"messages":[{"content":"x"}]}`, "body.system"},
		{"messages system bad parts", messages.EndpointMessages, `{"max_tokens":1,"system":[1],"messages":[{"content":"x"}]}`, "body.system"},
		{"messages not json", messages.EndpointMessages, `{"max_tokens":`, "body"},
		{"unknown endpoint", "/v1/images/generations", `{}`, "endpoint"},
		{"completions no prompt", messages.EndpointCompletions, `{"max_tokens":1}`, "body.prompt"},
		{"completions null prompt", messages.EndpointCompletions, `{"prompt":null}`, "body.prompt"},
		{"completions prompt object", messages.EndpointCompletions, `{"prompt":{"a":1}}`, "body.prompt"},
		{"completions prompt empty array", messages.EndpointCompletions, `{"prompt":[]}`, "body.prompt"},
		{"completions prompt empty id list", messages.EndpointCompletions, `{"prompt":[[1],[]]}`, "body.prompt"},
		{"completions prompt mixed", messages.EndpointCompletions, `{"prompt":["a",1]}`, "body.prompt"},
		{"completions max_tokens negative", messages.EndpointCompletions, `{"prompt":"a","max_tokens":-1}`, "body.max_tokens"},
		{"completions max_tokens huge", messages.EndpointCompletions, `{"prompt":"a","max_tokens":99999999999}`, "body.max_tokens"},
		{"completions n zero", messages.EndpointCompletions, `{"prompt":"a","n":0}`, "body.n"},
		{"completions best_of below n", messages.EndpointCompletions, `{"prompt":"a","n":3,"best_of":2}`, "body.best_of"},
		{"completions best_of too big", messages.EndpointCompletions, `{"prompt":"a","best_of":1000}`, "body.best_of"},
		{"completions best_of string", messages.EndpointCompletions, `{"prompt":"a","best_of":"2"}`, "body.best_of"},
		{"completions not json", messages.EndpointCompletions, `{"prompt":`, "body"},
		{"count_tokens no messages", messages.EndpointCountTokens, `{"model":"c"}`, "body.messages"},
		{"count_tokens stream", messages.EndpointCountTokens, `{"stream":true,"messages":[{"role":"user","content":"x"}]}`, "body.stream"},
		{"count_tokens max_tokens", messages.EndpointCountTokens, `{"max_tokens":5,"messages":[{"role":"user","content":"x"}]}`, "body.max_tokens"},
		{"count_tokens system number", messages.EndpointCountTokens, `{"system":3,"messages":[{"content":"x"}]}`, "body.system"},
		{"responses no input", messages.EndpointResponses, `{"model":"m"}`, "body.input"},
		{"responses null input", messages.EndpointResponses, `{"input":null}`, "body.input"},
		{"responses input number", messages.EndpointResponses, `{"input":5}`, "body.input"},
		{"responses input empty", messages.EndpointResponses, `{"input":[]}`, "body.input"},
		{"responses item not object", messages.EndpointResponses, `{"input":[5]}`, "body.input"},
		{"responses content number", messages.EndpointResponses, `{"input":[{"content":5}]}`, "body.input"},
		{"responses content parts bad", messages.EndpointResponses, `{"input":[{"content":[5]}]}`, "body.input"},
		{"responses instructions number", messages.EndpointResponses, `{"input":"a","instructions":5}`, "body.instructions"},
		{"responses max_output_tokens zero", messages.EndpointResponses, `{"input":"a","max_output_tokens":0}`, "body.max_output_tokens"},
		{"responses max_output_tokens huge", messages.EndpointResponses, `{"input":"a","max_output_tokens":99999999999}`, "body.max_output_tokens"},
		{"responses max_output_tokens string", messages.EndpointResponses, `{"input":"a","max_output_tokens":"5"}`, "body.max_output_tokens"},
		{"responses not json", messages.EndpointResponses, `{"input":`, "body"},
		{"stored response no id", messages.EndpointResponseGet, `{"model":"m"}`, "body.response_id"},
		{"stored response id with slash", messages.EndpointResponseGet, `{"response_id":"resp/../x"}`, "body.response_id"},
		{"stored response id empty", messages.EndpointResponseDelete, `{"response_id":""}`, "body.response_id"},
		{"stored response id number", messages.EndpointResponseDelete, `{"response_id":5}`, "body.response_id"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Of(tc.endpoint, []byte(tc.body), 100)
			if err == nil || !errors.Is(err, messages.ErrInvalidRequest) || err.Field != tc.field {
				t.Fatalf("want invalid_request on %s, got %v", tc.field, err)
			}
		})
	}
}
