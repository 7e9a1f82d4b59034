package messages

import (
	"fmt"
	"strconv"
	"strings"
)

// Subjects. Every subject sluice uses is built by a function here, so that
// the shape of the wire lives in one place.
const (
	// SubjectPrefix starts every sluice subject.
	SubjectPrefix = "sluice"

	// CallSubjects is the filter for every call subject:
	// sluice.call.<team>.<tier>.
	CallSubjects = "sluice.call.*.*"
	// RetrySubjects is the filter for retries that executors hand back to
	// the dispatchers: sluice.retry.<team>.<tier>.
	RetrySubjects = "sluice.retry.*.*"
	// ResultSubjects is the filter for the result subjects of calls with
	// valid ids: sluice.result.<team>.<call id>. (The refusal of a call
	// whose id is not a token but can end a subject, such as dot.id, is
	// on sluice.result.<team>.dot.id: sluice.result.<team>.> holds every
	// result of a team; see AnswerID.) Nobody publishes there: stream
	// SLUICE_RESULTS stores each answer under its result subject and only
	// then republishes it there, so a subscriber sees what was stored.
	ResultSubjects = "sluice.result.*.*"
	// AnswerSubjects is the filter for the subjects services publish
	// terminal results on: sluice.answer.<team>.<call id>, where the id
	// may have several tokens (see AnswerID). Stream SLUICE_RESULTS
	// captures them and stores them as sluice.result.<team>.<call id>.
	AnswerSubjects = "sluice.answer.*.>"
	// AttemptSubjects is the filter for attempt claims:
	// sluice.attempt.<team>.<call id>.<attempt>.<admission>.
	AttemptSubjects = "sluice.attempt.*.*.*.*"
	// ExecSubjects is the filter for dispatched work: sluice.exec.<region>.
	ExecSubjects = "sluice.exec.*"
	// DeadLetterSubjects is the filter for dead letters:
	// sluice.dlq.<reason>.
	DeadLetterSubjects = "sluice.dlq.*"
	// CancelSubjects is the filter for cancellations:
	// sluice.cancel.<team>.<call id>.
	CancelSubjects = "sluice.cancel.*.*"
	// DoneSubjects is the filter for the reports executors send to the
	// admitting dispatcher when an attempt ends: sluice.done.<dispatcher>.
	DoneSubjects = "sluice.done.*"
	// RequestSubjects is the filter for request-reply calls:
	// sluice.request.<team>.<tier>, on core NATS (no stream captures
	// it). The service that answers publishes the request's call on
	// sluice.call.<team>.<tier> and replies with its terminal result;
	// it takes the whole filter, so that a subject of the wrong shape
	// is answered with an error rather than by nobody.
	RequestSubjects = "sluice.request.>"
)

// Streams and key-value buckets.
const (
	// StreamCalls holds accepted calls and retries until a dispatcher has
	// settled their fate (interest retention: two consumers take calls,
	// see streams.CallsConfig).
	StreamCalls = "SLUICE_CALLS"
	// StreamExec holds admitted work per region until an executor has
	// finished it (work-queue retention).
	StreamExec = "SLUICE_EXEC"
	// StreamResults holds terminal results for a configurable time, so that a
	// client that reconnects can still fetch its result.
	StreamResults = "SLUICE_RESULTS"
	// StreamDeadLetters holds messages that could not be answered at all.
	StreamDeadLetters = "SLUICE_DLQ"
	// StreamAttempts holds one claim per attempt whose provider request an
	// executor is about to send, for the duplicate window (see
	// AttemptSubject).
	StreamAttempts = "SLUICE_ATTEMPTS"

	// BucketLimiter holds the token buckets of the shares people allocate:
	// team caps and guarantees, tier minimums, each deployment's critical
	// reserve, pools' batch gates (one key per bucket).
	BucketLimiter = "SLUICE_LIMITER"
	// BucketSchedule holds each deployment's send schedule (one key per
	// deployment): where its virtual time is free from.
	BucketSchedule = "SLUICE_SCHEDULE"
	// BucketHealth holds what was learned about each deployment.
	BucketHealth = "SLUICE_HEALTH"
	// BucketConcurrency holds the in-flight slots each dispatcher leased,
	// per deployment.
	BucketConcurrency = "SLUICE_CONCURRENCY"
	// BucketUsage holds usage roll-ups per hour, team, pool and tier.
	BucketUsage = "SLUICE_USAGE"
	// BucketBudget holds what each team spent and holds reserved against
	// its budgets, this day and month and the ones before (one key per
	// team, and per team and pool: see package budget).
	BucketBudget = "SLUICE_BUDGET"
	// BucketConfig holds the live configuration.
	BucketConfig = "SLUICE_CONFIG"
	// BucketResponses holds where each stored Responses API response
	// lives, under StoredResponseKey (see StoredResponse).
	BucketResponses = "SLUICE_RESPONSES"
)

// Headers.
const (
	// HeaderMsgID is JetStream's de-duplication header. sluice sets it to the
	// call id on calls and results, so a call published twice runs once.
	HeaderMsgID = "Nats-Msg-Id"
	// HeaderExpectedLastSubjectSeq is JetStream's condition on a publish:
	// the stream stores the message only if the last message on its
	// subject has this sequence. sluice sets it to 0 on results and attempt
	// claims, so the server refuses a second one for the same subject
	// (error code 10071, or 10164 from a replicated stream) for as long as
	// the first is stored.
	HeaderExpectedLastSubjectSeq = "Nats-Expected-Last-Subject-Sequence"
	// HeaderStreamSeq numbers the chunks of a streamed answer, from 1.
	HeaderStreamSeq = "Sluice-Seq"
	// HeaderDeadLetterReason says why a message was dead-lettered.
	HeaderDeadLetterReason = "Sluice-Dead-Letter-Reason"
	// HeaderDeadLetterSubject is the subject the dead letter was published on.
	HeaderDeadLetterSubject = "Sluice-Original-Subject"
	// HeaderCancelAfter, on a request on sluice.request.<team>.<tier>,
	// is how long the requester waits (a Go duration such as "5s"): with
	// no result by then, sluice cancels the call. Without it a requester
	// that gives up leaves the call running.
	HeaderCancelAfter = "Sluice-Cancel-After"
	// HeaderCallID, on the reply to a request, is the call's id.
	HeaderCallID = "Sluice-Call-Id"
)

// CallSubject is the subject a team publishes a call on.
func CallSubject(team string, tier Tier) string {
	return "sluice.call." + team + "." + string(tier)
}

// RetrySubject is the subject an executor hands a call back on, for another
// pass through admission.
func RetrySubject(team string, tier Tier) string {
	return "sluice.retry." + team + "." + string(tier)
}

// ResultSubject is the subject the terminal result of a call arrives on,
// and is stored under in SLUICE_RESULTS. Services do not publish there
// (see AnswerSubject): the stream republishes each result there once it
// stored it, so a subscriber receives the one stored result of the call.
func ResultSubject(team, callID string) string {
	return "sluice.result." + team + "." + callID
}

// AnswerSubject is the subject a service publishes the terminal result of
// a call on, with Nats-Msg-Id set to the call id and
// Nats-Expected-Last-Subject-Sequence set to 0. Stream SLUICE_RESULTS
// stores it as ResultSubject(team, callID), refuses any later answer for
// the call while that one is stored, and republishes the stored one on
// ResultSubject(team, callID). Only sluice's services may publish here.
func AnswerSubject(team, callID string) string {
	return "sluice.answer." + team + "." + callID
}

// AttemptSubject is where an executor claims admission number admission
// (0 the first time) of attempt number attempt (from 1) of a call, right
// before it sends the provider request: one message, published with
// Nats-Expected-Last-Subject-Sequence 0, so that the server refuses a
// second claim of the same attempt. Stream SLUICE_ATTEMPTS keeps claims
// for the duplicate window.
func AttemptSubject(team, callID string, attempt, admission int) string {
	return "sluice.attempt." + team + "." + callID + "." + strconv.Itoa(attempt) + "." + strconv.Itoa(admission)
}

// StreamSubject is where the chunks of a streamed answer go, in order,
// on core NATS (they are not stored: subscribe before publishing the
// call). Each message is one server-sent event as the provider sent it,
// its lines without the blank line that ends it, numbered by the
// Sluice-Seq header. The call's terminal result follows on its result
// subject as for any call.
func StreamSubject(team, callID string) string {
	return "sluice.stream." + team + "." + callID
}

// CancelSubject is where a client says it gave up on a call: a call not
// yet sent to its provider never is, and a provider request under way is
// closed. The call still ends with one result, code canceled.
func CancelSubject(team, callID string) string {
	return "sluice.cancel." + team + "." + callID
}

// RequestSubject is where a call is requested in one round trip: the
// reply is its terminal result (see RequestSubjects).
func RequestSubject(team string, tier Tier) string {
	return "sluice.request." + team + "." + string(tier)
}

// ExecSubject is the subject admitted work for a region is published on.
func ExecSubject(region string) string {
	return "sluice.exec." + region
}

// DoneSubject is the subject executors report the end of attempts on, to
// the dispatcher that admitted them.
func DoneSubject(dispatcher string) string {
	return "sluice.done." + dispatcher
}

// DeadLetterSubject is the subject a dead letter is published on.
func DeadLetterSubject(reason string) string {
	return "sluice.dlq." + reason
}

// Kind says what a subject is for.
type Kind int

// Kinds of subjects a dispatcher consumes.
const (
	KindUnknown Kind = iota
	KindCall
	KindRetry
)

// ParseCallSubject splits sluice.call.<team>.<tier> or
// sluice.retry.<team>.<tier>. The tier is returned as it appears; validate it
// with Tier.Valid.
func ParseCallSubject(subject string) (kind Kind, team string, tier Tier, err error) {
	parts := strings.Split(subject, ".")
	if len(parts) != 4 || parts[0] != SubjectPrefix {
		return KindUnknown, "", "", fmt.Errorf("subject %q is not sluice.call.<team>.<tier>", subject)
	}
	switch parts[1] {
	case "call":
		kind = KindCall
	case "retry":
		kind = KindRetry
	default:
		return KindUnknown, "", "", fmt.Errorf("subject %q is not sluice.call.<team>.<tier>", subject)
	}
	if strings.ContainsAny(parts[2], "*>") || strings.ContainsAny(parts[3], "*>") {
		// The server stores a published wildcard as a plain token, but no
		// answer can go to a subject made of it.
		return KindUnknown, "", "", fmt.Errorf("subject %q has a wildcard for its team or tier", subject)
	}
	return kind, parts[2], Tier(parts[3]), nil
}

// ValidToken reports whether s can be used as one subject token or key part:
// 1 to 64 characters of ASCII letters, digits, '-' and '_'. Teams, regions,
// deployment ids and call ids must all be valid tokens.
func ValidToken(s string) bool {
	if len(s) == 0 || len(s) > 64 {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z', c >= '0' && c <= '9', c == '-', c == '_':
		default:
			return false
		}
	}
	return true
}

// CheckCallAddress reports whether a call for team on tier with id (empty:
// to be assigned) can be published and answered: team and id must be
// subject tokens and tier one of the four tiers. Clients check it before
// publishing, so that a bad name is an error rather than a publish to a
// subject nobody answers.
func CheckCallAddress(team string, tier Tier, id string) error {
	if !ValidToken(team) {
		return fmt.Errorf("team %q must be 1 to 64 letters, digits, '-' or '_'", team)
	}
	if !tier.Valid() {
		return fmt.Errorf("unknown tier %q; tiers are critical, high, standard, batch", tier)
	}
	if id != "" && !ValidToken(id) {
		return fmt.Errorf("call id %q must be 1 to 64 letters, digits, '-' or '_'", id)
	}
	return nil
}
