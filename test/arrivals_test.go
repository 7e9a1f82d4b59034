package test

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/sluicehq/sluice/messages"
	"github.com/sluicehq/sluice/services/attempts"
	"github.com/sluicehq/sluice/services/fakeprovider"
)

// sluice's bound on what reaches a key (README, "Sent when the provider's
// windows have room") holds for requests that reach the provider within
// admission.jitter of their send times. Tests share two cores in CI with
// the race detector, and now and then a request reaches the fake later
// than that: it was sent on time (the executor sends no later than half
// the jitter after its send time) and then waited for a core. Such a
// request can make a one-second window hold one more than the schedule
// placed in it, and the provider refuses one.
//
// So the fault and accuracy tests record, at the provider's HTTP
// boundary, every request: when it arrived, on which key (by its name in
// the configuration, never its secret), for which call, what the provider
// answered; and, for the requests around a refusal, when they were due
// to leave: their send times (the accuracy tests read them from the work
// on sluice.exec.*), or when their executors claimed them, right before
// their send times (the fault tests, whose processes die, read the claims
// SLUICE_ATTEMPTS keeps). A refusal in whose window a request arrived
// more than the jitter (and the claim's lead) after it was due is the
// machine's, and is logged with the evidence; any other refusal fails the
// test.

// claimLeadBound bounds how long before its send time an executor claims
// an attempt (claimLead in services/executor, 2 ms), with room to spare.
const claimLeadBound = 5 * time.Millisecond

// arrivalLog records each request the provider received.
type arrivalLog struct {
	mu       sync.Mutex
	names    map[string]string // secret -> key name
	arrivals []arrival
}

type arrival struct {
	at     time.Time
	key    string
	callID string
	status int
	// retryAfter is how long a 429 told the caller to wait
	// (retry-after-ms), 0 otherwise.
	retryAfter time.Duration
}

func newArrivalLog(secrets map[string]string) *arrivalLog {
	l := &arrivalLog{}
	l.name(secrets)
	return l
}

// name says which key name each secret is (secrets maps names to secrets),
// for a log made before the configuration was known.
func (l *arrivalLog) name(secrets map[string]string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.names = map[string]string{}
	for name, secret := range secrets {
		l.names[secret] = name
	}
}

// wrap records each request h serves, stamped when it arrived.
func (l *arrivalLog) wrap(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		a := arrival{at: time.Now(), callID: r.Header.Get(fakeprovider.ClientRequestIDHeader)}
		secret := strings.TrimPrefix(r.Header.Get("Authorization"), "Bearer ")
		sw := &statusWriter{ResponseWriter: w, status: http.StatusOK}
		h.ServeHTTP(sw, r)
		a.status = sw.status
		if ms, err := strconv.ParseInt(sw.Header().Get("retry-after-ms"), 10, 64); err == nil && a.status == http.StatusTooManyRequests {
			a.retryAfter = time.Duration(ms) * time.Millisecond
		}
		l.mu.Lock()
		a.key = l.names[secret]
		l.arrivals = append(l.arrivals, a)
		l.mu.Unlock()
	})
}

// refusal is one 429, with the requests its key received in the second
// up to it (itself included), and whether one of them arrived late.
type refusal struct {
	key      string
	at       time.Time
	evidence string
	// late is the lateness of the latest request in the window: how long
	// after it was due it arrived, beyond the allowance; 0 when every
	// request was on time.
	late time.Duration
}

// refusals reads every 429 the provider answered from on. sent returns,
// for a call, the times its requests were due to leave (their claims, or
// their send times), and allowance is how long after such a time the
// bound allows a request to arrive. start is where times count from.
func (l *arrivalLog) refusals(start, from time.Time, allowance time.Duration, sent func(callID string) []time.Time) []refusal {
	l.mu.Lock()
	all := append([]arrival(nil), l.arrivals...)
	l.mu.Unlock()
	sort.Slice(all, func(i, j int) bool { return all[i].at.Before(all[j].at) })
	var out []refusal
	for i, a := range all {
		if a.status != http.StatusTooManyRequests || a.at.Before(from) {
			continue
		}
		r := refusal{key: a.key, at: a.at}
		var b strings.Builder
		fmt.Fprintf(&b, "429 on %s at t=%.3fs; the requests of its second:", a.key, a.at.Sub(start).Seconds())
		for _, p := range all[:i+1] {
			if p.key != a.key || a.at.Sub(p.at) >= time.Second {
				continue
			}
			fmt.Fprintf(&b, "\n    t=%.3fs %s %d", p.at.Sub(start).Seconds(), p.callID, p.status)
			// It left at the latest time before it arrived: its attempt's.
			var left time.Time
			for _, c := range sent(p.callID) {
				if !c.After(p.at) && c.After(left) {
					left = c
				}
			}
			if left.IsZero() {
				b.WriteString(", not known to have been sent")
				continue
			}
			lag := p.at.Sub(left)
			fmt.Fprintf(&b, ", %.1f ms after it was due", float64(lag)/float64(time.Millisecond))
			if over := lag - allowance; over > r.late {
				r.late = over
			}
		}
		r.evidence = b.String()
		out = append(out, r)
	}
	return out
}

// toldToWait is how long, in all, the provider's 429s on key told the
// caller to wait.
func (l *arrivalLog) toldToWait(key string) time.Duration {
	l.mu.Lock()
	defer l.mu.Unlock()
	var d time.Duration
	for _, a := range l.arrivals {
		if a.key == key {
			d += a.retryAfter
		}
	}
	return d
}

// count is how many requests arriving in [from, to) the provider answered
// with status.
func (l *arrivalLog) count(from, to time.Time, status int) int {
	l.mu.Lock()
	defer l.mu.Unlock()
	n := 0
	for _, a := range l.arrivals {
		if a.status == status && !a.at.Before(from) && a.at.Before(to) {
			n++
		}
	}
	return n
}

// claimTimes returns when the attempts of a call of team were claimed to
// be sent (claims handed back are not), read from SLUICE_ATTEMPTS.
func claimTimes(js jetstream.JetStream, team string) func(callID string) []time.Time {
	return func(callID string) []time.Time {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		first := messages.AttemptSubject(team, callID, 1, 0)
		c, err := js.OrderedConsumer(ctx, messages.StreamAttempts, jetstream.OrderedConsumerConfig{
			FilterSubjects: []string{strings.TrimSuffix(first, ".1.0") + ".>"},
		})
		if err != nil {
			return nil
		}
		var out []time.Time
		for {
			m, err := c.Next(jetstream.FetchMaxWait(200 * time.Millisecond))
			if err != nil {
				return out
			}
			var cl attempts.Claim
			if json.Unmarshal(m.Data(), &cl) == nil && !cl.HandedBack {
				out = append(out, cl.At)
			}
		}
	}
}

// statusWriter remembers the status a handler answered with.
type statusWriter struct {
	http.ResponseWriter
	status int
}

func (w *statusWriter) WriteHeader(code int) {
	w.status = code
	w.ResponseWriter.WriteHeader(code)
}

func (w *statusWriter) Flush() {
	if f, ok := w.ResponseWriter.(http.Flusher); ok {
		f.Flush()
	}
}

func (w *statusWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }
