package messages

import "time"

// StateSubject is where every dispatcher announces its DispatcherState,
// about twice a second. Dispatchers read each other's (for the queue
// limits of teams, which span dispatchers), and `sluice status` reads them
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
}

// QueueState is the calls one team has waiting in one pool and tier.
type QueueState struct {
	Pool  string `json:"pool"`
	Tier  Tier   `json:"tier"`
	Team  string `json:"team"`
	Depth int    `json:"depth"`
	// OldestWaitMS is how long the oldest of them has waited.
	OldestWaitMS float64 `json:"oldest_wait_ms"`
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
