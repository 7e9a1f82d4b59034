package fakeprovider

import (
	"testing"
	"time"
)

func newTestLimiter(clock *manualClock, quantum time.Duration, keys map[string]KeyConfig) *limiter {
	return newLimiter(Config{Clock: clock.Now, Quantum: quantum, Keys: keys}.withDefaults())
}

func TestBucketCapacity(t *testing.T) {
	tests := []struct {
		name    string
		limit   int64
		quantum time.Duration
		want    int64 // whole units
	}{
		{"a sixtieth of the minute per second", 600, time.Second, 10},
		{"60,000 RPM is 1,000 per second", 60_000, time.Second, 1000},
		{"a minute's quantum is the whole limit", 600, time.Minute, 600},
		{"100ms quantum", 6000, 100 * time.Millisecond, 10},
		{"below one is raised to one", 30, time.Second, 1},
		{"one per minute", 1, time.Second, 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			b := newBucket(tt.limit, tt.quantum, time.Now())
			if got := b.capacity / unitsPerToken; got != tt.want || b.capacity%unitsPerToken != 0 && tt.want != 1 {
				t.Errorf("capacity = %d units (%d whole), want %d", b.capacity, got, tt.want)
			}
			if b.level != b.capacity {
				t.Errorf("new bucket level %d, want full %d", b.level, b.capacity)
			}
		})
	}
}

func TestBucketRefill(t *testing.T) {
	clock := newManualClock()
	// 1,000 per minute over 1s: capacity 16.67, refilling one per 60ms.
	// With float levels, 60ms of refill can fall just short of one.
	b := newBucket(1000, time.Second, clock.Now())
	for b.allows(unitsPerToken) {
		b.adjust(-unitsPerToken)
	}
	b.adjust(-b.level) // the last two thirds of a request, to start at 0
	if got := b.remaining(); got != 0 {
		t.Fatalf("drained bucket has %d left", got)
	}
	for i := range 100 {
		if got := b.wait(unitsPerToken, clock.Now()); got != 60*time.Millisecond {
			t.Fatalf("step %d: wait = %v, want 60ms", i, got)
		}
		clock.Advance(59*time.Millisecond + 999*time.Microsecond)
		b.refill(clock.Now())
		if b.allows(unitsPerToken) {
			t.Fatalf("step %d: admitted 1µs early", i)
		}
		clock.Advance(time.Microsecond)
		b.refill(clock.Now())
		if !b.allows(unitsPerToken) {
			t.Fatalf("step %d: refused after exactly 60ms", i)
		}
		b.adjust(-unitsPerToken)
	}
	// Many small steps credit exactly what one big step would.
	for range 1000 {
		clock.Advance(700 * time.Nanosecond)
		b.refill(clock.Now())
	}
	if want := int64(700) * 1000; b.level != want {
		t.Errorf("level after 700µs in 0.7µs steps = %d units, want %d", b.level, want)
	}
	// The level never passes capacity.
	clock.Advance(time.Hour)
	b.refill(clock.Now())
	if b.level != b.capacity {
		t.Errorf("after an hour level = %d, want capacity %d", b.level, b.capacity)
	}
	if got := b.wait(b.capacity, clock.Now()); got != 0 {
		t.Errorf("full bucket reset = %v, want 0", got)
	}
}

func TestBucketDebt(t *testing.T) {
	clock := newManualClock()
	b := newBucket(600, time.Second, clock.Now()) // 10 per second, capacity 10
	big := 25 * unitsPerToken
	if !b.allows(big) {
		t.Fatal("an oversized charge must be admitted by a full bucket")
	}
	b.adjust(-big)
	if b.level != -15*unitsPerToken || b.remaining() != 0 {
		t.Fatalf("level %d remaining %d, want -15 tokens and 0", b.level/unitsPerToken, b.remaining())
	}
	// It takes 2.5s (25 tokens at 10/s) to be full again.
	if got := b.wait(big, clock.Now()); got != 2500*time.Millisecond {
		t.Errorf("wait for another oversized charge = %v, want 2.5s", got)
	}
	clock.Advance(2499 * time.Millisecond)
	b.refill(clock.Now())
	if b.allows(big) {
		t.Error("an oversized charge was admitted by a bucket that is not full")
	}
	if !b.allows(9 * unitsPerToken) {
		t.Error("9 tokens refused with 9.99 in the bucket")
	}
	clock.Advance(time.Millisecond)
	b.refill(clock.Now())
	if !b.allows(big) {
		t.Error("an oversized charge was refused by a full bucket")
	}
}

func TestLimiterAdmitChargesBothOrNothing(t *testing.T) {
	clock := newManualClock()
	l := newTestLimiter(clock, time.Second, map[string]KeyConfig{"k": {RPM: 600, TPM: 6000}}) // 10 req, 100 tok
	if a := l.admit("k", 60, time.Time{}); !a.ok {
		t.Fatal("first call refused")
	}
	a := l.admit("k", 60, time.Time{}) // 40 tokens left
	if a.ok || a.limitedBy != "tokens" {
		t.Fatalf("admission = ok %v by %q, want refused by tokens", a.ok, a.limitedBy)
	}
	if a.view.requests.remaining != 9 || a.view.tokens.remaining != 40 {
		t.Errorf("a refused call was charged: %d requests and %d tokens left, want 9 and 40",
			a.view.requests.remaining, a.view.tokens.remaining)
	}
	// 20 tokens short at 100/s.
	if a.retryAfter != 200*time.Millisecond {
		t.Errorf("retryAfter = %v, want 200ms", a.retryAfter)
	}
}

func TestLimiterSettle(t *testing.T) {
	tests := []struct {
		name    string
		charge  int64
		used    int64
		advance time.Duration
		reset   bool
		want    int64 // tokens left
	}{
		{"refund the unused reservation", 80, 30, 0, false, 100 - 30},
		{"exact use refunds nothing", 80, 80, 0, false, 100 - 80},
		{"using more than reserved is charged", 20, 50, 0, false, 100 - 50},
		{"refund capped at capacity", 80, 10, 700 * time.Millisecond, false, 100},
		{"a ticket from before a reset is void", 80, 10, 0, true, 100 - 50},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			clock := newManualClock()
			l := newTestLimiter(clock, time.Second, map[string]KeyConfig{"k": {TPM: 6000}})
			a := l.admit("k", tt.charge, time.Time{})
			if !a.ok {
				t.Fatal("refused")
			}
			clock.Advance(tt.advance)
			if tt.reset {
				l.reset()
				l.admit("k", 50, time.Time{})
			}
			l.settle(a.ticket, tt.used)
			if got := l.peek("k").tokens.remaining; got != tt.want {
				t.Errorf("tokens left = %d, want %d", got, tt.want)
			}
		})
	}
}

func TestLimiterSetKeyCarriesLevels(t *testing.T) {
	clock := newManualClock()
	l := newTestLimiter(clock, time.Second, map[string]KeyConfig{"k": {RPM: 600}}) // capacity 10
	for range 4 {
		l.admit("k", 0, time.Time{})
	}
	l.set("k", KeyConfig{RPM: 1200}) // capacity 20: no fresh burst
	if got := l.peek("k").requests.remaining; got != 6 {
		t.Errorf("after raising the limit %d left, want 6", got)
	}
	l.set("k", KeyConfig{RPM: 300}) // capacity 5: clamped at once
	if got := l.peek("k").requests.remaining; got != 5 {
		t.Errorf("after lowering the limit %d left, want 5", got)
	}
	l.set("k", KeyConfig{}) // unlimited
	if v := l.peek("k"); v.requests != nil || v.tokens != nil {
		t.Errorf("unlimited key still has buckets: %+v", v)
	}
}
