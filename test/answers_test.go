package test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/sluicehq/sluice/messages"
	"github.com/sluicehq/sluice/services/attempts"
	"github.com/sluicehq/sluice/services/config"
	"github.com/sluicehq/sluice/services/embedded"
	"github.com/sluicehq/sluice/services/results"
	"github.com/sluicehq/sluice/services/streams"
	"github.com/sluicehq/sluice/services/telemetry"
)

// answersCluster is a three-server JetStream cluster, in this process,
// whose servers can be stopped and restarted on their stores.
type answersCluster struct {
	t       *testing.T
	dirs    []string
	servers []*server.Server
}

func startAnswersCluster(t *testing.T) *answersCluster {
	t.Helper()
	c := &answersCluster{t: t}
	var routes []string
	for i := range 3 {
		c.dirs = append(c.dirs, t.TempDir())
		srv := c.start(i, routes)
		c.servers = append(c.servers, srv)
		routes = append(routes, "nats-route://"+srv.ClusterAddr().String())
	}
	t.Cleanup(func() {
		for _, srv := range c.servers {
			srv.Shutdown()
			srv.WaitForShutdown()
		}
	})
	waitUntil(t, "a JetStream meta leader", 30*time.Second, func() bool {
		leader := false
		for _, srv := range c.servers {
			if !srv.JetStreamIsClustered() || !srv.JetStreamIsCurrent() || srv.NumRoutes() < 2 {
				return false
			}
			leader = leader || srv.JetStreamIsLeader()
		}
		return leader
	})
	return c
}

func (c *answersCluster) start(i int, routes []string) *server.Server {
	c.t.Helper()
	srv, err := embedded.Start(embedded.Config{
		Port: -1, StoreDir: c.dirs[i], Name: fmt.Sprintf("answers-%d", i+1),
		Cluster: "answers", ClusterPort: -1, Routes: routes,
	})
	if err != nil {
		c.t.Fatalf("start nats-server %d: %v", i+1, err)
	}
	return srv
}

// restart stops server i and starts it again on its store.
func (c *answersCluster) restart(i int) {
	c.t.Helper()
	c.servers[i].Shutdown()
	c.servers[i].WaitForShutdown()
	var routes []string
	for j, srv := range c.servers {
		if j != i {
			routes = append(routes, "nats-route://"+srv.ClusterAddr().String())
		}
	}
	c.servers[i] = c.start(i, routes)
}

func (c *answersCluster) connect(i int) *nats.Conn {
	c.t.Helper()
	nc, err := nats.Connect(c.servers[i].ClientURL())
	if err != nil {
		c.t.Fatal(err)
	}
	c.t.Cleanup(nc.Close)
	return nc
}

// streamLeader is the index of the server leading stream name, -1 while it
// has none.
func (c *answersCluster) streamLeader(js jetstream.JetStream, name string) int {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	s, err := js.Stream(ctx, name)
	if err != nil || s.CachedInfo().Cluster == nil {
		return -1
	}
	for i, srv := range c.servers {
		if srv.Name() == s.CachedInfo().Cluster.Leader {
			return i
		}
	}
	return -1
}

// allCurrent reports whether stream name has a leader and every replica
// is current.
func allCurrent(js jetstream.JetStream, name string) bool {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	s, err := js.Stream(ctx, name)
	if err != nil {
		return false
	}
	cl := s.CachedInfo().Cluster
	if cl == nil || cl.Leader == "" || len(cl.Replicas) != 2 {
		return false
	}
	for _, p := range cl.Replicas {
		if !p.Current || p.Offline {
			return false
		}
	}
	return true
}

// answerer publishes results and watches the call's result subject on one
// server's connection.
type answerer struct {
	nc          *nats.Conn
	js          jetstream.JetStream
	pub         *results.Publisher
	sub, marker *nats.Subscription
}

func newAnswerer(t *testing.T, nc *nats.Conn, callID, marker string) *answerer {
	t.Helper()
	a := &answerer{nc: nc}
	var err error
	if a.js, err = jetstream.New(nc); err != nil {
		t.Fatal(err)
	}
	a.pub = results.NewPublisher(a.js, telemetry.New(prometheus.NewRegistry()), nil, nil)
	if a.sub, err = nc.SubscribeSync(messages.ResultSubject("demo", callID)); err != nil {
		t.Fatal(err)
	}
	if a.marker, err = nc.SubscribeSync(messages.ResultSubject("demo", marker)); err != nil {
		t.Fatal(err)
	}
	if err := nc.Flush(); err != nil {
		t.Fatal(err)
	}
	return a
}

// answerWithID publishes a result for callID as services do, but with its
// own Nats-Msg-Id, so that JetStream's de-duplication cannot refuse it.
func answerWithID(ctx context.Context, js jetstream.JetStream, callID, content, msgID string) error {
	data, _ := json.Marshal(messages.Result{ID: callID, Team: "demo", Status: messages.StatusOK, Body: json.RawMessage(`"` + content + `"`)})
	msg := &nats.Msg{Subject: messages.AnswerSubject("demo", callID), Data: data, Header: nats.Header{}}
	msg.Header.Set(messages.HeaderMsgID, msgID)
	msg.Header.Set(messages.HeaderExpectedLastSubjectSeq, "0")
	_, err := js.PublishMsg(ctx, msg)
	return err
}

// refusedByTheStream reports whether err is the refusal of a message for a
// subject that has one: 10071, or 10164 from a replicated stream while
// another message for the subject is in flight.
func refusedByTheStream(err error) bool {
	var apiErr *jetstream.APIError
	return errors.As(err, &apiErr) && (apiErr.ErrorCode == jetstream.JSErrCodeStreamWrongLastSequence ||
		apiErr.ErrorCode == jetstream.JSErrCodeStreamWrongLastSequenceConstant)
}

// received checks that each answerer received exactly one result for the
// call, with content want, and nothing after it up to a marker stored
// now.
func receivedOnce(t *testing.T, ctx context.Context, as []*answerer, marker, want string) {
	t.Helper()
	if stored, err := as[0].pub.Answer(ctx, &messages.Result{ID: marker, Team: "demo", Body: json.RawMessage(`"marker"`)}); err != nil || !stored {
		t.Fatalf("marker %s: stored %v, %v", marker, stored, err)
	}
	for i, a := range as {
		if _, err := a.marker.NextMsg(10 * time.Second); err != nil {
			t.Fatalf("subscriber on server %d: marker %s: %v", i+1, marker, err)
		}
		n, _, _ := a.sub.Pending()
		if want == "" {
			if n != 0 {
				t.Fatalf("subscriber on server %d received %d more results", i+1, n)
			}
			continue
		}
		if n != 1 {
			t.Fatalf("subscriber on server %d received %d results, want 1", i+1, n)
		}
		m, _ := a.sub.NextMsg(0)
		var r messages.Result
		if err := json.Unmarshal(m.Data, &r); err != nil || string(r.Body) != `"`+want+`"` {
			t.Fatalf("subscriber on server %d received %s, want the stored %q", i+1, m.Data, want)
		}
	}
}

// On a replicated results stream (R3, as a hub runs it), answers for one
// call published at once through every server: exactly one is stored and
// reaches every subscriber, on every server; the others are refused by
// the servers. After the stream's leader is restarted on its store, new
// answers for the call, de-duplicated or not, are refused, and reach no
// subscriber.
func TestReplicatedResultsStreamRefusesASecondResult(t *testing.T) {
	c := startAnswersCluster(t)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cfg := config.Streams{Replicas: 3, ResultsMaxAge: time.Hour, DuplicateWindow: time.Minute, DeadLetterMaxAge: time.Hour, UsageMaxAge: time.Hour, MaxWaiting: 1000}
	js0, err := jetstream.New(c.connect(0))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := streams.Ensure(ctx, js0, cfg); err != nil {
		t.Fatal(err)
	}
	var as []*answerer
	for i := range c.servers {
		as = append(as, newAnswerer(t, c.connect(i), "call-1", "marker-1"))
	}

	// Twelve different answers at once, four through each server.
	var wg sync.WaitGroup
	errs := make([]error, 12)
	for k := range errs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs[k] = answerWithID(ctx, as[k%3].js, "call-1", fmt.Sprintf("answer-%d", k), fmt.Sprintf("msg-%d", k))
		}()
	}
	wg.Wait()
	winner := -1
	for k, err := range errs {
		switch {
		case err == nil && winner >= 0:
			t.Fatalf("answers %d and %d were both stored", winner, k)
		case err == nil:
			winner = k
		case !refusedByTheStream(err):
			t.Fatalf("answer %d: %v, want stored or refused by the stream", k, err)
		}
	}
	if winner < 0 {
		t.Fatal("no answer was stored")
	}
	want := fmt.Sprintf("answer-%d", winner)
	// Answer, for a call answered already: not stored, not an error.
	if stored, err := as[1].pub.Answer(ctx, &messages.Result{ID: "call-1", Team: "demo", Body: json.RawMessage(`"late"`)}); err != nil || stored {
		t.Fatalf("Answer for a call answered already: stored %v, %v", stored, err)
	}
	receivedOnce(t, ctx, as, "marker-1", want)

	// Restart the stream's leader on its store.
	var leader int
	waitUntil(t, "SLUICE_RESULTS has a leader", 30*time.Second, func() bool {
		leader = c.streamLeader(js0, messages.StreamResults)
		return leader >= 0
	})
	t.Logf("restarting %s, the leader of SLUICE_RESULTS", c.servers[leader].Name())
	c.restart(leader)
	other := (leader + 1) % 3
	jsOther, err := jetstream.New(c.connect(other))
	if err != nil {
		t.Fatal(err)
	}
	waitUntil(t, "SLUICE_RESULTS current on all three servers", 60*time.Second, func() bool {
		return allCurrent(jsOther, messages.StreamResults)
	})
	as = as[:0]
	for i := range c.servers {
		as = append(as, newAnswerer(t, c.connect(i), "call-1", "marker-2"))
	}
	for i, a := range as {
		if stored, err := a.pub.Answer(ctx, &messages.Result{ID: "call-1", Team: "demo", Body: json.RawMessage(`"after the restart"`)}); err != nil || stored {
			t.Fatalf("Answer through server %d after the restart: stored %v, %v", i+1, stored, err)
		}
		if err := answerWithID(ctx, a.js, "call-1", "after the restart", fmt.Sprintf("after-%d", i)); !refusedByTheStream(err) {
			t.Fatalf("an answer with a new Nats-Msg-Id through server %d after the restart: %v, want refused", i+1, err)
		}
	}
	receivedOnce(t, ctx, as, "marker-2", "")
	var got *messages.Result
	waitUntil(t, "the stored result on every server", 10*time.Second, func() bool {
		for _, a := range as {
			r, err := results.FetchDirect(ctx, a.nc, "", "demo", "call-1")
			if err != nil || string(r.Body) != `"`+want+`"` {
				got = r
				return false
			}
		}
		return true
	})
	if got != nil && string(got.Body) != `"`+want+`"` {
		t.Fatalf("stored result %s, want %q", got.Body, want)
	}
}

// On a replicated attempts stream, of claims on one attempt made at once
// through every server exactly one succeeds, and after the stream's
// leader is restarted on its store the attempt is still claimed.
func TestReplicatedAttemptClaims(t *testing.T) {
	c := startAnswersCluster(t)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cfg := config.Streams{Replicas: 3, ResultsMaxAge: time.Hour, DuplicateWindow: time.Minute, DeadLetterMaxAge: time.Hour, UsageMaxAge: time.Hour, MaxWaiting: 1000}
	var stores []*attempts.Store
	var jss []jetstream.JetStream
	for i := range c.servers {
		js, err := jetstream.New(c.connect(i))
		if err != nil {
			t.Fatal(err)
		}
		res, err := streams.Ensure(ctx, js, cfg)
		if err != nil {
			t.Fatal(err)
		}
		jss = append(jss, js)
		stores = append(stores, attempts.New(js, res.Attempts))
	}
	var wg sync.WaitGroup
	errs := make([]error, 12)
	for k := range errs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs[k] = stores[k%3].Claim(ctx, "demo", "call-1", 1, 0, attempts.Claim{Deployment: fmt.Sprintf("d-%d", k), Region: "r"})
		}()
	}
	wg.Wait()
	winner := -1
	for k, err := range errs {
		switch {
		case err == nil && winner >= 0:
			t.Fatalf("claims %d and %d both succeeded", winner, k)
		case err == nil:
			winner = k
		case !errors.Is(err, attempts.ErrClaimed):
			t.Fatalf("claim %d: %v, want nil or ErrClaimed", k, err)
		}
	}
	if winner < 0 {
		t.Fatal("no claim succeeded")
	}

	var leader int
	waitUntil(t, "SLUICE_ATTEMPTS has a leader", 30*time.Second, func() bool {
		leader = c.streamLeader(jss[0], messages.StreamAttempts)
		return leader >= 0
	})
	c.restart(leader)
	other := (leader + 1) % 3
	waitUntil(t, "SLUICE_ATTEMPTS current on all three servers", 60*time.Second, func() bool {
		return allCurrent(jss[other], messages.StreamAttempts)
	})
	for i := range c.servers {
		js, err := jetstream.New(c.connect(i))
		if err != nil {
			t.Fatal(err)
		}
		res, err := streams.Open(ctx, js)
		if err != nil {
			t.Fatal(err)
		}
		store := attempts.New(js, res.Attempts)
		if err := store.Claim(ctx, "demo", "call-1", 1, 0, attempts.Claim{Deployment: "late", Region: "r"}); !errors.Is(err, attempts.ErrClaimed) {
			t.Fatalf("a claim through server %d after the restart: %v, want ErrClaimed", i+1, err)
		}
		var got attempts.Claim
		waitUntil(t, "the claim on server "+fmt.Sprint(i+1), 10*time.Second, func() bool {
			got, err = store.Lookup(ctx, "demo", "call-1", 1, 0)
			return err == nil
		})
		if want := fmt.Sprintf("d-%d", winner); got.Deployment != want {
			t.Fatalf("Lookup through server %d: %+v, want deployment %s", i+1, got, want)
		}
	}
}
