package fakeprovider

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"sync"
	"time"
)

// behavior is the part of the configuration that tests change while
// calls are in flight. A Server holds it as an immutable snapshot behind an
// atomic pointer: each call reads one consistent snapshot, and a setter
// swaps in a modified copy.
type behavior struct {
	latency       time.Duration
	latencyJitter time.Duration
	errorRate     float64
	errorStatus   int
	timeoutRate   float64
	overloadRate  float64
	chunkDelay    time.Duration
}

func (c Config) behavior() behavior {
	return behavior{
		latency:       c.Latency,
		latencyJitter: c.LatencyJitter,
		errorRate:     c.ErrorRate,
		errorStatus:   c.ErrorStatus,
		timeoutRate:   c.TimeoutRate,
		overloadRate:  c.OverloadRate,
		chunkDelay:    c.ChunkDelay,
	}
}

func (b behavior) validate() error {
	var errs []error
	if b.latency < 0 {
		errs = append(errs, fmt.Errorf("config.Latency %v is negative", b.latency))
	}
	if b.latencyJitter < 0 {
		errs = append(errs, fmt.Errorf("config.LatencyJitter %v is negative", b.latencyJitter))
	}
	if !(b.errorRate >= 0 && b.errorRate <= 1) { // also refuses NaN
		errs = append(errs, fmt.Errorf("config.ErrorRate %v outside 0..1", b.errorRate))
	}
	if b.errorStatus != 0 && (b.errorStatus < 500 || b.errorStatus > 599) {
		errs = append(errs, fmt.Errorf("config.ErrorStatus %d is neither 0 nor 500..599", b.errorStatus))
	}
	if !(b.timeoutRate >= 0 && b.timeoutRate <= 1) {
		errs = append(errs, fmt.Errorf("config.TimeoutRate %v outside 0..1", b.timeoutRate))
	}
	if !(b.overloadRate >= 0 && b.overloadRate <= 1) {
		errs = append(errs, fmt.Errorf("config.OverloadRate %v outside 0..1", b.overloadRate))
	}
	if b.chunkDelay < 0 {
		errs = append(errs, fmt.Errorf("config.ChunkDelay %v is negative", b.chunkDelay))
	}
	return errors.Join(errs...)
}

// dice is the seeded generator behind fault injection. math/rand/v2's
// generators are not safe for concurrent use, hence the mutex. Draws are
// made only for faults that are switched on, so that a test enabling one
// fault sees the same sequence whatever the other settings.
type dice struct {
	mu        sync.Mutex
	rng       *rand.Rand
	alternate int // count of injected errors, to alternate 500 and 503
}

func newDice(seed uint64) *dice {
	return &dice{rng: rand.New(rand.NewPCG(seed, 0x5eed_f00d))}
}

// hit reports whether an event of the given probability happens.
func (d *dice) hit(p float64) bool {
	if p <= 0 {
		return false
	}
	if p >= 1 {
		return true
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.rng.Float64() < p
}

// jitter draws a duration uniformly in [0, max).
func (d *dice) jitter(max time.Duration) time.Duration {
	if max <= 0 {
		return 0
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	return time.Duration(d.rng.Int64N(int64(max)))
}

// errorStatus returns the status of the next injected error: the
// configured one, or 500 and 503 in turn, so that a client sees both kinds
// of retryable failure.
func (d *dice) errorStatus(configured int) int {
	if configured != 0 {
		return configured
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	d.alternate++
	if d.alternate%2 == 1 {
		return 500
	}
	return 503
}

// fault is what injection decided for one admitted call.
type fault int

const (
	faultNone fault = iota
	faultTimeout
	faultError
	faultOverload
)

// decide draws the fault of one admitted call. A timeout is drawn first:
// a call that hangs never gets to fail; then an error, then an overload.
func (d *dice) decide(b behavior) fault {
	if d.hit(b.timeoutRate) {
		return faultTimeout
	}
	if d.hit(b.errorRate) {
		return faultError
	}
	if d.hit(b.overloadRate) {
		return faultOverload
	}
	return faultNone
}
