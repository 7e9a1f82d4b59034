package main

import (
	"bytes"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/sluicehq/sluice/services/streams"
)

// natsFlags are the flags of every command that connects to NATS.
type natsFlags struct {
	server      string
	creds       string
	user        string
	password    string
	tlsCA       string
	tlsCert     string
	tlsKey      string
	domain      string
	inboxPrefix string
}

func (n *natsFlags) register(fs *flag.FlagSet) {
	fs.StringVar(&n.server, "server", envOr("NATS_URL", nats.DefaultURL), "NATS server URL(s), comma-separated (env NATS_URL)")
	fs.StringVar(&n.creds, "creds", os.Getenv("NATS_CREDS"), "NATS credentials file (env NATS_CREDS)")
	fs.StringVar(&n.user, "user", os.Getenv("NATS_USER"), "NATS user, with -password (env NATS_USER)")
	fs.StringVar(&n.password, "password", os.Getenv("NATS_PASSWORD"), "NATS password (env NATS_PASSWORD)")
	fs.StringVar(&n.tlsCA, "tls-ca", os.Getenv("NATS_CA"), "CA certificate to verify the NATS server with (env NATS_CA)")
	fs.StringVar(&n.tlsCert, "tls-cert", os.Getenv("NATS_CERT"), "client certificate, for servers that verify clients (env NATS_CERT)")
	fs.StringVar(&n.tlsKey, "tls-key", os.Getenv("NATS_KEY"), "client certificate's key (env NATS_KEY)")
	fs.StringVar(&n.domain, "js-domain", os.Getenv("SLUICE_JS_DOMAIN"), "JetStream domain of the hub, when connecting to a leaf node rather than to the hub (env SLUICE_JS_DOMAIN)")
	fs.StringVar(&n.inboxPrefix, "inbox-prefix", os.Getenv("NATS_INBOX_PREFIX"), "inbox prefix for replies, such as _INBOX_<team>, when permissions keep users to their own inboxes (env NATS_INBOX_PREFIX)")
}

// jetstream is the JetStream the services use through nc.
func (n *natsFlags) jetstream(nc *nats.Conn) (jetstream.JetStream, error) {
	return streams.JetStream(nc, n.domain)
}

// connectJetStream connects, for a command a person runs, and returns the
// connection and its JetStream (of --js-domain). Close the connection.
func (n *natsFlags) connectJetStream(name string) (*nats.Conn, jetstream.JetStream, error) {
	nc, err := n.connect(name)
	if err != nil {
		return nil, nil, err
	}
	js, err := n.jetstream(nc)
	if err != nil {
		nc.Close()
		return nil, nil, err
	}
	return nc, js, nil
}

func (n *natsFlags) connect(name string) (*nats.Conn, error) {
	opts := []nats.Option{nats.Name(name), nats.MaxReconnects(-1)}
	if n.creds != "" {
		opts = append(opts, nats.UserCredentials(n.creds))
	}
	if n.user != "" {
		opts = append(opts, nats.UserInfo(n.user, n.password))
	}
	if n.tlsCA != "" {
		opts = append(opts, nats.RootCAs(n.tlsCA))
	}
	if n.tlsCert != "" {
		opts = append(opts, nats.ClientCert(n.tlsCert, n.tlsKey))
	}
	if n.inboxPrefix != "" {
		opts = append(opts, nats.CustomInboxPrefix(n.inboxPrefix))
	}
	nc, err := nats.Connect(n.server, opts...)
	if err != nil {
		return nil, fmt.Errorf("connect to NATS at %s: %w", n.server, err)
	}
	return nc, nil
}

// errStopped is what connectService returns when the service was stopped
// while it waited for NATS.
var errStopped = errors.New("stopped while waiting for NATS")

// connectService connects a long-running service, waiting for NATS while
// it is not reachable yet: services started together with the NATS
// servers (compose, Kubernetes) come up in any order. A server that
// refuses the credentials is not waited for. It returns errStopped when
// ctx ends first.
func (n *natsFlags) connectService(ctx context.Context, name string, log *slog.Logger) (*nats.Conn, error) {
	pause := 500 * time.Millisecond
	for {
		nc, err := n.connect(name)
		if err == nil {
			return nc, nil
		}
		if errors.Is(err, nats.ErrAuthorization) || errors.Is(err, nats.ErrAuthExpired) || errors.Is(err, nats.ErrAuthRevoked) {
			return nil, err
		}
		log.Warn("NATS is not reachable yet; trying again", "server", n.server, "in", pause, "err", err)
		select {
		case <-ctx.Done():
			return nil, errStopped
		case <-time.After(pause):
		}
		pause = min(2*pause, 10*time.Second)
	}
}

func envOr(name, def string) string {
	if v := os.Getenv(name); v != "" {
		return v
	}
	return def
}

func newFlagSet(name string, stderr io.Writer) *flag.FlagSet {
	fs := flag.NewFlagSet("sluice "+name, flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() {
		fmt.Fprintf(fs.Output(), "usage: %s [flags]\n", fs.Name())
		if hasFlags(fs) {
			fmt.Fprintln(fs.Output())
			fmt.Fprintln(fs.Output(), "flags:")
			fs.PrintDefaults()
		}
	}
	return fs
}

func hasFlags(fs *flag.FlagSet) bool {
	n := 0
	fs.VisitAll(func(*flag.Flag) { n++ })
	return n > 0
}

// helpError is what a command returns when it was asked for its usage
// (-h, -help, --help, or `sluice help ...`): execute prints it on stdout,
// with the command's summary, and exits 0. It matches flag.ErrHelp.
type helpError struct {
	name    string // e.g. "sluice config apply"
	summary string // filled in by whoever knows the command's summary
	flags   string // the flags' defaults, as flag.PrintDefaults writes them
}

func (e *helpError) Error() string        { return "usage of " + e.name + " requested" }
func (e *helpError) Is(target error) bool { return target == flag.ErrHelp }

func (e *helpError) print(w io.Writer) {
	fmt.Fprintf(w, "usage: %s [flags]\n", e.name)
	if e.summary != "" {
		fmt.Fprintf(w, "\n%s.\n", upperFirst(e.summary))
	}
	if e.flags != "" {
		fmt.Fprintf(w, "\nflags:\n%s", e.flags)
	}
}

// withSummary fills in the summary of a help request that has none yet.
func withSummary(err error, summary string) {
	var help *helpError
	if errors.As(err, &help) && help.summary == "" {
		help.summary = summary
	}
}

func upperFirst(s string) string {
	if s == "" {
		return s
	}
	return strings.ToUpper(s[:1]) + s[1:]
}

// exitUsage is the exit status of a command line that is not understood:
// an unknown command or flag, a bad flag value, a stray argument.
const exitUsage = exitCode(2)

// parse parses args and refuses stray positional arguments. Asked for
// help, it returns a *helpError; on a command line it cannot understand,
// it prints the problem and the usage on the flag set's output and
// returns exitUsage.
func parse(fs *flag.FlagSet, args []string) error {
	out := fs.Output()
	var buf bytes.Buffer
	fs.SetOutput(&buf)
	err := fs.Parse(args)
	fs.SetOutput(out)
	switch {
	case errors.Is(err, flag.ErrHelp):
		var flags bytes.Buffer
		fs.SetOutput(&flags)
		fs.PrintDefaults()
		fs.SetOutput(out)
		return &helpError{name: fs.Name(), flags: flags.String()}
	case err != nil:
		_, _ = out.Write(buf.Bytes())
		return exitUsage
	case fs.NArg() > 0:
		fmt.Fprintf(out, "%s: unexpected arguments: %s\n", fs.Name(), strings.Join(fs.Args(), " "))
		fs.Usage()
		return exitUsage
	}
	return nil
}

func newLogger(w io.Writer, level string) (*slog.Logger, error) {
	var l slog.Level
	if err := l.UnmarshalText([]byte(level)); err != nil {
		return nil, fmt.Errorf("-log-level: %w", err)
	}
	return slog.New(slog.NewTextHandler(w, &slog.HandlerOptions{Level: l})), nil
}

// newRegistry is a Prometheus registry with the Go and process collectors.
func newRegistry() *prometheus.Registry {
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return reg
}

// serveMetrics serves /metrics on addr until the returned stop is called.
// An empty addr serves nothing.
func serveMetrics(addr string, reg *prometheus.Registry, log *slog.Logger) (stop func(), err error) {
	if addr == "" {
		return func() {}, nil
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("metrics listener: %w", err)
	}
	mux := http.NewServeMux()
	mux.Handle("/metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{Registry: reg}))
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}
	go func() {
		if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			log.Error("metrics server", "err", err)
		}
	}()
	log.Info("serving metrics", "url", "http://"+ln.Addr().String()+"/metrics")
	return func() { _ = srv.Close() }, nil
}
