package bootstrap_test

import (
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/sluicehq/sluice/messages"
	"github.com/sluicehq/sluice/services/bootstrap"
	"github.com/sluicehq/sluice/services/config"
	"github.com/sluicehq/sluice/services/streams"
)

// The region of file's one deployment.
const region = "r1"

// serveRegion starts an executor's pull on region's consumer, as an idle
// executor waits for work, until the test ends.
func serveRegion(t *testing.T, js jetstream.JetStream) {
	t.Helper()
	ctx := testContext(t)
	exec, err := js.Stream(ctx, messages.StreamExec)
	if err != nil {
		t.Fatal(err)
	}
	cons, err := streams.EnsureConsumer(ctx, exec, streams.ExecConsumerConfig(file(t, 1).Streams, region, time.Minute))
	if err != nil {
		t.Fatal(err)
	}
	msgs, err := cons.Messages()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(msgs.Stop)
	go func() { // an iterator pulls once it is asked for a message
		for {
			m, err := msgs.Next()
			if err != nil {
				return
			}
			_ = m.Ack()
		}
	}()
}

// On a server no service ran against, an apply refuses a configuration
// whose region no executor serves, naming its field, and stores nothing;
// with Force it creates sluice's streams and stores it, saying which
// regions are not served.
func TestApplyRefusesUnservedRegionsUnlessForced(t *testing.T) {
	ctx := testContext(t)
	js := jetStream(t)

	_, err := bootstrap.Apply(ctx, js, bootstrap.Change{File: file(t, 60), IfRevision: -1})
	var verr *config.ValidationError
	if !errors.Is(err, bootstrap.ErrUnserved) || !errors.As(err, &verr) ||
		len(verr.Problems) != 1 || !strings.Contains(verr.Problems[0].Error(), "pools.m.deployments[0].region") {
		t.Fatalf("apply naming an unserved region: %v; want ErrUnserved naming pools.m.deployments[0].region", err)
	}
	if _, err := js.KeyValue(ctx, messages.BucketConfig); !errors.Is(err, jetstream.ErrBucketNotFound) {
		t.Fatalf("a refused apply created the configuration's bucket (%v)", err)
	}

	done, err := bootstrap.Apply(ctx, js, bootstrap.Change{File: file(t, 60), IfRevision: -1, Force: true})
	if err != nil {
		t.Fatal(err)
	}
	if done.Revision != 1 || done.Replaced != 0 || done.Unchanged || done.Unserved == nil ||
		!strings.Contains(done.Unserved.Error(), "pools.m.deployments[0].region") {
		t.Fatalf("forced apply: %+v; want revision 1, replacing none, the unserved region named", done)
	}
	for _, name := range []string{messages.StreamCalls, messages.StreamExec, messages.StreamResults} {
		if _, err := js.Stream(ctx, name); err != nil {
			t.Errorf("stream %s: %v", name, err)
		}
	}
	kv, err := js.KeyValue(ctx, messages.BucketConfig)
	if err != nil {
		t.Fatal(err)
	}
	if stored, rev, err := config.Fetch(ctx, kv); err != nil || rev != 1 || rpm(stored) != 60 {
		t.Fatalf("KV holds revision %d (%v); want the file at revision 1", rev, err)
	}
}

// Once executors serve its regions, an apply stores the file over the
// revision it read; the same file again stores nothing; an apply from a
// revision someone else replaced is a conflict and stores nothing.
func TestApplyReplacesOnlyTheRevisionItExpects(t *testing.T) {
	ctx := testContext(t)
	js := jetStream(t)
	res, err := streams.Ensure(ctx, js, file(t, 1).Streams)
	if err != nil {
		t.Fatal(err)
	}
	serveRegion(t, js)
	wait := hang / 2 // served as soon as the executor's pull arrives

	done, err := bootstrap.Apply(ctx, js, bootstrap.Change{File: file(t, 60), IfRevision: -1, RegionWait: wait})
	if err != nil || done.Revision != 1 || done.Replaced != 0 || done.Unserved != nil {
		t.Fatalf("first apply: %+v, %v; want revision 1 stored, its region served", done, err)
	}
	done, err = bootstrap.Apply(ctx, js, bootstrap.Change{File: file(t, 120), IfRevision: -1, RegionWait: wait})
	if err != nil || done.Revision != 2 || done.Replaced != 1 {
		t.Fatalf("second apply: %+v, %v; want revision 2 replacing 1", done, err)
	}
	done, err = bootstrap.Apply(ctx, js, bootstrap.Change{File: file(t, 120), IfRevision: -1, RegionWait: wait})
	if err != nil || !done.Unchanged || done.Revision != 2 {
		t.Fatalf("the live file again: %+v, %v; want unchanged at revision 2", done, err)
	}

	for _, stale := range []int64{0, 1} {
		_, err = bootstrap.Apply(ctx, js, bootstrap.Change{File: file(t, 60), IfRevision: stale, RegionWait: wait})
		if !errors.Is(err, config.ErrConflict) {
			t.Fatalf("apply expecting revision %d while 2 is live: %v; want a conflict", stale, err)
		}
	}
	// Expecting the live revision, even the live file is stored again
	// only if it differs: here it does not.
	done, err = bootstrap.Apply(ctx, js, bootstrap.Change{File: file(t, 120), IfRevision: 2, RegionWait: wait})
	if err != nil || !done.Unchanged {
		t.Fatalf("the live file expecting its revision: %+v, %v; want unchanged", done, err)
	}
	if got := revisions(t, ctx, res.Config); len(got) != 2 || got[1] != 2 {
		t.Fatalf("KV revisions %v; want 1 and 2 only", got)
	}
}
