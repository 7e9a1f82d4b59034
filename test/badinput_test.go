package test

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/sluicehq/sluice/messages"
	"github.com/sluicehq/sluice/services/config"
	"github.com/sluicehq/sluice/services/devstack"
	"github.com/sluicehq/sluice/services/usage"
)

// The bad-input corpus: every case is sent the way a client would (a
// call over NATS, or an HTTP request to the gateway) and must end with
// exactly one answer carrying the code that says what happened. Nothing
// crashes, nothing a client sent becomes a metric label or a KV key, and
// the usage roll-ups add up to the results the subscribers received.

// badInputMaxBody is calls.max_body_bytes in the corpus's configuration.
const badInputMaxBody = 8192

// badProvider answers in the ways providers and the proxies in front of
// them break, chosen by the first element of the path: a deployment's
// base_url is badProvider's URL + "/<behaviour>/v1".
func badProvider(t *testing.T) *httptest.Server {
	okBody := `{"id":"chatcmpl-1","object":"chat.completion","created":1,"model":"m","choices":[{"index":0,"message":{"role":"assistant","content":"hi"},"finish_reason":"stop"}],"usage":{"prompt_tokens":3,"completion_tokens":1,"total_tokens":4}}`
	chunk := func(i int) string {
		return fmt.Sprintf("data: {\"id\":\"c\",\"object\":\"chat.completion.chunk\",\"created\":1,\"model\":\"m\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\"w%d \"}}]}\n\n", i)
	}
	cut := func(w http.ResponseWriter, prefix string) {
		w.Header().Set("Content-Type", "text/event-stream")
		w.WriteHeader(http.StatusOK)
		_, _ = w.Write([]byte(prefix))
		w.(http.Flusher).Flush()
		// Close the connection under the answer: no terminating chunk.
		conn, _, err := http.NewResponseController(w).Hijack()
		if err == nil {
			_ = conn.Close()
		}
	}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		behaviour, _, _ := strings.Cut(strings.TrimPrefix(r.URL.Path, "/"), "/")
		switch behaviour {
		case "html":
			w.Header().Set("Content-Type", "text/html")
			_, _ = w.Write([]byte("<html><body>Welcome to nginx!</body></html>"))
		case "html500":
			w.Header().Set("Content-Type", "text/html")
			w.WriteHeader(http.StatusBadGateway)
			_, _ = w.Write([]byte("<html><body>502 Bad Gateway</body></html>"))
		case "empty":
			w.Header().Set("Content-Type", "application/json")
		case "garbage":
			w.Header().Set("Content-Type", "application/json")
			_, _ = w.Write([]byte{0, 0xff, 0xfe, '{', 0x80, '"'})
		case "truncated":
			w.Header().Set("Content-Type", "application/json")
			_, _ = w.Write([]byte(okBody[:40]))
		case "cutbody":
			w.Header().Set("Content-Type", "application/json")
			w.Header().Set("Content-Length", strconv.Itoa(len(okBody)))
			_, _ = w.Write([]byte(okBody[:40]))
			w.(http.Flusher).Flush()
			if conn, _, err := http.NewResponseController(w).Hijack(); err == nil {
				_ = conn.Close()
			}
		case "hugeheader":
			w.Header().Set("X-Padding", strings.Repeat("p", 11<<20))
			_, _ = w.Write([]byte(okBody))
		case "slowbody":
			w.Header().Set("Content-Type", "application/json")
			w.WriteHeader(http.StatusOK)
			for i := range okBody {
				if _, err := w.Write([]byte{okBody[i]}); err != nil {
					return
				}
				w.(http.Flusher).Flush()
				select {
				case <-r.Context().Done():
					return
				case <-time.After(50 * time.Millisecond):
				}
			}
		case "badlimits":
			w.Header().Set("Retry-After", "-5")
			w.Header().Set("X-Ratelimit-Limit-Requests", "banana")
			w.Header().Set("X-Ratelimit-Remaining-Requests", "-1")
			w.Header().Set("X-Ratelimit-Reset-Requests", "99999999999999999999s")
			w.Header().Set("Content-Type", "application/json")
			w.WriteHeader(http.StatusTooManyRequests)
			_, _ = w.Write([]byte(`{"error":{"message":"Rate limit reached","type":"requests","code":"rate_limit_exceeded"}}`))
		case "cut0":
			cut(w, "")
		case "cut1":
			cut(w, chunk(1))
		case "cut3":
			cut(w, chunk(1)+chunk(2)+chunk(3))
		case "cutmid":
			cut(w, chunk(1)+chunk(2)[:30])
		case "cutbeforedone":
			cut(w, chunk(1)+`data: {"id":"c","object":"chat.completion.chunk","created":1,"model":"m","choices":[{"index":0,"delta":{},"finish_reason":"stop"}]}`+"\n\n")
		case "badevent":
			w.Header().Set("Content-Type", "text/event-stream")
			_, _ = w.Write([]byte(chunk(1) + "data: {this is not json\n\n" + "data: [DONE]\n\n"))
		default:
			http.NotFound(w, r)
		}
	}))
	t.Cleanup(srv.Close)
	return srv
}

// badProviderPools are the pools badProvider serves, one per behaviour.
var badProviderPools = []string{"html", "html500", "empty", "garbage", "truncated", "cutbody", "hugeheader",
	"slowbody", "badlimits", "cut0", "cut1", "cut3", "cutmid", "cutbeforedone", "badevent"}

func badInputYAML(providerURL string) func(string) string {
	return func(fakeURL string) string {
		var b strings.Builder
		fmt.Fprintf(&b, "pools:\n  m:\n    deployments:\n      - {id: m-1, provider: openai, base_url: %q, region: us-east, key: KEY_M, rpm: 100000, tpm: 100000000}\n", fakeURL+"/v1")
		b.WriteString("  small:\n    deployments:\n")
		fmt.Fprintf(&b, "      - {id: small-1, provider: openai, base_url: %q, region: us-east, key: KEY_SMALL, rpm: 100000, tpm: 1000}\n", fakeURL+"/v1")
		for _, p := range badProviderPools {
			fmt.Fprintf(&b, "  p-%s:\n    deployments:\n      - {id: p-%s-1, provider: openai, base_url: %q, region: us-east, key: KEY_P, rpm: 100000, tpm: 100000000}\n",
				p, p, providerURL+"/"+p+"/v1")
		}
		fmt.Fprintf(&b, "teams:\n  demo:\n    tokens: [%q]\n  limited: {tiers: [batch]}\n", config.HashToken(devToken))
		fmt.Fprintf(&b, "calls: {max_body_bytes: %d}\n", badInputMaxBody)
		b.WriteString("retry: {max_attempts: 2, base_delay: 10ms, attempt_timeout: 2s}\n")
		return b.String()
	}
}

// badCase is one call of the corpus over NATS.
type badCase struct {
	name       string
	team, tier string
	id         string // Nats-Msg-Id, and where the answer is awaited
	body       string
	code       messages.Code // "" for a call that succeeds
	refused    bool          // the publish itself must be refused
	deadLetter bool          // accepted, then dead-lettered: no answer can reach its subject
}

// allResults records every result published anywhere, by subject.
type allResults struct {
	mu        sync.Mutex
	bySubject map[string][]messages.Result
	count     int
}

func watchAllResults(t *testing.T, nc *nats.Conn) *allResults {
	t.Helper()
	a := &allResults{bySubject: map[string][]messages.Result{}}
	sub, err := nc.Subscribe("sluice.result.>", func(m *nats.Msg) {
		var r messages.Result
		if err := json.Unmarshal(m.Data, &r); err != nil {
			t.Errorf("undecodable result on %s: %v", m.Subject, err)
			return
		}
		a.mu.Lock()
		a.bySubject[m.Subject] = append(a.bySubject[m.Subject], r)
		a.count++
		a.mu.Unlock()
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := nc.Flush(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = sub.Unsubscribe() })
	return a
}

func (a *allResults) on(subject string) []messages.Result {
	a.mu.Lock()
	defer a.mu.Unlock()
	return append([]messages.Result(nil), a.bySubject[subject]...)
}

func (a *allResults) total() int {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.count
}

// callWith is a call of pool m with one top-level field set to raw JSON.
func callWith(id, field, raw string) string {
	fields := map[string]string{
		"id":    strconv.Quote(id),
		"model": `"m"`,
		"body":  `{"messages":[{"role":"user","content":"hello"}],"max_tokens":5}`,
	}
	fields[field] = raw
	var parts []string
	for _, k := range []string{"id", "model", "body"} {
		parts = append(parts, strconv.Quote(k)+":"+fields[k])
		delete(fields, k)
	}
	for k, v := range fields {
		parts = append(parts, strconv.Quote(k)+":"+v)
	}
	return "{" + strings.Join(parts, ",") + "}"
}

// bodyWith is a call of pool m whose body is raw.
func bodyWith(id, raw string) string {
	return fmt.Sprintf(`{"id":%q,"model":"m","body":%s}`, id, raw)
}

func badInputCases() []badCase {
	var cs []badCase
	n := 0
	add := func(name, body string, code messages.Code) {
		n++
		id := fmt.Sprintf("bad-%03d", n)
		cs = append(cs, badCase{name: name, team: "demo", tier: "standard", id: id, body: strings.ReplaceAll(body, "$ID", id), code: code})
	}
	inv := messages.CodeInvalidRequest

	// Malformed and truncated JSON.
	good := chatCall("$ID", "m", 5, "")
	for _, cutAt := range []int{0, 1, 2, 10, 25, 40, len(good) / 2, len(good) - 2, len(good) - 1} {
		add(fmt.Sprintf("truncated at %d", cutAt), good[:cutAt], inv)
	}
	for _, raw := range []string{`not json at all`, `[]`, `[{"id":"$ID"}]`, `"a string"`, `42`, `null`, `true`,
		good + `{}`, good + ` trailing`, "\xff\xfe" + good, `{"id":"$ID","model":"m","body":{"messages":[]}` + strings.Repeat("}", 3),
		`{"id":"$ID",,"model":"m"}`, `{'id':'$ID'}`, "{\"id\":\"$ID\",\"model\":\"m\",\"body\":{\"messages\":[{\"role\":\"user\",\"content\":\"\x00\"}]}}"} {
		add("malformed "+strconv.Quote(raw[:min(len(raw), 20)]), raw, inv)
	}

	// Wrong types in every field of the envelope.
	wrong := map[string][]string{
		"id":             {`5`, `true`, `[]`, `{}`},
		"model":          {`5`, `[]`, `{}`, `true`},
		"endpoint":       {`5`, `"/v1/nope"`, `"/V1/CHAT/COMPLETIONS"`, `[]`},
		"body":           {`"a string"`, `5`, `[]`, `null`, `true`},
		"deadline":       {`"tomorrow"`, `5`, `true`, `"2026-13-45T99:00:00Z"`, `{}`},
		"timeout_ms":     {`"100"`, `1.5`, `-1`, `true`, `1e30`, `9223372036854775808`},
		"regions":        {`"us-east"`, `[5]`, `["a.b"]`, `["*"]`, `[""]`, `{}`},
		"prefer_regions": {`"us-east"`, `[5]`, `["a b"]`, `[">"]`},
		"metadata":       {`"x"`, `[]`, `{"k":5}`, `{"":"v"}`, `{"k":{"a":1}}`},
	}
	for _, field := range []string{"id", "model", "endpoint", "body", "deadline", "timeout_ms", "regions", "prefer_regions", "metadata"} {
		for _, raw := range wrong[field] {
			add(field+" = "+raw, callWith("$ID", field, raw), inv)
		}
	}
	// Limits on the envelope's fields.
	add("model of 129 characters", callWith("$ID", "model", strconv.Quote(strings.Repeat("m", 129))), inv)
	add("17 regions", callWith("$ID", "regions", `["r1","r2","r3","r4","r5","r6","r7","r8","r9","r10","r11","r12","r13","r14","r15","r16","r17"]`), inv)
	add("metadata key of 65 bytes", callWith("$ID", "metadata", `{"`+strings.Repeat("k", 65)+`":"v"}`), inv)
	add("metadata value of 257 bytes", callWith("$ID", "metadata", `{"k":"`+strings.Repeat("v", 257)+`"}`), inv)
	var pairs []string
	for i := range 17 {
		pairs = append(pairs, fmt.Sprintf(`"k%d":"v"`, i))
	}
	add("17 metadata pairs", callWith("$ID", "metadata", "{"+strings.Join(pairs, ",")+"}"), inv)
	add("metadata value null (read as empty)", callWith("$ID", "metadata", `{"k":null}`), "")
	add("metadata with dots, wildcards, spaces and unicode", callWith("$ID", "metadata", `{"a.b":"*","c >":"ünïcødé ✓","`+strings.Repeat("k", 64)+`":"`+strings.Repeat("v", 256)+`"}`), "")
	add("unknown field", callWith("$ID", "priority", `9`), inv)
	add("unknown field of another case", callWith("$ID", "Model", `"m"`), inv)
	add("duplicated model", `{"id":"$ID","model":"m","model":"p-html","body":{"messages":[{"role":"user","content":"x"}]}}`, inv)
	add("duplicated id", `{"id":"$ID","id":"other","model":"m","body":{"messages":[{"role":"user","content":"x"}]}}`, inv)
	add("model only in the body", `{"id":"$ID","body":{"model":"m","messages":[{"role":"user","content":"x"}]}}`, "")
	add("body.model of the wrong type", `{"id":"$ID","body":{"model":5,"messages":[{"role":"user","content":"x"}]}}`, inv)
	add("unknown model", chatCall("$ID", "gpt-9", 5, ""), messages.CodeUnknownModel)
	add("model with a dot", chatCall("$ID", "m.x", 5, ""), messages.CodeUnknownModel)
	add("model with unicode", chatCall("$ID", "mödel", 5, ""), messages.CodeUnknownModel)

	// The body sluice reads to reserve tokens.
	for _, raw := range []string{`{}`, `{"messages":"hi"}`, `{"messages":5}`, `{"messages":[5]}`, `{"messages":[{"role":"user","content":5}]}`,
		`{"messages":[],"max_tokens":"5"}`, `{"messages":[],"max_tokens":-5}`, `{"messages":[],"max_tokens":1.5}`,
		`{"messages":[],"max_tokens":1e30}`, `{"messages":[],"stream":"yes"}`, `{"messages":[],"n":-1}`} {
		add("body "+raw, bodyWith("$ID", raw), inv)
	}
	add("a reservation no deployment can ever admit", `{"id":"$ID","model":"small","body":{"messages":[{"role":"user","content":"hi"}],"max_tokens":100000}}`, inv)
	add("streamed embeddings", `{"id":"$ID","model":"m","endpoint":"/v1/embeddings","body":{"input":"x","stream":true}}`, inv)

	// Deadlines.
	past := time.Now().Add(-time.Minute).UTC().Format(time.RFC3339Nano)
	add("deadline past", chatCall("$ID", "m", 5, `,"deadline":"`+past+`"`), messages.CodeDeadlineExceeded)
	add("deadline zero", chatCall("$ID", "m", 5, `,"deadline":"0001-01-01T00:00:00Z"`), messages.CodeDeadlineExceeded)
	add("deadline years away", chatCall("$ID", "m", 5, `,"deadline":"2126-01-01T00:00:00Z"`), inv)
	add("deadline and timeout_ms", chatCall("$ID", "m", 5, `,"deadline":"2126-01-01T00:00:00Z","timeout_ms":100`), inv)
	add("timeout_ms zero is the default", chatCall("$ID", "m", 5, `,"timeout_ms":0`), "")
	add("timeout_ms of a millisecond", chatCall("$ID", "p-slowbody", 5, `,"timeout_ms":1`), messages.CodeDeadlineExceeded)
	add("timeout_ms years away", chatCall("$ID", "m", 5, `,"timeout_ms":9000000000000000`), inv)
	add("timeout_ms the largest int64", chatCall("$ID", "m", 5, `,"timeout_ms":9223372036854775807`), inv)

	// Bodies at and around the size limit.
	for _, size := range []int{badInputMaxBody - 1, badInputMaxBody, badInputMaxBody + 1, 4 * badInputMaxBody} {
		code := messages.Code("")
		if size > badInputMaxBody {
			code = inv
		}
		add(fmt.Sprintf("body of %d bytes", size), paddedCall("$ID", size), code)
	}

	// Providers and the proxies in front of them answering badly.
	pe := messages.CodeProviderError
	for _, p := range []struct {
		pool   string
		stream bool
		code   messages.Code
	}{
		{"html", false, pe}, {"html500", false, pe}, {"empty", false, pe}, {"garbage", false, pe}, {"truncated", false, pe},
		{"cutbody", false, pe}, {"hugeheader", false, pe}, {"badlimits", false, messages.CodeRateLimited},
		{"cut0", true, pe}, {"cut1", true, pe}, {"cut3", true, pe}, {"cutmid", true, pe}, {"cutbeforedone", true, pe},
		// An event that is not JSON is relayed as the provider sent it; the
		// stream still ended as it should.
		{"badevent", true, ""},
		{"html", true, pe}, {"empty", true, pe},
	} {
		extra := ""
		name := "provider " + p.pool
		if p.stream {
			name += ", streamed"
			add(name, fmt.Sprintf(`{"id":"$ID","model":%q,"body":{"stream":true,"messages":[{"role":"user","content":"x"}],"max_tokens":5}}`, "p-"+p.pool), p.code)
			continue
		}
		add(name, chatCall("$ID", "p-"+p.pool, 5, extra), p.code)
	}
	add("provider answering slowly past the deadline", chatCall("$ID", "p-slowbody", 5, `,"timeout_ms":1500`), messages.CodeDeadlineExceeded)

	// Subjects: teams and tiers nobody configured, or that no subject can
	// carry (those are refused by the server before sluice sees them).
	subject := func(name, team, tier string, code messages.Code, refused bool) {
		n++
		id := fmt.Sprintf("bad-%03d", n)
		cs = append(cs, badCase{name: name, team: team, tier: tier, id: id, body: chatCall(id, "m", 5, ""), code: code, refused: refused})
	}
	deadLetter := func(name, team, tier string) {
		n++
		id := fmt.Sprintf("bad-%03d", n)
		cs = append(cs, badCase{name: name, team: team, tier: tier, id: id, body: chatCall(id, "m", 5, ""), deadLetter: true})
	}
	subject("unknown team", "nobody", "standard", messages.CodeForbidden, false)
	subject("team with unicode", "tëam", "standard", messages.CodeForbidden, false)
	subject("team with '@'", "t@m", "standard", messages.CodeForbidden, false)
	subject("team of 65 characters", strings.Repeat("t", 65), "standard", messages.CodeForbidden, false)
	subject("team of 300 characters", strings.Repeat("t", 300), "standard", messages.CodeForbidden, false)
	subject("unknown tier", "demo", "urgent", inv, false)
	subject("tier with unicode", "demo", "ständard", inv, false)
	subject("tier of 65 characters", "demo", strings.Repeat("s", 65), inv, false)
	subject("tier not allowed", "limited", "critical", messages.CodeForbidden, false)
	subject("team with a dot", "de.mo", "standard", "", true)
	subject("team with a space", "de mo", "standard", "", true)
	// The server stores a wildcard in a published subject as a plain
	// token, but no answer can go to a subject made of it: such a call is
	// dead-lettered (reason bad_subject), not answered.
	deadLetter("team a wildcard", "*", "standard")
	deadLetter("tier a wildcard", "demo", ">")
	subject("empty team", "", "standard", "", true)
	return cs
}

// paddedCall is a call of pool m whose body field is exactly size bytes
// (calls.max_body_bytes limits the body as sent; the envelope around it
// has its own bounds).
func paddedCall(id string, size int) string {
	frame := `{"messages":[{"role":"user","content":"hello"}],"max_tokens":5,"user":""}`
	pad := size - len(frame)
	if pad < 0 {
		panic("paddedCall: size too small")
	}
	body := strings.Replace(frame, `"user":""`, `"user":"`+strings.Repeat("u", pad)+`"`, 1)
	return fmt.Sprintf(`{"id":%q,"model":"m","body":%s}`, id, body)
}

func TestBadInputCorpus(t *testing.T) {
	provider := badProvider(t)
	reg := prometheus.NewRegistry()
	s := startStack(t, stackOptions{yaml: badInputYAML(provider.URL), reg: reg})
	d := startDispatcher(t, s, "d1", nil)
	ex := startExecutor(t, s, "us-east", nil)
	nc := connect(t, s)
	js, _ := jetstream.New(nc)
	results := watchAllResults(t, nc)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()

	cases := badInputCases()
	if len(cases) < 100 {
		t.Fatalf("the corpus has %d cases, want at least 100", len(cases))
	}
	accepted, deadLetters := 0, 0
	for i := range cases {
		c := &cases[i]
		if c.id != strings.ReplaceAll(c.id, ".", "") {
			t.Fatalf("case %q: the corpus's ids are plain", c.name)
		}
		err := publishCall(ctx, js, c.team, c.tier, c.id, c.body)
		switch {
		case c.refused && err == nil:
			t.Errorf("%s: the server accepted a call on %q", c.name, "sluice.call."+c.team+"."+c.tier)
		case !c.refused && err != nil:
			t.Errorf("%s: publish: %v", c.name, err)
		case err == nil && c.deadLetter:
			deadLetters++
		case err == nil:
			accepted++
		}
	}
	// A good call after all of it.
	if err := publishCall(ctx, js, "demo", "standard", "good-after", chatCall("good-after", "m", 5, "")); err != nil {
		t.Fatal(err)
	}
	accepted++

	// Wait for every answer; what is missing then is named case by case.
	for wait := time.Now().Add(2 * time.Minute); results.total() < accepted && time.Now().Before(wait); {
		time.Sleep(50 * time.Millisecond)
	}
	for _, c := range cases {
		if c.refused || c.deadLetter {
			continue
		}
		t.Run(c.name, func(t *testing.T) {
			rs := results.on(messages.ResultSubject(c.team, c.id))
			if len(rs) != 1 {
				t.Fatalf("%d results on %s, want exactly 1", len(rs), messages.ResultSubject(c.team, c.id))
			}
			r := rs[0]
			switch {
			case c.code == "" && r.Error != nil:
				t.Fatalf("want success, got %s: %s", r.Error.Code, r.Error.Message)
			case c.code != "" && (r.Error == nil || r.Error.Code != c.code || r.Error.Message == ""):
				t.Fatalf("want one %s error with a message, got %+v", c.code, r.Error)
			}
		})
	}
	expected := map[string]bool{messages.ResultSubject("demo", "good-after"): true}
	for _, c := range cases {
		if !c.deadLetter {
			expected[messages.ResultSubject(c.team, c.id)] = true
		}
	}
	results.mu.Lock()
	for subj, rs := range results.bySubject {
		if !expected[subj] {
			t.Errorf("%d results on %s, where no call was awaiting one: %+v", len(rs), subj, rs[0].Error)
		}
	}
	results.mu.Unlock()
	if rs := results.on(messages.ResultSubject("demo", "good-after")); len(rs) != 1 || rs[0].Error != nil {
		t.Fatalf("the good call after the corpus: %+v", rs)
	}
	if got := results.total(); got != accepted {
		t.Errorf("%d results for %d accepted calls", got, accepted)
	}
	dlq, err := js.Stream(ctx, messages.StreamDeadLetters)
	if err != nil {
		t.Fatal(err)
	}
	waitUntil(t, "the unanswerable calls in the dead-letter stream", 30*time.Second, func() bool {
		info, err := dlq.Info(ctx)
		return err == nil && info.State.Msgs == uint64(deadLetters)
	})
	for _, svc := range []*devstack.Service{d, ex} {
		select {
		case <-svc.Done():
			t.Fatalf("a service stopped: %v", svc.Err())
		default:
		}
	}

	// Nothing a client sent became a label or a key.
	known := map[string]bool{}
	cfg := s.Shared.Load()
	for _, team := range []string{"demo", "limited"} {
		known[team] = true
	}
	var junk []string
	for _, c := range cases {
		for _, name := range []string{c.team, c.tier, c.id} {
			if name != "" && !known[name] && !messages.Tier(name).Valid() {
				junk = append(junk, name)
			}
		}
	}
	junk = append(junk, "gpt-9", "m.x", "mödel")
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
	t.Logf("%d cases, %d accepted, %d metric series", len(cases), accepted, series)

	// Usage: what the roll-ups hold adds up to the results, under names
	// the configuration knows, in a bounded number of keys.
	kv, err := js.KeyValue(ctx, messages.BucketUsage)
	if err != nil {
		t.Fatal(err)
	}
	var totals []usage.Total
	waitUntil(t, "usage to count every result", 30*time.Second, func() bool {
		totals, err = usage.Query(ctx, kv, time.Now().Add(-2*time.Hour), time.Now().Add(time.Hour))
		if err != nil {
			t.Fatal(err)
		}
		calls := int64(0)
		for _, tot := range totals {
			calls += tot.Calls
		}
		return calls == int64(accepted)
	})
	pools := len(cfg.Pools) + 1
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
	if bound := 2 * 3 * (len(messages.Tiers) + 1) * pools; keys > bound {
		t.Errorf("%d usage keys, more than %d (hours x teams x tiers x pools)", keys, bound)
	}
}
