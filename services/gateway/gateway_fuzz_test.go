package gateway

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/sluicehq/sluice/messages"
	"github.com/sluicehq/sluice/services/config"
	"github.com/sluicehq/sluice/services/tokens"
)

// The fuzz targets hold what the gateway reads from HTTP clients (the
// body of each call route, and the identity, tier and timeout headers)
// and what it writes back in their dialects to the gateway's contract.

const fuzzToken = "sk-fuzz-demo-0123456789"

// fuzzConfig has a pool for each route, one the team may not use, and a
// team that may use some tiers only.
func fuzzConfig(f *testing.F) (*config.Config, caller) {
	f.Helper()
	cfg, err := config.Parse([]byte(fmt.Sprintf(`pools:
  chat:
    deployments:
      - {id: chat-1, provider: openai, base_url: "http://127.0.0.1:1/v1", region: us-east, key: K1, rpm: 600, tpm: 100000}
  emb:
    deployments:
      - {id: emb-1, provider: azure, base_url: "http://127.0.0.1:1", region: us-east, key: K2, rpm: 600, tpm: 100000}
  claude:
    default_max_tokens: 10000000
    deployments:
      - {id: claude-1, provider: anthropic, base_url: "http://127.0.0.1:1/v1", region: us-east, key: K3, rpm: 600, tpm: 100000}
  secret-pool:
    deployments:
      - {id: other-1, provider: openai, base_url: "http://127.0.0.1:1/v1", region: us-east, key: K4, rpm: 600, tpm: 100000}
teams:
  demo:
    tiers: [high, standard, batch]
    pools: [chat, emb, claude]
    tokens: [%q]
calls:
  default_timeout: 90s
  max_timeout: 10m
`, config.HashToken(fuzzToken))))
	if err != nil {
		f.Fatal(err)
	}
	return cfg, caller{team: "demo", cfg: cfg.Teams["demo"]}
}

// FuzzCallBody reads the body of each call route: no panic; a refusal is
// a 4xx with a code and a message, in JSON in both dialects; an accepted
// body names a pool the team may use on that route, reserves a bounded
// estimate, and the call it becomes (the body spliced in by hand)
// decodes, as sluice's services decode it, to the same model, endpoint,
// body bytes and estimate.
func FuzzCallBody(f *testing.F) {
	cfg, c := fuzzConfig(f)
	for _, s := range []struct {
		route uint8
		body  string
	}{
		{0, `{"model":"chat","messages":[{"role":"user","content":"hi"}],"max_tokens":5}`},
		{0, `{"model":"chat","messages":[{"role":"user","content":"hi"}],"stream":true,"stream_options":{"include_usage":true}}`},
		{0, " \n{\n  \"model\": \"chat\",\n  \"messages\": [{\"role\": \"user\", \"content\": \"<a & b> \\u2028\"}]\n}\n "},
		{0, `{"model":"x\",\"body\":0","messages":[{"content":"x"}]}`},
		{0, `{"model":"chat","messages":[],"n":0}`},
		{0, `{"model":"chat","messages":[{"content":"x"}],"max_tokens":-1}`},
		{0, `{"model":"emb","messages":[{"content":"x"}]}`},
		{0, `{"model":"secret-pool","messages":[{"content":"x"}]}`},
		{0, `{"model":"nope","messages":[{"content":"x"}]}`},
		{0, `{"model":"` + strings.Repeat("m", 129) + `"}`},
		{0, `{"model":5}`}, {0, `{"model":null}`}, {0, `{"model":""}`}, {0, `{}`},
		{0, `{"model":"chat"`}, {0, `[]`}, {0, `"chat"`}, {0, ``}, {0, `{"model":"chat","messages":[{"content":"x"}]} {}`},
		{0, "{\"model\":\"chat\",\"messages\":[{\"content\":\"\xff\xfe\"}]}"},
		{1, `{"model":"emb","input":["a","b"]}`},
		{1, `{"model":"emb","input":[1,2,3],"stream":true}`},
		{1, `{"model":"emb","input":null}`},
		{1, `{"model":"chat","input":"x"}`},
		{2, `{"model":"claude","max_tokens":10,"messages":[{"role":"user","content":"hi"}],"system":"be brief"}`},
		{2, `{"model":"claude","messages":[{"role":"user","content":"hi"}]}`},
		{2, `{"model":"claude","max_tokens":10,"messages":[{"role":"user","content":[{"type":"text","text":"x"}]}],"stream":true}`},
		{2, `{"model":"chat","max_tokens":10,"messages":[{"role":"user","content":"hi"}]}`},
		{3, `{"model":"chat","prompt":"hello","max_tokens":5,"n":2}`},
		{3, `{"model":"chat","prompt":["a","b"],"best_of":3,"stream":true,"stream_options":{"include_usage":true}}`},
		{3, `{"model":"chat","prompt":[[1,2],[3]],"max_tokens":10000000,"best_of":128}`},
		{3, `{"model":"chat","prompt":[1,2,3],"max_tokens":0}`},
		{3, `{"model":"chat","prompt":[]}`},
		{3, `{"model":"chat","prompt":"a","n":3,"best_of":2}`},
		{3, `{"model":"chat","prompt":"a","PROMPT":"b"}`},
		{3, `{"model":"claude","prompt":"a"}`},
		{4, `{"model":"claude","system":"be brief","messages":[{"role":"user","content":"hi"}]}`},
		{4, `{"model":"claude","messages":[{"role":"user","content":"hi"}],"stream":true}`},
		{4, `{"model":"claude","max_tokens":1,"messages":[{"role":"user","content":"hi"}]}`},
		{4, `{"model":"chat","messages":[{"role":"user","content":"hi"}]}`},
		{5, `{"model":"chat","input":"hello","instructions":"be brief","max_output_tokens":20}`},
		{5, `{"model":"chat","input":[{"role":"user","content":[{"type":"input_text","text":"hi"}]},{"type":"function_call_output","output":"x"}],"stream":true}`},
		{5, `{"model":"chat","input":"a","previous_response_id":"resp_1","Previous_Response_Id":"resp_2"}`},
		{5, `{"model":"chat","input":[{"content":5}],"max_output_tokens":0}`},
		{5, `{"model":"claude","input":"a"}`},
	} {
		f.Add(s.route, []byte(s.body))
	}
	f.Fuzz(func(t *testing.T, r uint8, body []byte) {
		rt := callRoutes[int(r)%len(callRoutes)]
		model, est, e := check(cfg, c, rt, body)
		if e != nil {
			if e.Status < 400 || e.Status > 499 || e.Code == "" || e.Message == "" {
				t.Fatalf("refusal %+v", e)
			}
			checkErrorBodies(t, e)
			return
		}
		if pool, ok := cfg.Pool(model); !ok || !c.cfg.AllowsPool(pool.Name()) || !serves(pool, rt.endpoint) {
			t.Fatalf("accepted model %q on %s", model, rt.path)
		}
		most := int64(tokens.MaxMaxTokens * tokens.MaxN)
		if rt.endpoint == messages.EndpointCompletions {
			most *= tokens.MaxPrompts // each prompt of a batch gets its own
		}
		if est.Prompt < 0 || est.Completion < 0 || est.Completion > most || est.Total() < est.Prompt {
			t.Fatalf("estimate %+v", est)
		}
		call := &messages.CallRequest{ID: messages.NewCallID(), Model: model, Endpoint: rt.endpoint, Body: body, TimeoutMS: 1500}
		data, err := encodeCall(call)
		if err != nil {
			t.Fatalf("encodeCall: %v", err)
		}
		got, bad := messages.DecodeCall(data)
		if bad != nil {
			t.Fatalf("the call the gateway publishes is refused: %v\n%s", bad, data)
		}
		if got.ID != call.ID || got.Model != model || got.Endpoint != rt.endpoint || got.TimeoutMS != 1500 || !bytes.Equal(got.Body, bytes.TrimSpace(body)) {
			t.Fatalf("published %q, decoded as %+v", data, got)
		}
		pool, _ := cfg.Pool(model)
		if again, bad := tokens.Of(got.Endpoint, got.Body, pool.DefaultMaxTokens); bad != nil || again != est {
			t.Fatalf("the dispatcher estimates %+v (%v), the gateway %+v", again, bad, est)
		}
	})
}

// checkErrorBodies holds an error's answer to JSON in both dialects, with
// its message as it was (made valid UTF-8), and its stream event to one
// event of "event:" and "data:" lines.
func checkErrorBodies(t *testing.T, e *apiError) {
	t.Helper()
	want := string([]rune(e.Message))
	for _, d := range []dialect{openAI, anthropic} {
		var v struct {
			Type  string `json:"type"`
			Error struct {
				Message string  `json:"message"`
				Type    string  `json:"type"`
				Code    *string `json:"code"`
			} `json:"error"`
		}
		body := e.body(d)
		if err := json.Unmarshal(body, &v); err != nil || v.Error.Message != want || v.Error.Type == "" {
			t.Fatalf("dialect %d: error body %q (%v) for %+v", d, body, err, e)
		}
		if d == anthropic && v.Type != "error" || d == openAI && (v.Error.Code == nil || *v.Error.Code != string([]rune(e.Code))) {
			t.Fatalf("dialect %d: error body %q for %+v", d, body, e)
		}
		event := streamErrorEvent(d, e)
		lines := strings.Split(string(event), "\n")
		for i, line := range lines {
			name, value, _ := strings.Cut(line, ": ")
			switch {
			case strings.ContainsRune(line, '\r'):
				t.Fatalf("event %q has a carriage return", event)
			case name == "event" && i == 0 && d == anthropic && value == "error":
			case name == "data" && i == len(lines)-1 && value == string(body):
			default:
				t.Fatalf("event %q, line %d", event, i)
			}
		}
		w := httptest.NewRecorder()
		writeError(w, d, e)
		if w.Code != e.Status || !bytes.Equal(w.Body.Bytes(), body) {
			t.Fatalf("wrote %d %q for %+v", w.Code, w.Body.Bytes(), e)
		}
		if ra := w.Header().Get("Retry-After"); ra != "" {
			if n, err := strconv.Atoi(ra); err != nil || n < 1 {
				t.Fatalf("Retry-After %q", ra)
			}
		}
	}
}

// FuzzRequestHeaders reads who calls, on which tier and for how long: no
// panic; a refusal has a status, a code and a message; an accepted caller
// is the team its token names, its tier one the team may use, and its
// timeout within (0, calls.max_timeout], never longer than the
// request's own deadline.
func FuzzRequestHeaders(f *testing.F) {
	cfg, _ := fuzzConfig(f)
	for _, s := range []struct {
		auth, apiKey, tier, timeout, sdk string
		deadlineMS                       int64
	}{
		{"Bearer " + fuzzToken, "", "", "", "", 0},
		{"bearer  " + fuzzToken + " ", "", "HIGH", "30s", "", 0},
		{"", fuzzToken, "batch", "2.5", "", 0},
		{"Basic " + fuzzToken, "", "standard", "1m30s", "600", 0},
		{"Bearer " + fuzzToken, "", "critical", "", "", 0},
		{"Bearer " + fuzzToken, "", "gold", "", "", 0},
		{"Bearer sk-wrong", "", "", "", "", 0},
		{"Bearer", "", "", "", "", 0},
		{"Bearer " + fuzzToken, "", "", "0", "", 0},
		{"Bearer " + fuzzToken, "", "", "-5s", "", 0},
		{"Bearer " + fuzzToken, "", "", "11m", "", 0},
		{"Bearer " + fuzzToken, "", "", "NaN", "", 0},
		{"Bearer " + fuzzToken, "", "", "1e300", "", 0},
		{"Bearer " + fuzzToken, "", "", "0.0000000001", "", 0},
		{"Bearer " + fuzzToken, "", "", "2562047h47m16.854775807s", "", 0},
		{"Bearer " + fuzzToken, "", "", "", "9223372036854775807", 0},
		{"Bearer " + fuzzToken, "", "", "", "-1", 5000},
		{"Bearer " + fuzzToken, "", "", "1h", "", 1},
		{"Bearer " + fuzzToken, "", "", "", "", -1000},
		{"Bearer \xff", "\x00", "standard\n", "30s\r\n", "\t", 0},
	} {
		f.Add(s.auth, s.apiKey, s.tier, s.timeout, s.sdk, s.deadlineMS)
	}
	g := &Gateway{}
	f.Fuzz(func(t *testing.T, auth, apiKey, tier, timeout, sdk string, deadlineMS int64) {
		r := httptest.NewRequest(http.MethodPost, "/v1/messages", nil)
		for k, v := range map[string]string{"Authorization": auth, "X-Api-Key": apiKey, HeaderTier: tier, HeaderTimeout: timeout, headerSDKTimeout: sdk} {
			if v != "" {
				r.Header.Set(k, v)
			}
		}
		now := time.Now()
		if deadlineMS != 0 {
			ctx, cancel := context.WithDeadline(r.Context(), now.Add(time.Duration(max(min(deadlineMS, 1e9), -1e9))*time.Millisecond))
			defer cancel()
			r = r.WithContext(ctx)
		}
		refused := func(what string, e *apiError, statuses ...int) {
			t.Helper()
			if e.Code == "" || e.Message == "" || !contains(statuses, e.Status) {
				t.Fatalf("%s refused with %+v", what, e)
			}
			checkErrorBodies(t, e)
		}
		for _, apiKeyHeader := range []bool{false, true} {
			c, e := identify(cfg, r, apiKeyHeader)
			if e != nil {
				refused("identity", e, http.StatusUnauthorized)
				continue
			}
			if c.team != "demo" || c.cfg != cfg.Teams["demo"] {
				t.Fatalf("identified as %q", c.team)
			}
			tr, e := tierOf(c, r)
			if e != nil {
				refused("tier", e, http.StatusBadRequest, http.StatusForbidden)
			} else if !tr.Valid() || !c.cfg.AllowsTier(tr) {
				t.Fatalf("tier %q from %q", tr, tier)
			}
		}
		d, e := g.timeoutOf(cfg, r, now)
		if e != nil {
			refused("timeout", e, http.StatusBadRequest, http.StatusGatewayTimeout)
			return
		}
		if d <= 0 || d > cfg.Calls.MaxTimeout {
			t.Fatalf("timeout %v from %q, %q, deadline %dms", d, timeout, sdk, deadlineMS)
		}
		if dl, ok := r.Context().Deadline(); ok && d > max(dl.Sub(now), time.Millisecond) {
			t.Fatalf("timeout %v beyond the request's deadline in %v", d, dl.Sub(now))
		}
		if s := strings.TrimSpace(timeout); s != "" {
			if p, ok := parseTimeout(s); !ok || p <= 0 {
				t.Fatalf("accepted %s %q, which parses to %v %v", HeaderTimeout, timeout, p, ok)
			}
		}
	})
}

func contains(list []int, n int) bool {
	for _, x := range list {
		if x == n {
			return true
		}
	}
	return false
}

// FuzzErrorAnswer turns any error of a result (whatever its code, message
// and field) into the gateway's answer: a status a client can receive,
// and bodies and stream events that hold the message.
func FuzzErrorAnswer(f *testing.F) {
	for _, code := range messages.Codes {
		f.Add(string(code), "the message", "body.max_tokens", int64(1500))
	}
	f.Add("invalid_request", "no deployment serves it", "endpoint", int64(0))
	f.Add("queue_full", "team demo has 10 calls waiting", "", int64(-5))
	f.Add("queue_full", "x", "", int64(9223372036854775807))
	f.Add("", "", "", int64(0))
	f.Add("made_up", "line one\nline two\r\n\n\"quoted\" <b>&</b> \u2028", "body", int64(1))
	f.Add("internal", "\xff\xfe", "body.", int64(0))
	f.Fuzz(func(t *testing.T, code, message, field string, retryAfterMS int64) {
		e := fromCallError(&messages.Error{Code: messages.Code(code), Message: message, Field: field, RetryAfterMS: retryAfterMS})
		if e.Status < 400 || e.Status > 599 || e.Code == "" || e.Message == "" {
			t.Fatalf("answer %+v for code %q", e, code)
		}
		checkErrorBodies(t, e)
	})
}
