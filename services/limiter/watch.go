package limiter

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

// Start runs the watcher that keeps the cache of every key's state, and
// returns once the cache holds the state of every existing key. ctx bounds
// only that initial load; the watcher runs until Stop.
//
// Errors: ctx.Err(), the KV's errors, and an error when already started.
func (k *KV) Start(ctx context.Context) error {
	k.mu.Lock()
	defer k.mu.Unlock()
	if k.stop != nil {
		return errors.New("limiter: KV watcher already started")
	}
	// The watcher's subscription ends with its context: give it one that
	// outlives Start.
	wctx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	w, err := k.kv.WatchAll(wctx)
	if err != nil {
		cancel()
		return fmt.Errorf("limiter: watch: %w", err)
	}
	abort := func(err error) error {
		// The watcher blocks while its channel is full: drain it until the
		// stop closes it.
		go func() {
			for range w.Updates() {
			}
		}()
		_ = w.Stop()
		cancel()
		return err
	}
	// The watcher sends the latest value of every key, then nil. The lock
	// is held meanwhile so that no operation runs on a half-loaded cache.
initial:
	for {
		select {
		case kve, ok := <-w.Updates():
			if !ok {
				return abort(errors.New("limiter: watch: closed during the initial load"))
			}
			if kve == nil {
				break initial
			}
			k.storeLocked(kve.Key(), entryOf(kve))
		case <-ctx.Done():
			return abort(ctx.Err())
		}
	}
	k.watching = true
	done := make(chan struct{})
	k.done = done
	k.stop = func() {
		_ = w.Stop()
		cancel()
	}
	go k.watch(w, done)
	return nil
}

// Stop ends the watcher and waits for it. The KV stays usable: without the
// watcher, every operation reads its key first. Stop on a KV that is not
// started does nothing.
func (k *KV) Stop() {
	k.mu.Lock()
	stop, done := k.stop, k.done
	k.stop, k.done = nil, nil
	k.mu.Unlock()
	if stop == nil {
		return
	}
	stop()
	<-done
}

// watch applies the watcher's updates to the cache until the watcher ends.
func (k *KV) watch(w jetstream.KeyWatcher, done chan struct{}) {
	defer close(done)
	for kve := range w.Updates() {
		if kve == nil {
			continue
		}
		k.mu.Lock()
		k.storeLocked(kve.Key(), entryOf(kve))
		k.mu.Unlock()
	}
	// Without updates the cache may fall behind: stop trusting it.
	k.mu.Lock()
	k.watching = false
	k.mu.Unlock()
}

// storeLocked is store with k.mu held.
func (k *KV) storeLocked(key string, e entry) {
	if cur, ok := k.cache[key]; ok && cur.rev >= e.rev {
		return
	}
	k.cache[key] = e
}

// entryOf decodes a KV entry.
func entryOf(kve jetstream.KeyValueEntry) entry {
	if kve.Operation() != jetstream.KeyValuePut {
		return entry{rev: kve.Revision()}
	}
	b, err := decodeBucket(kve.Value())
	if err != nil {
		err = fmt.Errorf("%w: key %q revision %d: %w", ErrBadState, kve.Key(), kve.Revision(), err)
	}
	return entry{bucket: b, rev: kve.Revision(), exists: true, err: err}
}

// wireBucket is the JSON form of a Bucket. The fields are pointers so that
// a value missing one is rejected rather than read as an empty bucket.
type wireBucket struct {
	Requests *float64 `json:"r"`
	Tokens   *float64 `json:"t"`
	At       *int64   `json:"at"`
}

func encodeBucket(b Bucket) []byte {
	at := b.At.UnixNano()
	data, err := json.Marshal(wireBucket{Requests: &b.Level.Requests, Tokens: &b.Level.Tokens, At: &at})
	if err != nil {
		// Levels are finite by construction (inputs are validated), so this
		// cannot happen.
		panic(fmt.Sprintf("limiter: encode bucket %+v: %v", b, err))
	}
	return data
}

func decodeBucket(data []byte) (Bucket, error) {
	var w wireBucket
	if err := json.Unmarshal(data, &w); err != nil {
		return Bucket{}, err
	}
	if w.Requests == nil || w.Tokens == nil || w.At == nil {
		return Bucket{}, errors.New(`missing "r", "t" or "at"`)
	}
	if math.IsNaN(*w.Requests) || math.IsNaN(*w.Tokens) || *w.At <= 0 {
		return Bucket{}, fmt.Errorf("bad levels or time in %s", data)
	}
	return Bucket{Level: Amount{Requests: *w.Requests, Tokens: *w.Tokens}, At: time.Unix(0, *w.At)}, nil
}
