package main

import (
	"context"
	"log/slog"
	"os"
	"sync"
	"time"

	"go.opentelemetry.io/otel/trace"

	"github.com/sluicehq/sluice/services/tracing"
)

// tracers are the TracerProviders of the services of one process, one per
// service name so that each keeps its own service.name (`sluice dev` runs
// them all), built from the OTEL_* environment: off unless an OTLP
// endpoint is set.
type tracers struct {
	log *slog.Logger
	mu  sync.Mutex
	by  map[string]*tracing.Provider
}

func newTracers(log *slog.Logger) *tracers {
	return &tracers{log: log, by: map[string]*tracing.Provider{}}
}

// provider is the TracerProvider of service. A configuration the
// exporter refuses is logged, and the service runs without traces rather
// than not at all.
func (t *tracers) provider(service string) trace.TracerProvider {
	t.mu.Lock()
	defer t.mu.Unlock()
	if p, ok := t.by[service]; ok {
		return p
	}
	p, err := tracing.FromEnv(context.Background(), service)
	if err != nil {
		t.log.Error("tracing off", "service", service, "err", err)
		p = tracing.Off()
	} else if tracing.Enabled(os.Getenv) {
		t.log.Info("tracing on", "service", service)
	}
	t.by[service] = p
	return p
}

// shutdown exports the spans not sent yet, for a few seconds at most.
func (t *tracers) shutdown() {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	t.mu.Lock()
	defer t.mu.Unlock()
	for service, p := range t.by {
		if err := p.Shutdown(ctx); err != nil {
			t.log.Warn("tracing: export the last spans", "service", service, "err", err)
		}
	}
}
