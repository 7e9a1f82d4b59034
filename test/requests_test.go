package test

import (
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/micro"

	"github.com/sluicehq/sluice/messages"
	"github.com/sluicehq/sluice/services/devstack"
)

// startRequests starts the request-reply endpoint, stopped when the test
// ends.
func startRequests(t *testing.T, s *devstack.Stack) *devstack.Service {
	t.Helper()
	svc, err := s.StartRequests(nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { stopQuietly(svc) })
	return svc
}

// request calls sluice with a plain nats.go request, as `nats req` does,
// and decodes the reply.
func request(t *testing.T, nc *nats.Conn, subject, body string, timeout time.Duration, headers ...string) (*nats.Msg, messages.Result) {
	t.Helper()
	msg := &nats.Msg{Subject: subject, Data: []byte(body), Header: nats.Header{}}
	for i := 0; i+1 < len(headers); i += 2 {
		msg.Header.Set(headers[i], headers[i+1])
	}
	reply, err := nc.RequestMsg(msg, timeout)
	if err != nil {
		t.Fatalf("request on %s: %v", subject, err)
	}
	var res messages.Result
	if err := json.Unmarshal(reply.Data, &res); err != nil {
		t.Fatalf("the reply is not a Result: %v\n%s", err, reply.Data)
	}
	return reply, res
}

// A request on sluice.request.<team>.<tier> gets the call's result in one
// round trip: the same result its result subject carries.
func TestRequestReplyReturnsTheResult(t *testing.T) {
	s := startStack(t, stackOptions{})
	startDispatcher(t, s, "d1", nil)
	startExecutors(t, s)
	startRequests(t, s)
	nc := connect(t, s)
	results := watchResults(t, nc, "demo")

	reply, res := request(t, nc, "sluice.request.demo.standard",
		`{"id":"req-1","model":"gpt-4o-mini","body":{"messages":[{"role":"user","content":"hi"}],"max_tokens":20},"metadata":{"trace":"r-1"}}`, 30*time.Second)
	if res.ID != "req-1" || res.Team != "demo" || res.Tier != messages.TierStandard || res.Status != messages.StatusOK || res.HTTPStatus != 200 {
		t.Fatalf("reply: %s", reply.Data)
	}
	if reply.Header.Get("Sluice-Call-Id") != "req-1" || reply.Header.Get("Nats-Service-Error") != "" {
		t.Fatalf("reply headers: %v", reply.Header)
	}
	var body struct {
		Object string `json:"object"`
	}
	if err := json.Unmarshal(res.Body, &body); err != nil || body.Object != "chat.completion" || res.Usage == nil || res.Usage.TotalTokens == 0 || res.Metadata["trace"] != "r-1" {
		t.Fatalf("reply body: %s", reply.Data)
	}
	results.waitFor(t, []string{"req-1"}, 30*time.Second)
	stored := results.one(t, "req-1")
	if stored.Deployment != res.Deployment || stored.Attempts != res.Attempts || *stored.Usage != *res.Usage || !stored.Timings.FinishedAt.Equal(res.Timings.FinishedAt) {
		t.Fatalf("the reply %+v is not the result %+v", res, stored)
	}

	// The call id may come from Nats-Msg-Id, or be made up.
	reply, res = request(t, nc, "sluice.request.demo.high", `{"model":"gpt-4o-mini","body":{"messages":[{"role":"user","content":"hi"}]}}`, 30*time.Second, "Nats-Msg-Id", "req-2")
	if res.ID != "req-2" || res.Tier != messages.TierHigh || res.Status != messages.StatusOK {
		t.Fatalf("reply: %s", reply.Data)
	}
	reply, res = request(t, nc, "sluice.request.demo.batch", `{"model":"gpt-4o-mini","body":{"messages":[{"role":"user","content":"hi"}]}}`, 30*time.Second)
	if !messages.ValidToken(res.ID) || reply.Header.Get("Sluice-Call-Id") != res.ID || res.Status != messages.StatusOK {
		t.Fatalf("reply: %v %s", reply.Header, reply.Data)
	}
}

// Bad input gets one error result, with a code and a message, as the
// reply: never silence, and the endpoint goes on serving.
func TestRequestReplyBadInput(t *testing.T) {
	s := startStack(t, stackOptions{yaml: twoRegionYAML(600, 100000, layout{teams: "  limited: {tiers: [batch]}\n"})})
	startDispatcher(t, s, "d1", nil)
	startExecutors(t, s)
	startRequests(t, s)
	nc := connect(t, s)

	good := chatCall("", "m", 5, "")
	cases := []struct {
		name, subject, body string
		headers             []string
		code                messages.Code
		status              string
		field               string
	}{
		{"malformed JSON", "sluice.request.demo.standard", `{"model": "m", "body": {`, nil, messages.CodeInvalidRequest, "400", ""},
		{"not JSON", "sluice.request.demo.standard", `not json at all`, nil, messages.CodeInvalidRequest, "400", ""},
		{"empty", "sluice.request.demo.standard", ``, nil, messages.CodeInvalidRequest, "400", ""},
		{"unknown field", "sluice.request.demo.standard", `{"model":"m","body":{"messages":[]},"priority":9}`, nil, messages.CodeInvalidRequest, "400", "priority"},
		{"bad id", "sluice.request.demo.standard", `{"id":"a b","model":"m","body":{"messages":[]}}`, nil, messages.CodeInvalidRequest, "400", "id"},
		{"bad Nats-Msg-Id", "sluice.request.demo.standard", good, []string{"Nats-Msg-Id", "a*b"}, messages.CodeInvalidRequest, "400", "id"},
		{"bad Sluice-Cancel-After", "sluice.request.demo.standard", good, []string{"Sluice-Cancel-After", "soon"}, messages.CodeInvalidRequest, "400", "Sluice-Cancel-After"},
		{"unknown team", "sluice.request.nobody.standard", good, nil, messages.CodeForbidden, "403", ""},
		{"tier not allowed", "sluice.request.limited.critical", good, nil, messages.CodeForbidden, "403", ""},
		{"unknown model", "sluice.request.demo.standard", chatCall("", "gpt-9", 5, ""), nil, messages.CodeUnknownModel, "404", ""},
		{"unknown tier", "sluice.request.demo.urgent", good, nil, messages.CodeInvalidRequest, "400", "subject"},
		{"no tier", "sluice.request.demo", good, nil, messages.CodeInvalidRequest, "400", "subject"},
		{"too many tokens", "sluice.request.demo.standard.more", good, nil, messages.CodeInvalidRequest, "400", "subject"},
		{"team not a token", "sluice.request.d@mo.standard", good, nil, messages.CodeInvalidRequest, "400", "subject"},
		{"team too long", "sluice.request." + strings.Repeat("t", 65) + ".standard", good, nil, messages.CodeInvalidRequest, "400", "subject"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			reply, res := request(t, nc, tc.subject, tc.body, 30*time.Second, tc.headers...)
			if res.Status != messages.StatusError || res.Error == nil || res.Error.Code != tc.code || res.Error.Message == "" || res.Error.Field != tc.field {
				t.Fatalf("want one %s error (field %q) with a message, got %s", tc.code, tc.field, reply.Data)
			}
			if reply.Header.Get("Nats-Service-Error-Code") != tc.status || reply.Header.Get("Nats-Service-Error") == "" {
				t.Fatalf("micro's error headers: %v", reply.Header)
			}
		})
	}
	// The endpoint still serves good calls.
	if _, res := request(t, nc, "sluice.request.demo.standard", good, 30*time.Second); res.Status != messages.StatusOK {
		t.Fatalf("a good call after bad input: %+v", res.Error)
	}
}

// A requester that gives up does not cancel its call: the call goes on to
// its result on its result subject. One that said Sluice-Cancel-After has
// its call canceled.
func TestRequestReplyTimeout(t *testing.T) {
	s := startStack(t, stackOptions{})
	startDispatcher(t, s, "d1", nil)
	startRequests(t, s)
	// No executor yet: calls wait until one starts.
	nc := connect(t, s)
	results := watchResults(t, nc, "demo")
	call := func(id string) string {
		return `{"id":"` + id + `","model":"gpt-4o-mini","body":{"messages":[{"role":"user","content":"hi"}],"max_tokens":20}}`
	}

	if _, err := nc.Request("sluice.request.demo.standard", []byte(call("gave-up")), 300*time.Millisecond); !errors.Is(err, nats.ErrTimeout) {
		t.Fatalf("a call no executor can serve was answered: %v", err)
	}
	msg := &nats.Msg{Subject: "sluice.request.demo.standard", Data: []byte(call("cancel-me")), Header: nats.Header{}}
	msg.Header.Set("Sluice-Cancel-After", "300ms")
	if _, err := nc.RequestMsg(msg, 300*time.Millisecond); !errors.Is(err, nats.ErrTimeout) {
		t.Fatalf("a call no executor can serve was answered: %v", err)
	}
	results.waitFor(t, []string{"cancel-me"}, 30*time.Second)
	if r := results.one(t, "cancel-me"); r.Error == nil || r.Error.Code != messages.CodeCanceled {
		t.Fatalf("a call whose requester said Sluice-Cancel-After ended %s, want canceled", r.Outcome())
	}

	startExecutors(t, s)
	results.waitFor(t, []string{"gave-up"}, 30*time.Second)
	if r := results.one(t, "gave-up"); r.Status != messages.StatusOK {
		t.Fatalf("a call whose requester gave up ended %s, want ok", r.Outcome())
	}
	results.exactlyOnce(t, []string{"gave-up", "cancel-me"})
}

// Every kind of sluice service answers micro's discovery: $SRV.PING,
// $SRV.INFO and $SRV.STATS, with its name, version, description and
// metadata; the request endpoint's stats count requests and errors.
func TestServicesAnswerMicroDiscovery(t *testing.T) {
	s := startStack(t, stackOptions{})
	startDispatcher(t, s, "d1", nil)
	startExecutors(t, s)
	startGateway(t, s, nil)
	startRequests(t, s)
	nc := connect(t, s)

	regions := s.Shared.Load().Regions()
	want := map[string]int{"sluice-dispatcher": 1, "sluice-executor": len(regions), "sluice-gateway": 1, "sluice-requests": 1}
	// $SRV.PING is answered by every instance of every micro service.
	inbox := nc.NewRespInbox()
	sub, err := nc.SubscribeSync(inbox)
	if err != nil {
		t.Fatal(err)
	}
	if err := nc.PublishRequest("$SRV.PING", inbox, nil); err != nil {
		t.Fatal(err)
	}
	got := map[string]int{}
	for n := 0; n < 1+len(regions)+2; n++ {
		m, err := sub.NextMsg(10 * time.Second)
		if err != nil {
			t.Fatalf("$SRV.PING: %d answers, %v: %v", n, got, err)
		}
		var p micro.Ping
		if err := json.Unmarshal(m.Data, &p); err != nil || p.Type != micro.PingResponseType || p.ID == "" || p.Version == "" {
			t.Fatalf("ping answer %s: %v", m.Data, err)
		}
		got[p.Name]++
	}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("$SRV.PING answered by %v, want %v", got, want)
	}

	info := func(name string) micro.Info {
		t.Helper()
		m, err := nc.Request("$SRV.INFO."+name, nil, 10*time.Second)
		if err != nil {
			t.Fatalf("$SRV.INFO.%s: %v", name, err)
		}
		var i micro.Info
		if err := json.Unmarshal(m.Data, &i); err != nil || i.Type != micro.InfoResponseType || i.Name != name || i.Version == "" || !strings.HasPrefix(i.Description, "sluice ") {
			t.Fatalf("$SRV.INFO.%s: %s %v", name, m.Data, err)
		}
		return i
	}
	if i := info("sluice-dispatcher"); i.Metadata["id"] != "d1" {
		t.Fatalf("dispatcher metadata %v, want id d1", i.Metadata)
	}
	if i := info("sluice-executor"); !strings.Contains(strings.Join(regions, " "), i.Metadata["region"]) || i.Metadata["region"] == "" {
		t.Fatalf("executor metadata %v, want a region of %v", i.Metadata, regions)
	}
	if i := info("sluice-gateway"); !strings.HasPrefix(i.Metadata["http"], "http://") {
		t.Fatalf("gateway metadata %v, want its http address", i.Metadata)
	}
	ri := info("sluice-requests")
	if len(ri.Endpoints) != 1 || ri.Endpoints[0].Subject != "sluice.request.>" || ri.Endpoints[0].QueueGroup != "sluice-requests" {
		t.Fatalf("request endpoint: %+v", ri.Endpoints)
	}

	// Two requests, one of them refused.
	if _, res := request(t, nc, "sluice.request.demo.standard", chatCall("", "gpt-4o-mini", 5, ""), 30*time.Second); res.Status != messages.StatusOK {
		t.Fatalf("good request: %+v", res.Error)
	}
	if _, res := request(t, nc, "sluice.request.demo.standard", `{`, 30*time.Second); res.Error == nil {
		t.Fatal("bad request was not refused")
	}
	// micro counts a request once its handler returned, which may be just
	// after the reply went out.
	var stats micro.Stats
	waitUntil(t, "the request endpoint's stats", 10*time.Second, func() bool {
		m, err := nc.Request("$SRV.STATS.sluice-requests."+ri.ID, nil, 10*time.Second)
		if err != nil {
			t.Fatalf("$SRV.STATS: %v", err)
		}
		if err := json.Unmarshal(m.Data, &stats); err != nil || stats.Type != micro.StatsResponseType || len(stats.Endpoints) != 1 {
			t.Fatalf("$SRV.STATS: %s %v", m.Data, err)
		}
		return stats.Endpoints[0].NumRequests == 2
	})
	e := stats.Endpoints[0]
	if e.NumErrors != 1 || !strings.Contains(e.LastError, "400") {
		t.Fatalf("endpoint stats: %+v", e)
	}
	var data struct {
		Submitted int            `json:"submitted"`
		InFlight  int            `json:"in_flight"`
		Results   map[string]int `json:"results"`
	}
	if err := json.Unmarshal(e.Data, &data); err != nil || data.Submitted != 1 || data.InFlight != 0 || data.Results["ok"] != 1 || data.Results["invalid_request"] != 1 {
		t.Fatalf("endpoint stats data: %s %v", e.Data, err)
	}
	for name := range want {
		m, err := nc.Request("$SRV.STATS."+name, nil, 10*time.Second)
		var st micro.Stats
		if err != nil || json.Unmarshal(m.Data, &st) != nil || st.Name != name || st.Started.IsZero() {
			t.Fatalf("$SRV.STATS.%s: %v", name, err)
		}
	}
}
