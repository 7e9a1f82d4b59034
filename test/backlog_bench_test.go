package test

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/sluicehq/sluice/services/fakeprovider"
)

// BenchmarkBacklogDrain measures how fast one dispatcher drains a backlog
// of 30,000 batch calls of 100 teams, against the rate at which the same
// stack serves calls when at most 200 wait (measured first, in the same
// run). Four deployments of 60,000 RPM (4,000 calls a second) never bind;
// the fake provider answers in 1 ms.
//
//	go test ./test -run '^$' -bench BacklogDrain -benchtime 1x
func BenchmarkBacklogDrain(b *testing.B) {
	const backlog, teams, inFlight = 30_000, 100, 200
	for range b.N {
		s := startStack(b, stackOptions{
			yaml: func(url string) string {
				y := twoRegionYAML(60_000, 100_000_000, layout{})(url)
				var more strings.Builder
				for i := range teams {
					fmt.Fprintf(&more, "  t%d: {}\n", i)
				}
				return strings.Replace(y, "teams:\n  demo: {}\n", "teams:\n  demo: {}\n"+more.String(), 1)
			},
			fake: fakeprovider.Config{Latency: time.Millisecond},
		})
		nc := connect(b, s)
		js, _ := jetstream.New(nc)
		results, err := nc.SubscribeSync("sluice.result.>")
		if err != nil {
			b.Fatal(err)
		}
		publish := func(i int) {
			id := fmt.Sprintf("c%06d", i)
			if _, err := js.PublishAsync(fmt.Sprintf("sluice.call.t%d.batch", i%teams), []byte(chatCall(id, "m", 5, `,"timeout_ms":600000`))); err != nil {
				b.Fatal(err)
			}
		}
		next := func() {
			if _, err := results.NextMsg(30 * time.Second); err != nil {
				b.Fatal(err)
			}
		}
		d := startDispatcher(b, s, "d1", nil)
		startExecutors(b, s)

		// At most inFlight waiting: the unsaturated rate.
		const unsaturated = 10_000
		start := time.Now()
		for i := range unsaturated {
			if i >= inFlight {
				next()
			}
			publish(i)
		}
		for range inFlight {
			next()
		}
		baseline := unsaturated / time.Since(start).Seconds()

		// The backlog: published while no dispatcher runs, then drained.
		if err := d.Stop(); err != nil {
			b.Fatal(err)
		}
		for i := range backlog {
			publish(unsaturated + i)
		}
		<-js.PublishAsyncComplete()
		start = time.Now()
		startDispatcher(b, s, "d2", nil)
		for range backlog {
			next()
		}
		drain := backlog / time.Since(start).Seconds()
		b.ReportMetric(baseline, "unsaturated-calls/s")
		b.ReportMetric(drain, "backlog-calls/s")
		b.ReportMetric(drain/baseline, "backlog/unsaturated")
	}
}
