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
}

// Work is what a dispatcher publishes on sluice.exec.<region> once a call is
// admitted: the ticket, the deployment chosen, and the reservation taken.
// Nats-Msg-Id is "<call id>.<attempt>", so a dispatcher that re-admits a
// call after a crash does not run the same attempt twice.
type Work struct {
	Ticket
	Deployment string `json:"deployment"`
	Region     string `json:"region"`
	// ReservedTokens were taken from the deployment's TPM at admission;
	// the executor settles them against the provider's usage.
	ReservedTokens int64     `json:"reserved_tokens"`
	DispatchedAt   time.Time `json:"dispatched_at"`
	// Dispatcher is the id of the dispatcher that admitted the work; the
	// executor reports the attempt's end to it on sluice.done.<dispatcher>.
	Dispatcher string `json:"dispatcher"`
}

// Retry is what an executor publishes on sluice.retry.<team>.<tier> when an
// attempt failed in a way worth retrying. A dispatcher redelivers it through
// JetStream no earlier than NotBefore, and admits it again, possibly to
// another deployment. Nats-Msg-Id is "<call id>.retry.<attempt>".
type Retry struct {
	Ticket
	NotBefore time.Time `json:"not_before"`
}

// Outcome classifies how an attempt ended, for the dispatcher that
// admitted it: circuit breakers count failures, retry budgets count
// retries, and concurrency slots are released.
type Outcome string

// Attempt outcomes.
const (
	OutcomeOK          Outcome = "ok"           // 2xx
	OutcomeRateLimited Outcome = "rate_limited" // 429 for the key's rate limit
	OutcomeQuota       Outcome = "quota"        // 429 insufficient_quota
	OutcomeUnavailable Outcome = "unavailable"  // 5xx, 529
	OutcomeTimeout     Outcome = "timeout"      // no answer within the attempt timeout
	OutcomeTransport   Outcome = "transport"    // no HTTP answer at all
	OutcomeRejected    Outcome = "rejected"     // another 4xx
	OutcomeNotSent     Outcome = "not_sent"     // the executor did not call the provider
	OutcomeCanceled    Outcome = "canceled"     // the client canceled during the request
)

// Failed reports whether the outcome counts against the deployment's
// health: the provider failing, not refusing.
func (o Outcome) Failed() bool {
	return o == OutcomeUnavailable || o == OutcomeTimeout || o == OutcomeTransport
}

// AttemptDone is what an executor reports on sluice.done.<dispatcher> when
// an attempt ends, to the dispatcher that admitted it: the outcome, and the
// tokens the provider counted, so the reservation can be settled. It is
// best effort: a lost report leaves the reservation in place, which errs
// on the safe side, and concurrency slots expire on their own.
type AttemptDone struct {
	CallID     string  `json:"call_id"`
	Attempt    int     `json:"attempt"`
	Deployment string  `json:"deployment"`
	Outcome    Outcome `json:"outcome"`
	// Status is the provider's HTTP status, 0 when there was none.
	Status         int   `json:"status,omitempty"`
	ReservedTokens int64 `json:"reserved_tokens"`
	// UsedTokens is what the provider counted, or -1 when unknown (the
	// reservation then stands).
	UsedTokens int64 `json:"used_tokens"`
}

// ExecMsgID is the Nats-Msg-Id of a call's work for one attempt.
func ExecMsgID(callID string, attempt int) string {
	return callID + "." + strconv.Itoa(attempt)
}

// RetryMsgID is the Nats-Msg-Id of a call's retry before an attempt.
func RetryMsgID(callID string, attempt int) string {
	return callID + ".retry." + strconv.Itoa(attempt)
}
