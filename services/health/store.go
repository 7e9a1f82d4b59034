// Package health owns what sluice learns about deployments from their
// providers, and shares it between services: cooldowns after a 429 or a
// "remaining: 0", limits a provider reports below the configured ones, and
// keys taken out of rotation by insufficient_quota.
//
// The state lives in KV bucket SLUICE_HEALTH, one key per deployment
// (messages.DeploymentHealth). Executors, which see the providers'
// answers, write it, and only when what they learned changes what a
// dispatcher would do; dispatchers and `sluice health` read it from a
// watched cache, at no cost per call.
package health

import (
	"context"
	"encoding/json"
	"errors"
	"sort"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/sluicehq/sluice/messages"
	"github.com/sluicehq/sluice/services/kvstate"
)

// maxAttempts bounds the compare-and-swap attempts of one Update.
const maxAttempts = 16

// ErrContention is returned by Update when other writers kept winning. The
// error returned matches [kvstate.ErrContention] too.
var ErrContention = errors.New("health: too many concurrent updates")

// Store is a watched view of SLUICE_HEALTH that can also write it. It is
// safe for concurrent use.
//
// The cache and the compare-and-swap loop are a [kvstate.Store]. Writers
// do not take turns and do not pause between attempts: writes are rare,
// since most of what executors learn is known already.
type Store struct {
	st *kvstate.Store[messages.DeploymentHealth]
}

// NewStore returns a Store on bucket kv. Start it to fill and follow its
// cache.
func NewStore(kv jetstream.KeyValue) *Store {
	codec := kvstate.Codec[messages.DeploymentHealth]{
		Encode: func(h messages.DeploymentHealth) ([]byte, error) { return json.Marshal(h) },
		Decode: decode,
	}
	return &Store{st: kvstate.New(kv, codec, kvstate.Options{
		Name:        "health",
		MaxAttempts: maxAttempts,
		Backoff:     -1,
		// Update starts from the cached value even when not watching, so
		// that one with nothing to write never costs a KV operation.
		TrustCache: true,
		Contention: ErrContention,
	})}
}

// decode reads a stored DeploymentHealth. A value nobody can read counts
// as nothing known, and is replaced by what the next writer learns.
func decode(data []byte) (messages.DeploymentHealth, error) {
	var h messages.DeploymentHealth
	if json.Unmarshal(data, &h) != nil {
		return messages.DeploymentHealth{}, nil
	}
	return h, nil
}

// Start loads every entry and follows changes until Stop. It returns once
// the initial values are loaded, or ctx ends first.
func (s *Store) Start(ctx context.Context) error { return s.st.Start(ctx) }

// Stop stops following changes; the cache keeps its last values.
func (s *Store) Stop() { s.st.Stop() }

// Get returns what is known about deployment (the zero value when
// nothing is).
func (s *Store) Get(deployment string) messages.DeploymentHealth {
	e, _ := s.st.Cached(deployment)
	return e.Value
}

// All returns every deployment's health, by deployment id.
func (s *Store) All() map[string]messages.DeploymentHealth {
	entries, _ := s.st.CachedAll()
	out := make(map[string]messages.DeploymentHealth, len(entries))
	for k, e := range entries {
		if e.Exists {
			out[k] = e.Value
		}
	}
	return out
}

// Deployments lists the deployments with an entry, sorted.
func (s *Store) Deployments() []string {
	entries, _ := s.st.CachedAll()
	out := make([]string, 0, len(entries))
	for k, e := range entries {
		if e.Exists {
			out = append(out, k)
		}
	}
	sort.Strings(out)
	return out
}

// Update applies change to deployment's health with compare-and-swap,
// starting from the cached value. change returns false when there is
// nothing to write (the common case: what was learned is known already),
// and then Update costs no KV operation. Errors: ErrContention, or the KV
// error.
func (s *Store) Update(ctx context.Context, deployment string, change func(*messages.DeploymentHealth) bool) error {
	_, err := s.st.Update(ctx, deployment, func(h messages.DeploymentHealth) (messages.DeploymentHealth, bool, error) {
		return h, change(&h), nil
	})
	return err
}

// Enable puts a deployment back in rotation, as an operator does after
// fixing a key's billing.
func (s *Store) Enable(ctx context.Context, deployment string) error {
	return s.Update(ctx, deployment, func(h *messages.DeploymentHealth) bool {
		if !h.Disabled {
			return false
		}
		h.Disabled, h.DisabledUntil, h.DisabledReason, h.DisabledAt = false, time.Time{}, "", time.Time{}
		return true
	})
}
