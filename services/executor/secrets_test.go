package executor

import (
	"bytes"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// A secrets file rewritten while the executor runs is read again: a new
// key resolves, a rotated one has its new value; a broken rewrite keeps
// the last good contents and logs no secret.
func TestSecretsFileFollowsChanges(t *testing.T) {
	path := filepath.Join(t.TempDir(), "secrets.yaml")
	write := func(s string) {
		t.Helper()
		if err := os.WriteFile(path, []byte(s), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	write("KEY_A: sk-a-1\n")
	var logs bytes.Buffer
	f, err := OpenSecretsFile(path, slog.New(slog.NewTextHandler(&logs, nil)))
	if err != nil {
		t.Fatal(err)
	}
	f.Interval = 0
	if s, ok := f.Lookup("KEY_A"); !ok || s != "sk-a-1" {
		t.Fatalf("KEY_A = %q %v", s, ok)
	}
	if _, ok := f.Lookup("KEY_B"); ok {
		t.Fatal("KEY_B resolved before it was written")
	}

	write("KEY_A: sk-a-rotated\nKEY_B: sk-b-1\n")
	if s, ok := f.Lookup("KEY_B"); !ok || s != "sk-b-1" {
		t.Fatalf("KEY_B after the rewrite = %q %v", s, ok)
	}
	if s, _ := f.Lookup("KEY_A"); s != "sk-a-rotated" {
		t.Fatalf("KEY_A after rotation = %q", s)
	}

	write("KEY_A: [sk-broken-secret\n")
	if s, _ := f.Lookup("KEY_A"); s != "sk-a-rotated" {
		t.Fatalf("KEY_A after a broken rewrite = %q, want the last good one", s)
	}
	if !strings.Contains(logs.String(), "keeping the secrets read before") {
		t.Errorf("a broken rewrite was not logged:\n%s", logs.String())
	}
	if strings.Contains(logs.String(), "sk-") {
		t.Errorf("the log shows a secret:\n%s", logs.String())
	}
}

func TestOpenSecretsFileRefusesBadFiles(t *testing.T) {
	dir := t.TempDir()
	if _, err := OpenSecretsFile(filepath.Join(dir, "missing.yaml"), nil); err == nil {
		t.Error("a missing file was accepted")
	}
	bad := filepath.Join(dir, "bad.yaml")
	if err := os.WriteFile(bad, []byte("- a list\n- not a map\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := OpenSecretsFile(bad, nil); err == nil || !strings.Contains(err.Error(), "YAML map") {
		t.Errorf("a list was accepted: %v", err)
	}
}
