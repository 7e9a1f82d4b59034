package fakeprovider

import (
	"sync"
	"time"
)

// unitsPerToken is the fixed-point scale of bucket levels: one request or
// token is worth 60,000,000 units, the microseconds in a minute, so that a
// bucket for a limit of L per minute gains exactly L units per microsecond.
// Integer levels keep refills exact; with float64 levels, 1,000 RPM refilled
// over 60ms can come out as 0.99999 of a request and refuse a call that the
// limit allows, which would make boundary tests flaky for no real reason.
const unitsPerToken = int64(time.Minute / time.Microsecond)

// bucket is one continuously refilled token bucket.
type bucket struct {
	limit    int64     // per minute; also the units gained per microsecond
	capacity int64     // units
	level    int64     // units; negative while the key is in debt
	last     time.Time // the instant up to which level has been refilled
}

// newBucket returns a full bucket for limit per minute enforced over
// quantum: capacity limit*quantum/1m, never below one whole unit of what
// it meters, so that a small limit still admits something.
func newBucket(limit int64, quantum time.Duration, now time.Time) *bucket {
	capacity := limit * int64(quantum/time.Microsecond)
	if capacity < unitsPerToken {
		capacity = unitsPerToken
	}
	return &bucket{limit: limit, capacity: capacity, level: capacity, last: now}
}

// refill brings the level up to now. Only whole microseconds are credited
// and last advances by exactly what was credited, so no time is lost to
// rounding however often refill runs. A clock that steps back is ignored.
func (b *bucket) refill(now time.Time) {
	if !now.After(b.last) {
		return
	}
	missing := b.capacity - b.level
	if missing <= 0 {
		b.last = now
		return
	}
	elapsed := int64(now.Sub(b.last) / time.Microsecond)
	if elapsed >= ceilDiv(missing, b.limit) {
		b.level, b.last = b.capacity, now
		return
	}
	b.level += elapsed * b.limit
	b.last = b.last.Add(time.Duration(elapsed) * time.Microsecond)
}

// allows reports whether a charge of units may be admitted now. A charge
// larger than the whole capacity could never be covered; like OpenAI, the
// fake then admits it when the bucket is full and lets the level go into
// debt, which later refill pays back.
func (b *bucket) allows(units int64) bool {
	return b.level >= units || (units > b.capacity && b.level >= b.capacity)
}

// wait is how long from now until allows(units) holds, assuming nothing
// else is taken meanwhile.
func (b *bucket) wait(units int64, now time.Time) time.Duration {
	target := min(units, b.capacity)
	if b.level >= target {
		return 0
	}
	micros := ceilDiv(target-b.level, b.limit)
	return max(0, b.last.Add(time.Duration(micros)*time.Microsecond).Sub(now))
}

// remaining is the whole number of requests or tokens left, never negative.
func (b *bucket) remaining() int64 {
	return max(0, b.level/unitsPerToken)
}

// adjust adds units (negative to charge). A refund never fills the bucket
// beyond its capacity: unused reservations do not create burst.
func (b *bucket) adjust(units int64) {
	b.level += units
	if b.level > b.capacity {
		b.level = b.capacity
	}
}

// view is what the x-ratelimit-* headers report of the bucket.
func (b *bucket) view(now time.Time) *bucketView {
	return &bucketView{limit: b.limit, remaining: b.remaining(), reset: b.wait(b.capacity, now)}
}

func ceilDiv(a, b int64) int64 { return (a + b - 1) / b }

// bucketView is a snapshot of one bucket for the response headers; nil
// when the key has no limit in that dimension.
type bucketView struct {
	limit     int64         // per minute, as configured
	remaining int64         // whole units left after this request
	reset     time.Duration // until the bucket is full again
}

// rateView is a snapshot of both buckets of a key.
type rateView struct {
	requests, tokens *bucketView
}

// keyState is one key's limits and their state: buckets, or windows.
type keyState struct {
	cfg      KeyConfig
	model    keyModel
	requests *bucket         // bucket model; nil: no request limit
	tokens   *bucket         // bucket model; nil: no token limit
	win      *slidingWindows // windows model; nil: no window limits anything
}

// view is what the headers report: the configured per-minute limits, and
// what the buckets or the longest windows have left of the capacity the
// key really has.
func (ks *keyState) view(now time.Time) rateView {
	var v rateView
	if ks.win != nil {
		v.requests, v.tokens = ks.win.views(now)
	}
	if ks.requests != nil {
		v.requests = ks.requests.view(now)
	}
	if ks.tokens != nil {
		v.tokens = ks.tokens.view(now)
	}
	if v.requests != nil {
		v.requests.limit = ks.model.shownRPM
	}
	if v.tokens != nil {
		v.tokens.limit = ks.model.shownTPM
	}
	return v
}

func (ks *keyState) refill(now time.Time) {
	if ks.requests != nil {
		ks.requests.refill(now)
	}
	if ks.tokens != nil {
		ks.tokens.refill(now)
	}
}

// limiter holds every key's buckets or windows behind one mutex: requests
// and tokens of a key must be checked and charged together, so that a call
// refused on tokens is not charged a request, and one lock keeps that
// simple. It is far from the bottleneck of an HTTP server.
type limiter struct {
	mu        sync.Mutex
	cfg       Config // validated; its enforcement fields are the keys' defaults
	now       func() time.Time
	quantum   time.Duration
	acceptAny bool
	defaults  KeyConfig
	keys      map[string]*keyState
	// gen counts resets. A ticket from before a reset must not refund into
	// the fresh, full buckets that the reset made.
	gen uint64
	// logs numbers window logs, so that a ticket settles only into the log
	// that admitted it.
	logs uint64
}

func newLimiter(cfg Config) *limiter {
	l := &limiter{
		cfg:       cfg,
		now:       cfg.Clock,
		quantum:   cfg.Quantum,
		acceptAny: cfg.AcceptAnyKey,
		defaults:  cfg.DefaultKey,
		keys:      make(map[string]*keyState, len(cfg.Keys)),
	}
	now := l.now()
	for k, kc := range cfg.Keys {
		l.keys[k] = l.newKeyState(kc, now)
	}
	return l
}

// newKeyState returns fresh state for kc: full buckets, or empty windows.
// kc has been validated against l.cfg.
func (l *limiter) newKeyState(kc KeyConfig, now time.Time) *keyState {
	m, _ := l.cfg.keyModel(kc)
	ks := &keyState{cfg: kc, model: m}
	if m.windows {
		l.logs++
		ks.win = newSlidingWindows(l.logs, m.limits)
		return ks
	}
	if m.rpm > 0 {
		ks.requests = newBucket(m.rpm, l.quantum, now)
	}
	if m.tpm > 0 {
		ks.tokens = newBucket(m.tpm, l.quantum, now)
	}
	return ks
}

// lookup returns the configuration of key, creating its buckets on first
// use when any key is accepted. ok is false for a key to refuse.
func (l *limiter) lookup(key string) (kc KeyConfig, ok bool) {
	if key == "" {
		return KeyConfig{}, false
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	ks, ok := l.keys[key]
	if !ok {
		if !l.acceptAny {
			return KeyConfig{}, false
		}
		ks = l.newKeyState(l.defaults, l.now())
		l.keys[key] = ks
	}
	return ks.cfg, true
}

// set installs or changes a key's limits. Bucket levels carry over,
// clamped to the new capacity, so that changing a limit mid-run neither
// forgives a debt nor hands out a fresh burst; windows keep counting the
// calls already admitted, which settle into them. A key that changes model
// starts the new one afresh: empty windows, or full buckets.
func (l *limiter) set(key string, kc KeyConfig) {
	l.mu.Lock()
	defer l.mu.Unlock()
	now := l.now()
	fresh := l.newKeyState(kc, now)
	if old, ok := l.keys[key]; ok {
		old.refill(now)
		carry(fresh.requests, old.requests)
		carry(fresh.tokens, old.tokens)
		if fresh.win != nil && old.win != nil {
			fresh.win.carry(old.win)
		}
	}
	l.keys[key] = fresh
}

func carry(to, from *bucket) {
	if to != nil && from != nil {
		to.level = min(from.level, to.capacity)
	}
}

func (l *limiter) remove(key string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	delete(l.keys, key)
}

// reset makes every bucket new and full.
func (l *limiter) reset() {
	l.mu.Lock()
	defer l.mu.Unlock()
	now := l.now()
	for k, ks := range l.keys {
		l.keys[k] = l.newKeyState(ks.cfg, now)
	}
	l.gen++
}

// peek reports a key's buckets without charging anything, for responses
// to calls refused before admission.
func (l *limiter) peek(key string) rateView {
	l.mu.Lock()
	defer l.mu.Unlock()
	ks, ok := l.keys[key]
	if !ok {
		return rateView{}
	}
	now := l.now()
	ks.refill(now)
	return ks.view(now)
}

// admission is the outcome of one call's admission.
type admission struct {
	ok bool
	at time.Time // the limiter clock's reading at admission
	// limitedBy is "requests" or "tokens" for a refused call: the first
	// bucket that could not cover it, requests checked first.
	limitedBy string
	// retryAfter is when both buckets would cover the call, or the wait
	// the windows hint.
	retryAfter time.Duration
	// tooLarge says the call's charge is more than a window's whole token
	// limit (wholeLimit, as the key may use it): no wait helps.
	tooLarge   bool
	wholeLimit int64
	// refused describes the limiting bucket, for the error message.
	refused *bucketView
	view    rateView
	ticket  ticket
}

// ticket is what settlement needs to know of an admitted call.
type ticket struct {
	key     string
	gen     uint64
	charged int64 // tokens
	// log and seq name the call in the windows that admitted it; log is 0
	// for a call admitted by buckets.
	log, seq uint64
}

// admit charges one request and tokens to key's buckets if both can cover
// them, and charges nothing otherwise.
func (l *limiter) admit(key string, tokens int64, arrived time.Time) admission {
	l.mu.Lock()
	defer l.mu.Unlock()
	// A call counts when it arrived, as a provider's front door counts it,
	// not when this server got round to it (reading and parsing its body).
	now := l.now()
	if !arrived.IsZero() && arrived.Before(now) {
		now = arrived
	}
	ks, ok := l.keys[key]
	if !ok { // removed since lookup; treat as unlimited rather than crash
		return admission{ok: true, at: now, ticket: ticket{key: key, gen: l.gen, charged: tokens}}
	}
	if ks.win != nil {
		return l.admitWindows(ks, key, tokens, now)
	}
	ks.refill(now)
	reqUnits, tokUnits := unitsPerToken, tokens*unitsPerToken
	reqOK := ks.requests == nil || ks.requests.allows(reqUnits)
	tokOK := ks.tokens == nil || ks.tokens.allows(tokUnits)
	if !reqOK || !tokOK {
		a := admission{at: now, view: ks.view(now)}
		if ks.requests != nil {
			a.retryAfter = ks.requests.wait(reqUnits, now)
		}
		if ks.tokens != nil {
			a.retryAfter = max(a.retryAfter, ks.tokens.wait(tokUnits, now))
		}
		if !reqOK {
			a.limitedBy, a.refused = "requests", a.view.requests
		} else {
			a.limitedBy, a.refused = "tokens", a.view.tokens
		}
		return a
	}
	if ks.requests != nil {
		ks.requests.adjust(-reqUnits)
	}
	if ks.tokens != nil {
		ks.tokens.adjust(-tokUnits)
	}
	return admission{ok: true, at: now, view: ks.view(now), ticket: ticket{key: key, gen: l.gen, charged: tokens}}
}

// admitWindows admits a call on a key enforcing windows.
func (l *limiter) admitWindows(ks *keyState, key string, tokens int64, now time.Time) admission {
	v, seq := ks.win.admit(now, tokens, ks.model.resetHint)
	a := admission{ok: v.ok, at: now, view: ks.view(now)}
	if v.ok {
		a.ticket = ticket{key: key, gen: l.gen, charged: tokens, log: ks.win.id, seq: seq}
		return a
	}
	a.limitedBy, a.retryAfter = v.limitedBy, v.wait
	a.tooLarge, a.wholeLimit = v.tooLarge, v.limit
	if v.limitedBy == "requests" {
		a.refused = a.view.requests
	} else {
		a.refused = a.view.tokens
	}
	return a
}

// settle squares an admitted call's token charge with what it actually
// used. In buckets the difference is refunded (capped at capacity) or,
// should the call have used more than it reserved, charged; in windows the
// usage replaces the charge, at the call's admission time. A call settles
// only into the state that admitted it: not after a Reset, nor into
// windows (buckets) that a SetKey changing model put in place of the
// buckets (windows) that charged it.
func (l *limiter) settle(t ticket, used int64) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if t.gen != l.gen {
		return
	}
	ks, ok := l.keys[t.key]
	if !ok {
		return
	}
	if t.log != 0 {
		if ks.win != nil && ks.win.id == t.log {
			ks.win.settle(t.seq, used)
		}
		return
	}
	if ks.tokens == nil {
		return
	}
	ks.tokens.refill(l.now())
	ks.tokens.adjust((t.charged - used) * unitsPerToken)
}
