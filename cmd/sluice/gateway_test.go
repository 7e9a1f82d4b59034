package main

import (
	"fmt"
	"io"
	"net/http"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/sluicehq/sluice/services/config"
	"github.com/sluicehq/sluice/services/fakeprovider"
	"github.com/sluicehq/sluice/test/natstest"
)

// gatewayYAML is pool "chat" in us-east, and team demo with the given
// gateway tokens.
func gatewayYAML(baseURL string, tokens ...string) string {
	hashes := make([]string, len(tokens))
	for i, tok := range tokens {
		hashes[i] = fmt.Sprintf("%q", config.HashToken(tok))
	}
	return fmt.Sprintf(`pools:
  chat:
    deployments:
      - {id: us-1, provider: openai, base_url: %q, region: us-east, model: gpt-4o-mini, key: TEST_KEY_US, rpm: 600, tpm: 100000}
teams:
  demo:
    tokens: [%s]
`, baseURL, strings.Join(hashes, ", "))
}

// gatewayChat posts a chat completion to the gateway at addr with token.
func gatewayChat(t *testing.T, addr, token string) (int, string) {
	t.Helper()
	req, err := http.NewRequest(http.MethodPost, "http://"+addr+"/v1/chat/completions",
		strings.NewReader(`{"model":"chat","max_tokens":3,"messages":[{"role":"user","content":"hi"}]}`))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer "+token)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// `sluice gateway` as a deployment runs it: it reads the live
// configuration from KV (waiting for a dispatcher to store it), serves
// calls and metrics, follows configuration changes, and stops cleanly.
func TestGatewayCommand(t *testing.T) {
	fake, err := fakeprovider.New(fakeprovider.Config{Keys: map[string]fakeprovider.KeyConfig{"sk-test-us": {RPM: 600, TPM: 100000}}})
	if err != nil {
		t.Fatal(err)
	}
	fakeURL, err := fake.Start("127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = fake.Close() })
	const first, second = "sk-test-first-token", "sk-test-second-token"
	cfgPath := writeFile(t, "sluice.yaml", gatewayYAML(fakeURL+"/v1", first))
	secretsPath := writeFile(t, "secrets.yaml", "TEST_KEY_US: sk-test-us\n")
	srv := natstest.Start(t)
	server := srv.ClientURL()
	addr, metrics := freeAddr(t), freeAddr(t)

	// The gateway starts first, and waits for a configuration.
	gw := startCommand(t, runGateway, "--server", server, "--addr", addr, "--metrics", metrics)
	gw.waitLog(t, "waiting for a configuration in KV")
	disp := startCommand(t, runDispatcher, "--server", server, "--config", cfgPath, "--metrics", "")
	exec := startCommand(t, runExecutor, "--server", server, "--config", cfgPath, "--region", "us-east", "--secrets", secretsPath, "--metrics", "")
	gw.waitLog(t, "gateway serving")
	disp.waitLog(t, "dispatcher started")
	exec.waitLog(t, "executor started")

	if status, body := gatewayChat(t, addr, first); status != 200 || !strings.Contains(body, `"chat.completion"`) {
		t.Fatalf("a call through the gateway: %d %s", status, body)
	}
	if status, _ := gatewayChat(t, addr, second); status != 401 {
		t.Fatalf("an unknown token: %d", status)
	}
	waitMetrics(t, "http://"+metrics+"/metrics", func(body string) bool {
		return hasSample(body, "sluice_gateway_requests_total", `route="/v1/chat/completions"`, `status="200"`) &&
			hasSample(body, "sluice_gateway_requests_total", `route="/v1/chat/completions"`, `status="401"`) &&
			hasSample(body, "go_goroutines")
	})

	// A token added with `sluice config apply` is accepted at once.
	newCfg := writeFile(t, "new.yaml", gatewayYAML(fakeURL+"/v1", first, second))
	if code, stdout, stderr := runExecute("config", "apply", "--server", server, "-f", newCfg); code != 0 {
		t.Fatalf("config apply: %d\n%s\n%s", code, stdout, stderr)
	}
	deadline := time.Now().Add(hang)
	for {
		status, body := gatewayChat(t, addr, second)
		if status == 200 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the new token is still refused: %d %s", status, body)
		}
		time.Sleep(20 * time.Millisecond)
	}
	if strings.Contains(gw.stderr.String(), first) || strings.Contains(gw.stderr.String(), second) {
		t.Errorf("a token is in the gateway's logs:\n%s", gw.stderr)
	}

	for name, b := range map[string]*background{"gateway": gw, "dispatcher": disp, "executor": exec} {
		if err := b.stop(t); err != nil {
			t.Errorf("%s returned %v after being cancelled, want nil\nstderr:\n%s", name, err, b.stderr)
		}
	}
	refused(t, "the gateway", addr)
	refused(t, "the gateway's metrics", metrics)
}

func TestGatewayCommandErrors(t *testing.T) {
	bad := writeFile(t, "bad.yaml", gatewayYAML("http://127.0.0.1:1/v1")+"calls: {max_body_bytes: -1}\n")
	for _, tc := range []struct {
		args []string
		want string
		code int
	}{
		{[]string{"gateway", "--config", bad}, "calls.max_body_bytes", 1},
		{[]string{"gateway", "--default-timeout", "-1s"}, "-default-timeout", 1},
		{[]string{"gateway", "stray"}, "unexpected arguments: stray", 2}, // a usage error
	} {
		t.Run(strings.Join(tc.args, " "), func(t *testing.T) {
			code, _, stderr := runExecute(append(tc.args, "--server", "nats://"+freeAddr(t), "--metrics", "")...)
			if code != tc.code || !strings.Contains(stderr, tc.want) {
				t.Errorf("exit code %d, stderr:\n%s\nwant it to say %q", code, stderr, tc.want)
			}
		})
	}

	// A port in use is an error, not a hang.
	srv := natstest.Start(t)
	ensureStreams(t, srv.ClientURL())
	cfgPath := writeFile(t, "sluice.yaml", gatewayYAML("http://127.0.0.1:1/v1", "sk-x"))
	taken := freeAddr(t)
	other := startCommand(t, runGateway, "--server", srv.ClientURL(), "--config", cfgPath, "--addr", taken, "--metrics", "")
	other.waitLog(t, "gateway serving")
	gw := startCommand(t, runGateway, "--server", srv.ClientURL(), "--config", cfgPath, "--addr", taken, "--metrics", "")
	select {
	case <-gw.done:
	case <-time.After(hang):
		t.Fatalf("a gateway on a port in use neither failed nor started within %s", hang)
	}
	if gw.err == nil || !strings.Contains(gw.err.Error(), taken) {
		t.Errorf("a gateway on a port in use returned %v", gw.err)
	}
}

// `sluice token` makes a fresh token and the line to configure it.
func TestTokenCommand(t *testing.T) {
	tokenRE := regexp.MustCompile(`(?m)^token: (sk-sluice-[A-Za-z0-9_-]{43})$`)
	lineRE := regexp.MustCompile(`(?m)^\s*(tokens: \["sha256:[0-9a-f]{64}"\])$`)
	var seen []string
	for range 2 {
		code, stdout, stderr := runExecute("token", "--team", "search")
		if code != 0 {
			t.Fatalf("exit code %d: %s", code, stderr)
		}
		tok, line := tokenRE.FindStringSubmatch(stdout), lineRE.FindStringSubmatch(stdout)
		if tok == nil || line == nil || !strings.Contains(stdout, "teams.search.tokens") {
			t.Fatalf("no token or no configuration line:\n%s", stdout)
		}
		if want := `tokens: ["` + config.HashToken(tok[1]) + `"]`; line[1] != want {
			t.Errorf("line %q, want %q", line[1], want)
		}
		// The line is configuration as it is.
		cfg, err := config.Parse([]byte("pools:\n  p:\n    deployments:\n      - {id: d, provider: openai, base_url: http://x/v1, region: r, key: K, rpm: 1, tpm: 1}\nteams:\n  search:\n    " + line[1] + "\n"))
		if err != nil {
			t.Fatal(err)
		}
		if team, ok := cfg.TeamOfToken(tok[1]); !ok || team != "search" {
			t.Errorf("the token identifies %q %v", team, ok)
		}
		seen = append(seen, tok[1])
	}
	if seen[0] == seen[1] {
		t.Errorf("two runs made the same token")
	}
}
