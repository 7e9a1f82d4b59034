// Command sluice runs sluice's services and tools. Each subcommand is thin:
// it parses flags, wires the packages under services/, and handles signals.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"sort"
	"syscall"
)

// command is one subcommand.
type command struct {
	summary string
	run     func(ctx context.Context, args []string, stdout, stderr io.Writer) error
}

var commands = map[string]command{
	"dev":          {"run everything in one process on an embedded NATS server", runDev},
	"dispatcher":   {"run a dispatcher against a NATS server", runDispatcher},
	"executor":     {"run the executor of one region against a NATS server", runExecutor},
	"gateway":      {"serve the OpenAI-compatible HTTP API, calling sluice over NATS", runGateway},
	"token":        {"make a new gateway token for a team, and the hash to configure", runToken},
	"call":         {"make one call and print its result", runCall},
	"config":       {"apply, get or check the live configuration", runConfig},
	"fakeprovider": {"run a fake OpenAI-compatible provider that enforces rate limits", runFakeProvider},
	"health":       {"show what providers taught sluice about each deployment; re-enable a key", runHealth},
	"status":       {"show queues, headroom, cooldowns and open circuits, live", runStatus},
	"usage":        {"print calls, tokens, errors, 429s and waits per team, pool and tier", runUsage},
	"bench":        {"measure throughput and added latency", runBench},
}

// exitCode lets a command choose its exit status without printing an error
// (sluice call exits 1 on an error result it already printed).
type exitCode int

func (e exitCode) Error() string { return fmt.Sprintf("exit status %d", int(e)) }

func main() {
	os.Exit(execute(os.Args[1:], os.Stdout, os.Stderr))
}

func execute(args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 || args[0] == "-h" || args[0] == "--help" || args[0] == "help" {
		printCommands(stderr)
		return 2
	}
	cmd, ok := commands[args[0]]
	if !ok {
		fmt.Fprintf(stderr, "sluice: unknown command %q\n\n", args[0])
		printCommands(stderr)
		return 2
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	err := cmd.run(ctx, args[1:], stdout, stderr)
	var code exitCode
	switch {
	case err == nil:
		return 0
	case errors.As(err, &code):
		return int(code)
	case errors.Is(err, flag.ErrHelp):
		return 2
	default:
		fmt.Fprintf(stderr, "sluice %s: %v\n", args[0], err)
		return 1
	}
}

func printCommands(w io.Writer) {
	fmt.Fprintln(w, "usage: sluice <command> [flags]")
	fmt.Fprintln(w)
	names := make([]string, 0, len(commands))
	for name := range commands {
		names = append(names, name)
	}
	sort.Strings(names)
	for _, name := range names {
		fmt.Fprintf(w, "  %-13s %s\n", name, commands[name].summary)
	}
	fmt.Fprintln(w)
	fmt.Fprintln(w, "Run 'sluice <command> -h' for its flags.")
}
