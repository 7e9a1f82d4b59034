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
	"fmt"
	"sort"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/sluicehq/sluice/messages"
)

// maxAttempts bounds the compare-and-swap attempts of one Update.
const maxAttempts = 16

// ErrContention is returned by Update when other writers kept winning.
var ErrContention = errors.New("health: too many concurrent updates")

// Store is a watched view of SLUICE_HEALTH that can also write it. It is
// safe for concurrent use.
type Store struct {
	kv jetstream.KeyValue

	mu      sync.RWMutex
	entries map[string]entry
	watcher jetstream.KeyWatcher
	done    chan struct{}
}

type entry struct {
	health   messages.DeploymentHealth
	revision uint64
}

// NewStore returns a Store on bucket kv. Start it to fill and follow its
// cache.
func NewStore(kv jetstream.KeyValue) *Store {
	return &Store{kv: kv, entries: map[string]entry{}}
}

// Start loads every entry and follows changes until Stop. It returns once
// the initial values are loaded, or ctx ends first.
func (s *Store) Start(ctx context.Context) error {
	w, err := s.kv.WatchAll(ctx)
	if err != nil {
		return fmt.Errorf("health: watch: %w", err)
	}
	s.watcher = w
	s.done = make(chan struct{})
	loaded := make(chan struct{})
	go s.follow(w, loaded)
	select {
	case <-loaded:
		return nil
	case <-ctx.Done():
		s.Stop()
		return ctx.Err()
	}
}

// Stop stops following changes; the cache keeps its last values.
func (s *Store) Stop() {
	if s.watcher == nil {
		return
	}
	_ = s.watcher.Stop()
	<-s.done
	s.watcher = nil
}

func (s *Store) follow(w jetstream.KeyWatcher, loaded chan struct{}) {
	defer close(s.done)
	initial := true
	for e := range w.Updates() {
		if e == nil { // the end of the initial values
			if initial {
				initial = false
				close(loaded)
			}
			continue
		}
		s.mu.Lock()
		if e.Operation() != jetstream.KeyValuePut {
			delete(s.entries, e.Key())
		} else if cur, ok := s.entries[e.Key()]; !ok || e.Revision() > cur.revision {
			var h messages.DeploymentHealth
			if json.Unmarshal(e.Value(), &h) == nil {
				s.entries[e.Key()] = entry{health: h, revision: e.Revision()}
			}
		}
		s.mu.Unlock()
	}
	if initial {
		close(loaded)
	}
}

// Get returns what is known about deployment (the zero value when
// nothing is).
func (s *Store) Get(deployment string) messages.DeploymentHealth {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return s.entries[deployment].health
}

// All returns every deployment's health, by deployment id.
func (s *Store) All() map[string]messages.DeploymentHealth {
	s.mu.RLock()
	defer s.mu.RUnlock()
	out := make(map[string]messages.DeploymentHealth, len(s.entries))
	for k, e := range s.entries {
		out[k] = e.health
	}
	return out
}

// Deployments lists the deployments with an entry, sorted.
func (s *Store) Deployments() []string {
	s.mu.RLock()
	defer s.mu.RUnlock()
	out := make([]string, 0, len(s.entries))
	for k := range s.entries {
		out = append(out, k)
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
	s.mu.RLock()
	cur, cached := s.entries[deployment]
	s.mu.RUnlock()
	for attempt := 0; attempt < maxAttempts; attempt++ {
		h := cur.health
		if !change(&h) {
			return nil
		}
		data, err := json.Marshal(h)
		if err != nil {
			return fmt.Errorf("health: encode: %w", err)
		}
		var rev uint64
		if cached {
			rev, err = s.kv.Update(ctx, deployment, data, cur.revision)
		} else {
			rev, err = s.kv.Create(ctx, deployment, data)
		}
		if err == nil {
			s.remember(deployment, entry{health: h, revision: rev})
			return nil
		}
		if !errors.Is(err, jetstream.ErrKeyRevisionMismatch) && !errors.Is(err, jetstream.ErrKeyExists) {
			return fmt.Errorf("health: write %s: %w", deployment, err)
		}
		// Another writer got there first: start again from its value.
		if cur, cached, err = s.fetch(ctx, deployment); err != nil {
			return err
		}
	}
	return ErrContention
}

func (s *Store) fetch(ctx context.Context, deployment string) (entry, bool, error) {
	kve, err := s.kv.Get(ctx, deployment)
	if errors.Is(err, jetstream.ErrKeyNotFound) {
		return entry{}, false, nil
	}
	if err != nil {
		return entry{}, false, fmt.Errorf("health: read %s: %w", deployment, err)
	}
	var h messages.DeploymentHealth
	if err := json.Unmarshal(kve.Value(), &h); err != nil {
		// A value nobody can read is replaced by what the writer learns.
		h = messages.DeploymentHealth{}
	}
	e := entry{health: h, revision: kve.Revision()}
	s.remember(deployment, e)
	return e, true, nil
}

func (s *Store) remember(deployment string, e entry) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if cur, ok := s.entries[deployment]; !ok || e.revision > cur.revision {
		s.entries[deployment] = e
	}
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
