//go:build linux

package test

// The harness of the fault tests (faults_test.go): one nats-server and
// sluice's services as separate processes, built from the module (see
// clusterBinaries), so that a test can kill any of them with SIGKILL and
// start it again; and the fake provider in the test process, so that the
// test counts what reached the provider: requests per call id, and per
// key in every 1 s and 60 s window.

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/sluicehq/sluice/messages"
	"github.com/sluicehq/sluice/services/fakeprovider"
	"github.com/sluicehq/sluice/services/results"
)

// faultRegions are the regions of a fault stack, each served by two keys.
var faultRegions = []string{"us-east", "eu-west"}

// faultStack is one nats-server, dispatchers and executors as processes,
// and a fake provider.
type faultStack struct {
	t         *testing.T
	dir       string
	sluiceBin string
	natsURL   string
	nats      *clusterProc
	fake      *fakeprovider.Server
	fakeURL   string
	// secrets maps each key name of the configuration to its secret.
	secrets    map[string]string
	configPath string
	rpm        int64
	// arrivals is what reached the provider (see faults_arrivals_test.go),
	// its times counted from started.
	arrivals *arrivalLog
	started  time.Time

	mu          sync.Mutex
	dispatchers map[string]*clusterProc
	executors   map[string][]*clusterProc
}

// faultOptions tune a fault stack.
type faultOptions struct {
	rpm     int64 // per key
	latency time.Duration
	// key is each key's enforcement on the fake provider; its RPM and TPM
	// are filled in from rpm.
	key fakeprovider.KeyConfig
}

// startFaultStack starts nats-server with JetStream on a store of its
// own, and the fake provider.
func startFaultStack(t *testing.T, o faultOptions) *faultStack {
	t.Helper()
	natsBin, sluiceBin := clusterBinaries(t)
	s := &faultStack{
		t: t, dir: t.TempDir(), sluiceBin: sluiceBin, rpm: o.rpm,
		secrets:     map[string]string{},
		dispatchers: map[string]*clusterProc{},
		executors:   map[string][]*clusterProc{},
	}
	port := freePorts(t, 1)[0]
	s.natsURL = fmt.Sprintf("nats://127.0.0.1:%d", port)
	s.nats = &clusterProc{
		name: "nats-server", bin: natsBin, log: filepath.Join(s.dir, "nats-server.log"),
		args: []string{"-a", "127.0.0.1", "-p", fmt.Sprint(port), "-js", "-sd", filepath.Join(s.dir, "store")},
	}
	s.nats.start(t)
	t.Cleanup(s.stopAll)
	s.waitNATS(30 * time.Second)

	keys := map[string]fakeprovider.KeyConfig{}
	for _, r := range faultRegions {
		for k := 1; k <= 2; k++ {
			buf := make([]byte, 12)
			_, _ = rand.Read(buf)
			secret := "sk-" + r + "-" + hex.EncodeToString(buf)
			s.secrets[faultKeyName(r, k)] = secret
			kc := o.key
			kc.RPM, kc.TPM = o.rpm, 10_000_000
			keys[secret] = kc
		}
	}
	fake, err := fakeprovider.New(fakeprovider.Config{Keys: keys, Latency: o.latency})
	if err != nil {
		t.Fatal(err)
	}
	s.arrivals, s.started = newArrivalLog(s.secrets), time.Now()
	srv := httptest.NewServer(s.arrivals.wrap(fake))
	t.Cleanup(srv.Close)
	t.Cleanup(func() { _ = fake.Close() })
	s.fake, s.fakeURL = fake, srv.URL
	s.writeConfig()
	return s
}

func faultKeyName(region string, k int) string {
	return fmt.Sprintf("KEY_%s_%d", strings.ToUpper(strings.ReplaceAll(region, "-", "_")), k)
}

// writeConfig writes pool m of two regions x two keys, with team demo,
// and the jitter this loaded machine needs.
func (s *faultStack) writeConfig() {
	var b strings.Builder
	b.WriteString("pools:\n  m:\n    deployments:\n")
	for _, r := range faultRegions {
		for k := 1; k <= 2; k++ {
			fmt.Fprintf(&b, "      - {id: %s-%d, provider: openai, base_url: %q, region: %s, key: %s, rpm: %d, tpm: 10000000}\n",
				r, k, s.fakeURL+"/v1", r, faultKeyName(r, k), s.rpm)
		}
	}
	b.WriteString("teams:\n  demo: {}\n")
	// Four of these stacks, each a nats-server and five or six sluice
	// processes built with -race, share two cores in CI: a request can
	// reach the provider tens of milliseconds after its send time. That
	// is what admission.jitter declares, and the schedules leave room for
	// it (at 5% of the rate); the default 10ms is for a machine that is
	// not this loaded.
	fmt.Fprintf(&b, "admission:\n  jitter: %s\n", faultJitter)
	s.configPath = filepath.Join(s.dir, "sluice.yaml")
	if err := os.WriteFile(s.configPath, []byte(b.String()), 0o600); err != nil {
		s.t.Fatal(err)
	}
}

// waitNATS waits until the server answers.
func (s *faultStack) waitNATS(timeout time.Duration) {
	s.t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		nc, err := nats.Connect(s.natsURL, nats.Timeout(time.Second))
		if err == nil {
			nc.Close()
			return
		}
		if !s.nats.running() || time.Now().After(deadline) {
			s.t.Fatalf("nats-server does not answer (%v):\n%s", err, s.nats.tail(20))
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// startDispatcher starts `sluice dispatcher` as id.
func (s *faultStack) startDispatcher(id string) *clusterProc {
	s.t.Helper()
	p := &clusterProc{
		name: "dispatcher-" + id, bin: s.sluiceBin, log: filepath.Join(s.dir, "dispatcher-"+id+".log"),
		args: []string{"dispatcher", "--server", s.natsURL, "--config", s.configPath, "--id", id, "--metrics", ""},
	}
	p.start(s.t)
	p.waitLog(s.t, "dispatcher started", 30*time.Second)
	s.mu.Lock()
	s.dispatchers[id] = p
	s.mu.Unlock()
	return p
}

// startExecutor starts one more `sluice executor` of region.
func (s *faultStack) startExecutor(region string) *clusterProc {
	s.t.Helper()
	s.mu.Lock()
	n := len(s.executors[region]) + 1
	s.mu.Unlock()
	secrets := filepath.Join(s.dir, "secrets-"+region+".yaml")
	var b strings.Builder
	for k := 1; k <= 2; k++ {
		fmt.Fprintf(&b, "%s: %s\n", faultKeyName(region, k), s.secrets[faultKeyName(region, k)])
	}
	if err := os.WriteFile(secrets, []byte(b.String()), 0o600); err != nil {
		s.t.Fatal(err)
	}
	name := fmt.Sprintf("executor-%s-%d", region, n)
	p := &clusterProc{
		name: name, bin: s.sluiceBin, log: filepath.Join(s.dir, name+".log"),
		args: []string{"executor", "--server", s.natsURL, "--region", region, "--secrets", secrets, "--metrics", "", "--concurrency", "32"},
	}
	p.start(s.t)
	p.waitLog(s.t, "executor started", 30*time.Second)
	s.mu.Lock()
	s.executors[region] = append(s.executors[region], p)
	s.mu.Unlock()
	return p
}

// stopAll stops every process, the server last.
func (s *faultStack) stopAll() {
	s.mu.Lock()
	var procs []*clusterProc
	for _, p := range s.dispatchers {
		procs = append(procs, p)
	}
	for _, ps := range s.executors {
		procs = append(procs, ps...)
	}
	s.mu.Unlock()
	for _, p := range procs {
		if p.running() {
			p.kill()
		}
	}
	if s.nats.running() {
		s.nats.kill()
	}
	if s.t.Failed() {
		for _, p := range append(procs, s.nats) {
			s.t.Logf("---- %s:\n%s", p.name, p.tail(15))
		}
	}
}

// connect connects a client that rides out the server's restarts.
func (s *faultStack) connect() *nats.Conn {
	s.t.Helper()
	nc, err := nats.Connect(s.natsURL, nats.MaxReconnects(-1), nats.ReconnectWait(100*time.Millisecond))
	if err != nil {
		s.t.Fatal(err)
	}
	s.t.Cleanup(nc.Close)
	return nc
}

// faultLoad publishes calls as team demo at a steady rate, each until
// JetStream accepts it, and remembers which were accepted.
type faultLoad struct {
	wg       sync.WaitGroup
	mu       sync.Mutex
	accepted []string
	stop     chan struct{}
	stopped  chan struct{}
}

// startFaultLoad publishes one call every interval until halt; extra is
// added to each call's JSON (e.g. `,"regions":["us-east"]` for some).
func startFaultLoad(ctx context.Context, t *testing.T, js jetstream.JetStream, prefix string, interval time.Duration, extra func(i int) string) *faultLoad {
	l := &faultLoad{stop: make(chan struct{}), stopped: make(chan struct{})}
	go func() {
		defer close(l.stopped)
		tick := time.NewTicker(interval)
		defer tick.Stop()
		for i := 0; ; i++ {
			select {
			case <-l.stop:
				return
			case <-tick.C:
			}
			id := fmt.Sprintf("%s-%05d", prefix, i)
			body := chatCall(id, "m", 8, `,"timeout_ms":600000`+extra(i))
			l.wg.Add(1)
			go func() {
				defer l.wg.Done()
				pubCtx, cancel := context.WithTimeout(ctx, time.Minute)
				defer cancel()
				if err := publishCallUntilAccepted(pubCtx, js, "demo", "standard", id, body, nil); err != nil {
					t.Errorf("call %s was never accepted: %v", id, err)
					return
				}
				l.mu.Lock()
				l.accepted = append(l.accepted, id)
				l.mu.Unlock()
			}()
		}
	}()
	return l
}

// halt stops publishing and returns the ids JetStream accepted.
func (l *faultLoad) halt() []string {
	close(l.stop)
	<-l.stopped
	l.wg.Wait()
	l.mu.Lock()
	defer l.mu.Unlock()
	return append([]string(nil), l.accepted...)
}

// checkExact waits for every call's result and checks what the issue
// names: each call got exactly one result, as a subscriber receives them,
// and it is ok; each says as many attempts as the provider received
// requests for its call; and what reached each key stayed inside its
// limits in every 1 s and 60 s window, with no 429.
//
// A subscriber that was reconnecting when a result went by misses it, as
// any NATS subscriber would: like a client (services/client), the test
// then fetches it from SLUICE_RESULTS, and counts it received once.
func (s *faultStack) checkExact(t *testing.T, log *resultLog, ids []string, timeout time.Duration) map[string]messages.Result {
	t.Helper()
	if len(ids) == 0 {
		t.Fatal("no call was accepted")
	}
	s.awaitResults(t, log, ids, timeout)
	defer func() {
		if t.Failed() {
			s.t.Logf("provider: %+v", s.fake.Stats().Total)
		}
	}()
	// A second result would come within the redelivery of a dispatcher
	// or an executor (their AckWait): wait for it to show itself, if any.
	time.Sleep(2 * time.Second)
	got := log.exactlyOnce(t, ids)
	requests := s.fake.RequestsByCallID()
	extra, lost := 0, 0
	for id, r := range got {
		if r.Status != messages.StatusOK {
			t.Errorf("call %s: %s %+v", id, r.Status, r.Error)
		}
		switch n := requests[id]; {
		case int64(r.Attempts) == n:
		case int64(r.Attempts) > n:
			lost++
			t.Errorf("call %s: result says %d attempts, the provider got %d requests", id, r.Attempts, n)
		default:
			extra++
			t.Errorf("call %s: the provider got %d requests, the result says %d attempts", id, n, r.Attempts)
		}
	}
	st := s.fake.Stats()
	perSecond := (s.rpm + 59) / 60
	for key, c := range st.Keys {
		if c.MaxRequests1s > perSecond || c.MaxRequests60s > s.rpm {
			t.Errorf("key %s: %d requests in one second (limit %d), %d in a minute (limit %d)",
				redactKey(key), c.MaxRequests1s, perSecond, c.MaxRequests60s, s.rpm)
		}
	}
	// No 429, but where a request reached the provider later than the
	// bound allows for (see faults_arrivals_test.go).
	js, _ := jetstream.New(s.connect())
	for _, r := range s.arrivals.refusals(s.started, s.started, faultJitter+claimLeadBound, claimTimes(js, "demo")) {
		if r.late > 0 {
			t.Logf("a request reached the provider %v later than admission.jitter after its send time (this machine was busy), and one 429 followed:\n%s", r.late.Round(time.Millisecond), r.evidence)
			continue
		}
		t.Errorf("the provider refused a request though every request of its window arrived on time:\n%s", r.evidence)
	}
	var counted int64
	for _, n := range requests {
		counted += n
	}
	t.Logf("%d calls, each answered once; %d provider requests, %d of them with a call id (%d calls with more requests than attempts, %d with fewer); %d refused",
		len(got), st.Total.Received, counted, extra, lost, st.Total.Refused())
	return got
}

// awaitResults waits until every id has a result, received or, for a
// result missed while the subscriber reconnected, fetched; or fails.
func (s *faultStack) awaitResults(t *testing.T, log *resultLog, ids []string, timeout time.Duration) {
	t.Helper()
	nc := s.connect()
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(timeout)
	fetched := 0
	for {
		missing := log.missing(ids)
		if len(missing) == 0 {
			if fetched > 0 {
				t.Logf("%d results were fetched: they went by while the subscriber reconnected", fetched)
			}
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d of %d calls have no result after %s (e.g. %v)", len(missing), len(ids), timeout, missing[:min(3, len(missing))])
		}
		for _, id := range missing {
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			r, err := results.Fetch(ctx, js, "demo", id)
			cancel()
			// Fetched only once it has been stored a while: a result on its
			// way to the subscriber is left to arrive.
			if err == nil && time.Since(r.Timings.FinishedAt) > 5*time.Second && len(log.missing([]string{id})) == 1 {
				log.record(*r)
				fetched++
			}
		}
		select {
		case <-log.arrived:
		case <-time.After(time.Second):
		}
	}
}
