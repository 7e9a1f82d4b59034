package bootstrap

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/sluicehq/sluice/messages"
	"github.com/sluicehq/sluice/services/config"
	"github.com/sluicehq/sluice/services/streams"
)

// ErrStopped is what Resolve returns when its context ended while it
// waited for sluice's streams or for a configuration.
var ErrStopped = errors.New("bootstrap: stopped while waiting for a configuration")

// Config says how a service resolves its configuration.
type Config struct {
	// File is the configuration given to the service (--config FILE), nil
	// if none; Path names it in logs.
	File *config.Config
	Path string
	// Store lets the service create sluice's streams if they are missing,
	// and store File in KV when KV holds none (dispatchers do).
	Store bool
	// Force stores File even over a configuration in KV.
	Force bool
	// Logger says what was decided, and what a waiting service waits for.
	// Default: slog.Default().
	Logger *slog.Logger
}

// sayEvery is how often a service that waits says so again.
const sayEvery = 30 * time.Second

// poll is how often a service waiting for a configuration in KV looks.
const poll = 500 * time.Millisecond

// Resolve returns the configuration the service starts with, as a
// config.Live (with its KV revision when it came from KV, 0 when it is
// File, not stored), and the KV bucket to watch for changes (config.Watch).
// See the package doc for the rules. It returns ErrStopped if ctx ends
// while it waits.
func Resolve(ctx context.Context, js jetstream.JetStream, c Config) (*config.Live, jetstream.KeyValue, error) {
	log := c.Logger
	if log == nil {
		log = slog.Default()
	}
	if c.Force && c.File == nil {
		return nil, nil, errors.New("bootstrap: Force needs a File")
	}
	if c.File == nil {
		cfg, rev, kv, err := awaitConfig(ctx, js, log)
		if err != nil {
			return nil, nil, err
		}
		log.Info("using the configuration stored in KV", "bucket", messages.BucketConfig, "revision", rev)
		live := config.NewLive(cfg)
		live.StoreRevision(cfg, rev)
		return live, kv, nil
	}
	kv, err := js.KeyValue(ctx, messages.BucketConfig)
	if errors.Is(err, jetstream.ErrBucketNotFound) {
		if c.Store {
			var res *streams.Resources
			if res, err = streams.Ensure(ctx, js, c.File.Streams); err == nil {
				kv = res.Config
			}
		} else if kv, err = awaitBucket(ctx, js, log); errors.Is(err, ErrStopped) {
			return nil, nil, err
		}
	}
	if err != nil {
		return nil, nil, fmt.Errorf("open KV %s: %w", messages.BucketConfig, err)
	}
	live := config.NewLive(c.File)
	if c.Force {
		var replaced uint64
		if e, err := kv.Get(ctx, config.Key); err == nil {
			replaced = e.Revision()
		}
		rev, err := config.Apply(ctx, kv, c.File)
		if err != nil {
			return nil, nil, err
		}
		log.Warn("stored --config FILE in KV over the live configuration (--config-force)", "file", c.Path, "revision", rev, "replaced_revision", replaced)
		live.StoreRevision(c.File, rev)
		return live, kv, nil
	}
	for {
		stored, rev, err := config.Fetch(ctx, kv)
		switch {
		case err == nil:
			if config.Same(stored, c.File) {
				log.Info("using the configuration stored in KV; --config FILE matches it", "file", c.Path, "revision", rev)
			} else {
				log.Warn("KV holds a configuration that differs from --config FILE; using KV's: KV wins once it holds one "+
					"(change it with `sluice config apply -f FILE`, or restart with --config-force)", "file", c.Path, "revision", rev)
			}
			live.StoreRevision(stored, rev)
			return live, kv, nil
		case errors.Is(err, config.ErrNotStored) && c.Store:
			rev, err := config.Apply(ctx, kv, c.File, config.IfRevision(0))
			if errors.Is(err, config.ErrConflict) {
				continue // another dispatcher stored one first: use it
			}
			if err != nil {
				return nil, nil, err
			}
			log.Info("KV held no configuration: stored --config FILE", "file", c.Path, "bucket", messages.BucketConfig, "revision", rev)
			live.StoreRevision(c.File, rev)
			return live, kv, nil
		case errors.Is(err, config.ErrNotStored):
			log.Info("KV holds no configuration yet: using --config FILE until one is stored", "file", c.Path)
			return live, kv, nil
		default:
			log.Error("cannot use the configuration in KV: using --config FILE until a valid one is stored", "file", c.Path, "err", err)
			return live, kv, nil
		}
	}
}

// awaitBucket opens the configuration's KV bucket, waiting (and saying
// so, every sayEvery) while it does not exist: executors and gateways
// create nothing, and wait for a dispatcher or `sluice config apply` to.
func awaitBucket(ctx context.Context, js jetstream.JetStream, log *slog.Logger) (jetstream.KeyValue, error) {
	kv, err := streams.Await(ctx, sayEvery, func(reason error) {
		log.Warn("waiting for sluice's streams: a dispatcher or `sluice config apply` creates them", "reason", reason)
	}, func(ctx context.Context) (jetstream.KeyValue, error) { return js.KeyValue(ctx, messages.BucketConfig) })
	if ctx.Err() != nil {
		return nil, ErrStopped
	}
	return kv, err
}

// awaitConfig reads the configuration stored in KV, waiting (and saying
// so, every sayEvery) until there is a valid one.
func awaitConfig(ctx context.Context, js jetstream.JetStream, log *slog.Logger) (*config.Config, uint64, jetstream.KeyValue, error) {
	var kv jetstream.KeyValue
	var said string
	var saidAt time.Time
	for {
		var err error
		if kv == nil {
			kv, err = js.KeyValue(ctx, messages.BucketConfig)
			if err != nil {
				kv = nil
			}
		}
		if kv != nil {
			var cfg *config.Config
			var rev uint64
			if cfg, rev, err = config.Fetch(ctx, kv); err == nil {
				return cfg, rev, kv, nil
			}
		}
		if ctx.Err() != nil {
			return nil, 0, nil, ErrStopped
		}
		reason := err.Error()
		if errors.Is(err, jetstream.ErrBucketNotFound) || errors.Is(err, config.ErrNotStored) {
			reason = "no configuration is stored in KV bucket " + messages.BucketConfig
		}
		if reason != said || time.Since(saidAt) >= sayEvery {
			log.Warn("waiting for a configuration in KV: store one with `sluice config apply -f FILE`, or start a dispatcher with --config FILE",
				"reason", reason)
			said, saidAt = reason, time.Now()
		}
		select {
		case <-ctx.Done():
			return nil, 0, nil, ErrStopped
		case <-time.After(poll):
		}
	}
}
