package dispatcher

import (
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
)

// forgetCanceled is how long a cancellation is remembered for a call not
// yet read from the stream.
const forgetCanceled = 15 * time.Minute

// canceledCalls remembers clients' cancellations (sluice.cancel.<team>.<id>)
// for calls this dispatcher has not read yet. It is safe for concurrent use.
type canceledCalls struct {
	mu   sync.Mutex
	gone map[string]time.Time
}

// onCancel takes a cancellation: a waiting call ends at once with code
// canceled, and a call read later is answered so without being admitted.
func (d *Dispatcher) onCancel(m *nats.Msg) {
	id := m.Subject[strings.LastIndexByte(m.Subject, '.')+1:]
	now := d.cfg.Clock()
	d.canceled.mu.Lock()
	for k, at := range d.canceled.gone {
		if now.Sub(at) > forgetCanceled {
			delete(d.canceled.gone, k)
		}
	}
	d.canceled.gone[id] = now
	d.canceled.mu.Unlock()
	d.post(callCanceled{id})
}

// wasCanceled reports whether a client canceled the call.
func (d *Dispatcher) wasCanceled(id string) bool {
	d.canceled.mu.Lock()
	defer d.canceled.mu.Unlock()
	_, ok := d.canceled.gone[id]
	return ok
}
