package messages_test

import (
	"encoding/json"
	"testing"

	"github.com/sluicehq/sluice/messages"
)

// DecodeCall reads whatever a client publishes: it never panics, refuses
// with a code and a message, and what it accepts is a valid call that
// decodes to itself again.
func FuzzDecodeCall(f *testing.F) {
	for _, seed := range []string{
		`{"id":"c1","model":"m","body":{"messages":[{"role":"user","content":"hi"}]}}`,
		`{"model":"m","endpoint":"embeddings","body":{"input":"x"},"timeout_ms":5000,"regions":["eu-west"]}`,
		`{"model":"m","body":{},"metadata":{"k":"v"},"prefer_regions":["us-east"]}`,
		`{"model":"m","body":[]}`, `{"model":"","body":{}}`, `{}`, `null`, `[]`, `{"model":"m","body":{}} x`,
		`{"id":"bad id","model":"m","body":{}}`, `{"model":"m","body":{},"timeout_ms":-1}`,
	} {
		f.Add([]byte(seed))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		call, bad := messages.DecodeCall(data)
		if bad != nil {
			if bad.Code == "" || bad.Message == "" {
				t.Fatalf("refusal without a code or a message: %+v", bad)
			}
			return
		}
		again, err := json.Marshal(call)
		if err != nil {
			t.Fatalf("an accepted call does not encode: %v", err)
		}
		if _, bad := messages.DecodeCall(again); bad != nil {
			t.Fatalf("an accepted call, encoded, is refused: %v\n%s", bad, again)
		}
	})
}
