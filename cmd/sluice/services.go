package main

import (
	"context"
	"errors"
	"io"
	"runtime"

	"github.com/sluicehq/sluice/services/config"
	"github.com/sluicehq/sluice/services/dispatcher"
	"github.com/sluicehq/sluice/services/executor"
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
	sc := serviceConfig{path: *configPath, store: true, force: *configForce}
	if *configPath != "" {
		if sc.file, err = config.Load(*configPath); err != nil {
			return err
		}
	} else if *configForce {
		return errors.New("-config-force needs -config FILE")
	}
	reg := newRegistry()
	stopMetrics, err := serveMetrics(*metricsAddr, reg, log)
	if err != nil {
		return err
	}
	defer stopMetrics()
	nc, err := nf.connectService(ctx, "sluice dispatcher", log)
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
	live, kv, err := sc.resolve(ctx, js, log)
	if errors.Is(err, errStopped) {
		return nil
	}
	if err != nil {
		return err
	}
	d, err := dispatcher.New(nc, dispatcher.Config{
		ID: *id, Shared: live, Logger: log, Registerer: reg, JSDomain: nf.domain,
	})
	if err != nil {
		return err
	}
	return runWatched(ctx, kv, live, log, d.Run)
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
	sc := serviceConfig{path: *configPath}
	if *configPath != "" {
		if sc.file, err = config.Load(*configPath); err != nil {
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
	reg := newRegistry()
	stopMetrics, err := serveMetrics(*metricsAddr, reg, log)
	if err != nil {
		return err
	}
	defer stopMetrics()
	nc, err := nf.connectService(ctx, "sluice executor "+*region, log)
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
	live, kv, err := sc.resolve(ctx, js, log)
	if errors.Is(err, errStopped) {
		return nil
	}
	if err != nil {
		return err
	}
	e, err := executor.New(nc, executor.Config{
		Region: *region, Shared: live, Secrets: secrets,
		Concurrency: *concurrency, Logger: log, Registerer: reg, JSDomain: nf.domain,
	})
	if err != nil {
		return err
	}
	return runWatched(ctx, kv, live, log, e.Run)
}
