package main

import (
	"context"
	"fmt"
	"io"
	"sort"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/sluicehq/sluice/messages"
	"github.com/sluicehq/sluice/services/usage"
)

func runUsage(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlagSet("usage", stderr)
	var nf natsFlags
	nf.register(fs)
	since := fs.Duration("since", 24*time.Hour, "how far back to add up (whole hours are counted)")
	team := fs.String("team", "", "only this team")
	asJSON := fs.Bool("json", false, "print JSON")
	if err := parse(fs, args); err != nil {
		return err
	}
	if *since <= 0 {
		return fmt.Errorf("-since must be positive, such as 24h")
	}
	nc, js, err := nf.connectJetStream("sluice usage")
	if err != nil {
		return err
	}
	defer nc.Close()
	ctx, cancel := context.WithTimeout(ctx, natsTimeout)
	defer cancel()
	kv, err := js.KeyValue(ctx, messages.BucketUsage)
	if err != nil {
		return fmt.Errorf("no usage recorded on this NATS server (%w)", err)
	}
	until := time.Now()
	totals, err := usage.Query(ctx, kv, until.Add(-*since), until.Add(time.Hour))
	if err != nil {
		return err
	}
	if *team != "" {
		var only []usage.Total
		for _, t := range totals {
			if t.Team == *team {
				only = append(only, t)
			}
		}
		totals = only
	}
	if *asJSON {
		return writeJSON(stdout, totals)
	}
	printUsage(stdout, totals, *since)
	return nil
}

func printUsage(w io.Writer, totals []usage.Total, since time.Duration) {
	fmt.Fprintf(w, "usage over the last %s (hourly roll-ups, UTC)\n\n", since)
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "TEAM\tPOOL\tTIER\tCALLS\tOK\tERRORS\tPROVIDER REQUESTS\tPROVIDER 429s\tPROMPT TOKENS\tCOMPLETION TOKENS\tWAIT p50\tWAIT p99\t")
	if len(totals) == 0 {
		fmt.Fprintln(tw, "(no calls)\t\t\t\t\t\t\t\t\t\t\t\t")
	}
	for _, t := range totals {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%d\t%d\t%s\t%d\t%d\t%d\t%d\t%s\t%s\t\n", t.Team, t.Pool, t.Tier, t.Calls, t.OK, errorSummary(t.Errors), t.Attempts, t.RateLimited,
			t.PromptTokens, t.CompletionTokens, msDuration(t.WaitP50MS), msDuration(t.WaitP99MS))
	}
	_ = tw.Flush()
}

// errorSummary is "0", or the total with the codes that make it up.
func errorSummary(errs map[messages.Code]int64) string {
	var total int64
	var parts []string
	for code, n := range errs {
		total += n
		parts = append(parts, fmt.Sprintf("%s %d", code, n))
	}
	if total == 0 {
		return "0"
	}
	sort.Strings(parts)
	return fmt.Sprintf("%d (%s)", total, strings.Join(parts, ", "))
}

func msDuration(ms float64) string {
	return (time.Duration(ms * float64(time.Millisecond))).String()
}
