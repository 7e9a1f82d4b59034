package executor

import (
	"context"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
)

// forgetCanceled is how long a cancellation is remembered for work that
// has not reached this executor yet.
const forgetCanceled = 15 * time.Minute

// cancels tracks the clients' cancellations (sluice.cancel.<team>.<id>):
// the calls this executor is running, to close their provider requests,
// and the calls canceled lately, so that work arriving after its
// cancellation is never sent. It is safe for concurrent use.
type cancels struct {
	mu      sync.Mutex
	running map[string]*running
	gone    map[string]time.Time
}

type running struct {
	cancel   context.CancelFunc
	canceled bool
}

func newCancels() *cancels {
	return &cancels{running: map[string]*running{}, gone: map[string]time.Time{}}
}

// onCancel takes a cancellation message.
func (c *cancels) onCancel(m *nats.Msg) {
	id := m.Subject[strings.LastIndexByte(m.Subject, '.')+1:]
	now := time.Now()
	c.mu.Lock()
	defer c.mu.Unlock()
	for k, at := range c.gone {
		if now.Sub(at) > forgetCanceled {
			delete(c.gone, k)
		}
	}
	c.gone[id] = now
	if r, ok := c.running[id]; ok {
		r.canceled = true
		r.cancel()
	}
}

// canceled reports whether the call was canceled.
func (c *cancels) canceled(id string) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	_, ok := c.gone[id]
	return ok
}

// run registers a running call whose request cancel closes. It returns
// whether a cancellation came while it ran, and the function that
// unregisters it.
func (c *cancels) run(id string, cancel context.CancelFunc) (wasCanceled func() bool, done func()) {
	r := &running{cancel: cancel}
	c.mu.Lock()
	c.running[id] = r
	c.mu.Unlock()
	return func() bool {
			c.mu.Lock()
			defer c.mu.Unlock()
			return r.canceled
		}, func() {
			c.mu.Lock()
			defer c.mu.Unlock()
			if c.running[id] == r {
				delete(c.running, id)
			}
		}
}
