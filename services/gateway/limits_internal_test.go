package gateway

import (
	"net/http"
	"strings"
	"testing"
)

// The answers to bodies too large say what the client may send.
func TestBodyLimitMessages(t *testing.T) {
	e := tooLarge(1048577, 1048576)
	if e.Status != http.StatusRequestEntityTooLarge || !strings.Contains(e.Message, "at most 1048576 bytes") || !strings.Contains(e.Message, "is 1048577 bytes") {
		t.Errorf("over calls.max_body_bytes: %+v", e)
	}
	if e := tooLarge(-1, 4096); !strings.Contains(e.Message, "at most 4096 bytes") || !strings.Contains(e.Message, "over") {
		t.Errorf("over calls.max_body_bytes, of unknown size: %+v", e)
	}
	// A body under calls.max_body_bytes whose call fits max_payload goes,
	// however close to it.
	if e := overPayload(1048564, 1048564+150, 8<<20, 1<<20); e != nil {
		t.Errorf("a body under the limit whose call fits max_payload: %+v", e)
	}
	if e := overPayload(1000, 8<<20, 8<<20, 1<<20); e != nil {
		t.Errorf("a call of exactly max_payload: %+v", e)
	}
	// A server whose max_payload (1 MiB, the NATS default) leaves less
	// than calls.max_body_bytes for the body: the answer names what may
	// be sent, and why.
	e = overPayload(1048564, 1048564+150, 1<<20, 1<<20)
	if e == nil || e.Status != http.StatusRequestEntityTooLarge || !strings.Contains(e.Message, "at most 1048426 bytes") ||
		!strings.Contains(e.Message, "max_payload") || !strings.Contains(e.Message, "1048576") || !strings.Contains(e.Message, "is 1048564 bytes") {
		t.Errorf("over max_payload: %+v", e)
	}
}
