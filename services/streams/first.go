package streams

import (
	"context"
	"errors"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/sluicehq/sluice/messages"
)

// inProcessFor bounds how long PublishFirst tries again while the server
// says a publish with the same Nats-Msg-Id is in process: a replicated
// stream settles it in a round of consensus, milliseconds; one that is
// still unsettled after this is a cluster in trouble, and the caller's
// error.
const inProcessFor = 2 * time.Second

// errCodeMsgIDInProcess is nats-server's JSStreamDuplicateMessageConflict:
// a replicated stream is still storing another publish with the same
// Nats-Msg-Id, so it can say neither "stored" nor "duplicate" yet.
const errCodeMsgIDInProcess jetstream.ErrorCode = 10158

// PublishFirst publishes msg as the one message of its subject: it sets
// Nats-Expected-Last-Subject-Sequence to 0, so the stream stores msg only
// while its subject (after the stream's subject transform) holds no
// message. msg should carry a Nats-Msg-Id.
//
// stored is true when this publish stored msg, false (and err nil) when
// the stream refused it because the subject has its message already:
// JetStream found it a duplicate by its Nats-Msg-Id, or the expected last
// subject sequence did not hold (error code 10071, or 10164 from a
// replicated stream while another message for the subject is in flight).
// stored false is also what a caller gets whose own earlier publish of msg
// was stored but not acknowledged. While a replicated stream says a
// publish with the same Nats-Msg-Id is in process (10158), PublishFirst
// tries again, for up to two seconds, until the stream can tell.
//
// Errors are the publish's (no stream, NATS unreachable, ctx ended):
// msg may or may not have been stored then.
func PublishFirst(ctx context.Context, js jetstream.JetStream, msg *nats.Msg) (stored bool, err error) {
	if msg.Header == nil {
		msg.Header = nats.Header{}
	}
	msg.Header.Set(messages.HeaderExpectedLastSubjectSeq, "0")
	pause := 5 * time.Millisecond
	giveUp := time.Now().Add(inProcessFor)
	for {
		ack, err := js.PublishMsg(ctx, msg)
		switch {
		case err == nil:
			return !ack.Duplicate, nil
		case subjectTaken(err):
			return false, nil
		case hasCode(err, errCodeMsgIDInProcess) && time.Now().Before(giveUp):
			select {
			case <-ctx.Done():
				return false, err
			case <-time.After(pause):
			}
			pause = min(2*pause, 100*time.Millisecond)
		default:
			return false, err
		}
	}
}

// subjectTaken reports whether err is JetStream's refusal of a publish
// whose expected last subject sequence did not hold: 10071, or 10164 from
// a replicated stream.
func subjectTaken(err error) bool {
	return hasCode(err, jetstream.JSErrCodeStreamWrongLastSequence) ||
		hasCode(err, jetstream.JSErrCodeStreamWrongLastSequenceConstant)
}

func hasCode(err error, code jetstream.ErrorCode) bool {
	var apiErr *jetstream.APIError
	return errors.As(err, &apiErr) && apiErr.ErrorCode == code
}
