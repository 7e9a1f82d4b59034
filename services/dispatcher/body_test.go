package dispatcher

import (
	"testing"
	"unsafe"

	"github.com/sluicehq/sluice/messages"
)

// A waiting call's body is the bytes of the message it came in, not a
// copy: it is held once.
func TestWaitingCallHoldsItsBodyOnce(t *testing.T) {
	data := []byte(`{"id":"c1","model":"m","body":{"messages":[{"role":"user","content":"hello there"}],"max_tokens":5}}`)
	call, bad := messages.DecodeCall(data)
	if bad != nil {
		t.Fatal(bad)
	}
	body := shareBody(data, call.Body)
	if string(body) != string(call.Body) {
		t.Fatalf("body %s, want %s", body, call.Body)
	}
	start, end := uintptr(unsafe.Pointer(&data[0])), uintptr(unsafe.Pointer(&data[len(data)-1]))
	if p := uintptr(unsafe.Pointer(&body[0])); p < start || p > end {
		t.Fatal("the body is a copy, not the message's bytes")
	}
	if cap(body) != len(body) {
		t.Fatalf("the body can grow into the message: cap %d, len %d", cap(body), len(body))
	}
	// A body the message does not hold verbatim stays as it is.
	if got := shareBody([]byte(`{}`), call.Body); string(got) != string(call.Body) {
		t.Fatalf("body %s, want %s", got, call.Body)
	}
}
