// Package messages is sluice's wire contract: the subjects, JSON messages,
// headers and error codes that clients and services exchange over NATS. It
// imports nothing from the services, and it is all a client in any language
// needs to know.
//
// # Calling
//
// Publish a [CallRequest] as JSON on sluice.call.<team>.<tier> (see
// [CallSubject]), with the header Nats-Msg-Id set to the call id. The team
// and tier come from the subject; the tier is critical, high, standard or
// batch. JetStream (stream SLUICE_CALLS) de-duplicates by Nats-Msg-Id, so a
// call published twice within the duplicate window runs once.
//
//	sluice.call.demo.standard   Nats-Msg-Id: call-1
//	{"id":"call-1","model":"gpt-4o-mini",
//	 "body":{"messages":[{"role":"user","content":"hi"}],"max_tokens":50}}
//
// Or request it in one round trip: a NATS request on
// sluice.request.<team>.<tier> ([RequestSubject], core NATS) with the
// same body is answered with the call's terminal [Result], and the reply
// carries the call id in [HeaderCallID]; [HeaderCancelAfter] says how
// long the requester waits before sluice cancels the call.
//
// A W3C traceparent header ([HeaderTraceParent], and tracestate) on the
// call continues the caller's trace: sluice carries it in the headers of
// the call's work and retries ([TraceCarrier]) and on to the provider, and
// the result's trace_id names the trace.
//
// # Results
//
// Every call JetStream accepted ends with exactly one [Result] on
// sluice.result.<team>.<call id> (see [ResultSubject]): "status":"ok" with
// the provider's body, usage, attempts, deployment, region and timings, or
// "status":"error" with an [Error] whose [Code] says what went wrong. Results
// stay in stream SLUICE_RESULTS for a configurable time, so a client that was
// away can fetch its result later (the last message on its subject).
//
// A result's [Usage] is in OpenAI's names whatever the provider, with the
// prompt tokens read from the provider's cache in
// prompt_tokens_details.cached_tokens. Its [Cost], when the configuration
// prices the deployment, is what the answer cost in the configured
// currency, part by part (input, cached_input, output, request) and in
// total:
//
//	"cost": {"currency": "USD", "total": 0.0003, "input": 0.0001, "output": 0.0002}
//
// An answer the provider reported no usage for is charged its worst case,
// the tokens reserved for it at the highest price, and marked
// "estimated": true with its "reserved_tokens"; a call the provider did
// not answer (a refusal, a 429 or 5xx, a timeout) carries no cost.
//
// Nobody publishes on sluice.result.>: services publish a result on
// sluice.answer.<team>.<call id> ([AnswerSubject]) with Nats-Msg-Id set to
// the call id and Nats-Expected-Last-Subject-Sequence set to 0. The stream
// stores it as sluice.result.<team>.<call id>, refuses every later answer
// for the call while that one is stored (also after a server restart, and
// whatever its Nats-Msg-Id), and republishes on sluice.result.<team>.<call
// id> only what it stored. So a subscriber receives one result per call,
// the one a fetch returns. A republished result carries the headers
// Nats-Stream, Nats-Subject, Nats-Sequence, Nats-Time-Stamp and
// Nats-Last-Sequence as well.
//
// # Streamed answers and cancels
//
// A call whose body has "stream": true streams its answer on
// sluice.stream.<team>.<call id> ([StreamSubject]) on core NATS: the
// chunks are not stored, so subscribe before publishing the call. Each
// message is one server-sent event as the provider sent it, numbered by
// the header Sluice-Seq ([HeaderStreamSeq]) from 1. The terminal result
// follows on the result subject as for any call.
//
// Publish anything on sluice.cancel.<team>.<call id> ([CancelSubject],
// core NATS) to give up on a call: one not yet sent to its provider never
// is, and a provider request under way is closed. The call still ends
// with one result, code canceled.
//
// # Refusals
//
// A call that cannot go is answered at once with an error result, under
// the id AnswerID gives: a call id (in the body, else Nats-Msg-Id) that
// is not a valid token but can end a subject, such as dot.id, is refused
// (invalid_request, field id) on sluice.result.<team>.dot.id, where its
// client listens; one no subject can carry (wildcards, spaces, empty
// tokens, over MaxAnswerIDLen bytes) is refused under Nats-Msg-Id when
// that is a valid id, else under DerivedCallID of the call's sequence in
// SLUICE_CALLS (the sequence the publish acknowledgement gives). A body
// over calls.max_body_bytes, or a reservation of more tokens than any
// deployment the call may use has as its configured tpm, is refused as
// invalid_request (field body) saying how large it is and what is allowed.
//
// # Between services
//
// [Work] (sluice.exec.<region>), [Retry] (sluice.retry.<team>.<tier>) and
// [AttemptDone] (sluice.done.<dispatcher>) travel between dispatchers and
// executors. Clients never publish them. Work carries the time its
// deployment's schedule gave it (SendAt) and the latest it may be sent
// (SendBy): an executor sends it then, or hands it back as a Retry with
// Late set, to be admitted again. Right before sending a provider
// request, an executor claims the attempt on
// sluice.attempt.<team>.<call id>.<attempt>.<admission> ([AttemptSubject],
// stream SLUICE_ATTEMPTS, kept for the duplicate window), which the server
// refuses to store twice: work delivered again is never sent twice.
// The executor reports the end of every attempt as an [AttemptDone] on
// sluice.done.<dispatcher> ([DoneSubject]) to the dispatcher that
// admitted it: its outcome, and the tokens the provider counted, against
// which that dispatcher settles the attempt's token reservation
// (Work.ReservedTokens). Every dispatcher announces what it holds as a
// [DispatcherState] on sluice.dispatchers.state ([StateSubject]), which
// the other dispatchers and `sluice status` read. Messages that cannot be
// answered at all go to sluice.dlq.<reason> ([DeadLetterSubject], stream
// SLUICE_DLQ).
//
// Subject tokens (teams, regions, deployment and call ids) are 1 to 64
// letters, digits, '-' and '_' ([ValidToken]); model names such as gpt-4.1
// travel in bodies, never in subjects.
package messages
