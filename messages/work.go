package messages

import (
	"strconv"
	"time"
)

// Ticket carries one call between sluice's own services: the normalized
// request plus what sluice has learned about it so far. Clients never
// publish tickets.
type Ticket struct {
	// Call is the normalized request: ID, Model and Endpoint are set.
	Call CallRequest `json:"call"`
	Team string      `json:"team"`
	Tier Tier        `json:"tier"`
	// AcceptedAt is the time JetStream accepted the original call.
	AcceptedAt time.Time `json:"accepted_at"`
	// Deadline is the absolute deadline, fixed at first admission.
	Deadline time.Time `json:"deadline"`
	// Attempt is the number of the provider attempt this ticket is for,
	// starting at 1.
	Attempt int `json:"attempt"`
	// QueuedMS is the time spent waiting for admission so far.
	QueuedMS float64 `json:"queued_ms"`
	// LastError is the error of the previous attempt, for retries.
	LastError *Error `json:"last_error,omitempty"`
	// LastDeployment served the previous attempt, for retries.
	LastDeployment string `json:"last_deployment,omitempty"`
	// Admission counts how many times this attempt went back through
	// admission without reaching the provider, because its work was not
	// sent when admission promised (an executor took it late); 0 the
	// first time. It is part of the work's and the retry's Nats-Msg-Id,
	// so that a late attempt admitted again is new work, not a duplicate.
	Admission int `json:"admission,omitempty"`
}

// Work is what a dispatcher publishes on sluice.exec.<region> once a call is
// admitted: the ticket, the deployment chosen, the reservation taken, and
// when to send it. Nats-Msg-Id is ExecMsgID, so a dispatcher that
// re-admits a call after a crash does not publish the same attempt twice.
type Work struct {
	Ticket
	Deployment string `json:"deployment"`
	Region     string `json:"region"`
	// SendAt is the time admission scheduled the provider request for:
	// the executor sends it no earlier. SendBy is the latest it may still
	// send it: admission promised the deployment's limits only for then,
	// so work taken later (its region was down, its executor busy, NATS
	// restarting) goes back through admission instead.
	SendAt time.Time `json:"send_at"`
	SendBy time.Time `json:"send_by"`
	// ReservedTokens were taken from the deployment's TPM at admission;
	// the executor settles them against the provider's usage.
	ReservedTokens int64     `json:"reserved_tokens"`
	DispatchedAt   time.Time `json:"dispatched_at"`
	// Dispatcher is the id of the dispatcher that admitted the work; the
	// executor reports the attempt's end to it on sluice.done.<dispatcher>.
	Dispatcher string `json:"dispatcher"`
}

// Retry is what an executor publishes on sluice.retry.<team>.<tier> when an
// attempt failed in a way worth retrying, or when it could not send an
// attempt when admission promised (Late; then Attempt is unchanged and
// Admission counts one more). A dispatcher redelivers it through JetStream
// no earlier than NotBefore, and admits it again, possibly to another
// deployment. Nats-Msg-Id is RetryMsgID.
type Retry struct {
	Ticket
	NotBefore time.Time `json:"not_before"`
	// Late is set when the attempt never reached the provider: its work
	// was taken after its SendBy. LastDeployment is then the deployment
	// it was admitted to.
	Late bool `json:"late,omitempty"`
}

// Outcome classifies how an attempt ended, for the dispatcher that
// admitted it: circuit breakers count failures, retry budgets count
// retries, and concurrency slots are released. Only what the provider did
// counts as a failure (Failed): an attempt the call's own deadline or its
// client cut short says nothing about the provider, whoever waits for it.
type Outcome string

// Attempt outcomes.
const (
	OutcomeOK          Outcome = "ok"           // 2xx
	OutcomeRateLimited Outcome = "rate_limited" // 429 for the key's rate limit
	OutcomeQuota       Outcome = "quota"        // 429 insufficient_quota
	OutcomeUnavailable Outcome = "unavailable"  // 5xx, 529
	OutcomeTimeout     Outcome = "timeout"      // no answer within the attempt timeout
	OutcomeDeadline    Outcome = "deadline"     // the call's deadline cut the request (the caller's choice, not a failure)
	OutcomeTransport   Outcome = "transport"    // no HTTP answer at all
	OutcomeRejected    Outcome = "rejected"     // another 4xx
	OutcomeNotSent     Outcome = "not_sent"     // the executor did not call the provider
	OutcomeCanceled    Outcome = "canceled"     // the client canceled during the request
)

// Failed reports whether the outcome counts against the deployment's
// health: the provider failing (5xx, 529, no answer within the attempt
// timeout, no HTTP answer), not refusing, and not cut short by the call's
// deadline or its client.
func (o Outcome) Failed() bool {
	return o == OutcomeUnavailable || o == OutcomeTimeout || o == OutcomeTransport
}

// AttemptDone is what an executor reports on sluice.done.<dispatcher> when
// an attempt ends, to the dispatcher that admitted it: the outcome, and the
// tokens the provider counted, so the reservation can be settled. It is
// best effort: a lost report leaves the reservation in place, which errs
// on the safe side, and concurrency slots expire on their own.
type AttemptDone struct {
	CallID  string `json:"call_id"`
	Attempt int    `json:"attempt"`
	// Admission is the work's Ticket.Admission.
	Admission  int     `json:"admission,omitempty"`
	Deployment string  `json:"deployment"`
	Outcome    Outcome `json:"outcome"`
	// Status is the provider's HTTP status, 0 when there was none.
	Status         int   `json:"status,omitempty"`
	ReservedTokens int64 `json:"reserved_tokens"`
	// UsedTokens is what the provider counted, or -1 when unknown (the
	// reservation then stands).
	UsedTokens int64 `json:"used_tokens"`
	// Cost is what the attempt cost, as its result says (Result.Cost),
	// when the provider answered and the deployment has prices; nil
	// otherwise. The dispatcher settles the team's budgets with it.
	Cost *Cost `json:"cost,omitempty"`
	// ReceivedAt is when the executor received the work, which tells the
	// dispatcher how long work takes to reach the region's executors.
	ReceivedAt time.Time `json:"received_at,omitzero"`
	// SentAt is when the request went to the provider; zero when it did
	// not. A reservation is refunded only while the provider's windows
	// that counted the request are still open.
	SentAt time.Time `json:"sent_at,omitzero"`
}

// ExecMsgID is the Nats-Msg-Id of a call's work for one admission of one
// attempt: "<call id>.<attempt>", and ".<admission>" after it once the
// attempt was admitted again.
func ExecMsgID(callID string, attempt, admission int) string {
	id := callID + "." + strconv.Itoa(attempt)
	if admission > 0 {
		id += "." + strconv.Itoa(admission)
	}
	return id
}

// RetryMsgID is the Nats-Msg-Id of a call's retry before an attempt's
// admission: "<call id>.retry.<attempt>", and ".<admission>" for a late
// attempt handed back.
func RetryMsgID(callID string, attempt, admission int) string {
	id := callID + ".retry." + strconv.Itoa(attempt)
	if admission > 0 {
		id += "." + strconv.Itoa(admission)
	}
	return id
}
