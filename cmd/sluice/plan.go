package main

import (
	"bytes"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/sluicehq/sluice/messages"
	"github.com/sluicehq/sluice/services/config"
	"github.com/sluicehq/sluice/services/plan"
	"github.com/sluicehq/sluice/services/usage"
)

const planSummary = "print a capacity plan from the usage history: demand against capacity, unmet demand, what to ask providers for"

func runPlan(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlagSet("plan", stderr)
	var nf natsFlags
	nf.register(fs)
	since := spanFlag(7 * 24 * time.Hour)
	fs.Var(&since, "since", "how far back to read: a `SPAN` such as 7d, 36h or 1d12h (whole hours are counted)")
	asJSON := fs.Bool("json", false, "print the plan as JSON")
	htmlFile := fs.String("html", "", "also write the plan as a self-contained HTML page with charts to `FILE`")
	cfgFile := fs.String("config", "", "plan against the configuration in `FILE` instead of the live one in KV")
	if err := parse(fs, args); err != nil {
		return err
	}
	if since <= 0 {
		return fmt.Errorf("-since must be positive, such as 7d")
	}
	nc, js, err := nf.connectJetStream("sluice plan")
	if err != nil {
		return err
	}
	defer nc.Close()
	ctx, cancel := context.WithTimeout(ctx, natsTimeout)
	defer cancel()
	var cfg *config.Config
	if *cfgFile != "" {
		if cfg, err = loadFile(*cfgFile); err != nil {
			return err
		}
	} else if cfg, err = liveConfig(ctx, js); err != nil {
		return err
	}
	kv, err := js.KeyValue(ctx, messages.BucketUsage)
	if err != nil {
		return fmt.Errorf("no usage recorded on this NATS server (%w)", err)
	}
	until := time.Now()
	from := until.Add(-time.Duration(since))
	records, err := usage.Records(ctx, kv, from, until.Add(time.Hour))
	if err != nil {
		return err
	}
	p := plan.Build(records, cfg, from, until.UTC().Truncate(time.Hour).Add(time.Hour))
	if *htmlFile != "" {
		var page bytes.Buffer
		if err := plan.WriteHTML(&page, p); err != nil {
			return err
		}
		if err := os.WriteFile(*htmlFile, page.Bytes(), 0o644); err != nil {
			return err
		}
	}
	if *asJSON {
		return writeJSON(stdout, p)
	}
	printPlan(stdout, p)
	return nil
}

// liveConfig is the configuration the services use.
func liveConfig(ctx context.Context, js jetstream.JetStream) (*config.Config, error) {
	kv, err := js.KeyValue(ctx, messages.BucketConfig)
	if err != nil {
		return nil, fmt.Errorf("no configuration in KV %s (%w): apply one, or plan against a file with -config FILE", messages.BucketConfig, err)
	}
	cfg, _, err := config.Fetch(ctx, kv)
	if errors.Is(err, config.ErrNotStored) {
		return nil, fmt.Errorf("%w: apply one, or plan against a file with -config FILE", err)
	}
	return cfg, err
}

// spanFlag is a duration that may be written in days too: 7d, 1d12h, 90d.
type spanFlag time.Duration

var _ flag.Value = (*spanFlag)(nil)

func (s *spanFlag) String() string {
	d := time.Duration(*s)
	if d > 0 && d%(24*time.Hour) == 0 {
		return fmt.Sprintf("%dd", d/(24*time.Hour))
	}
	return d.String()
}

func (s *spanFlag) Set(v string) error {
	var days time.Duration
	rest := v
	if i := strings.IndexByte(v, 'd'); i >= 0 {
		n, err := strconv.ParseUint(v[:i], 10, 16)
		if err != nil {
			return fmt.Errorf("%q: want a duration such as 7d, 36h or 1d12h", v)
		}
		days, rest = time.Duration(n)*24*time.Hour, v[i+1:]
	}
	var d time.Duration
	if rest != "" {
		var err error
		if d, err = time.ParseDuration(rest); err != nil {
			return fmt.Errorf("%q: want a duration such as 7d, 36h or 1d12h", v)
		}
	}
	*s = spanFlag(days + d)
	return nil
}

func printPlan(w io.Writer, p *plan.Plan) {
	fmt.Fprintf(w, "capacity plan, %s to %s UTC (%d hours); hours of day are UTC\n", p.Since.Format("2006-01-02 15:04"), p.Until.Format("2006-01-02 15:04"), p.Hours)
	var waits []string
	for _, tier := range messages.Tiers {
		waits = append(waits, fmt.Sprintf("%s %s", tier, msDuration(p.TargetWaitsMS[tier])))
	}
	fmt.Fprintf(w, "target waits: %s; unmet: waited longer (late) or failed for lack of capacity (unserved)\n", strings.Join(waits, ", "))
	if p.Unplanned > 0 {
		fmt.Fprintf(w, "%d calls were for pools the configuration does not have, and are left out\n", p.Unplanned)
	}
	for _, pl := range p.Pools {
		fmt.Fprintf(w, "\npool %s: %d RPM, %d TPM configured; %d calls offered, %d unmet (%d late, %d unserved), %d provider 429s, busiest minute %d calls\n",
			pl.Name, pl.RPM, pl.TPM, pl.Calls, pl.Unmet, pl.Late, pl.Unserved, pl.Provider429s, pl.PeakRPM)
		tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', tabwriter.AlignRight)
		fmt.Fprintln(tw, "HOUR\tCALLS\tCAPACITY\tRPM USE\tTPM USE\tAVG RPM\tPEAK RPM\tLATE\tUNSERVED\tPROVIDER 429s\t")
		shown := false
		for _, h := range pl.HoursOfDay {
			if h.Calls == 0 && h.Provider429s == 0 {
				continue
			}
			shown = true
			fmt.Fprintf(tw, "%02d:00\t%d\t%d\t%.1f%%\t%.1f%%\t%.1f\t%d\t%d\t%d\t%d\t\n", h.Hour, h.Calls, h.CapacityCalls, h.RPMUtilization*100, h.TPMUtilization*100, h.OfferedRPM, h.PeakRPM, h.Late, h.Unserved, h.Provider429s)
		}
		if !shown {
			fmt.Fprintln(tw, "(no calls)\t\t\t\t\t\t\t\t\t\t")
		}
		_ = tw.Flush()
		n := pl.Need
		if n.Hour.IsZero() {
			fmt.Fprintf(w, "all demand was met within target: %d RPM and %d TPM served it\n", n.RPM, n.TPM)
		} else {
			fmt.Fprintf(w, "to serve all demand within target: %d RPM (+%d), %d TPM (+%d), as %s UTC needed (%.0f tokens a call);\n",
				n.RPM, n.ExtraRPM, n.TPM, n.ExtraTPM, n.Hour.Format("2006-01-02 15:00"), n.TokensPerCall)
			fmt.Fprintf(w, "  up to %d RPM (+%d) and %d TPM (+%d) if the unmet calls came in bursts shorter than a minute\n",
				n.UpToRPM, n.UpToRPM-pl.RPM, n.UpToTPM, n.UpToTPM-pl.TPM)
		}
		tw = tabwriter.NewWriter(w, 0, 4, 2, ' ', tabwriter.AlignRight)
		fmt.Fprintln(tw, "REGION\tRPM\tTPM\tCALLS SERVED\tEXTRA RPM\tEXTRA TPM\t")
		for _, r := range pl.Regions {
			fmt.Fprintf(tw, "%s\t%d\t%d\t%d\t%d\t%d\t\n", r.Name, r.RPM, r.TPM, r.Calls, r.ExtraRPM, r.ExtraTPM)
		}
		_ = tw.Flush()
	}
	fmt.Fprintf(w, "\nteams: their share of each pool's provider requests against their entitlement, and the most they spent in a day and a month against their budget\n")
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "TEAM\tPOOL\tCALLS\tUNMET\tTOKENS\tAVG RPM\tPEAK RPM\tSHARE\tWEIGHT\tWEIGHT SHARE\tGUARANTEED RPM/TPM\tCAP RPM/TPM\tCOST\tBUDGET\t")
	for _, t := range p.Teams {
		e := t.Entitlement
		weight, share := fmt.Sprintf("%g", e.Weight), fmt.Sprintf("%.1f%%", e.WeightShare*100)
		if !e.Allowed {
			weight, share = "(not allowed)", "-"
		}
		fmt.Fprintf(tw, "%s\t%s\t%d\t%d\t%d\t%.2f\t%d\t%.1f%%\t%s\t%s\t%s\t%s\t%s\t%s\t\n", t.Team, t.Pool, t.Calls, t.Unmet, t.Tokens, t.AvgRPM, t.PeakRPM, t.Share*100,
			weight, share, pair(e.GuaranteedRPM, e.GuaranteedTPM), pair(e.CapRPM, e.CapTPM), costSummary(t.Cost, nil), plan.BudgetSummary(t.Budget, p.Currency))
	}
	_ = tw.Flush()
	if d := p.DraftYAML(); d != "" {
		fmt.Fprintf(w, "\n%s", d)
	}
}

// pair is "rpm/tpm", each "-" when 0 (none).
func pair(rpm, tpm int64) string {
	f := func(n int64) string {
		if n == 0 {
			return "-"
		}
		return strconv.FormatInt(n, 10)
	}
	return f(rpm) + "/" + f(tpm)
}
