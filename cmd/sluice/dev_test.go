package main

import (
	"io"
	"net"
	"net/http"
	"os"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/sluicehq/sluice/services/config"
)

// devDataDir returns the data directory `sluice dev` says it uses.
func devDataDir(t *testing.T, stdout string) string {
	t.Helper()
	m := regexp.MustCompile(`(?m)^[ \t]*data dir:[ \t]+(\S.*)$`).FindStringSubmatch(stdout)
	if m == nil {
		t.Fatalf("sluice dev printed no data dir:\n%s", stdout)
	}
	return strings.TrimSpace(m[1])
}

// refused checks that nothing accepts connections at addr any more.
func refused(t *testing.T, what, addr string) {
	t.Helper()
	conn, err := net.DialTimeout("tcp", addr, time.Second)
	if err == nil {
		conn.Close()
		t.Errorf("%s at %s still accepts connections after sluice dev returned", what, addr)
	}
}

func TestDev(t *testing.T) {
	addr := freeAddr(t)
	metrics := freeAddr(t)
	data := t.TempDir()
	gatewayAddr := freeAddr(t)
	dev := startCommand(t, runDev, "--addr", addr, "--metrics", metrics, "--data", data, "--dispatchers", "2", "--gateway-addr", gatewayAddr)
	dev.waitOutput(t, "sluice dev is running")
	out := dev.stdout.String()
	server := "nats://" + addr
	gatewayURL := "http://" + gatewayAddr + "/v1"
	for _, want := range []string{server, "http://" + metrics + "/metrics", "--server " + server + " --team demo",
		"curl " + gatewayURL + "/chat/completions", "OPENAI_BASE_URL=" + gatewayURL, "OPENAI_API_KEY=sk-sluice-demo",
		"curl " + gatewayURL + "/messages", "ANTHROPIC_BASE_URL=http://" + gatewayAddr + " ", "ANTHROPIC_API_KEY=sk-sluice-demo", "claude-haiku-4-5"} {
		if !strings.Contains(out, want) {
			t.Errorf("the banner does not say %q:\n%s", want, out)
		}
	}
	if got := devDataDir(t, out); got != data {
		t.Errorf("data dir %q, want the --data %q", got, data)
	}

	// The command the banner suggests works.
	code, stdout, stderr := runExecute("call", "--server", server, "--team", "demo", "--tier", "standard", "--model", "gpt-4o-mini", "--prompt", "hi")
	if code != 0 {
		t.Fatalf("sluice call: exit code %d, want 0\nstdout:\n%s\nstderr:\n%s\nsluice dev stderr:\n%s", code, stdout, stderr, dev.stderr)
	}
	checkOK(t, decodeResult(t, stdout))

	// So does the gateway, with team demo's token.
	req, err := http.NewRequest(http.MethodPost, gatewayURL+"/chat/completions",
		strings.NewReader(`{"model":"gpt-4o-mini","stream":true,"messages":[{"role":"user","content":"hi"}]}`))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer sk-sluice-demo")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 || !strings.HasSuffix(string(body), "data: [DONE]\n\n") {
		t.Errorf("a streamed call through sluice dev's gateway: %d %s", resp.StatusCode, body)
	}

	// And the Anthropic pool, as the banner's curl calls it.
	req, err = http.NewRequest(http.MethodPost, gatewayURL+"/messages",
		strings.NewReader(`{"model":"claude-haiku-4-5","max_tokens":100,"messages":[{"role":"user","content":"hi"}]}`))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("x-api-key", "sk-sluice-demo")
	req.Header.Set("anthropic-version", "2023-06-01")
	resp, err = http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	body, _ = io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 || !strings.Contains(string(body), `"type":"message"`) {
		t.Errorf("a Messages call through sluice dev's gateway: %d %s", resp.StatusCode, body)
	}

	waitMetrics(t, "http://"+metrics+"/metrics", func(body string) bool {
		return hasSample(body, "sluice_gateway_requests_total", `route="/v1/chat/completions"`, `status="200"`) &&
			hasSample(body, "sluice_calls_total", `team="demo"`, `tier="standard"`, `outcome="ok"`) &&
			hasSample(body, "sluice_provider_latency_seconds_count") &&
			hasSample(body, "go_goroutines")
	})

	if err := dev.stop(t); err != nil {
		t.Errorf("sluice dev returned %v after Ctrl-C, want nil\nstderr:\n%s", err, dev.stderr)
	}
	if !strings.Contains(dev.stderr.String(), "sluice dev stopped") {
		t.Errorf("sluice dev did not log that it stopped:\n%s", dev.stderr)
	}
	entries, err := os.ReadDir(data)
	if err != nil {
		t.Fatalf("the --data directory is gone after shutdown: %v", err)
	}
	if len(entries) == 0 {
		t.Errorf("the --data directory is empty: JetStream stored nothing there")
	}
	refused(t, "NATS", addr)
	refused(t, "metrics", metrics)
	refused(t, "the gateway", gatewayAddr)
}

// Without --data, sluice dev uses a temporary directory and removes it.
func TestDevRemovesItsTemporaryData(t *testing.T) {
	addr := freeAddr(t)
	dev := startCommand(t, runDev, "--addr", addr, "--metrics", "", "--log-level", "warn", "--gateway-addr", "")
	dev.waitOutput(t, "sluice dev is running")
	if strings.Contains(dev.stdout.String(), "gateway") {
		t.Errorf("sluice dev --gateway-addr '' mentions a gateway:\n%s", dev.stdout)
	}
	data := devDataDir(t, dev.stdout.String())
	if _, err := os.Stat(data); err != nil {
		t.Fatalf("the temporary data directory does not exist while sluice dev runs: %v", err)
	}
	t.Cleanup(func() { _ = os.RemoveAll(data) }) // should the test fail
	if err := dev.stop(t); err != nil {
		t.Errorf("sluice dev returned %v after Ctrl-C, want nil\nstderr:\n%s", err, dev.stderr)
	}
	if _, err := os.Stat(data); !os.IsNotExist(err) {
		t.Errorf("the temporary data directory %s is still there after shutdown (stat: %v)", data, err)
	}
	refused(t, "NATS", addr)
}

// A port in use is an error, not a hang. (The embedded server only gives
// up after its 10s ready timeout, so this test runs in parallel.)
func TestDevAddressInUse(t *testing.T) {
	t.Parallel()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	dev := startCommand(t, runDev, "--addr", ln.Addr().String(), "--metrics", "", "--data", t.TempDir())
	select {
	case <-dev.done:
	case <-time.After(hang):
		t.Fatalf("sluice dev on a port in use neither failed nor started within %s", hang)
	}
	if dev.err == nil {
		t.Fatalf("sluice dev on a port in use returned nil\nstdout:\n%s", dev.stdout)
	}
	if !strings.Contains(dev.err.Error(), ln.Addr().String()) {
		t.Errorf("the error does not name the address in use: %v", dev.err)
	}
	if strings.Contains(dev.stdout.String(), "is running") {
		t.Errorf("sluice dev says it is running although it failed:\n%s", dev.stdout)
	}
}

func TestDevGatewayAddressInUse(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	addr := freeAddr(t)
	dev := startCommand(t, runDev, "--addr", addr, "--metrics", "", "--data", t.TempDir(), "--gateway-addr", ln.Addr().String())
	select {
	case <-dev.done:
	case <-time.After(hang):
		t.Fatalf("sluice dev with its gateway port in use neither failed nor started within %s", hang)
	}
	if dev.err == nil || !strings.Contains(dev.err.Error(), "-gateway-addr") || !strings.Contains(dev.err.Error(), ln.Addr().String()) {
		t.Fatalf("sluice dev with its gateway port in use returned %v, want an error naming -gateway-addr and the address", dev.err)
	}
	refused(t, "NATS", addr)
}

func TestDevMetricsAddressInUse(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	addr := freeAddr(t)
	dev := startCommand(t, runDev, "--addr", addr, "--metrics", ln.Addr().String(), "--data", t.TempDir())
	select {
	case <-dev.done:
	case <-time.After(hang):
		t.Fatalf("sluice dev with its metrics port in use neither failed nor started within %s", hang)
	}
	if dev.err == nil || !strings.Contains(dev.err.Error(), "metrics") {
		t.Fatalf("sluice dev with its metrics port in use returned %v, want a metrics listener error", dev.err)
	}
	refused(t, "NATS", addr)
}

func TestDevPrintConfig(t *testing.T) {
	code, stdout, stderr := runExecute("dev", "--print-config")
	if code != 0 {
		t.Fatalf("exit code %d, want 0\nstderr:\n%s", code, stderr)
	}
	const placeholder = "http://127.0.0.1:PORT"
	if !strings.Contains(stdout, placeholder) {
		t.Fatalf("the configuration has no %s placeholder for the fake provider:\n%s", placeholder, stdout)
	}
	cfg, err := config.Parse([]byte(strings.ReplaceAll(stdout, placeholder, "http://127.0.0.1:8090")))
	if err != nil {
		t.Fatalf("the printed configuration does not parse: %v\n%s", err, stdout)
	}
	if _, ok := cfg.Pool("gpt-4o-mini"); !ok {
		t.Errorf("the printed configuration has no pool gpt-4o-mini")
	}
	if _, ok := cfg.Teams["demo"]; !ok {
		t.Errorf("the printed configuration has no team demo")
	}
	for _, d := range cfg.Pools["gpt-4o-mini"].Deployments {
		if !strings.HasPrefix(d.BaseURL, "http://127.0.0.1:8090") {
			t.Errorf("deployment %s has base_url %q, not the fake provider's", d.ID, d.BaseURL)
		}
	}
	if got := cfg.Regions(); len(got) != 2 {
		t.Errorf("regions %v, want us-east and eu-west", got)
	}
}
