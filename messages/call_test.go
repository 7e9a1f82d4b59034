package messages

import (
	"errors"
	"strings"
	"testing"
	"time"
)

func TestDecodeCall(t *testing.T) {
	cases := []struct {
		name  string
		in    string
		field string // expected Error.Field, "" for success
		code  Code
		check func(t *testing.T, c CallRequest)
	}{
		{name: "minimal", in: `{"body":{"model":"gpt-4o-mini","messages":[]}}`, check: func(t *testing.T, c CallRequest) {
			if c.Model != "gpt-4o-mini" || c.Endpoint != EndpointChatCompletions {
				t.Fatalf("model %q endpoint %q", c.Model, c.Endpoint)
			}
		}},
		{name: "top-level model wins", in: `{"model":"pool","body":{"model":"other"}}`, check: func(t *testing.T, c CallRequest) {
			if c.Model != "pool" {
				t.Fatalf("model %q", c.Model)
			}
		}},
		{name: "embeddings", in: `{"model":"e","endpoint":"/v1/embeddings","body":{"input":"x"}}`},
		{name: "deadline", in: `{"model":"m","body":{},"deadline":"2026-11-25T10:00:00Z"}`, check: func(t *testing.T, c CallRequest) {
			if !c.Deadline.Equal(time.Date(2026, 11, 25, 10, 0, 0, 0, time.UTC)) {
				t.Fatalf("deadline %v", c.Deadline)
			}
		}},
		{name: "malformed JSON", in: `{"model":`, code: CodeInvalidRequest},
		{name: "not an object", in: `[1,2]`, code: CodeInvalidRequest},
		{name: "trailing data", in: `{"model":"m","body":{}} {}`, code: CodeInvalidRequest},
		{name: "unknown field", in: `{"model":"m","body":{},"team":"x"}`, field: "team"},
		{name: "wrong type", in: `{"model":5,"body":{}}`, field: "model"},
		{name: "missing body", in: `{"model":"m"}`, field: "body"},
		{name: "body not object", in: `{"model":"m","body":"hi"}`, field: "body"},
		{name: "missing model", in: `{"body":{"messages":[]}}`, field: "model"},
		{name: "body model not string", in: `{"body":{"model":3}}`, field: "body.model"},
		{name: "bad id", in: `{"id":"a.b","model":"m","body":{}}`, field: "id"},
		{name: "unknown endpoint", in: `{"model":"m","endpoint":"/v1/images","body":{}}`, field: "endpoint"},
		{name: "both deadlines", in: `{"model":"m","body":{},"timeout_ms":5,"deadline":"2026-11-25T10:00:00Z"}`, field: "timeout_ms"},
		{name: "negative timeout", in: `{"model":"m","body":{},"timeout_ms":-5}`, field: "timeout_ms"},
		{name: "bad deadline", in: `{"model":"m","body":{},"deadline":"tomorrow"}`, field: "deadline"},
		{name: "bad region", in: `{"model":"m","body":{},"regions":["eu west"]}`, field: "regions"},
		{name: "long model", in: `{"model":"` + strings.Repeat("m", 200) + `","body":{}}`, field: "model"},
		{name: "pinned", in: `{"model":"m","endpoint":"/v1/responses","deployment":"oai-eu-1","body":{"input":"x","previous_response_id":"resp_1"}}`, check: func(t *testing.T, c CallRequest) {
			if c.Deployment != "oai-eu-1" || c.Endpoint != EndpointResponses {
				t.Fatalf("%+v", c)
			}
		}},
		{name: "bad deployment", in: `{"model":"m","deployment":"a.b","body":{}}`, field: "deployment"},
		{name: "stored response without deployment", in: `{"model":"m","endpoint":"GET /v1/responses/{response_id}","body":{"response_id":"resp_1"}}`, field: "deployment"},
		{name: "stored response delete", in: `{"model":"m","endpoint":"DELETE /v1/responses/{response_id}","deployment":"d","body":{"response_id":"resp_1"}}`},
		{name: "deployment misspelled", in: `{"model":"m","deployment":"a","Deployment":"b","body":{}}`, field: "Deployment"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			c, err := DecodeCall([]byte(tc.in))
			wantErr := tc.field != "" || tc.code != ""
			if !wantErr {
				if err != nil {
					t.Fatalf("unexpected error: %v", err)
				}
				if tc.check != nil {
					tc.check(t, c)
				}
				return
			}
			if err == nil {
				t.Fatalf("expected an error, got %+v", c)
			}
			if !errors.Is(err, ErrInvalidRequest) {
				t.Fatalf("code %s, want invalid_request", err.Code)
			}
			if err.Field != tc.field {
				t.Fatalf("field %q, want %q (%v)", err.Field, tc.field, err)
			}
			if err.Message == "" {
				t.Fatal("error has no message")
			}
		})
	}
}

func TestParseCallSubject(t *testing.T) {
	kind, team, tier, err := ParseCallSubject(CallSubject("demo", TierBatch))
	if err != nil || kind != KindCall || team != "demo" || tier != TierBatch {
		t.Fatalf("got %v %q %q %v", kind, team, tier, err)
	}
	kind, _, _, err = ParseCallSubject(RetrySubject("demo", TierHigh))
	if err != nil || kind != KindRetry {
		t.Fatalf("retry subject: %v %v", kind, err)
	}
	for _, bad := range []string{"sluice.call.demo", "sluice.exec.demo.x", "other.call.a.b", "sluice.call.a.b.c"} {
		if _, _, _, err := ParseCallSubject(bad); err == nil {
			t.Errorf("%q parsed", bad)
		}
	}
}

func TestErrorIsMatchesByCode(t *testing.T) {
	var err error = Errorf(CodeQueueFull, "team %s has 10 queued", "a")
	if !errors.Is(err, ErrQueueFull) || errors.Is(err, ErrForbidden) {
		t.Fatal("errors.Is must match by code only")
	}
}

func TestDerivedCallIDIsStableAndValid(t *testing.T) {
	a, b := DerivedCallID(42), DerivedCallID(42)
	if a != b || a == DerivedCallID(43) || !ValidToken(a) {
		t.Fatalf("derived ids: %q %q", a, b)
	}
	if !ValidToken(NewCallID()) {
		t.Fatal("new call ids must be valid subject tokens")
	}
}
