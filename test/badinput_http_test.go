package test

import (
	"bufio"
	"bytes"
	"compress/gzip"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/sluicehq/sluice/messages"
	"github.com/sluicehq/sluice/services/config"
	"github.com/sluicehq/sluice/services/devstack"
	"github.com/sluicehq/sluice/services/gateway"
	"github.com/sluicehq/sluice/services/usage"
)

// The bad-input corpus over HTTP: every case is a request to the gateway,
// as an SDK, curl or a broken client would send it, and must get exactly
// one answer with the status it calls for and, when it is an error,
// sluice's error body in the route's dialect. A request that became a
// call has exactly one result; nothing crashes; nothing the client sent
// becomes a metric label or a usage key; usage counts the calls that
// reached a result, and only those.

// limitedToken is team limited's gateway token in the HTTP corpus: that
// team may use tier batch only.
const limitedToken = "sk-sluice-limited"

// badHTTPReadTimeout is the gateway's ReadTimeout and ReadHeaderTimeout
// in the corpus: how long a client sending its request slowly has before
// the gateway gives up on it.
const badHTTPReadTimeout = 1 * time.Second

// badInputHTTPYAML is badInputYAML's configuration, with Anthropic pools
// (one on the fake provider, some on badProvider) and a token for team
// limited.
func badInputHTTPYAML(providerURL string) func(string) string {
	base := badInputYAML(providerURL)
	return func(fakeURL string) string {
		var b strings.Builder
		dep := func(pool, url string) {
			fmt.Fprintf(&b, "  %s:\n    deployments:\n      - {id: %s-1, provider: anthropic, base_url: %q, region: us-east, model: claude-sonnet-4, key: KEY_A, rpm: 100000, tpm: 100000000}\n",
				pool, pool, url)
		}
		dep("a", fakeURL+"/v1")
		for _, p := range []string{"html", "html500", "cut0", "cut1", "slowbody"} {
			dep("a-"+p, providerURL+"/"+p+"/v1")
		}
		y := strings.Replace(base(fakeURL), "teams:\n", b.String()+"teams:\n", 1)
		return strings.Replace(y, "limited: {tiers: [batch]}",
			fmt.Sprintf("limited: {tiers: [batch], default_tier: batch, tokens: [%q]}", config.HashToken(limitedToken)), 1)
	}
}

// httpCase is one request of the HTTP corpus.
type httpCase struct {
	name   string
	method string // default POST
	path   string
	// header is pairs of name and value set on the request (after the
	// default Authorization and Content-Type); an empty value removes the
	// header.
	header  []string
	body    string
	chunked bool // sent without a Content-Length
	// raw, when set, sends the request itself over conn, a fresh
	// connection to the gateway, instead of the HTTP client.
	raw func(t *testing.T, conn net.Conn)

	status int
	// code is the error's OpenAI code (or, on /v1/messages, Anthropic's
	// error type); "" for an answer that is not sluice's error.
	code string
	// stream: a 200 event stream, ended by an error event with code if
	// code is set, or as the dialect ends a stream.
	stream bool
	// provider: the answer is the provider's own (success, or an error
	// sluice passes on), not sluice's error.
	provider bool
	// call: the request becomes a call (it carries x-sluice-call-id and
	// has exactly one result).
	call bool
	// message, if set, must be part of the error's message.
	message string
	// closed: the gateway closes the connection after its answer.
	closed bool
	// netHTTP: the answer is net/http's own, written before any handler
	// runs (plain text); status 0: the connection is closed unanswered.
	netHTTP bool
}

// chatBody is a small chat completion request for model, with more
// fields (JSON, starting with a comma) appended.
func chatBody(model, extra string) string {
	return fmt.Sprintf(`{"model":%q,"messages":[{"role":"user","content":"hello there"}],"max_tokens":5%s}`, model, extra)
}

// anthropicBody is a small Messages request for model.
func anthropicBody(model, extra string) string {
	return fmt.Sprintf(`{"model":%q,"max_tokens":5,"messages":[{"role":"user","content":"hello there"}]%s}`, model, extra)
}

// paddedChat is a chat request for pool m of exactly size bytes.
func paddedChat(size int) string {
	frame := chatBody("m", `,"user":""`)
	pad := size - len(frame)
	if pad < 0 {
		panic("paddedChat: size too small")
	}
	return chatBody("m", `,"user":"`+strings.Repeat("u", pad)+`"`)
}

func gzipped(s string) string {
	var b bytes.Buffer
	w := gzip.NewWriter(&b)
	_, _ = w.Write([]byte(s))
	_ = w.Close()
	return b.String()
}

func badHTTPCases() []httpCase {
	const (
		chat = "/v1/chat/completions"
		emb  = "/v1/embeddings"
		msgs = "/v1/messages"
		inv  = "invalid_request"
		ainv = "invalid_request_error"
	)
	var cs []httpCase
	add := func(c httpCase) { cs = append(cs, c) }
	bad := func(name, path, body string, status int, code string) {
		add(httpCase{name: name, path: path, body: body, status: status, code: code})
	}
	ok := func(name, path, body string, header ...string) {
		add(httpCase{name: name, path: path, body: body, header: header, status: 200, provider: true, call: true})
	}

	// Malformed and truncated JSON, on each call route.
	good := chatBody("m", "")
	for _, cut := range []int{0, 1, 9, len(good) / 2, len(good) - 1} {
		bad(fmt.Sprintf("chat truncated at %d", cut), chat, good[:cut], 400, inv)
	}
	for _, raw := range []string{`not json`, `[]`, `"m"`, `null`, `42`, good + `{}`, good + ` trailing`,
		"\xef\xbb\xbf" + good, `{"model":"m",}`, `{'model':'m'}`, "{\"model\":\"m\",\"messages\":[{\"role\":\"user\",\"content\":\"\x00\"}],\"max_tokens\":5}"} {
		bad("chat malformed "+strconv.Quote(raw[:min(len(raw), 16)]), chat, raw, 400, inv)
	}
	bad("embeddings truncated", emb, `{"model":"m","input":"hel`, 400, inv)
	bad("embeddings malformed", emb, `{"model":"m" "input":"x"}`, 400, inv)
	goodA := anthropicBody("a", "")
	bad("messages truncated", msgs, goodA[:len(goodA)/2], 400, ainv)
	bad("messages malformed", msgs, `{"model":"a",,}`, 400, ainv)
	bad("messages empty body", msgs, ``, 400, ainv)

	// Wrong types in the fields sluice reads.
	for _, raw := range []string{`5`, `null`, `[]`, `{}`, `true`} {
		bad("model = "+raw, chat, `{"model":`+raw+`,"messages":[{"role":"user","content":"x"}]}`, 400, inv)
	}
	bad("no model", chat, `{"messages":[{"role":"user","content":"x"}]}`, 400, inv)
	for _, raw := range []string{`"hi"`, `5`, `[]`, `[5]`, `[{"role":"user","content":5}]`, `{}`} {
		bad("messages = "+raw, chat, `{"model":"m","messages":`+raw+`}`, 400, inv)
	}
	for _, raw := range []string{`"5"`, `-5`, `0`, `1.5`, `1e30`, `99999999999999999999`, `10000001`} {
		bad("max_tokens = "+raw, chat, `{"model":"m","messages":[{"role":"user","content":"x"}],"max_tokens":`+raw+`}`, 400, inv)
	}
	bad("max_completion_tokens = -1", chat, `{"model":"m","messages":[{"role":"user","content":"x"}],"max_completion_tokens":-1}`, 400, inv)
	for _, raw := range []string{`-1`, `0`, `129`, `"2"`, `1e9`} {
		bad("n = "+raw, chat, chatBody("m", `,"n":`+raw), 400, inv)
	}
	bad("stream = \"yes\"", chat, chatBody("m", `,"stream":"yes"`), 400, inv)
	// What sluice does not read is the provider's to judge.
	for _, raw := range []string{`1e308`, `-1`, `"hot"`} {
		ok("temperature = "+raw+" is passed on", chat, chatBody("m", `,"temperature":`+raw))
	}
	bad("embeddings input missing", emb, `{"model":"m"}`, 400, inv)
	bad("embeddings input = 5.5", emb, `{"model":"m","input":5.5}`, 400, inv)
	bad("embeddings input = {}", emb, `{"model":"m","input":{}}`, 400, inv)
	// (Refused by the dispatchers, not the gateway.)
	add(httpCase{name: "embeddings streamed", path: emb, body: `{"model":"m","input":"x","stream":true}`, status: 400, code: inv, call: true})
	bad("messages without max_tokens", msgs, `{"model":"a","messages":[{"role":"user","content":"x"}]}`, 400, ainv)
	bad("messages max_tokens = -1", msgs, `{"model":"a","max_tokens":-1,"messages":[{"role":"user","content":"x"}]}`, 400, ainv)
	bad("messages max_tokens = \"5\"", msgs, `{"model":"a","max_tokens":"5","messages":[{"role":"user","content":"x"}]}`, 400, ainv)
	bad("messages = []", msgs, `{"model":"a","max_tokens":5,"messages":[]}`, 400, ainv)
	bad("messages system = 5", msgs, anthropicBody("a", `,"system":5`), 400, ainv)
	// A reservation no deployment of pool small (1,000 tpm) can admit is
	// refused by the dispatcher at once, with the numbers.
	add(httpCase{name: "reservation over every deployment's tpm", path: chat, body: `{"model":"small","messages":[{"role":"user","content":"x"}],"max_tokens":100000}`, status: 400, code: inv, call: true, message: "1000"})

	// Unknown and duplicated fields.
	ok("unknown field is passed on", chat, chatBody("m", `,"frobnicate":{"a":[1,2]}`))
	ok("a field sluice does not read, twice, is passed on", chat, chatBody("m", `,"user":"a","user":"b"`))
	ok("model nested in metadata is not the request's", chat, chatBody("m", `,"metadata":{"model":"gpt-9","n":"x"}`))
	ok("model spelt Model, alone", chat, `{"Model":"m","messages":[{"role":"user","content":"x"}],"max_tokens":5}`)
	// A field sluice reads, twice: what sluice checked and reserved must
	// be what the provider reads, whichever of the two it takes.
	bad("model twice", chat, `{"model":"m","model":"p-html","messages":[{"role":"user","content":"x"}]}`, 400, inv)
	bad("max_tokens twice", chat, chatBody("m", `,"max_tokens":100000`), 400, inv)
	bad("max_tokens in two cases", chat, `{"model":"m","messages":[{"role":"user","content":"x"}],"max_tokens":100000,"Max_Tokens":5}`, 400, inv)
	bad("messages twice", chat, `{"model":"m","messages":[{"role":"user","content":"x"}],"messages":[{"role":"user","content":"y"}]}`, 400, inv)
	bad("embeddings input twice", emb, `{"model":"m","input":"x","INPUT":"y"}`, 400, inv)
	bad("messages max_tokens twice", msgs, anthropicBody("a", `,"max_tokens":100000`), 400, ainv)

	// Model names.
	for _, name := range []string{"gpt-9", "m.x", "m*", "m >", "m m", "mödel", "M", " m", strings.Repeat("m", 65), strings.Repeat("m", 128)} {
		bad("model "+strconv.Quote(name[:min(len(name), 12)])+fmt.Sprintf(" (%d bytes)", len(name)), chat, chatBody(name, ""), 404, "model_not_found")
	}
	bad("model of 129 characters", chat, chatBody(strings.Repeat("m", 129), ""), 400, inv)
	bad("model of 10,000 characters", chat, chatBody(strings.Repeat("m", 8000), ""), 400, inv)
	bad("openai pool on /v1/messages", msgs, anthropicBody("m", ""), 404, "not_found_error")
	bad("anthropic pool on chat completions", chat, chatBody("a", ""), 404, "model_not_found")
	bad("unknown model on /v1/messages", msgs, anthropicBody("claude-9.*", ""), 404, "not_found_error")

	// Identity and tiers.
	auth := func(name, path, body string, status int, code string, header ...string) {
		add(httpCase{name: name, path: path, body: body, header: header, status: status, code: code})
	}
	auth("no token", chat, good, 401, "invalid_api_key", "Authorization", "")
	auth("unknown token", chat, good, 401, "invalid_api_key", "Authorization", "Bearer sk-nobody")
	auth("Bearer without a token", chat, good, 401, "invalid_api_key", "Authorization", "Bearer ")
	auth("Basic credentials", chat, good, 401, "invalid_api_key", "Authorization", "Basic ZGVtbzpkZW1v")
	auth("x-api-key on chat completions", chat, good, 401, "invalid_api_key", "Authorization", "", "x-api-key", devToken)
	auth("no token on /v1/messages", msgs, goodA, 401, "authentication_error", "Authorization", "")
	add(httpCase{name: "x-api-key on /v1/messages", path: msgs, body: goodA, header: []string{"Authorization", "", "x-api-key", devToken},
		status: 200, provider: true, call: true})
	for _, tier := range []string{"urgent", "ständard", strings.Repeat("s", 65), "*", "standard.x", "standard batch"} {
		auth("tier "+strconv.Quote(tier[:min(len(tier), 12)]), chat, good, 400, inv, gateway.HeaderTier, tier)
	}
	auth("tier on /v1/messages", msgs, goodA, 400, ainv, gateway.HeaderTier, "urgent")
	ok("tier in upper case", chat, good, gateway.HeaderTier, "STANDARD")
	auth("a tier the team may not use", chat, good, 403, "forbidden", "Authorization", "Bearer "+limitedToken, gateway.HeaderTier, "critical")
	ok("the team's default tier", chat, good, "Authorization", "Bearer "+limitedToken)

	// Deadlines: X-Sluice-Timeout is a duration, so a deadline in the past
	// is a negative one.
	for _, v := range []string{"-5s", "0", "0s", "-0.5", "soon", "1e400", "NaN", "Inf", "87600h", "9223372036854775807", "0.0000000001"} {
		auth("timeout "+strconv.Quote(v), chat, good, 400, inv, gateway.HeaderTimeout, v)
	}
	auth("timeout years away on /v1/messages", msgs, goodA, 400, ainv, gateway.HeaderTimeout, "876000h")
	ok("timeout of calls.max_timeout", chat, good, gateway.HeaderTimeout, "24h")
	ok("an SDK timeout that is not a number is ignored", chat, good, "X-Stainless-Timeout", "banana")
	ok("an SDK timeout of -1 is ignored", chat, good, "X-Stainless-Timeout", "-1")
	add(httpCase{name: "timeout of a millisecond", path: chat, body: chatBody("p-slowbody", ""), header: []string{gateway.HeaderTimeout, "1ms"},
		status: 504, code: "deadline_exceeded", call: true})
	add(httpCase{name: "provider slower than the timeout", path: chat, body: chatBody("p-slowbody", ""), header: []string{gateway.HeaderTimeout, "1.5"},
		status: 504, code: "deadline_exceeded", call: true})
	add(httpCase{name: "provider slower than the timeout, /v1/messages", path: msgs, body: anthropicBody("a-slowbody", ""), header: []string{gateway.HeaderTimeout, "1ms"},
		status: 504, code: "timeout_error", call: true})
	// The gateway makes its call ids; one the client sends is not used.
	add(httpCase{name: "call id header is not the client's", path: chat, body: good, header: []string{gateway.HeaderCallID, "dot.id.*"},
		status: 200, provider: true, call: true})

	// Bodies at and around calls.max_body_bytes.
	for _, size := range []int{badInputMaxBody - 1, badInputMaxBody} {
		ok(fmt.Sprintf("body of %d bytes", size), chat, paddedChat(size))
	}
	limit := strconv.Itoa(badInputMaxBody)
	for _, size := range []int{badInputMaxBody + 1, 4 * badInputMaxBody} {
		add(httpCase{name: fmt.Sprintf("body of %d bytes", size), path: chat, body: paddedChat(size), status: 413, code: inv, message: limit, closed: true})
	}
	add(httpCase{name: "body of limit+1 bytes, chunked", path: chat, body: paddedChat(badInputMaxBody + 1), chunked: true, status: 413, code: inv, message: limit, closed: true})
	add(httpCase{name: "body of limit bytes, chunked", path: chat, body: paddedChat(badInputMaxBody), chunked: true, status: 200, provider: true, call: true})
	add(httpCase{name: "body of limit+1 bytes on /v1/messages", path: msgs, body: anthropicBody("a", `,"metadata":{"user_id":"`+strings.Repeat("u", badInputMaxBody)+`"}`),
		status: 413, code: "request_too_large", message: limit, closed: true})

	// Content types and encodings: the gateway reads JSON whatever the
	// Content-Type says (curl -d sends a form's).
	ok("Content-Type text/plain", chat, good, "Content-Type", "text/plain")
	ok("Content-Type of curl -d", chat, good, "Content-Type", "application/x-www-form-urlencoded")
	ok("no Content-Type", chat, good, "Content-Type", "")
	auth("a form body", chat, "model=m&messages=hi", 400, inv, "Content-Type", "application/x-www-form-urlencoded")
	auth("a multipart body", chat, "--x\r\nContent-Disposition: form-data; name=\"model\"\r\n\r\nm\r\n--x--\r\n", 400, inv, "Content-Type", "multipart/form-data; boundary=x")
	auth("a gzipped body", chat, gzipped(good), 400, inv, "Content-Encoding", "gzip")

	// Methods and routes.
	method := func(name, m, path string, status int, code string) {
		add(httpCase{name: name, method: m, path: path, body: good, status: status, code: code})
	}
	method("GET chat completions", http.MethodGet, chat, 405, "method_not_allowed")
	method("PUT embeddings", http.MethodPut, emb, 405, "method_not_allowed")
	method("DELETE /v1/messages", http.MethodDelete, msgs, 405, ainv)
	method("POST /v1/models", http.MethodPost, "/v1/models", 405, "method_not_allowed")
	method("PATCH /v1/models/m", http.MethodPatch, "/v1/models/m", 405, "method_not_allowed")
	method("POST /healthz", http.MethodPost, "/healthz", 405, "method_not_allowed")
	for _, p := range []string{"/v1/nope", "/v1/chat/completion", "/v1/CHAT/COMPLETIONS", "/v2/chat/completions", "/v1/chat/completions/x",
		"/v1/models/", "/v1/models/m/x", "/v1/%E2%9C%93", "/", "/v1/embeddings.json"} {
		method("unknown route "+p, http.MethodPost, p, 404, "unknown_url")
	}
	get := func(name, path string, status int, code string, header ...string) {
		add(httpCase{name: name, method: http.MethodGet, path: path, header: header, status: status, code: code})
	}
	get("models", "/v1/models", 200, "")
	get("model m", "/v1/models/m", 200, "")
	get("models without a token", "/v1/models", 401, "invalid_api_key", "Authorization", "")
	get("model with x-api-key", "/v1/models/a", 200, "", "Authorization", "", "x-api-key", devToken)
	for _, name := range []string{"gpt-9", "m.x", "m%2A", "m%20m", "m%C3%B6del", strings.Repeat("m", 65), "%00"} {
		get("model "+name[:min(len(name), 12)], "/v1/models/"+name, 404, "model_not_found")
	}

	// Huge headers: under the 64 KiB bound they are read; over it, net/http
	// answers 431 itself and closes the connection.
	ok("a 32 KiB header", chat, good, "X-Padding", strings.Repeat("p", 32<<10))
	add(httpCase{name: "a 128 KiB header", path: chat, body: good, header: []string{"X-Padding", strings.Repeat("p", 128<<10)}, status: 431, closed: true, netHTTP: true})

	// Providers answering badly, streamed and not.
	prov := func(name, path, body string, status int, code string, stream, provider bool) {
		add(httpCase{name: name, path: path, body: body, status: status, code: code, stream: stream, provider: provider, call: true})
	}
	for _, p := range []string{"html", "empty", "garbage", "truncated", "cutbody", "hugeheader"} {
		prov("provider "+p, chat, chatBody("p-"+p, ""), 502, "provider_error", false, false)
	}
	// A provider's error that is not JSON (a proxy's page) is sluice's
	// error, quoting it, not a JSON string passed on as the provider's.
	add(httpCase{name: "provider html500", path: chat, body: chatBody("p-html500", ""), status: 502, code: "provider_error", call: true, message: "502 Bad Gateway"})
	prov("provider badlimits", chat, chatBody("p-badlimits", ""), 429, "", false, true)
	streamed := func(pool string) string { return chatBody(pool, `,"stream":true`) }
	ok("a stream", chat, streamed("m"))
	cs[len(cs)-1].stream = true
	for _, p := range []string{"cut0", "html", "empty", "garbage"} {
		prov("stream: provider "+p+" before any event", chat, streamed("p-"+p), 502, "provider_error", false, false)
	}
	for _, p := range []string{"cut1", "cut3", "cutmid", "cutbeforedone"} {
		prov("stream: provider "+p, chat, streamed("p-"+p), 200, "provider_error", true, false)
	}
	prov("stream: an event that is not JSON is relayed", chat, streamed("p-badevent"), 200, "", true, false)
	ok("messages", msgs, goodA)
	ok("messages, streamed", msgs, anthropicBody("a", `,"stream":true`))
	cs[len(cs)-1].stream = true
	prov("messages: provider html", msgs, anthropicBody("a-html", ""), 502, "api_error", false, false)
	add(httpCase{name: "messages: provider html500", path: msgs, body: anthropicBody("a-html500", ""), status: 502, code: "api_error", call: true, message: "502 Bad Gateway"})
	prov("messages stream: provider cut0", msgs, anthropicBody("a-cut0", `,"stream":true`), 502, "api_error", false, false)
	prov("messages stream: provider cut1", msgs, anthropicBody("a-cut1", `,"stream":true`), 200, "api_error", true, false)

	// Legacy completions and count_tokens: the new routes, good and bad.
	const (
		cmpl  = "/v1/completions"
		count = "/v1/messages/count_tokens"
	)
	goodC := `{"model":"m","prompt":"hello there","max_tokens":5}`
	ok("completions", cmpl, goodC)
	ok("completions, a batch of token ids", cmpl, `{"model":"m","prompt":[[1,2],[3]],"max_tokens":2,"n":2}`)
	ok("completions, streamed", cmpl, `{"model":"m","prompt":"hello there","max_tokens":5,"stream":true}`)
	cs[len(cs)-1].stream = true
	bad("completions truncated", cmpl, goodC[:len(goodC)/2], 400, inv)
	for _, raw := range []string{`null`, `5`, `{}`, `[]`, `[""`, `["a",1]`, `[[1],[]]`, `[[1],"a"]`, `true`} {
		bad("completions prompt = "+raw, cmpl, `{"model":"m","prompt":`+raw+`}`, 400, inv)
	}
	bad("completions no prompt", cmpl, `{"model":"m"}`, 400, inv)
	bad("completions prompt twice", cmpl, `{"model":"m","prompt":"a","PROMPT":"`+strings.Repeat("b", 100)+`"}`, 400, inv)
	for _, raw := range []string{`0`, `129`, `"2"`, `-1`} {
		bad("completions best_of = "+raw, cmpl, `{"model":"m","prompt":"a","best_of":`+raw+`}`, 400, inv)
	}
	bad("completions best_of below n", cmpl, `{"model":"m","prompt":"a","n":3,"best_of":2}`, 400, inv)
	bad("completions max_tokens = -1", cmpl, `{"model":"m","prompt":"a","max_tokens":-1}`, 400, inv)
	bad("completions on an Anthropic pool", cmpl, `{"model":"a","prompt":"a"}`, 404, "model_not_found")
	method("GET /v1/completions", http.MethodGet, cmpl, 405, "method_not_allowed")
	goodT := `{"model":"a","messages":[{"role":"user","content":"hello there"}]}`
	ok("count_tokens", count, goodT)
	bad("count_tokens truncated", count, goodT[:len(goodT)/2], 400, ainv)
	bad("count_tokens no messages", count, `{"model":"a"}`, 400, ainv)
	bad("count_tokens stream", count, `{"model":"a","stream":true,"messages":[{"role":"user","content":"x"}]}`, 400, ainv)
	bad("count_tokens max_tokens", count, `{"model":"a","max_tokens":5,"messages":[{"role":"user","content":"x"}]}`, 400, ainv)
	bad("count_tokens system = 5", count, `{"model":"a","system":5,"messages":[{"role":"user","content":"x"}]}`, 400, ainv)
	bad("count_tokens on an OpenAI pool", count, `{"model":"m","messages":[{"role":"user","content":"x"}]}`, 404, "not_found_error")
	method("GET /v1/messages/count_tokens", http.MethodGet, count, 405, ainv)
	for _, p := range []string{"/v1/messages/batches", "/v1/messages/", "/v1/messages/count_tokens/x", "/v1/messages/%00"} {
		method("unknown Anthropic route "+p, http.MethodPost, p, 404, "not_found_error")
	}
	// A client that speaks Anthropic gets Anthropic's model list, and its
	// errors.
	get("models, anthropic-version", "/v1/models", 200, "", "anthropic-version", "2023-06-01")
	get("models, x-api-key", "/v1/models", 200, "", "Authorization", "", "x-api-key", devToken)
	get("model gpt-9, anthropic-version", "/v1/models/gpt-9", 404, "not_found_error", "anthropic-version", "2023-06-01")
	get("models, x-api-key of nobody", "/v1/models", 401, "authentication_error", "Authorization", "", "x-api-key", "sk-nobody")

	// The Responses API: good and bad.
	const resp = "/v1/responses"
	goodR := `{"model":"m","input":"hello there","instructions":"be brief","max_output_tokens":20}`
	ok("responses", resp, goodR)
	ok("responses, input items", resp, `{"model":"m","input":[{"role":"user","content":[{"type":"input_text","text":"hi"}]},{"type":"function_call_output","call_id":"c","output":"42"}]}`)
	ok("responses, streamed", resp, `{"model":"m","input":"hello there","max_output_tokens":20,"stream":true}`)
	cs[len(cs)-1].stream = true
	bad("responses truncated", resp, goodR[:len(goodR)/2], 400, inv)
	for _, raw := range []string{`null`, `5`, `{}`, `[]`, `[5]`, `[{"content":5}]`, `[{"content":[5]}]`, `true`} {
		bad("responses input = "+raw, resp, `{"model":"m","input":`+raw+`}`, 400, inv)
	}
	bad("responses no input", resp, `{"model":"m"}`, 400, inv)
	bad("responses instructions = 5", resp, `{"model":"m","input":"a","instructions":5}`, 400, inv)
	bad("responses input twice", resp, `{"model":"m","input":"a","INPUT":"`+strings.Repeat("b", 100)+`"}`, 400, inv)
	bad("responses max_output_tokens twice", resp, `{"model":"m","input":"a","max_output_tokens":100000,"Max_Output_Tokens":20}`, 400, inv)
	for _, raw := range []string{`0`, `-1`, `"20"`, `1e300`, `99999999999`} {
		bad("responses max_output_tokens = "+raw, resp, `{"model":"m","input":"a","max_output_tokens":`+raw+`}`, 400, inv)
	}
	bad("responses on an Anthropic pool", resp, `{"model":"a","input":"a"}`, 404, "model_not_found")
	prov("responses: the provider's 400 (max_output_tokens below 16)", resp, `{"model":"m","input":"a","max_output_tokens":5}`, 400, "", false, true)
	method("GET /v1/responses", http.MethodGet, resp, 405, "method_not_allowed")
	// Stored responses: only those this gateway relayed, at the deployment
	// that stored them; anything else is a clear 404, and never a call.
	bad("responses previous_response_id unknown", resp, `{"model":"m","input":"a","previous_response_id":"resp_nope"}`, 404, "not_found")
	bad("responses previous_response_id twice", resp, `{"model":"m","input":"a","previous_response_id":"resp_a","Previous_Response_ID":"resp_b"}`, 400, inv)
	get("stored response unknown", "/v1/responses/resp_nope", 404, "not_found")
	get("stored response without a token", "/v1/responses/resp_nope", 401, "invalid_api_key", "Authorization", "")
	get("stored response bad id", "/v1/responses/resp%2F..", 404, "not_found")
	method("DELETE stored response unknown", http.MethodDelete, "/v1/responses/resp_nope", 404, "not_found")
	method("PUT stored response", http.MethodPut, "/v1/responses/resp_nope", 405, "method_not_allowed")
	method("POST stored response", http.MethodPost, "/v1/responses/resp_nope", 405, "method_not_allowed")
	get("stored response, a path under it", "/v1/responses/resp_a/input_items", 404, "unknown_url")

	// Clients that break the transport.
	add(httpCase{name: "slow body: part sent, then nothing", path: chat, status: 400, code: inv, closed: true, raw: func(t *testing.T, conn net.Conn) {
		body := good
		fmt.Fprintf(conn, "POST %s HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer %s\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n%s",
			chat, devToken, len(body), body[:len(body)/2])
	}})
	add(httpCase{name: "slow body on /v1/messages", path: msgs, status: 400, code: ainv, closed: true, raw: func(t *testing.T, conn net.Conn) {
		fmt.Fprintf(conn, "POST %s HTTP/1.1\r\nHost: x\r\nx-api-key: %s\r\nContent-Length: %d\r\n\r\n%s", msgs, devToken, len(goodA), goodA[:10])
	}})
	add(httpCase{name: "body shorter than its Content-Length", path: chat, status: 400, code: inv, closed: true, raw: func(t *testing.T, conn net.Conn) {
		fmt.Fprintf(conn, "POST %s HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer %s\r\nContent-Length: %d\r\n\r\n%s", chat, devToken, len(good)+10, good)
		_ = conn.(*net.TCPConn).CloseWrite()
	}})
	add(httpCase{name: "chunked body cut off", path: chat, status: 400, code: inv, closed: true, raw: func(t *testing.T, conn net.Conn) {
		fmt.Fprintf(conn, "POST %s HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer %s\r\nTransfer-Encoding: chunked\r\n\r\n%x\r\n%s", chat, devToken, len(good), good[:5])
		_ = conn.(*net.TCPConn).CloseWrite()
	}})
	// Before any handler: net/http answers, or closes the connection.
	add(httpCase{name: "slow headers: part sent, then nothing", path: chat, status: 0, closed: true, netHTTP: true, raw: func(t *testing.T, conn net.Conn) {
		fmt.Fprintf(conn, "POST %s HTTP/1.1\r\nHost: x\r\nAuthorization: Bea", chat)
	}})
	add(httpCase{name: "not HTTP at all", path: chat, status: 400, closed: true, netHTTP: true, raw: func(t *testing.T, conn net.Conn) {
		_, _ = conn.Write([]byte("\x00\xff\xfe garbage\r\n\r\n"))
	}})
	return cs
}

// httpAnswer is what a client got.
type httpAnswer struct {
	status int
	header http.Header
	body   string
	// closed: the connection ended after the answer (raw cases only).
	closed bool
}

// badHTTPAnswerWait bounds the wait for any answer: a request the gateway
// neither answers nor closes by then has hung.
const badHTTPAnswerWait = 30 * time.Second

func sendHTTPCase(ctx context.Context, t *testing.T, client *http.Client, base string, c httpCase) httpAnswer {
	t.Helper()
	if c.raw != nil {
		return sendRaw(t, base, c)
	}
	var body io.Reader = strings.NewReader(c.body)
	if c.chunked {
		body = io.MultiReader(body) // no length known: sent chunked
	}
	m := c.method
	if m == "" {
		m = http.MethodPost
	}
	rctx, cancel := context.WithTimeout(ctx, badHTTPAnswerWait)
	defer cancel()
	req, err := http.NewRequestWithContext(rctx, m, base+c.path, body)
	if err != nil {
		t.Fatal(err)
	}
	if c.chunked {
		req.ContentLength = -1
	}
	req.Header.Set("Authorization", "Bearer "+devToken)
	req.Header.Set("Content-Type", "application/json")
	for i := 0; i+1 < len(c.header); i += 2 {
		if c.header[i+1] == "" {
			req.Header.Del(c.header[i])
			continue
		}
		req.Header.Set(c.header[i], c.header[i+1])
	}
	resp, err := client.Do(req)
	if err != nil {
		t.Fatalf("no answer: %v", err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("reading the answer: %v", err)
	}
	return httpAnswer{status: resp.StatusCode, header: resp.Header, body: string(b), closed: resp.Close}
}

// sendRaw runs a raw case on its own connection, and reads the one answer
// it gets and then the rest of the connection, which must be nothing.
func sendRaw(t *testing.T, base string, c httpCase) httpAnswer {
	t.Helper()
	conn, err := net.Dial("tcp", strings.TrimPrefix(base, "http://"))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	// A bound, not a synchronisation: a gateway that never answers fails
	// the case rather than the whole run.
	_ = conn.SetDeadline(time.Now().Add(badHTTPAnswerWait))
	c.raw(t, conn)
	br := bufio.NewReader(conn)
	resp, err := http.ReadResponse(br, nil)
	if (errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF)) && c.status == 0 {
		return httpAnswer{closed: true} // closed unanswered, as wanted
	}
	if err != nil {
		t.Fatalf("no answer: %v", err)
	}
	b, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	if err != nil {
		t.Fatalf("reading the answer: %v", err)
	}
	a := httpAnswer{status: resp.StatusCode, header: resp.Header, body: string(b)}
	rest, err := io.ReadAll(br)
	if err != nil {
		t.Fatalf("after the answer, the connection neither closed nor stayed quiet: %v", err)
	}
	if len(rest) > 0 {
		t.Errorf("more after the answer: %q", rest)
	}
	a.closed = true
	return a
}

// checkErrorBody checks that body is sluice's error in the route's
// dialect, with a message and the code (OpenAI) or type (Anthropic)
// wanted, and returns the message.
func checkErrorBody(t *testing.T, anthropic bool, body, code string) string {
	t.Helper()
	if anthropic {
		var e struct {
			Type  string `json:"type"`
			Error *struct {
				Type    string `json:"type"`
				Message string `json:"message"`
			} `json:"error"`
		}
		if err := json.Unmarshal([]byte(body), &e); err != nil || e.Type != "error" || e.Error == nil {
			t.Fatalf("not an Anthropic error (%v): %q", err, body)
		}
		if e.Error.Type != code || e.Error.Message == "" {
			t.Fatalf("error type %q message %q, want type %q and a message", e.Error.Type, e.Error.Message, code)
		}
		return e.Error.Message
	}
	var e struct {
		Error *struct {
			Type    string `json:"type"`
			Code    string `json:"code"`
			Message string `json:"message"`
		} `json:"error"`
	}
	if err := json.Unmarshal([]byte(body), &e); err != nil || e.Error == nil {
		t.Fatalf("not an OpenAI error (%v): %q", err, body)
	}
	if e.Error.Code != code || e.Error.Type == "" || e.Error.Message == "" {
		t.Fatalf("error code %q type %q message %q, want code %q, a type and a message", e.Error.Code, e.Error.Type, e.Error.Message, code)
	}
	return e.Error.Message
}

// checkStream checks a streamed answer: events each ended by a blank line,
// the last an error event with code, or the dialect's end of a stream.
func checkStream(t *testing.T, anthropic bool, a httpAnswer, code string) {
	t.Helper()
	if ct := a.header.Get("Content-Type"); !strings.HasPrefix(ct, "text/event-stream") {
		t.Fatalf("Content-Type %q, want an event stream: %q", ct, a.body)
	}
	events := sseEvents(t, a.body)
	last := events[len(events)-1]
	if code == "" {
		end := "data: [DONE]"
		switch {
		case anthropic:
			end = "event: message_stop"
		case strings.HasPrefix(events[0], "event: response."):
			// The Responses API's typed events end with the response.
			end = "event: response.completed"
		}
		if !strings.HasPrefix(last, end) {
			t.Fatalf("the stream ends with %q, want %q", last, end)
		}
		return
	}
	if anthropic {
		data, ok := strings.CutPrefix(last, "event: error\ndata: ")
		if !ok {
			t.Fatalf("the stream ends with %q, want an error event", last)
		}
		checkErrorBody(t, true, data, code)
		return
	}
	data, ok := strings.CutPrefix(last, "data: ")
	if !ok {
		t.Fatalf("the stream ends with %q, want an error event", last)
	}
	checkErrorBody(t, false, data, code)
}

func TestBadInputHTTP(t *testing.T) {
	provider := badProvider(t)
	reg := prometheus.NewRegistry()
	s := startStack(t, stackOptions{yaml: badInputHTTPYAML(provider.URL), reg: reg})
	d := startDispatcher(t, s, "d1", nil)
	ex := startExecutor(t, s, "us-east", nil)
	gw, base, err := s.StartGateway(func(c *gateway.Config) {
		c.ShutdownGrace = 5 * time.Second
		c.ReadTimeout = badHTTPReadTimeout
		c.ReadHeaderTimeout = badHTTPReadTimeout
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { stopQuietly(gw) })
	nc := connect(t, s)
	js, _ := jetstream.New(nc)
	results := watchAllResults(t, nc)
	ctx, cancel := context.WithTimeout(t.Context(), 3*time.Minute)
	defer cancel()
	client := &http.Client{
		// An answer is what the gateway said, not where it pointed.
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}

	cases := badHTTPCases()
	if len(cases) < 60 {
		t.Fatalf("the corpus has %d cases, want at least 60", len(cases))
	}
	pools := s.Shared.Load().Pools
	callIDs := map[string]string{} // call id -> the case's name
	var junk []string
	for _, c := range cases {
		// What the client sent that the configuration does not know.
		var head struct {
			Model any `json:"model"`
		}
		if json.Unmarshal([]byte(c.body), &head) == nil {
			if m, ok := head.Model.(string); ok && pools[m] == nil && m != "" {
				junk = append(junk, m)
			}
		}
		for i := 0; i+1 < len(c.header); i += 2 {
			k, v := http.CanonicalHeaderKey(c.header[i]), c.header[i+1]
			if (k == gateway.HeaderTier && !messages.Tier(strings.ToLower(v)).Valid()) || k == http.CanonicalHeaderKey(gateway.HeaderCallID) {
				junk = append(junk, v)
			}
		}
		if !isGatewayRoute(c.path) {
			junk = append(junk, c.path)
		}
	}

	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			anthropic := c.path == "/v1/messages" || strings.HasPrefix(c.path, "/v1/messages/") ||
				strings.HasPrefix(c.path, "/v1/models") && (headerValue(c.header, "anthropic-version") != "" || headerValue(c.header, "x-api-key") != "")
			a := sendHTTPCase(ctx, t, client, base, c)
			id := a.header.Get(gateway.HeaderCallID)
			if id != "" {
				if prev, dup := callIDs[id]; dup {
					t.Errorf("call id %s answered both %q and this case", id, prev)
				}
				callIDs[id] = c.name
			}
			if a.status != c.status {
				t.Fatalf("status %d, want %d: %q", a.status, c.status, a.body[:min(len(a.body), 300)])
			}
			switch {
			case c.call && id == "":
				t.Errorf("no %s: the request did not become a call", gateway.HeaderCallID)
			case !c.call && id != "":
				t.Errorf("%s %s: the request became a call", gateway.HeaderCallID, id)
			}
			if c.closed && !a.closed {
				t.Errorf("the connection stays open after the answer")
			}
			switch {
			case c.netHTTP:
				// net/http's own answer, before any handler: plain text.
			case c.stream:
				checkStream(t, anthropic, a, c.code)
			case c.provider || c.code == "":
				if !json.Valid([]byte(a.body)) {
					t.Fatalf("the answer is not JSON: %q", a.body)
				}
			default:
				msg := checkErrorBody(t, anthropic, a.body, c.code)
				if c.message != "" && !strings.Contains(msg, c.message) {
					t.Errorf("message %q does not say %q", msg, c.message)
				}
			}
			if id != "" {
				if sent := headerValue(c.header, gateway.HeaderCallID); sent != "" && id == sent {
					t.Errorf("the gateway used the client's call id %q", sent)
				}
				waitUntil(t, "the call's result", 30*time.Second, func() bool {
					return len(results.on(messages.ResultSubject(teamOf(c), id))) > 0
				})
			}
		})
	}

	// A good call after all of it.
	after := sendHTTPCase(ctx, t, client, base, httpCase{path: "/v1/chat/completions", body: chatBody("m", "")})
	if after.status != 200 || after.header.Get(gateway.HeaderCallID) == "" {
		t.Fatalf("the good call after the corpus: %d %q", after.status, after.body)
	}
	callIDs[after.header.Get(gateway.HeaderCallID)] = "the good call after the corpus"

	// Every call has exactly one result, and no other result went by.
	waitUntil(t, "a result for every call", 30*time.Second, func() bool { return results.total() >= len(callIDs) })
	expected := map[string]bool{}
	for id, name := range callIDs {
		team := "demo"
		for _, c := range cases {
			if c.name == name {
				team = teamOf(c)
			}
		}
		subj := messages.ResultSubject(team, id)
		expected[subj] = true
		if rs := results.on(subj); len(rs) != 1 {
			t.Errorf("%s: %d results on %s, want exactly 1", name, len(rs), subj)
		}
	}
	results.mu.Lock()
	for subj, rs := range results.bySubject {
		if !expected[subj] {
			t.Errorf("%d results on %s, where no call was awaiting one", len(rs), subj)
		}
	}
	results.mu.Unlock()
	if got := results.total(); got != len(callIDs) {
		t.Errorf("%d results for %d calls", got, len(callIDs))
	}

	for _, svc := range []*devstack.Service{d, ex, gw} {
		select {
		case <-svc.Done():
			t.Fatalf("a service stopped: %v", svc.Err())
		default:
		}
	}

	// Nothing a client sent became a label.
	families, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	series := 0
	for _, f := range families {
		for _, m := range f.GetMetric() {
			series++
			for _, l := range m.GetLabel() {
				for _, j := range junk {
					if l.GetValue() == j {
						t.Errorf("metric %s has label %s=%q, a name a client sent", f.GetName(), l.GetName(), j)
					}
				}
			}
		}
	}
	t.Logf("%d cases, %d calls, %d metric series, %d junk names", len(cases), len(callIDs), series, len(junk))

	// Usage counts the calls that reached a result, under names the
	// configuration knows, in a bounded number of keys.
	kv, err := js.KeyValue(ctx, messages.BucketUsage)
	if err != nil {
		t.Fatal(err)
	}
	waitUntil(t, "usage to count every call", 30*time.Second, func() bool {
		totals, err := usage.Query(ctx, kv, time.Now().Add(-2*time.Hour), time.Now().Add(time.Hour))
		if err != nil {
			t.Fatal(err)
		}
		calls := int64(0)
		for _, tot := range totals {
			calls += tot.Calls
		}
		if calls > int64(len(callIDs)) {
			t.Fatalf("usage counts %d calls; %d reached a result", calls, len(callIDs))
		}
		return calls == int64(len(callIDs))
	})
	lister, err := kv.ListKeys(ctx)
	if err != nil {
		t.Fatal(err)
	}
	keys := 0
	for key := range lister.Keys() {
		keys++
		for _, j := range junk {
			if strings.Contains(key, "."+j+".") || strings.HasSuffix(key, "."+j) {
				t.Errorf("usage key %q holds %q, a name a client sent", key, j)
			}
		}
	}
	if bound := 2 * 3 * (len(messages.Tiers) + 1) * (len(pools) + 1); keys > bound {
		t.Errorf("%d usage keys, more than %d (hours x teams x tiers x pools)", keys, bound)
	}
}

// isGatewayRoute reports whether path is one of the gateway's own.
func isGatewayRoute(path string) bool {
	switch path {
	case "/v1/chat/completions", "/v1/completions", "/v1/embeddings", "/v1/responses", "/v1/messages", "/v1/messages/count_tokens", "/v1/models", "/healthz", "/readyz":
		return true
	}
	return false
}

// headerValue is the value a case sets for header name, if any.
func headerValue(header []string, name string) string {
	for i := 0; i+1 < len(header); i += 2 {
		if http.CanonicalHeaderKey(header[i]) == http.CanonicalHeaderKey(name) {
			return header[i+1]
		}
	}
	return ""
}

// teamOf is the team a case's token names.
func teamOf(c httpCase) string {
	if strings.Contains(headerValue(c.header, "Authorization"), limitedToken) {
		return "limited"
	}
	return "demo"
}
