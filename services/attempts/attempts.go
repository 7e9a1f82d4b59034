// Package attempts owns the claims executors make on attempts: the durable
// record, in stream SLUICE_ATTEMPTS, that the provider request of one
// admission of one attempt of a call is about to be sent.
//
// An executor claims an attempt right before it sends the request. The
// claim is one message on sluice.attempt.<team>.<call id>.<attempt>.<admission>,
// published with Nats-Expected-Last-Subject-Sequence: 0, so the NATS server
// itself refuses a second claim of the same attempt, whoever makes it, on
// the same or a restarted server: unlike JetStream's de-duplication by
// Nats-Msg-Id, which a restart rebuilds only from what is still stored, the
// check reads the stream. So work delivered again (after an executor died,
// or twice after a NATS restart lost the work queue's de-duplication) is
// never sent twice: its claim fails with ErrClaimed, and Lookup tells a
// later delivery that the attempt may have reached the provider.
//
// Claims are kept for the duplicate window (streams.duplicate_window), as
// long as JetStream de-duplicates calls and work; stream SLUICE_ATTEMPTS is
// created by package streams.
package attempts

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/sluicehq/sluice/messages"
	"github.com/sluicehq/sluice/services/streams"
)

// Claim is what a claim records: who is sending the attempt, and when it
// claimed it; or that it was handed back to admission unsent. It is small,
// and never holds a secret. A claim settles an admission of an attempt
// once: it was sent, or handed back, never both.
type Claim struct {
	// Deployment is the deployment the request goes to.
	Deployment string `json:"deployment"`
	// Region is the region of the executor that claimed the attempt.
	Region string `json:"region"`
	// At is when the attempt was claimed.
	At time.Time `json:"at"`
	// HandedBack is set when the admission was not sent but handed back
	// to admission (its work was late): its next admission carries the
	// call on.
	HandedBack bool `json:"handed_back,omitempty"`
}

var (
	// ErrClaimed is returned by Store.Claim when the attempt was claimed
	// already, by anyone, before or after a NATS server restart.
	ErrClaimed = errors.New("attempts: the attempt was claimed already")
	// ErrNotClaimed is returned by Store.Lookup when the attempt was not
	// claimed (or its claim is older than the duplicate window).
	ErrNotClaimed = errors.New("attempts: the attempt was not claimed")
	// ErrInvalid is returned for a team or call id that is not a subject
	// token, an attempt below 1 or an admission below 0, and by a Store
	// made without a stream.
	ErrInvalid = errors.New("attempts: invalid claim address")
)

// Store claims attempts and looks claims up, in stream SLUICE_ATTEMPTS.
type Store struct {
	js     jetstream.JetStream
	stream jetstream.Stream
}

// New returns a Store that claims through js and looks claims up in
// stream, SLUICE_ATTEMPTS as streams.Ensure or streams.Open returned it
// (Resources.Attempts).
func New(js jetstream.JetStream, stream jetstream.Stream) *Store {
	return &Store{js: js, stream: stream}
}

// Claim records that admission number admission (0 the first time) of
// attempt number attempt (from 1) of the call is about to be sent, with c.
// It returns once the stream stored the claim.
//
// Errors: ErrClaimed when the attempt was claimed already (nothing is
// stored then; whoever claimed first owns the attempt); ErrInvalid for
// bad input; otherwise the publish's error (NATS unreachable, ctx ended),
// after which the claim may or may not have been stored: look it up before
// sending.
func (s *Store) Claim(ctx context.Context, team, callID string, attempt, admission int, c Claim) error {
	subject, err := s.subject(team, callID, attempt, admission)
	if err != nil {
		return err
	}
	data, err := json.Marshal(c)
	if err != nil {
		return fmt.Errorf("attempts: encode the claim of %s: %w", subject, err)
	}
	msg := &nats.Msg{Subject: subject, Data: data, Header: nats.Header{}}
	// The subject names the attempt, so it is the claim's Nats-Msg-Id too
	// (call ids are unique within a team only).
	msg.Header.Set(messages.HeaderMsgID, subject)
	stored, err := streams.PublishFirst(ctx, s.js, msg)
	if err != nil {
		return fmt.Errorf("attempts: claim %s: %w", subject, err)
	}
	if !stored {
		// Claimed before, by anyone. (A caller whose own claim was stored
		// but not acknowledged gets this too; it was told that claim
		// failed, so it did not send the attempt.)
		return fmt.Errorf("%w: %s", ErrClaimed, subject)
	}
	return nil
}

// Lookup returns the claim on admission admission of attempt attempt of
// the call, with one direct get of its subject's last message.
//
// Errors: ErrNotClaimed when there is none (never claimed, or longer ago
// than the duplicate window); ErrInvalid for bad input; otherwise the
// request's error. A replica of a replicated stream may answer a moment
// behind the claim it was sent.
func (s *Store) Lookup(ctx context.Context, team, callID string, attempt, admission int) (Claim, error) {
	subject, err := s.subject(team, callID, attempt, admission)
	if err != nil {
		return Claim{}, err
	}
	m, err := s.stream.GetLastMsgForSubject(ctx, subject)
	if errors.Is(err, jetstream.ErrMsgNotFound) {
		return Claim{}, fmt.Errorf("%w: %s", ErrNotClaimed, subject)
	}
	if err != nil {
		return Claim{}, fmt.Errorf("attempts: look up %s: %w", subject, err)
	}
	var c Claim
	if err := json.Unmarshal(m.Data, &c); err != nil {
		return Claim{}, fmt.Errorf("attempts: decode the claim of %s: %w", subject, err)
	}
	return c, nil
}

// subject checks the address of a claim and returns its subject.
func (s *Store) subject(team, callID string, attempt, admission int) (string, error) {
	switch {
	case s == nil || s.js == nil || s.stream == nil:
		return "", fmt.Errorf("%w: the store has no stream", ErrInvalid)
	case !messages.ValidToken(team):
		return "", fmt.Errorf("%w: team %q is not a subject token", ErrInvalid, team)
	case !messages.ValidToken(callID):
		return "", fmt.Errorf("%w: call id %q is not a subject token", ErrInvalid, callID)
	case attempt < 1:
		return "", fmt.Errorf("%w: attempt %d; attempts count from 1", ErrInvalid, attempt)
	case admission < 0:
		return "", fmt.Errorf("%w: admission %d; admissions count from 0", ErrInvalid, admission)
	}
	return messages.AttemptSubject(team, callID, attempt, admission), nil
}
