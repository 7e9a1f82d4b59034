package messages

import (
	"strconv"
	"strings"
	"unicode"
	"unicode/utf8"

	"github.com/google/uuid"
)

// callNamespace makes derived call ids distinct from any other UUIDs.
var callNamespace = uuid.MustParse("6f0b1f5e-6d1c-4c55-9a57-2f1f3d1a5c11")

// NewCallID returns a fresh call id (a random UUID).
func NewCallID() string { return uuid.NewString() }

// DerivedCallID is the id sluice gives a call that set none, neither in the
// body nor as Nats-Msg-Id, or set one that no subject can carry (see
// AnswerID). It is derived from the call's sequence in SLUICE_CALLS, so
// every redelivery of the call gets the same id: the version 5 (SHA-1)
// UUID, in namespace 6f0b1f5e-6d1c-4c55-9a57-2f1f3d1a5c11, of the text
// "SLUICE_CALLS/<sequence>". A client finds its result by subscribing to
// sluice.result.<team>.> and matching its metadata, or computes the id
// from the sequence its publish acknowledgement gave.
func DerivedCallID(streamSeq uint64) string {
	return uuid.NewSHA1(callNamespace, []byte(StreamCalls+"/"+strconv.FormatUint(streamSeq, 10))).String()
}

// MaxAnswerIDLen is the longest call id that is not a valid token (see
// ValidToken) and is still answered under its own subject (see AnswerID):
// a longer one could make a subject longer than a NATS server reads.
const MaxAnswerIDLen = 255

// SubjectTail reports whether s can end a subject as it is, so that
// sluice.result.<team>.<s> is a subject a client can subscribe to: one or
// more tokens separated by '.', none empty, at most MaxAnswerIDLen bytes
// of printable UTF-8, none of them a space, '*' or '>'. Every valid token
// is one.
func SubjectTail(s string) bool {
	if s == "" || len(s) > MaxAnswerIDLen || !utf8.ValidString(s) {
		return false
	}
	for _, tok := range strings.Split(s, ".") {
		if tok == "" {
			return false
		}
	}
	for _, r := range s {
		if r == ' ' || r == '*' || r == '>' || !unicode.IsPrint(r) {
			return false
		}
	}
	return true
}

// AnswerID is the id under which a call's terminal result is published,
// given the id in its body (bodyID, empty if none), its Nats-Msg-Id
// header (msgID) and its sequence in SLUICE_CALLS. The call's id is
// bodyID, else msgID. When that is a valid token (ValidToken), or a
// SubjectTail (then the call is refused, invalid_request, but answered
// where a client that subscribed to sluice.result.<team>.<its id>
// listens), it is the answer's id. Otherwise the answer goes to msgID if
// that is a valid token, else to DerivedCallID(streamSeq).
func AnswerID(bodyID, msgID string, streamSeq uint64) string {
	id := bodyID
	if id == "" {
		id = msgID
	}
	switch {
	case id != "" && (ValidToken(id) || SubjectTail(id)):
		return id
	case ValidToken(msgID):
		return msgID
	default:
		return DerivedCallID(streamSeq)
	}
}
