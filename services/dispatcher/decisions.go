package dispatcher

import (
	"time"

	"github.com/sluicehq/sluice/messages"
	"github.com/sluicehq/sluice/services/config"
)

// What the scheduler decides (which call goes to which deployment, and
// when; which call is answered, with what) goes to a decider. A running
// dispatcher's carries each decision out at once: an admitted call's send
// time is near, so its work is published before the pass goes on. A test
// drives the scheduler event by event with one that records them, and
// reads what it decided with nothing carried out.
type decider interface {
	admitted(admission)
	answered(answer)
}

// admission: w goes to dep, to be sent at sendAt, under the
// configuration it was admitted by.
type admission struct {
	cfg    *config.Config
	w      *waiting
	dep    *config.Deployment
	sendAt time.Time
}

// answer: w ends with err, without being admitted.
type answer struct {
	w   *waiting
	err *messages.Error
}

// carrier carries decisions out: publishes admitted work, answers the
// rest.
type carrier struct{ d *Dispatcher }

func (c carrier) admitted(a admission) { c.d.dispatch(a.cfg, a.w, a.dep, a.sendAt) }
func (c carrier) answered(a answer)    { c.d.finishAsync(a.w, a.err) }

// decisions records decisions, in order.
type decisions struct {
	admissions []admission
	answers    []answer
}

func (r *decisions) admitted(a admission) { r.admissions = append(r.admissions, a) }
func (r *decisions) answered(a answer)    { r.answers = append(r.answers, a) }

// admitTo decides that w goes to dep at sendAt. Only the scheduler calls
// it.
func (d *Dispatcher) admitTo(cfg *config.Config, w *waiting, dep *config.Deployment, sendAt time.Time) {
	d.decide.admitted(admission{cfg, w, dep, sendAt})
}

// answer decides that w ends with e. Only the scheduler calls it.
func (d *Dispatcher) answer(w *waiting, e *messages.Error) {
	d.decide.answered(answer{w, e})
}
