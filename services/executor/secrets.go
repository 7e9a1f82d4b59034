package executor

import (
	"fmt"
	"log/slog"
	"os"
	"sync"
	"time"

	"go.yaml.in/yaml/v3"
)

// Secrets resolves the name of a provider key, as configuration names it,
// to the secret itself. Only executors hold secrets.
type Secrets func(name string) (secret string, ok bool)

// SecretsFromMap resolves names from a map, such as the executor's own
// secrets file.
func SecretsFromMap(m map[string]string) Secrets {
	return func(name string) (string, bool) {
		s, ok := m[name]
		return s, ok && s != ""
	}
}

// SecretsFromEnv resolves a name as the environment variable of that name.
func SecretsFromEnv() Secrets {
	return func(name string) (string, bool) {
		s, ok := os.LookupEnv(name)
		return s, ok && s != ""
	}
}

// FirstOf tries each source in turn.
func FirstOf(sources ...Secrets) Secrets {
	return func(name string) (string, bool) {
		for _, src := range sources {
			if src == nil {
				continue
			}
			if s, ok := src(name); ok {
				return s, true
			}
		}
		return "", false
	}
}

// SecretsFile resolves names from a YAML file mapping key names to
// secrets (the executor's --secrets), and re-reads the file when it
// changes, so that a key is added or rotated without restarting the
// executor: a Kubernetes Secret mounted as a volume, or a file an operator
// rewrites, is picked up within Interval. A file that turns unreadable or
// malformed keeps the last good contents, and says so in the log (the
// message names the file, never a secret).
type SecretsFile struct {
	path string
	log  *slog.Logger
	// Interval is the least time between two looks at the file. Default
	// (from OpenSecretsFile) 1s; 0 looks at every lookup.
	Interval time.Duration

	mu      sync.Mutex
	secrets map[string]string
	modTime time.Time
	size    int64
	checked time.Time
}

// OpenSecretsFile reads path, failing when it cannot be read or is not a
// YAML map of names to secrets.
func OpenSecretsFile(path string, log *slog.Logger) (*SecretsFile, error) {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	f := &SecretsFile{path: path, log: log, Interval: time.Second}
	if err := f.reload(); err != nil {
		return nil, err
	}
	f.checked = time.Now()
	return f, nil
}

// Lookup resolves name; it is a Secrets.
func (f *SecretsFile) Lookup(name string) (string, bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if now := time.Now(); now.Sub(f.checked) >= f.Interval {
		f.checked = now
		if st, err := os.Stat(f.path); err != nil || !st.ModTime().Equal(f.modTime) || st.Size() != f.size {
			if err := f.reload(); err != nil {
				f.log.Warn("keeping the secrets read before", "err", err)
			}
		}
	}
	s, ok := f.secrets[name]
	return s, ok && s != ""
}

// reload reads the file; f.mu is held, or f is not shared yet.
func (f *SecretsFile) reload() error {
	st, err := os.Stat(f.path)
	if err != nil {
		return fmt.Errorf("secrets: %w", err)
	}
	data, err := os.ReadFile(f.path)
	if err != nil {
		return fmt.Errorf("secrets: %w", err)
	}
	var m map[string]string
	if err := yaml.Unmarshal(data, &m); err != nil {
		// yaml's errors name lines and types, not the values.
		return fmt.Errorf("secrets %s: must be a YAML map of key names to secrets: %w", f.path, err)
	}
	if f.secrets != nil {
		f.log.Info("secrets file changed: read again", "file", f.path, "names", len(m))
	}
	f.secrets, f.modTime, f.size = m, st.ModTime(), st.Size()
	return nil
}
