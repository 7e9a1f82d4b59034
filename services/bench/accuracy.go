package bench

import (
	"context"
	"fmt"
	"sort"
	"strings"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/sluicehq/sluice/services/devstack"
	"github.com/sluicehq/sluice/services/fakeprovider"
)

// AccuracyOptions configure the accuracy run: several dispatchers share
// the limits of two regions × two keys of a fake provider whose limits
// equal the configured ones, under more demand than they allow.
type AccuracyOptions struct {
	// Duration of the demand. Default 60s.
	Duration time.Duration
	// Dispatchers sharing the limiter. Default 3.
	Dispatchers int
	// RPM and TPM of each of the four deployments. Defaults 3000 and
	// 1,000,000.
	RPM, TPM int64
	// Demand is the multiple of the total capacity offered. Default 2.
	Demand float64
	// Latency of the fake provider: answers take between half of it and
	// one and a half times it. Default 20ms.
	Latency time.Duration
}

func (o *AccuracyOptions) defaults() {
	if o.Duration <= 0 {
		o.Duration = 60 * time.Second
	}
	if o.Dispatchers <= 0 {
		o.Dispatchers = 3
	}
	if o.RPM <= 0 {
		o.RPM = 3000
	}
	if o.TPM <= 0 {
		o.TPM = 1_000_000
	}
	if o.Demand <= 0 {
		o.Demand = 2
	}
	if o.Latency <= 0 {
		o.Latency = 20 * time.Millisecond
	}
}

// AccuracyReport is what the accuracy run measured.
type AccuracyReport struct {
	Machine     Machine `json:"machine"`
	Seconds     float64 `json:"seconds"`
	Dispatchers int     `json:"dispatchers"`
	// Capacity is the configured total, in requests per second; Offered
	// the demand.
	Capacity float64 `json:"capacity_per_second"`
	Offered  float64 `json:"offered_per_second"`
	// Refused counts the provider's 429s.
	Refused int64 `json:"provider_429s"`
	Served  int64 `json:"served"`
	// Used is Served over Capacity × Seconds.
	Used        float64           `json:"capacity_used"`
	Deployments []DeploymentSplit `json:"deployments"`
	KVOpsPerCal float64           `json:"kv_ops_per_call"`
}

// DeploymentSplit is one deployment's part of an accuracy run.
type DeploymentSplit struct {
	ID     string  `json:"id"`
	Served int64   `json:"served"`
	Share  float64 `json:"share"`
	// Limit1s is the most the deployment may take in a second (its rate);
	// Max1s the most the provider saw it take in any 1-second window.
	Limit1s float64 `json:"limit_per_second"`
	Max1s   int64   `json:"max_in_any_second"`
}

// accuracyYAML is two regions × two keys with the given limits.
func accuracyYAML(rpm, tpm int64) func(string) string {
	return func(fakeURL string) string {
		var b strings.Builder
		b.WriteString("pools:\n  bench:\n    deployments:\n")
		for _, r := range []string{"us-east", "eu-west"} {
			for k := 1; k <= 2; k++ {
				fmt.Fprintf(&b, "      - {id: %s-%d, provider: openai, base_url: %q, region: %s, key: KEY_%s_%d, rpm: %d, tpm: %d}\n",
					r, k, fakeURL+"/v1", r, strings.ToUpper(strings.ReplaceAll(r, "-", "_")), k, rpm, tpm)
			}
		}
		b.WriteString("teams:\n  bench: {}\n")
		return b.String()
	}
}

// RunAccuracy offers Demand × the capacity for Duration and reports how
// much of the capacity reached the provider and how much it refused.
func RunAccuracy(ctx context.Context, o AccuracyOptions) (*AccuracyReport, error) {
	o.defaults()
	reg := prometheus.NewRegistry()
	stack, err := devstack.Start(devstack.Options{
		NATSPort: -1, ConfigYAML: accuracyYAML(o.RPM, o.TPM), Registerer: reg,
		Fake: fakeprovider.Config{Latency: o.Latency / 2, LatencyJitter: o.Latency},
	})
	if err != nil {
		return nil, err
	}
	defer stack.Close()
	services, err := startSluice(stack, "accuracy", o.Dispatchers)
	if err != nil {
		return nil, err
	}
	defer services.stop()
	nc, err := stack.Connect("sluice bench accuracy")
	if err != nil {
		return nil, err
	}
	defer nc.Close()
	js, err := jetstream.New(nc, jetstream.WithPublishAsyncMaxPending(4096))
	if err != nil {
		return nil, err
	}

	deps := stack.Shared.Load().Pools["bench"].Deployments
	capacity := float64(len(deps)) * float64(o.RPM) / 60
	offered := o.Demand * capacity
	opsBefore := kvOps(reg)
	start := time.Now()
	for i := 0; time.Since(start) < o.Duration; i++ {
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		time.Sleep(time.Until(start.Add(time.Duration(float64(i) / offered * float64(time.Second)))))
		msg := callMsg(fmt.Sprintf("acc-%d-%d", start.UnixNano(), i))
		msg.Data = []byte(strings.Replace(string(msg.Data), `}}`, `},"timeout_ms":3600000}`, 1))
		if _, err := js.PublishMsgAsync(msg); err != nil {
			return nil, err
		}
	}
	elapsed := time.Since(start)
	st := stack.Fake.Stats()
	secrets := devstack.DevSecrets(stack.Shared.Load())

	rep := &AccuracyReport{
		Machine:     machine(),
		Seconds:     elapsed.Seconds(),
		Dispatchers: o.Dispatchers,
		Capacity:    capacity,
		Offered:     offered,
		Refused:     st.Total.Refused(),
		Served:      st.Total.Served,
		Used:        float64(st.Total.Served) / (capacity * elapsed.Seconds()),
	}
	if rep.Served > 0 {
		rep.KVOpsPerCal = (kvOps(reg) - opsBefore) / float64(rep.Served)
	}
	for _, d := range deps {
		c := st.Keys[secrets[d.Key]]
		rep.Deployments = append(rep.Deployments, DeploymentSplit{
			ID: d.ID, Served: c.Served, Share: float64(c.Served) / float64(max(1, st.Total.Served)),
			Limit1s: float64(d.RPM) / 60, Max1s: c.MaxRequests1s,
		})
	}
	sort.Slice(rep.Deployments, func(i, j int) bool { return rep.Deployments[i].ID < rep.Deployments[j].ID })
	return rep, nil
}
