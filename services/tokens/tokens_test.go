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
