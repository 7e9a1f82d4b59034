package main

import (
	"bytes"
	"context"
	"io"
	"net"
	"slices"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/sluicehq/sluice/services/devstack"
)

// hang bounds every wait in these tests. It detects a hang; it is not a
// speed assertion.
const hang = 30 * time.Second

// syncBuffer is a bytes.Buffer safe for a command writing in one goroutine
// while the test reads in another.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// freeAddr returns a loopback address with a port that was free a moment
// ago.
func freeAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	if err := ln.Close(); err != nil {
		t.Fatal(err)
	}
	return addr
}

type runFunc func(ctx context.Context, args []string, stdout, stderr io.Writer) error

// background is a command running in a goroutine until its context is
// cancelled, as it would until Ctrl-C.
type background struct {
	cancel context.CancelFunc
	done   chan struct{}
	err    error
	stdout *syncBuffer
	stderr *syncBuffer
}

// startCommand runs f(args) in a goroutine. When the test ends it is
// cancelled and waited for, if the test did not do so itself.
func startCommand(t *testing.T, f runFunc, args ...string) *background {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	b := &background{cancel: cancel, done: make(chan struct{}), stdout: &syncBuffer{}, stderr: &syncBuffer{}}
	go func() {
		defer close(b.done)
		b.err = f(ctx, args, b.stdout, b.stderr)
	}()
	t.Cleanup(func() {
		cancel()
		select {
		case <-b.done:
		case <-time.After(hang):
			t.Errorf("command %v still running %s after the end of the test", args, hang)
		}
	})
	return b
}

// stop cancels the command as Ctrl-C would and returns its error, failing
// the test if it does not return within hang.
func (b *background) stop(t *testing.T) error {
	t.Helper()
	b.cancel()
	select {
	case <-b.done:
		return b.err
	case <-time.After(hang):
		t.Fatalf("command did not return within %s of being cancelled\nstderr:\n%s", hang, b.stderr)
		return nil
	}
}

// waitOutput waits until the command's stdout contains want, failing if
// the command ends first or hang passes.
func (b *background) waitOutput(t *testing.T, want string) {
	t.Helper()
	b.waitFor(t, "stdout", b.stdout, want)
}

// waitLog is waitOutput for stderr, where the commands log.
func (b *background) waitLog(t *testing.T, want string) {
	t.Helper()
	b.waitFor(t, "stderr", b.stderr, want)
}

func (b *background) waitFor(t *testing.T, name string, buf *syncBuffer, want string) {
	t.Helper()
	deadline := time.Now().Add(hang)
	for !strings.Contains(buf.String(), want) {
		select {
		case <-b.done:
			t.Fatalf("command ended (err %v) before writing %q to %s\nstdout:\n%s\nstderr:\n%s", b.err, want, name, b.stdout, b.stderr)
		case <-time.After(20 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			t.Fatalf("no %q on %s after %s\nstdout:\n%s\nstderr:\n%s", want, name, hang, b.stdout, b.stderr)
		}
	}
}

// startStack starts an embedded NATS server (random port, data in a
// temporary directory) and the built-in fake provider with the `sluice
// dev` configuration. With services, it also runs a dispatcher and one
// executor per region. Everything stops when the test ends.
func startStack(t *testing.T, services bool) *devstack.Stack {
	t.Helper()
	s, err := devstack.Start(devstack.Options{NATSPort: -1, StoreDir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(s.Close)
	if !services {
		return s
	}
	var svcs []*devstack.Service
	// Stop the services before the stack closes (cleanups run last first).
	t.Cleanup(func() {
		for _, svc := range svcs {
			if err := svc.Stop(); err != nil {
				t.Errorf("%s: %v", svc.Name, err)
			}
		}
	})
	d, err := s.StartDispatcher("test", nil)
	if err != nil {
		t.Fatal(err)
	}
	svcs = append(svcs, d)
	for _, region := range s.Shared.Load().Regions() {
		e, err := s.StartExecutor(region, nil)
		if err != nil {
			t.Fatal(err)
		}
		svcs = append(svcs, e)
	}
	return s
}

// runExecute runs execute(args) and returns its exit code, stdout and
// stderr.
func runExecute(args ...string) (code int, stdout, stderr string) {
	var out, errb bytes.Buffer
	code = execute(args, &out, &errb)
	return code, out.String(), errb.String()
}

func TestUsageListsEveryCommand(t *testing.T) {
	names := make([]string, 0, len(commands))
	for name := range commands {
		names = append(names, name)
	}
	sort.Strings(names)
	for _, want := range []string{"bench", "call", "config", "dev", "dispatcher", "executor", "fakeprovider", "gateway", "token"} {
		if _, ok := commands[want]; !ok {
			t.Errorf("command %q is missing", want)
		}
	}

	for _, tc := range []struct {
		name    string
		args    []string
		code    int
		unknown string
	}{
		// Asked for, help goes to stdout and succeeds; without a command,
		// or with an unknown one, it goes to stderr and exits 2, as go does.
		{name: "-h", args: []string{"-h"}},
		{name: "-help", args: []string{"-help"}},
		{name: "--help", args: []string{"--help"}},
		{name: "help", args: []string{"help"}},
		{name: "no args", code: 2},
		{name: "unknown command", args: []string{"frobnicate"}, code: 2, unknown: "frobnicate"},
		{name: "help unknown command", args: []string{"help", "frobnicate"}, code: 2, unknown: "frobnicate"},
		{name: "unknown flag", args: []string{"--frobnicate"}, code: 2, unknown: "--frobnicate"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			code, stdout, stderr := runExecute(tc.args...)
			if code != tc.code {
				t.Errorf("exit code %d, want %d", code, tc.code)
			}
			usage, other := stdout, stderr
			if tc.code != 0 {
				usage, other = stderr, stdout
			}
			if other != "" {
				t.Errorf("usage should be alone on %s; the other stream has %q", map[bool]string{true: "stdout", false: "stderr"}[tc.code == 0], other)
			}
			if !strings.Contains(usage, "usage: sluice <command>") {
				t.Errorf("no usage line:\n%s", usage)
			}
			for _, name := range names {
				line := "  " + name + " "
				if !strings.Contains(usage, line) || !strings.Contains(usage, commands[name].summary) {
					t.Errorf("usage does not list %q with its summary:\n%s", name, usage)
				}
			}
			if tc.unknown != "" && !strings.Contains(stderr, `unknown command "`+tc.unknown+`"`) {
				t.Errorf("stderr does not name the unknown command:\n%s", stderr)
			}
		})
	}
}

// Every command and subcommand prints its usage on stdout and exits 0
// when asked with -h, -help, --help, `sluice help ...` or (for
// subcommands) `sluice config help ...`; the usage names the command and
// says what it does.
func TestHelpOfEveryCommand(t *testing.T) {
	type target struct {
		path    []string // e.g. [config apply]
		summary string
	}
	var targets []target
	for name, c := range commands {
		targets = append(targets, target{[]string{name}, c.summary})
		for sub, sc := range subcommands[name] {
			targets = append(targets, target{[]string{name, sub}, sc.summary})
		}
	}
	for name := range subcommands {
		if _, ok := commands[name]; !ok {
			t.Errorf("subcommands lists %q, which is not a command", name)
		}
	}
	for _, tg := range targets {
		cmd := strings.Join(tg.path, " ")
		forms := [][]string{
			append(slices.Clone(tg.path), "-h"),
			append(slices.Clone(tg.path), "-help"),
			append(slices.Clone(tg.path), "--help"),
			append([]string{"help"}, tg.path...),
		}
		if len(tg.path) == 2 {
			forms = append(forms, []string{tg.path[0], "help", tg.path[1]})
		}
		for _, args := range forms {
			t.Run(strings.Join(args, " "), func(t *testing.T) {
				code, stdout, stderr := runExecute(args...)
				if code != 0 {
					t.Errorf("exit code %d, want 0\nstderr:\n%s", code, stderr)
				}
				if stderr != "" {
					t.Errorf("stderr should be empty, got:\n%s", stderr)
				}
				if !strings.Contains(stdout, "usage: sluice "+cmd+" ") {
					t.Errorf("stdout has no usage of sluice %s:\n%s", cmd, stdout)
				}
				if !strings.Contains(stdout, upperFirst(tg.summary)) {
					t.Errorf("usage does not say what sluice %s does (%q):\n%s", cmd, tg.summary, stdout)
				}
			})
		}
	}
}

// A subcommand's help lists its flags.
func TestSubcommandHelp(t *testing.T) {
	for _, tc := range []struct {
		cmd   string
		flags []string
	}{
		{"call", []string{"-team", "-tier", "-model", "-prompt", "-body", "-timeout", "-server"}},
		{"dev", []string{"-addr", "-data", "-metrics", "-print-config", "-gateway-addr"}},
		{"gateway", []string{"-addr", "-config", "-server", "-creds", "-metrics", "-shutdown-grace", "-default-timeout"}},
		{"token", []string{"-team"}},
		{"dispatcher", []string{"-config", "-server", "-metrics"}},
		{"executor", []string{"-config", "-region", "-secrets", "-server"}},
		{"fakeprovider", []string{"-addr", "-rpm", "-tpm"}},
		{"bench", []string{"-calls", "-rate", "-latency-calls", "-json"}},
		{"health", []string{"-enable", "-json", "-server"}},
		{"config apply", []string{"-f", "-force", "-if-revision", "-region-wait", "-server", "-creds"}},
		{"config get", []string{"-json", "-server"}},
		{"config check", []string{"-f"}},
	} {
		t.Run(tc.cmd, func(t *testing.T) {
			code, stdout, _ := runExecute(append(strings.Fields(tc.cmd), "-h")...)
			if code != 0 {
				t.Errorf("exit code %d, want 0", code)
			}
			for _, f := range tc.flags {
				if !strings.Contains(stdout, f) {
					t.Errorf("usage does not list %s:\n%s", f, stdout)
				}
			}
		})
	}
}

// An unknown flag, a bad flag value or a stray argument is a usage error
// on every command and subcommand: the problem and the usage on stderr,
// exit 2, and nothing run.
func TestUsageErrors(t *testing.T) {
	var cmds [][]string
	for name := range commands {
		cmds = append(cmds, []string{name})
		for sub := range subcommands[name] {
			cmds = append(cmds, []string{name, sub})
		}
	}
	for _, path := range cmds {
		cmd := strings.Join(path, " ")
		for _, tc := range []struct {
			args []string
			want string
		}{
			{[]string{"--no-such-flag"}, "flag provided but not defined: -no-such-flag"},
			{[]string{"-no-such-flag=1"}, "flag provided but not defined: -no-such-flag"},
		} {
			args := append(slices.Clone(path), tc.args...)
			t.Run(strings.Join(args, " "), func(t *testing.T) {
				code, stdout, stderr := runExecute(args...)
				if code != 2 {
					t.Errorf("exit code %d, want 2", code)
				}
				if stdout != "" {
					t.Errorf("stdout should be empty, got:\n%s", stdout)
				}
				if _, sub := subcommands[cmd]; sub {
					if !strings.Contains(stderr, `unknown command "`+tc.args[0]+`"`) || !strings.Contains(stderr, "usage: sluice "+cmd+" <command>") {
						t.Errorf("stderr does not name the unknown command and give the usage:\n%s", stderr)
					}
					return
				}
				if !strings.Contains(stderr, tc.want) || !strings.Contains(stderr, "usage: sluice "+cmd+" ") {
					t.Errorf("stderr does not say %q and give the usage of sluice %s:\n%s", tc.want, cmd, stderr)
				}
			})
		}
	}
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"call", "--team", "demo", "--prompt", "hi", "extra"}, "unexpected arguments: extra"},
		{[]string{"token", "--team"}, "flag needs an argument: -team"},
		{[]string{"fakeprovider", "--rpm", "many"}, "invalid value \"many\" for flag -rpm"},
		{[]string{"help", "call", "extra"}, "unexpected arguments: extra"},
		{[]string{"help", "config", "frobnicate"}, `unknown command "frobnicate"`},
	} {
		t.Run(strings.Join(tc.args, " "), func(t *testing.T) {
			code, _, stderr := runExecute(tc.args...)
			if code != 2 {
				t.Errorf("exit code %d, want 2", code)
			}
			if !strings.Contains(stderr, tc.want) || !strings.Contains(stderr, "usage: sluice ") {
				t.Errorf("stderr does not say %q with the usage:\n%s", tc.want, stderr)
			}
		})
	}
}

// A command that cannot do what it was asked exits 1 and names the problem.
func TestBadArguments(t *testing.T) {
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"dev", "--log-level", "loud"}, "-log-level"},
		{[]string{"dev", "--addr", "no-port"}, "-addr"},
	} {
		t.Run(strings.Join(tc.args, " "), func(t *testing.T) {
			code, _, stderr := runExecute(tc.args...)
			if code != 1 {
				t.Errorf("exit code %d, want 1", code)
			}
			if !strings.Contains(stderr, tc.want) {
				t.Errorf("stderr does not say %q:\n%s", tc.want, stderr)
			}
		})
	}
}
