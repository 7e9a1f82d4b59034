package limiter

import (
	"fmt"
	"math"
	"time"
)

// Amount is a quantity of requests and tokens.
type Amount struct {
	Requests, Tokens float64
}

// Add returns a+b per dimension.
func (a Amount) Add(b Amount) Amount {
	return Amount{Requests: a.Requests + b.Requests, Tokens: a.Tokens + b.Tokens}
}

// Sub returns a-b per dimension.
func (a Amount) Sub(b Amount) Amount {
	return Amount{Requests: a.Requests - b.Requests, Tokens: a.Tokens - b.Tokens}
}

// IsZero reports whether both dimensions are zero.
func (a Amount) IsZero() bool { return a.Requests == 0 && a.Tokens == 0 }

// String formats a for errors and logs.
func (a Amount) String() string {
	return fmt.Sprintf("{requests: %g, tokens: %g}", a.Requests, a.Tokens)
}

// dim returns dimension i (0 requests, 1 tokens). Indexing lets the bucket
// math be written once for both dimensions.
func (a Amount) dim(i int) float64 {
	if i == 0 {
		return a.Requests
	}
	return a.Tokens
}

// setDim sets dimension i.
func (a *Amount) setDim(i int, v float64) {
	if i == 0 {
		a.Requests = v
	} else {
		a.Tokens = v
	}
}

// dims is the number of dimensions of an Amount.
const dims = 2

// Limit describes one bucket with two dimensions.
type Limit struct {
	// RPM and TPM are the sustained rates per minute. Zero means that
	// dimension is unlimited.
	RPM, TPM float64
	// BurstRequests and BurstTokens are the bucket's capacity per dimension.
	// Each must be > 0 when its rate is > 0.
	BurstRequests, BurstTokens float64
}

// NewLimit is a bucket of the given per-minute rates holding burst of
// them: time at the rate, at least one request and one token.
func NewLimit(rpm, tpm float64, burst time.Duration) Limit {
	return Limit{
		RPM: rpm, TPM: tpm,
		BurstRequests: max(1, rpm/60*burst.Seconds()),
		BurstTokens:   max(1, tpm/60*burst.Seconds()),
	}
}

// Capacity is the bucket's capacity per dimension.
func (l Limit) Capacity() Amount {
	return Amount{Requests: l.BurstRequests, Tokens: l.BurstTokens}
}

// Validate returns an error matching [ErrInvalidLimit] when a rate or burst
// is negative or not finite, or when a limited dimension has no capacity.
func (l Limit) Validate() error {
	for i := range dims {
		rate, burst := l.ratePerMinute(i), l.Capacity().dim(i)
		name := [dims]string{"requests", "tokens"}[i]
		switch {
		case !finite(rate) || rate < 0:
			return fmt.Errorf("%w: %s rate %g", ErrInvalidLimit, name, rate)
		case !finite(burst) || burst < 0:
			return fmt.Errorf("%w: %s burst %g", ErrInvalidLimit, name, burst)
		case rate > 0 && burst == 0:
			return fmt.Errorf("%w: %s rate %g needs a burst > 0", ErrInvalidLimit, name, rate)
		}
	}
	return nil
}

// ratePerMinute returns the rate of dimension i.
func (l Limit) ratePerMinute(i int) float64 {
	if i == 0 {
		return l.RPM
	}
	return l.TPM
}

// limited reports whether dimension i has a rate, i.e. is limited at all.
func (l Limit) limited(i int) bool { return l.ratePerMinute(i) > 0 }

// refillOver returns what dimension i refills in ns nanoseconds. It
// multiplies before it divides so that whole numbers stay exact: 60 RPM over
// one second is exactly 1, which tests rely on.
func (l Limit) refillOver(i int, ns int64) float64 {
	return l.ratePerMinute(i) * float64(ns) / 60e9
}

// timeToRefill returns how long dimension i takes to refill amount, rounded
// up to the nanosecond so that waiting that long is always enough.
func (l Limit) timeToRefill(i int, amount float64) float64 {
	return math.Ceil(amount * 60e9 / l.ratePerMinute(i))
}

func finite(f float64) bool { return !math.IsNaN(f) && !math.IsInf(f, 0) }
