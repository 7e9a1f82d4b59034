// Package natstest starts real, embedded nats-servers with JetStream for
// tests. sluice's tests never mock NATS.
package natstest

import (
	"fmt"
	"testing"
	"time"

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

// StartCluster starts a JetStream cluster of n servers on random loopback
// ports, waits until it has a meta leader, and stops it when the test
// ends.
func StartCluster(t testing.TB, n int) []*server.Server {
	t.Helper()
	var servers []*server.Server
	var routes []string
	for i := range n {
		srv, err := embedded.Start(embedded.Config{
			Port: -1, StoreDir: t.TempDir(), Name: fmt.Sprintf("natstest-%d", i+1),
			Cluster: "natstest", ClusterPort: -1, Routes: routes,
		})
		if err != nil {
			t.Fatalf("start nats-server %d: %v", i+1, err)
		}
		t.Cleanup(func() {
			srv.Shutdown()
			srv.WaitForShutdown()
		})
		servers = append(servers, srv)
		routes = append(routes, "nats-route://"+srv.ClusterAddr().String())
	}
	deadline := time.Now().Add(30 * time.Second)
	for {
		ready := true
		for _, srv := range servers {
			ready = ready && srv.JetStreamIsClustered() && srv.JetStreamIsCurrent() && srv.NumRoutes() >= n-1
		}
		if ready {
			for _, srv := range servers {
				if srv.JetStreamIsLeader() {
					return servers
				}
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("the %d-server cluster has no JetStream meta leader after 30s", n)
		}
		time.Sleep(50 * time.Millisecond)
	}
}
