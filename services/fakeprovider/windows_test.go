package fakeprovider

import (
	"testing"
	"time"
)

var w0 = time.Date(2025, 6, 1, 12, 0, 0, 0, time.UTC)

func at(d time.Duration) time.Time { return w0.Add(d) }

// mustAdmit admits a call or fails the test.
func mustAdmit(t *testing.T, w *slidingWindows, now time.Time, charge int64) uint64 {
	t.Helper()
	v, seq := w.admit(now, charge, false)
	if !v.ok {
		t.Fatalf("at +%v, charge %d: refused by %s (wait %v), want admitted", now.Sub(w0), charge, v.limitedBy, v.wait)
	}
	return seq
}

// mustRefuse checks that a call is refused by the given dimension with
// the given wait, and that the refusal logged nothing.
func mustRefuse(t *testing.T, w *slidingWindows, now time.Time, charge int64, reset bool, by string, wait time.Duration) {
	t.Helper()
	before := len(w.log)
	v, _ := w.admit(now, charge, reset)
	if v.ok || v.tooLarge || v.limitedBy != by || v.wait != wait {
		t.Fatalf("at +%v, charge %d (reset %v): ok %v tooLarge %v by %q wait %v; want refused by %s, wait %v",
			now.Sub(w0), charge, reset, v.ok, v.tooLarge, v.limitedBy, v.wait, by, wait)
	}
	if len(w.log) != before {
		t.Fatalf("a refused call was logged: %d entries, want %d", len(w.log), before)
	}
}

func TestWindowsBoundary(t *testing.T) {
	// 10 per second, admitted 100ms apart: all fit, the 11th within the
	// same second does not, and the oldest leaves exactly a second after
	// it was admitted ((t-1s, t] does not hold t-1s).
	w := newSlidingWindows(1, []windowLimit{{span: time.Second, requests: 10}})
	for i := range 10 {
		mustAdmit(t, w, at(time.Duration(i)*100*time.Millisecond), 1)
	}
	mustRefuse(t, w, at(950*time.Millisecond), 1, false, "requests", 50*time.Millisecond)
	// Reset: until the window holds nothing it holds now, the newest
	// entry (+900ms) a second old.
	mustRefuse(t, w, at(950*time.Millisecond), 1, true, "requests", 950*time.Millisecond)
	mustRefuse(t, w, at(time.Second-time.Nanosecond), 1, false, "requests", time.Nanosecond)
	mustAdmit(t, w, at(time.Second), 1)
	// (0, 1s] now holds +100ms..+1s: full again, until +100ms leaves.
	mustRefuse(t, w, at(time.Second), 1, false, "requests", 100*time.Millisecond)
	mustAdmit(t, w, at(1100*time.Millisecond), 1)
}

func TestWindowsTokens(t *testing.T) {
	w := newSlidingWindows(1, []windowLimit{{span: time.Minute, tokens: 100}})
	mustAdmit(t, w, at(0), 50)
	mustAdmit(t, w, at(10*time.Second), 30)
	// 80 counted: 30 more fits once the 50 leaves (at +60s), 10 does not
	// have to wait.
	mustRefuse(t, w, at(20*time.Second), 30, false, "tokens", 40*time.Second)
	// Reset waits for the newest (+10s) to leave.
	mustRefuse(t, w, at(20*time.Second), 30, true, "tokens", 50*time.Second)
	// Several of the oldest must leave: 90 needs both gone.
	mustRefuse(t, w, at(20*time.Second), 90, false, "tokens", 50*time.Second)
	mustAdmit(t, w, at(20*time.Second), 20)
	if _, tok := w.views(at(20 * time.Second)); tok.remaining != 0 {
		t.Errorf("remaining %d, want 0", tok.remaining)
	}
}

func TestWindowsSettleReplacesCharge(t *testing.T) {
	w := newSlidingWindows(1, []windowLimit{{span: time.Minute, tokens: 100}, {span: time.Second, tokens: 90}})
	a := mustAdmit(t, w, at(0), 80)
	// Both windows refuse: the call fits once the minute lets 80 go.
	mustRefuse(t, w, at(0), 30, false, "tokens", time.Minute)
	// The call used 20: both windows now count 20 at its admission time.
	w.settle(a, 20)
	mustAdmit(t, w, at(0), 30)
	if _, tok := w.views(at(0)); tok.remaining != 50 {
		t.Errorf("1m window has %d left, want 100-20-30 = 50", tok.remaining)
	}
	// Using more than reserved counts what was used.
	b := mustAdmit(t, w, at(0), 10)
	w.settle(b, 40)
	if _, tok := w.views(at(0)); tok.remaining != 10 {
		t.Errorf("1m window has %d left, want 100-20-30-40 = 10", tok.remaining)
	}
	// Once the 1s window has let the calls go, settling one changes only
	// the windows that still hold it.
	c := mustAdmit(t, w, at(time.Second), 10) // the 1s window holds only c
	w.settle(a, 0)
	if got := w.windows[1].sum; got != 10 {
		t.Errorf("1s window sum %d after settling a call it no longer holds, want 10", got)
	}
	if got := w.windows[0].sum; got != 0+30+40+10 {
		t.Errorf("1m window sum %d, want 80", got)
	}
	w.settle(c, 5)
	if w.windows[0].sum != 75 || w.windows[1].sum != 5 {
		t.Errorf("sums %d and %d after settling c to 5, want 75 and 5", w.windows[0].sum, w.windows[1].sum)
	}
	// A call that has left every window settles into nothing.
	w.advance(at(2 * time.Minute))
	w.settle(a, 1000)
	w.settle(c, 1000)
	if len(w.log) != 0 || w.windows[0].sum != 0 || w.windows[1].sum != 0 {
		t.Errorf("after every call left: %d entries, sums %d and %d", len(w.log), w.windows[0].sum, w.windows[1].sum)
	}
}

func TestWindowsTooLarge(t *testing.T) {
	w := newSlidingWindows(1, []windowLimit{{span: time.Second, requests: 5, tokens: 100}, {span: time.Minute, tokens: 1000}})
	mustAdmit(t, w, at(0), 100) // exactly the whole limit fits an empty window
	for _, now := range []time.Time{at(0), at(time.Hour)} {
		v, _ := w.admit(now, 101, false)
		if v.ok || !v.tooLarge || v.limit != 100 || v.limitedBy != "tokens" || v.wait != 0 {
			t.Errorf("101 tokens over a 100-token window: %+v, want too large with limit 100", v)
		}
	}
	if len(w.log) != 0 { // the hour dropped the first call; nothing was added
		t.Errorf("%d entries after refusals", len(w.log))
	}
	// Too large is told before a full window: waiting would not help.
	for range 5 {
		mustAdmit(t, w, at(time.Hour), 0)
	}
	if v, _ := w.admit(at(time.Hour), 101, false); !v.tooLarge {
		t.Errorf("too large on a full window: %+v", v)
	}
}

func TestWindowsSeveral(t *testing.T) {
	// 10 per second and 15 per minute: a second's burst of 10, then the
	// minute refuses 5 more.
	w := newSlidingWindows(1, []windowLimit{{span: time.Second, requests: 10}, {span: time.Minute, requests: 15}})
	for range 10 {
		mustAdmit(t, w, at(0), 1)
	}
	mustRefuse(t, w, at(500*time.Millisecond), 1, false, "requests", 500*time.Millisecond)
	for range 5 {
		mustAdmit(t, w, at(time.Second), 1)
	}
	// Full in the minute: room for one once the first of +0 leaves.
	mustRefuse(t, w, at(2*time.Second), 1, false, "requests", 58*time.Second)
	// Reset: the refusing minute empties when +1s is a minute old. The 1s
	// window (empty at +2s) does not refuse.
	mustRefuse(t, w, at(2*time.Second), 1, true, "requests", 59*time.Second)
	mustAdmit(t, w, at(time.Minute), 1)
	// Both refuse at once: the wait is the longer.
	w = newSlidingWindows(1, []windowLimit{{span: time.Second, requests: 2}, {span: time.Minute, requests: 2}})
	mustAdmit(t, w, at(0), 0)
	mustAdmit(t, w, at(0), 0)
	mustRefuse(t, w, at(0), 0, false, "requests", time.Minute)
	// A refusal on requests in one window and tokens in another is told
	// as requests.
	w = newSlidingWindows(1, []windowLimit{{span: time.Second, tokens: 10}, {span: time.Minute, requests: 1}})
	mustAdmit(t, w, at(0), 10)
	mustRefuse(t, w, at(0), 10, false, "requests", time.Minute)
}

func TestWindowsViews(t *testing.T) {
	w := newSlidingWindows(1, []windowLimit{
		{span: time.Second, requests: 10, tokens: 1000},
		{span: time.Minute, requests: 600, tokens: 60_000},
	})
	if req, tok := w.views(at(0)); req.remaining != 600 || req.reset != 0 || tok.remaining != 60_000 || tok.reset != 0 {
		t.Errorf("empty windows: %+v %+v", req, tok)
	}
	mustAdmit(t, w, at(0), 500)
	mustAdmit(t, w, at(10*time.Second), 700)
	// The longest window: 2 requests and 1,200 tokens in it, empty once
	// +10s is a minute old.
	req, tok := w.views(at(15 * time.Second))
	if req.remaining != 598 || tok.remaining != 58_800 || req.reset != 55*time.Second || tok.reset != 55*time.Second {
		t.Errorf("views at +15s: requests %+v, tokens %+v", req, tok)
	}
	// A dimension no window limits is not reported.
	w = newSlidingWindows(1, []windowLimit{{span: time.Second, requests: 10}, {span: time.Minute, tokens: 100}})
	mustAdmit(t, w, at(0), 150-100) // 50
	req, tok = w.views(at(0))
	if req == nil || tok == nil || req.remaining != 9 || tok.remaining != 50 || req.reset != time.Second || tok.reset != time.Minute {
		t.Errorf("requests from the 1s window and tokens from the 1m: %+v %+v", req, tok)
	}
	if newSlidingWindows(1, []windowLimit{{span: time.Second}}) != nil {
		t.Error("windows that limit nothing need no log")
	}
	// Usage beyond the limit reports nothing left, not a negative count.
	w = newSlidingWindows(1, []windowLimit{{span: time.Minute, tokens: 100}})
	w.settle(mustAdmit(t, w, at(0), 10), 300)
	if _, tok := w.views(at(0)); tok.remaining != 0 {
		t.Errorf("remaining %d after using more than the limit, want 0", tok.remaining)
	}
}

func TestWindowsClockStepsBack(t *testing.T) {
	w := newSlidingWindows(1, []windowLimit{{span: time.Second, requests: 2}})
	mustAdmit(t, w, at(5*time.Second), 0)
	// An earlier reading counts at the latest time seen: the window does
	// not reopen, and the log stays in order.
	mustAdmit(t, w, at(0), 0)
	mustRefuse(t, w, at(0), 0, false, "requests", time.Second)
	mustAdmit(t, w, at(6*time.Second), 0)
}

func TestWindowsCarry(t *testing.T) {
	old := newSlidingWindows(7, []windowLimit{{span: time.Minute, requests: 100, tokens: 1000}})
	a := mustAdmit(t, old, at(0), 100)
	mustAdmit(t, old, at(30*time.Second), 200)
	// New limits: a 1s window and a tighter minute, counting the calls
	// already admitted.
	w := newSlidingWindows(8, []windowLimit{{span: time.Second, requests: 5}, {span: time.Minute, requests: 3, tokens: 350}})
	w.carry(old)
	if w.id != 7 {
		t.Errorf("carried log id %d, want the old one, 7", w.id)
	}
	mustRefuse(t, w, at(30*time.Second), 100, false, "tokens", 30*time.Second)
	mustAdmit(t, w, at(30*time.Second), 50)
	mustRefuse(t, w, at(30*time.Second), 0, false, "requests", 30*time.Second)
	// A call admitted before the change settles into the new windows.
	w.settle(a, 0)
	if _, tok := w.views(at(30 * time.Second)); tok.remaining != 100 {
		t.Errorf("after settling the carried call to 0, %d tokens left, want 350-200-50 = 100", tok.remaining)
	}
}

func TestWindowsMemory(t *testing.T) {
	w := newSlidingWindows(1, []windowLimit{{span: time.Second, requests: 1000}, {span: 100 * time.Millisecond, requests: 100}})
	for i := range 100_000 {
		mustAdmit(t, w, at(time.Duration(i)*time.Millisecond), 1)
	}
	if len(w.log) != 1000 || cap(w.log) > 4000 {
		t.Errorf("log holds %d entries in %d, want the 1,000 of the last second", len(w.log), cap(w.log))
	}
}
