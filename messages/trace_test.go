package messages

import "testing"

func TestTraceCarrier(t *testing.T) {
	// As a client in another language may send it.
	c := TraceCarrier{"Traceparent": {"00-a-b-01"}, "Nats-Msg-Id": {"x"}}
	if got := c.Get(HeaderTraceParent); got != "00-a-b-01" {
		t.Errorf("Get(traceparent) = %q, want the value of Traceparent", got)
	}
	if got := c.Get(HeaderTraceState); got != "" {
		t.Errorf("Get(tracestate) = %q, want empty", got)
	}
	c.Set(HeaderTraceParent, "00-c-d-01")
	if _, ok := c["Traceparent"]; ok || c.Get(HeaderTraceParent) != "00-c-d-01" {
		t.Errorf("Set left %v; want one traceparent, the new one", c)
	}
	if n := len(c.Keys()); n != 2 {
		t.Errorf("Keys() = %v, want 2", c.Keys())
	}
}
