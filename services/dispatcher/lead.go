package dispatcher

import (
	"sync"
	"time"
)

// Admitted work takes a moment to reach its region's executors: the
// publish, JetStream, the executor's pull. A call placed at once on an
// idle schedule would find its executor past its send time by that much,
// eating into the jitter the pace leaves for the way to the provider. So
// each call's send time is no sooner than its region's lead after its
// admission: what executors report the way takes (AttemptDone.ReceivedAt
// against the admission time), averaged, and at most half the jitter. On
// a busy schedule send times are ahead anyway, and the lead costs
// nothing; on an idle one it costs the call about the spread of the way.

const (
	// initialLead is the lead of a region no executor has reported from.
	initialLead = time.Millisecond
	// leadWeight is the weight of each new report in the average.
	leadWeight = 0.05
)

// leads is the lead of each region; safe for concurrent use.
type leads struct {
	mu       sync.Mutex
	byRegion map[string]time.Duration
}

func newLeads() *leads { return &leads{byRegion: map[string]time.Duration{}} }

// of is region's lead, at most limit.
func (l *leads) of(region string, limit time.Duration) time.Duration {
	l.mu.Lock()
	defer l.mu.Unlock()
	lead, ok := l.byRegion[region]
	if !ok {
		lead = initialLead
	}
	return min(max(lead, 0), limit)
}

// note adds one report of how long work took to reach an executor of
// region. Absurd values (clocks far apart, a report of a redelivery)
// are bounded by what of returns.
func (l *leads) note(region string, took time.Duration) {
	l.mu.Lock()
	defer l.mu.Unlock()
	lead, ok := l.byRegion[region]
	if !ok {
		lead = initialLead
	}
	took = min(max(took, 0), time.Second)
	l.byRegion[region] = lead + time.Duration(leadWeight*float64(took-lead))
}

// leadOf is how soon after admission a call to region may be sent.
func (d *Dispatcher) leadOf(region string) time.Duration {
	return d.leads.of(region, d.cfg.Shared.Load().Admission.Jitter/2)
}
