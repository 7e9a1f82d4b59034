package bench

import (
	"context"
	"encoding/json"
	"fmt"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/sluicehq/sluice/messages"
	"github.com/sluicehq/sluice/services/devstack"
	"github.com/sluicehq/sluice/services/fakeprovider"
)

// FairnessOptions configure the fairness run: three teams share one pool
// at three times its capacity.
type FairnessOptions struct {
	// Duration of the demand. Default 60s.
	Duration time.Duration
	// Dispatchers sharing the pool. Default 2.
	Dispatchers int
}

// FairnessReport is what the fairness run measured.
type FairnessReport struct {
	Machine     Machine     `json:"machine"`
	Seconds     float64     `json:"seconds"`
	Dispatchers int         `json:"dispatchers"`
	Capacity    float64     `json:"capacity_per_second"`
	Offered     float64     `json:"offered_per_second"`
	Teams       []TeamShare `json:"teams"`
	// CriticalWaitP50MS and P99 are the admission waits of critical calls.
	CriticalWaitP50MS float64 `json:"critical_wait_p50_ms"`
	CriticalWaitP99MS float64 `json:"critical_wait_p99_ms"`
	// ScheduleMicrosPerCall is the dispatchers' time in admission passes
	// per call admitted.
	ScheduleMicrosPerCall float64 `json:"schedule_us_per_call"`
	Refused               int64   `json:"provider_429s"`
}

// TeamShare is one team's part of the pool.
type TeamShare struct {
	Team        string        `json:"team"`
	Tier        messages.Tier `json:"tier"`
	Weight      float64       `json:"weight"`
	Offered     float64       `json:"offered_per_second"`
	Served      float64       `json:"served_per_second"`
	Share       float64       `json:"share"`
	Entitlement float64       `json:"entitlement"`
}

// fairTeam is one team of the fairness run.
type fairTeam struct {
	team   string
	tier   messages.Tier
	weight float64
	demand float64 // fraction of capacity
}

// fairnessTeams: a small critical flow, and two standard teams at 3:1
// that each want more than the whole pool.
var fairnessTeams = []fairTeam{
	{"search", messages.TierCritical, 1, 0.1},
	{"chat", messages.TierStandard, 3, 1.45},
	{"etl", messages.TierStandard, 1, 1.45},
}

func fairnessYAML(fakeURL string) string {
	var b strings.Builder
	b.WriteString(benchPools(fakeURL, 3000, 100_000_000, ""))
	b.WriteString("teams:\n")
	for _, t := range fairnessTeams {
		fmt.Fprintf(&b, "  %s: {max_queued: 1000000, pools: {bench: {weight: %g}}}\n", t.team, t.weight)
	}
	return strings.Replace(b.String(), "teams:\n  bench: {}\n", "", 1)
}

// RunFairness offers three times the capacity of one pool, from three
// teams of different weights and tiers, and reports each team's share
// against its entitlement, the critical calls' waits, and what scheduling
// costs per call.
func RunFairness(ctx context.Context, o FairnessOptions) (*FairnessReport, error) {
	if o.Duration <= 0 {
		o.Duration = 60 * time.Second
	}
	if o.Dispatchers <= 0 {
		o.Dispatchers = 2
	}
	reg := prometheus.NewRegistry()
	stack, err := devstack.Start(devstack.Options{
		NATSPort: -1, ConfigYAML: fairnessYAML, Registerer: reg,
		Fake: fakeprovider.Config{Latency: 10 * time.Millisecond, LatencyJitter: 20 * time.Millisecond},
	})
	if err != nil {
		return nil, err
	}
	defer stack.Close()
	services, err := startSluice(stack, "fair", o.Dispatchers)
	if err != nil {
		return nil, err
	}
	defer services.stop()
	nc, err := stack.Connect("sluice bench fairness")
	if err != nil {
		return nil, err
	}
	defer nc.Close()
	js, err := jetstream.New(nc, jetstream.WithPublishAsyncMaxPending(8192))
	if err != nil {
		return nil, err
	}

	capacity := 4 * 3000.0 / 60
	var mu sync.Mutex
	served := map[string]int{}
	var criticalWaits []float64
	start := time.Now()
	sub, err := nc.Subscribe(messages.ResultSubjects, func(m *nats.Msg) {
		var r messages.Result
		if json.Unmarshal(m.Data, &r) != nil || r.Status != messages.StatusOK {
			return
		}
		mu.Lock()
		defer mu.Unlock()
		served[r.Team]++
		if r.Tier == messages.TierCritical {
			criticalWaits = append(criticalWaits, r.Timings.QueuedMS)
		}
	})
	if err != nil {
		return nil, err
	}
	defer func() { _ = sub.Unsubscribe() }()
	_ = sub.SetPendingLimits(-1, -1)

	offered := 0.0
	for _, t := range fairnessTeams {
		offered += t.demand * capacity
	}
	sent := map[string]int{}
	for i := 0; time.Since(start) < o.Duration; i++ {
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		time.Sleep(time.Until(start.Add(time.Duration(float64(i) / offered * float64(time.Second)))))
		// Spread each second's calls between the teams by their demand.
		t := pickByDemand(sent)
		sent[t.team]++
		id := fmt.Sprintf("fair-%s-%d", t.team, sent[t.team])
		msg := &nats.Msg{
			Subject: messages.CallSubject(t.team, t.tier),
			Data:    []byte(`{"id":"` + id + `","model":"bench","body":` + callBody + `,"timeout_ms":3600000}`),
			Header:  nats.Header{},
		}
		msg.Header.Set(messages.HeaderMsgID, id)
		if _, err := js.PublishMsgAsync(msg); err != nil {
			return nil, err
		}
	}
	elapsed := time.Since(start).Seconds()
	mu.Lock()
	defer mu.Unlock()

	rep := &FairnessReport{
		Machine: machine(), Seconds: elapsed, Dispatchers: o.Dispatchers,
		Capacity: capacity, Offered: offered, Refused: stack.Fake.Stats().Total.Refused(),
	}
	total := 0
	for _, n := range served {
		total += n
	}
	// Entitlement: critical first (all it asks, here less than the pool),
	// then the rest by weight among the standard teams.
	left := capacity
	for _, t := range fairnessTeams {
		if t.tier == messages.TierCritical {
			left -= min(left, t.demand*capacity)
		}
	}
	var weights float64
	for _, t := range fairnessTeams {
		if t.tier != messages.TierCritical {
			weights += t.weight
		}
	}
	for _, t := range fairnessTeams {
		entitled := t.demand * capacity
		if t.tier != messages.TierCritical {
			entitled = left * t.weight / weights
		}
		rep.Teams = append(rep.Teams, TeamShare{
			Team: t.team, Tier: t.tier, Weight: t.weight, Offered: t.demand * capacity,
			Served: float64(served[t.team]) / elapsed, Share: float64(served[t.team]) / float64(max(total, 1)),
			Entitlement: entitled / capacity,
		})
	}
	sort.Float64s(criticalWaits)
	if n := len(criticalWaits); n > 0 {
		rep.CriticalWaitP50MS = criticalWaits[n/2]
		rep.CriticalWaitP99MS = criticalWaits[n*99/100]
	}
	if s, n := counter(reg, "sluice_schedule_seconds_total", "", ""), counter(reg, "sluice_scheduled_total", "", ""); n > 0 {
		rep.ScheduleMicrosPerCall = s / n * 1e6
	}
	return rep, nil
}

// pickByDemand picks the team whose share of the calls sent so far is
// furthest behind its share of the demand.
func pickByDemand(sent map[string]int) fairTeam {
	total := 0
	var demand float64
	for _, t := range fairnessTeams {
		total += sent[t.team]
		demand += t.demand
	}
	best, bestLag := fairnessTeams[0], -1.0
	for _, t := range fairnessTeams {
		lag := t.demand/demand*float64(total+1) - float64(sent[t.team])
		if lag > bestLag {
			best, bestLag = t, lag
		}
	}
	return best
}

// counter sums a counter's values in reg, over the series whose label
// has value (all series when label is empty).
func counter(reg *prometheus.Registry, name, label, value string) float64 {
	families, err := reg.Gather()
	if err != nil {
		return 0
	}
	var total float64
	for _, f := range families {
		if f.GetName() != name {
			continue
		}
		for _, m := range f.GetMetric() {
			match := label == ""
			for _, l := range m.GetLabel() {
				match = match || (l.GetName() == label && l.GetValue() == value)
			}
			if match {
				total += m.GetCounter().GetValue()
			}
		}
	}
	return total
}
