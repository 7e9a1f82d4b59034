package fakeprovider

import (
	"maps"
	"sync"
)

// ClientRequestIDHeader is the header, documented by OpenAI, in which a
// client sends an id of its own for a request. sluice's executors send the
// call's id in it, so that the fake can count how many requests each call
// cost at the boundary, retries included.
const ClientRequestIDHeader = "X-Client-Request-Id"

// Bounds on the ids counted, so that a client sending a new id with every
// request cannot grow the fake without limit: at most MaxCallIDs distinct
// ids, each at most MaxCallIDLen bytes. A request beyond them is counted in
// CallCounts.Overflow instead.
const (
	MaxCallIDs   = 1_000_000
	MaxCallIDLen = 512
)

// CallCounts is how many requests to the metered endpoints carried each
// X-Client-Request-Id value, whatever their outcome (401, 400 and 429
// included): every request counted in Counters.Received that carries the
// header is counted here once.
type CallCounts struct {
	Requests map[string]int64 `json:"requests"`
	// Overflow counts the requests whose id is not in Requests: a new id
	// once MaxCallIDs ids are counted, or one longer than MaxCallIDLen.
	Overflow int64 `json:"overflow"`
}

// callCounter counts requests by client request id, within its bounds.
type callCounter struct {
	mu       sync.Mutex
	maxIDs   int
	maxLen   int
	ids      map[string]int64
	overflow int64
}

func newCallCounter(maxIDs, maxLen int) *callCounter {
	return &callCounter{maxIDs: maxIDs, maxLen: maxLen, ids: make(map[string]int64)}
}

// count counts one request carrying id; "" (no header) is not counted.
func (c *callCounter) count(id string) {
	if id == "" {
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if _, known := c.ids[id]; !known && (len(c.ids) >= c.maxIDs || len(id) > c.maxLen) {
		c.overflow++
		return
	}
	c.ids[id]++
}

func (c *callCounter) snapshot() CallCounts {
	c.mu.Lock()
	defer c.mu.Unlock()
	return CallCounts{Requests: maps.Clone(c.ids), Overflow: c.overflow}
}

func (c *callCounter) reset() {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.ids, c.overflow = make(map[string]int64), 0
}
