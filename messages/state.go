package messages

import "time"

// StateSubject is where every dispatcher announces its DispatcherState,
// about twice a second. Dispatchers read each other's (for the queue
// limits of teams, which span dispatchers, and to share a pool fairly
// whichever dispatcher holds which calls), and `sluice status` reads them
// all.
const StateSubject = "sluice.dispatchers.state"

// DispatcherState is one dispatcher's view of what it holds: its waiting
// calls per pool, tier and team, and its circuit breakers that are not
// closed.
type DispatcherState struct {
	Dispatcher string         `json:"dispatcher"`
	At         time.Time      `json:"at"`
	Queues     []QueueState   `json:"queues,omitempty"`
	Circuits   []CircuitState `json:"circuits,omitempty"`
	// Admitted counts the calls this dispatcher admitted since it started.
	Admitted uint64 `json:"admitted"`
	// Served is what this dispatcher admitted lately, per pool, tier and
	// team, as a decaying rate.
	Served []ServedRate `json:"served,omitempty"`
	// Hungry lists the deployments on which waiting calls were refused for
	// lack of capacity since the last announcement.
	Hungry []string `json:"hungry,omitempty"`
	// StalledRegions lists the regions none of whose executors takes work,
	// as this dispatcher sees them: routing avoids them.
	StalledRegions []string `json:"stalled_regions,omitempty"`
}

// ServedRate is how fast one team's calls of one pool and tier were
// admitted lately: calls per second, averaged over the last few seconds
// with exponentially decaying weights.
type ServedRate struct {
	Pool      string  `json:"pool"`
	Tier      Tier    `json:"tier"`
	Team      string  `json:"team"`
	PerSecond float64 `json:"per_second"`
}

// QueueState is the calls one team has waiting in one pool and tier.
type QueueState struct {
	Pool  string `json:"pool"`
	Tier  Tier   `json:"tier"`
	Team  string `json:"team"`
	Depth int    `json:"depth"`
	// OldestWaitMS is how long the oldest of them has waited.
	OldestWaitMS float64 `json:"oldest_wait_ms"`
	// Starved is set when some of them were refused for lack of capacity
	// since the last announcement: they would take capacity if they got
	// it.
	Starved bool `json:"starved,omitempty"`
}

// CircuitState is a circuit breaker that is open or half-open.
type CircuitState struct {
	// Scope is "deployment" or "region".
	Scope string `json:"scope"`
	Name  string `json:"name"`
	// State is "open" or "half_open".
	State     string    `json:"state"`
	OpenUntil time.Time `json:"open_until,omitzero"`
}
