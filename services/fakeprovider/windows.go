package fakeprovider

import "time"

// This file is the "windows" enforcement model: sliding windows over the
// calls a key was admitted, as providers that count "the last minute" (or
// the last second) enforce their limits. It is pure: every method is given
// the time, and the type does no I/O and takes no lock; the limiter drives
// it from Config.Clock under its mutex.

// windowLimit is one window of a key with the limits the key may really
// use there (OtherUse taken off). A zero limit leaves that dimension
// unlimited in this window.
type windowLimit struct {
	span     time.Duration
	requests int64
	tokens   int64
}

// slidingWindows counts one key's admissions in each of its windows. A call
// is admitted at t iff in every window (t-span, t] there is room for one more
// request and for its charge; an admitted call is logged with its admission
// time and its charge, which settle later replaces with what it used.
//
// The log holds the calls admitted within the longest window, oldest first,
// each once whatever the number of windows; every window keeps the index of
// its oldest entry and the sum of its tokens, so that admission is O(number
// of windows) amortized. Its size is bounded by what the longest window
// admits: at most its request limit when it limits requests.
type slidingWindows struct {
	// id tells logs apart, so that a call admitted under one log is never
	// settled into another (after a Reset, or a key removed and added
	// again). A log carried over to a key's new windows keeps its id.
	id      uint64
	windows []windowCount
	log     []logEntry
	first   uint64    // sequence number of log[0]; entries are numbered in order
	last    time.Time // the latest time seen; an earlier one is taken as this
}

type windowCount struct {
	windowLimit
	head int   // log[head:] is inside the window
	sum  int64 // tokens counted for log[head:]
}

type logEntry struct {
	at     time.Time
	tokens int64
}

// verdict is the outcome of one admission.
type verdict struct {
	ok bool
	// limitedBy is "requests" or "tokens" for a refused call: "requests"
	// when some window has no room for one more request.
	limitedBy string
	// tooLarge says the charge is more than some window's whole token
	// limit, which no wait can make fit; limit is that limit.
	tooLarge bool
	limit    int64
	// wait is how long from now until the call would be admitted (fit) or
	// until the refusing windows hold nothing they hold now (reset),
	// assuming nothing else is admitted or settled meanwhile.
	wait time.Duration
}

// newSlidingWindows returns empty windows for limits, leaving out those that
// limit nothing; nil when none is left, as a key with no limit needs no log.
func newSlidingWindows(id uint64, limits []windowLimit) *slidingWindows {
	w := &slidingWindows{id: id}
	for _, l := range limits {
		if l.requests > 0 || l.tokens > 0 {
			w.windows = append(w.windows, windowCount{windowLimit: l})
		}
	}
	if len(w.windows) == 0 {
		return nil
	}
	return w
}

// advance moves every window to now and drops the entries no window holds
// any more. It returns the time the windows are at: now, or the latest time
// seen if the clock stepped back.
func (w *slidingWindows) advance(now time.Time) time.Time {
	if now.Before(w.last) {
		now = w.last
	}
	w.last = now
	drop := len(w.log)
	for i := range w.windows {
		c := &w.windows[i]
		// An entry at exactly now-span has left: windows are (t-span, t].
		cutoff := now.Add(-c.span)
		for c.head < len(w.log) && !w.log[c.head].at.After(cutoff) {
			c.sum -= w.log[c.head].tokens
			c.head++
		}
		drop = min(drop, c.head)
	}
	if drop > 0 {
		// Reslicing drops the prefix; append reallocates once the array is
		// used up, copying only what is live, so memory stays within twice
		// the live entries.
		w.log = w.log[drop:]
		w.first += uint64(drop)
		for i := range w.windows {
			w.windows[i].head -= drop
		}
	}
	return now
}

// count is the number of calls window c holds.
func (w *slidingWindows) count(c *windowCount) int64 { return int64(len(w.log) - c.head) }

// admit logs a call charging tokens at now if every window has room for it,
// and changes nothing otherwise. seq identifies the call for settle. With
// reset, a refusal's wait is until the refusing windows are empty rather
// than until the call fits.
func (w *slidingWindows) admit(now time.Time, charge int64, reset bool) (v verdict, seq uint64) {
	now = w.advance(now)
	// First the charge that can never fit: waiting would not help it.
	for _, c := range w.windows {
		if c.tokens > 0 && charge > c.tokens {
			return verdict{limitedBy: "tokens", tooLarge: true, limit: c.tokens}, 0
		}
	}
	v.ok = true
	for i := range w.windows {
		c := &w.windows[i]
		reqOver := c.requests > 0 && w.count(c)+1 > c.requests
		tokOver := c.tokens > 0 && c.sum+charge > c.tokens
		if !reqOver && !tokOver {
			continue
		}
		v.ok = false
		if reqOver {
			v.limitedBy = "requests"
		} else if v.limitedBy == "" {
			v.limitedBy = "tokens"
		}
		v.wait = max(v.wait, w.wait(c, now, charge, reset))
	}
	if !v.ok {
		return v, 0
	}
	w.log = append(w.log, logEntry{at: now, tokens: charge})
	for i := range w.windows {
		w.windows[i].sum += charge // the new entry is inside every window
	}
	return v, w.first + uint64(len(w.log)-1)
}

// wait is how long from now until window c, which refuses a call charging
// tokens, would admit it (or, with reset, holds nothing it holds now): the
// instant the last entry that must leave is span old.
func (w *slidingWindows) wait(c *windowCount, now time.Time, charge int64, reset bool) time.Duration {
	k := len(w.log) - 1 // reset: until the newest entry has left
	if !reset {
		// The oldest entries leave first: enough of them for the request,
		// then for the tokens. A refusing window is not empty, and an
		// empty window admits any charge that is not too large, so k
		// stays within the log.
		k = c.head - 1
		if n := w.count(c); c.requests > 0 && n+1 > c.requests {
			k = c.head + int(n+1-c.requests) - 1
		}
		sum := c.sum
		for j := c.head; j <= k; j++ {
			sum -= w.log[j].tokens
		}
		for c.tokens > 0 && sum+charge > c.tokens {
			k++
			sum -= w.log[k].tokens
		}
	}
	return w.log[k].at.Add(c.span).Sub(now)
}

// settle replaces the charge of call seq with what it used, in every window
// that still holds it: a window counts a finished call's usage, at its
// admission time. A call that has left every window changes nothing.
func (w *slidingWindows) settle(seq uint64, used int64) {
	if seq < w.first || seq-w.first >= uint64(len(w.log)) {
		return
	}
	i := int(seq - w.first)
	d := used - w.log[i].tokens
	w.log[i].tokens = used
	for j := range w.windows {
		if c := &w.windows[j]; c.head <= i {
			c.sum += d
		}
	}
}

// views reports, for requests and for tokens, what the longest window
// limiting it has left (never negative) and how long until it is empty; nil
// for a dimension no window limits. The limit is left for the caller, which
// knows what the headers report.
func (w *slidingWindows) views(now time.Time) (requests, tokens *bucketView) {
	now = w.advance(now)
	var rq, tk *windowCount
	for i := range w.windows {
		c := &w.windows[i]
		if c.requests > 0 && (rq == nil || c.span > rq.span) {
			rq = c
		}
		if c.tokens > 0 && (tk == nil || c.span > tk.span) {
			tk = c
		}
	}
	if rq != nil {
		requests = &bucketView{remaining: max(0, rq.requests-w.count(rq)), reset: w.emptyIn(rq, now)}
	}
	if tk != nil {
		tokens = &bucketView{remaining: max(0, tk.tokens-tk.sum), reset: w.emptyIn(tk, now)}
	}
	return requests, tokens
}

// emptyIn is how long until window c holds nothing: until its newest entry,
// the log's newest, is span old.
func (w *slidingWindows) emptyIn(c *windowCount, now time.Time) time.Duration {
	if w.count(c) == 0 {
		return 0
	}
	return w.log[len(w.log)-1].at.Add(c.span).Sub(now)
}

// carry takes over what old has logged, for a key whose limits changed
// while it was counting: the new windows count the calls already admitted,
// so that changing a limit neither forgets them nor double counts them, and
// calls in flight still settle here. A window longer than any of old's sees
// only what old kept, the calls of its longest window.
func (w *slidingWindows) carry(old *slidingWindows) {
	w.id = old.id
	w.log = old.log // old is discarded
	w.first, w.last = old.first, old.last
	var total int64
	for _, e := range w.log {
		total += e.tokens
	}
	for i := range w.windows {
		w.windows[i].head, w.windows[i].sum = 0, total
	}
	w.advance(w.last)
}
