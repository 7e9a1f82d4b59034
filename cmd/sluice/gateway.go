package main

import (
	"context"
	"errors"
	"io"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/sluicehq/sluice/messages"
	"github.com/sluicehq/sluice/services/bootstrap"
	"github.com/sluicehq/sluice/services/config"
	"github.com/sluicehq/sluice/services/gateway"
	"github.com/sluicehq/sluice/services/microsvc"
	"github.com/sluicehq/sluice/services/tracing"
)

func runGateway(ctx context.Context, args []string, _, stderr io.Writer) error {
	fs := newFlagSet("gateway", stderr)
	var nf natsFlags
	nf.register(fs)
	configPath := fs.String("config", "", "bootstrap configuration file (YAML), used until KV holds one; once KV holds one, KV wins. "+
		"Default: read the configuration from KV, waiting until one is stored")
	addr := fs.String("addr", ":8080", "where the gateway listens for HTTP")
	metricsAddr := fs.String("metrics", ":9466", "address to serve Prometheus metrics on; empty for none")
	grace := fs.Duration("shutdown-grace", 30*time.Second, "how long in-flight calls may finish after a signal before they are canceled")
	defaultTimeout := fs.Duration("default-timeout", 0, "deadline of calls whose request sets none (default: the configuration's calls.default_timeout)")
	requests := fs.Bool("requests", true, "also answer requests on "+messages.RequestSubjects+" (a call in one NATS round trip; see services/microsvc)")
	logLevel := fs.String("log-level", "info", "debug, info, warn or error")
	if err := parse(fs, args); err != nil {
		return err
	}
	if *defaultTimeout < 0 {
		return errors.New("-default-timeout must not be negative")
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
	tracers := newTracers(log)
	defer tracers.shutdown()
	return serveService(ctx, "sluice gateway", &nf, sc, *metricsAddr, log, func(nc *nats.Conn, live *config.Live, reg prometheus.Registerer) (func(context.Context) error, error) {
		g, err := gateway.New(nc, gateway.Config{
			Addr: *addr, Shared: live, Logger: log, Registerer: reg, JSDomain: nf.domain,
			ShutdownGrace: *grace, DefaultTimeout: *defaultTimeout,
			TracerProvider: tracers.provider(tracing.ServiceGateway),
		})
		if err != nil {
			return nil, err
		}
		addr, err := g.Listen()
		if err != nil {
			return nil, err
		}
		run := g.Run
		if *requests {
			rq, err := microsvc.New(nc, microsvc.Config{Shared: live, JSDomain: nf.domain, Logger: log, Registerer: reg})
			if err != nil {
				return nil, err
			}
			run = microsvc.Alongside(run, rq.Run)
		}
		return microsvc.Wrap(nc, microsvc.Info{Kind: microsvc.KindGateway, Metadata: map[string]string{"http": addr.String()}}, run)
	})
}
