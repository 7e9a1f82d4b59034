package results_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"

	"github.com/sluicehq/sluice/messages"
	"github.com/sluicehq/sluice/services/config"
	"github.com/sluicehq/sluice/services/results"
	"github.com/sluicehq/sluice/services/streams"
	"github.com/sluicehq/sluice/services/telemetry"
	"github.com/sluicehq/sluice/test/natstest"
)

func streamsConfig() config.Streams {
	return config.Streams{Replicas: 1, ResultsMaxAge: time.Hour, DuplicateWindow: time.Minute, DeadLetterMaxAge: time.Hour, UsageMaxAge: time.Hour, MaxWaiting: 1000}
}

// recorder counts the results a Publisher records for usage.
type recorder struct {
	mu  sync.Mutex
	ids []string
}

func (r *recorder) Result(res *messages.Result) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.ids = append(r.ids, res.ID)
}

func (r *recorder) count() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.ids)
}

// rig is a Publisher on a server with sluice's streams, and a subscriber
// of one call's result subject.
type rig struct {
	nc      *nats.Conn
	js      jetstream.JetStream
	res     *streams.Resources
	pub     *results.Publisher
	metrics *telemetry.Metrics
	reg     *prometheus.Registry
	usage   *recorder
	// sub receives what arrives on the call's result subject, marker what
	// arrives on another call's.
	sub, marker *nats.Subscription
}

func newRig(t *testing.T, srv *server.Server, team, callID string) *rig {
	t.Helper()
	r := &rig{nc: natstest.Connect(t, srv), usage: &recorder{}}
	var err error
	if r.js, err = jetstream.New(r.nc); err != nil {
		t.Fatal(err)
	}
	if r.res, err = streams.Ensure(t.Context(), r.js, streamsConfig()); err != nil {
		t.Fatal(err)
	}
	r.reg = prometheus.NewRegistry()
	r.metrics = telemetry.New(r.reg)
	r.pub = results.NewPublisher(r.js, r.metrics, config.NewLive(&config.Config{Teams: map[string]*config.Team{"demo": {}}}), nil)
	r.pub.RecordTo(r.usage)
	if r.sub, err = r.nc.SubscribeSync(messages.ResultSubject(team, callID)); err != nil {
		t.Fatal(err)
	}
	if r.marker, err = r.nc.SubscribeSync(messages.ResultSubject(team, "marker")); err != nil {
		t.Fatal(err)
	}
	if err := r.nc.Flush(); err != nil {
		t.Fatal(err)
	}
	return r
}

func result(team, callID, content string) *messages.Result {
	return &messages.Result{
		ID: callID, Team: team, Tier: messages.TierStandard, Model: "m",
		HTTPStatus: 200, Body: json.RawMessage(`{"content":"` + content + `"}`),
	}
}

// next is the next result on sub.
func next(t *testing.T, sub *nats.Subscription) *messages.Result {
	t.Helper()
	m, err := sub.NextMsg(10 * time.Second)
	if err != nil {
		t.Fatalf("no result on %s: %v", sub.Subject, err)
	}
	var r messages.Result
	if err := json.Unmarshal(m.Data, &r); err != nil {
		t.Fatalf("%s: %v: %s", sub.Subject, err, m.Data)
	}
	return &r
}

// nothingMore checks that the call's subscriber received nothing more. It
// stores a result for another call, on the same connection, and waits for
// it: the server republishes in the order it stores, and the connection
// hands messages to its subscriptions in the order they arrive, so
// anything republished for the call before the marker is queued by then.
func (r *rig) nothingMore(t *testing.T, team string) {
	t.Helper()
	if stored, err := r.pub.Answer(t.Context(), result(team, "marker", "marker")); err != nil || !stored {
		t.Fatalf("marker: stored %v, %v", stored, err)
	}
	if got := next(t, r.marker); got.ID != "marker" {
		t.Fatalf("marker subscriber got %+v", got)
	}
	if n, _, err := r.sub.Pending(); err != nil || n != 0 {
		m, _ := r.sub.NextMsg(0)
		t.Fatalf("the call's subscriber has %d more results (%v); the first: %s", n, err, m.Data)
	}
}

// publishRaw publishes a result for the call as a service does, but with
// its own Nats-Msg-Id: what a second answer looks like once JetStream's
// de-duplication has forgotten the first (outside the duplicate window).
func publishRaw(ctx context.Context, js jetstream.JetStream, r *messages.Result, msgID string) error {
	data, err := json.Marshal(r)
	if err != nil {
		return err
	}
	msg := &nats.Msg{Subject: messages.AnswerSubject(r.Team, r.ID), Data: data, Header: nats.Header{}}
	msg.Header.Set(messages.HeaderMsgID, msgID)
	msg.Header.Set(messages.HeaderExpectedLastSubjectSeq, "0")
	_, err = js.PublishMsg(ctx, msg)
	return err
}

// wrongLastSequence checks that err is the server's refusal by the
// expected last subject sequence, JetStream error code 10071.
func wrongLastSequence(t *testing.T, err error) {
	t.Helper()
	var apiErr *jetstream.APIError
	if !errors.As(err, &apiErr) || apiErr.ErrorCode != jetstream.JSErrCodeStreamWrongLastSequence {
		t.Fatalf("second answer: %v, want JetStream error 10071 (wrong last sequence)", err)
	}
}

// callsCounted is sluice_calls_total for the team's ok results.
func (r *rig) callsCounted(team string) float64 {
	var m dto.Metric
	if err := r.metrics.Calls.WithLabelValues(team, string(messages.TierStandard), "ok").Write(&m); err != nil {
		panic(err)
	}
	return m.GetCounter().GetValue()
}

// Two different results for one call: the first is stored and reaches the
// subscriber; the second is refused by the server, whether it has the
// same Nats-Msg-Id (de-duplicated) or another (refused by the expected
// last subject sequence), and reaches no one. Only the first is counted.
func TestASecondResultIsRefused(t *testing.T) {
	srv := natstest.Start(t)
	r := newRig(t, srv, "demo", "call-1")
	ctx := t.Context()

	stored, err := r.pub.Answer(ctx, result("demo", "call-1", "first"))
	if err != nil || !stored {
		t.Fatalf("first answer: stored %v, %v", stored, err)
	}
	if got := next(t, r.sub); string(got.Body) != `{"content":"first"}` || got.Status != messages.StatusOK {
		t.Fatalf("subscriber got %+v", got)
	}

	// Same call id, so same Nats-Msg-Id: a duplicate.
	stored, err = r.pub.Answer(ctx, result("demo", "call-1", "second"))
	if err != nil || stored {
		t.Fatalf("second answer with the same Nats-Msg-Id: stored %v, %v; want refused, no error", stored, err)
	}
	if err := r.pub.Publish(ctx, result("demo", "call-1", "third")); err != nil {
		t.Fatalf("Publish of a call answered already: %v, want nil", err)
	}
	// Another Nats-Msg-Id: the server refuses it all the same.
	wrongLastSequence(t, publishRaw(ctx, r.js, result("demo", "call-1", "fourth"), "not-the-call-id"))

	r.nothingMore(t, "demo")
	got, err := results.FetchFrom(ctx, r.res.Results, "demo", "call-1")
	if err != nil || string(got.Body) != `{"content":"first"}` {
		t.Fatalf("stored result: %+v, %v", got, err)
	}
	if n := r.callsCounted("demo"); n != 2 { // call-1 and the marker
		t.Errorf("sluice_calls_total counted %v ok results, want 2", n)
	}
	if n := r.usage.count(); n != 2 {
		t.Errorf("usage recorded %d results, want 2", n)
	}
}

// A call answered first by a publish with another Nats-Msg-Id (as after
// the duplicate window): Answer is not de-duplicated, yet refused by the
// server, and reports it as not stored, not as an error.
func TestAnswerOutsideTheDuplicateWindowIsRefused(t *testing.T) {
	srv := natstest.Start(t)
	r := newRig(t, srv, "demo", "call-1")
	ctx := t.Context()
	if err := publishRaw(ctx, r.js, result("demo", "call-1", "first"), "long-ago"); err != nil {
		t.Fatal(err)
	}
	if got := next(t, r.sub); string(got.Body) != `{"content":"first"}` {
		t.Fatalf("subscriber got %+v", got)
	}
	stored, err := r.pub.Answer(ctx, result("demo", "call-1", "second"))
	if err != nil || stored {
		t.Fatalf("second answer: stored %v, %v; want refused, no error", stored, err)
	}
	r.nothingMore(t, "demo")
	if n := r.callsCounted("demo"); n != 1 { // the marker
		t.Errorf("sluice_calls_total counted %v ok results, want 1 (the marker)", n)
	}
}

// The same after the NATS server is stopped and restarted on its store:
// JetStream's de-duplication is rebuilt from what is stored, and the
// expected last subject sequence reads the stored result itself.
func TestASecondResultIsRefusedAfterARestart(t *testing.T) {
	dir := t.TempDir()
	srv := natstest.StartIn(t, dir)
	r := newRig(t, srv, "demo", "call-1")
	ctx := t.Context()
	if stored, err := r.pub.Answer(ctx, result("demo", "call-1", "first")); err != nil || !stored {
		t.Fatalf("first answer: stored %v, %v", stored, err)
	}
	if got := next(t, r.sub); string(got.Body) != `{"content":"first"}` {
		t.Fatalf("subscriber got %+v", got)
	}
	r.nc.Close()
	srv.Shutdown()
	srv.WaitForShutdown()

	srv = natstest.StartIn(t, dir)
	r = newRig(t, srv, "demo", "call-1")
	stored, err := r.pub.Answer(ctx, result("demo", "call-1", "second"))
	if err != nil || stored {
		t.Fatalf("answer after the restart: stored %v, %v; want refused, no error", stored, err)
	}
	wrongLastSequence(t, publishRaw(ctx, r.js, result("demo", "call-1", "third"), "not-the-call-id"))
	r.nothingMore(t, "demo")
	got, err := results.FetchFrom(ctx, r.res.Results, "demo", "call-1")
	if err != nil || string(got.Body) != `{"content":"first"}` {
		t.Fatalf("stored result: %+v, %v", got, err)
	}
	if n := r.callsCounted("demo"); n != 1 {
		t.Errorf("sluice_calls_total counted %v ok results after the restart, want 1 (the marker)", n)
	}
}

// Results are stored under their result subject, so fetching them is as
// before: FetchFrom, Fetch and FetchDirect (a team's one request) all find
// an answer, and say ErrNotFound for a call without one.
func TestAnswersAreFetchedByResultSubject(t *testing.T) {
	srv := natstest.Start(t)
	r := newRig(t, srv, "demo", "call-1")
	ctx := t.Context()
	if _, err := r.pub.Answer(ctx, result("demo", "call-1", "first")); err != nil {
		t.Fatal(err)
	}
	m, err := r.res.Results.GetLastMsgForSubject(ctx, messages.ResultSubject("demo", "call-1"))
	if err != nil || m.Subject != "sluice.result.demo.call-1" {
		t.Fatalf("stored under %v (%v), want sluice.result.demo.call-1", m, err)
	}
	for name, fetch := range map[string]func(string) (*messages.Result, error){
		"FetchFrom":   func(id string) (*messages.Result, error) { return results.FetchFrom(ctx, r.res.Results, "demo", id) },
		"Fetch":       func(id string) (*messages.Result, error) { return results.Fetch(ctx, r.js, "demo", id) },
		"FetchDirect": func(id string) (*messages.Result, error) { return results.FetchDirect(ctx, r.nc, "", "demo", id) },
	} {
		got, err := fetch("call-1")
		if err != nil || got.ID != "call-1" || string(got.Body) != `{"content":"first"}` {
			t.Errorf("%s: %+v, %v", name, got, err)
		}
		if _, err := fetch("no-such-call"); !errors.Is(err, results.ErrNotFound) {
			t.Errorf("%s of a call without a result: %v, want ErrNotFound", name, err)
		}
	}
	// The subscriber's copy is the stored one, with the stream's headers.
	sm, err := r.sub.NextMsg(10 * time.Second)
	if err != nil {
		t.Fatal(err)
	}
	if sm.Header.Get("Nats-Stream") != messages.StreamResults || sm.Header.Get("Nats-Sequence") != "1" || sm.Header.Get("Nats-Subject") != "sluice.result.demo.call-1" {
		t.Errorf("republished headers: %v", sm.Header)
	}
}

// Results for teams and tiers the configuration does not know are counted
// under one label each, whatever the names: the metric grows by one
// series, not one per name. Each result still reaches its own subject,
// with the names it had.
func TestUnknownNamesShareOneLabel(t *testing.T) {
	srv := natstest.Start(t)
	r := newRig(t, srv, "junk0", "call-0")
	ctx := t.Context()
	for i := range 50 {
		res := result(fmt.Sprintf("junk%d", i), fmt.Sprintf("call-%d", i), "x")
		res.Tier = messages.Tier(fmt.Sprintf("tier%d", i))
		res.Error = &messages.Error{Code: messages.CodeForbidden}
		if stored, err := r.pub.Answer(ctx, res); err != nil || !stored {
			t.Fatalf("answer %d: stored %v, %v", i, stored, err)
		}
	}
	if got := next(t, r.sub); got.Team != "junk0" || got.Tier != "tier0" || got.ID != "call-0" {
		t.Errorf("the call's subscriber got %+v", got)
	}
	if _, err := r.pub.Answer(ctx, result("demo", "known", "ok")); err != nil {
		t.Fatal(err)
	}
	series := map[string]float64{}
	mfs, err := r.reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != "sluice_calls_total" {
			continue
		}
		for _, m := range mf.GetMetric() {
			var labels []string
			for _, lp := range m.GetLabel() {
				labels = append(labels, lp.GetName()+"="+lp.GetValue())
			}
			series[strings.Join(labels, ",")] = m.GetCounter().GetValue()
		}
	}
	want := map[string]float64{
		"outcome=forbidden,team=unknown,tier=unknown": 50,
		"outcome=ok,team=demo,tier=standard":          1,
	}
	if !maps.Equal(series, want) {
		t.Errorf("sluice_calls_total series %v, want %v", series, want)
	}
}
