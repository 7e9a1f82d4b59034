package test

import (
	"context"
	"errors"
	"fmt"
	"math"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/sluicehq/sluice/messages"
	"github.com/sluicehq/sluice/services/config"
	"github.com/sluicehq/sluice/services/devstack"
	"github.com/sluicehq/sluice/services/dispatcher"
)

// configBucket opens SLUICE_CONFIG on a connection of its own.
func configBucket(t *testing.T, s *devstack.Stack) jetstream.KeyValue {
	t.Helper()
	js, err := jetstream.New(connect(t, s))
	if err != nil {
		t.Fatal(err)
	}
	kv, err := js.KeyValue(context.Background(), messages.BucketConfig)
	if err != nil {
		t.Fatal(err)
	}
	return kv
}

// watchedLive is a configuration kept up to date by its own KV watch on
// its own connection, as a separate dispatcher process keeps its own.
func watchedLive(t *testing.T, s *devstack.Stack) *config.Live {
	t.Helper()
	kv := configBucket(t, s)
	cfg, rev, err := config.Fetch(context.Background(), kv)
	if err != nil {
		t.Fatal(err)
	}
	live := config.NewLive(cfg)
	live.StoreRevision(cfg, rev)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); _ = config.Watch(ctx, kv, live, nil) }()
	t.Cleanup(func() { cancel(); <-done })
	return live
}

// pacer publishes calls at a steady rate until stopped.
type pacer struct {
	mu   sync.Mutex
	ids  []string
	stop chan struct{}
	done chan struct{}
}

func startPacer(t *testing.T, js jetstream.JetStream, rate float64, body func(id string) string) *pacer {
	p := &pacer{stop: make(chan struct{}), done: make(chan struct{})}
	go func() {
		defer close(p.done)
		start := time.Now()
		for i := 0; ; i++ {
			select {
			case <-p.stop:
				return
			case <-time.After(time.Until(start.Add(time.Duration(float64(i) / rate * float64(time.Second))))):
			}
			id := fmt.Sprintf("live-%05d", i)
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			err := publishCall(ctx, js, "demo", "standard", id, body(id))
			cancel()
			if err != nil {
				t.Errorf("publish %s: %v", id, err)
				return
			}
			p.mu.Lock()
			p.ids = append(p.ids, id)
			p.mu.Unlock()
		}
	}()
	return p
}

func (p *pacer) published() []string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return append([]string(nil), p.ids...)
}

func (p *pacer) halt() []string {
	close(p.stop)
	<-p.done
	return p.published()
}

// served is what the fake provider has served per key.
func served(s *devstack.Stack) map[string]int64 {
	out := map[string]int64{}
	for k, c := range s.Fake.Stats().Keys {
		out[k] = c.Served
	}
	return out
}

// Live configuration: lower a limit while calls flow; the new limit holds
// within 2 s, no call is dropped, and bad configurations (refused by
// Apply, or written to KV behind its back) change nothing.
//
// Two dispatchers (one on the stack's watched configuration, one with a
// watch of its own) and an executor per region run a pool of four
// deployments at 1200 RPM each. Calls come at 40/s, well inside that and
// five times what 120 RPM each allows. The limit is lowered to 120 RPM;
// from 2 s after that, what the provider serves on each key over the
// measured window T stays within what the limiter promises for the new
// limit: burst + rate × (T + lease_ttl), plus the time a call takes from
// admission to the provider. Then the limit is raised again, the backlog
// drains, and every call has exactly one result.
func TestLiveConfigurationLowersALimitWhileCallsFlow(t *testing.T) {
	const (
		highRPM = 1200
		lowRPM  = 120
		tpm     = 10_000_000
		rate    = 40.0 // calls per second offered
		settle  = 2 * time.Second
		window  = 3 * time.Second
		// deliverySlack bounds how much later than its admission a call
		// reaches the provider (publish to SLUICE_EXEC, an executor's
		// pull, the HTTP request), generously for -race. Calls admitted
		// just before the window may be served inside it.
		deliverySlack = 250 * time.Millisecond
	)
	s := startStack(t, stackOptions{yaml: twoRegionYAML(highRPM, tpm, layout{})})
	own := watchedLive(t, s)
	startDispatcher(t, s, "d1", nil)
	startDispatcher(t, s, "d2", func(c *dispatcher.Config) { c.Shared = own })
	startExecutors(t, s)
	nc := connect(t, s)
	js, _ := jetstream.New(nc)
	results := watchResults(t, nc, "demo")
	kv := configBucket(t, s)
	ctx := context.Background()

	parse := func(rpm int64) *config.Config {
		cfg, err := config.Parse([]byte(twoRegionYAML(rpm, tpm, layout{})(s.FakeURL)))
		if err != nil {
			t.Fatal(err)
		}
		return cfg
	}
	secrets := devstack.DevSecrets(s.Shared.Load())

	p := startPacer(t, js, rate, func(id string) string { return chatCall(id, "m", 10, "") })
	time.Sleep(time.Second)

	low := parse(lowRPM)
	applied := time.Now()
	lowRev, err := config.Apply(ctx, kv, low)
	if err != nil {
		t.Fatal(err)
	}

	// Bad input meanwhile: Apply refuses it, naming the field; a value
	// written behind its back is ignored by every watcher.
	bad := parse(lowRPM)
	bad.Pools["m"].Deployments[1].RPM = 0
	bad.Pools["m"].Deployments[2].Provider = "nope"
	if _, err := config.Apply(ctx, kv, bad); !errors.Is(err, config.ErrInvalid) {
		t.Fatalf("Apply of a configuration with rpm 0 and an unknown provider: %v, want ErrInvalid", err)
	}
	if _, err := kv.PutString(ctx, config.Key, "pools: {m: {deployments: []}}\nteams: {demo: {}}\n"); err != nil {
		t.Fatal(err)
	}
	if _, rev, err := config.Fetch(ctx, kv); err != nil || rev != lowRev {
		t.Fatalf("after bad input, the live configuration is revision %d (err %v), want %d", rev, err, lowRev)
	}

	time.Sleep(time.Until(applied.Add(settle)))
	before, t1 := served(s), time.Now()
	time.Sleep(window)
	after, t2 := served(s), time.Now()
	published := p.published()
	backlog := len(results.missing(published))

	for name, l := range map[string]*config.Live{"the stack's": s.Shared, "d2's own": own} {
		if l.Revision() != lowRev {
			t.Errorf("%s configuration is revision %d, want %d", name, l.Revision(), lowRev)
		}
	}
	// The bound of the new limit over the measured window.
	T := t2.Sub(t1)
	var total int64
	for _, dep := range low.Pools["m"].Deployments {
		perSecond := float64(dep.RPM) / 60
		burst := math.Max(1, perSecond*low.Admission.Burst.Seconds())
		bound := int64(math.Floor(burst + perSecond*(T+low.Admission.LeaseTTL+deliverySlack).Seconds()))
		got := after[secrets[dep.Key]] - before[secrets[dep.Key]]
		total += got
		t.Logf("%s: %d served in %s from %s after the change (bound %d at %d RPM)", dep.ID, got, T.Round(time.Millisecond), t1.Sub(applied).Round(time.Millisecond), bound, dep.RPM)
		if got > bound {
			t.Errorf("%s: %d calls served in %s starting %s after the limit was lowered to %d RPM; the bound is %d",
				dep.ID, got, T.Round(time.Millisecond), t1.Sub(applied).Round(time.Millisecond), dep.RPM, bound)
		}
	}
	if total == 0 {
		t.Errorf("no call was served in the window: the lowered limit should slow calls, not stop them")
	}
	// Demand was above the new limit, so calls were waiting: the limit,
	// not the demand, is what the window measured.
	if backlog == 0 {
		t.Errorf("no call was waiting at the end of the window: demand did not exceed the lowered limit")
	}
	t.Logf("%d calls published, %d without a result at the end of the window", len(published), backlog)

	// Raise it again: the backlog drains, every call gets exactly one result.
	if _, err := config.Apply(ctx, kv, parse(highRPM)); err != nil {
		t.Fatal(err)
	}
	ids := p.halt()
	results.waitFor(t, ids, 60*time.Second)
	for id, r := range results.exactlyOnce(t, ids) {
		if r.Outcome() != "ok" {
			t.Errorf("call %s ended %s: %+v", id, r.Outcome(), r.Error)
		}
	}
	if st := s.Fake.Stats().Total; st.Refused() != 0 {
		t.Errorf("the provider refused %d calls", st.Refused())
	}
}

// A deployment removed from the configuration loses its state and limit
// series, so that an alert on a deployment that no longer exists stops.
func TestLiveConfigurationDropsRemovedDeploymentsMetrics(t *testing.T) {
	s := startStack(t, stackOptions{yaml: twoRegionYAML(600, 100_000, layout{})})
	reg := prometheus.NewRegistry()
	startDispatcher(t, s, "d1", func(c *dispatcher.Config) { c.Registerer = reg })
	series := func(deployment string) int {
		families, err := reg.Gather()
		if err != nil {
			t.Fatal(err)
		}
		n := 0
		for _, f := range families {
			if f.GetName() != "sluice_deployment_state" && f.GetName() != "sluice_deployment_limit" {
				continue
			}
			for _, m := range f.GetMetric() {
				for _, l := range m.GetLabel() {
					if l.GetName() == "deployment" && l.GetValue() == deployment {
						n++
					}
				}
			}
		}
		return n
	}
	waitUntil(t, "eu-west-2's gauges", 10*time.Second, func() bool { return series("eu-west-2") > 0 })

	cfg, err := config.Parse([]byte(twoRegionYAML(600, 100_000, layout{})(s.FakeURL)))
	if err != nil {
		t.Fatal(err)
	}
	deps := cfg.Pools["m"].Deployments
	cfg.Pools["m"].Deployments = deps[:len(deps)-1] // drops eu-west-2
	if _, err := config.Apply(context.Background(), configBucket(t, s), cfg); err != nil {
		t.Fatal(err)
	}
	waitUntil(t, "eu-west-2's gauges to go", 10*time.Second, func() bool { return series("eu-west-2") == 0 })
	if series("eu-west-1") == 0 {
		t.Error("eu-west-1, still configured, lost its gauges too")
	}
}
