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
	"slices"
	"sort"
	"strings"
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
	"config":       {configSummary, runConfig},
	"fakeprovider": {"run a fake OpenAI-compatible provider that enforces rate limits", runFakeProvider},
	"health":       {"show what providers taught sluice about each deployment; re-enable a key", runHealth},
	"status":       {"show queues, headroom, cooldowns and open circuits, live", runStatus},
	"usage":        {"print calls, tokens, errors, 429s and waits per team, pool and tier", runUsage},
	"plan":         {planSummary, runPlan},
	"bench":        {"measure throughput and added latency", runBench},
}

// exitCode lets a command choose its exit status without printing an error
// (sluice call exits 1 on an error result it already printed).
type exitCode int

func (e exitCode) Error() string { return fmt.Sprintf("exit status %d", int(e)) }

func main() {
	os.Exit(execute(os.Args[1:], os.Stdout, os.Stderr))
}

// subcommands are the commands that have commands of their own.
var subcommands = map[string]map[string]command{"config": configCommands}

// execute runs the command line args and returns the exit status: 0 when
// the command succeeded, or printed the usage it was asked for (-h,
// -help, --help, `sluice help [command [subcommand]]`), on stdout; 2 for a
// command line it cannot understand (no command, an unknown command or
// flag, a bad flag value, a stray argument), with the usage on stderr, as
// go and the flag package do; 1 when the command failed.
func execute(args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		printCommands(stderr)
		return int(exitUsage)
	}
	switch args[0] {
	case "-h", "-help", "--help":
		printCommands(stdout)
		return 0
	case "help":
		return help(args[1:], stdout, stderr)
	}
	cmd, ok := commands[args[0]]
	if !ok {
		fmt.Fprintf(stderr, "sluice: unknown command %q\n\n", args[0])
		printCommands(stderr)
		return int(exitUsage)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	err := cmd.run(ctx, args[1:], stdout, stderr)
	var code exitCode
	var usage *helpError
	switch {
	case err == nil:
		return 0
	case errors.As(err, &usage):
		withSummary(usage, cmd.summary)
		usage.print(stdout)
		return 0
	case errors.As(err, &code):
		return int(code)
	case errors.Is(err, flag.ErrHelp):
		return int(exitUsage)
	default:
		fmt.Fprintf(stderr, "sluice %s: %v\n", args[0], err)
		return 1
	}
}

// help runs `sluice help [command [subcommand]]`: the usage of the
// command, as `sluice command [subcommand] -h` prints it.
func help(topic []string, stdout, stderr io.Writer) int {
	if len(topic) == 0 {
		printCommands(stdout)
		return 0
	}
	if most := 1 + min(len(subcommands[topic[0]]), 1); len(topic) > most {
		fmt.Fprintf(stderr, "sluice help: unexpected arguments: %s\n\n", strings.Join(topic[most:], " "))
		fmt.Fprintln(stderr, "usage: sluice help [command [subcommand]]")
		return int(exitUsage)
	}
	return execute(append(slices.Clone(topic), "-h"), stdout, stderr)
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
	fmt.Fprintln(w, "Run 'sluice help <command>' or 'sluice <command> -h' for its usage and flags.")
}
