package fakeprovider

import (
	"context"
	"encoding/json"
	"net/http"
	"strings"
	"testing"

	"github.com/sluicehq/sluice/messages"
	"github.com/sluicehq/sluice/services/tokens"
)

// A Responses call: a response object with one message of "ok" tokens,
// charged at admission what sluice's estimator reserves (with the same
// default max tokens), settled on the usage.
func TestResponses(t *testing.T) {
	tests := []struct {
		name          string
		body          string
		status        string
		out           int64
		prompt, total int64
	}{
		// "hello world!" is 12 bytes: 3 tokens, + 3 for it, + 3 for the reply.
		{"string", `{"model":"m","input":"hello world!"}`, "completed", 16, 9, 25},
		{"instructions", `{"model":"m","input":"hello world!","instructions":"abcd","max_output_tokens":100}`, "completed", 16, 13, 29},
		{"items", `{"model":"m","input":[{"role":"user","content":[{"type":"input_text","text":"abcd"}]},{"type":"function_call_output","call_id":"c","output":"abcdefgh"}]}`, "completed", 16, 3 + 4 + 5, 28},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := newHarness(t, Config{Keys: map[string]KeyConfig{"k": {RPM: 600, TPM: 6_000_000}}, DefaultMaxTokens: 300, CompletionTokens: 16})
			r := h.post("/v1/responses", "k", tt.body)
			if r.status != http.StatusOK {
				t.Fatalf("status %d: %s", r.status, r.body)
			}
			var resp responseObject
			r.decode(t, &resp)
			if resp.Object != "response" || !strings.HasPrefix(resp.ID, "resp_") || resp.Model != "m" || resp.Status != tt.status ||
				len(resp.Output) != 1 || resp.Output[0].Content[0].Text != completionText(tt.out) {
				t.Fatalf("response %s", r.body)
			}
			if resp.Usage.InputTokens != tt.prompt || resp.Usage.TotalTokens != tt.total || resp.Usage.OutputTokens != tt.out {
				t.Errorf("usage %+v, want input %d total %d", resp.Usage, tt.prompt, tt.total)
			}
			est, bad := tokens.Of(messages.EndpointResponses, []byte(tt.body), 300)
			if bad != nil {
				t.Fatal(bad)
			}
			c := h.fake.Stats().Keys["k"]
			if c.MaxTokens1s != est.Total() || c.PromptTokens != est.Prompt || c.Served != 1 || c.TotalTokens != tt.total {
				t.Errorf("fake charged %d (prompt %d), sluice estimates %d (prompt %d); counters %+v", c.MaxTokens1s, c.PromptTokens, est.Total(), est.Prompt, c)
			}
		})
	}

	t.Run("refused", func(t *testing.T) {
		h := newHarness(t, Config{Keys: map[string]KeyConfig{"k": {RPM: 600, TPM: 6_000_000}}})
		for body, param := range map[string]string{
			`{"model":"m"}`: "input",
			`{"input":"x"}`: "model",
			`{"model":"m","input":"x","max_output_tokens":5}`:              "max_output_tokens",
			`{"model":"m","input":"x","previous_response_id":"resp_nope"}`: "previous_response_id",
			`{"model":"m","input":[{"content":5}]}`:                        "input[0].content",
		} {
			r := h.post("/v1/responses", "k", body)
			if e := r.apiErr(t); r.status != http.StatusBadRequest || e.Param == nil || *e.Param != param {
				t.Errorf("%s: %d %s", body, r.status, r.body)
			}
		}
	})
}

// Responses are stored per key: GET and DELETE find them with the key
// that made them and 404 with another; previous_response_id counts the
// stored context in the input; store: false keeps nothing.
func TestStoredResponses(t *testing.T) {
	h := newHarness(t, Config{Keys: map[string]KeyConfig{"a": {RPM: 600, TPM: 6_000_000}, "b": {RPM: 600, TPM: 6_000_000}}, CompletionTokens: 16})
	get := func(method, id, key string) reply {
		t.Helper()
		r, err := h.do(context.Background(), method, "/v1/responses/"+id, key, "")
		if err != nil {
			t.Fatal(err)
		}
		return r
	}
	var first responseObject
	h.post("/v1/responses", "a", `{"model":"m","input":"hello world!"}`).decode(t, &first)
	if r := get(http.MethodGet, first.ID, "a"); r.status != 200 || !strings.Contains(string(r.body), first.ID) {
		t.Errorf("GET with its key: %d %s", r.status, r.body)
	}
	if r := get(http.MethodGet, first.ID, "b"); r.status != 404 {
		t.Errorf("GET with another key: %d %s", r.status, r.body)
	}
	if r := h.post("/v1/responses", "b", `{"model":"m","input":"x","previous_response_id":"`+first.ID+`"}`); r.status != 400 {
		t.Errorf("chained on another key: %d %s", r.status, r.body)
	}
	var next responseObject
	r := h.post("/v1/responses", "a", `{"model":"m","input":"abcd","previous_response_id":"`+first.ID+`"}`)
	r.decode(t, &next)
	// 3 + 3 + 1 of its own, + the 25 of the first.
	if r.status != 200 || next.Usage.InputTokens != 7+25 || str(next.PreviousResponseID) != first.ID {
		t.Errorf("chained: %d %s", r.status, r.body)
	}
	if r := get(http.MethodDelete, first.ID, "a"); r.status != 200 || !strings.Contains(string(r.body), `"deleted":true`) {
		t.Errorf("DELETE: %d %s", r.status, r.body)
	}
	if r := get(http.MethodGet, first.ID, "a"); r.status != 404 {
		t.Errorf("GET after DELETE: %d %s", r.status, r.body)
	}
	var unstored responseObject
	h.post("/v1/responses", "a", `{"model":"m","input":"x","store":false}`).decode(t, &unstored)
	if r := get(http.MethodGet, unstored.ID, "a"); r.status != 404 {
		t.Errorf("GET of store false: %d %s", r.status, r.body)
	}
	if r := get(http.MethodPut, next.ID, "a"); r.status != http.StatusMethodNotAllowed {
		t.Errorf("PUT: %d", r.status)
	}
}

// A streamed Responses call: typed events, each "event: <type>" with a
// data of that type and a rising sequence_number, ending in
// response.completed with the usage; settled and stored as a plain one.
func TestResponsesStreamed(t *testing.T) {
	h := newHarness(t, Config{Keys: map[string]KeyConfig{"k": {RPM: 600, TPM: 6_000_000}}, CompletionTokens: 2})
	r := h.post("/v1/responses", "k", `{"model":"m","input":"hello world!","stream":true}`)
	if r.status != 200 || !strings.HasPrefix(r.header.Get("Content-Type"), "text/event-stream") {
		t.Fatalf("%d %v %s", r.status, r.header, r.body)
	}
	var types []string
	var done responseObject
	for i, block := range strings.Split(strings.TrimSpace(string(r.body)), "\n\n") {
		name, data, _ := strings.Cut(block, "\n")
		var ev struct {
			Type     string          `json:"type"`
			Seq      int             `json:"sequence_number"`
			Response *responseObject `json:"response"`
		}
		if err := json.Unmarshal([]byte(strings.TrimPrefix(data, "data: ")), &ev); err != nil || "event: "+ev.Type != name || ev.Seq != i {
			t.Fatalf("event %d: %q (%v)", i, block, err)
		}
		types = append(types, ev.Type)
		if ev.Type == "response.completed" {
			done = *ev.Response
		}
	}
	want := []string{"response.created", "response.in_progress", "response.output_item.added", "response.content_part.added",
		"response.output_text.delta", "response.output_text.delta", "response.output_text.done", "response.content_part.done",
		"response.output_item.done", "response.completed"}
	if strings.Join(types, ",") != strings.Join(want, ",") {
		t.Errorf("events %v", types)
	}
	if done.Usage == nil || done.Usage.InputTokens != 9 || done.Usage.OutputTokens != 2 || done.Output[0].Content[0].Text != "ok ok" {
		t.Errorf("completed %+v", done)
	}
	if c := h.fake.Stats().Keys["k"]; c.Served != 1 || c.TotalTokens != 11 {
		t.Errorf("counters %+v", c)
	}
	if g, _ := h.do(context.Background(), http.MethodGet, "/v1/responses/"+done.ID, "k", ""); g.status != 200 {
		t.Errorf("the streamed response is not stored: %d %s", g.status, g.body)
	}
}
