package config_test

import (
	"bytes"
	"context"
	"errors"
	"log/slog"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/sluicehq/sluice/messages"
	"github.com/sluicehq/sluice/services/config"
	"github.com/sluicehq/sluice/test/natstest"
)

// hang bounds waits that only detect a hang.
const hang = 30 * time.Second

// configYAML is a valid configuration whose one deployment has rpm.
func configYAML(rpm int) string {
	return `teams:
  t: {}
pools:
  m:
    deployments:
      - {id: d1, provider: openai, base_url: "http://127.0.0.1:1/v1", region: r1, key: K1, rpm: ` + strconv.Itoa(rpm) + `, tpm: 1000}
`
}

func mustParse(t *testing.T, yaml string) *config.Config {
	t.Helper()
	cfg, err := config.Parse([]byte(yaml))
	if err != nil {
		t.Fatal(err)
	}
	return cfg
}

// bucket starts a nats-server and creates the configuration bucket as
// services/streams does.
func bucket(t *testing.T) jetstream.KeyValue {
	t.Helper()
	srv := natstest.Start(t)
	js, err := jetstream.New(natstest.Connect(t, srv))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), hang)
	defer cancel()
	kv, err := js.CreateKeyValue(ctx, jetstream.KeyValueConfig{Bucket: messages.BucketConfig, History: 10})
	if err != nil {
		t.Fatal(err)
	}
	return kv
}

func rpmOf(cfg *config.Config) int64 { return cfg.Pools["m"].Deployments[0].RPM }

func TestApplyFetchRoundTrip(t *testing.T) {
	kv := bucket(t)
	ctx := context.Background()
	if _, _, err := config.Fetch(ctx, kv); !errors.Is(err, config.ErrNotStored) {
		t.Fatalf("Fetch on an empty bucket: %v, want ErrNotStored", err)
	}
	cfg := mustParse(t, configYAML(60))
	rev, err := config.Apply(ctx, kv, cfg)
	if err != nil {
		t.Fatal(err)
	}
	got, gotRev, err := config.Fetch(ctx, kv)
	if err != nil {
		t.Fatal(err)
	}
	if gotRev != rev || rev == 0 {
		t.Fatalf("Fetch revision %d, Apply said %d", gotRev, rev)
	}
	want, _ := cfg.Marshal()
	again, _ := got.Marshal()
	if !bytes.Equal(want, again) {
		t.Fatalf("the configuration changed on the way through KV:\nstored:\n%s\nfetched:\n%s", want, again)
	}
	if d, ok := got.Deployment("d1"); !ok || d.Pool() != "m" || d.RPM != 60 {
		t.Fatalf("fetched configuration is not indexed: %+v", d)
	}
	// What is in KV is the YAML Marshal writes: readable, and key names only.
	e, err := kv.Get(ctx, config.Key)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(e.Value(), want) {
		t.Fatalf("KV holds:\n%s\nwant:\n%s", e.Value(), want)
	}

	// Deleting it means there is no configuration any more.
	if err := kv.Delete(ctx, config.Key); err != nil {
		t.Fatal(err)
	}
	if _, _, err := config.Fetch(ctx, kv); !errors.Is(err, config.ErrNotStored) {
		t.Fatalf("Fetch after a delete: %v, want ErrNotStored", err)
	}
}

// An invalid configuration is refused with its field named, and nothing
// is stored.
func TestApplyRefusesAnInvalidConfiguration(t *testing.T) {
	kv := bucket(t)
	ctx := context.Background()
	rev, err := config.Apply(ctx, kv, mustParse(t, configYAML(60)))
	if err != nil {
		t.Fatal(err)
	}
	bad := mustParse(t, configYAML(60))
	bad.Pools["m"].Deployments[0].RPM = -1
	bad.Pools["empty"] = &config.Pool{}
	_, err = config.Apply(ctx, kv, bad)
	var verr *config.ValidationError
	if !errors.As(err, &verr) || !errors.Is(err, config.ErrInvalid) {
		t.Fatalf("Apply of an invalid configuration: %v, want a ValidationError", err)
	}
	for _, field := range []string{"pools.m.deployments[0].rpm", "pools.empty.deployments"} {
		if !strings.Contains(err.Error(), field+":") {
			t.Errorf("the error does not name %s: %v", field, err)
		}
	}
	got, gotRev, err := config.Fetch(ctx, kv)
	if err != nil || gotRev != rev || rpmOf(got) != 60 {
		t.Fatalf("after a refused apply, Fetch = revision %d (want %d), err %v", gotRev, rev, err)
	}
}

func TestApplyRevisionConflict(t *testing.T) {
	kv := bucket(t)
	ctx := context.Background()
	first, err := config.Apply(ctx, kv, mustParse(t, configYAML(60)), config.IfRevision(0))
	if err != nil {
		t.Fatalf("IfRevision(0) on an empty bucket: %v", err)
	}
	_, err = config.Apply(ctx, kv, mustParse(t, configYAML(70)), config.IfRevision(0))
	var conflict *config.ConflictError
	if !errors.As(err, &conflict) || !errors.Is(err, config.ErrConflict) || conflict.Current != first {
		t.Fatalf("IfRevision(0) with a configuration stored: %v, want a conflict naming revision %d", err, first)
	}
	second, err := config.Apply(ctx, kv, mustParse(t, configYAML(80)), config.IfRevision(first))
	if err != nil {
		t.Fatalf("IfRevision(%d) at that revision: %v", first, err)
	}
	// Someone still holding the first revision does not overwrite the
	// second.
	_, err = config.Apply(ctx, kv, mustParse(t, configYAML(90)), config.IfRevision(first))
	if !errors.As(err, &conflict) || conflict.Expected != first || conflict.Current != second {
		t.Fatalf("a stale IfRevision: %v, want a conflict expecting %d, now %d", err, first, second)
	}
	if !strings.Contains(err.Error(), "someone else applied") {
		t.Errorf("the conflict does not say what happened: %v", err)
	}
	got, rev, err := config.Fetch(ctx, kv)
	if err != nil || rev != second || rpmOf(got) != 80 {
		t.Fatalf("after the conflict, Fetch = revision %d rpm %v err %v; want revision %d rpm 80", rev, got, err, second)
	}

	// Two operators applying at once from the same revision: one wins, the
	// other is told.
	var wg sync.WaitGroup
	errs := make([]error, 8)
	for i := range errs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			_, errs[i] = config.Apply(ctx, kv, mustParse(t, configYAML(100+i)), config.IfRevision(second))
		}()
	}
	wg.Wait()
	won := 0
	for _, err := range errs {
		switch {
		case err == nil:
			won++
		case !errors.Is(err, config.ErrConflict):
			t.Errorf("concurrent apply: %v", err)
		}
	}
	if won != 1 {
		t.Fatalf("%d of %d concurrent applies from revision %d succeeded, want exactly 1", won, len(errs), second)
	}
	// A plain Apply (no expected revision) overwrites.
	if _, err := config.Apply(ctx, kv, mustParse(t, configYAML(42))); err != nil {
		t.Fatal(err)
	}
	if got, _, _ := config.Fetch(ctx, kv); rpmOf(got) != 42 {
		t.Fatalf("rpm %d after an unconditional apply, want 42", rpmOf(got))
	}
}

// syncBuffer collects log output written by the watcher's goroutine.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// startWatch runs Watch on live until the test ends.
func startWatch(t *testing.T, kv jetstream.KeyValue, live *config.Live) *syncBuffer {
	t.Helper()
	logs := &syncBuffer{}
	log := slog.New(slog.NewTextHandler(logs, nil))
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- config.Watch(ctx, kv, live, log) }()
	t.Cleanup(func() {
		cancel()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("Watch returned %v after its context ended, want nil", err)
			}
		case <-time.After(hang):
			t.Errorf("Watch did not return within %s of its context ending", hang)
		}
	})
	return logs
}

// waitRevision waits until live holds rev, for at most within.
func waitRevision(t *testing.T, live *config.Live, rev uint64, within time.Duration) time.Duration {
	t.Helper()
	start := time.Now()
	for live.Revision() != rev {
		if time.Since(start) > within {
			t.Fatalf("live holds revision %d %s later, want %d", live.Revision(), within, rev)
		}
		time.Sleep(time.Millisecond)
	}
	return time.Since(start)
}

func waitLog(t *testing.T, logs *syncBuffer, want string) {
	t.Helper()
	deadline := time.Now().Add(hang)
	for !strings.Contains(logs.String(), want) {
		if time.Now().After(deadline) {
			t.Fatalf("no %q in the watcher's log:\n%s", want, logs)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// A change stored in KV is live in every watcher within 2 s (it is pushed:
// in practice milliseconds).
func TestWatchSeesChanges(t *testing.T) {
	kv := bucket(t)
	ctx := context.Background()
	rev, err := config.Apply(ctx, kv, mustParse(t, configYAML(60)))
	if err != nil {
		t.Fatal(err)
	}
	cfg, rev0, err := config.Fetch(ctx, kv)
	if err != nil || rev0 != rev {
		t.Fatal(rev0, err)
	}
	var lives []*config.Live
	for range 3 {
		l := config.NewLive(cfg)
		l.StoreRevision(cfg, rev0)
		startWatch(t, kv, l)
		lives = append(lives, l)
	}
	for i, rpm := range []int{120, 30, 600} {
		rev, err := config.Apply(ctx, kv, mustParse(t, configYAML(rpm)))
		if err != nil {
			t.Fatal(err)
		}
		for j, l := range lives {
			took := waitRevision(t, l, rev, 2*time.Second)
			if got := rpmOf(l.Load()); got != int64(rpm) {
				t.Fatalf("change %d, watcher %d: rpm %d at revision %d, want %d", i, j, got, rev, rpm)
			}
			t.Logf("change %d seen by watcher %d after %s", i, j, took)
		}
	}
}

// A watcher started on a configuration from a file (revision 0) takes the
// stored one as soon as it is there.
func TestWatchFromAFileTakesTheStoredConfiguration(t *testing.T) {
	kv := bucket(t)
	live := config.NewLive(mustParse(t, configYAML(60)))
	startWatch(t, kv, live)
	rev, err := config.Apply(context.Background(), kv, mustParse(t, configYAML(5)))
	if err != nil {
		t.Fatal(err)
	}
	waitRevision(t, live, rev, 2*time.Second)
	if rpmOf(live.Load()) != 5 {
		t.Fatalf("rpm %d, want the stored 5", rpmOf(live.Load()))
	}
}

// A value written to KV behind Apply's back that does not parse or
// validate is ignored, and so is a delete: the live configuration stays.
func TestWatchIgnoresInvalidValues(t *testing.T) {
	kv := bucket(t)
	ctx := context.Background()
	good, err := config.Apply(ctx, kv, mustParse(t, configYAML(60)))
	if err != nil {
		t.Fatal(err)
	}
	cfg, _, _ := config.Fetch(ctx, kv)
	live := config.NewLive(cfg)
	live.StoreRevision(cfg, good)
	logs := startWatch(t, kv, live)

	for _, garbage := range []string{
		"\x00\xff not yaml: [",
		strings.Replace(configYAML(60), "rpm: 60", "rpm: 0", 1),
		configYAML(60) + "surprise: true\n",
	} {
		rev, err := kv.PutString(ctx, config.Key, garbage)
		if err != nil {
			t.Fatal(err)
		}
		waitLog(t, logs, " revision="+strconv.FormatUint(rev, 10)+" ")
		if live.Revision() != good || rpmOf(live.Load()) != 60 {
			t.Fatalf("after invalid revision %d, live is revision %d", rev, live.Revision())
		}
		// Fetch agrees: the newest valid revision is still the live one.
		if _, fetched, err := config.Fetch(ctx, kv); err != nil || fetched != good {
			t.Fatalf("Fetch with invalid revision %d on top: revision %d, err %v; want %d", rev, fetched, err, good)
		}
	}
	if !strings.Contains(logs.String(), "ignoring an invalid configuration") || !strings.Contains(logs.String(), "rpm: must be greater than 0") {
		t.Errorf("the log does not say what was ignored and why:\n%s", logs)
	}

	if err := kv.Delete(ctx, config.Key); err != nil {
		t.Fatal(err)
	}
	waitLog(t, logs, "deleted from KV")
	if live.Revision() != good {
		t.Fatalf("after a delete, live is revision %d, want %d", live.Revision(), good)
	}

	// A valid configuration after all that is taken.
	rev, err := config.Apply(ctx, kv, mustParse(t, configYAML(7)))
	if err != nil {
		t.Fatal(err)
	}
	waitRevision(t, live, rev, 2*time.Second)
	if rpmOf(live.Load()) != 7 {
		t.Fatalf("rpm %d, want 7", rpmOf(live.Load()))
	}
}

// With nothing valid in the whole history, Fetch says so, distinctly from
// "nothing stored".
func TestFetchWithOnlyInvalidRevisions(t *testing.T) {
	kv := bucket(t)
	ctx := context.Background()
	if _, err := kv.PutString(ctx, config.Key, "pools: 3\n"); err != nil {
		t.Fatal(err)
	}
	_, _, err := config.Fetch(ctx, kv)
	if err == nil || errors.Is(err, config.ErrNotStored) || !errors.Is(err, config.ErrInvalid) {
		t.Fatalf("Fetch with only an invalid revision: %v, want an error matching ErrInvalid", err)
	}
}

// A watcher started while the latest revision is invalid takes the newest
// valid one from the history.
func TestWatchStartingOnAnInvalidRevision(t *testing.T) {
	kv := bucket(t)
	ctx := context.Background()
	good, err := config.Apply(ctx, kv, mustParse(t, configYAML(9)))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := kv.PutString(ctx, config.Key, "nonsense"); err != nil {
		t.Fatal(err)
	}
	live := config.NewLive(mustParse(t, configYAML(60))) // from a file
	startWatch(t, kv, live)
	waitRevision(t, live, good, 2*time.Second)
	if rpmOf(live.Load()) != 9 {
		t.Fatalf("rpm %d, want 9", rpmOf(live.Load()))
	}
}
