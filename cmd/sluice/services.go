package main

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"runtime"

	"github.com/google/uuid"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/sluicehq/sluice/services/bootstrap"
	"github.com/sluicehq/sluice/services/config"
	"github.com/sluicehq/sluice/services/dispatcher"
	"github.com/sluicehq/sluice/services/executor"
	"github.com/sluicehq/sluice/services/microsvc"
	"github.com/sluicehq/sluice/services/tracing"
)

func runDispatcher(ctx context.Context, args []string, _, stderr io.Writer) error {
	fs := newFlagSet("dispatcher", stderr)
	var nf natsFlags
	nf.register(fs)
	configPath := fs.String("config", "", "bootstrap configuration file (YAML): stored in KV if KV holds none; once KV holds one, KV wins. "+
		"Default: read the configuration from KV, waiting until one is stored")
	configForce := fs.Bool("config-force", false, "store --config FILE in KV even over the configuration KV holds (replaces the live one)")
	id := fs.String("id", "", "name of this dispatcher in logs (default: random)")
	metricsAddr := fs.String("metrics", ":9464", "address to serve Prometheus metrics on; empty for none")
	logLevel := fs.String("log-level", "info", "debug, info, warn or error")
	if err := parse(fs, args); err != nil {
		return err
	}
	log, err := newLogger(stderr, *logLevel)
	if err != nil {
		return err
	}
	sc := bootstrap.Config{Path: *configPath, Store: true, Force: *configForce}
	if *configPath != "" {
		if sc.File, err = config.Load(*configPath); err != nil {
			return err
		}
	} else if *configForce {
		return errors.New("-config-force needs -config FILE")
	}
	if *id == "" {
		*id = uuid.NewString()[:8] // as the dispatcher would, so `nats micro info` shows it
	}
	tracers := newTracers(log)
	defer tracers.shutdown()
	return serveService(ctx, "sluice dispatcher", &nf, sc, *metricsAddr, log, func(nc *nats.Conn, live *config.Live, reg prometheus.Registerer) (func(context.Context) error, error) {
		d, err := dispatcher.New(nc, dispatcher.Config{
			ID: *id, Shared: live, Logger: log, Registerer: reg, JSDomain: nf.domain,
			TracerProvider: tracers.provider(tracing.ServiceDispatcher),
		})
		if err != nil {
			return nil, err
		}
		return microsvc.Wrap(nc, microsvc.Info{Kind: microsvc.KindDispatcher, Metadata: map[string]string{"id": *id}}, d.Run)
	})
}

func runExecutor(ctx context.Context, args []string, _, stderr io.Writer) error {
	fs := newFlagSet("executor", stderr)
	var nf natsFlags
	nf.register(fs)
	configPath := fs.String("config", "", "bootstrap configuration file (YAML), used until KV holds one; once KV holds one, KV wins. "+
		"Default: read the configuration from KV, waiting until one is stored")
	region := fs.String("region", "", "region whose work this executor takes (required)")
	secretsPath := fs.String("secrets", "", "YAML file mapping key names to secrets, read again when it changes; names not in it are read from the environment")
	concurrency := fs.Int("concurrency", 16*runtime.GOMAXPROCS(0), "most provider requests open at once")
	metricsAddr := fs.String("metrics", ":9465", "address to serve Prometheus metrics on; empty for none")
	logLevel := fs.String("log-level", "info", "debug, info, warn or error")
	if err := parse(fs, args); err != nil {
		return err
	}
	if *region == "" {
		return errors.New("-region is required")
	}
	log, err := newLogger(stderr, *logLevel)
	if err != nil {
		return err
	}
	sc := bootstrap.Config{Path: *configPath}
	if *configPath != "" {
		if sc.File, err = config.Load(*configPath); err != nil {
			return err
		}
	}
	secrets := executor.SecretsFromEnv()
	if *secretsPath != "" {
		file, err := executor.OpenSecretsFile(*secretsPath, log)
		if err != nil {
			return err
		}
		secrets = executor.FirstOf(file.Lookup, secrets)
	}
	tracers := newTracers(log)
	defer tracers.shutdown()
	return serveService(ctx, "sluice executor "+*region, &nf, sc, *metricsAddr, log, func(nc *nats.Conn, live *config.Live, reg prometheus.Registerer) (func(context.Context) error, error) {
		e, err := executor.New(nc, executor.Config{
			Region: *region, Shared: live, Secrets: secrets,
			Concurrency: *concurrency, Logger: log, Registerer: reg, JSDomain: nf.domain,
			TracerProvider: tracers.provider(tracing.ServiceExecutor),
		})
		if err != nil {
			return nil, err
		}
		return microsvc.Wrap(nc, microsvc.Info{Kind: microsvc.KindExecutor, Metadata: map[string]string{"region": *region}}, e.Run)
	})
}

// serveService runs a long-running service: it serves metrics, connects to
// NATS (waiting for it), resolves the live configuration (as
// services/bootstrap decides, logging to log), builds the
// service with build, and runs it until ctx ends, following configuration
// changes. A service stopped while it waits returns nil.
func serveService(ctx context.Context, name string, nf *natsFlags, sc bootstrap.Config, metricsAddr string, log *slog.Logger,
	build func(nc *nats.Conn, live *config.Live, reg prometheus.Registerer) (run func(context.Context) error, err error)) error {
	sc.Logger = log
	reg := newRegistry()
	stopMetrics, err := serveMetrics(metricsAddr, reg, log)
	if err != nil {
		return err
	}
	defer stopMetrics()
	nc, err := nf.connectService(ctx, name, log)
	if errors.Is(err, errStopped) {
		return nil
	}
	if err != nil {
		return err
	}
	defer nc.Close()
	js, err := nf.jetstream(nc)
	if err != nil {
		return err
	}
	live, kv, err := bootstrap.Resolve(ctx, js, sc)
	if errors.Is(err, bootstrap.ErrStopped) {
		return nil
	}
	if err != nil {
		return err
	}
	run, err := build(nc, live, reg)
	if err != nil {
		return err
	}
	return runWatched(ctx, kv, live, log, run)
}

// runWatched runs a service while a watcher keeps live up to date with the
// configuration in kv, and returns once both have stopped.
func runWatched(ctx context.Context, kv jetstream.KeyValue, live *config.Live, log *slog.Logger, run func(context.Context) error) error {
	wctx, stop := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() {
		defer close(done)
		_ = config.Watch(wctx, kv, live, log.With("component", "config"))
	}()
	err := run(ctx)
	stop()
	<-done
	return err
}
