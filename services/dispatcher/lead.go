package dispatcher

import (
	"math"
	"sync"
	"time"
)

// Admitted work takes a moment to reach its region's executors: the
// publish, JetStream, the executor's pull. A call placed at once on an
// idle schedule would find its executor past its send time by that much,
// and, past half the jitter, be handed back unsent. So each call's send
// time is no sooner than its region's lead after its admission: how long
// the way takes, learned from what executors report
// (AttemptDone.ReceivedAt against the admission time) as TCP learns its
// retransmission timeout, the smoothed time plus four times its smoothed
// deviation, so that few calls arrive later; at most half of
// admission.lease_ttl. On a busy schedule send times are ahead anyway and
// the lead costs nothing; on an idle one it costs the call about the
// spread of the way.

const (
	// initialLead is the lead of a region no executor has reported from.
	initialLead = 2 * time.Millisecond
	// leadGain and leadSpreadGain weigh each new report in the smoothed
	// time and deviation (RFC 6298's 1/8 and 1/4) when the way grows
	// longer or less steady; leadFallGain when it comes back. A backlog at
	// the executors makes the way look long (work waits in SLUICE_EXEC)
	// while it lasts; falling at 1/8 a report, the lead stayed at its cap
	// for the first fifty calls after it, each sent 50 ms late for nothing
	// (the throughput bench's added p99 at 200 calls/s after a burst of
	// 2,000 went from 4-7 ms to 50 ms).
	leadGain       = 0.125
	leadSpreadGain = 0.25
	leadFallGain   = 0.5
)

// leads is the lead of each region; safe for concurrent use.
type leads struct {
	mu       sync.Mutex
	byRegion map[string]*way
}

// way is what the reports say of one region's way: its smoothed time and
// smoothed deviation.
type way struct {
	took, spread float64 // seconds
}

func newLeads() *leads { return &leads{byRegion: map[string]*way{}} }

// of is region's lead, at most limit.
func (l *leads) of(region string, limit time.Duration) time.Duration {
	l.mu.Lock()
	defer l.mu.Unlock()
	w, ok := l.byRegion[region]
	if !ok {
		return min(initialLead, limit)
	}
	lead := time.Duration((w.took + 4*w.spread) * float64(time.Second))
	return min(max(lead, 0), limit)
}

// note adds one report of how long work took to reach an executor of
// region. Absurd values (clocks far apart) are bounded.
func (l *leads) note(region string, took time.Duration) {
	t := min(max(took, 0), time.Second).Seconds()
	l.mu.Lock()
	defer l.mu.Unlock()
	w, ok := l.byRegion[region]
	if !ok {
		l.byRegion[region] = &way{took: t, spread: t / 2}
		return
	}
	gain, spreadGain := leadGain, leadSpreadGain
	if t < w.took {
		gain = leadFallGain
	}
	dev := math.Abs(t - w.took)
	if dev < w.spread {
		spreadGain = leadFallGain
	}
	w.spread += spreadGain * (dev - w.spread)
	w.took += gain * (t - w.took)
}

// leadOf is how soon after admission a call to region may be sent.
func (d *Dispatcher) leadOf(region string) time.Duration {
	return d.leads.of(region, d.cfg.Shared.Load().Admission.LeaseTTL/2)
}
