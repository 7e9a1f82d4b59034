package gateway_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/sluicehq/sluice/messages"
	"github.com/sluicehq/sluice/services/config"
	"github.com/sluicehq/sluice/services/gateway"
	"github.com/sluicehq/sluice/services/streams"
	"github.com/sluicehq/sluice/test/natstest"
)

// hang bounds every wait: a test that waits longer has found a hang.
const hang = 20 * time.Second

// Tokens of the rig's teams: demo may use pools chat, emb and claude on
// tiers high, standard and batch; ops may use everything.
const (
	demoToken = "sk-test-demo-0123456789"
	opsToken  = "sk-test-ops-0123456789"
)

// rigYAML is the configuration of the rig: pools of each dialect, and a
// small body limit.
func rigYAML() string {
	return fmt.Sprintf(`pools:
  chat:
    deployments:
      - {id: chat-1, provider: openai, base_url: "http://127.0.0.1:1/v1", region: us-east, key: K1, rpm: 600, tpm: 100000}
  emb:
    deployments:
      - {id: emb-1, provider: openai, base_url: "http://127.0.0.1:1/v1", region: us-east, key: K2, rpm: 600, tpm: 100000}
  claude:
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
  ops:
    tokens: [%q]
calls:
  max_body_bytes: 4096
  default_timeout: 90s
  max_timeout: 10m
`, config.HashToken(demoToken), config.HashToken(opsToken))
}

// seenCall is a call the gateway published, as sluice would receive it.
type seenCall struct {
	Subject string
	MsgID   string
	Call    messages.CallRequest
	Team    string
	Tier    messages.Tier
}

// rig is a gateway on a real NATS server, with the test playing sluice:
// it sees every call the gateway publishes, and answers as a test says.
type rig struct {
	t       *testing.T
	dir     string // the NATS server's store
	srv     *server.Server
	nc      *nats.Conn // sluice's side
	live    *config.Live
	gw      *gateway.Gateway
	url     string
	reg     *prometheus.Registry
	logs    *syncBuffer
	client  *http.Client
	calls   chan seenCall
	cancels chan string
	stop    context.CancelFunc
	done    chan error
}

type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// newRig starts NATS, sluice's streams, and a gateway tuned by tune.
func newRig(t *testing.T, tune func(*gateway.Config)) *rig {
	t.Helper()
	cfg, err := config.Parse([]byte(rigYAML()))
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	r := &rig{
		t: t, dir: dir, srv: natstest.StartIn(t, dir), live: config.NewLive(cfg), reg: prometheus.NewRegistry(), logs: &syncBuffer{},
		calls: make(chan seenCall, 100), cancels: make(chan string, 100), done: make(chan error, 1),
	}
	r.nc = natstest.Connect(t, r.srv)
	js, err := jetstream.New(r.nc)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), hang)
	defer cancel()
	if _, err := streams.Ensure(ctx, js, cfg.Streams); err != nil {
		t.Fatal(err)
	}
	if _, err := r.nc.Subscribe("sluice.call.*.*", func(m *nats.Msg) {
		var c messages.CallRequest
		if err := json.Unmarshal(m.Data, &c); err != nil {
			t.Errorf("the gateway published a call that does not decode: %v\n%s", err, m.Data)
			return
		}
		parts := strings.Split(m.Subject, ".")
		r.calls <- seenCall{Subject: m.Subject, MsgID: m.Header.Get(messages.HeaderMsgID), Call: c, Team: parts[2], Tier: messages.Tier(parts[3])}
	}); err != nil {
		t.Fatal(err)
	}
	if _, err := r.nc.Subscribe(messages.CancelSubjects, func(m *nats.Msg) {
		r.cancels <- m.Subject[strings.LastIndexByte(m.Subject, '.')+1:]
	}); err != nil {
		t.Fatal(err)
	}
	if err := r.nc.Flush(); err != nil {
		t.Fatal(err)
	}

	gnc := natstest.Connect(t, r.srv)
	gcfg := gateway.Config{
		Addr: "127.0.0.1:0", Shared: r.live, Registerer: r.reg,
		Logger: slog.New(slog.NewTextHandler(r.logs, &slog.HandlerOptions{Level: slog.LevelDebug})),
	}
	if tune != nil {
		tune(&gcfg)
	}
	if r.gw, err = gateway.New(gnc, gcfg); err != nil {
		t.Fatal(err)
	}
	addr, err := r.gw.Listen()
	if err != nil {
		t.Fatal(err)
	}
	r.url = "http://" + addr.String()
	runCtx, stop := context.WithCancel(context.Background())
	r.stop = stop
	go func() { r.done <- r.gw.Run(runCtx) }()
	r.client = &http.Client{Transport: http.DefaultTransport.(*http.Transport).Clone()}
	t.Cleanup(func() {
		r.client.CloseIdleConnections()
		stop()
		select {
		case <-r.done:
		case <-time.After(hang):
			t.Errorf("the gateway's Run did not return within %s of its context ending", hang)
		}
	})
	return r
}

// request builds a request to the gateway with token (none if empty) and
// headers given as name, value pairs.
func (r *rig) request(ctx context.Context, method, path, token, body string, headers ...string) *http.Request {
	r.t.Helper()
	var rd io.Reader
	if body != "" {
		rd = strings.NewReader(body)
	}
	req, err := http.NewRequestWithContext(ctx, method, r.url+path, rd)
	if err != nil {
		r.t.Fatal(err)
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	if body != "" {
		req.Header.Set("Content-Type", "application/json")
	}
	for i := 0; i+1 < len(headers); i += 2 {
		req.Header.Set(headers[i], headers[i+1])
	}
	return req
}

// answer is an HTTP answer read whole.
type answer struct {
	Status int
	Header http.Header
	Body   string
	Err    error
}

// send sends req and reads the answer in the background.
func (r *rig) send(req *http.Request) <-chan answer {
	out := make(chan answer, 1)
	go func() {
		resp, err := r.client.Do(req)
		if err != nil {
			out <- answer{Err: err}
			return
		}
		defer resp.Body.Close()
		b, err := io.ReadAll(resp.Body)
		out <- answer{Status: resp.StatusCode, Header: resp.Header, Body: string(b), Err: err}
	}()
	return out
}

// do sends a request that sluice is not expected to see, and returns the
// answer.
func (r *rig) do(method, path, token, body string, headers ...string) answer {
	r.t.Helper()
	return r.wait(r.send(r.request(context.Background(), method, path, token, body, headers...)))
}

func (r *rig) wait(ch <-chan answer) answer {
	r.t.Helper()
	select {
	case a := <-ch:
		if a.Err != nil {
			r.t.Fatalf("request failed: %v", a.Err)
		}
		return a
	case <-time.After(hang):
		r.t.Fatalf("no answer within %s", hang)
		return answer{}
	}
}

// nextCall returns the next call the gateway published.
func (r *rig) nextCall() seenCall {
	r.t.Helper()
	select {
	case c := <-r.calls:
		return c
	case <-time.After(hang):
		r.t.Fatalf("the gateway published no call within %s", hang)
		return seenCall{}
	}
}

// submitted waits until the gateway knows JetStream took c, and waits for
// its result.
func (r *rig) submitted(c seenCall) {
	r.t.Helper()
	waitFor(r.t, "the call to be submitted", func() bool {
		for _, line := range strings.Split(r.logs.String(), "\n") {
			if strings.Contains(line, "call submitted") && strings.Contains(line, c.Call.ID) {
				return true
			}
		}
		return false
	})
}

// noCalls checks that no call reached NATS.
func (r *rig) noCalls() {
	r.t.Helper()
	if err := r.nc.Flush(); err != nil {
		r.t.Fatal(err)
	}
	select {
	case c := <-r.calls:
		r.t.Errorf("a call reached NATS: %s %s", c.Subject, c.Call.Body)
	default:
	}
}

// waitCancel waits for the cancellation of call id.
func (r *rig) waitCancel(id string) {
	r.t.Helper()
	deadline := time.After(hang)
	for {
		select {
		case got := <-r.cancels:
			if got == id {
				return
			}
		case <-deadline:
			r.t.Fatalf("call %s was not canceled within %s", id, hang)
		}
	}
}

// noCancel checks that no cancellation was published.
func (r *rig) noCancel() {
	r.t.Helper()
	if err := r.nc.Flush(); err != nil {
		r.t.Fatal(err)
	}
	select {
	case id := <-r.cancels:
		r.t.Errorf("call %s was canceled", id)
	default:
	}
}

// result publishes the result of c as sluice would.
func (r *rig) result(c seenCall, res messages.Result) {
	r.t.Helper()
	res.ID, res.Team, res.Tier, res.Model = c.Call.ID, c.Team, c.Tier, c.Call.Model
	if res.Status == "" {
		res.Status = messages.StatusOK
		if res.Error != nil {
			res.Status = messages.StatusError
		}
	}
	data, err := json.Marshal(res)
	if err != nil {
		r.t.Fatal(err)
	}
	if err := r.nc.Publish(messages.ResultSubject(c.Team, c.Call.ID), data); err != nil {
		r.t.Fatal(err)
	}
}

// chunk publishes event number seq of c's stream as an executor would.
func (r *rig) chunk(c seenCall, seq int, event string) {
	r.t.Helper()
	m := &nats.Msg{Subject: messages.StreamSubject(c.Team, c.Call.ID), Data: []byte(event), Header: nats.Header{}}
	m.Header.Set(messages.HeaderStreamSeq, strconv.Itoa(seq))
	if err := r.nc.PublishMsg(m); err != nil {
		r.t.Fatal(err)
	}
}

// metrics returns what the gateway's registry exposes, as text.
func (r *rig) metrics() string {
	r.t.Helper()
	mfs, err := r.reg.Gather()
	if err != nil {
		r.t.Fatal(err)
	}
	var b strings.Builder
	for _, mf := range mfs {
		for _, m := range mf.GetMetric() {
			fmt.Fprintf(&b, "%s", mf.GetName())
			for _, l := range m.GetLabel() {
				fmt.Fprintf(&b, " %s=%q", l.GetName(), l.GetValue())
			}
			switch {
			case m.Counter != nil:
				fmt.Fprintf(&b, " %v\n", m.Counter.GetValue())
			case m.Gauge != nil:
				fmt.Fprintf(&b, " %v\n", m.Gauge.GetValue())
			case m.Histogram != nil:
				fmt.Fprintf(&b, " count=%d\n", m.Histogram.GetSampleCount())
			default:
				b.WriteString("\n")
			}
		}
	}
	return b.String()
}

// openAIError decodes an OpenAI-style error body, failing on any other
// shape.
func openAIError(t *testing.T, body string) (message, typ, code string, param *string) {
	t.Helper()
	var e struct {
		Error *struct {
			Message *string `json:"message"`
			Type    *string `json:"type"`
			Param   *string `json:"param"`
			Code    *string `json:"code"`
		} `json:"error"`
	}
	dec := json.NewDecoder(strings.NewReader(body))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&e); err != nil || e.Error == nil || e.Error.Message == nil || e.Error.Type == nil || e.Error.Code == nil || *e.Error.Message == "" {
		t.Fatalf("not an OpenAI-style error body (%v): %s", err, body)
	}
	if !strings.Contains(body, `"param":`) {
		t.Fatalf("an OpenAI-style error has a param (null if none): %s", body)
	}
	return *e.Error.Message, *e.Error.Type, *e.Error.Code, e.Error.Param
}

// anthropicError decodes an Anthropic-style error body, failing on any
// other shape.
func anthropicError(t *testing.T, body string) (message, typ string) {
	t.Helper()
	var e struct {
		Type  string `json:"type"`
		Error *struct {
			Type    string `json:"type"`
			Message string `json:"message"`
		} `json:"error"`
	}
	dec := json.NewDecoder(strings.NewReader(body))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&e); err != nil || e.Type != "error" || e.Error == nil || e.Error.Type == "" || e.Error.Message == "" {
		t.Fatalf("not an Anthropic-style error body (%v): %s", err, body)
	}
	return e.Error.Message, e.Error.Type
}

// Bodies of each route.
const (
	chatBody     = `{"model":"chat","messages":[{"role":"user","content":"hi"}],"max_tokens":5}`
	streamBody   = `{"model":"chat","stream":true,"messages":[{"role":"user","content":"hi"}],"max_tokens":5}`
	embBody      = `{"model":"emb","input":"hello"}`
	messagesBody = `{"model":"claude","max_tokens":5,"messages":[{"role":"user","content":"hi"}]}`
)
