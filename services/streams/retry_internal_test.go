package streams

import (
	"fmt"
	"testing"

	"github.com/nats-io/nats.go/jetstream"
)

func TestClusterNotReady(t *testing.T) {
	for _, c := range []struct {
		err  error
		want bool
	}{
		{&jetstream.APIError{Code: 400, ErrorCode: 10005, Description: "no suitable peers for placement, peer offline"}, true},
		{fmt.Errorf("create: %w", &jetstream.APIError{Code: 503, ErrorCode: 10008, Description: "JetStream system temporarily unavailable"}), true},
		{&jetstream.APIError{Code: 400, ErrorCode: 10074, Description: "replicas > 1 not supported in non-clustered mode"}, false},
		{jetstream.ErrStreamNameAlreadyInUse, false},
		{fmt.Errorf("plain"), false},
	} {
		if got := clusterNotReady(c.err); got != c.want {
			t.Errorf("clusterNotReady(%v) = %v, want %v", c.err, got, c.want)
		}
	}
}
