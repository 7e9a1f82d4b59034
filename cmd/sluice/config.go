package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"sort"
	"strings"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"go.yaml.in/yaml/v3"

	"github.com/sluicehq/sluice/messages"
	"github.com/sluicehq/sluice/services/bootstrap"
	"github.com/sluicehq/sluice/services/config"
)

// configCommands are the subcommands of `sluice config`.
var configCommands = map[string]command{
	"apply": {"validate a configuration file and make it live in every service", runConfigApply},
	"get":   {"print the live configuration", runConfigGet},
	"check": {"validate a configuration file (no NATS needed)", runConfigCheck},
}

// configSummary says what `sluice config` does.
const configSummary = "apply, get or check the live configuration"

// natsTimeout bounds the NATS requests of the config commands.
const natsTimeout = 30 * time.Second

func runConfig(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	if len(args) == 0 {
		configUsage(stderr)
		return exitUsage
	}
	switch args[0] {
	case "-h", "-help", "--help":
		configUsage(stdout)
		return nil
	case "help":
		// sluice config help [command] is sluice help config [command].
		if len(args) == 1 {
			configUsage(stdout)
			return nil
		}
		if len(args) > 2 {
			fmt.Fprintf(stderr, "sluice config help: unexpected arguments: %s\n\n", strings.Join(args[2:], " "))
			configUsage(stderr)
			return exitUsage
		}
		args = []string{args[1], "-h"}
	}
	cmd, ok := configCommands[args[0]]
	if !ok {
		fmt.Fprintf(stderr, "sluice config: unknown command %q\n\n", args[0])
		configUsage(stderr)
		return exitUsage
	}
	if err := cmd.run(ctx, args[1:], stdout, stderr); err != nil {
		withSummary(err, cmd.summary)
		var code exitCode
		if errors.As(err, &code) || errors.Is(err, flag.ErrHelp) {
			return err
		}
		return fmt.Errorf("%s: %w", args[0], err)
	}
	return nil
}

func configUsage(w io.Writer) {
	fmt.Fprintln(w, "usage: sluice config <command> [flags]")
	fmt.Fprintln(w)
	fmt.Fprintln(w, upperFirst(configSummary)+".")
	fmt.Fprintln(w)
	names := make([]string, 0, len(configCommands))
	for name := range configCommands {
		names = append(names, name)
	}
	sort.Strings(names)
	for _, name := range names {
		fmt.Fprintf(w, "  %-6s %s\n", name, configCommands[name].summary)
	}
	fmt.Fprintln(w)
	fmt.Fprintln(w, "Run 'sluice help config <command>' or 'sluice config <command> -h' for its flags.")
}

// problemsError prints a configuration's problems one per line under a
// header; other errors stay on the header's line.
type problemsError struct {
	header string
	err    error
	footer string
}

func (e *problemsError) Error() string {
	var b strings.Builder
	b.WriteString(e.header)
	var verr *config.ValidationError
	if errors.As(e.err, &verr) {
		b.WriteString(":")
		for _, p := range verr.Problems {
			b.WriteString("\n  " + p.Error())
		}
	} else {
		b.WriteString(": " + e.err.Error())
	}
	if e.footer != "" {
		b.WriteString("\n" + e.footer)
	}
	return b.String()
}

func (e *problemsError) Unwrap() error { return e.err }

// loadFile reads and validates a configuration file.
func loadFile(path string) (*config.Config, error) {
	cfg, err := config.Load(path)
	if err != nil {
		var verr *config.ValidationError
		if errors.As(err, &verr) {
			return nil, &problemsError{header: "invalid configuration " + path, err: verr}
		}
		return nil, err
	}
	return cfg, nil
}

func runConfigCheck(_ context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlagSet("config check", stderr)
	file := fs.String("f", "", "configuration file (YAML) to validate (required)")
	if err := parse(fs, args); err != nil {
		return err
	}
	if *file == "" {
		return errors.New("-f FILE is required")
	}
	cfg, err := loadFile(*file)
	if err != nil {
		return err
	}
	fmt.Fprintf(stdout, "%s is valid: %s\n", *file, summary(cfg))
	return nil
}

// summary describes a configuration in one line.
func summary(cfg *config.Config) string {
	deployments := 0
	for _, p := range cfg.Pools {
		deployments += len(p.Deployments)
	}
	return fmt.Sprintf("%s, %s in %s %s, %s",
		count(len(cfg.Pools), "pool"), count(deployments, "deployment"),
		plural(len(cfg.Regions()), "region"), strings.Join(cfg.Regions(), ", "), count(len(cfg.Teams), "team"))
}

func count(n int, noun string) string { return fmt.Sprintf("%d %s", n, plural(n, noun)) }

func plural(n int, noun string) string {
	if n == 1 {
		return noun
	}
	return noun + "s"
}

func runConfigApply(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlagSet("config apply", stderr)
	var nf natsFlags
	nf.register(fs)
	file := fs.String("f", "", "configuration file (YAML) to store (required)")
	force := fs.Bool("force", false, "store even if no executor serves a region a deployment names (to bootstrap a region before its executors start)")
	ifRevision := fs.Int64("if-revision", -1, "store only if the live configuration is at this revision (0: only if none is stored); default: the revision read when the command starts")
	regionWait := fs.Duration("region-wait", 2*time.Second, "how long to look for an executor serving each region before refusing")
	if err := parse(fs, args); err != nil {
		return err
	}
	if *file == "" {
		return errors.New("-f FILE is required")
	}
	cfg, err := loadFile(*file)
	if err != nil {
		var pe *problemsError
		if errors.As(err, &pe) {
			pe.footer = "nothing was stored"
			return pe
		}
		return fmt.Errorf("%w\nnothing was stored", err)
	}
	nc, js, err := nf.connectJetStream("sluice config apply")
	if err != nil {
		return err
	}
	defer nc.Close()
	ctx, cancel := context.WithTimeout(ctx, natsTimeout)
	defer cancel()
	done, err := bootstrap.Apply(ctx, js, bootstrap.Change{File: cfg, IfRevision: *ifRevision, Force: *force, RegionWait: *regionWait})
	switch {
	case errors.Is(err, bootstrap.ErrUnserved):
		return &problemsError{header: "refused " + *file, err: err, footer: "nothing was stored"}
	case errors.Is(err, config.ErrConflict):
		return fmt.Errorf("%w\n(see it with `sluice config get`; apply with --if-revision N to replace revision N)\nnothing was stored", err)
	case err != nil:
		return err
	case done.Unchanged:
		fmt.Fprintf(stdout, "%s is already live: revision %d (nothing stored)\n", *file, done.Revision)
		return nil
	}
	if done.Unserved != nil {
		fmt.Fprintf(stderr, "%s\n", &problemsError{header: "warning: stored anyway (--force); calls routed to these regions wait until their executors start", err: done.Unserved})
	}
	was := "no configuration was stored before"
	if done.Replaced > 0 {
		was = fmt.Sprintf("replaced revision %d", done.Replaced)
	}
	fmt.Fprintf(stdout, "applied %s: revision %d (%s); %s\n", *file, done.Revision, was, summary(cfg))
	return nil
}

func runConfigGet(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlagSet("config get", stderr)
	var nf natsFlags
	nf.register(fs)
	asJSON := fs.Bool("json", false, `print JSON: {"revision": N, "config": {...}}`)
	if err := parse(fs, args); err != nil {
		return err
	}
	nc, js, err := nf.connectJetStream("sluice config get")
	if err != nil {
		return err
	}
	defer nc.Close()
	ctx, cancel := context.WithTimeout(ctx, natsTimeout)
	defer cancel()
	const fix = "store one with `sluice config apply -f FILE`, or start a dispatcher with --config FILE"
	kv, err := js.KeyValue(ctx, messages.BucketConfig)
	if errors.Is(err, jetstream.ErrBucketNotFound) {
		return fmt.Errorf("no configuration: KV bucket %s does not exist (no sluice service has run against %s); %s", messages.BucketConfig, nf.server, fix)
	}
	if err != nil {
		return fmt.Errorf("open KV %s: %w", messages.BucketConfig, err)
	}
	cfg, rev, err := config.Fetch(ctx, kv)
	if errors.Is(err, config.ErrNotStored) {
		return fmt.Errorf("%w; %s", err, fix)
	}
	if err != nil {
		return err
	}
	// Say so if a newer revision is stored but ignored for being invalid.
	if e, err := kv.Get(ctx, config.Key); err == nil && e.Revision() != rev {
		_, perr := config.Parse(e.Value())
		fmt.Fprintf(stderr, "warning: revision %d, stored after the live one, is invalid and ignored by the services: %v\n", e.Revision(), perr)
	}
	data, err := cfg.Marshal()
	if err != nil {
		return err
	}
	if !*asJSON {
		fmt.Fprintf(stdout, "# sluice configuration, revision %d in KV %s\n%s", rev, messages.BucketConfig, data)
		return nil
	}
	var tree any
	if err := yaml.Unmarshal(data, &tree); err != nil {
		return err
	}
	out, err := json.MarshalIndent(map[string]any{"revision": rev, "config": tree}, "", "  ")
	if err != nil {
		return err
	}
	fmt.Fprintf(stdout, "%s\n", out)
	return nil
}
