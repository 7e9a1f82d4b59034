//go:build linux

package test

// The harness of the cluster tests (cluster_*_test.go): the NATS
// deployment of deploy/nats run for real, as separate nats-server
// processes built from the module, with sluice's services as separate
// `sluice` processes connected the way the deployment connects them.
//
// The configuration files are deploy/nats's own, copied into a temporary
// directory with only their ports, host names and file paths rewritten
// (every server runs on loopback, on free ports): a mistake in a file
// fails these tests. The process control here (process groups, the parent
// death signal) is Linux's, hence the build constraint.

import (
	"bufio"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"math/big"
	mrand "math/rand/v2"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"golang.org/x/crypto/bcrypt"

	"github.com/sluicehq/sluice/services/config"
	"github.com/sluicehq/sluice/services/fakeprovider"
)

// deployNATS is deploy/nats, from this package's directory.
const deployNATS = "../deploy/nats"

// clusterRegions are the regions whose leaf node configurations
// deploy/nats holds (leaf-<region>.conf), each with its executor user
// exec-<region> in accounts.conf.
var clusterRegions = []string{"us-east", "eu-west"}

// clusterBinSet is nats-server and sluice, built once per test binary and
// removed by TestMain.
type clusterBinSet struct {
	once       sync.Once
	dir        string
	natsServer string
	sluice     string
	err        error
}

var clusterBins clusterBinSet

func (b *clusterBinSet) remove() {
	if b.dir != "" {
		_ = os.RemoveAll(b.dir)
	}
}

// clusterBinaries builds the real nats-server (the version go.mod pins)
// and sluice, without -race: they run as separate processes, and the race
// detector would only slow them down.
func clusterBinaries(t *testing.T) (natsServer, sluice string) {
	t.Helper()
	b := &clusterBins
	b.once.Do(func() {
		if b.dir, b.err = os.MkdirTemp("", "sluice-cluster-bin-"); b.err != nil {
			return
		}
		b.natsServer = filepath.Join(b.dir, "nats-server")
		b.sluice = filepath.Join(b.dir, "sluice")
		for _, build := range [][2]string{
			{b.natsServer, "github.com/nats-io/nats-server/v2"},
			{b.sluice, "./cmd/sluice"},
		} {
			cmd := exec.Command("go", "build", "-o", build[0], build[1])
			cmd.Dir = ".." // the module's root
			if out, err := cmd.CombinedOutput(); err != nil {
				b.err = fmt.Errorf("go build %s: %v\n%s", build[1], err, out)
				return
			}
		}
	})
	if b.err != nil {
		t.Fatal(b.err)
	}
	return b.natsServer, b.sluice
}

// ---- Certificates and passwords ------------------------------------------

// writeClusterCerts writes what deploy/nats/certs/make-certs.sh writes (a
// CA in ca.pem; per server, a directory <name>/ holding server.pem,
// server-key.pem and ca.pem), with Go's crypto instead of openssl. Each
// certificate also names localhost and IP 127.0.0.1, since every server of
// the test runs there. Hub servers' certificates alone also carry the DNS
// name "127.0.0.1", the host of the test's route URLs: hub.conf accepts a
// route only from a certificate naming a route host, and so it still
// tells hub servers from leaf nodes here.
func writeClusterCerts(t *testing.T, dir string, names ...string) {
	t.Helper()
	now := time.Now()
	caKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	caTmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{Organization: []string{"sluice"}, CommonName: "sluice NATS test CA"},
		NotBefore:             now.Add(-time.Hour),
		NotAfter:              now.Add(24 * time.Hour),
		IsCA:                  true,
		BasicConstraintsValid: true,
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
	}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	ca, err := x509.ParseCertificate(caDER)
	if err != nil {
		t.Fatal(err)
	}
	writePEM(t, filepath.Join(dir, "ca.pem"), "CERTIFICATE", caDER)
	for i, name := range names {
		key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		if err != nil {
			t.Fatal(err)
		}
		dnsNames := []string{name, "localhost"}
		if strings.HasPrefix(name, "hub-") {
			dnsNames = append(dnsNames, "127.0.0.1")
		}
		tmpl := &x509.Certificate{
			SerialNumber: big.NewInt(int64(i + 2)),
			Subject:      pkix.Name{Organization: []string{"sluice"}, CommonName: name},
			NotBefore:    now.Add(-time.Hour),
			NotAfter:     now.Add(24 * time.Hour),
			DNSNames:     dnsNames,
			IPAddresses:  []net.IP{net.IPv4(127, 0, 0, 1)},
			KeyUsage:     x509.KeyUsageDigitalSignature | x509.KeyUsageKeyEncipherment,
			// Servers and clients both: routes and leaf connections are
			// mutual TLS.
			ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
		}
		der, err := x509.CreateCertificate(rand.Reader, tmpl, ca, &key.PublicKey, caKey)
		if err != nil {
			t.Fatal(err)
		}
		keyDER, err := x509.MarshalECPrivateKey(key)
		if err != nil {
			t.Fatal(err)
		}
		sub := filepath.Join(dir, name)
		if err := os.Mkdir(sub, 0o700); err != nil {
			t.Fatal(err)
		}
		writePEM(t, filepath.Join(sub, "server.pem"), "CERTIFICATE", der)
		writePEM(t, filepath.Join(sub, "server-key.pem"), "EC PRIVATE KEY", keyDER)
		writePEM(t, filepath.Join(sub, "ca.pem"), "CERTIFICATE", caDER)
	}
}

func writePEM(t *testing.T, path, kind string, der []byte) {
	t.Helper()
	if err := os.WriteFile(path, pem.EncodeToMemory(&pem.Block{Type: kind, Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
}

// passwordLine is one variable of passwords.conf.example.
var passwordLine = regexp.MustCompile(`(?m)^([A-Z0-9_]+)_PASSWORD:\s*"[^"\n]*"`)

// writeClusterPasswords makes passwords.conf from passwords.conf.example
// the way its comments say: every placeholder replaced by the bcrypt hash
// of a fresh password. It returns the plain password of each user (the
// variable SEARCH_PASSWORD is user search, EXEC_US_EAST_PASSWORD user
// exec-us-east). The hashes use bcrypt's lowest cost: every connection
// (and reconnection) checks one, and the tests make many.
func writeClusterPasswords(t *testing.T, path string) map[string]string {
	t.Helper()
	example := readDeployFile(t, "passwords.conf.example")
	passwords := map[string]string{}
	var failed error
	conf := passwordLine.ReplaceAllStringFunc(example, func(line string) string {
		name := passwordLine.FindStringSubmatch(line)[1]
		user := strings.ReplaceAll(strings.ToLower(name), "_", "-")
		buf := make([]byte, 12)
		_, _ = rand.Read(buf)
		plain := hex.EncodeToString(buf)
		hash, err := bcrypt.GenerateFromPassword([]byte(plain), bcrypt.MinCost)
		if err != nil {
			failed = err
		}
		passwords[user] = plain
		return fmt.Sprintf("%s_PASSWORD: %q", name, hash)
	})
	if failed != nil {
		t.Fatal(failed)
	}
	if len(passwords) == 0 {
		t.Fatalf("%s/passwords.conf.example defines no <USER>_PASSWORD", deployNATS)
	}
	if err := os.WriteFile(path, []byte(conf), 0o600); err != nil {
		t.Fatal(err)
	}
	return passwords
}

// ---- Configuration files -------------------------------------------------

func readDeployFile(t *testing.T, name string) string {
	t.Helper()
	data, err := os.ReadFile(filepath.Join(deployNATS, name))
	if err != nil {
		t.Fatal(err)
	}
	return string(data)
}

// copyDeployFile copies deploy/nats/<name> into dir, replacing each
// old string of pairs (old, new, old, new...) by its new one. Each old
// string must be in the file: one that is not means the file changed in a
// way the test no longer follows, which must be looked at, not ignored.
func copyDeployFile(t *testing.T, dir, name string, pairs ...string) {
	t.Helper()
	text := readDeployFile(t, name)
	for i := 0; i+1 < len(pairs); i += 2 {
		if !strings.Contains(text, pairs[i]) {
			t.Fatalf("%s/%s has no %q, which the test rewrites to run the file on loopback", deployNATS, name, pairs[i])
		}
		text = strings.ReplaceAll(text, pairs[i], pairs[i+1])
	}
	if err := os.WriteFile(filepath.Join(dir, name), []byte(text), 0o600); err != nil {
		t.Fatal(err)
	}
}

// freePorts returns n distinct free loopback ports. The servers bind them
// after they are closed here, so they are drawn below Linux's ephemeral
// range (32768 and up), where other tests' listeners on port 0 and
// outgoing connections take theirs: nothing else is likely to take one
// meanwhile.
func freePorts(t *testing.T, n int) []int {
	t.Helper()
	var ports []int
	var lns []net.Listener
	defer func() {
		for _, ln := range lns {
			_ = ln.Close()
		}
	}()
	for tries := 0; len(ports) < n; tries++ {
		if tries > 1000 {
			t.Fatalf("found only %d free ports of %d", len(ports), n)
		}
		port := 20000 + mrand.IntN(12000)
		ln, err := net.Listen("tcp", fmt.Sprintf("127.0.0.1:%d", port))
		if err != nil {
			continue
		}
		lns = append(lns, ln)
		ports = append(ports, port)
	}
	return ports
}

// ---- Processes -----------------------------------------------------------

// clusterProc is one process of the cluster: a NATS server or a sluice
// service. It runs in a process group of its own, so that stopping it
// stops whatever it started, and dies with the test binary (the parent
// death signal), so that a test killed halfway leaves no orphans.
type clusterProc struct {
	name string
	bin  string
	args []string
	env  []string
	log  string // file holding the process's stdout and stderr, over restarts

	mu   sync.Mutex
	cmd  *exec.Cmd
	done chan struct{}
}

func (p *clusterProc) start(t *testing.T) {
	t.Helper()
	f, err := os.OpenFile(p.log, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	fmt.Fprintf(f, "==== %s: %s %s\n", time.Now().Format(time.RFC3339Nano), filepath.Base(p.bin), strings.Join(p.args, " "))
	cmd := exec.Command(p.bin, p.args...)
	cmd.Env = append(os.Environ(), p.env...)
	cmd.Stdout, cmd.Stderr = f, f
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		t.Fatalf("start %s: %v", p.name, err)
	}
	done := make(chan struct{})
	go func() {
		_ = cmd.Wait()
		close(done)
	}()
	p.mu.Lock()
	p.cmd, p.done = cmd, done
	p.mu.Unlock()
}

func (p *clusterProc) running() bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.done == nil {
		return false
	}
	select {
	case <-p.done:
		return false
	default:
		return true
	}
}

// signal sends sig to the process's group and waits up to wait for it to
// end; it reports whether it did.
func (p *clusterProc) signal(sig syscall.Signal, wait time.Duration) bool {
	p.mu.Lock()
	cmd, done := p.cmd, p.done
	p.mu.Unlock()
	if cmd == nil {
		return true
	}
	_ = syscall.Kill(-cmd.Process.Pid, sig)
	select {
	case <-done:
		return true
	case <-time.After(wait):
		return false
	}
}

// kill ends the process at once, as a crash or a pulled plug would.
func (p *clusterProc) kill() { p.signal(syscall.SIGKILL, time.Minute) }

// stop ends the process the way an operator does (SIGTERM), and kills it
// if it does not end in time.
func (p *clusterProc) stop() {
	if !p.signal(syscall.SIGTERM, 10*time.Second) {
		p.kill()
	}
}

// grep is the first lines (at most n) of the process's log that contain s.
func (p *clusterProc) grep(s string, n int) string {
	data, err := os.ReadFile(p.log)
	if err != nil {
		return err.Error()
	}
	var out []string
	for _, line := range strings.Split(string(data), "\n") {
		if strings.Contains(line, s) && len(out) < n {
			out = append(out, line)
		}
	}
	return strings.Join(out, "\n")
}

// tail is the end of the process's log, for failure reports.
func (p *clusterProc) tail(lines int) string {
	data, err := os.ReadFile(p.log)
	if err != nil {
		return err.Error()
	}
	all := strings.Split(strings.TrimRight(string(data), "\n"), "\n")
	return strings.Join(all[max(0, len(all)-lines):], "\n")
}

// ---- The cluster ---------------------------------------------------------

// natsNode is one nats-server of the deployment.
type natsNode struct {
	name       string
	client     int // client port
	http       int // monitoring port
	route      int // hub servers: cluster port
	leaf       int // hub servers: leaf node port
	proc       *clusterProc
	clientURL  string
	monitorURL string
}

// natsCluster is deploy/nats run on loopback: three hub servers and one
// leaf node per region, plus the sluice services started on it.
type natsCluster struct {
	t          *testing.T
	dir        string
	certs      string
	sluiceBin  string
	passwords  map[string]string
	hubs       []*natsNode
	leafs      map[string]*natsNode
	procs      []*clusterProc
	fake       *fakeprovider.Server
	fakeURL    string
	secrets    map[string]string // region -> the provider key its executors hold
	configPath string
}

// startNATSCluster starts the hub cluster and the leaf nodes of
// deploy/nats and waits until the hub's JetStream is up and every leaf
// node is connected to the hub. Everything stops when the test ends.
func startNATSCluster(t *testing.T) *natsCluster {
	t.Helper()
	natsServer, sluice := clusterBinaries(t)
	c := &natsCluster{t: t, dir: t.TempDir(), sluiceBin: sluice, leafs: map[string]*natsNode{}, secrets: map[string]string{}}
	// Registered after t.TempDir, so it runs before the directory goes.
	t.Cleanup(c.stopAll)

	c.certs = filepath.Join(c.dir, "certs")
	if err := os.Mkdir(c.certs, 0o700); err != nil {
		t.Fatal(err)
	}
	names := []string{"hub-1", "hub-2", "hub-3"}
	for _, r := range clusterRegions {
		names = append(names, "leaf-"+r)
	}
	writeClusterCerts(t, c.certs, names...)
	passwordsConf := filepath.Join(c.dir, "passwords.conf")
	c.passwords = writeClusterPasswords(t, passwordsConf)
	passwords, err := os.ReadFile(passwordsConf)
	if err != nil {
		t.Fatal(err)
	}

	ports := freePorts(t, 4*3+2*len(clusterRegions))
	next := func() int { p := ports[0]; ports = ports[1:]; return p }
	for _, name := range names[:3] {
		c.hubs = append(c.hubs, &natsNode{name: name, client: next(), http: next(), route: next(), leaf: next()})
	}
	for _, r := range clusterRegions {
		c.leafs[r] = &natsNode{name: "leaf-" + r, client: next(), http: next()}
	}
	// Where the files say /etc/nats/certs, each server finds its own
	// directory of what make-certs.sh writes.
	certPath := func(name string) (string, string) {
		return `"/etc/nats/certs/`, `"` + filepath.Join(c.certs, name) + `/`
	}
	// Each server gets a directory of its own: the files are shared by
	// every hub server (or leaf node) in a real deployment, but here all
	// run on one host, on different ports.
	for _, h := range c.hubs {
		dir := c.nodeDir(h, passwords)
		from, to := certPath(h.name)
		copyDeployFile(t, dir, h.name+".conf")
		pairs := []string{
			"listen: 0.0.0.0:4222", fmt.Sprintf("listen: 127.0.0.1:%d", h.client),
			"http: 0.0.0.0:8222", fmt.Sprintf("http: 127.0.0.1:%d", h.http),
			"listen: 0.0.0.0:6222", fmt.Sprintf("listen: 127.0.0.1:%d", h.route),
			"listen: 0.0.0.0:7422", fmt.Sprintf("listen: 127.0.0.1:%d", h.leaf),
			`store_dir: "/data/jetstream"`, fmt.Sprintf("store_dir: %q", filepath.Join(dir, "jetstream")),
			from, to,
		}
		for _, o := range c.hubs {
			pairs = append(pairs, fmt.Sprintf(`"nats-route://%s:6222"`, o.name), fmt.Sprintf(`"nats-route://127.0.0.1:%d"`, o.route))
		}
		copyDeployFile(t, dir, "hub.conf", pairs...)
		copyDeployFile(t, dir, "accounts.conf")
		h.proc = c.newProc(h.name, natsServer, nil, "-c", filepath.Join(dir, h.name+".conf"))
	}
	for _, r := range clusterRegions {
		l := c.leafs[r]
		dir := c.nodeDir(l, passwords)
		from, to := certPath(l.name)
		copyDeployFile(t, dir, l.name+".conf")
		pairs := []string{
			"listen: 0.0.0.0:4222", fmt.Sprintf("listen: 127.0.0.1:%d", l.client),
			"http: 0.0.0.0:8222", fmt.Sprintf("http: 127.0.0.1:%d", l.http),
			from, to,
		}
		for _, h := range c.hubs {
			pairs = append(pairs, fmt.Sprintf(`"tls://%s:7422"`, h.name), fmt.Sprintf(`"tls://localhost:%d"`, h.leaf))
		}
		copyDeployFile(t, dir, "leaf.conf", pairs...)
		copyDeployFile(t, dir, "accounts.conf")
		l.proc = c.newProc(l.name, natsServer, nil, "-c", filepath.Join(dir, l.name+".conf"))
	}
	for _, h := range c.hubs {
		h.proc.start(t)
	}
	for _, r := range clusterRegions {
		c.leafs[r].proc.start(t)
	}
	for _, h := range c.hubs {
		c.waitHealthy(h, 60*time.Second)
	}
	for _, r := range clusterRegions {
		c.waitLeafUp(c.leafs[r], 30*time.Second)
	}
	return c
}

func (c *natsCluster) nodeDir(n *natsNode, passwords []byte) string {
	c.t.Helper()
	dir := filepath.Join(c.dir, n.name)
	if err := os.Mkdir(dir, 0o700); err != nil {
		c.t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "passwords.conf"), passwords, 0o600); err != nil {
		c.t.Fatal(err)
	}
	n.clientURL = fmt.Sprintf("tls://127.0.0.1:%d", n.client)
	n.monitorURL = fmt.Sprintf("http://127.0.0.1:%d", n.http)
	return dir
}

func (c *natsCluster) newProc(name, bin string, env []string, args ...string) *clusterProc {
	p := &clusterProc{name: name, bin: bin, args: args, env: env, log: filepath.Join(c.dir, name+".log")}
	c.procs = append(c.procs, p)
	return p
}

// stopAll stops every process, the last started first (services before
// the servers they use), and shows their logs if the test failed.
func (c *natsCluster) stopAll() {
	for i := len(c.procs) - 1; i >= 0; i-- {
		c.procs[i].stop()
	}
	if c.t.Failed() {
		for _, p := range c.procs {
			c.t.Logf("---- %s (%s), last lines:\n%s", p.name, p.log, p.tail(40))
		}
		// What the servers refused says most about a failure here.
		for _, p := range c.procs {
			if v := p.grep("Violation", 30); v != "" {
				c.t.Logf("---- %s refused:\n%s", p.name, v)
			}
		}
	}
}

// waitHealthy waits until a server's /healthz says ok; for a hub server
// that includes its JetStream being current with the cluster.
func (c *natsCluster) waitHealthy(n *natsNode, timeout time.Duration) {
	c.t.Helper()
	var last string
	deadline := time.Now().Add(timeout)
	for !c.healthy(n, &last) {
		if !n.proc.running() {
			c.t.Fatalf("%s exited:\n%s", n.name, n.proc.tail(20))
		}
		if time.Now().After(deadline) {
			c.t.Fatalf("%s not healthy after %s: %s", n.name, timeout, last)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func (c *natsCluster) healthy(n *natsNode, last *string) bool {
	{
		resp, err := http.Get(n.monitorURL + "/healthz")
		if err != nil {
			*last = err.Error()
			return false
		}
		defer resp.Body.Close()
		var body struct {
			Status string `json:"status"`
			Error  string `json:"error"`
		}
		_ = json.NewDecoder(resp.Body).Decode(&body)
		*last = body.Status + " " + body.Error
		return resp.StatusCode == http.StatusOK && body.Status == "ok"
	}
}

// waitLeafUp waits until the leaf node has its connection to the hub.
func (c *natsCluster) waitLeafUp(n *natsNode, timeout time.Duration) {
	c.t.Helper()
	c.waitHealthy(n, timeout)
	waitUntil(c.t, n.name+" connected to the hub", timeout, func() bool {
		resp, err := http.Get(n.monitorURL + "/leafz")
		if err != nil {
			return false
		}
		defer resp.Body.Close()
		var body struct {
			Leafnodes int `json:"leafnodes"`
		}
		return json.NewDecoder(resp.Body).Decode(&body) == nil && body.Leafnodes > 0
	})
}

// hubURLs is the client URLs of the hub servers, comma-separated, as
// services and clients of the hub are given them.
func (c *natsCluster) hubURLs() string {
	var urls []string
	for _, h := range c.hubs {
		urls = append(urls, h.clientURL)
	}
	return strings.Join(urls, ",")
}

// ---- Provider, configuration and services -------------------------------

// startProvider starts the fake provider (in this process, over HTTP) with
// one key per region: the secret that region's executors hold, so that a
// call sent with another region's key (or none) is refused with 401.
func (c *natsCluster) startProvider(latency time.Duration) {
	c.t.Helper()
	keys := map[string]fakeprovider.KeyConfig{}
	for _, r := range clusterRegions {
		buf := make([]byte, 16)
		_, _ = rand.Read(buf)
		c.secrets[r] = "sk-" + r + "-" + hex.EncodeToString(buf)
		keys[c.secrets[r]] = fakeprovider.KeyConfig{}
	}
	fake, err := fakeprovider.New(fakeprovider.Config{Keys: keys, Latency: latency})
	if err != nil {
		c.t.Fatal(err)
	}
	srv := httptest.NewServer(fake)
	c.t.Cleanup(srv.Close)
	c.fake, c.fakeURL = fake, srv.URL
}

// regionKeyName is the name of the provider key of region's deployment:
// a name in the shared configuration, a secret only in that region's
// executors' --secrets file.
func regionKeyName(region string) string {
	return "KEY_" + strings.ToUpper(strings.ReplaceAll(region, "-", "_"))
}

// writeSluiceConfig writes the sluice configuration of the deployment:
// pool m-<region> served only by region's deployment, so that a call
// names the region that must serve it; teams search and analytics with
// the tiers accounts.conf lets them publish on; and R3 streams, as hub.conf
// says.
func (c *natsCluster) writeSluiceConfig() {
	c.t.Helper()
	var b strings.Builder
	b.WriteString("pools:\n")
	for _, r := range clusterRegions {
		fmt.Fprintf(&b, "  m-%s:\n    deployments:\n      - {id: %s-1, provider: openai, base_url: %q, region: %s, key: %s, rpm: 600000, tpm: 100000000}\n",
			r, r, c.fakeURL+"/v1", r, regionKeyName(r))
	}
	fmt.Fprintf(&b, `teams:
  search: {tiers: [critical, high, standard], tokens: [%q]}
  analytics: {tiers: [standard, batch]}
streams:
  replicas: 3
`, config.HashToken(clusterGatewayToken))
	c.configPath = filepath.Join(c.dir, "sluice.yaml")
	if err := os.WriteFile(c.configPath, []byte(b.String()), 0o600); err != nil {
		c.t.Fatal(err)
	}
}

// startRogueRoute starts a nats-server that tries to join the hub
// cluster with server cert's certificate and key: what someone holding a
// leaf node's files could try. Its configuration is the test's own.
func (c *natsCluster) startRogueRoute(cert string) *clusterProc {
	c.t.Helper()
	dir := filepath.Join(c.dir, "rogue")
	if err := os.MkdirAll(dir, 0o700); err != nil {
		c.t.Fatal(err)
	}
	ports := freePorts(c.t, 2)
	var routes []string
	for _, h := range c.hubs {
		routes = append(routes, fmt.Sprintf("%q", fmt.Sprintf("nats-route://127.0.0.1:%d", h.route)))
	}
	certs := filepath.Join(c.certs, cert)
	conf := fmt.Sprintf(`server_name: rogue
listen: 127.0.0.1:%d
cluster {
  name: sluice-hub
  listen: 127.0.0.1:%d
  routes: [%s]
  tls {
    cert_file: %q
    key_file: %q
    ca_file: %q
    timeout: 2
  }
}
`, ports[0], ports[1], strings.Join(routes, ", "),
		filepath.Join(certs, "server.pem"), filepath.Join(certs, "server-key.pem"), filepath.Join(certs, "ca.pem"))
	path := filepath.Join(dir, "rogue.conf")
	if err := os.WriteFile(path, []byte(conf), 0o600); err != nil {
		c.t.Fatal(err)
	}
	natsServer, _ := clusterBinaries(c.t)
	p := c.newProc("rogue", natsServer, nil, "-c", path)
	p.start(c.t)
	return p
}

// routeNames is the names of the servers a server has routes with.
func routeNames(t *testing.T, n *natsNode) map[string]bool {
	t.Helper()
	resp, err := http.Get(n.monitorURL + "/routez")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var body struct {
		Routes []struct {
			RemoteName string `json:"remote_name"`
		} `json:"routes"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&body); err != nil {
		t.Fatal(err)
	}
	names := map[string]bool{}
	for _, r := range body.Routes {
		names[r.RemoteName] = true
	}
	return names
}

// clusterGatewayToken is team search's token at the gateway.
const clusterGatewayToken = "sk-sluice-cluster-test-search"

// startGateway starts `sluice gateway` on servers (with --js-domain hub
// when they are a leaf node's), reading the configuration from KV, and
// returns its base URL once it is ready.
func (c *natsCluster) startGateway(servers, domain string) string {
	c.t.Helper()
	port := freePorts(c.t, 1)[0]
	args, env := c.natsArgs("gateway", servers)
	if domain != "" {
		args = append(args, "--js-domain", domain)
	}
	args = append(args, "--addr", fmt.Sprintf("127.0.0.1:%d", port), "--metrics", "")
	p := c.newProc("gateway", c.sluiceBin, env, append([]string{"gateway"}, args...)...)
	p.start(c.t)
	url := fmt.Sprintf("http://127.0.0.1:%d", port)
	deadline := time.Now().Add(30 * time.Second)
	for {
		resp, err := http.Get(url + "/readyz")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return url
			}
		}
		if !p.running() {
			c.t.Fatalf("gateway ended:\n%s", p.tail(20))
		}
		if time.Now().After(deadline) {
			c.t.Fatalf("gateway not ready after 30s:\n%s", p.tail(20))
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// natsArgs are the connection flags of a sluice command for user on
// servers. The password goes in the environment (NATS_PASSWORD), not on
// the command line where ps would show it.
func (c *natsCluster) natsArgs(user, servers string) (args, env []string) {
	return []string{
			"--server", servers, "--user", user, "--tls-ca", filepath.Join(c.certs, "ca.pem"),
			"--inbox-prefix", "_INBOX_" + user,
		},
		[]string{"NATS_PASSWORD=" + c.passwords[user]}
}

// startDispatcher starts `sluice dispatcher` on the hub, as the
// deployment runs it: user dispatcher, every hub server's URL, the
// bootstrap configuration.
func (c *natsCluster) startDispatcher(id string) *clusterProc {
	c.t.Helper()
	args, env := c.natsArgs("dispatcher", c.hubURLs())
	args = append(args, "--config", c.configPath, "--id", id, "--metrics", "")
	p := c.newProc("dispatcher-"+id, c.sluiceBin, env, append([]string{"dispatcher"}, args...)...)
	p.start(c.t)
	return p
}

// startExecutor starts `sluice executor` of region, connected to its
// region's leaf node with --js-domain hub, holding the region's provider
// key in a --secrets file. It reads the configuration from KV.
func (c *natsCluster) startExecutor(region string, n int) *clusterProc {
	c.t.Helper()
	secrets := filepath.Join(c.dir, "secrets-"+region+".yaml")
	if err := os.WriteFile(secrets, []byte(fmt.Sprintf("%s: %s\n", regionKeyName(region), c.secrets[region])), 0o600); err != nil {
		c.t.Fatal(err)
	}
	args, env := c.natsArgs("exec-"+region, c.leafs[region].clientURL)
	args = append(args, "--js-domain", "hub", "--region", region, "--secrets", secrets, "--metrics", "", "--concurrency", "16")
	p := c.newProc(fmt.Sprintf("executor-%s-%d", region, n), c.sluiceBin, env, append([]string{"executor"}, args...)...)
	p.start(c.t)
	return p
}

// startSluice starts the fake provider, the configuration, dispatchers
// on the hub and executors on each region's leaf node.
func (c *natsCluster) startSluice(dispatchers, executorsPerRegion int, latency time.Duration) {
	c.t.Helper()
	c.startProvider(latency)
	c.writeSluiceConfig()
	// Every service starts at once, as a supervisor starts them: all of
	// them create sluice's R3 streams and buckets at the same moment, which
	// nats-server answers for only one of them each time.
	var started []*clusterProc
	for i := 1; i <= dispatchers; i++ {
		started = append(started, c.startDispatcher(fmt.Sprintf("d%d", i)))
	}
	for _, r := range clusterRegions {
		for i := 1; i <= executorsPerRegion; i++ {
			started = append(started, c.startExecutor(r, i))
		}
	}
	for _, p := range started {
		if strings.HasPrefix(p.name, "executor") {
			p.waitLog(c.t, "executor started", 30*time.Second)
		} else {
			p.waitLog(c.t, "dispatcher started", 30*time.Second)
		}
	}
}

// waitLog waits until the process's log has a line containing s, and
// fails at once if the process ends first.
func (p *clusterProc) waitLog(t *testing.T, s string, timeout time.Duration) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for p.grep(s, 1) == "" {
		if !p.running() {
			t.Fatalf("%s ended before saying %q:\n%s", p.name, s, p.tail(20))
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s did not say %q in %s:\n%s", p.name, s, timeout, p.tail(20))
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// ---- Clients --------------------------------------------------------------

// clusterConn is a NATS connection as one user, that records the
// asynchronous errors the server sends it (permission violations).
type clusterConn struct {
	*nats.Conn
	user string

	mu   sync.Mutex
	errs []string
}

// connect connects as user to servers (comma-separated URLs), with TLS
// verified against the test CA and the user's own inbox prefix.
func (c *natsCluster) connect(user, servers string) *clusterConn {
	c.t.Helper()
	cc := &clusterConn{user: user}
	nc, err := nats.Connect(servers,
		nats.Name("test "+user),
		nats.UserInfo(user, c.passwords[user]),
		nats.RootCAs(filepath.Join(c.certs, "ca.pem")),
		nats.CustomInboxPrefix("_INBOX_"+user),
		nats.MaxReconnects(-1),
		nats.ReconnectWait(250*time.Millisecond),
		nats.ErrorHandler(func(_ *nats.Conn, _ *nats.Subscription, err error) {
			cc.mu.Lock()
			cc.errs = append(cc.errs, err.Error())
			cc.mu.Unlock()
		}),
	)
	if err != nil {
		c.t.Fatalf("connect as %s to %s: %v", user, servers, err)
	}
	c.t.Cleanup(nc.Close)
	cc.Conn = nc
	return cc
}

// violation reports whether the server refused what (`Publish to "x"` or
// `Subscription to "x"`) to this connection.
func (cc *clusterConn) violation(what string) bool {
	cc.mu.Lock()
	defer cc.mu.Unlock()
	for _, e := range cc.errs {
		if strings.Contains(strings.ToLower(e), strings.ToLower("permissions violation for "+what)) {
			return true
		}
	}
	return false
}

// expectRefused publishes on (or subscribes to) subject and expects the
// server to refuse it with a permissions violation.
func (cc *clusterConn) expectRefused(t *testing.T, op, subject string) {
	t.Helper()
	what := cc.try(t, op, subject)
	// A server with JetStream domain hub maps $JS.hub.API.> to $JS.API.>
	// (and $JS.hub.API.$KV.> to $KV.>) before it checks permissions, and
	// names the mapped subject when it refuses.
	mapped := what
	if rest, ok := strings.CutPrefix(subject, "$JS.hub.API.$KV."); ok {
		mapped = fmt.Sprintf("Publish to %q", "$KV."+rest)
	} else if rest, ok := strings.CutPrefix(subject, "$JS.hub.API."); ok {
		mapped = fmt.Sprintf("Publish to %q", "$JS.API."+rest)
	}
	deadline := time.Now().Add(5 * time.Second)
	for !cc.violation(what) && !cc.violation(mapped) {
		if time.Now().After(deadline) {
			t.Errorf("%s: %s was not refused by the server", cc.user, what)
			return
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// expectAllowed publishes on (or subscribes to) subject and expects no
// permissions violation for it.
func (cc *clusterConn) expectAllowed(t *testing.T, op, subject string) {
	t.Helper()
	what := cc.try(t, op, subject)
	// The server answers the flush after its refusal, if any; the error
	// handler runs on a goroutine of its own, so give it a moment.
	time.Sleep(200 * time.Millisecond)
	if cc.violation(what) {
		t.Errorf("%s: %s was refused, but the deployment needs it", cc.user, what)
	}
}

func (cc *clusterConn) try(t *testing.T, op, subject string) string {
	t.Helper()
	var what string
	switch op {
	case "pub":
		what = fmt.Sprintf("Publish to %q", subject)
		if err := cc.Publish(subject, []byte(`{}`)); err != nil {
			t.Fatalf("%s: publish %s: %v", cc.user, subject, err)
		}
	case "sub":
		what = fmt.Sprintf("Subscription to %q", subject)
		sub, err := cc.SubscribeSync(subject)
		if err != nil {
			t.Fatalf("%s: subscribe %s: %v", cc.user, subject, err)
		}
		defer func() { _ = sub.Unsubscribe() }()
	default:
		t.Fatalf("unknown op %q", op)
	}
	if err := cc.FlushTimeout(5 * time.Second); err != nil {
		t.Fatalf("%s: flush: %v", cc.user, err)
	}
	return what
}

// jetStream is the hub's JetStream through cc: with domain "hub" for a
// connection to a leaf node.
func (cc *clusterConn) jetStream(t *testing.T, domain string) jetstream.JetStream {
	t.Helper()
	var js jetstream.JetStream
	var err error
	if domain == "" {
		js, err = jetstream.New(cc.Conn)
	} else {
		js, err = jetstream.NewWithDomain(cc.Conn, domain)
	}
	if err != nil {
		t.Fatal(err)
	}
	return js
}

// publishCallUntilAccepted publishes a call and, if JetStream's
// acknowledgement does not come (a server going away mid-publish), publishes
// it again under the same id, which JetStream de-duplicates: the way a
// client makes sure its call was accepted exactly once.
// repeats, if not nil, counts the repeated publishes.
func publishCallUntilAccepted(ctx context.Context, js jetstream.JetStream, team, tier, id, body string, repeats *atomic.Int64) error {
	for {
		pubCtx, cancel := context.WithTimeout(ctx, 2*time.Second)
		err := publishCall(pubCtx, js, team, tier, id, body)
		cancel()
		if err == nil || ctx.Err() != nil {
			return err
		}
		if repeats != nil {
			repeats.Add(1)
		}
		select {
		case <-ctx.Done():
			return err
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// serviceViolations is what the NATS servers refused to sluice's own
// services (connections named "sluice ..."): a permission the deployment
// forgot, which would show as calls that hang.
func (c *natsCluster) serviceViolations() []string {
	var out []string
	for _, n := range c.servers() {
		for _, line := range strings.Split(n.proc.grep("Violation", 1000), "\n") {
			if strings.Contains(line, ":go:sluice ") {
				out = append(out, n.name+": "+line)
			}
		}
	}
	return out
}

// servers is every NATS server of the cluster.
func (c *natsCluster) servers() []*natsNode {
	out := append([]*natsNode(nil), c.hubs...)
	for _, r := range clusterRegions {
		out = append(out, c.leafs[r])
	}
	return out
}

// logsContain reports which process logs contain s.
func (c *natsCluster) logsContain(s string) []string {
	var found []string
	for _, p := range c.procs {
		f, err := os.Open(p.log)
		if err != nil {
			continue
		}
		sc := bufio.NewScanner(f)
		sc.Buffer(make([]byte, 1<<20), 1<<20)
		for sc.Scan() {
			if strings.Contains(sc.Text(), s) {
				found = append(found, p.name)
				break
			}
		}
		_ = f.Close()
	}
	return found
}

// streamLeader is the server leading a stream's replicas, asked by
// operator connection cc.
func streamLeader(ctx context.Context, t *testing.T, js jetstream.JetStream, stream string) string {
	t.Helper()
	s, err := js.Stream(ctx, stream)
	if err != nil {
		t.Fatalf("stream %s: %v", stream, err)
	}
	info := s.CachedInfo()
	if info.Cluster == nil || info.Cluster.Leader == "" {
		t.Fatalf("stream %s has no leader: %+v", stream, info.Cluster)
	}
	return info.Cluster.Leader
}
