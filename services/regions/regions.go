// Package regions owns the one answer sluice has to "do executors serve
// this region?": a reading of the region's executor consumer on
// SLUICE_EXEC (streams.ExecConsumer), and what it means. The dispatchers
// read it to stop admitting work to a region whose executors take none;
// `sluice config apply` reads it to refuse a configuration that names a
// region no executor serves.
//
// The criterion, in one place: executors serve a region when its consumer
// exists and an executor either has a pull request waiting on it (it asks
// for work now) or acknowledged work within Active (it is alive, though
// all its pull requests may be filled and none waiting). Neither half is
// enough alone. The consumer is durable and outlives its executors, so
// that it exists says only that one started there once. A busy region can
// show no pull request waiting for a moment, or for as long as its
// executors are full, so pull requests alone call a working region
// unserved; and an acknowledgement alone misses an idle executor, which
// has acknowledged nothing lately but waits with a pull request.
//
// A reading is a moment: callers that act on "not served" look more than
// once (the dispatchers act on two readings in a row; `config apply`
// looks for a while before it refuses).
package regions

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/sluicehq/sluice/messages"
	"github.com/sluicehq/sluice/services/streams"
)

// Active is how recently executors must have acknowledged work to count
// as serving their region when none asks for more.
const Active = 5 * time.Second

// Reading is what a region's executor consumer said at one moment.
type Reading struct {
	// Consumer is whether the consumer exists: an executor of the region
	// started at some time. Without it, nothing else is set.
	Consumer bool
	// Asking is how many pull requests wait on it: executors asking for
	// work now.
	Asking int
	// Acked is whether executors acknowledged work within Active of the
	// moment of the reading.
	Acked bool
	// Pending is how much work waits in SLUICE_EXEC for the region's
	// executors, not delivered to any yet.
	Pending uint64
}

// Served reports whether executors serve the region: one asks for work,
// or they acknowledged some lately (see the package doc).
func (r Reading) Served() bool { return r.Consumer && (r.Asking > 0 || r.Acked) }

// WorkWaits reports whether work admitted to the region would wait for an
// executor: some waits already, or there is no consumer, so none has ever
// started there.
func (r Reading) WorkWaits() bool { return !r.Consumer || r.Pending > 0 }

// Stalled reports whether the region is not served while work waits for
// it: work admitted there now would only wait and go out late. (An
// unserved region with nothing waiting costs nothing yet; the next reading
// after work is admitted to it says stalled.)
func (r Reading) Stalled() bool { return !r.Served() && r.WorkWaits() }

// Read interprets the info of a region's executor consumer at now; info is
// nil when the consumer does not exist.
func Read(info *jetstream.ConsumerInfo, now time.Time) Reading {
	if info == nil {
		return Reading{}
	}
	return Reading{
		Consumer: true,
		Asking:   info.NumWaiting,
		Acked:    info.AckFloor.Last != nil && now.Sub(*info.AckFloor.Last) < Active,
		Pending:  info.NumPending,
	}
}

// Probe reads region's executor consumer on exec (stream SLUICE_EXEC), in
// one request, at now.
func Probe(ctx context.Context, exec jetstream.Stream, region string, now time.Time) (Reading, error) {
	cons, err := exec.Consumer(ctx, streams.ExecConsumer(region))
	if errors.Is(err, jetstream.ErrConsumerNotFound) {
		return Read(nil, now), nil
	}
	if err != nil {
		return Reading{}, err
	}
	// Looking the consumer up read its info already.
	return Read(cons.CachedInfo(), now), nil
}

// Served probes each of regions every probeEvery until it is served or
// within has passed, and reports those served. Without stream
// SLUICE_EXEC, none is.
func Served(ctx context.Context, js jetstream.JetStream, regions []string, within time.Duration) (map[string]bool, error) {
	served := map[string]bool{}
	exec, err := js.Stream(ctx, messages.StreamExec)
	if errors.Is(err, jetstream.ErrStreamNotFound) {
		return served, nil
	}
	if err != nil {
		return nil, fmt.Errorf("look for executors: %w", err)
	}
	deadline := time.Now().Add(within)
	for {
		pending := 0
		for _, r := range regions {
			if served[r] {
				continue
			}
			reading, err := Probe(ctx, exec, r, time.Now())
			if err != nil {
				return nil, fmt.Errorf("look for executors of region %s: %w", r, err)
			}
			if reading.Served() {
				served[r] = true
				continue
			}
			pending++
		}
		if pending == 0 || !time.Now().Before(deadline) {
			return served, nil
		}
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-time.After(probeEvery):
		}
	}
}

// probeEvery is how often Served looks again at regions not served yet.
const probeEvery = 100 * time.Millisecond
