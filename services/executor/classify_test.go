package executor

import (
	"context"
	"errors"
	"fmt"
	"net/url"
	"testing"

	"github.com/sluicehq/sluice/messages"
)

// A provider request that ended in an error is the provider's fault only
// when its own time to answer ran out or the transport failed: the call's
// deadline cutting it is the caller's choice.
func TestRequestFailureClassification(t *testing.T) {
	// What net/http returns when a request's context ends mid-answer.
	httpErr := func(cause error) error {
		return &url.Error{Op: "Post", URL: "http://provider/v1/chat/completions", Err: cause}
	}
	broken := errors.New("read tcp: connection reset by peer")
	for _, tc := range []struct {
		name            string
		err, ctxErr     error
		callersDeadline bool
		want            messages.Outcome
	}{
		{"the call's deadline cut the request", httpErr(context.DeadlineExceeded), context.DeadlineExceeded, true, messages.OutcomeDeadline},
		{"the call's deadline cut a stream mid-body", fmt.Errorf("read stream: %w", broken), context.DeadlineExceeded, true, messages.OutcomeDeadline},
		{"the attempt timeout cut the request", httpErr(context.DeadlineExceeded), context.DeadlineExceeded, false, messages.OutcomeTimeout},
		{"the attempt timeout cut a stream mid-body", broken, context.DeadlineExceeded, false, messages.OutcomeTimeout},
		{"another timeout, the call's deadline still ahead", httpErr(context.DeadlineExceeded), nil, true, messages.OutcomeTimeout},
		{"the connection broke", httpErr(broken), nil, true, messages.OutcomeTransport},
		{"the connection broke, attempt timeout first", httpErr(broken), nil, false, messages.OutcomeTransport},
		{"shutdown canceled the request", httpErr(context.Canceled), context.Canceled, true, messages.OutcomeTransport},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := requestFailure(tc.err, tc.ctxErr, tc.callersDeadline)
			if got != tc.want {
				t.Fatalf("requestFailure = %s, want %s", got, tc.want)
			}
			if wantFailed := tc.want != messages.OutcomeDeadline; got.Failed() != wantFailed {
				t.Fatalf("%s counts as a provider failure: %v, want %v", got, got.Failed(), wantFailed)
			}
		})
	}
}
