package gateway

import (
	"bytes"
	"encoding/json"
	"testing"

	"github.com/sluicehq/sluice/messages"
)

// TestEncodeCall checks that the body spliced into the call by hand comes
// out of the decoder sluice's services use as it went in, whatever the
// client's spacing, and that a model name cannot pass for the body key.
func TestEncodeCall(t *testing.T) {
	body := []byte(" \n{\n  \"model\": \"x\\\",\\\"body\\\":0\",\n  \"messages\": [{\"role\": \"user\", \"content\": \"<a & b> \\u2028\"}]\n}\n ")
	in := &messages.CallRequest{
		ID: messages.NewCallID(), Model: `x","body":0`, Endpoint: messages.EndpointChatCompletions,
		Body: body, TimeoutMS: 1500,
	}
	data, err := encodeCall(in)
	if err != nil {
		t.Fatal(err)
	}
	if !json.Valid(data) {
		t.Fatalf("not JSON: %s", data)
	}
	out, e := messages.DecodeCall(data)
	if e != nil {
		t.Fatalf("%v: %s", e, data)
	}
	if out.ID != in.ID || out.Model != in.Model || out.Endpoint != in.Endpoint || out.TimeoutMS != in.TimeoutMS {
		t.Errorf("decoded %+v, want %+v", out, in)
	}
	if !bytes.Equal(out.Body, bytes.TrimSpace(body)) {
		t.Errorf("body %q, want %q", out.Body, bytes.TrimSpace(body))
	}
}
