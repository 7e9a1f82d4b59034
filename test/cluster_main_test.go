//go:build linux

package test

import (
	"os"
	"testing"
)

// TestMain removes the nats-server and sluice binaries that the cluster
// tests build once per test binary (clusterBinaries): they are too big
// (tens of MB each) to leave behind in the temporary directory on every run.
func TestMain(m *testing.M) {
	code := m.Run()
	clusterBins.remove()
	os.Exit(code)
}
