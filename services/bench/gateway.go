package bench

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"runtime"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/sluicehq/sluice/services/config"
	"github.com/sluicehq/sluice/services/devstack"
	"github.com/sluicehq/sluice/services/fakeprovider"
)

// GatewayOptions configure the gateway run: the latency the HTTP gateway
// and sluice behind it (NATS, dispatcher, executor) add over calling the
// same fake provider directly over HTTP, at fixed arrival rates, for plain
// and streamed chat completions.
type GatewayOptions struct {
	// Duration of each measurement: one path (direct or through the
	// gateway), one rate, one kind. Default 5s, so that the default run
	// (2 rates × 2 kinds × 2 paths) takes about a minute.
	Duration time.Duration
	// Rates are the arrival rates, in calls per second. Default 100 and
	// 1000.
	Rates []float64
	// ProviderLatency is the fake provider's fixed latency, the same for
	// both paths. Default 1ms.
	ProviderLatency time.Duration
	// ChunkDelay is the fake provider's pause between streamed chunks.
	// Default 1ms: a stream whose chunks all came at once would not be
	// a stream.
	ChunkDelay time.Duration
	// Dispatchers is the number of dispatchers. Default 1.
	Dispatchers int
	Logger      *slog.Logger
	// Registerer receives the metrics of every service. Default: a
	// registry of the run's own.
	Registerer prometheus.Registerer
}

func (o *GatewayOptions) defaults() {
	if o.Duration <= 0 {
		o.Duration = 5 * time.Second
	}
	if len(o.Rates) == 0 {
		o.Rates = []float64{100, 1000}
	}
	if o.ProviderLatency <= 0 {
		o.ProviderLatency = time.Millisecond
	}
	if o.ChunkDelay <= 0 {
		o.ChunkDelay = time.Millisecond
	}
	if o.Dispatchers <= 0 {
		o.Dispatchers = 1
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	if o.Registerer == nil {
		o.Registerer = prometheus.NewRegistry()
	}
}

// GatewayReport is what the gateway run measured.
type GatewayReport struct {
	Machine           Machine `json:"machine"`
	Seconds           float64 `json:"seconds_per_measurement"`
	Dispatchers       int     `json:"dispatchers"`
	ProviderLatencyMS float64 `json:"provider_latency_ms"`
	ChunkDelayMS      float64 `json:"chunk_delay_ms"`
	// ProviderRefused counts the fake provider's 429s: there should be
	// none, its limits are far above the load.
	ProviderRefused int64        `json:"provider_429s"`
	Rows            []GatewayRow `json:"rows"`
}

// GatewayRow compares the two paths at one rate, for one kind of call.
type GatewayRow struct {
	// Kind is "chat" (latency of the whole answer) or "stream" (time to
	// the first chunk).
	Kind string `json:"kind"`
	// Rate is the arrival rate asked for, in calls per second.
	Rate    float64   `json:"rate"`
	Direct  PathStats `json:"direct"`
	Gateway PathStats `json:"gateway"`
	// AddedP50 and AddedP99 are the gateway's percentiles minus the
	// direct ones, in milliseconds; RatioP50 and RatioP99 their ratios.
	AddedP50 float64 `json:"added_p50_ms"`
	AddedP99 float64 `json:"added_p99_ms"`
	RatioP50 float64 `json:"ratio_p50"`
	RatioP99 float64 `json:"ratio_p99"`
}

// PathStats is one path's measurement.
type PathStats struct {
	// Sent is how many calls were sent, SentPerSecond the rate actually
	// achieved by the sender (below the asked rate when the machine could
	// not keep up), and PerSecond the successful answers per second of
	// the whole measurement, tail included.
	Sent          int     `json:"sent"`
	SentPerSecond float64 `json:"sent_per_second"`
	OK            int     `json:"ok"`
	Errors        int     `json:"errors"`
	// FirstError describes the first error, if any.
	FirstError string  `json:"first_error,omitempty"`
	PerSecond  float64 `json:"per_second"`
	// CPU is the CPU the whole process (client, gateway, NATS, sluice and
	// fake provider alike) used during the measurement, in cores: how
	// close the machine came to its limit.
	CPU float64 `json:"cpu_cores"`
	P50 float64 `json:"p50_ms"`
	P99 float64 `json:"p99_ms"`
}

// gatewayToken is the bench team's gateway token; the configuration holds
// only its hash, as a real one would.
const gatewayToken = "sk-sluice-bench"

// gatewayYAML is benchYAML with a token for team bench, so that it may
// call through the gateway.
func gatewayYAML(fakeURL string) string {
	y := benchYAML(fakeURL)
	return strings.Replace(y, "  bench: {}\n", fmt.Sprintf("  bench: {tokens: [%q]}\n", config.HashToken(gatewayToken)), 1)
}

// The bodies of the two kinds of call, the same on both paths.
const (
	gatewayChatBody   = `{"model":"bench","messages":[{"role":"user","content":"hello"}],"max_tokens":8}`
	gatewayStreamBody = `{"model":"bench","messages":[{"role":"user","content":"hello"}],"max_tokens":8,"stream":true}`
)

// target is one of the two paths a call can take.
type target struct {
	name  string
	url   string // the chat completions URL
	token string
}

// RunGateway measures, at each rate and for plain and streamed calls, the
// latency of calls through the gateway and of the same calls made to the
// fake provider directly, one after the other in the same run.
func RunGateway(ctx context.Context, o GatewayOptions) (*GatewayReport, error) {
	o.defaults()
	stack, err := devstack.Start(devstack.Options{
		NATSPort: -1, ConfigYAML: gatewayYAML, Registerer: o.Registerer, Logger: o.Logger,
		// No rate limiting: AcceptAnyKey with no limits on DefaultKey.
		// The same fixed latency for both paths, no jitter.
		Fake: fakeprovider.Config{AcceptAnyKey: true, Latency: o.ProviderLatency, ChunkDelay: o.ChunkDelay},
	})
	if err != nil {
		return nil, err
	}
	defer stack.Close()
	services, err := startSluice(stack, "bench", o.Dispatchers)
	if err != nil {
		return nil, err
	}
	defer services.stop()
	gw, gwURL, err := stack.StartGateway(nil)
	if err != nil {
		return nil, err
	}
	services = append(services, gw)

	// One client per path, each with keep-alive connections enough for
	// the highest rate, so that neither path pays for new connections.
	direct := target{name: "direct", url: stack.FakeURL + "/v1/chat/completions", token: "sk-bench-direct"}
	through := target{name: "gateway", url: gwURL + "/v1/chat/completions", token: gatewayToken}
	clients := map[string]*http.Client{direct.name: benchClient(), through.name: benchClient()}
	defer func() {
		for _, c := range clients {
			c.CloseIdleConnections()
		}
	}()
	if err := waitReady(ctx, clients[through.name], gwURL+"/readyz"); err != nil {
		return nil, err
	}

	maxRate := o.Rates[0]
	for _, r := range o.Rates {
		maxRate = max(maxRate, r)
	}
	// Warm up: connections, consumers, the limiter's first keys, for
	// both kinds on both paths.
	warm := min(500*time.Millisecond, o.Duration)
	for _, stream := range []bool{false, true} {
		for _, t := range []target{direct, through} {
			if s := openLoop(ctx, clients[t.name], t, stream, maxRate, warm); s.Errors > 0 {
				return nil, fmt.Errorf("warm-up %s: %d errors, the first: %s", t.name, s.Errors, s.FirstError)
			}
		}
	}
	refusedBefore := stack.Fake.Stats().Total.Refused()

	rep := &GatewayReport{
		Machine:           machine(),
		Seconds:           o.Duration.Seconds(),
		Dispatchers:       o.Dispatchers,
		ProviderLatencyMS: ms(o.ProviderLatency),
		ChunkDelayMS:      ms(o.ChunkDelay),
	}
	for _, rate := range o.Rates {
		for _, stream := range []bool{false, true} {
			row := GatewayRow{Kind: "chat", Rate: rate}
			if stream {
				row.Kind = "stream"
			}
			settle()
			o.Logger.Info("measuring", "kind", row.Kind, "rate", rate, "path", direct.name)
			row.Direct = openLoop(ctx, clients[direct.name], direct, stream, rate, o.Duration)
			if err := ctx.Err(); err != nil {
				return nil, err
			}
			settle()
			o.Logger.Info("measuring", "kind", row.Kind, "rate", rate, "path", through.name)
			row.Gateway = openLoop(ctx, clients[through.name], through, stream, rate, o.Duration)
			if err := ctx.Err(); err != nil {
				return nil, err
			}
			row.AddedP50 = row.Gateway.P50 - row.Direct.P50
			row.AddedP99 = row.Gateway.P99 - row.Direct.P99
			row.RatioP50 = ratio(row.Gateway.P50, row.Direct.P50)
			row.RatioP99 = ratio(row.Gateway.P99, row.Direct.P99)
			rep.Rows = append(rep.Rows, row)
		}
	}
	rep.ProviderRefused = stack.Fake.Stats().Total.Refused() - refusedBefore
	return rep, nil
}

// settle lets what the previous measurement left behind (acknowledgements,
// idle timers, its garbage) be dealt with before the next one starts, so
// that each path is measured from the same state and neither pays for the
// other's collection.
func settle() {
	time.Sleep(100 * time.Millisecond)
	runtime.GC()
}

func benchClient() *http.Client {
	t := http.DefaultTransport.(*http.Transport).Clone()
	t.MaxIdleConns = 2048
	t.MaxIdleConnsPerHost = 2048
	// Compression would cost both paths alike and measure nothing.
	t.DisableCompression = true
	return &http.Client{Transport: t, Timeout: time.Minute}
}

// waitReady waits for the gateway to have NATS and a configuration.
func waitReady(ctx context.Context, client *http.Client, url string) error {
	deadline := time.Now().Add(10 * time.Second)
	for {
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
		resp, err := client.Do(req)
		if err == nil {
			_, _ = io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
		}
		if time.Now().After(deadline) || ctx.Err() != nil {
			return fmt.Errorf("the gateway did not become ready: %v", err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// openLoop sends calls to t at rate per second for d, each on its own
// goroutine: arrivals follow the clock, never the answers, so a slow
// answer cannot hold back the next call (a closed loop would hide the
// latency it causes). A sender that falls behind catches up at once; if
// it still cannot keep up, fewer calls are sent, and SentPerSecond says
// so. Each call is timed from its sending to its whole answer, or, for a
// stream, to its first chunk.
func openLoop(ctx context.Context, client *http.Client, t target, stream bool, rate float64, d time.Duration) PathStats {
	body := []byte(gatewayChatBody)
	if stream {
		body = []byte(gatewayStreamBody)
	}
	var (
		mu       sync.Mutex
		lat      []time.Duration
		errCount int
		firstErr string
		lastDone time.Time
		wg       sync.WaitGroup
	)
	cpuBefore := processCPU()
	start := time.Now()
	interval := time.Duration(float64(time.Second) / rate)
	sent := 0
	for ; ctx.Err() == nil; sent++ {
		at := start.Add(time.Duration(sent) * interval)
		if at.Sub(start) >= d {
			break
		}
		if wait := time.Until(at); wait > 0 {
			time.Sleep(wait)
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			took, err := oneCall(ctx, client, t, body, stream)
			mu.Lock()
			defer mu.Unlock()
			lastDone = time.Now()
			if err != nil {
				errCount++
				if firstErr == "" {
					firstErr = err.Error()
				}
				return
			}
			lat = append(lat, took)
		}()
	}
	sendWindow := time.Since(start)
	wg.Wait()
	s := PathStats{Sent: sent, OK: len(lat), Errors: errCount, FirstError: firstErr}
	s.CPU = (processCPU() - cpuBefore).Seconds() / time.Since(start).Seconds()
	s.SentPerSecond = float64(sent) / max(sendWindow, d).Seconds()
	if s.OK > 0 {
		s.PerSecond = float64(s.OK) / max(lastDone.Sub(start), d).Seconds()
		s.P50, s.P99 = percentile(lat, 50), percentile(lat, 99)
	}
	return s
}

// oneCall makes one call and times it: to the end of the answer, or to
// the first chunk of a stream, which is then read to its end all the same.
func oneCall(ctx context.Context, client *http.Client, t target, body []byte, stream bool) (time.Duration, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, t.url, bytes.NewReader(body))
	if err != nil {
		return 0, err
	}
	req.Header.Set("Authorization", "Bearer "+t.token)
	req.Header.Set("Content-Type", "application/json")
	sent := time.Now()
	resp, err := client.Do(req)
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		msg, _ := io.ReadAll(io.LimitReader(resp.Body, 512))
		return 0, fmt.Errorf("%s: status %d: %s", t.name, resp.StatusCode, bytes.TrimSpace(msg))
	}
	if !stream {
		data, err := io.ReadAll(resp.Body)
		took := time.Since(sent)
		if err != nil {
			return 0, fmt.Errorf("%s: %w", t.name, err)
		}
		if !bytes.Contains(data, []byte(`"choices"`)) {
			return 0, fmt.Errorf("%s: no choices in the answer: %.200s", t.name, data)
		}
		return took, nil
	}
	var first time.Duration
	done := false
	br := bufio.NewReader(resp.Body)
	for {
		line, err := br.ReadSlice('\n')
		if data, ok := bytes.CutPrefix(line, []byte("data:")); ok {
			if first == 0 {
				first = time.Since(sent)
			}
			if string(bytes.TrimSpace(data)) == "[DONE]" {
				done = true
			}
		}
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil && !errors.Is(err, bufio.ErrBufferFull) {
			return 0, fmt.Errorf("%s: stream: %w", t.name, err)
		}
	}
	if first == 0 || !done {
		return 0, fmt.Errorf("%s: the stream ended without [DONE]", t.name)
	}
	return first, nil
}

func ratio(a, b float64) float64 {
	if b == 0 {
		return 0
	}
	return a / b
}

func ms(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }
