package main

import (
	"context"
	"fmt"
	"io"

	"github.com/sluicehq/sluice/services/fakeprovider"
)

func runFakeProvider(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlagSet("fakeprovider", stderr)
	addr := fs.String("addr", "127.0.0.1:8090", "address to listen on")
	rpm := fs.Int64("rpm", 600, "requests per minute allowed to each key")
	tpm := fs.Int64("tpm", 200000, "tokens per minute allowed to each key")
	quantum := fs.Duration("quantum", fakeprovider.DefaultQuantum, "window over which limits are enforced (1s like OpenAI; 1m for plain per-minute)")
	latency := fs.Duration("latency", 0, "added to every answer")
	jitter := fs.Duration("latency-jitter", 0, "uniform extra latency")
	errorRate := fs.Float64("error-rate", 0, "fraction of answers that are injected 5xx errors")
	timeoutRate := fs.Float64("timeout-rate", 0, "fraction of requests that hang until the client gives up")
	if err := parse(fs, args); err != nil {
		return err
	}
	fake, err := fakeprovider.New(fakeprovider.Config{
		AcceptAnyKey: true,
		DefaultKey:   fakeprovider.KeyConfig{RPM: *rpm, TPM: *tpm},
		Quantum:      *quantum, Latency: *latency, LatencyJitter: *jitter,
		ErrorRate: *errorRate, TimeoutRate: *timeoutRate,
	})
	if err != nil {
		return err
	}
	url, err := fake.Start(*addr)
	if err != nil {
		return err
	}
	defer fake.Close()
	fmt.Fprintf(stdout, "fake provider listening on %s (any key; %d RPM and %d TPM per key)\n  try: curl %s/v1/chat/completions -H 'Authorization: Bearer sk-test' -d '{\"model\":\"gpt-4o-mini\",\"messages\":[{\"role\":\"user\",\"content\":\"hi\"}]}'\n  stats: curl %s/fake/stats\n", url, *rpm, *tpm, url, url)
	<-ctx.Done()
	return nil
}
