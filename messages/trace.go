package messages

import "strings"

// Trace context headers (W3C Trace Context). A call published with a
// traceparent (and tracestate) header continues that trace: sluice copies
// the context into the headers of the call's work (sluice.exec.…) and
// retries (sluice.retry.…), and the executor sends a traceparent of the
// same trace to the provider. The gateway does the same with the HTTP
// headers of the same names.
const (
	HeaderTraceParent = "traceparent"
	HeaderTraceState  = "tracestate"
)

// TraceCarrier reads and writes the trace context in a NATS message's
// headers (a nats.Header converts to it); it is an OpenTelemetry
// propagation.TextMapCarrier. NATS header names are case-sensitive, and
// clients in other languages spell them as they like, so Get falls back to
// a case-insensitive match; Set writes the lower-case W3C names.
type TraceCarrier map[string][]string

// Get returns the first value of key, matched exactly, else ignoring case.
func (c TraceCarrier) Get(key string) string {
	if v := c[key]; len(v) > 0 {
		return v[0]
	}
	for k, v := range c {
		if len(v) > 0 && strings.EqualFold(k, key) {
			return v[0]
		}
	}
	return ""
}

// Set sets key to value, replacing any value of key spelled otherwise.
func (c TraceCarrier) Set(key, value string) {
	for k := range c {
		if k != key && strings.EqualFold(k, key) {
			delete(c, k)
		}
	}
	c[key] = []string{value}
}

// Keys lists the header names.
func (c TraceCarrier) Keys() []string {
	keys := make([]string, 0, len(c))
	for k := range c {
		keys = append(keys, k)
	}
	return keys
}
