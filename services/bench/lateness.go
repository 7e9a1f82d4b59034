package bench

import (
	"encoding/json"
	"net/http"
	"net/http/httptrace"
	"slices"
	"sync"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/sluicehq/sluice/messages"
	"github.com/sluicehq/sluice/services/executor"
	"github.com/sluicehq/sluice/services/fakeprovider"
	"github.com/sluicehq/sluice/services/providers"
)

// SendTiming is how late, after the send time admission gave it
// (Work.SendAt), each attempt went out and reached the provider. sluice's
// bound on every window holds only for requests that reach the provider
// within the jitter J (admission.jitter) of their send time; these figures
// say where the rest lost their time. Durations are in milliseconds.
type SendTiming struct {
	// JitterMS is J, the lateness the bound allows.
	JitterMS float64 `json:"jitter_ms"`
	// Followed counts the attempts followed from their work to the
	// provider: sent, and seen arriving there.
	Followed int64 `json:"followed"`
	// ReceivedLate counts work that reached its executor after its send
	// time (from the dispatcher's publish to the executor's pull: the
	// region's lead was too short, or the executor was busy);
	// ReceivedTooLate those of them that reached it after their SendBy,
	// too late to be sent at all.
	ReceivedLate    int64 `json:"received_after_send_time"`
	ReceivedTooLate int64 `json:"received_after_send_by"`
	// HandedBack counts work its executor could not send by its SendBy
	// (sluice_late_work_total): it went back through admission unsent.
	HandedBack int64 `json:"handed_back_late"`
	// Send* are the executor's send (AttemptDone.SentAt) minus the send
	// time: its timer, the claim, goroutine scheduling.
	SendP50MS float64 `json:"send_late_p50_ms"`
	SendP99MS float64 `json:"send_late_p99_ms"`
	SendMaxMS float64 `json:"send_late_max_ms"`
	// Wire* are the provider's arrival (what its windows count) minus the
	// executor's send: building the request, the HTTP write, the
	// provider's read.
	WireP50MS float64 `json:"to_provider_p50_ms"`
	WireP99MS float64 `json:"to_provider_p99_ms"`
	WireMaxMS float64 `json:"to_provider_max_ms"`
	// The way to the provider in three steps: Prepare* from the
	// executor's send to the HTTP client's round trip (building the
	// request), Write* from there to the request written (a connection,
	// the write), Deliver* from there to the provider's arrival (the
	// provider reading it).
	PrepareP99MS float64 `json:"prepare_p99_ms"`
	WriteP99MS   float64 `json:"write_p99_ms"`
	DeliverP99MS float64 `json:"deliver_p99_ms"`
	// Arrival* are the provider's arrival minus the send time: the sum,
	// which the bound counts on staying within J.
	ArrivalP99MS float64 `json:"arrival_late_p99_ms"`
	ArrivalMaxMS float64 `json:"arrival_late_max_ms"`
	// ArrivedLate counts the requests that reached the provider more than
	// J after their send time; ArrivedEarly those that reached it before
	// (never, if executors keep to their promise).
	ArrivedLate  int64 `json:"arrived_after_jitter"`
	ArrivedEarly int64 `json:"arrived_before_send_time"`
	// MaxScheduled is the most sent requests whose send times fall in
	// any 1 s + J of one deployment's schedule: what the schedule itself
	// promised a one-second window, at most the bound whatever the
	// lateness.
	MaxScheduled int64 `json:"max_scheduled_in_1s_plus_j"`
}

// sendTimes follows each attempt of an accuracy run from its work (read
// off sluice.exec.*), through its executor's report (sluice.done.*), to
// its arrival at the fake provider (fakeprovider.Config.Arrived).
type sendTimes struct {
	mu       sync.Mutex
	work     map[string]workTimes   // by ExecMsgID
	arrivals map[string][]time.Time // by call id
	trips    map[string][]roundTrip // by call id
	done     []messages.AttemptDone
	subs     []*nats.Subscription
}

// roundTrip is when the HTTP client began a request, and when it had
// written it.
type roundTrip struct{ start, wrote time.Time }

// tracing is an executor's HTTP transport that notes, by X-Client-Request-Id,
// when each request began and was written.
type tracing struct {
	next http.RoundTripper
	s    *sendTimes
}

func (t tracing) RoundTrip(r *http.Request) (*http.Response, error) {
	id := r.Header.Get(fakeprovider.ClientRequestIDHeader)
	if id == "" {
		return t.next.RoundTrip(r)
	}
	trip := roundTrip{start: time.Now()}
	trace := &httptrace.ClientTrace{WroteRequest: func(httptrace.WroteRequestInfo) {
		trip.wrote = time.Now()
		t.s.mu.Lock()
		t.s.trips[id] = append(t.s.trips[id], trip)
		t.s.mu.Unlock()
	}}
	return t.next.RoundTrip(r.WithContext(httptrace.WithClientTrace(r.Context(), trace)))
}

// tune has an executor send through a tracing transport.
func (s *sendTimes) tune(c *executor.Config) {
	client := providers.NewHTTPClient()
	client.Transport = tracing{next: client.Transport, s: s}
	c.HTTPClient = client
}

type workTimes struct{ sendAt, sendBy time.Time }

func newSendTimes() *sendTimes {
	return &sendTimes{work: map[string]workTimes{}, arrivals: map[string][]time.Time{}, trips: map[string][]roundTrip{}}
}

// arrived is the fake provider's Config.Arrived.
func (s *sendTimes) arrived(id string, at time.Time) {
	if id == "" {
		return
	}
	s.mu.Lock()
	s.arrivals[id] = append(s.arrivals[id], at)
	s.mu.Unlock()
}

// watch subscribes to the work and the attempt reports on nc.
func (s *sendTimes) watch(nc *nats.Conn) error {
	onWork := func(m *nats.Msg) {
		var w messages.Work
		if json.Unmarshal(m.Data, &w) != nil {
			return
		}
		s.mu.Lock()
		s.work[messages.ExecMsgID(w.Call.ID, w.Attempt, w.Admission)] = workTimes{sendAt: w.SendAt, sendBy: w.SendBy}
		s.mu.Unlock()
	}
	onDone := func(m *nats.Msg) {
		var d messages.AttemptDone
		if json.Unmarshal(m.Data, &d) != nil {
			return
		}
		s.mu.Lock()
		s.done = append(s.done, d)
		s.mu.Unlock()
	}
	for _, sub := range []struct {
		subject string
		handle  nats.MsgHandler
	}{{messages.ExecSubjects, onWork}, {messages.DoneSubjects, onDone}} {
		ns, err := nc.Subscribe(sub.subject, sub.handle)
		if err != nil {
			s.stop()
			return err
		}
		_ = ns.SetPendingLimits(-1, -1)
		s.subs = append(s.subs, ns)
	}
	return nc.Flush()
}

func (s *sendTimes) stop() {
	for _, ns := range s.subs {
		_ = ns.Unsubscribe()
	}
	s.subs = nil
}

// timing matches what was followed, for a jitter of j and handedBack
// pieces of work handed back late.
func (s *sendTimes) timing(j time.Duration, handedBack int64) SendTiming {
	s.mu.Lock()
	defer s.mu.Unlock()
	t := SendTiming{JitterMS: ms(j), HandedBack: handedBack}
	var send, wire, arrival, prepare, write, deliver []time.Duration
	scheduled := map[string][]time.Time{} // send times of sent requests, by deployment
	for _, d := range s.done {
		w, ok := s.work[messages.ExecMsgID(d.CallID, d.Attempt, d.Admission)]
		if !ok || w.sendAt.IsZero() {
			continue
		}
		if !d.ReceivedAt.IsZero() && d.ReceivedAt.After(w.sendAt) {
			t.ReceivedLate++
			if !w.sendBy.IsZero() && d.ReceivedAt.After(w.sendBy) {
				t.ReceivedTooLate++
			}
		}
		if d.SentAt.IsZero() {
			continue
		}
		// The call's arrival nearest its send: attempts of one call are a
		// backoff apart, far more than the way to the provider.
		var at time.Time
		for _, a := range s.arrivals[d.CallID] {
			if at.IsZero() || absDuration(a.Sub(d.SentAt)) < absDuration(at.Sub(d.SentAt)) {
				at = a
			}
		}
		if at.IsZero() || absDuration(at.Sub(d.SentAt)) > time.Second {
			continue
		}
		t.Followed++
		send = append(send, d.SentAt.Sub(w.sendAt))
		wire = append(wire, at.Sub(d.SentAt))
		var trip roundTrip
		for _, r := range s.trips[d.CallID] {
			if trip.start.IsZero() || absDuration(r.start.Sub(d.SentAt)) < absDuration(trip.start.Sub(d.SentAt)) {
				trip = r
			}
		}
		if !trip.start.IsZero() && absDuration(trip.start.Sub(d.SentAt)) < time.Second {
			prepare = append(prepare, trip.start.Sub(d.SentAt))
			write = append(write, trip.wrote.Sub(trip.start))
			deliver = append(deliver, at.Sub(trip.wrote))
		}
		late := at.Sub(w.sendAt)
		arrival = append(arrival, late)
		if late > j {
			t.ArrivedLate++
		}
		scheduled[d.Deployment] = append(scheduled[d.Deployment], w.sendAt)
		if late < 0 {
			t.ArrivedEarly++
		}
	}
	if t.Followed == 0 {
		return t
	}
	for _, at := range scheduled {
		slices.SortFunc(at, func(a, b time.Time) int { return a.Compare(b) })
		first := 0
		for i := range at {
			for at[i].Sub(at[first]) >= time.Second+j {
				first++
			}
			t.MaxScheduled = max(t.MaxScheduled, int64(i-first+1))
		}
	}
	for _, ds := range [][]time.Duration{send, wire, arrival, prepare, write, deliver} {
		slices.Sort(ds)
	}
	if len(prepare) > 0 {
		t.PrepareP99MS, t.WriteP99MS, t.DeliverP99MS = quantileMS(prepare, 0.99), quantileMS(write, 0.99), quantileMS(deliver, 0.99)
	}
	t.SendP50MS, t.SendP99MS, t.SendMaxMS = quantileMS(send, 0.5), quantileMS(send, 0.99), ms(send[len(send)-1])
	t.WireP50MS, t.WireP99MS, t.WireMaxMS = quantileMS(wire, 0.5), quantileMS(wire, 0.99), ms(wire[len(wire)-1])
	t.ArrivalP99MS, t.ArrivalMaxMS = quantileMS(arrival, 0.99), ms(arrival[len(arrival)-1])
	return t
}

// quantileMS is the q quantile of sorted ds, in milliseconds.
func quantileMS(sorted []time.Duration, q float64) float64 {
	return ms(sorted[int(float64(len(sorted)-1)*q)])
}

func absDuration(d time.Duration) time.Duration {
	if d < 0 {
		return -d
	}
	return d
}
