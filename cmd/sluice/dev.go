package main

import (
	"context"
	"fmt"
	"io"
	"net"
	"strconv"
	"time"

	"github.com/oklog/run"

	"github.com/sluicehq/sluice/messages"
	"github.com/sluicehq/sluice/services/devstack"
	"github.com/sluicehq/sluice/services/gateway"
)

func runDev(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlagSet("dev", stderr)
	addr := fs.String("addr", "localhost:4222", "where the embedded NATS server listens for clients")
	dataDir := fs.String("data", "", "JetStream data directory (default: a fresh temporary directory, removed on exit)")
	fakeAddr := fs.String("fake-addr", "127.0.0.1:0", "where the fake provider listens")
	metricsAddr := fs.String("metrics", "localhost:9464", "address to serve Prometheus metrics on; empty for none")
	gatewayAddr := fs.String("gateway-addr", "localhost:8080", "where the OpenAI-compatible HTTP gateway listens; empty for none")
	dispatchers := fs.Int("dispatchers", 1, "dispatchers to run")
	printConfig := fs.Bool("print-config", false, "print the built-in configuration and exit")
	logLevel := fs.String("log-level", "info", "debug, info, warn or error")
	if err := parse(fs, args); err != nil {
		return err
	}
	if *printConfig {
		fmt.Fprint(stdout, devstack.DevConfigYAML("http://127.0.0.1:PORT"))
		return nil
	}
	log, err := newLogger(stderr, *logLevel)
	if err != nil {
		return err
	}
	host, portStr, err := net.SplitHostPort(*addr)
	if err != nil {
		return fmt.Errorf("-addr: %w", err)
	}
	port, err := strconv.Atoi(portStr)
	if err != nil {
		return fmt.Errorf("-addr: port %q: %w", portStr, err)
	}
	reg := newRegistry()
	// One process, three services: each traces under its own name.
	tracers := newTracers(log)
	defer tracers.shutdown()
	stack, err := devstack.Start(devstack.Options{
		NATSHost: host, NATSPort: port, StoreDir: *dataDir, FakeAddr: *fakeAddr,
		Logger: log, Registerer: reg, TracerProvider: tracers.provider,
	})
	if err != nil {
		return err
	}
	defer stack.Close()
	stopMetrics, err := serveMetrics(*metricsAddr, reg, log)
	if err != nil {
		return err
	}
	defer stopMetrics()

	var g run.Group
	// Services already started are stopped if a later one cannot start.
	var started []*devstack.Service
	stopStarted := func(err error) error {
		for _, svc := range started {
			_ = svc.Stop()
		}
		return err
	}
	// The gateway first: a port in use fails before anything else runs.
	gatewayURL := ""
	if *gatewayAddr != "" {
		svc, url, err := stack.StartGateway(func(c *gateway.Config) {
			c.Addr = *gatewayAddr
			// Ctrl-C stops everything at once: calls still waiting then
			// would wait for nothing.
			c.ShutdownGrace = 10 * time.Second
		})
		if err != nil {
			return fmt.Errorf("-gateway-addr: %w", err)
		}
		started = append(started, svc)
		gatewayURL = url
	}
	for i := 1; i <= *dispatchers; i++ {
		svc, err := stack.StartDispatcher(fmt.Sprintf("dev-%d", i), nil)
		if err != nil {
			return stopStarted(err)
		}
		started = append(started, svc)
	}
	for _, region := range stack.Shared.Load().Regions() {
		svc, err := stack.StartExecutor(region, nil)
		if err != nil {
			return stopStarted(err)
		}
		started = append(started, svc)
	}
	// One round trip over NATS: nats req sluice.request.<team>.<tier>.
	requests, err := stack.StartRequests(nil)
	if err != nil {
		return stopStarted(err)
	}
	started = append(started, requests)
	for _, svc := range started {
		addService(&g, svc)
	}
	g.Add(func() error { <-ctx.Done(); return nil }, func(error) {})

	fmt.Fprintf(stdout, `sluice dev is running.
  NATS:          %s
  data dir:      %s
  fake provider: %s
  metrics:       http://%s/metrics
  configuration: revision %d in KV %s (the built-in one, stored at every start)
  team demo may use every tier; pool gpt-4o-mini is served by us-east and eu-west (two keys each),
  pool claude-haiku-4-5 (Anthropic's Messages API) by one key in each.

Make a call from another terminal:
  go run ./cmd/sluice call --server %s --team demo --tier standard --model gpt-4o-mini --prompt "hi"
or with the nats CLI, in one round trip (nats micro ls lists sluice's services):
  nats req --server %s sluice.request.demo.standard '{"model":"gpt-4o-mini","body":{"messages":[{"role":"user","content":"hi"}]}}'

%sChange the configuration while it runs:
  go run ./cmd/sluice config get --server %s > sluice.yaml
  go run ./cmd/sluice config apply --server %s -f sluice.yaml

Press Ctrl-C to stop.
`, stack.ClientURL(), stack.StoreDir, stack.FakeURL, *metricsAddr, stack.Shared.Revision(), messages.BucketConfig,
		stack.ClientURL(), stack.ClientURL(), gatewayBanner(gatewayURL), stack.ClientURL(), stack.ClientURL())
	err = g.Run()
	log.Info("sluice dev stopped")
	return err
}

// devToken is the gateway token of team demo in the built-in
// configuration (only its hash is in dev.yaml).
const devToken = "sk-sluice-demo"

// gatewayBanner says how to call sluice dev's gateway at url, if it runs.
func gatewayBanner(url string) string {
	if url == "" {
		return ""
	}
	return fmt.Sprintf(`Or through the OpenAI-compatible gateway at %[1]s/v1 (team demo's token is %[2]s):
  curl %[1]s/v1/chat/completions -H "Authorization: Bearer %[2]s" \
    -H "Content-Type: application/json" \
    -d '{"model":"gpt-4o-mini","messages":[{"role":"user","content":"hi"}]}'
  curl -N %[1]s/v1/chat/completions -H "Authorization: Bearer %[2]s" \
    -d '{"model":"gpt-4o-mini","stream":true,"messages":[{"role":"user","content":"hi"}]}'
Any OpenAI SDK works with only the base URL and the key changed:
  export OPENAI_BASE_URL=%[1]s/v1 OPENAI_API_KEY=%[2]s
  python -c 'from openai import OpenAI; print(OpenAI().chat.completions.create(model="gpt-4o-mini", messages=[{"role": "user", "content": "hi"}]).choices[0].message.content)'
Anthropic's Messages API, with curl or any Anthropic SDK (base URL %[1]s, the token as the API key):
  curl %[1]s/v1/messages -H "x-api-key: %[2]s" -H "anthropic-version: 2023-06-01" \
    -H "Content-Type: application/json" \
    -d '{"model":"claude-haiku-4-5","max_tokens":100,"messages":[{"role":"user","content":"hi"}]}'
  export ANTHROPIC_BASE_URL=%[1]s ANTHROPIC_API_KEY=%[2]s
  python -c 'import anthropic; print(anthropic.Anthropic().messages.create(model="claude-haiku-4-5", max_tokens=100, messages=[{"role": "user", "content": "hi"}]).content[0].text)'

`, url, devToken)
}

// addService runs svc in g: g ends when svc does, and stops svc when
// anything else ends.
func addService(g *run.Group, svc *devstack.Service) {
	g.Add(func() error {
		<-svc.Done()
		return svc.Err()
	}, func(error) {
		_ = svc.Stop()
	})
}
