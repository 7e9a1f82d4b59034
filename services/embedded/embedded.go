// Package embedded owns the nats-server that sluice runs inside its own
// process: for `sluice dev`, for `sluice bench`, and for tests that start
// whole sluice clusters in one process.
package embedded

import (
	"errors"
	"fmt"
	"net"
	"strconv"
	"strings"
	"time"

	"github.com/nats-io/nats-server/v2/server"
)

// Config configures an embedded server.
type Config struct {
	// Host to listen on. Default 127.0.0.1.
	Host string
	// Port for NATS clients; 0 means the NATS default 4222 and -1 a random
	// free port.
	Port int
	// StoreDir is where JetStream keeps its files. Required.
	StoreDir string
	// Name of the server. Default "sluice-dev".
	Name string
	// ReadyTimeout bounds how long Start waits for the server. Default 10s.
	ReadyTimeout time.Duration
	// Logs switches the server's own logging on (to stderr).
	Logs bool
	// Cluster, when not empty, names the cluster this server joins, and
	// ClusterPort (-1: a random free port) is where it listens for routes
	// from the others; Routes lists route URLs of servers already running
	// (nats-route://host:port). Tests run whole hub clusters in one
	// process this way.
	Cluster     string
	ClusterPort int
	Routes      []string
}

// Start starts a nats-server with JetStream and waits until it accepts
// clients. Stop it with Shutdown and WaitForShutdown.
func Start(cfg Config) (*server.Server, error) {
	if cfg.StoreDir == "" {
		return nil, errors.New("embedded: StoreDir is required")
	}
	if cfg.Host == "" {
		cfg.Host = "127.0.0.1"
	}
	if cfg.Name == "" {
		cfg.Name = "sluice-dev"
	}
	if cfg.ReadyTimeout == 0 {
		cfg.ReadyTimeout = 10 * time.Second
	}
	// nats-server reports a port it cannot bind only in its log and then
	// never becomes ready; find out first, and say so.
	if cfg.Port > 0 {
		ln, err := net.Listen("tcp", net.JoinHostPort(cfg.Host, strconv.Itoa(cfg.Port)))
		if err != nil {
			return nil, fmt.Errorf("embedded: cannot listen for NATS clients: %w", err)
		}
		ln.Close()
	}
	opts := &server.Options{
		ServerName:             cfg.Name,
		Host:                   cfg.Host,
		Port:                   cfg.Port,
		JetStream:              true,
		StoreDir:               cfg.StoreDir,
		NoSigs:                 true,
		NoLog:                  !cfg.Logs,
		DisableJetStreamBanner: true,
		MaxPayload:             8 << 20,
	}
	if cfg.Cluster != "" {
		opts.Cluster = server.ClusterOpts{Name: cfg.Cluster, Host: cfg.Host, Port: cfg.ClusterPort}
		opts.Routes = server.RoutesFromStr(strings.Join(cfg.Routes, ","))
	}
	srv, err := server.NewServer(opts)
	if err != nil {
		return nil, fmt.Errorf("embedded: %w", err)
	}
	if cfg.Logs {
		srv.ConfigureLogger()
	}
	srv.Start()
	if !srv.ReadyForConnections(cfg.ReadyTimeout) {
		srv.Shutdown()
		return nil, fmt.Errorf("embedded: nats-server on %s not ready after %s", net.JoinHostPort(cfg.Host, strconv.Itoa(cfg.Port)), cfg.ReadyTimeout)
	}
	return srv, nil
}
