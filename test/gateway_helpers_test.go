package test

import (
	"bufio"
	"context"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/sluicehq/sluice/services/devstack"
	"github.com/sluicehq/sluice/services/gateway"
)

// devToken is team demo's gateway token in the built-in configuration of
// `sluice dev` (services/devstack/dev.yaml keeps its hash).
const devToken = "sk-sluice-demo"

// startGateway starts an HTTP gateway on the stack, stopped when the test
// ends, and returns its base URL.
func startGateway(t *testing.T, s *devstack.Stack, tune func(*gateway.Config)) string {
	t.Helper()
	svc, url, err := s.StartGateway(func(c *gateway.Config) {
		c.ShutdownGrace = 5 * time.Second
		if tune != nil {
			tune(c)
		}
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { stopQuietly(svc) })
	return url
}

// gatewayPost posts body to the gateway with team demo's token.
func gatewayPost(ctx context.Context, t *testing.T, url, path, body string, headers ...string) *http.Response {
	t.Helper()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, url+path, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer "+devToken)
	req.Header.Set("Content-Type", "application/json")
	for i := 0; i+1 < len(headers); i += 2 {
		req.Header.Set(headers[i], headers[i+1])
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	return resp
}

// readAll reads and closes an answer's body.
func readAll(t *testing.T, resp *http.Response) string {
	t.Helper()
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// sseEvents splits a server-sent event stream into its events, checking
// that each ends with a blank line.
func sseEvents(t *testing.T, stream string) []string {
	t.Helper()
	if !strings.HasSuffix(stream, "\n\n") {
		t.Fatalf("the stream does not end with a blank line: %q", stream)
	}
	return strings.Split(strings.TrimSuffix(stream, "\n\n"), "\n\n")
}

// nextEvent reads one event from a stream.
func nextEvent(t *testing.T, br *bufio.Reader) string {
	t.Helper()
	var lines []string
	for {
		line, err := br.ReadString('\n')
		if err != nil {
			t.Fatalf("reading an event: %v (so far %q)", err, lines)
		}
		line = strings.TrimSuffix(line, "\n")
		if line == "" {
			return strings.Join(lines, "\n")
		}
		lines = append(lines, line)
	}
}

// waitUntil polls ok until it holds, failing after timeout.
func waitUntil(t *testing.T, what string, timeout time.Duration, ok func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !ok() {
		if time.Now().After(deadline) {
			t.Fatalf("waited %s for %s", timeout, what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// sdkStack is what the SDK tests call and watch: a stack with one
// dispatcher (d1), an executor per region and a gateway at url, team
// demo's results, and the attempts d1 is told of.
type sdkStack struct {
	s       *devstack.Stack
	url     string
	results *resultLog
	reports *attemptReports
}

func startSDKStack(t *testing.T) sdkStack {
	t.Helper()
	s := startStack(t, stackOptions{})
	startDispatcher(t, s, "d1", nil)
	startExecutors(t, s)
	url := startGateway(t, s, nil)
	nc := connect(t, s)
	return sdkStack{s: s, url: url, results: watchResults(t, nc, "demo"), reports: watchAttemptReports(t, nc, "d1")}
}
