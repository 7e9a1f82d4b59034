package concurrency

import (
	"context"
	"errors"
	"slices"
	"strings"
	"time"
)

// Block is one holder's lease on a deployment, as Snapshot reports it.
type Block struct {
	Holder string
	// Slots is the size of the block: calls in flight plus spare.
	Slots int
	// Want is the holder's demand as of its latest write: the most slots
	// it had or asked for lately.
	Want int
	// Expires is when the block stops counting, unless renewed, on the
	// holder's clock.
	Expires time.Time
	// Live reports whether the block still counts against the maximum on
	// this holder's clock: for its own block until Expires, for the others
	// until Expires plus Options.ClockSkew.
	Live bool
}

// Snapshot returns the blocks of every holder on every deployment, sorted
// by holder, for status pages: from the cache while the watcher runs,
// otherwise read from the KV. Blocks that no longer count but that nobody
// has removed yet (their holder died) are included, with Live false.
//
// Errors: [ErrBadState] for keys that cannot be read (the others are
// returned), ctx.Err(), and the KV's errors.
func (s *Slots) Snapshot(ctx context.Context) (map[string][]Block, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	entries, err := s.st.All(ctx)
	if err != nil {
		return nil, err
	}
	now := s.clock.now()
	out := make(map[string][]Block)
	var errs []error
	for key, e := range entries {
		if e.Err != nil {
			errs = append(errs, e.Err)
			continue
		}
		for h, b := range e.Value.holders {
			live := liveOther(b, now, s.skew)
			if h == s.holder {
				live = now.UnixNano() < b.exp
			}
			out[key] = append(out[key], Block{Holder: h, Slots: b.n, Want: b.want, Expires: time.Unix(0, b.exp), Live: live})
		}
		slices.SortFunc(out[key], func(a, b Block) int { return strings.Compare(a.Holder, b.Holder) })
	}
	return out, errors.Join(errs...)
}
