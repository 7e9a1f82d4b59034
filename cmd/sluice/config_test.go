package main

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"regexp"
	"strconv"
	"strings"
	"testing"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/sluicehq/sluice/messages"
	"github.com/sluicehq/sluice/services/client"
	"github.com/sluicehq/sluice/services/config"
	"github.com/sluicehq/sluice/services/embedded"
	"github.com/sluicehq/sluice/services/fakeprovider"
	"github.com/sluicehq/sluice/services/streams"
	"github.com/sluicehq/sluice/test/natstest"
)

// expect runs sluice with args and checks its exit code, and that stderr
// says each of want.
func expect(t *testing.T, code int, args []string, want ...string) (stdout, stderr string) {
	t.Helper()
	got, stdout, stderr := runExecute(args...)
	if got != code {
		t.Errorf("sluice %s: exit code %d, want %d\nstdout:\n%s\nstderr:\n%s", strings.Join(args, " "), got, code, stdout, stderr)
	}
	for _, w := range want {
		if !strings.Contains(stderr, w) {
			t.Errorf("sluice %s: stderr does not say %q:\n%s", strings.Join(args, " "), w, stderr)
		}
	}
	return stdout, stderr
}

var revisionRE = regexp.MustCompile(`revision (\d+)`)

// revisionIn is the first "revision N" in s.
func revisionIn(t *testing.T, s string) uint64 {
	t.Helper()
	m := revisionRE.FindStringSubmatch(s)
	if m == nil {
		t.Fatalf("no revision in %q", s)
	}
	n, _ := strconv.ParseUint(m[1], 10, 64)
	return n
}

// getConfig runs `sluice config get` and parses what it prints.
func getConfig(t *testing.T, server string) (*config.Config, uint64) {
	t.Helper()
	stdout, _ := expect(t, 0, []string{"config", "get", "--server", server})
	if !strings.HasPrefix(stdout, "# sluice configuration, revision ") {
		t.Fatalf("config get does not start with its revision:\n%s", stdout)
	}
	cfg, err := config.Parse([]byte(stdout))
	if err != nil {
		t.Fatalf("config get printed a configuration that does not parse: %v\n%s", err, stdout)
	}
	return cfg, revisionIn(t, stdout)
}

// badYAML has, in one file, every kind of bad input the issue lists but
// unserved regions.
func badYAML(baseURL string) string {
	return `pools:
  chat:
    deployments:
      - {id: us-1, provider: openia, base_url: "` + baseURL + `", region: us-east, key: TEST_KEY_US, rpm: 0, tpm: -5}
      - {id: us-1, provider: openai, base_url: "` + baseURL + `", region: us-east, key: TEST_KEY_US, rpm: 60, tpm: 1000}
  empty:
    deployments: []
teams:
  demo: {}
`
}

var badFields = []string{
	"pools.chat.deployments[0].provider",
	"pools.chat.deployments[0].rpm",
	"pools.chat.deployments[0].tpm",
	"pools.chat.deployments[1].id",
	"pools.empty.deployments",
}

func TestConfigCheck(t *testing.T) {
	good := writeFile(t, "good.yaml", deploymentYAML("http://127.0.0.1:1/v1", 600))
	stdout, _ := expect(t, 0, []string{"config", "check", "-f", good})
	if !strings.Contains(stdout, "is valid") || !strings.Contains(stdout, "eu-west, us-east") {
		t.Errorf("config check of a valid file says:\n%s", stdout)
	}
	bad := writeFile(t, "bad.yaml", badYAML("http://127.0.0.1:1/v1"))
	expect(t, 1, []string{"config", "check", "-f", bad}, append([]string{"invalid configuration " + bad}, badFields...)...)
	expect(t, 1, []string{"config", "check", "-f", writeFile(t, "typo.yaml", deploymentYAML("http://x/v1", 1)+"retries: 3\n")}, "field retries not found")
	expect(t, 1, []string{"config", "check"}, "-f FILE is required")
}

func TestConfigUsage(t *testing.T) {
	for _, tc := range []struct {
		args []string
		code int
	}{
		{[]string{"config"}, 2},
		{[]string{"config", "frobnicate"}, 2},
		{[]string{"config", "-h"}, 0},
		{[]string{"config", "--help"}, 0},
		{[]string{"config", "help"}, 0},
		{[]string{"help", "config"}, 0},
	} {
		code, stdout, stderr := runExecute(tc.args...)
		usage := stdout
		if tc.code != 0 {
			usage = stderr
		}
		if code != tc.code || !strings.Contains(usage, "usage: sluice config <command>") {
			t.Errorf("sluice %s: exit code %d (want %d)\nstdout:\n%s\nstderr:\n%s", strings.Join(tc.args, " "), code, tc.code, stdout, stderr)
		}
		for name, c := range configCommands {
			if !strings.Contains(usage, name) || !strings.Contains(usage, c.summary) {
				t.Errorf("sluice %s: usage does not list %s", strings.Join(tc.args, " "), name)
			}
		}
	}
	expect(t, 1, []string{"dispatcher", "--config-force", "--metrics", ""}, "-config-force needs -config FILE")
}

// The life of a configuration through the command line, against services
// started with no configuration file: they wait for one; apply refuses
// bad input and regions nobody serves (unless --force); every service
// takes a change without a restart; get prints what is live.
func TestConfigApplyAndGet(t *testing.T) {
	fake, err := fakeprovider.New(fakeprovider.Config{Keys: map[string]fakeprovider.KeyConfig{
		"sk-test-us": {RPM: 6000, TPM: 1000000},
		"sk-test-eu": {RPM: 6000, TPM: 1000000},
	}})
	if err != nil {
		t.Fatal(err)
	}
	fakeURL, err := fake.Start("127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = fake.Close() })
	base := fakeURL + "/v1"
	secrets := writeFile(t, "secrets.yaml", "TEST_KEY_US: sk-test-us\n")
	t.Setenv("SLUICE_CMD_TEST_KEY_EU", "sk-test-eu")
	srv := natstest.Start(t)
	server := srv.ClientURL()
	quick := []string{"--server", server, "--region-wait", "300ms"}

	// Nothing stored yet.
	expect(t, 1, []string{"config", "get", "--server", server}, "no configuration", "sluice config apply -f FILE")

	good := writeFile(t, "good.yaml", deploymentYAML(base, 600))
	// No executor serves us-east or eu-west yet: refused, nothing stored.
	expect(t, 1, append([]string{"config", "apply", "-f", good}, quick...),
		"refused "+good, "pools.chat.deployments[0].region", "pools.chat.deployments[1].region",
		`no executor serves region "us-east"`, "--force", "nothing was stored")
	expect(t, 1, []string{"config", "get", "--server", server}, "no configuration")

	// Services started without --config wait for one.
	us := startCommand(t, runExecutor, "--server", server, "--region", "us-east", "--secrets", secrets, "--metrics", "")
	eu := startCommand(t, runExecutor, "--server", server, "--region", "eu-west", "--metrics", "")
	disp := startCommand(t, runDispatcher, "--server", server, "--id", "cfg-test", "--metrics", "")
	for _, b := range []*background{us, eu, disp} {
		b.waitLog(t, "waiting for a configuration in KV")
	}

	// --force stores it anyway (bootstrapping), with a warning.
	stdout, _ := expect(t, 0, append([]string{"config", "apply", "-f", good, "--force"}, quick...), "warning: stored anyway", "pools.chat.deployments[0].region")
	first := revisionIn(t, stdout)
	for _, b := range []*background{us, eu, disp} {
		b.waitLog(t, "using the configuration stored in KV")
	}
	us.waitLog(t, "executor started")
	eu.waitLog(t, "executor started")
	disp.waitLog(t, "dispatcher started")
	call(t, srv, "us-east")

	// Bad input is refused with its fields named; the live configuration
	// stays as it was.
	bad := writeFile(t, "bad.yaml", badYAML(base))
	expect(t, 1, append([]string{"config", "apply", "-f", bad}, quick...), append(badFields, "nothing was stored")...)
	newRegion := writeFile(t, "new-region.yaml", strings.Replace(deploymentYAML(base, 600), "teams:",
		`      - {id: ap-1, provider: openai, base_url: "`+base+`", region: ap-south, key: AP_KEY, rpm: 60, tpm: 1000}
teams:`, 1))
	expect(t, 1, append([]string{"config", "apply", "-f", newRegion}, quick...),
		"pools.chat.deployments[2].region", `no executor serves region "ap-south"`, "nothing was stored")
	if _, rev := getConfig(t, server); rev != first {
		t.Fatalf("after refused applies, revision %d is live, want %d", rev, first)
	}

	// Now that executors serve both regions, a change is applied without
	// --force, and every service takes it.
	changed := writeFile(t, "changed.yaml", deploymentYAML(base, 1200))
	stdout, stderr := expect(t, 0, append([]string{"config", "apply", "-f", changed}, quick...))
	second := revisionIn(t, stdout)
	if second <= first || strings.Contains(stderr, "warning") {
		t.Fatalf("apply of a served configuration: revision %d after %d, stderr:\n%s", second, first, stderr)
	}
	for _, b := range []*background{us, eu, disp} {
		b.waitLog(t, "configuration updated")
		b.waitLog(t, "revision="+strconv.FormatUint(second, 10))
	}
	cfg, rev := getConfig(t, server)
	if d, _ := cfg.Deployment("us-1"); rev != second || d.RPM != 1200 {
		t.Fatalf("config get: revision %d, rpm %d; want revision %d, rpm 1200", rev, d.RPM, second)
	}
	call(t, srv, "eu-west")

	// Applying the same again stores nothing.
	stdout, _ = expect(t, 0, append([]string{"config", "apply", "-f", changed}, quick...))
	if !strings.Contains(stdout, "already live") || revisionIn(t, stdout) != second {
		t.Errorf("re-applying the live configuration says:\n%s", stdout)
	}

	// An operator applying from a stale revision is told, not obeyed.
	expect(t, 1, append([]string{"config", "apply", "-f", good, "--if-revision", strconv.FormatUint(first, 10)}, quick...),
		"someone else applied", "revision "+strconv.FormatUint(second, 10), "nothing was stored")
	if _, rev := getConfig(t, server); rev != second {
		t.Fatalf("after a conflict, revision %d is live, want %d", rev, second)
	}

	// --json.
	stdout, _ = expect(t, 0, []string{"config", "get", "--server", server, "--json"})
	var got struct {
		Revision uint64 `json:"revision"`
		Config   struct {
			Pools map[string]struct {
				Deployments []struct {
					ID  string `json:"id"`
					RPM int64  `json:"rpm"`
				} `json:"deployments"`
			} `json:"pools"`
			Admission struct {
				Burst string `json:"burst"`
			} `json:"admission"`
		} `json:"config"`
	}
	if err := json.Unmarshal([]byte(stdout), &got); err != nil {
		t.Fatalf("config get --json: %v\n%s", err, stdout)
	}
	if d := got.Config.Pools["chat"].Deployments; got.Revision != second || len(d) != 2 || d[0].ID != "us-1" || d[0].RPM != 1200 || got.Config.Admission.Burst != "500ms" {
		t.Fatalf("config get --json: %+v", got)
	}

	for name, b := range map[string]*background{"dispatcher": disp, "executor us-east": us, "executor eu-west": eu} {
		if err := b.stop(t); err != nil {
			t.Errorf("%s returned %v after being cancelled\nstderr:\n%s", name, err, b.stderr)
		}
	}
}

// call makes one call pinned to region through the services.
func call(t *testing.T, srv *server.Server, region string) {
	t.Helper()
	c, err := client.New(natstest.Connect(t, srv))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), hang)
	defer cancel()
	res, err := c.Call(ctx, "demo", messages.TierStandard, &messages.CallRequest{
		Model:   "chat",
		Regions: []string{region},
		Body:    []byte(`{"messages":[{"role":"user","content":"hi"}],"max_tokens":8}`),
	})
	if err != nil || res.Status != messages.StatusOK || res.Region != region {
		t.Fatalf("call pinned to %s: %v %+v", region, err, res)
	}
}

// The rules for --config: a dispatcher stores its file only when KV holds
// no configuration; after that KV wins, unless --config-force; an executor
// never stores its file.
func TestServicesConfigFileAndKV(t *testing.T) {
	srv := natstest.Start(t)
	server := srv.ClientURL()
	a := writeFile(t, "a.yaml", deploymentYAML("http://127.0.0.1:1/v1", 600))
	b := writeFile(t, "b.yaml", deploymentYAML("http://127.0.0.1:1/v1", 900))
	rpm := func() (int64, uint64) {
		cfg, rev := getConfig(t, server)
		d, _ := cfg.Deployment("us-1")
		return d.RPM, rev
	}

	// An executor with a file uses it, but does not store it (nor does it
	// create the streams: see TestExecutorWaitsForStreams).
	ensureStreams(t, server)
	e := startCommand(t, runExecutor, "--server", server, "--region", "us-east", "--config", a, "--metrics", "")
	e.waitLog(t, "KV holds no configuration yet: using --config FILE")
	e.waitLog(t, "executor started")
	expect(t, 1, []string{"config", "get", "--server", server}, "no configuration")

	// The first dispatcher stores its file...
	d := startCommand(t, runDispatcher, "--server", server, "--config", a, "--metrics", "")
	d.waitLog(t, "KV held no configuration: stored --config FILE")
	d.waitLog(t, "dispatcher started")
	if got, _ := rpm(); got != 600 {
		t.Fatalf("rpm %d after the first dispatcher, want its file's 600", got)
	}
	if err := d.stop(t); err != nil {
		t.Fatal(err)
	}
	// ...a restart with another file does not replace it...
	d = startCommand(t, runDispatcher, "--server", server, "--config", b, "--metrics", "")
	d.waitLog(t, "differs from --config FILE; using KV's")
	d.waitLog(t, "dispatcher started")
	got, first := rpm()
	if got != 600 {
		t.Fatalf("rpm %d after a restart with another file, want KV's 600", got)
	}
	if err := d.stop(t); err != nil {
		t.Fatal(err)
	}
	// ...unless forced.
	d = startCommand(t, runDispatcher, "--server", server, "--config", b, "--config-force", "--metrics", "")
	d.waitLog(t, "--config-force")
	d.waitLog(t, "dispatcher started")
	got, second := rpm()
	if got != 900 || second <= first {
		t.Fatalf("after --config-force: rpm %d revision %d, want 900 after revision %d", got, second, first)
	}
	// The executor, running all along, follows KV.
	e.waitLog(t, "revision="+strconv.FormatUint(second, 10))
	for _, x := range []*background{d, e} {
		if err := x.stop(t); err != nil {
			t.Error(err)
		}
	}
}

// A service waiting for a configuration stops cleanly when told to.
func TestServiceStopsWhileWaitingForAConfiguration(t *testing.T) {
	srv := natstest.Start(t)
	d := startCommand(t, runDispatcher, "--server", srv.ClientURL(), "--metrics", "")
	d.waitLog(t, "waiting for a configuration in KV")
	if err := d.stop(t); err != nil {
		t.Fatalf("a dispatcher stopped while waiting returned %v, want nil", err)
	}
}

// A service started before its NATS server waits for it, and starts once
// the server is up; stopped while it waits, it returns cleanly.
func TestServiceWaitsForNATS(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := ln.Addr().(*net.TCPAddr).Port
	ln.Close()
	server := fmt.Sprintf("nats://127.0.0.1:%d", port)
	a := writeFile(t, "a.yaml", deploymentYAML("http://127.0.0.1:1/v1", 600))

	stopped := startCommand(t, runExecutor, "--server", server, "--region", "us-east", "--config", a, "--metrics", "")
	stopped.waitLog(t, "NATS is not reachable yet")
	if err := stopped.stop(t); err != nil {
		t.Fatalf("an executor stopped while waiting for NATS returned %v, want nil", err)
	}

	d := startCommand(t, runDispatcher, "--server", server, "--config", a, "--metrics", "")
	d.waitLog(t, "NATS is not reachable yet")
	srv, err := embedded.Start(embedded.Config{Port: port, StoreDir: t.TempDir(), Name: "late"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		srv.Shutdown()
		srv.WaitForShutdown()
	})
	d.waitLog(t, "dispatcher started")
	if err := d.stop(t); err != nil {
		t.Fatal(err)
	}
}

// ensureStreams creates sluice's streams and buckets on server, as a
// dispatcher or `sluice config apply` does before executors and gateways
// (which never create them) can start.
func ensureStreams(t *testing.T, server string) {
	t.Helper()
	cfg, err := config.Parse([]byte(deploymentYAML("http://127.0.0.1:1/v1", 600)))
	if err != nil {
		t.Fatal(err)
	}
	nc, err := nats.Connect(server)
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := streams.Ensure(t.Context(), js, cfg.Streams); err != nil {
		t.Fatal(err)
	}
}

// Executors never create sluice's streams (their NATS users may not): one
// started first waits, saying why, and starts once a dispatcher has
// created them.
func TestExecutorWaitsForStreams(t *testing.T) {
	srv := natstest.Start(t)
	server := srv.ClientURL()
	a := writeFile(t, "a.yaml", deploymentYAML("http://127.0.0.1:1/v1", 600))
	e := startCommand(t, runExecutor, "--server", server, "--region", "us-east", "--config", a, "--metrics", "")
	e.waitLog(t, "waiting for sluice's streams")
	if names := streamNames(t, server); len(names) != 0 {
		t.Fatalf("an executor created %v", names)
	}
	d := startCommand(t, runDispatcher, "--server", server, "--config", a, "--metrics", "")
	d.waitLog(t, "dispatcher started")
	e.waitLog(t, "executor started")
	for _, x := range []*background{d, e} {
		if err := x.stop(t); err != nil {
			t.Error(err)
		}
	}
}

func streamNames(t *testing.T, server string) []string {
	t.Helper()
	nc, err := nats.Connect(server)
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	l := js.StreamNames(t.Context())
	for n := range l.Name() {
		names = append(names, n)
	}
	return names
}
