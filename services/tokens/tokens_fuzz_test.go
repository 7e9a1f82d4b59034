package tokens_test

import (
	"testing"

	"github.com/sluicehq/sluice/messages"
	"github.com/sluicehq/sluice/services/tokens"
)

// Of reads provider bodies that clients wrote: it never panics, refuses
// with a code and a message, and never reserves a negative amount.
func FuzzOf(f *testing.F) {
	for _, seed := range []struct {
		endpoint messages.Endpoint
		body     string
	}{
		{messages.EndpointChatCompletions, `{"messages":[{"role":"user","content":"hello"}],"max_tokens":5,"n":2}`},
		{messages.EndpointChatCompletions, `{"messages":[{"role":"user","content":[{"type":"text","text":"x"}]}],"stream":true}`},
		{messages.EndpointEmbeddings, `{"input":["a","b"]}`},
		{messages.EndpointEmbeddings, `{"input":[1,2,3]}`},
		{messages.EndpointMessages, `{"messages":[{"role":"user","content":"hi"}],"max_tokens":10,"system":"s"}`},
		{messages.EndpointChatCompletions, `{"messages":[],"max_tokens":-1}`},
		{messages.EndpointChatCompletions, `{"messages":null,"n":1e300}`},
	} {
		f.Add(string(seed.endpoint), []byte(seed.body), int64(256))
	}
	f.Fuzz(func(t *testing.T, endpoint string, body []byte, defaultMax int64) {
		est, bad := tokens.Of(messages.Endpoint(endpoint), body, defaultMax)
		if bad != nil {
			if bad.Code == "" || bad.Message == "" {
				t.Fatalf("refusal without a code or a message: %+v", bad)
			}
			return
		}
		if est.Prompt < 0 || est.Completion < 0 || est.Total() < 0 {
			t.Fatalf("negative estimate %+v for %s %q (default max %d)", est, endpoint, body, defaultMax)
		}
	})
}
