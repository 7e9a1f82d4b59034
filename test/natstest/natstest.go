// Package natstest starts real, embedded nats-servers with JetStream for
// tests. sluice's tests never mock NATS.
package natstest

import (
	"testing"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"

	"github.com/sluicehq/sluice/services/embedded"
)

// Start starts a JetStream-enabled nats-server on a random loopback port,
// storing in a temporary directory, and stops it when the test ends.
func Start(t testing.TB) *server.Server {
	t.Helper()
	return StartIn(t, t.TempDir())
}

// StartIn is Start with a given store directory, so a test can restart a
// server on the same data.
func StartIn(t testing.TB, dir string) *server.Server {
	t.Helper()
	srv, err := embedded.Start(embedded.Config{Port: -1, StoreDir: dir, Name: "natstest"})
	if err != nil {
		t.Fatalf("start nats-server: %v", err)
	}
	t.Cleanup(func() {
		srv.Shutdown()
		srv.WaitForShutdown()
	})
	return srv
}

// Connect connects to srv and closes the connection when the test ends.
func Connect(t testing.TB, srv *server.Server) *nats.Conn {
	t.Helper()
	nc, err := nats.Connect(srv.ClientURL(), nats.MaxReconnects(-1))
	if err != nil {
		t.Fatalf("connect to nats-server: %v", err)
	}
	t.Cleanup(nc.Close)
	return nc
}
