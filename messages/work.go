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
}

// Retry is what an executor publishes on sluice.retry.<team>.<tier> when an
// attempt failed in a way worth retrying. A dispatcher redelivers it through
// JetStream no earlier than NotBefore, and admits it again, possibly to
// another deployment. Nats-Msg-Id is "<call id>.retry.<attempt>".
type Retry struct {
	Ticket
	NotBefore time.Time `json:"not_before"`
}

// Settlement is what an executor reports on sluice.settle.<region> after
// each attempt, so that the dispatchers correct the deployment's TPM
// reservation to what the provider actually counted. It is best effort: a
// lost settlement leaves the reservation in place, which errs on the safe
// side.
type Settlement struct {
	CallID         string `json:"call_id"`
	Deployment     string `json:"deployment"`
	ReservedTokens int64  `json:"reserved_tokens"`
	UsedTokens     int64  `json:"used_tokens"`
}

// ExecMsgID is the Nats-Msg-Id of a call's work for one attempt.
func ExecMsgID(callID string, attempt int) string {
	return callID + "." + strconv.Itoa(attempt)
}

// RetryMsgID is the Nats-Msg-Id of a call's retry before an attempt.
func RetryMsgID(callID string, attempt int) string {
	return callID + ".retry." + strconv.Itoa(attempt)
}
