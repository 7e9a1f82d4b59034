package bootstrap

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/sluicehq/sluice/messages"
	"github.com/sluicehq/sluice/services/config"
	"github.com/sluicehq/sluice/services/regions"
	"github.com/sluicehq/sluice/services/streams"
)

// ErrUnserved is what Apply returns when a deployment of the file names a
// region no executor serves, and Force is not set. The error also matches
// a *config.ValidationError that names each such field
// (pools.<pool>.deployments[i].region).
var ErrUnserved = errors.New("bootstrap: no executor serves a region the configuration names")

// Change is a configuration a person makes live in every service
// (`sluice config apply`).
type Change struct {
	// File is the configuration to store, validated.
	File *config.Config
	// IfRevision stores File only if the live configuration is at this
	// revision (0: only if none is stored). Negative means the revision
	// Apply reads when it starts, so that an apply by someone else from
	// then on is a conflict rather than lost.
	IfRevision int64
	// Force stores File even if no executor serves a region it names (to
	// bootstrap a region before its executors start).
	Force bool
	// RegionWait is how long to look for an executor serving each region
	// before refusing (see regions.Served).
	RegionWait time.Duration
}

// Applied is what Apply did.
type Applied struct {
	// Revision is File's revision in KV: the one stored, or, when
	// Unchanged, the live one it matches.
	Revision uint64
	// Replaced is the revision File replaced, 0 when none was stored (or
	// when Unchanged).
	Replaced uint64
	// Unchanged is set when File was live already: nothing was stored.
	Unchanged bool
	// Unserved, with Force, names the regions no executor serves that
	// File was stored with anyway (a *config.ValidationError); nil when
	// every region is served.
	Unserved error
}

// Apply stores c.File in KV as the live configuration, by these rules:
//
//   - the revision it replaces is the one read first (or c.IfRevision):
//     if someone else stored one since, nothing is stored and the error
//     matches config.ErrConflict;
//   - a File equal to the live configuration at that revision is not
//     stored again (Applied.Unchanged);
//   - a File naming a region no executor serves (regions.Served, looking
//     for c.RegionWait) is refused with ErrUnserved, or with c.Force
//     stored anyway (Applied.Unserved says which);
//   - on a server no sluice service has run against, it creates sluice's
//     streams and buckets as the first service would, with File's
//     settings.
//
// Services follow the change through config.Watch.
func Apply(ctx context.Context, js jetstream.JetStream, c Change) (Applied, error) {
	if c.File == nil {
		return Applied{}, errors.New("bootstrap: Apply needs a File")
	}
	kv, err := js.KeyValue(ctx, messages.BucketConfig)
	if errors.Is(err, jetstream.ErrBucketNotFound) {
		kv, err = nil, nil // nothing has run against this server yet
	}
	if err != nil {
		return Applied{}, fmt.Errorf("open KV %s: %w", messages.BucketConfig, err)
	}

	var out Applied
	if kv != nil {
		switch e, err := kv.Get(ctx, config.Key); {
		case err == nil:
			out.Replaced = e.Revision()
		case !errors.Is(err, jetstream.ErrKeyNotFound):
			return Applied{}, fmt.Errorf("read KV %s: %w", messages.BucketConfig, err)
		}
	}
	expect := out.Replaced
	if c.IfRevision >= 0 {
		expect = uint64(c.IfRevision)
	}
	if kv != nil {
		if live, rev, err := config.Fetch(ctx, kv); err == nil && rev == out.Replaced && rev == expect && config.Same(live, c.File) {
			return Applied{Revision: rev, Unchanged: true}, nil
		}
	}

	served, err := regions.Served(ctx, js, c.File.Regions(), c.RegionWait)
	if err != nil {
		return Applied{}, err
	}
	if err := c.File.CheckRegions(func(r string) bool { return served[r] }); err != nil {
		if !c.Force {
			return Applied{}, fmt.Errorf("%w: %w", ErrUnserved, err)
		}
		out.Unserved = err
	}

	if kv == nil {
		res, err := streams.Ensure(ctx, js, c.File.Streams)
		if err != nil {
			return Applied{}, err
		}
		kv = res.Config
	}
	if out.Revision, err = config.Apply(ctx, kv, c.File, config.IfRevision(expect)); err != nil {
		return Applied{}, err
	}
	return out, nil
}
