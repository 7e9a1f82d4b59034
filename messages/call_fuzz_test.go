package messages_test

import (
	"bytes"
	"encoding/json"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/sluicehq/sluice/messages"
)

// DecodeCall reads whatever a client publishes: it never panics, refuses
// with a code and a message, and what it accepts is a valid call within
// the envelope's bounds, that encodes and decodes to itself again, and
// whose deadline is never before its acceptance when it gave a timeout.
func FuzzDecodeCall(f *testing.F) {
	for _, seed := range []string{
		`{"id":"c1","model":"m","body":{"messages":[{"role":"user","content":"hi"}]}}`,
		`{"model":"m","endpoint":"embeddings","body":{"input":"x"},"timeout_ms":5000,"regions":["eu-west"]}`,
		`{"model":"m","endpoint":"/v1/embeddings","body":{"input":"x"},"timeout_ms":5000,"regions":["eu-west"]}`,
		`{"model":"claude","endpoint":"/v1/messages","body":{"max_tokens":10,"messages":[{"role":"user","content":"hi"}]}}`,
		`{"model":"m","body":{},"metadata":{"k":"v"},"prefer_regions":["us-east"]}`,
		`{"body":{"model":"gpt-4o-mini","messages":[]}}`,
		`{"model":"m","body":{},"deadline":"2026-11-25T10:00:00Z"}`,
		`{"model":"m","body":{},"deadline":"2026-11-25T10:00:00.123456789+05:30"}`,
		`{"model":"m","body":{},"deadline":"9999-12-31T23:59:59Z"}`,
		`{"model":"m","body":{},"deadline":"0001-01-01T00:00:00Z"}`,
		`{"model":"m","body":{},"deadline":"tomorrow"}`,
		`{"model":"m","body":{},"timeout_ms":5,"deadline":"2026-11-25T10:00:00Z"}`,
		`{"model":"m","body":[]}`, `{"model":"","body":{}}`, `{}`, `null`, `[]`, `{"model":"m","body":{}} x`,
		`{"id":"bad id","model":"m","body":{}}`, `{"id":"dot.id","model":"m","body":{}}`,
		`{"id":"` + strings.Repeat("a", 65) + `","model":"m","body":{}}`,
		`{"id":"*","model":"m","body":{}}`, `{"id":">","model":"m","body":{}}`, `{"id":"ünï","model":"m","body":{}}`,
		`{"model":"m","body":{},"timeout_ms":-1}`,
		`{"model":"m","body":{},"timeout_ms":9223372036854775807}`,
		`{"model":"m","body":{},"timeout_ms":18446744073709552}`,
		`{"model":"m","body":{},"timeout_ms":1e3}`, `{"model":"m","body":{},"timeout_ms":"5000"}`,
		`{"model":"m","model":"n","body":{}}`, `{"model":"m","body":{},"team":"x"}`,
		`{"model":5,"body":{}}`, `{"body":{"model":3}}`, `{"body":{"model":null}}`, `{"model":"m","body":"hi"}`,
		`{"model":"` + strings.Repeat("m", 129) + `","body":{}}`,
		`{"model":"m","body":{},"regions":["eu west"]}`, `{"model":"m","body":{},"regions":[]}`,
		`{"model":"m","body":{},"metadata":{"":"v"}}`, `{"model":"m","body":{},"metadata":{"k":null}}`,
		`{"model":"m","body":{"a":1}` + "\xff" + `}`, "{\"model\":\"m\xff\",\"body\":{}}",
		`{"model":"m","body":{"messages":[{"content":"` + "\u2028<&>" + `"}]}}`,
		`{"model":"m","endpoint":"/v1/responses","deployment":"oai-eu-1","body":{"input":"x","previous_response_id":"resp_1"}}`,
		`{"model":"m","endpoint":"GET /v1/responses/{response_id}","body":{"response_id":"resp_1"}}`,
		`{"model":"m","endpoint":"DELETE /v1/responses/{response_id}","deployment":"a.b","body":{"response_id":"resp_1"}}`,
		`{"model":"m","body":{}`, ``, ` `,
	} {
		f.Add([]byte(seed))
	}
	accepted := time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)
	f.Fuzz(func(t *testing.T, data []byte) {
		call, bad := messages.DecodeCall(data)
		if bad != nil {
			if bad.Code == "" || bad.Message == "" {
				t.Fatalf("refusal without a code or a message: %+v", bad)
			}
			if bad.Code != messages.CodeInvalidRequest {
				t.Fatalf("refusal with code %s, want invalid_request: %v", bad.Code, bad)
			}
			return
		}
		checkEnvelope(t, call)
		if call.TimeoutMS > 0 {
			if d := call.DeadlineFrom(accepted, time.Minute).Sub(accepted); d <= 0 {
				t.Fatalf("timeout_ms %d gives a deadline %v after acceptance", call.TimeoutMS, d)
			}
		}
		again, err := json.Marshal(call)
		if err != nil {
			t.Fatalf("an accepted call does not encode: %v", err)
		}
		back, bad := messages.DecodeCall(again)
		if bad != nil {
			t.Fatalf("an accepted call, encoded, is refused: %v\n%s", bad, again)
		}
		sameCall(t, call, back)
	})
}

// checkEnvelope holds an accepted call to the bounds DecodeCall promises.
func checkEnvelope(t *testing.T, c messages.CallRequest) {
	t.Helper()
	if c.ID != "" && !messages.ValidToken(c.ID) {
		t.Fatalf("accepted id %q is not a subject token", c.ID)
	}
	if c.Model == "" || len(c.Model) > messages.MaxModelLen {
		t.Fatalf("accepted model %q", c.Model)
	}
	if !c.Endpoint.Valid() {
		t.Fatalf("accepted endpoint %q", c.Endpoint)
	}
	if body := bytes.TrimSpace(c.Body); len(body) == 0 || body[0] != '{' || !json.Valid(body) {
		t.Fatalf("accepted body %q", c.Body)
	}
	if c.TimeoutMS < 0 || (c.Deadline != nil && c.TimeoutMS != 0) {
		t.Fatalf("accepted timeout_ms %d with deadline %v", c.TimeoutMS, c.Deadline)
	}
	for _, list := range [][]string{c.Regions, c.PreferRegions} {
		if len(list) > messages.MaxRegions {
			t.Fatalf("accepted %d regions", len(list))
		}
		for _, r := range list {
			if !messages.ValidToken(r) {
				t.Fatalf("accepted region %q", r)
			}
		}
	}
	if len(c.Metadata) > messages.MaxMetadataPairs {
		t.Fatalf("accepted %d metadata pairs", len(c.Metadata))
	}
	for k, v := range c.Metadata {
		if k == "" || len(k) > messages.MaxMetadataKey || len(v) > messages.MaxMetadataValue {
			t.Fatalf("accepted metadata %q: %q", k, v)
		}
	}
}

// sameCall reports where a call decoded again differs from the first.
func sameCall(t *testing.T, a, b messages.CallRequest) {
	t.Helper()
	if a.ID != b.ID || a.Model != b.Model || a.Endpoint != b.Endpoint || a.TimeoutMS != b.TimeoutMS {
		t.Fatalf("round trip changed the call: %+v, then %+v", a, b)
	}
	if (a.Deadline == nil) != (b.Deadline == nil) || a.Deadline != nil && !a.Deadline.Equal(*b.Deadline) {
		t.Fatalf("round trip changed the deadline: %v, then %v", a.Deadline, b.Deadline)
	}
	if !slices.Equal(a.Regions, b.Regions) || !slices.Equal(a.PreferRegions, b.PreferRegions) {
		t.Fatalf("round trip changed the regions: %v %v, then %v %v", a.Regions, a.PreferRegions, b.Regions, b.PreferRegions)
	}
	if len(a.Metadata) != len(b.Metadata) {
		t.Fatalf("round trip changed the metadata: %v, then %v", a.Metadata, b.Metadata)
	}
	for k, v := range a.Metadata {
		if w, ok := b.Metadata[k]; !ok || w != v {
			t.Fatalf("round trip changed metadata %q: %q, then %q", k, v, w)
		}
	}
	// The body is compacted and HTML-escaped on the way: the same JSON,
	// not the same bytes.
	if va, vb := jsonValue(t, a.Body), jsonValue(t, b.Body); !reflect.DeepEqual(va, vb) {
		t.Fatalf("round trip changed the body: %q, then %q", a.Body, b.Body)
	}
}

func jsonValue(t *testing.T, data []byte) any {
	t.Helper()
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.UseNumber()
	var v any
	if err := dec.Decode(&v); err != nil {
		t.Fatalf("body %q: %v", data, err)
	}
	return v
}
