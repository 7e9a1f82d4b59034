package config

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/sluicehq/sluice/messages"
)

// Key is the key of the KV bucket SLUICE_CONFIG (messages.BucketConfig)
// that holds the live configuration, as the YAML Marshal writes. The
// bucket keeps the last revisions of it (its history), so an operator can
// see what changed and Fetch can fall back to the newest valid one.
const Key = "config"

// ErrNotStored is returned by Fetch when the bucket holds no configuration:
// none was ever stored, or the last one was deleted or purged.
var ErrNotStored = errors.New("config: no configuration stored in KV bucket " + messages.BucketConfig)

// ErrConflict matches the *ConflictError Apply returns when the stored
// configuration is not at the revision it was told to expect.
var ErrConflict = errors.New("config: the stored configuration changed")

// ConflictError is Apply's answer when another writer stored a
// configuration since the revision the caller expected.
type ConflictError struct {
	// Expected is the revision the caller expected (0: none stored).
	Expected uint64
	// Current is the latest revision stored now, 0 if unknown.
	Current uint64
}

func (e *ConflictError) Error() string {
	want := fmt.Sprintf("revision %d", e.Expected)
	if e.Expected == 0 {
		want = "no configuration"
	}
	now := "another one"
	if e.Current > 0 {
		now = fmt.Sprintf("revision %d", e.Current)
	}
	return fmt.Sprintf("config: expected %s in KV, but it holds %s: someone else applied a configuration meanwhile; fetch it and apply again", want, now)
}

// Is makes errors.Is(err, ErrConflict) true.
func (e *ConflictError) Is(target error) bool { return target == ErrConflict }

// ApplyOption changes how Apply stores a configuration.
type ApplyOption func(*applyOptions)

type applyOptions struct {
	expect    uint64
	hasExpect bool
}

// IfRevision makes Apply store the configuration only if the latest stored
// revision is rev (optimistic concurrency). Revision 0 means "only if no
// configuration is stored". An operator who read revision 6, edited it and
// applies with IfRevision(6) gets a *ConflictError, rather than silently
// overwriting, if someone else applied revision 7 in between.
func IfRevision(rev uint64) ApplyOption {
	return func(o *applyOptions) { o.expect, o.hasExpect = rev, true }
}

// Apply validates cfg and stores it in kv (the SLUICE_CONFIG bucket) as the
// live configuration, and returns its revision. Every service watching the
// bucket (Watch) switches to it.
//
// Without IfRevision, Apply overwrites whatever is stored. With it, Apply
// is a compare-and-swap: if the stored revision is not the expected one,
// nothing is stored and the error matches ErrConflict.
//
// cfg is not modified. The value stored is what Marshal writes for it with
// its defaults filled in, checked to parse back; it holds key names, never
// secrets.
//
// Errors: a *ValidationError (matching ErrInvalid) naming each bad field,
// a *ConflictError (matching ErrConflict), or the KV's errors.
func Apply(ctx context.Context, kv jetstream.KeyValue, cfg *Config, opts ...ApplyOption) (uint64, error) {
	var o applyOptions
	for _, opt := range opts {
		opt(&o)
	}
	if cfg == nil {
		return 0, errors.New("config: apply: no configuration")
	}
	// Validate a copy, read back from what would be stored, so that cfg
	// (which services may be reading) is not touched, and what is stored
	// is known to parse.
	data, err := cfg.Marshal()
	if err != nil {
		return 0, fmt.Errorf("config: encode: %w", err)
	}
	parsed, err := Parse(data)
	if err != nil {
		return 0, err
	}
	if data, err = parsed.Marshal(); err != nil {
		return 0, fmt.Errorf("config: encode: %w", err)
	}
	var rev uint64
	switch {
	case !o.hasExpect:
		rev, err = kv.Put(ctx, Key, data)
	case o.expect == 0:
		rev, err = kv.Create(ctx, Key, data)
		if errors.Is(err, jetstream.ErrKeyExists) {
			return 0, &ConflictError{Current: latestRevision(ctx, kv)}
		}
	default:
		rev, err = kv.Update(ctx, Key, data, o.expect)
		if errors.Is(err, jetstream.ErrKeyRevisionMismatch) || errors.Is(err, jetstream.ErrKeyExists) {
			return 0, &ConflictError{Expected: o.expect, Current: latestRevision(ctx, kv)}
		}
	}
	if err != nil {
		return 0, fmt.Errorf("config: store in KV %s: %w", messages.BucketConfig, err)
	}
	return rev, nil
}

// latestRevision is the revision of the latest entry of Key (a delete
// marker included), or 0 if there is none or it cannot be read.
func latestRevision(ctx context.Context, kv jetstream.KeyValue) uint64 {
	e, err := kv.Get(ctx, Key)
	if err == nil {
		return e.Revision()
	}
	return 0
}

// Fetch returns the live configuration stored in kv and its revision: the
// latest revision that parses and validates. A newer revision that does
// not (written by hand, or by a newer sluice with fields this one does not
// know) is skipped, as Watch skips it, and the newest valid one in the
// bucket's history is returned.
//
// Errors: ErrNotStored when there is no configuration (never stored, or
// the latest entry is a delete or purge); an error matching ErrInvalid
// when no revision in the history is valid; the KV's errors.
func Fetch(ctx context.Context, kv jetstream.KeyValue) (*Config, uint64, error) {
	e, err := kv.Get(ctx, Key)
	if errors.Is(err, jetstream.ErrKeyNotFound) {
		return nil, 0, ErrNotStored
	}
	if err != nil {
		return nil, 0, fmt.Errorf("config: read KV %s: %w", messages.BucketConfig, err)
	}
	cfg, latestErr := Parse(e.Value())
	if latestErr == nil {
		return cfg, e.Revision(), nil
	}
	history, err := kv.History(ctx, Key)
	if err != nil {
		return nil, 0, fmt.Errorf("config: revision %d in KV %s is invalid (%w), and its history cannot be read: %w", e.Revision(), messages.BucketConfig, latestErr, err)
	}
	for i := len(history) - 1; i >= 0; i-- {
		h := history[i]
		if h.Operation() != jetstream.KeyValuePut {
			break // deleted before: nothing older is live
		}
		if cfg, err := Parse(h.Value()); err == nil {
			return cfg, h.Revision(), nil
		}
	}
	return nil, 0, fmt.Errorf("config: no valid configuration in KV %s; the latest, revision %d: %w", messages.BucketConfig, e.Revision(), latestErr)
}

// Watch keeps live up to date with the configuration stored in kv until
// ctx ends, and then returns nil. Every stored revision that parses and
// validates replaces the live configuration as soon as the KV watch
// delivers it (milliseconds); one that does not is logged and ignored, and
// so is a delete: the live configuration stays as it was.
//
// live must hold a configuration already (from a file, or from Fetch with
// StoreRevision). If the watch ends (the connection closed for good, say),
// Watch starts it again with a backoff; a restarted watch first delivers
// the latest revision, so nothing that happened meanwhile is missed.
//
// streams.* and admission.lease_ttl are read when a service starts: a
// change to them is applied to live but logged as taking effect on restart.
func Watch(ctx context.Context, kv jetstream.KeyValue, live *Live, log *slog.Logger) error {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	backoff := 100 * time.Millisecond
	for {
		started := time.Now()
		err := watchOnce(ctx, kv, live, log)
		if ctx.Err() != nil {
			return nil
		}
		if time.Since(started) > time.Minute {
			backoff = 100 * time.Millisecond
		}
		log.Warn("configuration watch ended; watching again", "err", err, "in", backoff)
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(backoff):
		}
		backoff = min(2*backoff, 5*time.Second)
	}
}

// watchOnce runs one KV watch until it ends or ctx does.
func watchOnce(ctx context.Context, kv jetstream.KeyValue, live *Live, log *slog.Logger) error {
	wctx, cancel := context.WithCancel(ctx)
	defer cancel()
	w, err := kv.Watch(wctx, Key)
	if err != nil {
		return err
	}
	defer func() {
		// The watcher blocks while its channel is full: drain it until
		// Stop closes it.
		go func() {
			for range w.Updates() {
			}
		}()
		_ = w.Stop()
	}()
	initial := true
	for {
		select {
		case <-ctx.Done():
			return nil
		case e, ok := <-w.Updates():
			if !ok {
				return errors.New("the KV watcher closed")
			}
			if e == nil { // the latest value has been delivered
				initial = false
				continue
			}
			if initial && e.Revision() == live.Revision() {
				continue // what live holds already
			}
			apply(ctx, kv, live, log, e, initial)
		}
	}
}

// apply makes a watched entry live, if it is a valid configuration.
func apply(ctx context.Context, kv jetstream.KeyValue, live *Live, log *slog.Logger, e jetstream.KeyValueEntry, initial bool) {
	if e.Operation() != jetstream.KeyValuePut {
		log.Warn("the configuration was deleted from KV; keeping the live one",
			"bucket", messages.BucketConfig, "revision", e.Revision(), "live_revision", live.Revision())
		return
	}
	cfg, err := Parse(e.Value())
	rev := e.Revision()
	if err != nil {
		log.Error("ignoring an invalid configuration stored in KV; keeping the live one",
			"bucket", messages.BucketConfig, "revision", rev, "live_revision", live.Revision(), "err", err)
		if !initial {
			return
		}
		// A watch (re)started on an invalid latest revision: a valid one
		// may have been stored in between, while this service was not
		// watching. Fetch finds the newest valid one.
		if cfg, rev, err = Fetch(ctx, kv); err != nil || rev == live.Revision() {
			return
		}
	}
	old, oldRev := live.Load(), live.Revision()
	live.StoreRevision(cfg, rev)
	log.Info("configuration updated", "revision", rev, "previous_revision", oldRev)
	if old != nil && (old.Streams != cfg.Streams || old.Admission.LeaseTTL != cfg.Admission.LeaseTTL) {
		log.Warn("streams.* and admission.lease_ttl changed: they take effect when services restart", "revision", rev)
	}
}
