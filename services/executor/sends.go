package executor

import (
	"sync"
	"time"

	"github.com/sluicehq/sluice/services/health"
)

// A refusal lowers a deployment's limits by the share the provider
// refused of what was sent to it lately (see health.Observation.Sent): a
// provider that allows a fifth less refuses about a fifth, a request that
// reached it late is one refusal among many requests. So each executor
// counts, per deployment, the requests it sends and the refusals it gets
// back, in buckets of sendBucket over health.StrictSample. Requests still
// waiting for their answers count as sent and not refused: a refusal
// comes back at once, an answer may take the model's time.
const sendBucket = 100 * time.Millisecond

const sendBuckets = int(health.StrictSample / sendBucket)

// sendCounts is what one executor sent its deployments lately, and what
// they refused; the zero value is empty, and it is safe for concurrent
// use. Deployments come from the configuration, so the map stays bounded.
type sendCounts struct {
	mu    sync.Mutex
	byDep map[string]*sendRing
}

// sendRing holds a deployment's counts per bucket: slot i counts bucket
// number at[i] (Unix time / sendBucket).
type sendRing struct {
	at            [sendBuckets]int64
	sent, refused [sendBuckets]int
}

// sent counts a request sent to deployment at t.
func (c *sendCounts) sent(deployment string, t time.Time) {
	c.add(deployment, t, 1, 0)
}

// refused counts a refusal by deployment, answered at t.
func (c *sendCounts) refused(deployment string, t time.Time) {
	c.add(deployment, t, 0, 1)
}

func (c *sendCounts) add(deployment string, t time.Time, sent, refused int) {
	n := t.UnixNano() / int64(sendBucket)
	i := int(n % int64(sendBuckets))
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.byDep == nil {
		c.byDep = map[string]*sendRing{}
	}
	r, ok := c.byDep[deployment]
	if !ok {
		r = &sendRing{}
		c.byDep[deployment] = r
	}
	if r.at[i] != n {
		r.at[i], r.sent[i], r.refused[i] = n, 0, 0
	}
	r.sent[i] += sent
	r.refused[i] += refused
}

// since returns the requests sent to deployment from from on (at most
// health.StrictSample before now, by whole buckets), and the refusals.
func (c *sendCounts) since(deployment string, from, now time.Time) (sent, refused int) {
	if oldest := now.Add(-health.StrictSample); from.Before(oldest) {
		from = oldest
	}
	first := from.UnixNano() / int64(sendBucket)
	c.mu.Lock()
	defer c.mu.Unlock()
	r, ok := c.byDep[deployment]
	if !ok {
		return 0, 0
	}
	for i := range r.at {
		if r.at[i] >= first {
			sent += r.sent[i]
			refused += r.refused[i]
		}
	}
	return sent, refused
}
