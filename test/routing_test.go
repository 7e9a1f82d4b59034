package test

import (
	"fmt"
	"math"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/sluicehq/sluice/messages"
	"github.com/sluicehq/sluice/services/devstack"
	"github.com/sluicehq/sluice/services/executor"
	"github.com/sluicehq/sluice/services/fakeprovider"
)

// dep describes one deployment of pool "m" for poolYAML.
type dep struct {
	id, region, url string // url "" means the stack's fake provider
	rpm, tpm        int64
}

// poolYAML is pool "m" made of deps, team "demo", and more.
func poolYAML(deps []dep, more layout) func(string) string {
	return func(fakeURL string) string {
		var b strings.Builder
		b.WriteString("pools:\n  m:\n    deployments:\n")
		for _, d := range deps {
			url := d.url
			if url == "" {
				url = fakeURL
			}
			fmt.Fprintf(&b, "      - {id: %s, provider: openai, base_url: %q, region: %s, key: KEY_%s, rpm: %d, tpm: %d}\n",
				d.id, url+"/v1", d.region, strings.ToUpper(strings.ReplaceAll(d.id, "-", "_")), d.rpm, d.tpm)
		}
		b.WriteString(more.pools)
		b.WriteString("teams:\n  demo: {}\n")
		b.WriteString(more.teams)
		b.WriteString(more.top)
		return b.String()
	}
}

// servedBy counts the fake provider's served calls per deployment.
func servedBy(s *devstack.Stack, fake *fakeprovider.Server, ids ...string) map[string]int64 {
	secrets := devstack.DevSecrets(s.Shared.Load())
	st := fake.Stats()
	out := map[string]int64{}
	for _, id := range ids {
		d, _ := s.Shared.Load().Deployment(id)
		out[id] = st.Keys[secrets[d.Key]].Served
	}
	return out
}

// Two regions with different limits and demand above their total: traffic
// splits in proportion to the limits, and the provider refuses nothing.
// What each deployment took is what it served and the work handed back
// late on it (its slot was taken; a busy machine lost it: see
// accuracy_watch_test.go).
func TestTrafficSplitsByHeadroom(t *testing.T) {
	deps := []dep{
		{id: "us-1", region: "us-east", rpm: 1800, tpm: 1_000_000},
		{id: "us-2", region: "us-east", rpm: 1800, tpm: 1_000_000},
		{id: "eu-1", region: "eu-west", rpm: 600, tpm: 1_000_000},
		{id: "eu-2", region: "eu-west", rpm: 600, tpm: 1_000_000},
	}
	s := startStack(t, stackOptions{yaml: poolYAML(deps, layout{})})
	late := watchLate(t, s)
	startDispatcher(t, s, "d1", nil)
	startDispatcher(t, s, "d2", nil)
	startExecutors(t, s)
	js, _ := jetstream.New(connect(t, s))

	const capacity = 80.0 // per second: 30 + 30 + 10 + 10
	publishPaced(t, js, int(1.5*capacity*10), 1.5*capacity, func(id string) string {
		return chatCall(id, "m", 5, `,"timeout_ms":60000`)
	})
	// Capacity used is counted from the first call the provider served,
	// not from the first publish: a start of the run on a busy machine
	// (the first admissions, an executor's first pull) is not the split.
	st := s.Fake.Stats()
	served := servedBy(s, s.Fake, "us-1", "us-2", "eu-1", "eu-2")
	var first, last time.Time
	for _, c := range st.Keys {
		if c.Served == 0 {
			continue
		}
		if first.IsZero() || c.FirstServed.Before(first) {
			first = c.FirstServed
		}
		if c.LastServed.After(last) {
			last = c.LastServed
		}
	}
	took := map[string]int64{}
	var total int64
	for _, d := range deps {
		took[d.id] = served[d.id] + late.on(d.id)
		total += took[d.id]
		judgeLate(t, d.id, served[d.id], late.on(d.id))
	}
	elapsed := last.Sub(first).Seconds()
	t.Logf("served %v, took %v with the work handed back late, in %.1fs: %.0f%% of capacity", served, took, elapsed, 100*float64(total)/(capacity*elapsed))
	if refused := st.Total.Refused(); refused != 0 {
		t.Fatalf("provider refused %d", refused)
	}
	for _, d := range deps {
		want := float64(d.rpm) / 60 / capacity
		got := float64(took[d.id]) / float64(total)
		if math.Abs(got-want) > 0.1*want {
			t.Errorf("%s took %.1f%% of the calls, want %.1f%% (its share of the capacity) within 10%%", d.id, 100*got, 100*want)
		}
	}
	if float64(total) < 0.9*capacity*elapsed {
		t.Errorf("used %.0f%% of capacity", 100*float64(total)/(capacity*elapsed))
	}
}

// The provider allows a quarter of what is configured and says so in its
// rate-limit headers: sluice learns the real limit within seconds, 429s
// stop, and what it sends settles near the provider's real limit.
func TestLearnsALowerLimitFromHeaders(t *testing.T) {
	s := startStack(t, stackOptions{yaml: twoRegionYAML(1200, 1_000_000, layout{})})
	secrets := devstack.DevSecrets(s.Shared.Load())
	for _, d := range s.Shared.Load().Pools["m"].Deployments {
		if err := s.Fake.SetKey(secrets[d.Key], fakeprovider.KeyConfig{RPM: 300, TPM: 1_000_000}); err != nil {
			t.Fatal(err)
		}
	}
	startDispatcher(t, s, "d1", nil)
	startDispatcher(t, s, "d2", nil)
	startExecutors(t, s)
	js, _ := jetstream.New(connect(t, s))

	const real = 4 * 300 / 60.0 // 20 calls/s really allowed
	var early fakeprovider.Counters
	go func() {
		time.Sleep(3 * time.Second)
		early = s.Fake.Stats().Total
	}()
	start := time.Now()
	publishPaced(t, js, 8*40, 40, func(id string) string { return chatCall(id, "m", 5, `,"timeout_ms":60000`) })
	late := s.Fake.Stats().Total
	window := time.Since(start).Seconds() - 3
	rate := float64(late.Served-early.Served) / window
	t.Logf("429s in the first 3 s: %d, after: %d; served %.1f/s after 3 s (provider allows %.0f/s)",
		early.Refused(), late.Refused()-early.Refused(), rate, real)
	if late.Refused() != early.Refused() {
		t.Errorf("%d 429s after the first 3 s; sluice should have learned the limit", late.Refused()-early.Refused())
	}
	if rate < 0.85*real || rate > 1.1*real {
		t.Errorf("served %.1f/s after learning; want near the provider's %.0f/s", rate, real)
	}
}

// Calls restricted to a region are never served elsewhere, even when that
// region is saturated and the other idle: they wait, or meet their deadline.
func TestRegionRestrictionHolds(t *testing.T) {
	deps := []dep{
		{id: "us-1", region: "us-east", rpm: 6000, tpm: 1_000_000},
		{id: "eu-1", region: "eu-west", rpm: 60, tpm: 1_000_000}, // one call a second
	}
	s := startStack(t, stackOptions{yaml: poolYAML(deps, layout{})})
	startDispatcher(t, s, "d1", nil)
	startExecutors(t, s)
	nc := connect(t, s)
	js, _ := jetstream.New(nc)
	log := watchResults(t, nc, "demo")
	var ids []string
	for i := 0; i < 6; i++ {
		id := fmt.Sprintf("eu-only-%d", i)
		ids = append(ids, id)
		if err := publishCall(t.Context(), js, "demo", "standard", id, chatCall(id, "m", 5, `,"regions":["eu-west"],"timeout_ms":2500`)); err != nil {
			t.Fatal(err)
		}
	}
	log.waitFor(t, ids, 30*time.Second)
	outcomes := map[string]int{}
	for _, r := range log.exactlyOnce(t, ids) {
		outcomes[r.Outcome()]++
		if r.Status == messages.StatusOK && r.Region != "eu-west" {
			t.Errorf("call %s restricted to eu-west was served in %s", r.ID, r.Region)
		}
	}
	if served := servedBy(s, s.Fake, "us-1")["us-1"]; served != 0 {
		t.Fatalf("us-east served %d restricted calls", served)
	}
	if outcomes["ok"] == 0 || outcomes[string(messages.CodeDeadlineExceeded)] == 0 {
		t.Fatalf("outcomes %v: some calls fit eu-west in time, the others must wait and meet their deadline", outcomes)
	}
	// Preference is not restriction: prefer eu-west, but go to us-east when
	// eu-west is saturated.
	var preferred []string
	for i := 0; i < 6; i++ {
		id := fmt.Sprintf("prefer-eu-%d", i)
		preferred = append(preferred, id)
		if err := publishCall(t.Context(), js, "demo", "standard", id, chatCall(id, "m", 5, `,"prefer_regions":["eu-west"],"timeout_ms":20000`)); err != nil {
			t.Fatal(err)
		}
	}
	log.waitFor(t, preferred, 30*time.Second)
	regions := map[string]int{}
	for _, r := range log.exactlyOnce(t, append(ids, preferred...)) {
		if strings.HasPrefix(r.ID, "prefer-") {
			regions[r.Region]++
		}
	}
	if regions["us-east"] == 0 || regions["us-east"]+regions["eu-west"] != len(preferred) {
		t.Fatalf("preferred calls by region: %v", regions)
	}
}

// One region starts failing, with 5xx and then timeouts: its circuit
// opens, calls flow to the other region, none is lost, retries stay within
// the budget, and the region gets traffic again when it recovers.
func TestFailingRegionIsRoutedAround(t *testing.T) {
	euFake, err := fakeprovider.New(fakeprovider.Config{AcceptAnyKey: true, DefaultKey: fakeprovider.KeyConfig{RPM: 6000, TPM: 1_000_000}})
	if err != nil {
		t.Fatal(err)
	}
	eu := httptest.NewServer(euFake)
	defer eu.Close()
	defer euFake.Close()
	deps := []dep{
		{id: "us-1", region: "us-east", rpm: 3000, tpm: 1_000_000},
		{id: "us-2", region: "us-east", rpm: 3000, tpm: 1_000_000},
		{id: "eu-1", region: "eu-west", url: eu.URL, rpm: 3000, tpm: 1_000_000},
		{id: "eu-2", region: "eu-west", url: eu.URL, rpm: 3000, tpm: 1_000_000},
	}
	const openFor = 2 * time.Second
	s := startStack(t, stackOptions{yaml: poolYAML(deps, layout{top: fmt.Sprintf(`retry: {max_attempts: 5, base_delay: 50ms, max_delay: 500ms, attempt_timeout: 300ms}
health: {circuit: {failure_rate: 0.5, min_requests: 5, window: 5s, open_for: %s, probes: 1}}
`, openFor)})})
	startDispatcher(t, s, "d1", nil)
	for _, r := range []string{"us-east", "eu-west"} {
		startExecutor(t, s, r, func(c *executor.Config) { c.Concurrency = 256 })
	}
	nc := connect(t, s)
	js, _ := jetstream.New(nc)
	log := watchResults(t, nc, "demo")

	// 40 calls/s for 16 s: 4 s healthy, 4 s of 5xx, 4 s of timeouts, 4 s healthy.
	type phase struct {
		name     string
		received int64
	}
	var mu sync.Mutex
	var phases []phase
	mark := func(name string) {
		mu.Lock()
		defer mu.Unlock()
		phases = append(phases, phase{name, euFake.Stats().Total.Received})
	}
	go func() {
		mark("healthy")
		time.Sleep(4 * time.Second)
		_ = euFake.SetErrorRate(1)
		mark("5xx")
		time.Sleep(4 * time.Second)
		_ = euFake.SetErrorRate(0)
		_ = euFake.SetTimeoutRate(1)
		mark("timeouts")
		time.Sleep(4 * time.Second)
		_ = euFake.SetTimeoutRate(0)
		mark("recovered")
	}()
	ids := publishPaced(t, js, 16*40, 40, func(id string) string { return chatCall(id, "m", 5, `,"timeout_ms":60000`) })
	mark("end")
	log.waitFor(t, ids, 60*time.Second)
	attempts := 0
	for id, r := range log.exactlyOnce(t, ids) {
		if r.Status != messages.StatusOK {
			t.Errorf("call %s: %+v", id, r.Error)
		}
		attempts += r.Attempts
	}
	mu.Lock()
	defer mu.Unlock()
	got := map[string]int64{}
	for i := 0; i+1 < len(phases); i++ {
		got[phases[i].name] = phases[i+1].received - phases[i].received
	}
	retries := attempts - len(ids)
	t.Logf("eu-west requests by phase %v; %d retries for %d calls", got, retries, len(ids))
	// While failing, eu-west gets what it takes to open the circuit, and
	// then only probes: far less than its share of 4 s of traffic (80).
	for _, name := range []string{"5xx", "timeouts"} {
		if got[name] > 30 {
			t.Errorf("eu-west got %d requests while failing with %s; its circuit should have opened", got[name], name)
		}
	}
	if got["recovered"] < 20 {
		t.Errorf("eu-west got %d requests after recovering; its circuit should have closed", got["recovered"])
	}
	// Retries: at most 20% of first attempts plus one a second.
	if budget := 0.2*float64(len(ids)) + 16; float64(retries) > budget {
		t.Errorf("%d retries, over the budget of %.0f", retries, budget)
	}
}
