package dispatcher

import (
	"context"
	"sort"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/sluicehq/sluice/services/regions"
)

// A region is stalled when none of its executors takes work while work
// would wait for one (regions.Reading.Stalled: the one probe of whether
// executors serve a region, which `sluice config apply` uses too): none
// ever started there (the region has no consumer on SLUICE_EXEC), or work
// is waiting, no executor asks for more and none has acknowledged any
// within regions.Active (they died, lost NATS, or are all stuck). Work
// admitted to a stalled region would only wait in SLUICE_EXEC and go out
// late, or not at all: so nothing is admitted there while it is stalled.
// Calls that may go elsewhere do; calls restricted to it wait for
// admission, until an executor takes work again or their deadline passes.
// Work that waits in SLUICE_EXEC past its send time goes back to
// admission (see stranded.go).
//
// Each dispatcher reads every configured region's executor consumer every
// regionPoll. Between two pull requests a busy region can show waiting
// work and no request for a moment, so a region is stalled only after two
// readings in a row say so, and clear again at the first that does not.
const regionPoll = time.Second

// regionState is what the last readings said of each region.
type regionState struct {
	mu      sync.Mutex
	stalled map[string]bool
	// suspect holds regions whose last reading looked stalled.
	suspect map[string]bool
}

func newRegionState() *regionState {
	return &regionState{stalled: map[string]bool{}, suspect: map[string]bool{}}
}

// isStalled reports whether region is stalled.
func (s *regionState) isStalled(region string) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.stalled[region]
}

// list returns the stalled regions, sorted.
func (s *regionState) list() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []string
	for r := range s.stalled {
		out = append(out, r)
	}
	sort.Strings(out)
	return out
}

// reading records one reading of region; it reports whether the region
// is stalled now, and whether that changed.
func (s *regionState) reading(region string, looksStalled bool) (stalled, changed bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	was := s.stalled[region]
	stalled = looksStalled && s.suspect[region]
	s.suspect[region] = looksStalled
	if stalled {
		s.stalled[region] = true
	} else {
		delete(s.stalled, region)
	}
	return stalled, stalled != was
}

// forget drops the regions not in keep, and returns them.
func (s *regionState) forget(keep map[string]bool) []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	var gone []string
	for r := range s.suspect {
		if !keep[r] {
			delete(s.suspect, r)
			delete(s.stalled, r)
			gone = append(gone, r)
		}
	}
	return gone
}

// watchRegions reads the regions' executor consumers until ctx ends.
func (d *Dispatcher) watchRegions(ctx context.Context, exec jetstream.Stream) {
	every(ctx, regionPoll, func() {
		keep := map[string]bool{}
		for _, r := range d.cfg.Shared.Load().Regions() {
			keep[r] = true
			reading, err := regions.Probe(ctx, exec, r, d.cfg.Clock())
			if err != nil {
				if ctx.Err() == nil {
					d.log.Warn("read the executors' consumer", "region", r, "err", err)
				}
				continue
			}
			stalled, changed := d.regions.reading(r, reading.Stalled())
			if changed {
				d.log.Warn("region", "region", r, "no_executor_taking_work", stalled)
				d.poke()
				if stalled {
					d.sweepSoon()
				}
			}
			v := 0.0
			if stalled {
				v = 1
			}
			d.metrics.RegionStalled.WithLabelValues(r).Set(v)
		}
		for _, r := range d.regions.forget(keep) {
			d.metrics.RegionStalled.DeleteLabelValues(r)
		}
	})
}

// every runs f every interval until ctx ends.
func every(ctx context.Context, interval time.Duration, f func()) {
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			f()
		}
	}
}

// executorsOf reads region's executor consumer (regions.Probe): whether
// executors serve the region, and whether work admitted to it would wait
// for one. The sweep of stranded work asks it.
func (d *Dispatcher) executorsOf(ctx context.Context, exec jetstream.Stream, region string) (served, waiting bool, err error) {
	r, err := regions.Probe(ctx, exec, region, d.cfg.Clock())
	if err != nil {
		return false, false, err
	}
	return r.Served(), r.WorkWaits(), nil
}
