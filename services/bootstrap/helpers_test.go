package bootstrap_test

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"strconv"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/sluicehq/sluice/services/config"
	"github.com/sluicehq/sluice/test/natstest"
)

// hang bounds waits that only detect a hang.
const hang = 30 * time.Second

// file is a valid configuration whose one deployment has rpm, as a
// service reads it from --config FILE.
func file(t *testing.T, rpm int) *config.Config {
	t.Helper()
	cfg, err := config.Parse([]byte(`teams:
  t: {}
pools:
  m:
    deployments:
      - {id: d1, provider: openai, base_url: "http://127.0.0.1:1/v1", region: r1, key: K1, rpm: ` + strconv.Itoa(rpm) + `, tpm: 1000}
`))
	if err != nil {
		t.Fatal(err)
	}
	return cfg
}

func rpm(cfg *config.Config) int64 { return cfg.Pools["m"].Deployments[0].RPM }

var quiet = slog.New(slog.NewTextHandler(io.Discard, nil))

func jetStream(t *testing.T) jetstream.JetStream {
	t.Helper()
	js, err := jetstream.New(natstest.Connect(t, natstest.Start(t)))
	if err != nil {
		t.Fatal(err)
	}
	return js
}

func testContext(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), hang)
	t.Cleanup(cancel)
	return ctx
}

// revisions returns the revisions of the configuration stored in kv.
func revisions(t *testing.T, ctx context.Context, kv jetstream.KeyValue) []uint64 {
	t.Helper()
	h, err := kv.History(ctx, config.Key)
	if errors.Is(err, jetstream.ErrKeyNotFound) {
		return nil
	}
	if err != nil {
		t.Fatal(err)
	}
	var out []uint64
	for _, e := range h {
		out = append(out, e.Revision())
	}
	return out
}
