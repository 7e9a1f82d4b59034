package bench

import (
	"context"
	"fmt"
	"math"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/sluicehq/sluice/services/devstack"
	"github.com/sluicehq/sluice/services/fakeprovider"
	"github.com/sluicehq/sluice/services/limiter"
)

// Model is one way a provider enforces its limits, for the accuracy run.
type Model struct {
	// Name selects the model (--enforcement).
	Name string `json:"name"`
	// Description says what the provider does.
	Description string `json:"description"`
	// Windows is what sluice's configuration says the provider enforces
	// ("" for the default, one second and one minute).
	Windows string `json:"windows,omitempty"`
	// Allowed is the share of the configured limits the provider really
	// allows.
	Allowed float64 `json:"allowed"`

	key fakeprovider.KeyConfig
}

// secondAndMinute are a provider's sliding windows of one second and one
// minute.
var secondAndMinute = []fakeprovider.Window{{Span: time.Second}, {Span: time.Minute}}

// Models are the providers the accuracy run can face; it faces all of
// them unless told which.
var Models = []Model{
	{Name: "bucket", Description: "a token bucket of the rate, holding a second of it", Allowed: 1,
		key: fakeprovider.KeyConfig{Enforce: fakeprovider.EnforceBucket}},
	{Name: "minute", Description: "a sliding 60 s window", Allowed: 1,
		key: fakeprovider.KeyConfig{Enforce: fakeprovider.EnforceWindows, Windows: []fakeprovider.Window{{Span: time.Minute}}}},
	{Name: "second", Description: "sliding 1 s and 60 s windows; a 429 says to wait until its window is empty", Allowed: 1,
		key: fakeprovider.KeyConfig{Enforce: fakeprovider.EnforceWindows, Windows: secondAndMinute, RetryAfter: fakeprovider.RetryAfterReset}},
	{Name: "shared", Description: "sliding 1 s and 60 s windows; someone else uses a fifth of each key", Allowed: 0.8,
		key: fakeprovider.KeyConfig{Enforce: fakeprovider.EnforceWindows, Windows: secondAndMinute, OtherUse: 0.2}},
	{Name: "unannounced", Description: "sliding 1 s and 60 s windows; sluice is told only of the minute", Windows: "[1m]", Allowed: 1,
		key: fakeprovider.KeyConfig{Enforce: fakeprovider.EnforceWindows, Windows: secondAndMinute, RetryAfter: fakeprovider.RetryAfterReset}},
}

// ModelNames lists the models' names.
func ModelNames() []string {
	var out []string
	for _, m := range Models {
		out = append(out, m.Name)
	}
	return out
}

// AccuracyOptions configure the accuracy run: several dispatchers share
// the limits of two regions x two keys of a fake provider, under more
// demand than the keys allow, once per model and rate.
type AccuracyOptions struct {
	// Duration of the demand in each run. Default 65s: past one minute,
	// where a start in a burst would show.
	Duration time.Duration
	// Dispatchers sharing the limits. Default 3.
	Dispatchers int
	// RPMs are the configured requests per minute of each key, one run
	// each. Default 600 and 6000.
	RPMs []int64
	// Models are the names of the models to run; default all.
	Models []string
	// Demand is the multiple of the configured capacity offered. Default 2.
	Demand float64
	// Latency of the fake provider: answers take between half of it and
	// one and a half times it. Default 20ms.
	Latency time.Duration
}

func (o *AccuracyOptions) defaults() {
	if o.Duration <= 0 {
		o.Duration = 65 * time.Second
	}
	if o.Dispatchers <= 0 {
		o.Dispatchers = 3
	}
	if len(o.RPMs) == 0 {
		o.RPMs = []int64{600, 6000}
	}
	if len(o.Models) == 0 {
		o.Models = ModelNames()
	}
	if o.Demand <= 0 {
		o.Demand = 2
	}
	if o.Latency <= 0 {
		o.Latency = 20 * time.Millisecond
	}
}

// AccuracyReport is what the accuracy runs measured.
type AccuracyReport struct {
	Machine     Machine       `json:"machine"`
	Dispatchers int           `json:"dispatchers"`
	Runs        []AccuracyRun `json:"runs"`
}

// AccuracyRun is one model at one rate.
type AccuracyRun struct {
	Model   Model   `json:"model"`
	RPM     int64   `json:"rpm_per_key"`
	Seconds float64 `json:"seconds"`
	// Capacity is what the provider really allows, in requests per second
	// over the four keys; Offered the demand.
	Capacity float64 `json:"capacity_per_second"`
	Offered  float64 `json:"offered_per_second"`
	// Refused counts the provider's 429s; RefusedAfter30s those from 30 s
	// into the run on.
	Refused         int64 `json:"provider_429s"`
	RefusedAfter30s int64 `json:"provider_429s_after_30s"`
	Served          int64 `json:"served"`
	// Used is what was served over what the provider allows in the run;
	// UsedAfter30s the same from 30 s into the run on.
	Used         float64 `json:"capacity_used"`
	UsedAfter30s float64 `json:"capacity_used_after_30s"`
	// Max1s and Max60s are the most requests any key got in any sliding
	// window of 1 s and 60 s; Limit1s and Limit60s what the provider allows
	// a key in them; Bound1s and Bound60s what sluice's pace of the
	// configured limits sends at most (see limiter.Schedule).
	Max1s        int64   `json:"max_in_any_second"`
	Max60s       int64   `json:"max_in_any_minute"`
	Limit1s      int64   `json:"limit_per_second"`
	Limit60s     int64   `json:"limit_per_minute"`
	Bound1s      float64 `json:"bound_per_second"`
	Bound60s     float64 `json:"bound_per_minute"`
	KVOpsPerCall float64 `json:"kv_ops_per_call"`
	// Timing is how late after their send times requests went out and
	// reached the provider.
	Timing SendTiming `json:"send_timing"`
}

// accuracyYAML is pool bench of two regions x two keys with the given
// limits and windows, and team bench.
func accuracyYAML(rpm, tpm int64, windows string) func(string) string {
	return func(fakeURL string) string {
		return benchPools(fakeURL, rpm, tpm, windows) + "teams:\n  bench: {max_queued: 1000000}\n"
	}
}

// benchPools is pool bench of two regions x two keys with the given
// limits and windows ("" for the default).
func benchPools(fakeURL string, rpm, tpm int64, windows string) string {
	extra := ""
	if windows != "" {
		extra = ", windows: " + windows
	}
	var b strings.Builder
	b.WriteString("pools:\n  bench:\n    deployments:\n")
	for _, r := range []string{"us-east", "eu-west"} {
		for k := 1; k <= 2; k++ {
			fmt.Fprintf(&b, "      - {id: %s-%d, provider: openai, base_url: %q, region: %s, key: KEY_%s_%d, rpm: %d, tpm: %d%s}\n",
				r, k, fakeURL+"/v1", r, strings.ToUpper(strings.ReplaceAll(r, "-", "_")), k, rpm, tpm, extra)
		}
	}
	return b.String()
}

// RunAccuracy runs every model of o at every rate of o, one after the
// other, and reports how much of what the provider allows reached it and
// how much it refused.
func RunAccuracy(ctx context.Context, o AccuracyOptions) (*AccuracyReport, error) {
	o.defaults()
	rep := &AccuracyReport{Machine: machine(), Dispatchers: o.Dispatchers}
	for _, name := range o.Models {
		m, ok := modelNamed(name)
		if !ok {
			return nil, fmt.Errorf("bench: no enforcement model %q; the models are %s", name, strings.Join(ModelNames(), ", "))
		}
		for _, rpm := range o.RPMs {
			run, err := runAccuracy(ctx, o, m, rpm)
			if err != nil {
				return nil, fmt.Errorf("bench: model %s at %d rpm: %w", m.Name, rpm, err)
			}
			rep.Runs = append(rep.Runs, *run)
		}
	}
	return rep, nil
}

func modelNamed(name string) (Model, bool) {
	for _, m := range Models {
		if m.Name == name {
			return m, true
		}
	}
	return Model{}, false
}

// accuracyTPM keeps tokens from binding: the runs measure requests.
const accuracyTPM = 100_000_000

func runAccuracy(ctx context.Context, o AccuracyOptions, m Model, rpm int64) (*AccuracyRun, error) {
	reg := prometheus.NewRegistry()
	times := newSendTimes()
	stack, err := devstack.Start(devstack.Options{
		NATSPort: -1, ConfigYAML: accuracyYAML(rpm, accuracyTPM, m.Windows), Registerer: reg,
		Fake: fakeprovider.Config{Latency: o.Latency / 2, LatencyJitter: o.Latency, Arrived: times.arrived},
	})
	if err != nil {
		return nil, err
	}
	defer stack.Close()
	cfg := stack.Shared.Load()
	deps := cfg.Pools["bench"].Deployments
	secrets := devstack.DevSecrets(cfg)
	kc := m.key
	kc.RPM, kc.TPM = rpm, accuracyTPM
	for _, d := range deps {
		if err := stack.Fake.SetKey(secrets[d.Key], kc); err != nil {
			return nil, err
		}
	}
	services, err := startSluiceTuned(stack, "accuracy", o.Dispatchers, times.tune)
	if err != nil {
		return nil, err
	}
	defer services.stop()
	nc, err := stack.Connect("sluice bench accuracy")
	if err != nil {
		return nil, err
	}
	defer nc.Close()
	if err := times.watch(nc); err != nil {
		return nil, err
	}
	defer times.stop()
	js, err := jetstream.New(nc, jetstream.WithPublishAsyncMaxPending(4096))
	if err != nil {
		return nil, err
	}

	configured := float64(len(deps)) * float64(rpm) / 60
	offered := o.Demand * configured
	timeline := sampleProvider(stack.Fake)
	defer timeline.stop()
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
	end := time.Now()
	elapsed := end.Sub(start)
	st := stack.Fake.Stats()
	capacity := configured * m.Allowed
	run := &AccuracyRun{
		Model: m, RPM: rpm, Seconds: elapsed.Seconds(), Capacity: capacity, Offered: offered,
		Refused: st.Total.Refused(), Served: st.Total.Served,
		Limit1s:  int64(math.Floor(math.Ceil(float64(rpm)/60) * m.Allowed)),
		Limit60s: int64(math.Floor(float64(rpm) * m.Allowed)),
	}
	after := start.Add(30 * time.Second)
	run.Used = float64(timeline.servedBetween(start, end)) / (capacity * elapsed.Seconds())
	if end.After(after) {
		run.RefusedAfter30s = timeline.latest().refused - timeline.at(after).refused
		run.UsedAfter30s = float64(timeline.servedBetween(after, end)) / (capacity * end.Sub(after).Seconds())
	}
	for _, d := range deps {
		c := st.Keys[secrets[d.Key]]
		run.Max1s, run.Max60s = max(run.Max1s, c.MaxRequests1s), max(run.Max60s, c.MaxRequests60s)
	}
	pace, err := limiter.Fit(limiter.Enforcement{RPM: float64(rpm), TPM: accuracyTPM, Windows: deps[0].EnforcedWindows(),
		Jitter: cfg.Admission.Jitter, Burst: cfg.Admission.Burst})
	if err != nil {
		return nil, err
	}
	rate, j := pace.RPM/60, cfg.Admission.Jitter.Seconds()
	run.Bound1s = pace.BurstRequests + rate*(1+j)
	run.Bound60s = pace.BurstRequests + rate*(60+j)
	run.Timing = times.timing(cfg.Admission.Jitter, int64(counter(reg, "sluice_late_work_total", "", "")))
	if run.Served > 0 {
		run.KVOpsPerCall = (kvOps(reg) - opsBefore) / float64(run.Served)
	}
	return run, nil
}

// providerTimeline samples a fake provider's totals as a run goes.
type providerTimeline struct {
	mu      sync.Mutex
	samples []providerSample
	done    chan struct{}
	stopped chan struct{}
}

type providerSample struct {
	at              time.Time
	served, refused int64
}

// sampleProvider samples fake every 100ms until stop.
func sampleProvider(fake *fakeprovider.Server) *providerTimeline {
	p := &providerTimeline{done: make(chan struct{}), stopped: make(chan struct{})}
	go func() {
		defer close(p.stopped)
		tick := time.NewTicker(100 * time.Millisecond)
		defer tick.Stop()
		for {
			t := fake.Stats().Total
			p.mu.Lock()
			p.samples = append(p.samples, providerSample{time.Now(), t.Served, t.Refused()})
			p.mu.Unlock()
			select {
			case <-p.done:
				return
			case <-tick.C:
			}
		}
	}()
	return p
}

func (p *providerTimeline) stop() { close(p.done); <-p.stopped }

// at is the last sample no later than t (the first, if none was).
func (p *providerTimeline) at(t time.Time) providerSample {
	p.mu.Lock()
	defer p.mu.Unlock()
	i := sort.Search(len(p.samples), func(i int) bool { return p.samples[i].at.After(t) })
	return p.samples[max(i-1, 0)]
}

func (p *providerTimeline) latest() providerSample {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.samples[len(p.samples)-1]
}

func (p *providerTimeline) servedBetween(a, b time.Time) int64 {
	return p.at(b).served - p.at(a).served
}
