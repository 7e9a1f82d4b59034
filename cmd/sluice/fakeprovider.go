package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/sluicehq/sluice/services/fakeprovider"
)

func runFakeProvider(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlagSet("fakeprovider", stderr)
	addr := fs.String("addr", "127.0.0.1:8090", "address to listen on")
	rpm := fs.Int64("rpm", 600, "requests per minute allowed to each key")
	tpm := fs.Int64("tpm", 200000, "tokens per minute allowed to each key")
	quantum := fs.Duration("quantum", fakeprovider.DefaultQuantum, "with --enforce bucket, the window over which limits are enforced (1s like OpenAI; 1m for plain per-minute)")
	enforce := fs.String("enforce", fakeprovider.EnforceBucket, "how limits are enforced: bucket (continuously refilled, like Anthropic) or windows (sliding windows counting the last span, like a provider counting the last minute)")
	windows := fs.String("windows", "", "with --enforce windows, the windows' spans, comma-separated (such as 1s,1m), each allowing rpm*span/1m requests and tpm*span/1m tokens; default 1m. A short window refuses any call of more than its share of --tpm as too large")
	retryAfter := fs.String("retry-after", fakeprovider.RetryAfterFit, "with --enforce windows, the retry hint of a refusal: fit (until the call fits) or reset (until the refusing window is empty, like a strict provider)")
	otherUse := fs.Float64("other-use", 0, "share of every limit, in [0, 1), used by another consumer of each key: the fake admits only the rest while its headers report the full limits")
	latency := fs.Duration("latency", 0, "added to every answer")
	jitter := fs.Duration("latency-jitter", 0, "uniform extra latency")
	errorRate := fs.Float64("error-rate", 0, "fraction of answers that are injected 5xx errors")
	timeoutRate := fs.Float64("timeout-rate", 0, "fraction of requests that hang until the client gives up")
	if err := parse(fs, args); err != nil {
		return err
	}
	set := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { set[f.Name] = true })
	var errs []error
	if *enforce != fakeprovider.EnforceWindows {
		for _, name := range []string{"windows", "retry-after"} {
			if set[name] {
				errs = append(errs, fmt.Errorf("--%s applies to --enforce windows only", name))
			}
		}
	}
	spans, err := parseSpans(*windows)
	if err != nil {
		errs = append(errs, err)
	}
	if err := errors.Join(errs...); err != nil {
		return err
	}
	cfg := fakeprovider.Config{
		AcceptAnyKey: true,
		DefaultKey:   fakeprovider.KeyConfig{RPM: *rpm, TPM: *tpm, OtherUse: *otherUse},
		Quantum:      *quantum, Latency: *latency, LatencyJitter: *jitter,
		ErrorRate: *errorRate, TimeoutRate: *timeoutRate,
		Enforce: *enforce,
	}
	if *enforce == fakeprovider.EnforceWindows {
		cfg.RetryAfter = *retryAfter
		for _, s := range spans {
			cfg.Windows = append(cfg.Windows, fakeprovider.Window{Span: s})
		}
	}
	fake, err := fakeprovider.New(cfg)
	if err != nil {
		return err
	}
	url, err := fake.Start(*addr)
	if err != nil {
		return err
	}
	defer fake.Close()
	fmt.Fprintf(stdout, "fake provider listening on %s (any key; %d RPM and %d TPM per key, %s)\n"+
		"  try: curl %s/v1/chat/completions -H 'Authorization: Bearer sk-test' -d '{\"model\":\"gpt-4o-mini\",\"messages\":[{\"role\":\"user\",\"content\":\"hi\"}]}'\n"+
		"  stats: curl %s/fake/stats\n",
		url, *rpm, *tpm, describeEnforcement(cfg, *otherUse), url, url)
	<-ctx.Done()
	return nil
}

// parseSpans reads --windows: durations separated by commas; "" is none.
func parseSpans(s string) ([]time.Duration, error) {
	if strings.TrimSpace(s) == "" {
		return nil, nil
	}
	var spans []time.Duration
	var errs []error
	for _, part := range strings.Split(s, ",") {
		d, err := time.ParseDuration(strings.TrimSpace(part))
		if err != nil {
			errs = append(errs, fmt.Errorf("--windows: %q is not a duration such as 1s or 1m", part))
			continue
		}
		spans = append(spans, d)
	}
	return spans, errors.Join(errs...)
}

// describeEnforcement says, for the banner, how the limits are enforced.
func describeEnforcement(cfg fakeprovider.Config, otherUse float64) string {
	var b strings.Builder
	if cfg.Enforce == fakeprovider.EnforceWindows {
		spans := []string{fakeprovider.DefaultWindowSpan.String()}
		if len(cfg.Windows) > 0 {
			spans = spans[:0]
			for _, w := range cfg.Windows {
				spans = append(spans, w.Span.String())
			}
		}
		fmt.Fprintf(&b, "sliding windows of %s, retry-after %s", strings.Join(spans, ", "), cfg.RetryAfter)
	} else {
		fmt.Fprintf(&b, "buckets holding %v of the limits", cfg.Quantum)
	}
	if otherUse > 0 {
		fmt.Fprintf(&b, ", %g of each used by another consumer", otherUse)
	}
	return b.String()
}
