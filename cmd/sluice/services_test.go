package main

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/sluicehq/sluice/messages"
	"github.com/sluicehq/sluice/services/client"
	"github.com/sluicehq/sluice/services/config"
	"github.com/sluicehq/sluice/services/fakeprovider"
	"github.com/sluicehq/sluice/test/natstest"
)

func writeFile(t *testing.T, name, content string) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

// hasSample reports whether a Prometheus text exposition has a sample of
// metric whose labels include each of labels, such as `outcome="ok"`.
func hasSample(body, metric string, labels ...string) bool {
	for _, line := range strings.Split(body, "\n") {
		if !strings.HasPrefix(line, metric+"{") && !strings.HasPrefix(line, metric+" ") {
			continue
		}
		all := true
		for _, l := range labels {
			all = all && strings.Contains(line, l)
		}
		if all {
			return true
		}
	}
	return false
}

// waitMetrics scrapes url until ok accepts what it serves. Services count
// some things just after the client has its answer, so one scrape could
// come too early.
func waitMetrics(t *testing.T, url string, ok func(body string) bool) string {
	t.Helper()
	deadline := time.Now().Add(hang)
	var body string
	for {
		resp, err := http.Get(url)
		if err == nil {
			b, rerr := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode != http.StatusOK || rerr != nil {
				t.Fatalf("GET %s: %s %v", url, resp.Status, rerr)
			}
			body = string(b)
			if ok(body) {
				return body
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("GET %s: not the expected metrics after %s (last error %v):\n%s", url, hang, err, body)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// deploymentYAML is a configuration of pool "chat" with one deployment
// in each of us-east and eu-west, at baseURL, with rpm for the first.
func deploymentYAML(baseURL string, rpm int) string {
	return fmt.Sprintf(`pools:
  chat:
    deployments:
      - {id: us-1, provider: openai, base_url: %q, region: us-east, model: gpt-4o-mini, key: TEST_KEY_US, rpm: %d, tpm: 100000}
      - {id: eu-1, provider: openai, base_url: %q, region: eu-west, model: gpt-4o-mini, key: SLUICE_CMD_TEST_KEY_EU, rpm: 600, tpm: 100000}
teams:
  demo:
    tiers: [standard]
`, baseURL, rpm, baseURL)
}

// A configuration that does not validate stops the service before it
// connects anywhere, with an error naming the field.
func TestServicesRefuseBadConfiguration(t *testing.T) {
	nowhere := "nats://" + freeAddr(t)
	bad := writeFile(t, "bad.yaml", deploymentYAML("http://127.0.0.1:1/v1", 0))
	unknownField := writeFile(t, "unknown.yaml", deploymentYAML("http://127.0.0.1:1/v1", 600)+"retries: 3\n")
	good := writeFile(t, "good.yaml", deploymentYAML("http://127.0.0.1:1/v1", 600))
	notAMap := writeFile(t, "secrets.yaml", "- just\n- a list\n")
	missing := filepath.Join(t.TempDir(), "missing.yaml")
	for _, tc := range []struct {
		name string
		args []string
		want []string
	}{
		{"dispatcher rpm 0", []string{"dispatcher", "--config", bad},
			[]string{"sluice dispatcher: ", bad, "pools.chat.deployments[0].rpm: must be greater than 0"}},
		{"executor rpm 0", []string{"executor", "--region", "us-east", "--config", bad},
			[]string{"sluice executor: ", bad, "pools.chat.deployments[0].rpm: must be greater than 0"}},
		{"dispatcher unknown field", []string{"dispatcher", "--config", unknownField},
			[]string{"sluice dispatcher: ", "field retries not found"}},
		{"dispatcher missing file", []string{"dispatcher", "--config", missing},
			[]string{"sluice dispatcher: ", "missing.yaml"}},
		{"executor without region", []string{"executor", "--config", good},
			[]string{"sluice executor: ", "-region is required"}},
		{"executor bad secrets", []string{"executor", "--region", "us-east", "--config", good, "--secrets", notAMap},
			[]string{"sluice executor: ", notAMap, "must be a YAML map"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			args := append(tc.args, "--server", nowhere, "--metrics", "")
			code, stdout, stderr := runExecute(args...)
			if code != 1 {
				t.Errorf("exit code %d, want 1", code)
			}
			if stdout != "" {
				t.Errorf("stdout should be empty, got %q", stdout)
			}
			for _, w := range tc.want {
				if !strings.Contains(stderr, w) {
					t.Errorf("stderr does not say %q:\n%s", w, stderr)
				}
			}
			if strings.Contains(stderr, "connect to NATS") {
				t.Errorf("the configuration should be refused before connecting:\n%s", stderr)
			}
		})
	}
}

// `sluice dispatcher` and `sluice executor`, as a real deployment runs
// them, against a NATS server nothing else has set up: they create the
// streams, take calls, call the provider with the secrets they resolve,
// and stop cleanly when cancelled.
func TestDispatcherAndExecutorServeCalls(t *testing.T) {
	fake, err := fakeprovider.New(fakeprovider.Config{Keys: map[string]fakeprovider.KeyConfig{
		"sk-test-us": {RPM: 600, TPM: 100000},
		"sk-test-eu": {RPM: 600, TPM: 100000},
	}})
	if err != nil {
		t.Fatal(err)
	}
	fakeURL, err := fake.Start("127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = fake.Close() })

	cfgPath := writeFile(t, "sluice.yaml", deploymentYAML(fakeURL+"/v1", 600))
	if _, err := config.Load(cfgPath); err != nil {
		t.Fatalf("the test's configuration is invalid: %v", err)
	}
	// us-east reads its key from a secrets file, eu-west from its
	// environment.
	secretsPath := writeFile(t, "secrets.yaml", "TEST_KEY_US: sk-test-us\n")
	t.Setenv("SLUICE_CMD_TEST_KEY_EU", "sk-test-eu")

	srv := natstest.Start(t)
	server := srv.ClientURL()
	metrics := freeAddr(t)

	disp := startCommand(t, runDispatcher, "--server", server, "--config", cfgPath, "--id", "cmd-test", "--metrics", "")
	us := startCommand(t, runExecutor, "--server", server, "--config", cfgPath, "--region", "us-east",
		"--secrets", secretsPath, "--metrics", metrics, "--concurrency", "4")
	eu := startCommand(t, runExecutor, "--server", server, "--config", cfgPath, "--region", "eu-west", "--metrics", "")
	// The services made the streams: calls may be published once they say
	// they started.
	disp.waitLog(t, "dispatcher started")
	us.waitLog(t, "executor started")
	eu.waitLog(t, "executor started")

	nc := natstest.Connect(t, srv)
	c, err := client.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	for _, region := range []string{"us-east", "eu-west"} {
		ctx, cancel := context.WithTimeout(context.Background(), hang)
		res, err := c.Call(ctx, "demo", messages.Tier("standard"), &messages.CallRequest{
			Model:   "chat",
			Regions: []string{region},
			Body:    []byte(`{"messages":[{"role":"user","content":"hi"}],"max_tokens":8}`),
		})
		cancel()
		if err != nil {
			t.Fatalf("call pinned to %s: %v", region, err)
		}
		if res.Status != messages.StatusOK || res.Error != nil || res.HTTPStatus != 200 {
			t.Fatalf("call pinned to %s: status %q http %d error %+v", region, res.Status, res.HTTPStatus, res.Error)
		}
		if res.Region != region {
			t.Errorf("call pinned to %s ran in %q", region, res.Region)
		}
	}
	// Each executor called with the secret it resolved for its key name.
	stats := fake.Stats()
	for _, key := range []string{"sk-test-us", "sk-test-eu"} {
		if stats.Keys[key].Served != 1 {
			t.Errorf("the fake provider served %d calls with key %s, want 1", stats.Keys[key].Served, key)
		}
	}
	if stats.Total.Unauthorized != 0 {
		t.Errorf("the fake provider refused %d calls for their key", stats.Total.Unauthorized)
	}

	waitMetrics(t, "http://"+metrics+"/metrics", func(body string) bool {
		return hasSample(body, "sluice_provider_latency_seconds_count", `deployment="us-1"`, `region="us-east"`) &&
			hasSample(body, "sluice_calls_total", `team="demo"`, `outcome="ok"`)
	})

	for name, b := range map[string]*background{"dispatcher": disp, "executor us-east": us, "executor eu-west": eu} {
		if err := b.stop(t); err != nil {
			t.Errorf("%s returned %v after being cancelled, want nil\nstderr:\n%s", name, err, b.stderr)
		}
	}
	if _, err := http.Get("http://" + metrics + "/metrics"); err == nil {
		t.Errorf("the executor still serves metrics after it returned")
	}
}
