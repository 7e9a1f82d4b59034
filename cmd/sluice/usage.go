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
	by := fs.String("by", "", "split the span: day (UTC days); default: the whole span")
	asJSON := fs.Bool("json", false, "print JSON")
	if err := parse(fs, args); err != nil {
		return err
	}
	if *since <= 0 {
		return fmt.Errorf("-since must be positive, such as 24h")
	}
	period := usage.Period(*by)
	if period != usage.Whole && period != usage.Daily {
		return fmt.Errorf("-by %s: sluice usage splits by day only (-by day)", *by)
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
	totals, err := usage.QueryBy(ctx, kv, until.Add(-*since), until.Add(time.Hour), period)
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
	printUsage(stdout, totals, *since, period)
	return nil
}

func printUsage(w io.Writer, totals []usage.Total, since time.Duration, by usage.Period) {
	split := ""
	if by == usage.Daily {
		split = ", by day"
	}
	fmt.Fprintf(w, "usage over the last %s (hourly roll-ups, UTC%s)\n\n", since, split)
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', tabwriter.AlignRight)
	day := func(t usage.Total) string { return "" }
	if by == usage.Daily {
		fmt.Fprint(tw, "DAY\t")
		day = func(t usage.Total) string { return t.Day + "\t" }
	}
	fmt.Fprintln(tw, "TEAM\tPOOL\tTIER\tCALLS\tOK\tERRORS\tPROVIDER REQUESTS\tPROVIDER 429s\tPROMPT TOKENS\tCACHED\tCOMPLETION TOKENS\tCOST\tWAIT p50\tWAIT p99\t")
	if len(totals) == 0 {
		fmt.Fprintln(tw, "(no calls)\t\t\t\t\t\t\t\t\t\t\t\t\t\t")
	}
	for _, t := range totals {
		fmt.Fprintf(tw, "%s%s\t%s\t%s\t%d\t%d\t%s\t%d\t%d\t%d\t%d\t%d\t%s\t%s\t%s\t\n", day(t), t.Team, t.Pool, t.Tier, t.Calls, t.OK, errorSummary(t.Errors), t.Attempts, t.RateLimited,
			t.PromptTokens, t.CachedPromptTokens, t.CompletionTokens, costSummary(t.Cost, t.EstimatedCost), msDuration(t.WaitP50MS), msDuration(t.WaitP99MS))
	}
	_ = tw.Flush()
}

// costSummary is "-" for calls that were not priced, else the cost in
// each currency ("0.012500 USD"), with the part of it estimated at
// reservations: "0.012500 USD (0.002000 estimated)".
func costSummary(cost, estimated map[string]float64) string {
	if len(cost) == 0 {
		return "-"
	}
	currencies := make([]string, 0, len(cost))
	for cur := range cost {
		currencies = append(currencies, cur)
	}
	sort.Strings(currencies)
	parts := make([]string, len(currencies))
	for i, cur := range currencies {
		parts[i] = fmt.Sprintf("%.6f %s", cost[cur], cur)
		if e := estimated[cur]; e > 0 {
			parts[i] += fmt.Sprintf(" (%.6f estimated)", e)
		}
	}
	return strings.Join(parts, " + ")
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
