package executor

import "os"

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
