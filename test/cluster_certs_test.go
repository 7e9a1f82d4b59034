//go:build linux

package test

import (
	"bytes"
	"crypto/tls"
	"crypto/x509"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
)

// deploy/nats/certs/make-certs.sh makes what the configurations expect:
// per server, a directory with server.pem, server-key.pem and ca.pem,
// whose certificate names the server, is signed by the CA, and serves as
// both server and client (routes and leaf links are mutual TLS). Run
// again for one more server, it keeps the CA and what exists.
func TestClusterMakeCerts(t *testing.T) {
	if _, err := exec.LookPath("openssl"); err != nil {
		t.Skip("openssl is not installed: make-certs.sh cannot run here (the cluster tests make their certificates in Go)")
	}
	dir := t.TempDir()
	run := func(args ...string) {
		t.Helper()
		cmd := exec.Command("sh", append([]string{filepath.Join(deployNATS, "certs", "make-certs.sh")}, args...)...)
		cmd.Env = append(os.Environ(), "CERT_DIR="+dir)
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("make-certs.sh %v: %v\n%s", args, err, out)
		}
	}
	read := func(path string) []byte {
		t.Helper()
		data, err := os.ReadFile(filepath.Join(dir, path))
		if err != nil {
			t.Fatal(err)
		}
		return data
	}
	run()
	caPEM := read("ca.pem")
	hub1 := read("hub-1/server.pem")
	run("leaf-ap-south", "hub-1")
	if !bytes.Equal(read("ca.pem"), caPEM) || !bytes.Equal(read("hub-1/server.pem"), hub1) {
		t.Fatal("a second run replaced the CA or an existing certificate")
	}

	roots := x509.NewCertPool()
	if !roots.AppendCertsFromPEM(caPEM) {
		t.Fatal("ca.pem holds no certificate")
	}
	for _, name := range []string{"hub-1", "hub-2", "hub-3", "leaf-us-east", "leaf-eu-west", "leaf-ap-south"} {
		if !bytes.Equal(read(name+"/ca.pem"), caPEM) {
			t.Errorf("%s/ca.pem is not the CA", name)
		}
		pair, err := tls.LoadX509KeyPair(filepath.Join(dir, name, "server.pem"), filepath.Join(dir, name, "server-key.pem"))
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		cert, err := x509.ParseCertificate(pair.Certificate[0])
		if err != nil {
			t.Fatal(err)
		}
		for _, usage := range []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth} {
			if _, err := cert.Verify(x509.VerifyOptions{DNSName: name, Roots: roots, KeyUsages: []x509.ExtKeyUsage{usage}}); err != nil {
				t.Errorf("%s: %v", name, err)
			}
		}
		info, err := os.Stat(filepath.Join(dir, name, "server-key.pem"))
		if err != nil {
			t.Fatal(err)
		}
		if info.Mode().Perm()&0o077 != 0 {
			t.Errorf("%s/server-key.pem is readable by others: %v", name, info.Mode())
		}
	}
}
