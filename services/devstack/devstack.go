// Package devstack owns "sluice in one process": an embedded nats-server
// with JetStream, the fake provider, and any number of dispatchers and
// executors, each on its own NATS connection as if it were its own process.
// `sluice dev` and `sluice bench` run on it, and so do the tests that start
// whole sluice clusters inside one test process.
package devstack

import (
	"context"
	_ "embed"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"strings"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
	"go.opentelemetry.io/otel/trace"

	"github.com/sluicehq/sluice/services/config"
	"github.com/sluicehq/sluice/services/embedded"
	"github.com/sluicehq/sluice/services/executor"
	"github.com/sluicehq/sluice/services/fakeprovider"
	"github.com/sluicehq/sluice/services/streams"
)

//go:embed dev.yaml
var devYAML string

// DevConfigYAML is the built-in configuration of `sluice dev`, for a fake
// provider at fakeURL.
func DevConfigYAML(fakeURL string) string {
	return strings.ReplaceAll(devYAML, "${FAKE_URL}", strings.TrimSuffix(fakeURL, "/"))
}

// Options configure a Stack.
type Options struct {
	// NATSHost and NATSPort are where the embedded server listens for
	// clients. Defaults 127.0.0.1 and 4222; -1 picks a free port.
	NATSHost string
	NATSPort int
	// StoreDir holds JetStream's files. Default: a new temporary directory,
	// removed by Close.
	StoreDir string
	// FakeAddr is where the fake provider listens. Default 127.0.0.1:0.
	FakeAddr string
	// Fake configures the fake provider. Unless it sets Keys or
	// AcceptAnyKey, it gets one key per deployment secret, limited exactly
	// as the deployment is configured.
	Fake fakeprovider.Config
	// ConfigYAML builds the shared configuration from the fake provider's
	// URL. Start stores it in KV over whatever is there. Default
	// DevConfigYAML.
	ConfigYAML func(fakeURL string) string
	// NATSLogs switches the embedded server's logs on.
	NATSLogs bool
	Logger   *slog.Logger
	// Registerer receives the metrics of every service. Default: none.
	Registerer prometheus.Registerer
	// TracerProvider, if not nil, gives the TracerProvider of each service
	// started on the stack, by its service name (tracing.ServiceGateway,
	// ...). Default: none, no spans.
	TracerProvider func(service string) trace.TracerProvider
}

// Stack is a running embedded NATS server and fake provider, and the
// configuration and secrets that services started on it use.
type Stack struct {
	NATS    *server.Server
	Fake    *fakeprovider.Server
	FakeURL string
	// Shared is the live configuration every service of the stack reads.
	// Start stores the stack's configuration in KV (SLUICE_CONFIG), and a
	// watcher keeps Shared up to date with what is stored there, so
	// `sluice config apply` (or config.Apply) changes it for every
	// service of the stack within milliseconds.
	Shared *config.Live
	// Secrets resolves the configuration's key names for the executors.
	Secrets  executor.Secrets
	StoreDir string

	opts     Options
	ownsDir  bool
	stopFake context.CancelFunc
	fakeDone chan struct{}
	// configNC is the connection of the configuration watcher.
	configNC  *nats.Conn
	stopWatch context.CancelFunc
	watchDone chan struct{}
}

// tracerProvider is the TracerProvider of service, nil when the stack has
// none.
func (s *Stack) tracerProvider(service string) trace.TracerProvider {
	if s.opts.TracerProvider == nil {
		return nil
	}
	return s.opts.TracerProvider(service)
}

// Start starts the embedded server and the fake provider.
func Start(opts Options) (*Stack, error) {
	if opts.NATSHost == "" {
		opts.NATSHost = "127.0.0.1"
	}
	if opts.NATSPort == 0 {
		opts.NATSPort = 4222
	}
	if opts.FakeAddr == "" {
		opts.FakeAddr = "127.0.0.1:0"
	}
	if opts.ConfigYAML == nil {
		opts.ConfigYAML = DevConfigYAML
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	s := &Stack{opts: opts, StoreDir: opts.StoreDir}
	if s.StoreDir == "" {
		dir, err := os.MkdirTemp("", "sluice-dev-")
		if err != nil {
			return nil, fmt.Errorf("devstack: %w", err)
		}
		s.StoreDir, s.ownsDir = dir, true
	}

	// The configuration names the fake provider's address, and the fake's
	// keys come from the configuration: listen first, then build both.
	ln, err := net.Listen("tcp", opts.FakeAddr)
	if err != nil {
		s.Close()
		return nil, fmt.Errorf("devstack: fake provider: %w", err)
	}
	s.FakeURL = "http://" + ln.Addr().String()
	cfg, err := config.Parse([]byte(opts.ConfigYAML(s.FakeURL)))
	if err != nil {
		ln.Close()
		s.Close()
		return nil, fmt.Errorf("devstack: %w", err)
	}
	s.Shared = config.NewLive(cfg)
	secrets := DevSecrets(cfg)
	s.Secrets = executor.SecretsFromMap(secrets)
	fakeCfg := opts.Fake
	if len(fakeCfg.Keys) == 0 && !fakeCfg.AcceptAnyKey {
		fakeCfg.Keys = map[string]fakeprovider.KeyConfig{}
		for _, dep := range allDeployments(cfg) {
			fakeCfg.Keys[secrets[dep.Key]] = fakeprovider.KeyConfig{RPM: dep.RPM, TPM: dep.TPM}
		}
	}
	if fakeCfg.Logger == nil {
		fakeCfg.Logger = opts.Logger
	}
	if s.Fake, err = fakeprovider.New(fakeCfg); err != nil {
		ln.Close()
		s.Close()
		return nil, fmt.Errorf("devstack: fake provider: %w", err)
	}
	fakeCtx, stopFake := context.WithCancel(context.Background())
	s.stopFake = stopFake
	s.fakeDone = make(chan struct{})
	go func() {
		defer close(s.fakeDone)
		if err := s.Fake.Serve(fakeCtx, ln); err != nil {
			opts.Logger.Error("fake provider", "err", err)
		}
	}()

	s.NATS, err = embedded.Start(embedded.Config{
		Host: opts.NATSHost, Port: opts.NATSPort, StoreDir: s.StoreDir, Logs: opts.NATSLogs,
	})
	if err != nil {
		s.Close()
		return nil, fmt.Errorf("devstack: %w", err)
	}
	// Create the streams now, so clients may publish before any service
	// has started, and make the configuration live in KV.
	if err := s.ensureStreams(); err != nil {
		s.Close()
		return nil, err
	}
	return s, nil
}

// ensureStreams creates sluice's streams, stores the stack's configuration
// in KV over whatever is there (it names the fake provider's address, new
// on every start), and starts the watcher that keeps Shared up to date.
func (s *Stack) ensureStreams() error {
	nc, err := s.Connect("sluice devstack config")
	if err != nil {
		return fmt.Errorf("devstack: %w", err)
	}
	s.configNC = nc
	js, err := jetstream.New(nc)
	if err != nil {
		return fmt.Errorf("devstack: %w", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cfg := s.Shared.Load()
	res, err := streams.Ensure(ctx, js, cfg.Streams)
	if err != nil {
		return err
	}
	rev, err := config.Apply(ctx, res.Config, cfg)
	if err != nil {
		return fmt.Errorf("devstack: store the configuration: %w", err)
	}
	s.Shared.StoreRevision(cfg, rev)
	watchCtx, stop := context.WithCancel(context.Background())
	s.stopWatch, s.watchDone = stop, make(chan struct{})
	go func() {
		defer close(s.watchDone)
		_ = config.Watch(watchCtx, res.Config, s.Shared, s.opts.Logger.With("component", "config"))
	}()
	return nil
}

// DevSecrets makes up a secret for every key name in cfg: the fake
// provider accepts any bearer token, and keys each bucket by it.
func DevSecrets(cfg *config.Config) map[string]string {
	m := map[string]string{}
	for _, dep := range allDeployments(cfg) {
		m[dep.Key] = "sk-fake-" + strings.ToLower(strings.ReplaceAll(dep.Key, "_", "-"))
	}
	return m
}

func allDeployments(cfg *config.Config) []*config.Deployment {
	var out []*config.Deployment
	for _, p := range cfg.Pools {
		out = append(out, p.Deployments...)
	}
	return out
}

// RestartNATS shuts the embedded server down and starts it again on the
// same address and data, as an operator restarting it would. Services and
// clients reconnect on their own.
func (s *Stack) RestartNATS() error {
	addr := s.NATS.Addr().(*net.TCPAddr)
	s.NATS.Shutdown()
	s.NATS.WaitForShutdown()
	srv, err := embedded.Start(embedded.Config{
		Host: s.opts.NATSHost, Port: addr.Port, StoreDir: s.StoreDir, Logs: s.opts.NATSLogs,
	})
	if err != nil {
		return fmt.Errorf("devstack: restart NATS: %w", err)
	}
	s.NATS = srv
	return nil
}

// ClientURL is the embedded server's URL for NATS clients.
func (s *Stack) ClientURL() string { return s.NATS.ClientURL() }

// Connect opens a new NATS connection to the stack.
func (s *Stack) Connect(name string) (*nats.Conn, error) {
	return nats.Connect(s.ClientURL(), nats.Name(name), nats.MaxReconnects(-1))
}

// Close stops the fake provider and the NATS server, and removes the
// store directory if Start made it. Stop the services first.
func (s *Stack) Close() {
	var errs []error
	if s.stopWatch != nil {
		s.stopWatch()
		<-s.watchDone
	}
	if s.configNC != nil {
		s.configNC.Close()
	}
	if s.Fake != nil {
		errs = append(errs, s.Fake.Close())
		s.stopFake()
		<-s.fakeDone
	}
	if s.NATS != nil {
		s.NATS.Shutdown()
		s.NATS.WaitForShutdown()
	}
	if s.ownsDir {
		errs = append(errs, os.RemoveAll(s.StoreDir))
	}
	if err := errors.Join(errs...); err != nil {
		s.opts.Logger.Warn("devstack close", "err", err)
	}
}
