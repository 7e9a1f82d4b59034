package gateway

import (
	"fmt"
	"testing"
)

// The gateway's memory of stored responses is bounded: past
// MaxPinnedResponses the oldest go first, a deleted one is forgotten at
// once, and teams do not see each other's.
func TestPinsAreBounded(t *testing.T) {
	p := newPins()
	for i := range MaxPinnedResponses + 10 {
		p.put("a", fmt.Sprintf("resp_%d", i), pin{pool: "m", deployment: "d"})
	}
	if len(p.byID) != MaxPinnedResponses {
		t.Fatalf("%d pins kept, want %d", len(p.byID), MaxPinnedResponses)
	}
	if _, ok := p.get("a", "resp_0"); ok {
		t.Errorf("the oldest pin is kept")
	}
	if w, ok := p.get("a", fmt.Sprintf("resp_%d", MaxPinnedResponses+9)); !ok || w.deployment != "d" {
		t.Errorf("the newest pin is lost")
	}
	if _, ok := p.get("b", "resp_20"); ok {
		t.Errorf("team b sees team a's pin")
	}
	p.forget("a", "resp_20")
	if _, ok := p.get("a", "resp_20"); ok {
		t.Errorf("a forgotten pin is kept")
	}
	// Deleting and adding again and again leaves order bounded too.
	for i := range 3 * MaxPinnedResponses {
		id := fmt.Sprintf("x_%d", i)
		p.put("c", id, pin{})
		p.forget("c", id)
	}
	if len(p.order) > 2*MaxPinnedResponses+1 {
		t.Errorf("order holds %d keys", len(p.order))
	}
}

// responseID reads the id of a response object, or of the response a
// stream event carries, and nothing else.
func TestResponseID(t *testing.T) {
	for in, want := range map[string]string{
		`{"id":"resp_1","object":"response"}`:                    "resp_1",
		`{"type":"response.created","response":{"id":"resp_2"}}`: "resp_2",
		`{"id":"chatcmpl-1","object":"chat.completion"}`:         "",
		`{"id":"resp/../x","object":"response"}`:                 "",
		`{"type":"response.created","response":{"id":5}}`:        "",
		`not json`: "",
		`{"type":"response.output_text.delta","delta":"ok","item_id":"m"}`: "",
	} {
		if got := responseID([]byte(in)); got != want {
			t.Errorf("%s: %q, want %q", in, got, want)
		}
	}
}
