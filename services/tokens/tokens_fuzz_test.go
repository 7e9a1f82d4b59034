package tokens_test

import (
	"math"
	"strings"
	"testing"

	"github.com/sluicehq/sluice/messages"
	"github.com/sluicehq/sluice/services/tokens"
)

// Of reads provider bodies that clients wrote: it never panics, refuses
// with invalid_request, a message and the field at fault, and what it
// reserves is bounded: a prompt that is not negative and grows at most
// with the body's size, a completion of at most max_tokens × n within
// their limits (× the prompts of a legacy completions batch), and a total that cannot overflow. defaultMax is any value
// a pool's default_max_tokens may hold (any positive number), or 0 as
// the executor passes it.
func FuzzOf(f *testing.F) {
	for _, seed := range []struct {
		endpoint messages.Endpoint
		body     string
	}{
		{messages.EndpointChatCompletions, `{"messages":[{"role":"user","content":"hello"}],"max_tokens":5,"n":2}`},
		{messages.EndpointChatCompletions, `{"messages":[{"role":"user","content":[{"type":"text","text":"x"}]}],"stream":true}`},
		{messages.EndpointChatCompletions, `{"messages":[{"role":"user","name":"bo","content":"abcd"}],"max_completion_tokens":1}`},
		{messages.EndpointChatCompletions, `{"messages":[{"role":"assistant","content":null}],"max_tokens":10000000,"n":128}`},
		{messages.EndpointChatCompletions, `{"messages":[{"role":"user","content":"hi"}],"n":128}`},
		{messages.EndpointChatCompletions, `{"messages":[{"content":"` + strings.Repeat("\xff", 64) + `"}]}`},
		{messages.EndpointChatCompletions, `{"messages":[{}],"max_tokens":10000001}`},
		{messages.EndpointChatCompletions, `{"messages":[{"content":5}]}`},
		{messages.EndpointChatCompletions, `{"messages":[{"content":[1]}]}`},
		{messages.EndpointChatCompletions, `{"messages":"hi"}`},
		{messages.EndpointEmbeddings, `{"input":["a","b"]}`},
		{messages.EndpointEmbeddings, `{"input":[1,2,3]}`},
		{messages.EndpointEmbeddings, `{"input":[[1,2],[3]]}`},
		{messages.EndpointEmbeddings, `{"input":[]}`},
		{messages.EndpointEmbeddings, `{"input":"x","stream":true}`},
		{messages.EndpointMessages, `{"messages":[{"role":"user","content":"hi"}],"max_tokens":10,"system":"s"}`},
		{messages.EndpointMessages, `{"max_tokens":1,"system":[{"type":"text","text":"abcd"}],"messages":[{"role":"user","content":"hi"}]}`},
		{messages.EndpointMessages, `{"messages":[{"role":"user","content":"hi"}]}`},
		{messages.EndpointMessages, `{"messages":[{"role":"user","content":"hi"}],"max_tokens":1,"system":5}`},
		{messages.EndpointChatCompletions, `{"messages":[],"max_tokens":-1}`},
		{messages.EndpointChatCompletions, `{"messages":null,"n":1e300}`},
		{messages.EndpointChatCompletions, `{"messages":[{"content":"x"}],"n":9223372036854775807}`},
		{messages.EndpointCompletions, `{"model":"m","prompt":"hello","max_tokens":5,"n":2}`},
		{messages.EndpointCompletions, `{"prompt":["a","b"],"best_of":3,"n":2,"stream":true}`},
		{messages.EndpointCompletions, `{"prompt":[1,2,3],"max_tokens":0}`},
		{messages.EndpointCompletions, `{"prompt":[[1,2],[3]],"max_tokens":10000000,"best_of":128}`},
		{messages.EndpointCompletions, `{"prompt":[[1],[]]}`},
		{messages.EndpointCompletions, `{"prompt":{"a":1},"best_of":-1}`},
		{messages.EndpointCompletions, `{"prompt":"x","n":3,"best_of":2}`},
		{messages.EndpointCountTokens, `{"messages":[{"role":"user","content":"hi"}],"system":"s"}`},
		{messages.EndpointCountTokens, `{"messages":[{"role":"user","content":"hi"}],"stream":true}`},
		{messages.EndpointCountTokens, `{"messages":[],"max_tokens":1}`},
		{messages.EndpointResponses, `{"model":"m","input":"hello","instructions":"be brief","max_output_tokens":20}`},
		{messages.EndpointResponses, `{"input":[{"role":"user","content":[{"type":"input_text","text":"hi"}]},{"type":"function_call_output","output":"x"}],"stream":true}`},
		{messages.EndpointResponses, `{"input":[{"content":5}],"max_output_tokens":-1}`},
		{messages.EndpointResponses, `{"input":[],"instructions":[1]}`},
		{messages.EndpointResponses, `{"input":"x","max_output_tokens":10000001,"previous_response_id":"resp_1"}`},
		{messages.EndpointResponseGet, `{"model":"m","response_id":"resp_1"}`},
		{messages.EndpointResponseDelete, `{"response_id":"resp/../../x"}`},
		{"/v1/images", `{}`},
	} {
		f.Add(string(seed.endpoint), []byte(seed.body), int64(256))
	}
	f.Add(string(messages.EndpointChatCompletions), []byte(`{"messages":[{"content":"x"}],"n":128}`), int64(math.MaxInt64))
	f.Add(string(messages.EndpointChatCompletions), []byte(`{"messages":[{"content":"x"}],"n":2}`), int64(math.MaxInt64/2+1))
	f.Add(string(messages.EndpointChatCompletions), []byte(`{"messages":[{"content":"x"}]}`), int64(0))
	f.Fuzz(func(t *testing.T, endpoint string, body []byte, defaultMax int64) {
		if defaultMax < 0 {
			defaultMax = -(defaultMax + 1) // what configuration allows: not negative
		}
		est, bad := tokens.Of(messages.Endpoint(endpoint), body, defaultMax)
		if bad != nil {
			if bad.Code != messages.CodeInvalidRequest || bad.Message == "" || bad.Field == "" {
				t.Fatalf("refusal without invalid_request, a message or a field: %+v", bad)
			}
			return
		}
		if !messages.Endpoint(endpoint).Valid() {
			t.Fatalf("estimated %+v for unknown endpoint %q", est, endpoint)
		}
		if est.Prompt < 0 || est.Prompt > 6+2*int64(len(body)) {
			t.Fatalf("prompt %d for a body of %d bytes: %q", est.Prompt, len(body), body)
		}
		most := int64(tokens.MaxMaxTokens * tokens.MaxN)
		if messages.Endpoint(endpoint) == messages.EndpointCompletions {
			most *= tokens.MaxPrompts // each prompt of a batch gets its own
		}
		if est.Completion < 0 || est.Completion > most {
			t.Fatalf("completion %d for %s %q (default max %d)", est.Completion, endpoint, body, defaultMax)
		}
		if est.Total() < est.Prompt || est.Total() < est.Completion {
			t.Fatalf("total %d overflows %+v", est.Total(), est)
		}
	})
}
