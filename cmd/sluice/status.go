package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"text/tabwriter"
	"time"

	"github.com/sluicehq/sluice/services/status"
)

func runStatus(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlagSet("status", stderr)
	var nf natsFlags
	nf.register(fs)
	asJSON := fs.Bool("json", false, "print one snapshot as JSON and exit")
	once := fs.Bool("once", false, "print one snapshot and exit (the default when not in a terminal)")
	every := fs.Duration("interval", time.Second, "how often a terminal view refreshes")
	if err := parse(fs, args); err != nil {
		return err
	}
	nc, err := nf.connect("sluice status")
	if err != nil {
		return err
	}
	defer nc.Close()
	setup, cancel := context.WithTimeout(ctx, natsTimeout)
	defer cancel()
	w, err := status.Watch(setup, nc)
	if err != nil {
		return err
	}
	defer w.Stop()
	// Listen long enough to hear every dispatcher once.
	select {
	case <-ctx.Done():
		return nil
	case <-time.After(1300 * time.Millisecond):
	}
	refresh := !*asJSON && !*once && isTerminal(stdout)
	for {
		snapCtx, cancel := context.WithTimeout(ctx, natsTimeout)
		s, err := w.Snapshot(snapCtx)
		cancel()
		if err != nil {
			return err
		}
		if *asJSON {
			return writeJSON(stdout, s)
		}
		if refresh {
			fmt.Fprint(stdout, "\033[H\033[2J") // home, clear: redraw in place
		}
		printStatus(stdout, s)
		if !refresh {
			return nil
		}
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(*every):
		}
	}
}

// isTerminal reports whether w is a terminal.
func isTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	if !ok {
		return false
	}
	info, err := f.Stat()
	return err == nil && info.Mode()&os.ModeCharDevice != 0
}

func printStatus(w io.Writer, s *status.Snapshot) {
	fmt.Fprintf(w, "sluice status at %s (configuration revision %d): %d calls waiting at %d dispatchers\n\n",
		s.At.Format(time.TimeOnly), s.ConfigRevision, s.WaitingTotal, len(s.Dispatchers))
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "POOL\tTIER\tTEAM\tWAITING\tOLDEST WAIT")
	if len(s.Queues) == 0 {
		fmt.Fprintln(tw, "(nothing waiting)\t\t\t\t")
	}
	for _, q := range s.Queues {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%d\t%s\n", q.Pool, q.Tier, q.Team, q.Depth, (time.Duration(q.OldestWaitMS) * time.Millisecond).Round(time.Millisecond))
	}
	_ = tw.Flush()
	fmt.Fprintln(w)
	tw = tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "DEPLOYMENT\tPOOL\tREGION\tHEADROOM REQ\tHEADROOM TOK\tRPM\tTPM\tSTATE\tDETAIL")
	for _, d := range s.Deployments {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%3.0f%%\t%3.0f%%\t%.0f\t%.0f\t%s\t%s\n", d.ID, d.Pool, d.Region,
			100*d.HeadroomRequests, 100*d.HeadroomTokens, d.RPM, d.TPM, d.State, d.Detail)
	}
	_ = tw.Flush()
	fmt.Fprintln(w)
	tw = tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "DISPATCHER\tWAITING\tADMITTED")
	for _, d := range s.Dispatchers {
		fmt.Fprintf(tw, "%s\t%d\t%d\n", d.ID, d.Waiting, d.Admitted)
	}
	_ = tw.Flush()
	if len(s.Budgets) == 0 {
		return
	}
	fmt.Fprintln(w)
	tw = tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "TEAM\tPOOL\tPERIOD\tSPENT\tRESERVED\tBUDGET\tUSED\tSTATE\tRESETS")
	for _, b := range s.Budgets {
		pool := b.Pool
		if pool == "" {
			pool = "(all)"
		}
		amount := func(v float64) string {
			if b.Unit == "tokens" {
				return fmt.Sprintf("%.0f", v)
			}
			return fmt.Sprintf("%.2f %s", v, b.Unit)
		}
		state := b.State
		if b.Detail != "" {
			state += " (" + b.Detail + ")"
		}
		fmt.Fprintf(tw, "%s\t%s\t%s %s\t%s\t%s\t%s\t%3.0f%%\t%s\t%s\n", b.Team, pool, b.Period, b.PeriodID,
			amount(b.Spent), amount(b.Reserved), amount(b.Limit), 100*b.Used, state, b.ResetsAt.Format(time.RFC3339))
	}
	_ = tw.Flush()
}
