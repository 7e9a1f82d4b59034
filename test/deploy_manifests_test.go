package test

// The deployment files of deploy/ are checked without a Docker engine or a
// Kubernetes cluster: the compose file is loaded with compose-go (as
// `docker compose` loads it), every Kubernetes manifest is decoded strictly
// into its API type (an unknown or misspelt field fails), and both are
// checked against each other and against the rest of the repository: the
// files they mount exist, deploy/nats's servers find every file their
// configuration includes, Prometheus's targets are the services' metrics
// ports, sluice's configuration validates and names only regions that have
// executors, and provider-key secrets reach the executors of their region
// and nothing else.
//
// deploy/k8s/nats-config.yaml is made from deploy/nats/*.conf: after
// editing those, run
//
//	SLUICE_UPDATE_MANIFESTS=1 go test ./test -run TestK8sNATSConfig

import (
	"bytes"
	"context"
	"fmt"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"sort"
	"strconv"
	"strings"
	"testing"

	"github.com/compose-spec/compose-go/v2/cli"
	"github.com/compose-spec/compose-go/v2/types"
	"go.yaml.in/yaml/v3"
	appsv1 "k8s.io/api/apps/v1"
	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	policyv1 "k8s.io/api/policy/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/kustomize/api/krusty"
	"sigs.k8s.io/kustomize/kyaml/filesys"
	k8syaml "sigs.k8s.io/yaml"

	"github.com/sluicehq/sluice/services/config"
)

const (
	depComposeDir  = "../deploy/compose"
	depK8sDir      = "../deploy/k8s"
	depNATSDir     = "../deploy/nats"
	depDockerfile  = "../deploy/docker/Dockerfile"
	depPrometheus  = "../deploy/prometheus/prometheus.yml"
	depGoMod       = "../go.mod"
	depHubServers  = 3
	depDispatchers = 2
)

// depMetricsPorts are the default --metrics ports of the services.
var depMetricsPorts = map[string]int{"dispatcher": 9464, "executor": 9465, "gateway": 9466}

// ---------------------------------------------------------------------------
// Compose

func loadCompose(t *testing.T) *types.Project {
	t.Helper()
	opts, err := cli.NewProjectOptions(
		[]string{filepath.Join(depComposeDir, "compose.yaml")},
		cli.WithWorkingDirectory(depComposeDir),
		cli.WithEnvFiles(filepath.Join(depComposeDir, ".env")),
		cli.WithDotEnv,
		cli.WithProfiles([]string{"tools"}),
		cli.WithResolvedPaths(true),
	)
	if err != nil {
		t.Fatal(err)
	}
	p, err := opts.LoadProject(context.Background())
	if err != nil {
		t.Fatalf("compose.yaml does not load: %v", err)
	}
	return p
}

// sluiceCommand is the sluice subcommand a compose service runs ("" for
// services of other images), and its arguments.
func sluiceCommand(s types.ServiceConfig) (string, []string) {
	if s.Build == nil || s.Build.Dockerfile != "deploy/docker/Dockerfile" || len(s.Command) == 0 {
		return "", nil
	}
	return s.Command[0], s.Command[1:]
}

// flagValue is the value of --name (or -name) in args, and whether it is set.
func flagValue(args []string, name string) (string, bool) {
	for i, a := range args {
		trimmed := strings.TrimLeft(a, "-")
		if trimmed == a {
			continue
		}
		if k, v, ok := strings.Cut(trimmed, "="); ok && k == name {
			return v, true
		}
		if trimmed == name && i+1 < len(args) {
			return args[i+1], true
		}
	}
	return "", false
}

func TestComposeServices(t *testing.T) {
	p := loadCompose(t)
	cfg := mustLoadConfig(t, filepath.Join(depComposeDir, "sluice.yaml"))

	want := []string{"nats-init", "dispatcher-1", "dispatcher-2", "gateway", "fakeprovider",
		"config-apply", "prometheus", "grafana"}
	for i := 1; i <= depHubServers; i++ {
		want = append(want, fmt.Sprintf("hub-%d", i))
	}
	for _, r := range cfg.Regions() {
		want = append(want, "leaf-"+r, "executor-"+r)
	}
	for _, name := range want {
		if _, ok := p.Services[name]; !ok {
			t.Errorf("compose.yaml has no service %s", name)
		}
	}

	oneShot := map[string]bool{"nats-init": true, "config-apply": true, "cli": true, "search": true}
	dispatchers := 0
	for name, s := range p.Services {
		switch {
		case oneShot[name] && s.Restart != "no":
			t.Errorf("service %s runs once: restart must be \"no\", not %q", name, s.Restart)
		case !oneShot[name] && s.Restart != types.RestartPolicyUnlessStopped:
			t.Errorf("service %s: restart %q, want unless-stopped", name, s.Restart)
		}
		for dep, d := range s.DependsOn {
			if _, ok := p.Services[dep]; !ok {
				t.Errorf("service %s depends on %s, which is no service", name, dep)
			}
			if d.Condition == types.ServiceConditionHealthy && p.Services[dep].HealthCheck == nil {
				t.Errorf("service %s waits for %s to be healthy, which has no healthcheck", name, dep)
			}
		}
		if strings.HasPrefix(name, "hub-") || strings.HasPrefix(name, "leaf-") {
			if s.HealthCheck == nil || len(s.HealthCheck.Test) == 0 {
				t.Errorf("NATS server %s has no healthcheck", name)
			}
			if d, ok := s.DependsOn["nats-init"]; !ok || d.Condition != types.ServiceConditionCompletedSuccessfully {
				t.Errorf("NATS server %s must wait for nats-init to complete (certificates, passwords.conf)", name)
			}
		}
		cmd, args := sluiceCommand(s)
		if cmd == "dispatcher" {
			dispatchers++
		}
		// One writer creates sluice's streams and stores the
		// configuration (config-apply) before the services start: services
		// creating the same streams at once on a new cluster time out.
		if _, ok := depMetricsPorts[cmd]; ok {
			if d, ok := s.DependsOn["config-apply"]; !ok || d.Condition != types.ServiceConditionCompletedSuccessfully {
				t.Errorf("service %s must wait for config-apply to complete", name)
			}
			if _, ok := flagValue(args, "config"); ok {
				t.Errorf("service %s takes --config: only config-apply stores the configuration", name)
			}
		}
		for _, port := range s.Ports {
			if port.Target == 0 {
				t.Errorf("service %s: port %+v has no container port", name, port)
			}
			if _, err := strconv.ParseUint(port.Published, 10, 16); err != nil {
				t.Errorf("service %s: published port %q: %v", name, port.Published, err)
			}
			// Nothing is published beyond this machine.
			if port.HostIP != "127.0.0.1" {
				t.Errorf("service %s publishes port %d on %q: publish on 127.0.0.1 only", name, port.Target, port.HostIP)
			}
		}
	}
	if dispatchers != depDispatchers {
		t.Errorf("%d dispatcher services, want %d", dispatchers, depDispatchers)
	}

	// Published ports are distinct.
	seen := map[string]string{}
	for _, name := range sortedServiceNames(p) {
		for _, port := range p.Services[name].Ports {
			if other, ok := seen[port.Published]; ok {
				t.Errorf("services %s and %s both publish port %s", other, name, port.Published)
			}
			seen[port.Published] = name
		}
	}

	// JetStream data survives a restart: each hub server has a named volume.
	for i := 1; i <= depHubServers; i++ {
		name := fmt.Sprintf("hub-%d", i)
		found := false
		for _, v := range p.Services[name].Volumes {
			if v.Type == types.VolumeTypeVolume && v.Target == "/data" {
				found = true
				if _, ok := p.Volumes[v.Source]; !ok {
					t.Errorf("%s mounts volume %s, which is not declared", name, v.Source)
				}
			}
		}
		if !found {
			t.Errorf("%s has no named volume at /data (hub.conf's store_dir)", name)
		}
	}
}

func sortedServiceNames(p *types.Project) []string {
	names := make([]string, 0, len(p.Services))
	for name := range p.Services {
		names = append(names, name)
	}
	sort.Strings(names)
	return names
}

// TestComposeFiles checks that what compose mounts or builds exists, and
// that each NATS server is given every file its configuration includes
// and every certificate it names.
func TestComposeFiles(t *testing.T) {
	p := loadCompose(t)
	for _, name := range sortedServiceNames(p) {
		s := p.Services[name]
		for _, v := range s.Volumes {
			switch v.Type {
			case types.VolumeTypeBind:
				if _, err := os.Stat(v.Source); err != nil {
					t.Errorf("service %s mounts %s, which does not exist", name, v.Source)
				}
			case types.VolumeTypeVolume:
				if _, ok := p.Volumes[v.Source]; !ok {
					t.Errorf("service %s mounts volume %q, which is not declared", name, v.Source)
				}
			}
		}
		if b := s.Build; b != nil && b.DockerfileInline == "" {
			if _, err := os.Stat(filepath.Join(b.Context, b.Dockerfile)); err != nil {
				t.Errorf("service %s builds from %s: %v", name, b.Dockerfile, err)
			}
		}
	}
	for name, sec := range p.Secrets {
		if _, err := os.Stat(sec.File); err != nil {
			t.Errorf("secret %s: %v", name, err)
		}
	}

	// The NATS servers: mounted files, as the server reads them.
	for _, name := range sortedServiceNames(p) {
		s := p.Services[name]
		if !strings.HasPrefix(name, "hub-") && !strings.HasPrefix(name, "leaf-") {
			continue
		}
		conf, ok := flagValue(s.Command, "config")
		if !ok {
			t.Errorf("NATS server %s: no --config in its command %q", name, s.Command)
			continue
		}
		if want := "/etc/nats/" + name + ".conf"; conf != want {
			t.Errorf("NATS server %s runs %s, want %s", name, conf, want)
		}
		files := map[string]string{} // container path -> host path
		generated := map[string]bool{}
		for _, v := range s.Volumes {
			switch v.Type {
			case types.VolumeTypeBind:
				files[v.Target] = v.Source
			case types.VolumeTypeVolume:
				// Made by nats-init.sh: passwords.conf in nats-etc, and
				// each server's certificates in nats-pki/<server>/.
				switch v.Source {
				case "nats-etc":
					generated[v.Target+"/passwords.conf"] = true
				case "nats-pki":
					if v.Volume == nil || v.Volume.Subpath != name {
						t.Errorf("NATS server %s mounts nats-pki at %s: want its own certificates, subpath %s", name, v.Target, name)
						continue
					}
					for _, f := range []string{"server.pem", "server-key.pem", "ca.pem"} {
						generated[v.Target+"/"+f] = true
					}
				}
			}
		}
		checkNATSFiles(t, "compose service "+name, conf, func(path string) ([]byte, bool) {
			if host, ok := files[path]; ok {
				data, err := os.ReadFile(host)
				if err != nil {
					t.Fatal(err)
				}
				return data, true
			}
			if generated[path] {
				return nil, true
			}
			return nil, false
		})
	}

	// nats-init makes every certificate the servers name.
	script, err := os.ReadFile(filepath.Join(depComposeDir, "nats-init.sh"))
	if err != nil {
		t.Fatal(err)
	}
	for _, name := range sortedServiceNames(p) {
		if (strings.HasPrefix(name, "hub-") || strings.HasPrefix(name, "leaf-")) && !bytes.Contains(script, []byte(" "+name)) {
			t.Errorf("nats-init.sh makes no certificate for %s", name)
		}
	}
}

var (
	natsIncludeRE = regexp.MustCompile(`(?m)^\s*include\s+"?([^"\s]+)"?`)
	natsPathRE    = regexp.MustCompile(`"(/etc/nats/[^"]+)"`)
	natsStoreRE   = regexp.MustCompile(`(?m)^\s*store_dir:\s*"?([^"\s]+)"?`)
)

// checkNATSFiles follows a NATS configuration from path through its
// includes; open returns a file's content (nil for one made at run time)
// and whether the server would find it. Certificates named in the files
// (/etc/nats/...) must be found as well.
func checkNATSFiles(t *testing.T, who, path string, open func(string) ([]byte, bool)) {
	t.Helper()
	seen := map[string]bool{}
	var visit func(string)
	visit = func(p string) {
		if seen[p] {
			return
		}
		seen[p] = true
		data, ok := open(p)
		if !ok {
			t.Errorf("%s: NATS server reads %s, which is not mounted", who, p)
			return
		}
		for _, m := range natsIncludeRE.FindAllSubmatch(data, -1) {
			visit(filepath.Join(filepath.Dir(p), string(m[1])))
		}
		for _, m := range natsPathRE.FindAllSubmatch(data, -1) {
			if _, ok := open(string(m[1])); !ok {
				t.Errorf("%s: %s names %s, which is not mounted", who, p, m[1])
			}
		}
	}
	visit(path)
}

// TestComposeNATSUsers checks each sluice service's NATS settings against
// deploy/nats/accounts.conf: the user exists, the inbox prefix is the one
// its permissions allow, the password is the user's, and a service on a
// leaf node reaches the hub's JetStream through its domain.
func TestComposeNATSUsers(t *testing.T) {
	p := loadCompose(t)
	users := natsUsers(t)
	env, err := os.ReadFile(filepath.Join(depComposeDir, ".env"))
	if err != nil {
		t.Fatal(err)
	}
	// nats-init writes a hash for every password accounts.conf names.
	accounts, err := os.ReadFile(filepath.Join(depNATSDir, "accounts.conf"))
	if err != nil {
		t.Fatal(err)
	}
	initScript, err := os.ReadFile(filepath.Join(depComposeDir, "nats-init.sh"))
	if err != nil {
		t.Fatal(err)
	}
	loop := regexp.MustCompile(`(?m)^\s*for user in ([A-Z_ ]+); do`).FindSubmatch(initScript)
	if loop == nil {
		t.Fatal("nats-init.sh: no `for user in ...` loop")
	}
	for _, m := range regexp.MustCompile(`password:\s*\$([A-Z0-9_]+)`).FindAllSubmatch(accounts, -1) {
		v := string(m[1])
		if p.Services["nats-init"].Environment[v] == nil {
			t.Errorf("accounts.conf uses $%s, which nats-init is not given", v)
		}
		if !slices.Contains(strings.Fields(string(loop[1])), strings.TrimSuffix(v, "_PASSWORD")) {
			t.Errorf("accounts.conf uses $%s, which nats-init.sh does not write", v)
		}
	}

	for _, name := range sortedServiceNames(p) {
		s := p.Services[name]
		cmd, _ := sluiceCommand(s)
		if cmd == "" || cmd == "fakeprovider" {
			continue
		}
		get := func(k string) string {
			if v := s.Environment[k]; v != nil {
				return *v
			}
			return ""
		}
		user := get("NATS_USER")
		if !users[user] {
			t.Errorf("service %s: NATS_USER %q is no user of accounts.conf", name, user)
			continue
		}
		if got, want := get("NATS_INBOX_PREFIX"), "_INBOX_"+user; got != want {
			t.Errorf("service %s: NATS_INBOX_PREFIX %q, want %q", name, got, want)
		}
		passVar := strings.ToUpper(strings.ReplaceAll(user, "-", "_")) + "_PASSWORD"
		if want := envFileValue(env, passVar); want == "" || get("NATS_PASSWORD") != want {
			t.Errorf("service %s: NATS_PASSWORD is not .env's %s", name, passVar)
		}
		if get("NATS_CA") == "" {
			t.Errorf("service %s: no NATS_CA (deploy/nats's servers require TLS)", name)
		}
		onLeaf := false
		for _, u := range strings.Split(get("NATS_URL"), ",") {
			pu, err := url.Parse(u)
			if err != nil || pu.Scheme != "tls" {
				t.Errorf("service %s: NATS_URL %q: want tls://host:port URLs", name, u)
				continue
			}
			if _, ok := p.Services[pu.Hostname()]; !ok {
				t.Errorf("service %s: NATS_URL names %s, which is no service", name, pu.Hostname())
			}
			if !sharesNetwork(p.Services[name], p.Services[pu.Hostname()]) {
				t.Errorf("service %s cannot reach %s: no network in common", name, pu.Hostname())
			}
			onLeaf = onLeaf || strings.HasPrefix(pu.Hostname(), "leaf-")
		}
		if onLeaf && get("SLUICE_JS_DOMAIN") != "hub" {
			t.Errorf("service %s connects to a leaf node without SLUICE_JS_DOMAIN=hub", name)
		}
		if vol := volumeAt(s, filepath.Dir(get("NATS_CA"))); vol != "nats-ca" {
			t.Errorf("service %s: NATS_CA %s is not in the volume nats-ca (got %q)", name, get("NATS_CA"), vol)
		}
	}
}

func volumeAt(s types.ServiceConfig, target string) string {
	for _, v := range s.Volumes {
		if v.Target == target {
			return v.Source
		}
	}
	return ""
}

func sharesNetwork(a, b types.ServiceConfig) bool {
	for n := range a.Networks {
		if _, ok := b.Networks[n]; ok {
			return true
		}
	}
	return false
}

func envFileValue(env []byte, key string) string {
	for _, line := range strings.Split(string(env), "\n") {
		if k, v, ok := strings.Cut(strings.TrimSpace(line), "="); ok && k == key {
			return v
		}
	}
	return ""
}

var natsUserRE = regexp.MustCompile(`(?m)^\s*(?:\{\s*)?user:\s*([A-Za-z0-9_-]+)`)

// natsUsers are the users of deploy/nats/accounts.conf.
func natsUsers(t *testing.T) map[string]bool {
	t.Helper()
	data, err := os.ReadFile(filepath.Join(depNATSDir, "accounts.conf"))
	if err != nil {
		t.Fatal(err)
	}
	users := map[string]bool{}
	for _, m := range natsUserRE.FindAllSubmatch(data, -1) {
		users[string(m[1])] = true
	}
	if len(users) == 0 {
		t.Fatal("found no user in accounts.conf")
	}
	return users
}

// TestComposeExecutorSecrets checks that provider keys reach each region's
// executor and nothing else.
func TestComposeExecutorSecrets(t *testing.T) {
	p := loadCompose(t)
	cfg := mustLoadConfig(t, filepath.Join(depComposeDir, "sluice.yaml"))
	for _, name := range sortedServiceNames(p) {
		s := p.Services[name]
		cmd, args := sluiceCommand(s)
		if cmd != "executor" {
			if len(s.Secrets) > 0 {
				t.Errorf("service %s is no executor but has secrets %v", name, s.Secrets)
			}
			continue
		}
		region, _ := flagValue(args, "region")
		if name != "executor-"+region {
			t.Errorf("service %s runs the executor of region %q", name, region)
		}
		if len(s.Secrets) != 1 || s.Secrets[0].Source != "provider-keys-"+region {
			t.Errorf("executor %s: secrets %v, want provider-keys-%s alone", name, s.Secrets, region)
			continue
		}
		if path, _ := flagValue(args, "secrets"); path != "/run/secrets/"+s.Secrets[0].Target {
			t.Errorf("executor %s reads --secrets %q, but its secret is at /run/secrets/%s", name, path, s.Secrets[0].Target)
		}
		keys := readSecretsFile(t, p.Secrets[s.Secrets[0].Source].File)
		checkRegionKeys(t, "compose "+name, cfg, region, keys)
		// The region's deployments' base URLs are within its reach.
		for _, d := range regionDeployments(cfg, region) {
			u, err := url.Parse(d.BaseURL)
			if err != nil {
				t.Fatal(err)
			}
			if target, ok := p.Services[u.Hostname()]; ok && !sharesNetwork(s, target) {
				t.Errorf("executor %s cannot reach %s (deployment %s): no network in common", name, u.Hostname(), d.ID)
			}
		}
		// An executor's only way to sluice is its region's leaf node.
		if _, ok := s.Networks["hub"]; ok {
			t.Errorf("executor %s is on the hub network: it must go through leaf-%s", name, region)
		}
	}
}

func readSecretsFile(t *testing.T, path string) map[string]string {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var m map[string]string
	if err := yaml.Unmarshal(data, &m); err != nil {
		t.Fatalf("%s: %v", path, err)
	}
	return m
}

func regionDeployments(cfg *config.Config, region string) []*config.Deployment {
	var out []*config.Deployment
	for _, name := range slices.Sorted(mapKeys(cfg.Pools)) {
		for _, d := range cfg.Pools[name].Deployments {
			if d.Region == region {
				out = append(out, d)
			}
		}
	}
	return out
}

func mapKeys[V any](m map[string]V) func(func(string) bool) {
	return func(yield func(string) bool) {
		for k := range m {
			if !yield(k) {
				return
			}
		}
	}
}

// checkRegionKeys: the secrets given to region's executors resolve every
// key its deployments name, and hold no key of another region.
func checkRegionKeys(t *testing.T, who string, cfg *config.Config, region string, keys map[string]string) {
	t.Helper()
	mine := map[string]bool{}
	for _, d := range regionDeployments(cfg, region) {
		mine[d.Key] = true
		if keys[d.Key] == "" {
			t.Errorf("%s: no secret for key %s of deployment %s", who, d.Key, d.ID)
		}
	}
	for k := range keys {
		if !mine[k] {
			t.Errorf("%s: holds key %s, which no deployment of region %s names", who, k, region)
		}
	}
}

// TestComposePrometheusTargets checks prometheus.yml's static targets
// against compose's services: each is a sluice service serving metrics on
// that port, of the job's kind, within Prometheus's reach, and every
// sluice service is scraped.
func TestComposePrometheusTargets(t *testing.T) {
	p := loadCompose(t)
	prom, ok := p.Services["prometheus"]
	if !ok {
		t.Fatal("no prometheus service")
	}
	targets := map[string]bool{}
	for job, hosts := range prometheusTargets(t) {
		for _, target := range hosts {
			host, portStr, err := net.SplitHostPort(target)
			if err != nil {
				t.Errorf("job %s: target %q: %v", job, target, err)
				continue
			}
			if host == "localhost" {
				continue
			}
			targets[host] = true
			s, ok := p.Services[host]
			if !ok {
				t.Errorf("job %s: target %s is no compose service", job, target)
				continue
			}
			if !sharesNetwork(prom, s) {
				t.Errorf("job %s: prometheus cannot reach %s: no network in common", job, host)
			}
			cmd, args := sluiceCommand(s)
			if job != "sluice-"+cmd {
				t.Errorf("job %s scrapes %s, which runs sluice %q", job, host, cmd)
			}
			port := depMetricsPorts[cmd]
			if v, ok := flagValue(args, "metrics"); ok {
				_, ps, _ := net.SplitHostPort(v)
				port, _ = strconv.Atoi(ps)
			}
			if strconv.Itoa(port) != portStr {
				t.Errorf("job %s: target %s, but %s serves metrics on :%d", job, target, host, port)
			}
		}
	}
	for _, name := range sortedServiceNames(p) {
		cmd, _ := sluiceCommand(p.Services[name])
		if _, ok := depMetricsPorts[cmd]; ok && !targets[name] {
			t.Errorf("service %s (sluice %s) is not a target of prometheus.yml", name, cmd)
		}
	}
}

// prometheusTargets are prometheus.yml's static targets by job.
func prometheusTargets(t *testing.T) map[string][]string {
	t.Helper()
	data, err := os.ReadFile(depPrometheus)
	if err != nil {
		t.Fatal(err)
	}
	var cfg struct {
		ScrapeConfigs []struct {
			JobName       string `yaml:"job_name"`
			StaticConfigs []struct {
				Targets []string `yaml:"targets"`
			} `yaml:"static_configs"`
		} `yaml:"scrape_configs"`
	}
	if err := yaml.Unmarshal(data, &cfg); err != nil {
		t.Fatal(err)
	}
	out := map[string][]string{}
	for _, sc := range cfg.ScrapeConfigs {
		for _, st := range sc.StaticConfigs {
			out[sc.JobName] = append(out[sc.JobName], st.Targets...)
		}
	}
	return out
}

// TestComposeImages: the NATS servers run the nats-server version sluice
// is tested against (go.mod), and Prometheus and Grafana get deploy/'s
// files where they read them.
func TestComposeImages(t *testing.T) {
	p := loadCompose(t)
	version := natsServerVersion(t)
	for _, name := range sortedServiceNames(p) {
		s := p.Services[name]
		if strings.HasPrefix(name, "hub-") || strings.HasPrefix(name, "leaf-") {
			if !natsImageMatches(s.Image, version) {
				t.Errorf("%s runs %s; sluice is tested against nats-server %s (go.mod)", name, s.Image, version)
			}
		}
	}
	mounts := map[string]map[string]string{
		"prometheus": {"/etc/prometheus": "../deploy/prometheus"},
		"grafana": {
			"/etc/grafana/provisioning":   "../deploy/grafana/provisioning",
			"/var/lib/grafana/dashboards": "../deploy/grafana/dashboards",
		},
	}
	for name, want := range mounts {
		for target, dir := range want {
			abs, err := filepath.Abs(dir)
			if err != nil {
				t.Fatal(err)
			}
			found := false
			for _, v := range p.Services[name].Volumes {
				if v.Target == target && v.Source == abs && v.ReadOnly {
					found = true
				}
			}
			if !found {
				t.Errorf("%s: %s is not mounted read-only at %s", name, dir, target)
			}
		}
	}
}

func natsServerVersion(t *testing.T) string {
	t.Helper()
	data, err := os.ReadFile(depGoMod)
	if err != nil {
		t.Fatal(err)
	}
	m := regexp.MustCompile(`github\.com/nats-io/nats-server/v2 v(\S+)`).FindSubmatch(data)
	if m == nil {
		t.Fatal("go.mod requires no nats-server")
	}
	return string(m[1])
}

func natsImageMatches(image, version string) bool {
	name, tag, _ := strings.Cut(image, ":")
	return (name == "nats" || strings.HasSuffix(name, "/nats")) &&
		(tag == version || strings.HasPrefix(tag, version+"-"))
}

// ---------------------------------------------------------------------------
// sluice's configuration in compose and Kubernetes

func mustLoadConfig(t *testing.T, path string) *config.Config {
	t.Helper()
	cfg, err := config.Load(path)
	if err != nil {
		t.Fatalf("sluice configuration: %v", err)
	}
	return cfg
}

// TestDeployConfigs: each sluice configuration validates, names only
// regions that have executors (and every executor's region has
// deployments), replicates streams over the hub's servers, and holds no
// secret of an executor.
func TestDeployConfigs(t *testing.T) {
	p := loadCompose(t)
	objs := loadK8s(t)
	composeCfg := filepath.Join(depComposeDir, "sluice.yaml")
	k8sCfg := filepath.Join(depK8sDir, "sluice.yaml")

	composeExec := map[string]bool{}
	for _, s := range p.Services {
		if cmd, args := sluiceCommand(s); cmd == "executor" {
			r, _ := flagValue(args, "region")
			composeExec[r] = true
		}
	}
	k8sExec := map[string]bool{}
	for _, d := range objs.deployments {
		if r := executorRegion(d.Spec.Template.Spec); r != "" {
			k8sExec[r] = true
		}
	}

	var secrets []string
	for _, sec := range p.Secrets {
		for _, v := range readSecretsFile(t, sec.File) {
			if len(v) >= 8 { // shorter ones would be found by chance
				secrets = append(secrets, v)
			}
		}
	}

	for path, executors := range map[string]map[string]bool{composeCfg: composeExec, k8sCfg: k8sExec} {
		cfg := mustLoadConfig(t, path)
		regions := cfg.Regions()
		if len(regions) < 2 {
			t.Errorf("%s: %d regions; the deployment has two or more", path, len(regions))
		}
		for _, r := range regions {
			if !executors[r] {
				t.Errorf("%s names region %s, which has no executor", path, r)
			}
		}
		for r := range executors {
			if !slices.Contains(regions, r) {
				t.Errorf("%s: executors of region %s, which no deployment names", path, r)
			}
		}
		if cfg.Streams.Replicas != depHubServers {
			t.Errorf("%s: streams.replicas %d, but the hub has %d servers", path, cfg.Streams.Replicas, depHubServers)
		}
		data, err := os.ReadFile(path)
		if err != nil {
			t.Fatal(err)
		}
		for _, s := range secrets {
			if bytes.Contains(data, []byte(s)) {
				t.Errorf("%s holds a provider secret of an executor", path)
			}
		}
	}
}

// ---------------------------------------------------------------------------
// Kubernetes

// k8sObjects are deploy/k8s's objects, by kind.
type k8sObjects struct {
	files        map[string]bool // the files kustomization.yaml lists
	namespaces   []*corev1.Namespace
	configMaps   map[string]*corev1.ConfigMap
	secrets      map[string]*corev1.Secret
	services     map[string]*corev1.Service
	deployments  map[string]*appsv1.Deployment
	statefulSets map[string]*appsv1.StatefulSet
	jobs         map[string]*batchv1.Job
	pdbs         map[string]*policyv1.PodDisruptionBudget
	pvcs         map[string]*corev1.PersistentVolumeClaim
	accounts     map[string]*corev1.ServiceAccount
	roles        map[string]*rbacv1.Role
	bindings     map[string]*rbacv1.RoleBinding
	kustomize    kustomization // deploy/k8s's
}

func newK8sObjects() *k8sObjects {
	return &k8sObjects{
		files:        map[string]bool{},
		configMaps:   map[string]*corev1.ConfigMap{},
		secrets:      map[string]*corev1.Secret{},
		services:     map[string]*corev1.Service{},
		deployments:  map[string]*appsv1.Deployment{},
		statefulSets: map[string]*appsv1.StatefulSet{},
		jobs:         map[string]*batchv1.Job{},
		pdbs:         map[string]*policyv1.PodDisruptionBudget{},
		pvcs:         map[string]*corev1.PersistentVolumeClaim{},
		accounts:     map[string]*corev1.ServiceAccount{},
		roles:        map[string]*rbacv1.Role{},
		bindings:     map[string]*rbacv1.RoleBinding{},
	}
}

// kustomization is what deploy/k8s/kustomization.yaml may hold.
type kustomization struct {
	APIVersion         string   `json:"apiVersion"`
	Kind               string   `json:"kind"`
	Namespace          string   `json:"namespace"`
	Resources          []string `json:"resources"`
	ConfigMapGenerator []struct {
		Name  string   `json:"name"`
		Files []string `json:"files"`
	} `json:"configMapGenerator"`
	GeneratorOptions struct {
		DisableNameSuffixHash bool `json:"disableNameSuffixHash"`
	} `json:"generatorOptions"`
	Images []struct {
		Name    string `json:"name"`
		NewName string `json:"newName"`
		NewTag  string `json:"newTag"`
	} `json:"images"`
}

// workload is a pod template with the object it belongs to.
type workload struct {
	kind, name string
	pod        corev1.PodTemplateSpec
	isJob      bool
}

func (o *k8sObjects) workloads() []workload {
	var out []workload
	for _, name := range slices.Sorted(mapKeys(o.deployments)) {
		out = append(out, workload{"Deployment", name, o.deployments[name].Spec.Template, false})
	}
	for _, name := range slices.Sorted(mapKeys(o.statefulSets)) {
		out = append(out, workload{"StatefulSet", name, o.statefulSets[name].Spec.Template, false})
	}
	for _, name := range slices.Sorted(mapKeys(o.jobs)) {
		out = append(out, workload{"Job", name, o.jobs[name].Spec.Template, true})
	}
	return out
}

var yamlDocSep = regexp.MustCompile(`(?m)^---[ \t]*$`)

// loadK8s decodes every manifest deploy/k8s/kustomization.yaml lists
// (and those of the directories it lists, such as monitoring/), strictly,
// into its API type, and the ConfigMaps their generators make.
func loadK8s(t *testing.T) *k8sObjects {
	t.Helper()
	o := newK8sObjects()
	o.kustomize = o.loadKustomization(t, "")
	return o
}

// loadKustomization loads the kustomization of dir (relative to
// deploy/k8s) and returns it.
func (o *k8sObjects) loadKustomization(t *testing.T, dir string) kustomization {
	t.Helper()
	var k kustomization
	path := filepath.Join(depK8sDir, dir, "kustomization.yaml")
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if err := k8syaml.UnmarshalStrict(data, &k); err != nil {
		t.Fatalf("%s: %v", path, err)
	}
	for _, f := range k.Resources {
		rel := filepath.Join(dir, f)
		if st, err := os.Stat(filepath.Join(depK8sDir, rel)); err == nil && st.IsDir() {
			o.loadKustomization(t, rel)
			continue
		}
		o.files[rel] = true
		data, err := os.ReadFile(filepath.Join(depK8sDir, rel))
		if err != nil {
			t.Fatalf("%s lists %s: %v", path, f, err)
		}
		for i, doc := range yamlDocSep.Split(string(data), -1) {
			if err := o.add([]byte(doc)); err != nil {
				t.Fatalf("%s, document %d: %v", rel, i+1, err)
			}
		}
	}
	for _, g := range k.ConfigMapGenerator {
		cm := &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: g.Name}, Data: map[string]string{}}
		for _, f := range g.Files {
			rel := filepath.Join(dir, f)
			o.files[rel] = true
			data, err := os.ReadFile(filepath.Join(depK8sDir, rel))
			if err != nil {
				t.Fatalf("configMapGenerator %s: %v", g.Name, err)
			}
			cm.Data[filepath.Base(f)] = string(data)
		}
		o.configMaps[g.Name] = cm
	}
	return k
}

// add decodes one YAML document, strictly, by its apiVersion and kind.
func (o *k8sObjects) add(doc []byte) error {
	var tm metav1.TypeMeta
	if err := k8syaml.Unmarshal(doc, &tm); err != nil {
		return err
	}
	if tm.Kind == "" && tm.APIVersion == "" {
		if strings.TrimSpace(stripYAMLComments(doc)) == "" {
			return nil // comments only
		}
		return fmt.Errorf("no apiVersion and kind")
	}
	var obj any
	var name func() string
	switch gvk := tm.APIVersion + "/" + tm.Kind; gvk {
	case "v1/Namespace":
		x := &corev1.Namespace{}
		obj, name = x, func() string { o.namespaces = append(o.namespaces, x); return x.Name }
	case "v1/ConfigMap":
		x := &corev1.ConfigMap{}
		obj, name = x, func() string { o.configMaps[x.Name] = x; return x.Name }
	case "v1/Secret":
		x := &corev1.Secret{}
		obj, name = x, func() string { o.secrets[x.Name] = x; return x.Name }
	case "v1/Service":
		x := &corev1.Service{}
		obj, name = x, func() string { o.services[x.Name] = x; return x.Name }
	case "apps/v1/Deployment":
		x := &appsv1.Deployment{}
		obj, name = x, func() string { o.deployments[x.Name] = x; return x.Name }
	case "apps/v1/StatefulSet":
		x := &appsv1.StatefulSet{}
		obj, name = x, func() string { o.statefulSets[x.Name] = x; return x.Name }
	case "batch/v1/Job":
		x := &batchv1.Job{}
		obj, name = x, func() string { o.jobs[x.Name] = x; return x.Name }
	case "policy/v1/PodDisruptionBudget":
		x := &policyv1.PodDisruptionBudget{}
		obj, name = x, func() string { o.pdbs[x.Name] = x; return x.Name }
	case "v1/PersistentVolumeClaim":
		x := &corev1.PersistentVolumeClaim{}
		obj, name = x, func() string { o.pvcs[x.Name] = x; return x.Name }
	case "v1/ServiceAccount":
		x := &corev1.ServiceAccount{}
		obj, name = x, func() string { o.accounts[x.Name] = x; return x.Name }
	case "rbac.authorization.k8s.io/v1/Role":
		x := &rbacv1.Role{}
		obj, name = x, func() string { o.roles[x.Name] = x; return x.Name }
	case "rbac.authorization.k8s.io/v1/RoleBinding":
		x := &rbacv1.RoleBinding{}
		obj, name = x, func() string { o.bindings[x.Name] = x; return x.Name }
	default:
		return fmt.Errorf("kind %s is not one this test knows: add it to k8sObjects.add", gvk)
	}
	if err := k8syaml.UnmarshalStrict(doc, obj); err != nil {
		return fmt.Errorf("%s: %w", tm.Kind, err)
	}
	if name() == "" {
		return fmt.Errorf("%s without a name", tm.Kind)
	}
	return nil
}

func stripYAMLComments(doc []byte) string {
	var b strings.Builder
	for _, line := range strings.Split(string(doc), "\n") {
		if !strings.HasPrefix(strings.TrimSpace(line), "#") {
			b.WriteString(line)
			b.WriteByte('\n')
		}
	}
	return b.String()
}

// TestK8sFiles: kustomization.yaml lists every file of deploy/k8s, and
// every manifest decodes.
func TestK8sFiles(t *testing.T) {
	o := loadK8s(t)
	err := filepath.WalkDir(depK8sDir, func(path string, e os.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(depK8sDir, path)
		if (strings.HasSuffix(rel, ".yaml") || strings.HasSuffix(rel, ".yml")) && e.Name() != "kustomization.yaml" && !o.files[rel] {
			t.Errorf("deploy/k8s/%s is in no kustomization.yaml", rel)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if o.kustomize.Namespace == "" || len(o.namespaces) != 1 || o.namespaces[0].Name != o.kustomize.Namespace {
		t.Errorf("kustomization.yaml's namespace %q must be the one Namespace of the manifests", o.kustomize.Namespace)
	}
	if len(o.deployments)+len(o.statefulSets) == 0 {
		t.Fatal("no workloads")
	}
}

// TestK8sPods: every container has resource requests and a memory limit,
// and runs as non-root on a read-only root file system without privilege
// escalation; every long-running one has liveness and readiness probes on
// ports it declares.
func TestK8sPods(t *testing.T) {
	o := loadK8s(t)
	version := natsServerVersion(t)
	for _, w := range o.workloads() {
		who := w.kind + " " + w.name
		spec := w.pod.Spec
		if sc := spec.SecurityContext; sc == nil || sc.RunAsNonRoot == nil || !*sc.RunAsNonRoot {
			t.Errorf("%s: pod securityContext.runAsNonRoot is not true", who)
		} else if sc.RunAsUser == nil || *sc.RunAsUser == 0 {
			t.Errorf("%s: no non-zero runAsUser (images may name their user by name, which runAsNonRoot cannot check)", who)
		}
		// Only a pod with a ServiceAccount of its own, bound to a Role,
		// talks to the Kubernetes API (Prometheus's pod discovery).
		if spec.AutomountServiceAccountToken == nil || *spec.AutomountServiceAccountToken {
			bound := false
			for _, b := range o.bindings {
				for _, sub := range b.Subjects {
					bound = bound || (sub.Kind == "ServiceAccount" && sub.Name == spec.ServiceAccountName && o.roles[b.RoleRef.Name] != nil)
				}
			}
			if spec.ServiceAccountName == "" || o.accounts[spec.ServiceAccountName] == nil || !bound {
				t.Errorf("%s: mounts a service account token it does not use", who)
			}
		}
		if len(spec.InitContainers) > 0 {
			t.Errorf("%s: init containers are not checked by this test", who)
		}
		for _, c := range spec.Containers {
			who := who + " container " + c.Name
			req := c.Resources.Requests
			if req.Cpu().IsZero() || req.Memory().IsZero() {
				t.Errorf("%s: no cpu and memory requests", who)
			}
			if c.Resources.Limits.Memory().IsZero() {
				t.Errorf("%s: no memory limit", who)
			}
			sc := c.SecurityContext
			if sc == nil || sc.ReadOnlyRootFilesystem == nil || !*sc.ReadOnlyRootFilesystem {
				t.Errorf("%s: root file system is not read-only", who)
			}
			if sc == nil || sc.AllowPrivilegeEscalation == nil || *sc.AllowPrivilegeEscalation {
				t.Errorf("%s: allowPrivilegeEscalation is not false", who)
			}
			if strings.HasPrefix(c.Image, "nats:") && !natsImageMatches(c.Image, version) {
				t.Errorf("%s runs %s; sluice is tested against nats-server %s (go.mod)", who, c.Image, version)
			}
			if w.isJob {
				continue
			}
			for kind, p := range map[string]*corev1.Probe{"liveness": c.LivenessProbe, "readiness": c.ReadinessProbe} {
				if p == nil {
					t.Errorf("%s: no %s probe", who, kind)
					continue
				}
				if p.HTTPGet != nil && !containerHasPort(c, p.HTTPGet.Port.String()) {
					t.Errorf("%s: %s probe on port %s, which the container does not declare", who, kind, p.HTTPGet.Port.String())
				}
			}
		}
	}
}

func containerHasPort(c corev1.Container, port string) bool {
	for _, p := range c.Ports {
		if p.Name == port || strconv.Itoa(int(p.ContainerPort)) == port {
			return true
		}
	}
	return false
}

// executorRegion is the --region of a pod running `sluice executor`.
func executorRegion(spec corev1.PodSpec) string {
	for _, c := range spec.Containers {
		if len(c.Args) > 0 && c.Args[0] == "executor" {
			r, _ := flagValue(c.Args[1:], "region")
			return r
		}
	}
	return ""
}

// podSecrets are the Secrets a pod reads: volumes (projected too), env
// and envFrom.
func podSecrets(spec corev1.PodSpec) []string {
	var out []string
	for _, v := range spec.Volumes {
		if v.Secret != nil {
			out = append(out, v.Secret.SecretName)
		}
		if v.Projected != nil {
			for _, src := range v.Projected.Sources {
				if src.Secret != nil {
					out = append(out, src.Secret.Name)
				}
			}
		}
	}
	for _, c := range spec.Containers {
		for _, e := range c.Env {
			if e.ValueFrom != nil && e.ValueFrom.SecretKeyRef != nil {
				out = append(out, e.ValueFrom.SecretKeyRef.Name)
			}
		}
		for _, e := range c.EnvFrom {
			if e.SecretRef != nil {
				out = append(out, e.SecretRef.Name)
			}
		}
	}
	return out
}

const providerKeysPrefix = "provider-keys-"

// TestK8sExecutors: one executor Deployment per region of sluice.yaml,
// each on its region's leaf node and mounting its region's provider-key
// Secret; no other workload reads any provider-key Secret.
func TestK8sExecutors(t *testing.T) {
	o := loadK8s(t)
	cfg := mustLoadConfig(t, filepath.Join(depK8sDir, "sluice.yaml"))
	byRegion := map[string][]string{}
	for _, w := range o.workloads() {
		region := executorRegion(w.pod.Spec)
		var keys []string
		for _, s := range podSecrets(w.pod.Spec) {
			if strings.HasPrefix(s, providerKeysPrefix) {
				keys = append(keys, s)
			}
		}
		if region == "" {
			if len(keys) > 0 {
				t.Errorf("%s %s is no executor but reads provider keys %v", w.kind, w.name, keys)
			}
			continue
		}
		byRegion[region] = append(byRegion[region], w.name)
		if w.kind != "Deployment" || w.name != "executor-"+region {
			t.Errorf("the executors of region %s are %s %s, want Deployment executor-%s", region, w.kind, w.name, region)
		}
		if !slices.Equal(keys, []string{providerKeysPrefix + region}) {
			t.Errorf("executor %s reads provider-key Secrets %v, want %s%s alone", w.name, keys, providerKeysPrefix, region)
		}
		checkExecutorPod(t, o, w, region)
	}
	for _, r := range cfg.Regions() {
		if len(byRegion[r]) != 1 {
			t.Errorf("region %s: executor Deployments %v, want one", r, byRegion[r])
		}
		if _, ok := o.deployments["leaf-"+r]; !ok {
			t.Errorf("region %s: no leaf node Deployment leaf-%s", r, r)
		}
		if _, ok := o.services["leaf-"+r]; !ok {
			t.Errorf("region %s: no Service leaf-%s (the name its certificate carries)", r, r)
		}
	}
	// make-secrets.sh's default provider keys are the compose files: they
	// must fit the Kubernetes configuration as well.
	for _, r := range cfg.Regions() {
		keys := readSecretsFile(t, filepath.Join(depComposeDir, "secrets", r+".yaml"))
		checkRegionKeys(t, "deploy/compose/secrets/"+r+".yaml for k8s", cfg, r, keys)
	}
}

func checkExecutorPod(t *testing.T, o *k8sObjects, w workload, region string) {
	t.Helper()
	for _, c := range w.pod.Spec.Containers {
		if len(c.Args) == 0 || c.Args[0] != "executor" {
			continue
		}
		path, _ := flagValue(c.Args[1:], "secrets")
		if path == "" {
			t.Errorf("executor %s: no --secrets", w.name)
			continue
		}
		// --secrets is a file of the provider-keys volume.
		found := false
		for _, m := range c.VolumeMounts {
			if filepath.Dir(path) != m.MountPath {
				continue
			}
			for _, v := range w.pod.Spec.Volumes {
				if v.Name != m.Name || v.Secret == nil || v.Secret.SecretName != providerKeysPrefix+region {
					continue
				}
				for _, it := range v.Secret.Items {
					found = found || it.Path == filepath.Base(path)
				}
			}
		}
		if !found {
			t.Errorf("executor %s: --secrets %s is no file of Secret %s%s", w.name, path, providerKeysPrefix, region)
		}
		env := envMap(c)
		if u, err := url.Parse(env["NATS_URL"]); err != nil || u.Hostname() != "leaf-"+region {
			t.Errorf("executor %s: NATS_URL %q, want its region's leaf node leaf-%s", w.name, env["NATS_URL"], region)
		}
		if env["SLUICE_JS_DOMAIN"] != "hub" {
			t.Errorf("executor %s: SLUICE_JS_DOMAIN %q, want hub", w.name, env["SLUICE_JS_DOMAIN"])
		}
	}
}

func envMap(c corev1.Container) map[string]string {
	m := map[string]string{}
	for _, e := range c.Env {
		m[e.Name] = e.Value
	}
	return m
}

// TestK8sShape: the hub cluster, dispatchers, gateway and config Job, and
// the Services that reach them.
func TestK8sShape(t *testing.T) {
	o := loadK8s(t)

	hub, ok := o.statefulSets["hub"]
	if !ok {
		t.Fatal("no StatefulSet hub")
	}
	if hub.Spec.Replicas == nil || *hub.Spec.Replicas != depHubServers {
		t.Errorf("StatefulSet hub: replicas %v, want %d", hub.Spec.Replicas, depHubServers)
	}
	if hub.Spec.Ordinals == nil || hub.Spec.Ordinals.Start != 1 {
		t.Errorf("StatefulSet hub: pods must be hub-1..hub-%d, as deploy/nats names them (ordinals.start: 1)", depHubServers)
	}
	if hub.Spec.PodManagementPolicy != appsv1.ParallelPodManagement {
		t.Errorf("StatefulSet hub: podManagementPolicy must be Parallel (a server is ready only once the cluster has formed)")
	}
	if svc, ok := o.services[hub.Spec.ServiceName]; !ok || svc.Spec.ClusterIP != corev1.ClusterIPNone {
		t.Errorf("StatefulSet hub: serviceName %q is no headless Service", hub.Spec.ServiceName)
	}
	for i := 1; i <= depHubServers; i++ {
		name := fmt.Sprintf("hub-%d", i)
		svc, ok := o.services[name]
		if !ok || svc.Spec.Selector["statefulset.kubernetes.io/pod-name"] != name || !svc.Spec.PublishNotReadyAddresses {
			t.Errorf("no Service %s selecting pod %s with publishNotReadyAddresses (routes must form before readiness)", name, name)
		}
	}
	// JetStream's store_dir is on the claimed volume.
	hubConf, err := os.ReadFile(filepath.Join(depNATSDir, "hub.conf"))
	if err != nil {
		t.Fatal(err)
	}
	store := natsStoreRE.FindSubmatch(hubConf)
	if store == nil {
		t.Fatal("hub.conf has no store_dir")
	}
	onClaim := false
	for _, c := range hub.Spec.Template.Spec.Containers {
		for _, m := range c.VolumeMounts {
			for _, vct := range hub.Spec.VolumeClaimTemplates {
				if m.Name == vct.Name && strings.HasPrefix(string(store[1]), m.MountPath+"/") {
					onClaim = true
				}
			}
		}
	}
	if !onClaim {
		t.Errorf("StatefulSet hub: store_dir %s is on no volume claim", store[1])
	}
	if _, ok := o.pdbs["hub"]; !ok {
		t.Errorf("no PodDisruptionBudget for the hub (a drain could take two servers and the quorum)")
	}

	if d, ok := o.deployments["dispatcher"]; !ok || d.Spec.Replicas == nil || *d.Spec.Replicas != depDispatchers {
		t.Errorf("want Deployment dispatcher with %d replicas", depDispatchers)
	}
	if _, ok := o.deployments["gateway"]; !ok {
		t.Errorf("no Deployment gateway")
	}
	if _, ok := o.services["gateway"]; !ok {
		t.Errorf("no Service gateway")
	}
	if j, ok := o.jobs["config-apply"]; !ok || !slices.Equal(firstArgs(j.Spec.Template.Spec, 2), []string{"config", "apply"}) {
		t.Errorf("no Job config-apply running `sluice config apply`")
	}

	// Services select pods, on ports those pods declare.
	for _, name := range slices.Sorted(mapKeys(o.services)) {
		svc := o.services[name]
		var pods []workload
		for _, w := range o.workloads() {
			if len(svc.Spec.Selector) > 0 && selects(svc.Spec.Selector, w.pod.Labels) {
				pods = append(pods, w)
			}
		}
		if _, perPod := svc.Spec.Selector["statefulset.kubernetes.io/pod-name"]; perPod {
			continue
		}
		if len(pods) == 0 {
			t.Errorf("Service %s selects no pods", name)
		}
		for _, port := range svc.Spec.Ports {
			for _, w := range pods {
				ok := false
				for _, c := range w.pod.Spec.Containers {
					ok = ok || containerHasPort(c, port.TargetPort.String())
				}
				if !ok {
					t.Errorf("Service %s: target port %s is not declared by %s %s", name, port.TargetPort.String(), w.kind, w.name)
				}
			}
		}
	}
	for _, w := range o.workloads() {
		for _, v := range w.pod.Spec.Volumes {
			if v.PersistentVolumeClaim != nil && o.pvcs[v.PersistentVolumeClaim.ClaimName] == nil {
				t.Errorf("%s %s: claim %s is not in the manifests", w.kind, w.name, v.PersistentVolumeClaim.ClaimName)
			}
		}
	}
	for _, name := range slices.Sorted(mapKeys(o.pdbs)) {
		sel := o.pdbs[name].Spec.Selector
		n := 0
		for _, w := range o.workloads() {
			if sel != nil && selects(sel.MatchLabels, w.pod.Labels) {
				n++
			}
		}
		if n != 1 {
			t.Errorf("PodDisruptionBudget %s selects %d workloads, want 1", name, n)
		}
	}
	for _, w := range o.workloads() {
		var sel *metav1.LabelSelector
		switch w.kind {
		case "Deployment":
			sel = o.deployments[w.name].Spec.Selector
		case "StatefulSet":
			sel = o.statefulSets[w.name].Spec.Selector
		default:
			continue
		}
		if sel == nil || !selects(sel.MatchLabels, w.pod.Labels) {
			t.Errorf("%s %s: its selector does not match its pods", w.kind, w.name)
		}
		// Selectors of two workloads must not overlap.
		for _, other := range o.workloads() {
			if other.name != w.name && selects(sel.MatchLabels, other.pod.Labels) {
				t.Errorf("%s %s's selector also matches %s %s's pods", w.kind, w.name, other.kind, other.name)
			}
		}
	}
}

func firstArgs(spec corev1.PodSpec, n int) []string {
	if len(spec.Containers) == 0 || len(spec.Containers[0].Args) < n {
		return nil
	}
	return spec.Containers[0].Args[:n]
}

func selects(selector, labels map[string]string) bool {
	for k, v := range selector {
		if labels[k] != v {
			return false
		}
	}
	return true
}

// TestK8sSluicePods: every sluice container's NATS user exists, with its
// inbox prefix and its own password Secret; Prometheus's Kubernetes
// discovery (prometheus.yml) finds each service's metrics port.
func TestK8sSluicePods(t *testing.T) {
	o := loadK8s(t)
	users := natsUsers(t)
	for _, w := range o.workloads() {
		for _, c := range w.pod.Spec.Containers {
			if !strings.HasPrefix(c.Image, "sluice:") {
				continue
			}
			who := w.kind + " " + w.name
			if len(c.Args) == 0 {
				t.Errorf("%s: no sluice command", who)
				continue
			}
			cmd := c.Args[0]
			if port, ok := depMetricsPorts[cmd]; ok {
				if w.pod.Labels["app.kubernetes.io/component"] != cmd {
					t.Errorf("%s: label app.kubernetes.io/component %q, want %q (prometheus.yml's discovery)", who, w.pod.Labels["app.kubernetes.io/component"], cmd)
				}
				found := false
				for _, p := range c.Ports {
					found = found || (p.Name == "metrics" && int(p.ContainerPort) == port)
				}
				if !found {
					t.Errorf("%s: no container port \"metrics\" %d", who, port)
				}
			}
			if cmd == "fakeprovider" {
				continue
			}
			if _, ok := flagValue(c.Args[1:], "config"); ok && cmd != "config" {
				t.Errorf("%s takes --config: only the config-apply Job stores the configuration (one writer of the streams)", who)
			}
			env := envMap(c)
			user := env["NATS_USER"]
			if !users[user] {
				t.Errorf("%s: NATS_USER %q is no user of accounts.conf", who, user)
				continue
			}
			if env["NATS_INBOX_PREFIX"] != "_INBOX_"+user {
				t.Errorf("%s: NATS_INBOX_PREFIX %q, want _INBOX_%s", who, env["NATS_INBOX_PREFIX"], user)
			}
			var pw *corev1.SecretKeySelector
			for _, e := range c.Env {
				if e.Name == "NATS_PASSWORD" && e.ValueFrom != nil {
					pw = e.ValueFrom.SecretKeyRef
				}
			}
			if pw == nil || pw.Name != "nats-user-"+user || pw.Key != "password" {
				t.Errorf("%s: NATS_PASSWORD must come from Secret nats-user-%s, key password", who, user)
			}
			if env["NATS_CA"] == "" {
				t.Errorf("%s: no NATS_CA (deploy/nats's servers require TLS)", who)
			}
			for _, u := range strings.Split(env["NATS_URL"], ",") {
				pu, err := url.Parse(u)
				if err != nil || pu.Scheme != "tls" {
					t.Errorf("%s: NATS_URL %q: want tls://host:port URLs", who, u)
					continue
				}
				if _, ok := o.services[pu.Hostname()]; !ok {
					t.Errorf("%s: NATS_URL names %s, which is no Service", who, pu.Hostname())
				}
			}
		}
	}
}

// k8sExternal are the objects the workloads use that are not in the
// repository: make-secrets.sh makes them.
func k8sExternal(regions []string) map[string]bool {
	m := map[string]bool{"nats-hub-tls": true, "nats-ca": true, "nats-passwords": true, "grafana-admin": true}
	for _, u := range []string{"sys", "search", "analytics", "gateway", "dispatcher", "operator"} {
		m["nats-user-"+u] = true
	}
	for _, r := range regions {
		m["nats-leaf-"+r+"-tls"] = true
		m["nats-user-exec-"+r] = true
		m[providerKeysPrefix+r] = true
	}
	return m
}

// TestK8sNATSConfig: nats-config.yaml holds deploy/nats's .conf files as
// they are, and each NATS server pod gets every file its configuration
// includes and every certificate it names, where it reads them.
func TestK8sNATSConfig(t *testing.T) {
	confs, err := filepath.Glob(filepath.Join(depNATSDir, "*.conf"))
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]string{}
	for _, f := range confs {
		if filepath.Base(f) == "passwords.conf" {
			continue // a secret, never in the repository (see .gitignore)
		}
		data, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		want[filepath.Base(f)] = string(data)
	}
	path := filepath.Join(depK8sDir, "nats-config.yaml")
	if os.Getenv("SLUICE_UPDATE_MANIFESTS") != "" {
		writeNATSConfigMap(t, path, want)
	}
	o := loadK8s(t)
	cm, ok := o.configMaps["nats-config"]
	if !ok {
		t.Fatal("no ConfigMap nats-config")
	}
	for name, data := range want {
		if cm.Data[name] != data {
			t.Errorf("nats-config.yaml: %s differs from deploy/nats/%s; run SLUICE_UPDATE_MANIFESTS=1 go test ./test -run TestK8sNATSConfig", name, name)
		}
	}
	for name := range cm.Data {
		if _, ok := want[name]; !ok {
			t.Errorf("nats-config.yaml: %s is not in deploy/nats; run SLUICE_UPDATE_MANIFESTS=1 go test ./test -run TestK8sNATSConfig", name)
		}
	}

	cfg := mustLoadConfig(t, filepath.Join(depK8sDir, "sluice.yaml"))
	external := k8sExternal(cfg.Regions())
	for _, w := range o.workloads() {
		spec := w.pod.Spec
		// Every ConfigMap and Secret used is in the manifests, or one
		// make-secrets.sh makes.
		for _, s := range podSecrets(spec) {
			if _, ok := o.secrets[s]; !ok && !external[s] {
				t.Errorf("%s %s reads Secret %s, which neither the manifests nor make-secrets.sh make", w.kind, w.name, s)
			}
		}
		for _, v := range spec.Volumes {
			var names []string
			if v.ConfigMap != nil {
				names = append(names, v.ConfigMap.Name)
			}
			if v.Projected != nil {
				for _, src := range v.Projected.Sources {
					if src.ConfigMap != nil {
						names = append(names, src.ConfigMap.Name)
					}
				}
			}
			for _, n := range names {
				if _, ok := o.configMaps[n]; !ok && !external[n] {
					t.Errorf("%s %s mounts ConfigMap %s, which neither the manifests nor make-secrets.sh make", w.kind, w.name, n)
				}
			}
		}

		for _, c := range spec.Containers {
			if !strings.HasPrefix(c.Image, "nats:") {
				continue
			}
			conf, ok := flagValue(c.Command[1:], "config")
			if !ok {
				t.Errorf("%s %s: no --config", w.kind, w.name)
				continue
			}
			// The pods of the hub StatefulSet are hub-1..hub-N.
			pods := []string{w.name}
			if w.kind == "StatefulSet" {
				pods = nil
				for i := 1; i <= depHubServers; i++ {
					pods = append(pods, fmt.Sprintf("%s-%d", w.name, i))
				}
			}
			for _, pod := range pods {
				files := podFiles(spec, c, o.configMaps["nats-config"], pod)
				conf := strings.ReplaceAll(conf, "$(POD_NAME)", pod)
				checkNATSFiles(t, w.kind+" "+w.name+" pod "+pod, conf, func(p string) ([]byte, bool) {
					data, ok := files[p]
					return []byte(data), ok
				})
			}
		}
	}
}

// podFiles are the files container c of pod sees from ConfigMap and
// Secret volumes (whose items it lists): path -> content (nats-config's,
// or "" for Secrets made elsewhere). Mounts with subPath or subPathExpr
// (expanded for pod) see only that part of their volume.
func podFiles(spec corev1.PodSpec, c corev1.Container, natsConfig *corev1.ConfigMap, pod string) map[string]string {
	files := map[string]string{}
	for _, m := range c.VolumeMounts {
		sub := m.SubPath
		if m.SubPathExpr != "" {
			sub = strings.ReplaceAll(m.SubPathExpr, "$(POD_NAME)", pod)
		}
		for _, v := range spec.Volumes {
			if v.Name != m.Name {
				continue
			}
			add := func(items []corev1.KeyToPath, cm string) {
				for _, it := range items {
					data := ""
					if cm == "nats-config" && natsConfig != nil {
						data = natsConfig.Data[it.Key]
					}
					switch rel, ok := strings.CutPrefix(it.Path, sub+"/"); {
					case sub == "":
						files[filepath.Join(m.MountPath, it.Path)] = data
					case it.Path == sub:
						files[m.MountPath] = data
					case ok:
						files[filepath.Join(m.MountPath, rel)] = data
					}
				}
			}
			if v.Projected != nil {
				for _, src := range v.Projected.Sources {
					if src.ConfigMap != nil {
						add(src.ConfigMap.Items, src.ConfigMap.Name)
					}
					if src.Secret != nil {
						add(src.Secret.Items, "")
					}
				}
			}
			if v.ConfigMap != nil {
				add(v.ConfigMap.Items, v.ConfigMap.Name)
			}
			if v.Secret != nil {
				add(v.Secret.Items, "")
			}
		}
	}
	return files
}

func writeNATSConfigMap(t *testing.T, path string, files map[string]string) {
	t.Helper()
	writeConfigMaps(t, path, "# deploy/nats's configuration files, as they are, for the NATS servers of\n"+
		"# deploy/k8s (kustomize may not read files outside deploy/k8s). Made from\n"+
		"# deploy/nats/*.conf: do not edit. After changing those, run\n"+
		"#\n"+
		"#   SLUICE_UPDATE_MANIFESTS=1 go test ./test -run TestK8sNATSConfig\n"+
		"#\n"+
		"# passwords.conf and certificates are Secrets (make-secrets.sh).\n",
		configMap("nats-config", "nats", files))
}

func configMap(name, app string, data map[string]string) *corev1.ConfigMap {
	return &corev1.ConfigMap{
		TypeMeta: metav1.TypeMeta{APIVersion: "v1", Kind: "ConfigMap"},
		ObjectMeta: metav1.ObjectMeta{
			Name:   name,
			Labels: map[string]string{"app.kubernetes.io/name": app, "app.kubernetes.io/part-of": "sluice"},
		},
		Data: data,
	}
}

// writeConfigMaps writes generated ConfigMaps to path, after header.
func writeConfigMaps(t *testing.T, path, header string, cms ...*corev1.ConfigMap) {
	t.Helper()
	out := []byte(header)
	for i, cm := range cms {
		data, err := k8syaml.Marshal(cm)
		if err != nil {
			t.Fatal(err)
		}
		if i > 0 {
			out = append(out, "---\n"...)
		}
		out = append(out, data...)
	}
	if err := os.WriteFile(path, out, 0o644); err != nil {
		t.Fatal(err)
	}
	t.Logf("wrote %s", path)
}

// monitoringConfigMaps are the ConfigMaps made from deploy/prometheus and
// deploy/grafana: name -> key -> file.
var monitoringConfigMaps = map[string]map[string]string{
	"prometheus-rules": {"alerts.yml": "../deploy/prometheus/alerts.yml"},
	"grafana-provisioning": {
		"datasources-prometheus.yml": "../deploy/grafana/provisioning/datasources/prometheus.yml",
		"dashboards-sluice.yml":      "../deploy/grafana/provisioning/dashboards/sluice.yml",
	},
	"grafana-dashboards": {"sluice.json": "../deploy/grafana/dashboards/sluice.json"},
}

// TestK8sMonitoring: monitoring-config.yaml holds deploy/prometheus's rules
// and deploy/grafana's files as they are, mounted where their configuration
// says; Prometheus's own configuration finds every sluice pod's metrics
// port under the job names the alert rules and dashboard use.
func TestK8sMonitoring(t *testing.T) {
	path := filepath.Join(depK8sDir, "monitoring", "monitoring-config.yaml")
	want := map[string]map[string]string{}
	for name, files := range monitoringConfigMaps {
		want[name] = map[string]string{}
		for key, f := range files {
			data, err := os.ReadFile(f)
			if err != nil {
				t.Fatal(err)
			}
			want[name][key] = string(data)
		}
	}
	if os.Getenv("SLUICE_UPDATE_MANIFESTS") != "" {
		var cms []*corev1.ConfigMap
		for _, name := range slices.Sorted(mapKeys(want)) {
			app := strings.SplitN(name, "-", 2)[0]
			cms = append(cms, configMap(name, app, want[name]))
		}
		writeConfigMaps(t, path, "# deploy/prometheus's alert rules and deploy/grafana's provisioning and\n"+
			"# dashboard, as they are, for monitoring/ (kustomize may not read files\n"+
			"# outside deploy/k8s). Made from those files: do not edit. After changing\n"+
			"# them, run\n"+
			"#\n"+
			"#   SLUICE_UPDATE_MANIFESTS=1 go test ./test -run TestK8sMonitoring\n", cms...)
	}
	o := loadK8s(t)
	for name, files := range want {
		cm, ok := o.configMaps[name]
		if !ok {
			t.Errorf("no ConfigMap %s", name)
			continue
		}
		for key, data := range files {
			if cm.Data[key] != data {
				t.Errorf("ConfigMap %s: %s differs from %s; run SLUICE_UPDATE_MANIFESTS=1 go test ./test -run TestK8sMonitoring", name, key, monitoringConfigMaps[name][key])
			}
		}
		if len(cm.Data) != len(files) {
			t.Errorf("ConfigMap %s holds %d files, want %d", name, len(cm.Data), len(files))
		}
	}

	prom, ok := o.deployments["prometheus"]
	if !ok {
		t.Fatal("no Deployment prometheus")
	}
	c := prom.Spec.Template.Spec.Containers[0]
	files := podFiles(prom.Spec.Template.Spec, c, nil, "")
	// podFiles lists only items; these ConfigMaps are mounted whole.
	for _, m := range c.VolumeMounts {
		for _, v := range prom.Spec.Template.Spec.Volumes {
			if v.Name == m.Name && v.ConfigMap != nil && o.configMaps[v.ConfigMap.Name] != nil {
				for key, data := range o.configMaps[v.ConfigMap.Name].Data {
					files[filepath.Join(m.MountPath, key)] = data
				}
			}
		}
	}
	confPath, _ := flagValue(c.Args, "config.file")
	conf, ok := files[confPath]
	if !ok {
		t.Fatalf("Prometheus reads --config.file %s, which is not mounted", confPath)
	}
	var cfg struct {
		RuleFiles     []string `yaml:"rule_files"`
		ScrapeConfigs []struct {
			JobName        string `yaml:"job_name"`
			RelabelConfigs []struct {
				SourceLabels []string `yaml:"source_labels"`
				Regex        string   `yaml:"regex"`
				Action       string   `yaml:"action"`
				TargetLabel  string   `yaml:"target_label"`
				Replacement  string   `yaml:"replacement"`
			} `yaml:"relabel_configs"`
		} `yaml:"scrape_configs"`
	}
	if err := yaml.Unmarshal([]byte(conf), &cfg); err != nil {
		t.Fatal(err)
	}
	for _, r := range cfg.RuleFiles {
		if _, ok := files[r]; !ok {
			t.Errorf("prometheus.yml: rule file %s is not mounted", r)
		}
	}
	// The discovery job: which pods it keeps, and the job it names them.
	var keepComponent, keepPort *regexp.Regexp
	jobOf := ""
	for _, sc := range cfg.ScrapeConfigs {
		for _, rc := range sc.RelabelConfigs {
			src := strings.Join(rc.SourceLabels, ";")
			switch {
			case rc.Action == "keep" && src == "__meta_kubernetes_pod_label_app_kubernetes_io_component":
				keepComponent = regexp.MustCompile("^(?:" + rc.Regex + ")$")
			case rc.Action == "keep" && src == "__meta_kubernetes_pod_container_port_name":
				keepPort = regexp.MustCompile("^(?:" + rc.Regex + ")$")
			case rc.TargetLabel == "job":
				jobOf = rc.Replacement
			}
		}
	}
	if keepComponent == nil || keepPort == nil || jobOf == "" {
		t.Fatal("prometheus.yml: no job keeping pods by app.kubernetes.io/component and port name, naming the job")
	}
	for _, w := range o.workloads() {
		for _, c := range w.pod.Spec.Containers {
			if len(c.Args) == 0 || !strings.HasPrefix(c.Image, "sluice:") {
				continue
			}
			if _, serves := depMetricsPorts[c.Args[0]]; !serves {
				continue
			}
			comp := w.pod.Labels["app.kubernetes.io/component"]
			scraped := keepComponent.MatchString(comp)
			for _, p := range c.Ports {
				scraped = scraped && (p.Name != "metrics" || keepPort.MatchString(p.Name))
			}
			if !scraped {
				t.Errorf("%s %s: Prometheus does not scrape it", w.kind, w.name)
			}
			if job := strings.ReplaceAll(jobOf, "$1", comp); job != "sluice-"+c.Args[0] {
				t.Errorf("%s %s is scraped as job %s; the alert rules and dashboard expect sluice-%s", w.kind, w.name, job, c.Args[0])
			}
		}
	}
	// Grafana's data source is the Prometheus Service.
	var ds struct {
		Datasources []struct {
			URL string `yaml:"url"`
		} `yaml:"datasources"`
	}
	if err := yaml.Unmarshal([]byte(want["grafana-provisioning"]["datasources-prometheus.yml"]), &ds); err != nil {
		t.Fatal(err)
	}
	for _, d := range ds.Datasources {
		u, err := url.Parse(d.URL)
		if err != nil {
			t.Fatal(err)
		}
		svc, ok := o.services[u.Hostname()]
		if !ok || !slices.ContainsFunc(svc.Spec.Ports, func(p corev1.ServicePort) bool { return strconv.Itoa(int(p.Port)) == u.Port() }) {
			t.Errorf("Grafana's data source %s is no Service port", d.URL)
		}
	}
}

// ---------------------------------------------------------------------------
// The image

// TestDockerfile: the image runs as the non-root user the pods run as, its
// build context holds what the build copies, and no secret is baked in.
func TestDockerfile(t *testing.T) {
	data, err := os.ReadFile(depDockerfile)
	if err != nil {
		t.Fatal(err)
	}
	ignore, err := os.ReadFile(depDockerfile + ".dockerignore")
	if err != nil {
		t.Fatal(err)
	}
	included := map[string]bool{}
	for _, line := range strings.Split(string(ignore), "\n") {
		if s, ok := strings.CutPrefix(strings.TrimSpace(line), "!"); ok {
			included[strings.TrimSuffix(s, "/")] = true
		}
	}
	var user string
	stages := 0
	for _, line := range strings.Split(string(data), "\n") {
		fields := strings.Fields(line)
		if len(fields) == 0 || strings.HasPrefix(fields[0], "#") {
			continue
		}
		switch strings.ToUpper(fields[0]) {
		case "FROM":
			stages++
			user = ""
		case "USER":
			user = fields[1]
		case "COPY", "ADD":
			var srcs []string
			for _, f := range fields[1 : len(fields)-1] {
				if !strings.HasPrefix(f, "--") {
					srcs = append(srcs, f)
				}
			}
			if strings.Contains(line, "--from=") {
				continue
			}
			for _, s := range srcs {
				if !included[strings.TrimSuffix(s, "/")] {
					t.Errorf("Dockerfile copies %s, which Dockerfile.dockerignore leaves out of the context", s)
				}
			}
		case "ENV", "ARG":
			if regexp.MustCompile(`(?i)key|secret|password|token`).MatchString(line) {
				t.Errorf("Dockerfile: %q: no secret goes into the image", line)
			}
		}
	}
	if stages < 2 {
		t.Errorf("Dockerfile has %d stages: build in one, ship the binary alone in another", stages)
	}
	uid, _, _ := strings.Cut(user, ":")
	if n, err := strconv.Atoi(uid); err != nil || n == 0 {
		t.Fatalf("the image's USER %q: want a numeric non-root uid (runAsNonRoot checks numbers)", user)
	}
	o := loadK8s(t)
	for _, w := range o.workloads() {
		for _, c := range w.pod.Spec.Containers {
			if sc := w.pod.Spec.SecurityContext; strings.HasPrefix(c.Image, "sluice:") && sc != nil && sc.RunAsUser != nil &&
				strconv.FormatInt(*sc.RunAsUser, 10) != uid {
				t.Errorf("%s %s runs as %d, the image's user is %s", w.kind, w.name, *sc.RunAsUser, uid)
			}
		}
	}
}

// TestK8sKustomizeBuild builds deploy/k8s with kustomize's own library
// (what `kubectl apply -k` runs) and decodes what it makes as strictly:
// what would be sent to the cluster.
func TestK8sKustomizeBuild(t *testing.T) {
	built, err := krusty.MakeKustomizer(krusty.MakeDefaultOptions()).Run(filesys.MakeFsOnDisk(), depK8sDir)
	if err != nil {
		t.Fatalf("kustomize build deploy/k8s: %v", err)
	}
	out, err := built.AsYaml()
	if err != nil {
		t.Fatal(err)
	}
	o := newK8sObjects()
	for i, doc := range yamlDocSep.Split(string(out), -1) {
		if err := o.add([]byte(doc)); err != nil {
			t.Fatalf("kustomize output, document %d: %v", i+1, err)
		}
	}
	files := loadK8s(t)
	if len(o.deployments) != len(files.deployments) || len(o.configMaps) != len(files.configMaps) || len(o.services) != len(files.services) {
		t.Errorf("kustomize made %d Deployments, %d ConfigMaps, %d Services; the files hold %d, %d, %d",
			len(o.deployments), len(o.configMaps), len(o.services), len(files.deployments), len(files.configMaps), len(files.services))
	}
	for name, d := range o.deployments {
		if d.Namespace != files.kustomize.Namespace {
			t.Errorf("Deployment %s is in namespace %q, want %q", name, d.Namespace, files.kustomize.Namespace)
		}
	}
}

// TestK8sMakeSecrets: make-secrets.sh makes the Secrets the workloads read,
// under the keys they read.
func TestK8sMakeSecrets(t *testing.T) {
	o := loadK8s(t)
	script, err := os.ReadFile(filepath.Join(depK8sDir, "make-secrets.sh"))
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{
		"create secret generic nats-hub-tls", "create configmap nats-ca", "create secret generic nats-passwords",
		"create secret generic grafana-admin",
		`"nats-leaf-$r-tls"`, `"nats-user-$user"`, `"provider-keys-$r"`,
		"--from-file=passwords.conf=", "--from-file=provider-keys.yaml=",
	} {
		if !bytes.Contains(script, []byte(want)) {
			t.Errorf("make-secrets.sh does not make %s", want)
		}
	}
	hub := o.statefulSets["hub"]
	if hub == nil {
		t.Fatal("no StatefulSet hub")
	}
	for _, v := range hub.Spec.Template.Spec.Volumes {
		if v.Secret == nil || v.Secret.SecretName != "nats-hub-tls" {
			continue
		}
		for _, it := range v.Secret.Items {
			if !bytes.Contains(script, []byte("--from-file="+it.Key+"=")) {
				t.Errorf("Secret nats-hub-tls: make-secrets.sh makes no key %s", it.Key)
			}
		}
	}
	// Each user's password Secret: the users of accounts.conf.
	users := natsUsers(t)
	m := regexp.MustCompile(`(?m)^users="([^"]*)"`).FindSubmatch(script)
	if m == nil {
		t.Fatal(`make-secrets.sh: no users="..."`)
	}
	made := map[string]bool{}
	for _, u := range strings.Fields(string(m[1])) {
		made[u] = true
	}
	for u := range users {
		if !made[u] && !strings.HasPrefix(u, "exec-") {
			t.Errorf("make-secrets.sh makes no password for NATS user %s", u)
		}
	}
}
