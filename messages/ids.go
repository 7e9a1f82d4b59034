package messages

import (
	"strconv"

	"github.com/google/uuid"
)

// callNamespace makes derived call ids distinct from any other UUIDs.
var callNamespace = uuid.MustParse("6f0b1f5e-6d1c-4c55-9a57-2f1f3d1a5c11")

// NewCallID returns a fresh call id (a random UUID).
func NewCallID() string { return uuid.NewString() }

// DerivedCallID is the id sluice gives a call that set none, neither in the
// body nor as Nats-Msg-Id. It is derived from the call's sequence in
// SLUICE_CALLS, so every redelivery of the call gets the same id. A client
// that sets no id finds its result by subscribing to
// sluice.result.<team>.> and matching its metadata.
func DerivedCallID(streamSeq uint64) string {
	return uuid.NewSHA1(callNamespace, []byte(StreamCalls+"/"+strconv.FormatUint(streamSeq, 10))).String()
}
